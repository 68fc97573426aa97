//! Recording end to end over real UDP and HTTP: `lumen publish`'s client
//! sends the test pattern (H.264 with a frame-numbered SEI, and Opus); the
//! server records it while live, and finalises it when the publisher
//! leaves. The API lists it, ffprobe reads the MP4 as H.264 and Opus of
//! the right length, the SEI frame numbers in it run on without a gap, the
//! file is served with HTTP Range, and Chromium plays and seeks it on the
//! VOD page. Also: a store outage of 20 s (moto behind a proxy that is cut)
//! and a `SIGKILL` of `lumen serve` lose nothing but the open fragment.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lumen_tools::client::{PublishOptions, Publisher, parse_timing_sei, split_annex_b};
use serde_json::Value;

use crate::support::{start_server, start_server_with};

/// How long the pattern is published.
const SECONDS: f64 = 10.0;

/// Whether ffmpeg and ffprobe run here: without them the test says so
/// loudly and passes, except under `LUMEN_REQUIRE_ALL=1`.
fn ffmpeg_available(test: &str) -> bool {
    let ok = ["ffmpeg", "ffprobe"].iter().all(|tool| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok {
        if std::env::var("LUMEN_REQUIRE_ALL").is_ok_and(|v| v == "1") {
            panic!("{test}: ffmpeg/ffprobe not installed and LUMEN_REQUIRE_ALL=1");
        }
        eprintln!("\n\n*** SKIP {test}: ffprobe not installed (apt-get install ffmpeg) ***\n\n");
    }
    ok
}

/// The test pattern at 320×180, published to `base`'s WHIP endpoint of
/// `stream` with this Bearer token, frame rate and bitrate.
async fn publish(base: &str, stream: &str, token: String, fps: u32, bitrate_bps: u32) -> Publisher {
    Publisher::start(PublishOptions {
        url: format!("{base}/whip/{stream}"),
        token: Some(token),
        width: 320,
        height: 180,
        fps,
        bitrate_bps,
        ..Default::default()
    })
    .await
    .expect("publish")
}

async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = reqwest::Client::new().get(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.expect("GET")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_becomes_a_playable_recording() {
    if !ffmpeg_available("a_broadcast_becomes_a_playable_recording") {
        return;
    }
    let server = start_server().await;
    let base = server.http_url();
    // A webhook endpoint for `recording.ready` (nobody listens: the
    // delivery is queued all the same, which is what is checked).
    let hook = server
        .auth()
        .webhooks()
        .register(
            "http://127.0.0.1:9/hook",
            &[lumen_signaling::auth::webhooks::EventType::RecordingReady],
            None,
            "",
        )
        .await
        .expect("a webhook endpoint");
    let publisher = publish(&base, "rec", server.publish_token(), 30, 400_000).await;
    tokio::time::sleep(Duration::from_secs_f64(SECONDS)).await;
    let sent = publisher.frames_sent();
    publisher.stop().await.expect("the publisher leaves");

    // Finalised in the background once the publisher is gone.
    let rec = ready_recording(&base, "rec", Duration::from_secs(60)).await;
    let id = rec["id"].as_str().expect("id").to_string();
    let queued = server
        .auth()
        .webhooks()
        .deliveries(&hook.endpoint.id, 10)
        .await
        .expect("deliveries");
    let ready = queued
        .iter()
        .find(|d| d.event_type == "recording.ready")
        .expect("recording.ready is queued");
    assert_eq!(ready.payload["data"]["recording"], id.as_str());
    assert_eq!(ready.payload["data"]["stream"], "rec");
    assert_eq!(rec["width"], 320, "{rec}");
    assert_eq!(rec["height"], 180, "{rec}");
    assert!(
        rec["codecs"].as_str().unwrap_or("").contains("avc1"),
        "{rec}"
    );
    assert!(rec["broadcast"].is_string(), "{rec}");
    let duration_ms = rec["duration_ms"].as_f64().expect("duration");
    assert!(
        (duration_ms / 1000.0 - SECONDS).abs() <= 0.5,
        "recorded {duration_ms} ms of a {SECONDS} s broadcast: {rec}"
    );

    // The whole file, and a range of it, as a player asks.
    let mp4 = get(&format!("{base}/vod/{id}.mp4"), &[]).await;
    assert_eq!(mp4.status(), 200);
    assert_eq!(mp4.headers()["accept-ranges"], "bytes");
    let etag = mp4.headers()["etag"].to_str().expect("etag").to_string();
    let bytes = mp4.bytes().await.expect("the MP4");
    assert_eq!(bytes.len() as i64, rec["size"].as_i64().expect("size"));
    assert_eq!(&bytes[4..8], b"ftyp");
    let part = get(
        &format!("{base}/vod/{id}.mp4"),
        &[("range", "bytes=100-199")],
    )
    .await;
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 100-199/{}", bytes.len()).as_str()
    );
    assert_eq!(part.bytes().await.expect("range")[..], bytes[100..200]);
    let again = get(&format!("{base}/vod/{id}.mp4"), &[("if-none-match", &etag)]).await;
    assert_eq!(again.status(), 304);
    let past = format!("bytes={}-", bytes.len());
    let none = get(&format!("{base}/vod/{id}.mp4"), &[("range", &past)]).await;
    assert_eq!(none.status(), 416);
    let playlist = get(&format!("{base}/vod/{id}/index.m3u8"), &[]).await;
    assert_eq!(playlist.status(), 200);
    let playlist = playlist.text().await.expect("playlist");
    assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    let first = playlist
        .lines()
        .find(|l| l.ends_with(".m4s"))
        .expect("a fragment in the playlist");
    assert_eq!(
        get(&format!("{base}/vod/{id}/{first}"), &[]).await.status(),
        200
    );

    // What ffprobe and ffmpeg see in it.
    let dir = server.data_dir().join("e2e-files");
    std::fs::create_dir_all(&dir).expect("a scratch dir");
    let file = dir.join("rec.mp4");
    std::fs::write(&file, &bytes).expect("write");
    let probe = probe(&file);
    let codecs: Vec<&str> = probe["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .filter_map(|s| s["codec_name"].as_str())
        .collect();
    assert!(
        codecs.contains(&"h264") && codecs.contains(&"opus"),
        "{codecs:?}"
    );
    let format_duration: f64 = probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("a duration");
    assert!(
        (format_duration - SECONDS).abs() <= 0.5,
        "ffprobe says {format_duration} s"
    );
    let decode = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        decode.stderr.is_empty(),
        "decoding errors: {}",
        String::from_utf8_lossy(&decode.stderr)
    );

    // The pattern's frame numbers, from its SEI: in order, none missing,
    // and about as many as were sent.
    let h264 = dir.join("rec.h264");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args([
            "-map",
            "0:v",
            "-c",
            "copy",
            "-bsf:v",
            "h264_mp4toannexb",
            "-f",
            "h264",
        ])
        .arg(&h264)
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let es = std::fs::read(&h264).expect("the elementary stream");
    let numbers: Vec<u64> = split_annex_b(&es)
        .into_iter()
        .filter_map(parse_timing_sei)
        .map(|t| t.frame_number)
        .collect();
    assert!(!numbers.is_empty(), "no timing SEI in the recording");
    for pair in numbers.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a frame is missing or out of order");
    }
    let recorded = numbers.len() as u64;
    // `sent` was read while the publisher ran: a frame it was writing then
    // (counted once written) or wrote before it stopped may be recorded
    // too. Frames recorded twice would have broken the numbering above.
    assert!(
        recorded + 15 >= sent && recorded <= sent + 1,
        "{recorded} frames recorded of {sent} sent"
    );
    server.stop().await;
}

