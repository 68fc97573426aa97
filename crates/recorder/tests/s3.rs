//! Recording storage against a real S3-compatible server (moto_server,
//! started per test on a loopback port): objects land in the bucket, sealed
//! objects hold no plaintext there, Range reads work, and a 20 s outage in
//! the middle of a recording loses nothing.

use std::time::Duration;

use bytes::Bytes;
use lumen_recorder::seal::{Keyring, SealError};
use lumen_recorder::spool::{SpoolConfig, Uploader};
use lumen_recorder::store::{Objects, Sse, StoreConfig, StoreError};
use lumen_recorder::testing::{CutProxy, TempS3};

/// Looks like fMP4: `ftyp`/`moof` must not appear in sealed objects.
fn init_segment() -> Vec<u8> {
    let mut v = b"\0\0\0\x18ftypiso6\0\0\0\0iso6mp41".to_vec();
    v.extend((0..200_000u32).map(|i| (i % 251) as u8));
    v
}

fn fragment(i: usize) -> Bytes {
    let mut v = format!("\0\0\0\x10moof{i:06}").into_bytes();
    v.extend((0..30_000).map(|j| ((i * 7 + j) % 256) as u8));
    Bytes::from(v)
}

/// Flushes against a store that should be healthy: an upload failure ends
/// the test with its cause instead of leaving flush retrying forever.
async fn flush_healthy(up: &Uploader) {
    let failing = async {
        while !up.is_failing() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        r = up.flush() => r.expect("flush"),
        () = failing => panic!("upload failed: {:?}", up.last_error()),
    }
}

