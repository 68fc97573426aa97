use std::path::PathBuf;

use super::*;

fn plain(len: usize) -> Vec<u8> {
    // An fMP4-looking start, then a pattern: the marker must not survive
    // sealing.
    let mut v = b"\0\0\0\x18ftypiso6".to_vec();
    v.extend((0..len).map(|i| (i * 7 % 253) as u8));
    v
}

fn ring(id: &str, byte: u8) -> Keyring {
    Keyring::new(id, [byte; 32]).expect("key")
}

fn local(dir: &Path, keyring: Option<Keyring>) -> Objects {
    let cfg = StoreConfig::Local {
        dir: Some("rec".into()),
    };
    Objects::open(&cfg, dir, keyring).expect("local store")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn plain_local_roundtrip_range_size_list_delete() {
    let tmp = tempfile::tempdir().expect("tmp");
    let objects = local(tmp.path(), None);
    let data = plain(1000);
    objects
        .put("s/1/a.m4s", Bytes::from(data.clone()))
        .await
        .expect("put");
    objects
        .put("s/1/b.m4s", Bytes::from_static(b"b"))
        .await
        .expect("put");
    assert_eq!(objects.get("s/1/a.m4s").await.expect("get"), data);
    assert_eq!(
        objects.size("s/1/a.m4s").await.expect("size"),
        data.len() as u64
    );
    let r = objects.get_range("s/1/a.m4s", 10..20).await.expect("range");
    assert_eq!(r, &data[10..20]);
    let tail = objects
        .get_range("s/1/a.m4s", 1000..5000)
        .await
        .expect("tail");
    assert_eq!(tail, &data[1000..]);
    let listed = objects.list("s/1").await.expect("list");
    let paths: Vec<_> = listed.iter().map(|l| l.path.as_str()).collect();
    assert_eq!(paths, ["s/1/a.m4s", "s/1/b.m4s"]);
    objects.delete("s/1/a.m4s").await.expect("delete");
    objects.delete("s/1/a.m4s").await.expect("delete twice");
    assert!(matches!(
        objects.get("s/1/a.m4s").await,
        Err(StoreError::NotFound(_))
    ));
    // On disk under <data dir>/rec, in the clear.
    let on_disk = std::fs::read(tmp.path().join("rec/s/1/b.m4s")).expect("file");
    assert_eq!(on_disk, b"b");
}

#[tokio::test]
async fn sealed_on_disk_and_read_back_in_plaintext() {
    let tmp = tempfile::tempdir().expect("tmp");
    let objects = local(tmp.path(), Some(ring("k1", 1)));
    let data = plain(300_000);
    objects
        .put("s/init.mp4", Bytes::from(data.clone()))
        .await
        .expect("put");
    for f in files_under(tmp.path()) {
        let bytes = std::fs::read(&f).expect("read");
        assert!(
            !bytes.windows(4).any(|w| w == b"ftyp"),
            "{} has plaintext",
            f.display()
        );
        assert!(seal::is_sealed(&bytes));
    }
    assert_eq!(objects.get("s/init.mp4").await.expect("get"), data);
    assert_eq!(
        objects.size("s/init.mp4").await.expect("size"),
        data.len() as u64
    );
    let cs = seal::DEFAULT_CHUNK_SIZE as u64;
    for range in [
        0..1,
        4..8,
        cs - 1..cs + 1,
        cs..2 * cs,
        100..250_000,
        299_000..400_000,
    ] {
        let got = objects
            .get_range("s/init.mp4", range.clone())
            .await
            .expect("range");
        let end = range.end.min(data.len() as u64) as usize;
        assert_eq!(got, &data[range.start as usize..end], "{range:?}");
    }
    let past = objects.get_range("s/init.mp4", 400_000..400_001).await;
    assert!(matches!(past, Err(StoreError::Range { .. })), "{past:?}");
}

#[tokio::test]
async fn empty_objects_sealed_and_not() {
    let tmp = tempfile::tempdir().expect("tmp");
    for keyring in [None, Some(ring("k1", 1))] {
        let objects = local(tmp.path(), keyring);
        objects.put("e", Bytes::new()).await.expect("put");
        assert!(objects.get("e").await.expect("get").is_empty());
        assert_eq!(objects.size("e").await.expect("size"), 0);
        assert!(
            objects
                .get_range("e", 0..10)
                .await
                .expect("range")
                .is_empty()
        );
    }
}

#[tokio::test]
async fn wrong_missing_and_unknown_keys_fail_clearly() {
    let tmp = tempfile::tempdir().expect("tmp");
    local(tmp.path(), Some(ring("k2", 1)))
        .put("x", Bytes::from(plain(100)))
        .await
        .expect("put");

    let err = local(tmp.path(), None).get("x").await.expect_err("no key");
    assert_eq!(
        err.to_string(),
        "object x: object is sealed but no key is configured"
    );
    let err = local(tmp.path(), None)
        .get_range("x", 0..4)
        .await
        .expect_err("no key");
    assert!(matches!(
        err,
        StoreError::Sealed {
            source: SealError::NoKey,
            ..
        }
    ));

    let err = local(tmp.path(), Some(ring("k1", 1)))
        .get("x")
        .await
        .expect_err("other id");
    assert_eq!(
        err.to_string(),
        r#"object x: sealed with key id "k2" which is not configured"#
    );

    let wrong = local(tmp.path(), Some(ring("k2", 9)));
    let err = wrong.get("x").await.expect_err("wrong key");
    assert_eq!(
        err.to_string(),
        "object x: authentication failed: wrong key or corrupted object at chunk 0"
    );
    assert!(wrong.get_range("x", 1..2).await.is_err());
}

#[tokio::test]
async fn plaintext_objects_stay_readable_after_sealing_is_turned_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    local(tmp.path(), None)
        .put("old", Bytes::from_static(b"old"))
        .await
        .expect("put");
    let sealing = local(tmp.path(), Some(ring("k1", 1)));
    assert_eq!(sealing.get("old").await.expect("get"), &b"old"[..]);
    assert_eq!(
        sealing.get_range("old", 1..3).await.expect("range"),
        &b"ld"[..]
    );
}

