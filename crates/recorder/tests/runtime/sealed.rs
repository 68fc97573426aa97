//! A recording sealed at rest: no plaintext MP4 on disk, ranges of the
//! sealed MP4 read back right, and the opened copy plays.

use lumen_recorder::paths;
use lumen_recorder::seal::{EncryptionConfig, KeySource};

use crate::common::{decode_errors, ffmpeg_available, opus_packets, workdir};
use crate::publisher::{FPS, Publisher};
use crate::{Env, config, top_boxes, until};

fn has(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_recording_has_no_plaintext_at_rest() {
    if !ffmpeg_available("a_sealed_recording_has_no_plaintext_at_rest") {
        return;
    }
    let dir = workdir("sealed");
    let key = dir.path().join("k1.key");
    std::fs::write(&key, [7u8; 32]).expect("key file");
    let mut cfg = config();
    cfg.encryption = EncryptionConfig {
        current: None,
        keys: vec![KeySource {
            id: "k1".into(),
            file: Some(key),
            env: None,
        }],
    };
    let env = Env::start(dir.path(), cfg).await;
    let h = env.node.handle();
    let publisher = Publisher::start(&h, "cam", opus_packets(dir.path(), 4)).await;
    env.recorder.publisher_live("cam", "brd_sealed");
    let id = env.recording_id("cam").await;
    until("three seconds are sent", || {
        let n = publisher.sent();
        async move { n >= 3 * FPS }
    })
    .await;
    publisher.stop();
    env.recorder.publisher_gone("cam");
    env.ready(&id).await;

    // On disk: sealed, no box names.
    let on_disk = dir.path().join("recordings").join(paths::mp4(&id));
    let raw = std::fs::read(&on_disk).expect("the sealed MP4");
    assert!(raw.starts_with(b"LUMNSEAL"));
    for needle in [&b"ftyp"[..], b"moov", b"mdat", b"avcC"] {
        assert!(!has(&raw, needle), "plaintext {needle:?} at rest");
    }
    let init = std::fs::read(dir.path().join("recordings").join(paths::init(&id))).expect("init");
    assert!(init.starts_with(b"LUMNSEAL") && !has(&init, b"ftyp"));

    // Through the store: plaintext, whole and by ranges.
    let objects = env.recorder.objects();
    let whole = objects.get(&paths::mp4(&id)).await.expect("open");
    assert_eq!(top_boxes(&whole), ["ftyp", "moov", "mdat"]);
    let len = whole.len() as u64;
    // Within a chunk, across chunk borders (64 KiB), and the tail.
    for range in [
        0..64,
        4..8,
        len / 3..(len / 3 + 70_000).min(len),
        len - 100..len,
    ] {
        let part = objects
            .get_range(&paths::mp4(&id), range.clone())
            .await
            .expect("range");
        assert_eq!(&part[..], &whole[range.start as usize..range.end as usize]);
    }
    let mp4 = env.mp4_file(dir.path(), &id).await;
    let errors = decode_errors(&mp4, &[]);
    assert!(errors.is_empty(), "ffmpeg: {errors}");
    env.stop().await;
}
