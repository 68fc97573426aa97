//! The transcoder end to end over real UDP and HTTP: `lumen publish`'s
//! client sends one 1280×720 H.264 layer; the server's ladder makes `m`
//! (640×360) and `l` (320×180), which appear as the stream's layers, and
//! pauses while nobody watches. A viewer pinned to `l` wakes it and decodes
//! 320×180 pictures whose frame numbers (the publisher's timing SEI,
//! carried over by the ladder) follow each other without a gap, and that
//! goes to the source and back to the rung without a decoding error; a pin on a
//! layer the stream does not have is refused by the layer endpoint, with
//! and without a ladder. A stream past the budget goes without a ladder and
//! its `layers` event says so. Chromium plays an H.264 rung, and an AV1
//! rung when the ladder has one.

use std::time::{Duration, Instant};

use lumen_tools::client::{PublishOptions, Publisher, WatchOptions, WatchStats, Watcher};

use crate::cluster::Events;
use crate::support::{TestServer, start_server_with};

/// Light enough for a decoder, two encoders and the viewers' decoders on a
/// shared 2-core machine.
const FPS: u32 = 15;
/// How long the ladder and the pinned viewer may take to get going.
const SETTLE: Duration = Duration::from_secs(20);
/// How long the pinned viewer is watched once it shows the rung.
const WATCH: Duration = Duration::from_secs(4);

async fn stream_json(base: &str, stream: &str) -> String {
    match reqwest::get(format!("{base}/api/streams/{stream}")).await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(e) => format!("GET /api/streams/{stream}: {e}"),
    }
}

fn watch(base: &str, stream: &str, layer: &str) -> WatchOptions {
    WatchOptions {
        url: format!("{base}/whep/{stream}"),
        token: None,
        layer: Some(layer.to_owned()),
        chat: false,
    }
}

async fn publish_720p(server: &TestServer, stream: &str) -> Publisher {
    publish_one_layer(server, stream, (1280, 720), 1_500_000).await
}