#[tokio::test]
async fn writer_seals_part_by_part() {
    let tmp = tempfile::tempdir().expect("tmp");
    for keyring in [None, Some(ring("k1", 1))] {
        let objects = local(tmp.path(), keyring);
        let data = plain(6 * 1024 * 1024 + 123);
        let mut w = objects.writer("big.mp4").await.expect("writer");
        for piece in data.chunks(100_003) {
            w.write(piece).await.expect("write");
        }
        w.finish().await.expect("finish");
        assert_eq!(
            objects.size("big.mp4").await.expect("size"),
            data.len() as u64
        );
        assert_eq!(objects.get("big.mp4").await.expect("get"), data);
        let r = objects
            .get_range("big.mp4", 5_000_000..5_300_000)
            .await
            .expect("range");
        assert_eq!(r, &data[5_000_000..5_300_000]);
    }
}

#[tokio::test]
async fn bad_paths_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let objects = local(tmp.path(), None);
    let err = objects
        .put("a/../b", Bytes::new())
        .await
        .expect_err("bad path");
    assert!(matches!(err, StoreError::Path { .. }), "{err}");
}

#[test]
fn config_shapes() {
    let cfg: StoreConfig = serde_json::from_str(r#"{"kind":"local"}"#).expect("local");
    assert_eq!(cfg, StoreConfig::default());
    let cfg: StoreConfig = serde_json::from_value(serde_json::json!({
        "kind": "s3",
        "endpoint": "http://127.0.0.1:9000",
        "bucket": "b",
        "region": "eu-west-1",
        "access_key_id": "id",
        "secret_access_key": "secret",
        "allow_http": true,
        "sse": { "kms": { "key_id": "arn:k" } },
    }))
    .expect("s3");
    let StoreConfig::S3(s3) = &cfg else {
        panic!("not s3: {cfg:?}");
    };
    assert!(s3.path_style, "path style is the default");
    assert_eq!(
        s3.sse,
        Some(Sse::Kms {
            key_id: "arn:k".into()
        })
    );
    assert!(!format!("{s3:?}").contains("secret\""), "secret in Debug");
    let sse: Sse = serde_json::from_str(r#""s3""#).expect("sse s3");
    assert_eq!(sse, Sse::S3);
    let typo = serde_json::from_str::<StoreConfig>(r#"{"kind":"s3","bucket":"b","bukcet":1}"#);
    assert!(typo.is_err());
    // Both SSE modes build a client.
    for sse in [Sse::S3, Sse::Kms { key_id: "k".into() }] {
        let mut s3 = s3.clone();
        s3.sse = Some(sse);
        Objects::open(&StoreConfig::S3(s3), Path::new("/nonexistent"), None).expect("builds");
    }
}
