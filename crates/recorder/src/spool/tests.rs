use std::fmt;
use std::sync::Mutex as StdMutex;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::*;
use crate::seal::Keyring;

/// A real local store behind a switch: while `down`, every call fails as an
/// unreachable store would. Records the order of successful puts.
#[derive(Debug)]
struct Flaky {
    inner: LocalFileSystem,
    down: AtomicBool,
    puts: StdMutex<Vec<String>>,
    failures: AtomicU64,
}

impl fmt::Display for Flaky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flaky({})", self.inner)
    }
}

impl Flaky {
    fn new(dir: &Path) -> Arc<Flaky> {
        std::fs::create_dir_all(dir).expect("store dir");
        Arc::new(Flaky {
            inner: LocalFileSystem::new_with_prefix(dir).expect("local"),
            down: AtomicBool::new(false),
            puts: StdMutex::new(Vec::new()),
            failures: AtomicU64::new(0),
        })
    }

    fn check(&self) -> object_store::Result<()> {
        if self.down.load(Ordering::Acquire) {
            self.failures.fetch_add(1, Ordering::AcqRel);
            return Err(object_store::Error::Generic {
                store: "flaky",
                source: "connection refused".into(),
            });
        }
        Ok(())
    }

    fn puts(&self) -> Vec<String> {
        self.puts.lock().expect("lock").clone()
    }
}

#[async_trait]
impl ObjectStore for Flaky {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check()?;
        let r = self.inner.put_opts(location, payload, opts).await?;
        self.puts.lock().expect("lock").push(location.to_string());
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check()?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check()?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.check()?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check()?;
        self.inner.copy_opts(from, to, options).await
    }
}

fn fast(max_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        dir: None,
        max_bytes,
        retry_initial_ms: 5,
        retry_max_ms: 40,
    }
}

fn frag(i: usize) -> Bytes {
    Bytes::from(format!("\0\0\0\x10moof fragment {i:04} ").repeat(50))
}

/// Waits (on the upload task, not on a clock) until `cond` holds.
async fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn uploads_in_order_and_empties_the_spool() {
    let tmp = tempfile::tempdir().expect("tmp");
    let flaky = Flaky::new(&tmp.path().join("store"));
    let objects = Objects::from_store(flaky.clone(), None);
    let spool = tmp.path().join("spool");
    let up = Uploader::start(objects.clone(), spool.clone(), &fast(1 << 20))
        .await
        .expect("start");
    for i in 0..20 {
        up.enqueue(&format!("r/{i:04}.m4s"), frag(i))
            .await
            .expect("enqueue");
    }
    up.flush().await.expect("flush");
    let want: Vec<String> = (0..20).map(|i| format!("r/{i:04}.m4s")).collect();
    assert_eq!(flaky.puts(), want);
    assert_eq!((up.spool_bytes(), up.pending()), (0, 0));
    for (i, path) in want.iter().enumerate() {
        assert_eq!(objects.get(path).await.expect("get"), frag(i));
    }
    let left: Vec<_> = std::fs::read_dir(&spool)
        .expect("spool")
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn an_outage_spools_retries_and_catches_up_in_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let flaky = Flaky::new(&tmp.path().join("store"));
    let objects = Objects::from_store(flaky.clone(), None);
    let up = Uploader::start(objects.clone(), tmp.path().join("spool"), &fast(1 << 20))
        .await
        .expect("start");
    up.enqueue("r/0000.m4s", frag(0)).await.expect("enqueue");
    up.flush().await.expect("flush");

    flaky.down.store(true, Ordering::Release);
    for i in 1..10 {
        up.enqueue(&format!("r/{i:04}.m4s"), frag(i))
            .await
            .expect("enqueue while down");
    }
    // Several failed attempts: the task is retrying, not stuck.
    until(|| flaky.failures.load(Ordering::Acquire) >= 3).await;
    assert!(up.is_failing());
    assert_eq!(up.pending(), 9);
    assert!(up.spool_bytes() > 9 * frag(1).len() as u64);

    flaky.down.store(false, Ordering::Release);
    up.flush().await.expect("flush");
    let want: Vec<String> = (0..10).map(|i| format!("r/{i:04}.m4s")).collect();
    assert_eq!(flaky.puts(), want);
    assert!(!up.is_failing());
    assert_eq!((up.spool_bytes(), up.pending()), (0, 0));
}