/// Publishes one H.264 layer of `size` at `bitrate_bps` to `stream`.
async fn publish_one_layer(
    server: &TestServer,
    stream: &str,
    (width, height): (u32, u32),
    bitrate_bps: u32,
) -> Publisher {
    let base = server.http_url();
    Publisher::start(PublishOptions {
        url: format!("{base}/whip/{stream}"),
        token: Some(server.publish_token()),
        width,
        height,
        fps: FPS,
        bitrate_bps,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("publish one {width}x{height} layer: {e:#}"))
}

/// Waits until the stream's JSON satisfies `ok`; the last JSON either way.
async fn wait_for(base: &str, stream: &str, ok: impl Fn(&str) -> bool) -> (bool, String) {
    let started = Instant::now();
    loop {
        let json = stream_json(base, stream).await;
        if ok(&json) {
            return (true, json);
        }
        if started.elapsed() > SETTLE {
            return (false, json);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn shows(s: &WatchStats, size: (u32, u32)) -> bool {
    s.frames_decoded > 0 && (s.width, s.height) == size
}

/// Waits (at most [`SETTLE`]) until `w` shows pictures of `size`; its
/// stats then.
async fn until_shows(w: &Watcher, size: (u32, u32)) -> Option<WatchStats> {
    until_shows_within(w, size, SETTLE).await
}

/// [`until_shows`], waiting at most `limit`.
async fn until_shows_within(w: &Watcher, size: (u32, u32), limit: Duration) -> Option<WatchStats> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let s = w.stats();
        if shows(&s, size) {
            return Some(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_pinned_to_l_wakes_the_idle_ladder_and_gets_its_rung_continuously() {
    let server = start_server_with(|c| {
        c.transcode.enabled = true;
        // Longer than the test waits: a ladder nobody has watched yet
        // pauses as soon as its rungs are known, not after this.
        c.transcode.idle_secs = 60;
    })
    .await;
    let base = server.http_url();
    let publisher = publish_720p(&server, "ladder").await;

    // The rungs appear among the stream's layers once the ladder runs.
    let (ready, json) = wait_for(&base, "ladder", |j| {
        j.contains("\"live\":true") && j.contains("\"rid\":\"m\"") && j.contains("\"rid\":\"l\"")
    })
    .await;
    assert!(ready, "the ladder's layers never appeared: {json}");
    // Nobody watches yet: the ladder pauses at once, its rungs go quiet
    // (and stay known layers).
    let started = Instant::now();
    while started.elapsed() < SETTLE && server.transcoder_stats().paused == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        server.transcoder_stats().paused,
        1,
        "{:?}",
        server.transcoder_stats()
    );
    let (quiet, json) = wait_for(&base, "ladder", |j| {
        j.matches("\"active\":false").count() == 2
    })
    .await;
    assert!(quiet, "the paused rungs still send: {json}");
    let paused_out = server.transcoder_stats().frames_out;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.transcoder_stats().frames_out,
        paused_out,
        "a paused ladder encodes nothing"
    );

    let low = Watcher::start(watch(&base, "ladder", "l"))
        .await
        .expect("a viewer pinned to l");
    let first = until_shows(&low, (320, 180))
        .await
        .unwrap_or_else(|| panic!("the l viewer never decoded 320x180: {:?}", low.stats()));
    let sent_before = publisher.frames_sent();
    tokio::time::sleep(WATCH).await;
    let sent = publisher.frames_sent() - sent_before;
    let window = low.stats();

    // From the rung to the source and back: automatic choice takes the
    // source (nothing limits this viewer), a pin on l the rung again, and
    // no picture fails to decode on the way.
    low.select_automatic()
        .await
        .expect("back to automatic choice");
    // (The bandwidth estimate must first grow from the rung's 200 kbit/s
    // to the source's 1.5 Mbit/s: slow on a loaded machine.)
    let source = until_shows_within(&low, (1280, 720), 3 * SETTLE).await;
    low.select_layer("l").await.expect("a pin on l again");
    let again = until_shows(&low, (320, 180)).await;

    // A pin on a layer the stream does not have is refused, and the
    // stream goes on.
    let bogus = Watcher::start(watch(&base, "ladder", "x")).await;
    let refused = match bogus {
        Ok(w) => {
            let _ = w.stop().await;
            String::new()
        }
        Err(e) => format!("{e:#}"),
    };

    let stats = server.transcoder_stats();
    let (_, last) = low.stop().await.expect("stop the l viewer");
    publisher.stop().await.expect("stop the publisher");
    server.stop().await;

    assert!(refused.contains("422"), "a pin on x: {refused:?}");
    assert_eq!((window.width, window.height), (320, 180), "{window:?}");
    let decoded = window.frames_decoded - first.frames_decoded;
    // A rung picture for each source picture of the window, whatever
    // rate a loaded machine lets the publisher reach (a few may still be
    // on their way at its end).
    assert!(
        sent >= 10 && decoded * 10 >= sent * 8,
        "decoded {decoded} rung pictures while the publisher sent {sent}: {window:?}"
    );
    assert_eq!(
        window.frame_number_gaps, first.frame_number_gaps,
        "the rung skipped source frames: {first:?} -> {window:?}"
    );
    assert_eq!(
        window.out_of_order, first.out_of_order,
        "{first:?} -> {window:?}"
    );
    assert!(
        window.timed_frames > 0,
        "the rung carries the source's timing SEI: {window:?}"
    );
    assert!(
        source.is_some(),
        "automatic choice never showed the 1280x720 source: {last:?}"
    );
    assert!(
        again.is_some(),
        "the pin on l never showed the rung again: {last:?}"
    );
    assert_eq!((last.width, last.height), (320, 180), "{last:?}");
    assert_eq!(
        last.decode_errors, first.decode_errors,
        "a picture did not decode, on the rung or switching to the source and back: {first:?} -> {last:?}"
    );
    assert!(
        stats.frames_out > 0 && stats.decode_errors == 0,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ladder_a_pin_on_l_is_refused_and_the_stream_goes_on() {
    // (Transcoding is off on test servers unless asked for.)
    let server = start_server_with(|_| {}).await;
    let base = server.http_url();
    let publisher = publish_720p(&server, "single").await;
    let (live, json) = wait_for(&base, "single", |j| {
        j.contains("\"live\":true") && j.contains("\"width\":1280")
    })
    .await;
    assert!(live, "the stream never went live: {json}");

    let refused = match Watcher::start(watch(&base, "single", "l")).await {
        Ok(w) => {
            let _ = w.stop().await;
            String::new()
        }
        Err(e) => format!("{e:#}"),
    };
    // A viewer that leaves the choice to the server still gets the source.
    let auto = Watcher::start(WatchOptions {
        url: format!("{base}/whep/single"),
        ..Default::default()
    })
    .await
    .expect("an automatic viewer");
    let started = Instant::now();
    while started.elapsed() < SETTLE && !shows(&auto.stats(), (1280, 720)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, s) = auto.stop().await.expect("stop the viewer");
    publisher.stop().await.expect("stop the publisher");
    server.stop().await;

    assert!(
        refused.contains("422"),
        "a pin on l without a ladder: {refused:?}"
    );
    assert!(refused.contains("no encoding"), "{refused:?}");
    assert!(shows(&s, (1280, 720)), "{s:?}");
}

/// Headless Chromium plays the `l` rung of a one-layer stream: the watch
/// page's quality menu pins it, and the video element shows 180 lines of
/// H.264 that keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_a_transcoded_rung() {
    use crate::browser::{choose_quality, lumen, open_live, playback};

    let Some(chrome) = crate::chrome::ChromeDriver::start().await else {
        return;
    };
    let server = start_server_with(|c| c.transcode.enabled = true).await;
    let base = server.http_url();
    let publisher = publish_720p(&server, "rung").await;
    let (ready, json) = wait_for(&base, "rung", |j| j.contains("\"rid\":\"l\"")).await;
    assert!(ready, "the ladder's layers never appeared: {json}");

    let viewer = chrome.new_session().await;
    open_live(&viewer, &format!("{base}/watch/rung"), SETTLE).await;
    choose_quality(&viewer, "l").await;
    let deadline = Instant::now() + SETTLE;
    let first = loop {
        let p = playback(&viewer).await;
        let l = lumen(&viewer).await;
        let codec = l["stats"]["videoCodec"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if codec.eq_ignore_ascii_case("h264") && l["layer"]["current"] == "l" && p.height == 180 {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the l rung never played: {p:?}; {l}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = playback(&viewer).await;
    publisher.stop().await.expect("stop the publisher");
    drop(server);
    assert_eq!((later.width, later.height), (320, 180), "{later:?}");
    assert!(
        later.frames > first.frames + 10 && later.time > first.time,
        "the rung stalled: {first:?} -> {later:?}"
    );
}

/// Headless Chromium, whose WHEP offer has AV1, plays an AV1 rung: the
/// quality menu pins `a` (rav1e), and the inbound video is AV1
/// (`getStats()`: the codec's mimeType `video/AV1`) at the rung's size
/// with decoded frames that keep coming. rav1e without assembly is slow in
/// a debug server (AV1 rungs are off by default for that reason): the
/// source is 640×360 and the rung 160×90, so that the rung's thread does
/// not take the CPU the tests beside this one need; the test asks for
/// decoding, not for a rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_an_av1_rung() {
    use crate::browser::{choose_quality, lumen, open_live, playback};
    use lumen_signaling::transcoder::{RungCodec, RungConfig};

    let Some(chrome) = crate::chrome::ChromeDriver::start().await else {
        return;
    };
    let server = start_server_with(|c| {
        c.transcode.enabled = true;
        c.transcode.rungs = vec![RungConfig {
            rid: "a".into(),
            width: 160,
            height: 90,
            bitrate_kbps: 100,
            codec: RungCodec::Av1,
        }];
    })
    .await;
    let base = server.http_url();
    let publisher = publish_one_layer(&server, "av1", (640, 360), 600_000).await;
    let (ready, json) = wait_for(&base, "av1", |j| j.contains("\"rid\":\"a\"")).await;
    assert!(ready, "the AV1 rung never appeared: {json}");

    let viewer = chrome.new_session().await;
    open_live(&viewer, &format!("{base}/watch/av1"), SETTLE).await;
    // The page's quality menu lists h, m and l only: give it an `a` to
    // choose, which pins through the page's own layer request.
    viewer
        .execute(
            "const o = document.createElement('option'); o.value = 'a'; o.text = 'AV1';
             document.getElementById('quality').add(o);",
            vec![],
        )
        .await
        .expect("add a to the quality menu");
    choose_quality(&viewer, "a").await;
    let deadline = Instant::now() + SETTLE * 2;
    let (first, decoded) = loop {
        let p = playback(&viewer).await;
        let l = lumen(&viewer).await;
        let codec = l["stats"]["videoCodec"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let decoded = l["stats"]["framesDecoded"].as_u64().unwrap_or(0);
        if codec.eq_ignore_ascii_case("av1") && l["layer"]["current"] == "a" && p.height == 90 {
            break (p, decoded);
        }
        assert!(
            Instant::now() < deadline,
            "the AV1 rung never played: {p:?}; {l}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = playback(&viewer).await;
    let l = lumen(&viewer).await;
    publisher.stop().await.expect("stop the publisher");
    drop(server);
    assert!(
        l["stats"]["videoCodec"]
            .as_str()
            .is_some_and(|c| c.eq_ignore_ascii_case("av1")),
        "{l}"
    );
    assert_eq!((later.width, later.height), (160, 90), "{later:?}");
    let decoded_later = l["stats"]["framesDecoded"].as_u64().unwrap_or(0);
    assert!(
        decoded_later > decoded + 4 && later.time > first.time,
        "the AV1 rung stalled: {decoded} -> {decoded_later} decoded, {first:?} -> {later:?}"
    );
}

#[tokio::test]
async fn a_stream_past_the_transcoding_budget_says_so_in_its_layers_event() {
    let server = start_server_with(|c| {
        c.transcode.enabled = true;
        c.transcode.max_streams = 1;
        c.transcode.idle_secs = 1;
    })
    .await;
    let base = server.http_url();
    let first = publish_720p(&server, "first").await;
    let (ready, json) = wait_for(&base, "first", |j| {
        j.contains("\"live\":true") && j.contains("\"rid\":\"l\"")
    })
    .await;
    assert!(ready, "the first stream's ladder never appeared: {json}");
    let second = publish_720p(&server, "second").await;
    let (live, json) = wait_for(&base, "second", |j| j.contains("\"live\":true")).await;
    assert!(live, "the second stream never went live: {json}");

    let mut notes = Vec::new();
    for stream in ["second", "first"] {
        let viewer = Watcher::start(WatchOptions {
            layer: None,
            ..watch(&base, stream, "")
        })
        .await
        .expect("a viewer");
        let mut events = Events::open(viewer.session_url(), &["layers"]).await;
        let layers = events.next("layers", SETTLE).await;
        notes.push((stream, layers));
        let _ = viewer.stop().await;
    }
    let stats = server.transcoder_stats();
    second.stop().await.expect("stop the second publisher");
    first.stop().await.expect("stop the first publisher");
    server.stop().await;

    let (_, second_layers) = &notes[0];
    let second_layers = second_layers.as_deref().expect("a layers event");
    assert!(
        second_layers.contains("\"transcode\":\"over_budget\""),
        "{second_layers}"
    );
    let (_, first_layers) = &notes[1];
    let first_layers = first_layers.as_deref().expect("a layers event");
    assert!(!first_layers.contains("transcode"), "{first_layers}");
    assert_eq!(stats.refused_over_budget, 1, "{stats:?}");
}

/// Relay links carry the publisher's layer; a node that carries a one-layer
/// stream for its viewers makes the ladder itself (its own `[transcode]`
/// budget, paused while nobody watches there), so a viewer on an edge pins
/// `l` as on the origin. Here only the edge transcodes: the rungs its
/// viewer decodes cannot have come from the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_node_makes_the_ladder_of_a_one_layer_stream_it_carries() {
    let Some(redis) = lumen_cascade::testing::TempRedis::start("an_edge_makes_the_ladder") else {
        return;
    };
    let node = |name: &'static str, key: Option<Vec<u8>>, transcode: bool| {
        let url = redis.url();
        start_server_with(move |c| {
            c.cluster.redis_url = Some(url);
            c.cluster.node_id = Some(name.to_string());
            c.cluster.region = Some("eu".to_string());
            c.transcode.enabled = transcode;
            if let Some(key) = &key {
                crate::cluster::install_key(&c.data_dir, key);
            }
        })
    };
    let origin = node("origin", None, false).await;
    let key = std::fs::read(origin.data_dir().join(lumen_signaling::auth::KEY_FILE))
        .expect("the origin's signing key");
    let edge = node("edge", Some(key), true).await;
    let publisher = publish_720p(&origin, "far").await;
    let (base, edge_base) = (origin.http_url(), edge.http_url());

    // A first viewer on the edge brings the stream there; the edge's
    // ladder adds the rungs to its layers.
    let auto = crate::cluster::watch(&edge_base, "far").await;
    let (ready, json) = wait_for(&edge_base, "far", |j| {
        j.contains("\"rid\":\"m\"") && j.contains("\"rid\":\"l\"")
    })
    .await;
    assert!(ready, "the edge made no ladder: {json}");
    let low = Watcher::start(watch(&edge_base, "far", "l"))
        .await
        .expect("a viewer on the edge pinned to l");
    let first = until_shows(&low, (320, 180)).await;
    tokio::time::sleep(WATCH).await;
    let last = low.stats();
    let at_origin = stream_json(&base, "far").await;
    let _ = low.stop().await;
    let _ = auto.stop().await;
    let _ = publisher.stop().await;
    edge.stop().await;
    origin.stop().await;
    let first =
        first.unwrap_or_else(|| panic!("the edge's l viewer never decoded 320x180: {last:?}"));
    // From its first picture on (as the single-node test counts), the rung
    // decodes cleanly and goes on.
    assert_eq!((last.width, last.height), (320, 180), "{last:?}");
    assert!(
        last.frames_decoded >= first.frames_decoded + u64::from(FPS),
        "the rung stalled: {first:?} -> {last:?}"
    );
    assert_eq!(
        last.decode_errors, first.decode_errors,
        "{first:?} -> {last:?}"
    );
    assert!(
        !at_origin.contains("\"rid\":\"l\""),
        "the origin (transcoding off) has rungs: {at_origin}"
    );
}
