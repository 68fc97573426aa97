//! A live stream recorded end to end: publisher → node → recorder →
//! spool → local store → finalised MP4, HLS playlist, thumbnail and row.

use std::time::Duration;

use lumen_recorder::paths;

use crate::common::{decode_errors, ffmpeg_available, num, opus_packets, probe, stream, workdir};
use crate::publisher::{FPS, HEIGHT, Publisher, WIDTH};
use crate::{Env, config, top_boxes, until, video_pts};

/// Seconds of media the publisher sends.
const SECS: u64 = 6;
/// Time for what the publisher's pacer holds to reach the node.
const DRAIN: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_becomes_a_playable_recording() {
    if !ffmpeg_available("a_live_stream_becomes_a_playable_recording") {
        return;
    }
    let dir = workdir("record");
    let env = Env::start(dir.path(), config()).await;
    let h = env.node.handle();
    let publisher = Publisher::start(&h, "cam", opus_packets(dir.path(), 4)).await;
    env.recorder.publisher_live("cam", "brd_1");
    let id = env.recording_id("cam").await;

    until("the publisher has sent the media", || {
        let n = publisher.sent();
        async move { n >= SECS * FPS }
    })
    .await;
    // A live thumbnail came from the first keyframe.
    let live = env
        .recorder
        .live_thumbnail("cam")
        .expect("a live thumbnail");
    assert_eq!(&live[..2], &[0xff, 0xd8], "a JPEG");
    assert!(env.recorder.fragments_written() >= 2);
    // Asked for keyframes so fragments are cut on them.
    assert!(publisher.keyframe_requests() > 0);

    let sent = publisher.pause(DRAIN).await;
    publisher.stop();
    assert_eq!(h.close(publisher.session).await, Ok(true));
    env.recorder.publisher_gone("cam");
    let rec = env.ready(&id).await;
    assert_eq!(env.recorder.recording_of("cam"), None);

    // The row.
    let expected_ms = (sent * 1000 / FPS) as i64;
    assert!(
        (rec.duration_ms - expected_ms).abs() <= 500,
        "duration {} ms, sent {expected_ms} ms",
        rec.duration_ms
    );
    assert_eq!((rec.width, rec.height), (WIDTH as i64, HEIGHT as i64));
    assert!(
        rec.codecs.starts_with("avc1.") && rec.codecs.ends_with(",opus"),
        "{}",
        rec.codecs
    );
    assert_eq!(rec.broadcast.as_deref(), Some("brd_1"));
    assert!(rec.ended_at.is_some());

    // The MP4: moov first, H.264 + Opus, as long as what was sent, frames
    // in order, decodes cleanly.
    let mp4 = env.mp4_file(dir.path(), &id).await;
    let data = std::fs::read(&mp4).expect("read");
    assert_eq!(data.len() as i64, rec.size);
    assert_eq!(top_boxes(&data), ["ftyp", "moov", "mdat"]);
    let report = probe(&mp4);
    let v = stream(&report, "video");
    assert_eq!(v["codec_name"], "h264");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(WIDTH as u64), Some(HEIGHT as u64))
    );
    let a = stream(&report, "audio");
    assert_eq!(a["codec_name"], "opus");
    let duration = num(&report["format"]["duration"]);
    let expected = sent as f64 / FPS as f64;
    assert!(
        (duration - expected).abs() <= 0.5,
        "duration {duration} s, sent {expected} s"
    );
    let frames = num(&v["nb_read_frames"]) as u64;
    assert!(
        frames <= sent && frames + FPS / 2 >= sent,
        "{frames} of {sent} frames"
    );
    let pts = video_pts(&mp4);
    assert!(
        pts.windows(2).all(|w| w[0] < w[1]),
        "video frames out of order"
    );
    let errors = decode_errors(&mp4, &[]);
    assert!(errors.is_empty(), "ffmpeg: {errors}");

    // The playlist lists every journalled fragment, in order, and plays.
    let journal = env.auth.recordings().fragments(&id).await.expect("journal");
    assert!(journal.len() >= 3, "{} fragments", journal.len());
    assert!(journal.iter().all(|f| f.uploaded));
    let playlist = env
        .recorder
        .objects()
        .get(&paths::playlist(&id))
        .await
        .expect("playlist");
    let playlist = String::from_utf8(playlist.to_vec()).expect("text");
    let listed: Vec<&str> = playlist.lines().filter(|l| l.ends_with(".m4s")).collect();
    let names: Vec<String> = journal
        .iter()
        .map(|f| f.object.rsplit('/').next().expect("name").to_owned())
        .collect();
    assert_eq!(listed, names);
    assert!(playlist.contains("#EXT-X-MAP:URI=\"init.mp4\""));
    assert!(playlist.ends_with("#EXT-X-ENDLIST\n"));
    // The local store is a directory: ffmpeg plays the playlist from it.
    let on_disk = dir.path().join("recordings").join(paths::playlist(&id));
    let errors = decode_errors(&on_disk, &["-allowed_extensions", "ALL"]);
    assert!(errors.is_empty(), "ffmpeg on the playlist: {errors}");

    // The poster.
    let thumb = rec.thumbnail_object.clone().expect("a thumbnail");
    let jpeg = env.recorder.objects().get(&thumb).await.expect("thumbnail");
    let mut decoder = jpeg_decoder::Decoder::new(&jpeg[..]);
    decoder.decode().expect("a JPEG");
    let info = decoder.info().expect("info");
    assert_eq!((info.width as usize, info.height as usize), (WIDTH, HEIGHT));

    // Deleting it takes its objects and its row.
    assert!(env.recorder.delete(&id).await.expect("delete"));
    assert!(
        env.recorder
            .objects()
            .list(&paths::prefix(&id))
            .await
            .expect("list")
            .is_empty()
    );
    assert!(env.auth.recordings().get(&id).await.expect("db").is_none());
    assert!(!env.recorder.delete(&id).await.expect("delete"));
    env.stop().await;
}