fn has(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_land_in_the_bucket() {
    let Some(s3) = TempS3::start("fragments_land_in_the_bucket") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let objects = Objects::open(&StoreConfig::S3(s3.config()), tmp.path(), None).expect("s3");
    let up = Uploader::start(
        objects.clone(),
        tmp.path().join("spool"),
        &SpoolConfig::default(),
    )
    .await
    .expect("uploader");
    up.enqueue("live/s1/init.mp4", Bytes::from(init_segment()))
        .await
        .expect("enqueue");
    for i in 0..5 {
        up.enqueue(&format!("live/s1/{i:06}.m4s"), fragment(i))
            .await
            .expect("enqueue");
    }
    flush_healthy(&up).await;
    assert_eq!((up.spool_bytes(), up.pending()), (0, 0));

    // Read back by a plain HTTP GET, not through object_store.
    assert_eq!(
        s3.raw_get("live/s1/init.mp4").expect("init"),
        init_segment()
    );
    for i in 0..5 {
        let got = s3
            .raw_get(&format!("live/s1/{i:06}.m4s"))
            .expect("fragment");
        assert_eq!(got, fragment(i));
    }
    let listed = objects.list("live/s1").await.expect("list");
    assert_eq!(listed.len(), 6);
    let r = objects
        .get_range("live/s1/init.mp4", 4..8)
        .await
        .expect("range");
    assert_eq!(&r[..], b"ftyp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_objects_hold_no_plaintext_and_open_on_the_fly() {
    let Some(s3) = TempS3::start("sealed_objects_hold_no_plaintext_and_open_on_the_fly") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = StoreConfig::S3(s3.config());
    let ring = Keyring::new("k1", [42; 32]).expect("key");
    let objects = Objects::open(&cfg, tmp.path(), Some(ring)).expect("s3");
    let init = init_segment();
    objects
        .put("vod/s1/init.mp4", Bytes::from(init.clone()))
        .await
        .expect("put");

    let stored = s3.raw_get("vod/s1/init.mp4").expect("in the bucket");
    assert!(!has(&stored, b"ftyp"), "plaintext in the bucket");
    assert!(stored.starts_with(b"LUMNSEAL"));
    assert_eq!(
        s3.raw_metadata("vod/s1/init.mp4", "lumen-key-id")
            .as_deref(),
        Some("k1")
    );

    assert_eq!(objects.get("vod/s1/init.mp4").await.expect("get"), init);
    assert_eq!(
        objects.size("vod/s1/init.mp4").await.expect("size"),
        init.len() as u64
    );
    for range in [
        0..8u64,
        65_535..65_537,
        65_536..131_072,
        1_000..199_999,
        150_000..500_000,
    ] {
        let got = objects
            .get_range("vod/s1/init.mp4", range.clone())
            .await
            .expect("range");
        let end = range.end.min(init.len() as u64) as usize;
        assert_eq!(got, &init[range.start as usize..end], "{range:?}");
    }

    // A large object through multipart upload, sealed part by part.
    let big: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let mut w = objects.writer("vod/s1/full.mp4").await.expect("writer");
    w.write(&init[..32]).await.expect("write");
    for piece in big.chunks(1 << 20) {
        w.write(piece).await.expect("write");
    }
    w.finish().await.expect("finish");
    let stored = s3.raw_get("vod/s1/full.mp4").expect("in the bucket");
    assert!(!has(&stored, b"ftyp"));
    let want: Vec<u8> = init[..32].iter().chain(&big).copied().collect();
    assert_eq!(objects.get("vod/s1/full.mp4").await.expect("get"), want);
    let got = objects
        .get_range("vod/s1/full.mp4", 7_000_000..7_100_000)
        .await
        .expect("range");
    assert_eq!(got, &want[7_000_000..7_100_000]);

    // Wrong, unknown and missing keys: errors, never garbage.
    let wrong = Keyring::new("k1", [7; 32]).expect("key");
    let err = Objects::open(&cfg, tmp.path(), Some(wrong))
        .expect("s3")
        .get_range("vod/s1/init.mp4", 0..8)
        .await
        .expect_err("wrong key");
    assert!(
        matches!(
            err,
            StoreError::Sealed {
                source: SealError::Auth(0),
                ..
            }
        ),
        "{err}"
    );
    let other = Keyring::new("k2", [42; 32]).expect("key");
    let err = Objects::open(&cfg, tmp.path(), Some(other))
        .expect("s3")
        .get("vod/s1/init.mp4")
        .await
        .expect_err("unknown key id");
    assert!(
        err.to_string()
            .contains(r#"sealed with key id "k1" which is not configured"#),
        "{err}"
    );
    let err = Objects::open(&cfg, tmp.path(), None)
        .expect("s3")
        .get("vod/s1/init.mp4")
        .await
        .expect_err("no key");
    assert!(
        err.to_string()
            .contains("object is sealed but no key is configured"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_encryption_is_requested() {
    let Some(s3) = TempS3::start("server_side_encryption_is_requested") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = s3.config();
    cfg.sse = Some(Sse::S3);
    let objects = Objects::open(&StoreConfig::S3(cfg), tmp.path(), None).expect("s3");
    objects
        .put("sse/a", Bytes::from_static(b"hello"))
        .await
        .expect("put");
    assert_eq!(objects.get("sse/a").await.expect("get"), &b"hello"[..]);
    assert_eq!(
        s3.raw_header("sse/a", "x-amz-server-side-encryption")
            .as_deref(),
        Some("AES256")
    );
}

/// The issue's scenario: the store goes away for 20 s in the middle of a
/// recording. moto keeps its state in memory, so the outage is a proxy
/// cutting every connection rather than a server restart (which would
/// lose the bucket) or SIGSTOP (which would leave requests hanging on an
/// open socket instead of failing the way an unreachable store does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20s_outage_mid_recording_loses_nothing() {
    let Some(s3) = TempS3::start("a_20s_outage_mid_recording_loses_nothing") else {
        return;
    };
    let proxy = CutProxy::start(s3.port()).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let ring = Keyring::new("k1", [5; 32]).expect("key");
    let cfg = StoreConfig::S3(s3.config_via(&proxy.endpoint()));
    let objects = Objects::open(&cfg, tmp.path(), Some(ring)).expect("s3");
    // A shorter backoff ceiling than the 30 s default so the test does not
    // wait out a long final sleep after the store is back.
    let spool_cfg = SpoolConfig {
        retry_max_ms: 2_000,
        ..SpoolConfig::default()
    };
    let spool_dir = tmp.path().join("spool");
    let up = Uploader::start(objects.clone(), spool_dir.clone(), &spool_cfg)
        .await
        .expect("uploader");

    // One fragment every 250 ms: 2 s up, 20 s down, 2 s up again.
    let tick = Duration::from_millis(250);
    let mut next = 0;
    let mut most_pending = 0;
    let mut saw_failing = false;
    for phase in [8, 80, 8] {
        if phase == 80 {
            proxy.cut();
        }
        for _ in 0..phase {
            up.enqueue(&format!("rec/s1/{next:06}.m4s"), fragment(next))
                .await
                .expect("enqueue");
            next += 1;
            tokio::time::sleep(tick).await;
            most_pending = most_pending.max(up.pending());
            saw_failing |= up.is_failing();
        }
        if phase == 80 {
            assert!(saw_failing, "the uploader never noticed the outage");
            assert!(up.spool_bytes() > 0, "the spool did not grow");
            proxy.restore();
        }
    }
    up.flush().await.expect("flush");
    assert!(most_pending > 10, "spool held at most {most_pending}");
    assert_eq!((up.spool_bytes(), up.pending()), (0, 0));
    assert!(!up.is_failing());

    // Everything is in the bucket, whole, sealed.
    for i in 0..next {
        let key = format!("rec/s1/{i:06}.m4s");
        let stored = s3.raw_get(&key).unwrap_or_else(|| panic!("{key} missing"));
        assert!(!has(&stored, b"moof"), "{key} in the clear");
        assert_eq!(objects.get(&key).await.expect("get"), fragment(i), "{key}");
    }
    assert_eq!(objects.list("rec/s1").await.expect("list").len(), next);
    let left: Vec<_> = std::fs::read_dir(&spool_dir)
        .expect("spool")
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