/// Waits for the first recording of `stream` to be ready; its JSON.
async fn ready_recording(base: &str, stream: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let list: Value = match get(&format!("{base}/api/v1/recordings?stream={stream}"), &[])
            .await
            .text()
            .await
        {
            Ok(text) => serde_json::from_str(&text).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        if let Some(r) = list.as_array().and_then(|a| a.first())
            && r["state"] == "ready"
        {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no ready recording of {stream} in time: {list}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The frame numbers of the pattern's SEI in an MP4, in file order.
fn frame_numbers(mp4: &[u8], scratch: &Path) -> Vec<u64> {
    std::fs::create_dir_all(scratch).expect("a scratch dir");
    let file = scratch.join("in.mp4");
    let h264 = scratch.join("out.h264");
    std::fs::write(&file, mp4).expect("write");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&file)
        .args([
            "-map",
            "0:v",
            "-c",
            "copy",
            "-bsf:v",
            "h264_mp4toannexb",
            "-f",
            "h264",
        ])
        .arg(&h264)
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let es = std::fs::read(&h264).expect("the elementary stream");
    split_annex_b(&es)
        .into_iter()
        .filter_map(parse_timing_sei)
        .map(|t| t.frame_number)
        .collect()
}

/// A real S3 API (moto) behind a proxy that is cut for 20 s in the middle
/// of a broadcast: the recording lands in the bucket and its MP4 has no
/// gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_mid_broadcast_loses_nothing() {
    use lumen_signaling::recorder::store::StoreConfig;
    use lumen_signaling::recorder::testing::{CutProxy, TempS3};
    if !ffmpeg_available("a_store_outage_mid_broadcast_loses_nothing") {
        return;
    }
    let Some(s3) = TempS3::start("a_store_outage_mid_broadcast_loses_nothing") else {
        return;
    };
    let proxy = CutProxy::start(s3.port()).await;
    let store = s3.config_via(&proxy.endpoint());
    let server = start_server_with(|c| c.recording.store = StoreConfig::S3(store)).await;
    let base = server.http_url();
    let publisher = publish(&base, "outage", server.publish_token(), 15, 300_000).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(20)).await;
    proxy.restore();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sent = publisher.frames_sent();
    publisher.stop().await.expect("the publisher leaves");

    let rec = ready_recording(&base, "outage", Duration::from_secs(120)).await;
    let id = rec["id"].as_str().expect("id");
    // In the bucket, read without lumen.
    let init = s3
        .raw_get(&format!("recordings/{id}/init.mp4"))
        .expect("the init segment is in the bucket");
    assert_eq!(&init[4..8], b"ftyp");
    assert!(
        s3.raw_get(&format!("recordings/{id}/recording.mp4"))
            .is_some()
    );
    let mp4 = get(&format!("{base}/vod/{id}.mp4"), &[])
        .await
        .bytes()
        .await
        .expect("the MP4");
    let numbers = frame_numbers(&mp4, &server.data_dir().join("e2e-outage"));
    let gaps: Vec<(u64, u64)> = numbers
        .windows(2)
        .filter(|p| p[1] != p[0] + 1)
        .map(|p| (p[0], p[1]))
        .collect();
    assert!(
        gaps.is_empty(),
        "gaps {gaps:?} in frames {:?}..{:?}",
        numbers.first(),
        numbers.last()
    );
    // All of it but the time to the first keyframe (the recording starts
    // on one) and the frames in flight at the end.
    assert!(
        numbers.len() as u64 + 30 >= sent,
        "{} frames recorded of {sent} sent: {rec}",
        numbers.len()
    );
    for pair in numbers.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a gap in the recording");
    }
    server.stop().await;
}