#[tokio::test]
async fn a_full_spool_refuses_without_dropping_what_it_holds() {
    let tmp = tempfile::tempdir().expect("tmp");
    let flaky = Flaky::new(&tmp.path().join("store"));
    flaky.down.store(true, Ordering::Release);
    let objects = Objects::from_store(flaky.clone(), None);
    let one = frag(0).len() as u64 + 64;
    let up = Uploader::start(objects, tmp.path().join("spool"), &fast(3 * one))
        .await
        .expect("start");
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..6 {
        let path = format!("r/{i:04}.m4s");
        match up.enqueue(&path, frag(i)).await {
            Ok(()) => accepted.push(path),
            Err(SpoolError::Full {
                spool_bytes,
                max_bytes,
            }) => {
                assert!(spool_bytes <= max_bytes);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((accepted.len(), refused), (3, 3));
    flaky.down.store(false, Ordering::Release);
    up.flush().await.expect("flush");
    assert_eq!(flaky.puts(), accepted);
    // Room again.
    up.enqueue("r/late.m4s", frag(9))
        .await
        .expect("enqueue after drain");
}

#[tokio::test]
async fn a_restart_uploads_what_the_spool_holds() {
    let tmp = tempfile::tempdir().expect("tmp");
    let flaky = Flaky::new(&tmp.path().join("store"));
    flaky.down.store(true, Ordering::Release);
    let spool = tmp.path().join("spool");
    let ring = Keyring::new("k1", [3; 32]).expect("key");
    let objects = Objects::from_store(flaky.clone(), Some(ring));
    let up = Uploader::start(objects.clone(), spool.clone(), &fast(1 << 20))
        .await
        .expect("start");
    for i in 0..5 {
        up.enqueue(&format!("r/{i:04}.m4s"), frag(i))
            .await
            .expect("enqueue");
    }
    // The process dies: the task is gone, nothing was uploaded.
    up.shutdown();
    assert!(flaky.puts().is_empty());
    // A write cut off by the crash, never acknowledged.
    std::fs::write(spool.join("00000000000000000005.tmp"), b"half").expect("tmp");
    // What rests on disk is sealed.
    for e in std::fs::read_dir(&spool).expect("spool").flatten() {
        let bytes = std::fs::read(e.path()).expect("read");
        assert!(
            !bytes.windows(4).any(|w| w == b"moof"),
            "plaintext in {e:?}"
        );
    }

    flaky.down.store(false, Ordering::Release);
    let up = Uploader::start(objects.clone(), spool.clone(), &fast(1 << 20))
        .await
        .expect("restart");
    assert_eq!(up.pending(), 5);
    up.enqueue("r/0005.m4s", frag(5))
        .await
        .expect("enqueue after restart");
    up.flush().await.expect("flush");
    let want: Vec<String> = (0..6).map(|i| format!("r/{i:04}.m4s")).collect();
    assert_eq!(flaky.puts(), want);
    for (i, path) in want.iter().enumerate() {
        assert_eq!(objects.get(path).await.expect("get"), frag(i));
    }
    let left: Vec<_> = std::fs::read_dir(&spool)
        .expect("spool")
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_damaged_entry_is_set_aside_not_blocking() {
    let tmp = tempfile::tempdir().expect("tmp");
    let flaky = Flaky::new(&tmp.path().join("store"));
    let spool = tmp.path().join("spool");
    std::fs::create_dir_all(&spool).expect("spool");
    std::fs::write(spool.join("00000000000000000000.spool"), b"garbage").expect("write");
    let objects = Objects::from_store(flaky.clone(), None);
    let up = Uploader::start(objects, spool.clone(), &fast(1 << 20))
        .await
        .expect("start");
    up.enqueue("r/a", frag(0)).await.expect("enqueue");
    up.flush().await.expect("flush");
    assert_eq!(flaky.puts(), ["r/a"]);
    assert!(spool.join("failed/00000000000000000000.spool").is_file());
}