/// `SIGKILL` of `lumen serve` mid-broadcast: after a restart the recording
/// is finalised, and it ends at most one fragment (2 s) before the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_finishes_its_recording_after_a_restart() {
    if !ffmpeg_available("a_killed_server_finishes_its_recording_after_a_restart") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("lumen-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("data dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let serve = || {
        Command::new(env!("CARGO_BIN_EXE_lumen"))
            .args(["serve", "--http-addr", &format!("127.0.0.1:{port}")])
            .args(["--rtc-addr", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .env("LUMEN_ADMIN_PASSWORD", "the admin's password")
            .env_remove("LUMEN_DATABASE_URL")
            .env_remove("DATABASE_URL")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("lumen serve starts")
    };
    let up = || async {
        for _ in 0..200 {
            if reqwest::get(format!("{base}/api/streams")).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("lumen serve did not come up");
    };
    let mut first = serve();
    up().await;
    let token = Command::new(env!("CARGO_BIN_EXE_lumen"))
        .args(["token", "mint", "--scope", "publish:*", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("lumen token mint");
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8_lossy(&token.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    let publisher = publish(&base, "killed", token, 15, 300_000).await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    let live_for = publisher.frames_sent() as f64 / 15.0;
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    let _ = publisher.stop().await;

    let mut second = serve();
    up().await;
    let rec = ready_recording(&base, "killed", Duration::from_secs(60)).await;
    let duration = rec["duration_ms"].as_f64().expect("duration") / 1000.0;
    assert!(
        duration >= live_for - 2.5 && duration <= live_for + 0.5,
        "{duration} s recorded of {live_for} s sent before the kill: {rec}"
    );
    let id = rec["id"].as_str().expect("id");
    let mp4 = get(&format!("{base}/vod/{id}.mp4"), &[])
        .await
        .bytes()
        .await
        .expect("the MP4");
    let numbers = frame_numbers(&mp4, &dir.join("e2e-kill"));
    for pair in numbers.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a gap in the recording");
    }
    let _ = second.kill();
    let _ = second.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn probe(file: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(file)
        .output()
        .expect("ffprobe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe's JSON")
}

/// The VOD page in headless Chromium: the recording plays, seeks, and its
/// broadcast's chat is replayed up to the playback position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vod_page_plays_seeks_and_replays_the_chat() {
    let Some(chrome) = crate::chrome::ChromeDriver::start().await else {
        return;
    };
    let server = start_server().await;
    let base = server.http_url();
    let publisher = Publisher::start(PublishOptions {
        url: format!("{base}/whip/vodpage"),
        token: Some(server.publish_token()),
        width: 320,
        height: 180,
        fps: 30,
        bitrate_bps: 400_000,
        chat: true,
        ..Default::default()
    })
    .await
    .expect("publish");
    let chat = publisher.chat_sender().expect("the chat channel");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Sent until the room has it (the channel opens with the session).
    let mut said = false;
    for _ in 0..50 {
        if chat.send_text("two seconds in").is_ok() {
            said = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(said, "the broadcaster's chat never opened");
    tokio::time::sleep(Duration::from_secs(5)).await;
    publisher.stop().await.expect("the publisher leaves");

    let rec = ready_recording(&base, "vodpage", Duration::from_secs(60)).await;
    let id = rec["id"].as_str().expect("id").to_string();

    let page = chrome.new_session().await;
    page.goto(&format!("{base}/vod/{id}"))
        .await
        .expect("open the VOD page");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = page
            .execute(
                "return window.lumen?.state === 'ready' && window.lumen.chat.length > 0;",
                vec![],
            )
            .await
            .expect("read the page");
        if v == Value::Bool(true) {
            break;
        }
        let state = page
            .execute("return window.lumen ?? null;", vec![])
            .await
            .expect("read the page");
        assert!(
            Instant::now() < deadline,
            "the VOD page never got ready: {state}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Play (muted: autoplay rules), then seek past the chat message.
    let played = page
        .execute(
            "const v = document.getElementById('video');
             v.muted = true;
             await v.play();
             const t0 = v.currentTime;
             await new Promise((r) => setTimeout(r, 1500));
             const advanced = v.currentTime > t0;
             v.currentTime = 4.5;
             await new Promise((r) => v.addEventListener('seeked', r, { once: true }));
             await new Promise((r) => setTimeout(r, 300));
             return { advanced, at: v.currentTime, shown: window.lumen.shown,
                      first: window.lumen.chat[0].message.text,
                      log: document.getElementById('replay-log').textContent };",
            vec![],
        )
        .await
        .expect("play and seek");
    assert_eq!(played["advanced"], true, "the video did not play: {played}");
    assert!(played["at"].as_f64().unwrap_or(0.0) >= 4.4, "{played}");
    assert_eq!(played["first"], "two seconds in", "{played}");
    assert!(played["shown"].as_u64().unwrap_or(0) >= 1, "{played}");
    assert!(
        played["log"]
            .as_str()
            .unwrap_or("")
            .contains("two seconds in"),
        "{played}"
    );
    page.close().await.expect("close the page");
    drop(chrome);
    server.stop().await;
}

/// Sealed at rest: with a key configured, no object on disk holds the
/// plaintext `ftyp`, playback and Range work through the server, and a
/// server without that key answers with an error naming it, not garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_recordings_play_only_with_their_key() {
    use lumen_signaling::recorder::seal::{EncryptionConfig, KeySource};
    if !ffmpeg_available("sealed_recordings_play_only_with_their_key") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("lumen-sealed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("data dir");
    let key_file = dir.join("k1.key");
    std::fs::write(&key_file, [7u8; 32]).expect("a key");
    let with_key = EncryptionConfig {
        current: Some("k1".into()),
        keys: vec![KeySource {
            id: "k1".into(),
            file: Some(key_file.clone()),
            env: None,
        }],
    };
    let data = dir.join("data");
    let server = start_server_with(|c| {
        c.data_dir = data.clone();
        c.remove_data_dir = false;
        c.recording.encryption = with_key;
    })
    .await;
    let base = server.http_url();
    let publisher = publish(&base, "sealed", server.publish_token(), 15, 300_000).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sent = publisher.frames_sent();
    publisher.stop().await.expect("the publisher leaves");
    let rec = ready_recording(&base, "sealed", Duration::from_secs(60)).await;
    let id = rec["id"].as_str().expect("id").to_string();

    // Every object of the recording on disk is sealed.
    let objects = data.join("recordings").join("recordings").join(&id);
    let objects = if objects.is_dir() {
        objects
    } else {
        data.join("recordings").join(&id)
    };
    let mut files = 0;
    for entry in std::fs::read_dir(&objects).expect("the recording's objects") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("an object");
        assert!(
            !bytes.windows(4).any(|w| w == b"ftyp"),
            "a plaintext MP4 box on disk"
        );
        assert!(bytes.starts_with(b"LUMNSEAL"), "not a sealed object");
        files += 1;
    }
    assert!(files >= 3, "{files} objects");

    // Played through the server: whole and in ranges.
    let mp4 = get(&format!("{base}/vod/{id}.mp4"), &[])
        .await
        .bytes()
        .await
        .expect("the MP4");
    assert_eq!(&mp4[4..8], b"ftyp");
    let half = mp4.len() / 2;
    let tail = get(
        &format!("{base}/vod/{id}.mp4"),
        &[("range", &format!("bytes=-{half}"))],
    )
    .await;
    assert_eq!(tail.status(), 206);
    assert_eq!(
        tail.bytes().await.expect("range")[..],
        mp4[mp4.len() - half..]
    );
    let scratch = dir.join("scratch");
    let numbers = frame_numbers(&mp4, &scratch);
    assert!(
        numbers.len() as u64 + 30 >= sent,
        "{} frames recorded of {sent} sent ({:?}..{:?}): {rec}",
        numbers.len(),
        numbers.first(),
        numbers.last()
    );
    server.stop().await;

    // With another key, and with none: a plain error saying so.
    let other = dir.join("k2.key");
    std::fs::write(&other, [9u8; 32]).expect("another key");
    let wrong = EncryptionConfig {
        current: Some("k2".into()),
        keys: vec![KeySource {
            id: "k2".into(),
            file: Some(other),
            env: None,
        }],
    };
    for (keys, says) in [
        (wrong, "key id \"k1\" which is not configured"),
        (EncryptionConfig::default(), "no key is configured"),
    ] {
        let server = start_server_with(|c| {
            c.data_dir = data.clone();
            c.remove_data_dir = false;
            c.recording.encryption = keys;
        })
        .await;
        let base = server.http_url();
        let r = get(&format!("{base}/vod/{id}.mp4"), &[]).await;
        assert_eq!(r.status(), 500);
        let body: Value =
            serde_json::from_str(&r.text().await.expect("a problem")).expect("a JSON problem");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{body}");
        server.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
