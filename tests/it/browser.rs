//! The web client end to end in headless Chromium: one browser broadcasts its
//! fake camera from /broadcast over WHIP (with a `publish:*` token of the
//! server typed into the page's stream key field), a second finds the
//! stream on the home page and plays it from /watch/{stream} over WHEP,
//! which a public stream's viewers need no credential for.
//!
//! The deadlines bound liveness on a loaded two-core machine; they are not
//! performance assertions.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use lumen_tools::client::{WatchOptions, WatchStats, Watcher};
use serde_json::Value;

use crate::chrome::ChromeDriver;
use crate::support::start_server;

const LIVE_WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_broadcasts_and_browser_watches() {
    let Some(chrome) = ChromeDriver::start().await else {
        return;
    };
    let server = start_server().await;
    let base = server.http_url();
    let name = format!("browser-{}", std::process::id());

    let broadcaster = chrome.new_session().await;
    go_live(
        &broadcaster,
        &format!("{base}/broadcast?stream={name}"),
        &server.publish_token(),
    )
    .await;
    wait_for_state(&broadcaster, "broadcaster", "live", LIVE_WITHIN).await;

    // The viewer finds the stream on the home page and follows its link.
    let viewer = chrome.new_session().await;
    viewer.goto(&format!("{base}/")).await.expect("open /");
    let link = format!("a[href=\"/watch/{name}\"]");
    let card = wait_for_element(&viewer, &link, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("the home page never listed {name}"));
    card.click()
        .await
        .expect("click the stream on the home page");
    let path = viewer.current_url().await.expect("current url");
    assert_eq!(path.path(), format!("/watch/{name}"));
    wait_for_state(&viewer, "viewer", "live", LIVE_WITHIN).await;

    // Frames are decoded and the clock runs.
    let deadline = Instant::now() + LIVE_WITHIN;
    let first = loop {
        let s = playback(&viewer).await;
        if s.width > 0 && s.frames > 0 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the viewer decoded no frame within {LIVE_WITHIN:?}: {s:?}; viewer {}",
            lumen(&viewer).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = playback(&viewer).await;
    assert!(
        second.frames > first.frames,
        "decoded frames did not advance in 2 s: {first:?} then {second:?}"
    );
    assert!(
        second.time > first.time,
        "video.currentTime did not advance in 2 s: {first:?} then {second:?}"
    );
    assert!(second.width > 0, "videoWidth is 0: {second:?}");

    // Both pages report their side in window.lumen.stats.
    let sent = lumen(&broadcaster).await;
    assert!(
        sent["stats"]["framesSent"].as_u64().unwrap_or(0) > 0,
        "the broadcaster reports no frames sent: {sent}"
    );
    let got = lumen(&viewer).await;
    assert!(
        got["stats"]["framesDecoded"].as_u64().unwrap_or(0) > 0,
        "the viewer reports no frames decoded: {got}"
    );
    // Both legs negotiated AEAD AES-GCM SRTP (one AES pass per packet, no
    // separate HMAC), not AES-CM with HMAC-SHA1.
    for (side, page) in [("broadcaster", &sent), ("viewer", &got)] {
        let cipher = page["stats"]["srtpCipher"].as_str().unwrap_or_default();
        assert!(
            cipher.contains("AEAD_AES_") && cipher.ends_with("_GCM"),
            "the {side}'s SRTP profile is {cipher:?}: {page}"
        );
    }

    // Stop: the broadcaster goes idle, the viewer notices the stream is gone.
    broadcaster
        .find(Locator::Id("stop"))
        .await
        .expect("find the Stop button")
        .click()
        .await
        .expect("click Stop");
    wait_for_state(&broadcaster, "broadcaster", "idle", Duration::from_secs(5)).await;
    wait_for_state(&viewer, "viewer", "offline", Duration::from_secs(15)).await;

    broadcaster.close().await.expect("close the broadcaster");
    viewer.close().await.expect("close the viewer");
    drop(chrome);
    drop(server);
}

/// Chromium publishes three simulcast layers; the viewer page's quality
/// menu pins the lowest one (the picture shrinks, the page says why) and
/// returns to automatic choice; the page shows the live viewer count; then
/// `lumen watch --layer l` and `--layer h` decode the browser's 180p and 720p
/// layers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_simulcast_and_the_quality_menu() {
    let Some(chrome) = ChromeDriver::start().await else {
        return;
    };
    let server = start_server().await;
    let base = server.http_url();
    let name = format!("simulcast-{}", std::process::id());

    let broadcaster = chrome.new_session().await;
    go_live(
        &broadcaster,
        &format!("{base}/broadcast?stream={name}"),
        &server.publish_token(),
    )
    .await;
    wait_for_state(&broadcaster, "broadcaster", "live", LIVE_WITHIN).await;

    // The server sees the browser's layers.
    let deadline = Instant::now() + LIVE_WITHIN;
    loop {
        let body = reqwest::get(format!("{base}/api/streams/{name}"))
            .await
            .expect("GET stream")
            .text()
            .await
            .unwrap_or_default();
        let info: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let layers = info["layers"].as_array().map(|a| a.len()).unwrap_or(0);
        if layers >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream never showed its simulcast layers: {info}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let viewer = chrome.new_session().await;
    open_live(&viewer, &format!("{base}/watch/{name}"), LIVE_WITHIN).await;
    let deadline = Instant::now() + LIVE_WITHIN;
    let auto = loop {
        let p = playback(&viewer).await;
        let l = lumen(&viewer).await;
        if p.height > 0 && l["viewers"].as_u64() == Some(1) && l["layer"]["current"].is_string() {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no picture, count or layer: {p:?} {l}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Pick 180p: the lowest layer, whatever size the fake camera gives.
    choose_quality(&viewer, "l").await;
    let deadline = Instant::now() + LIVE_WITHIN;
    let low = loop {
        let p = playback(&viewer).await;
        let l = lumen(&viewer).await;
        if l["layer"]["current"] == "l"
            && l["layer"]["reason"] == "requested"
            && p.height > 0
            && p.height <= 180
        {
            break p;
        }
        if Instant::now() >= deadline {
            let url = format!("{}/layer", l["location"].as_str().unwrap_or_default());
            let server = reqwest::get(&url).await.expect("GET layer").text().await;
            panic!("180p never played: {p:?} (auto was {auto:?}); {l}; server: {server:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(low.frames > auto.frames, "{low:?} after {auto:?}");
    let text = viewer
        .find(Locator::Id("layer"))
        .await
        .expect("layer line")
        .text()
        .await
        .expect("text");
    assert!(text.contains("as you asked"), "{text}");

    // Back to Auto: the server chooses by bandwidth again.
    viewer
        .execute(
            "const q = document.getElementById('quality');
             q.value = ''; q.dispatchEvent(new Event('change'));",
            vec![],
        )
        .await
        .expect("choose Auto");
    let deadline = Instant::now() + LIVE_WITHIN;
    loop {
        let l = lumen(&viewer).await;
        // Automatic: by bandwidth, or capped by the player's size.
        let reason = l["layer"]["reason"].as_str().unwrap_or_default();
        if l["layer"]["requested"].is_null() && (reason == "bandwidth" || reason == "size") {
            break;
        }
        assert!(Instant::now() < deadline, "Auto was not restored: {l}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A thumbnail-sized player: the page tells the server, which sends the
    // smallest layer and says why.
    viewer
        .execute(
            "const v = document.getElementById('video');
             v.style.width = '160px'; v.style.height = '90px';",
            vec![],
        )
        .await
        .expect("shrink the player");
    let deadline = Instant::now() + LIVE_WITHIN;
    loop {
        let l = lumen(&viewer).await;
        if l["layer"]["target"] == "l" && l["layer"]["reason"] == "size" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a 160x90 player was not capped to l: {l}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Two `lumen watch` clients (webrtc-rs, openh264) pin the browser's
    // lowest and best layers: each decodes pictures of its layer's size as
    // the server measured it, `h` four times `l` each way
    // (scaleResolutionDownBy 4), whatever size the fake camera gives.
    let watch = |layer: &str| WatchOptions {
        url: format!("{base}/whep/{name}"),
        token: None,
        layer: Some(layer.to_owned()),
        chat: false,
    };
    let low = Watcher::start(watch("l"))
        .await
        .expect("lumen watch --layer l");
    let high = Watcher::start(watch("h"))
        .await
        .expect("lumen watch --layer h");
    let deadline = Instant::now() + LIVE_WITHIN;
    let (l_size, h_size) = loop {
        let info: Value = serde_json::from_str(
            &reqwest::get(format!("{base}/api/streams/{name}"))
                .await
                .expect("GET stream")
                .text()
                .await
                .unwrap_or_default(),
        )
        .unwrap_or(Value::Null);
        let size = |rid: &str| {
            info["layers"]
                .as_array()
                .and_then(|a| a.iter().find(|l| l["rid"] == rid))
                .map(|l| {
                    (
                        l["width"].as_u64().unwrap_or(0),
                        l["height"].as_u64().unwrap_or(0),
                    )
                })
                .unwrap_or((0, 0))
        };
        let (ls, hs) = (low.stats(), high.stats());
        let decoded = |s: &WatchStats| (u64::from(s.width), u64::from(s.height));
        let (want_l, want_h) = (size("l"), size("h"));
        if ls.frames_decoded > 0
            && hs.frames_decoded > 0
            && decoded(&ls) == want_l
            && decoded(&hs) == want_h
            && want_h == (want_l.0 * 4, want_l.1 * 4)
        {
            break (want_l, want_h);
        }
        assert!(
            Instant::now() < deadline,
            "pinned viewers never showed their layers: l {ls:?}, h {hs:?}, server {info}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(l_size.1 > 0 && h_size.1 > l_size.1);
    let (_, low_end) = low.stop().await.expect("stop l");
    let (_, high_end) = high.stop().await.expect("stop h");
    assert_eq!(low_end.requested_layer.as_deref(), Some("l"));
    assert_eq!(high_end.requested_layer.as_deref(), Some("h"));
    eprintln!("Chromium simulcast: lumen watch --layer l decoded {l_size:?}, --layer h {h_size:?}");
    drop(server);
}

/// The same with VP8 (`?codec=vp8` on the broadcast page): the server finds
/// VP8 keyframes and picture sizes per layer, the viewer page plays VP8 and
/// its 180p pin shows 180-line pictures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_vp8_simulcast_pinned_low() {
    let Some(chrome) = ChromeDriver::start().await else {
        return;
    };
    let server = start_server().await;
    let base = server.http_url();
    let name = format!("vp8-{}", std::process::id());
    let broadcaster = chrome.new_session().await;
    go_live(
        &broadcaster,
        &format!("{base}/broadcast?stream={name}&codec=vp8"),
        &server.publish_token(),
    )
    .await;
    wait_for_state(&broadcaster, "broadcaster", "live", LIVE_WITHIN).await;

    let viewer = chrome.new_session().await;
    open_live(&viewer, &format!("{base}/watch/{name}"), LIVE_WITHIN).await;
    choose_quality(&viewer, "l").await;
    let deadline = Instant::now() + LIVE_WITHIN;
    loop {
        let p = playback(&viewer).await;
        let l = lumen(&viewer).await;
        let codec = l["stats"]["videoCodec"].as_str().unwrap_or_default();
        if codec.eq_ignore_ascii_case("vp8")
            && l["layer"]["current"] == "l"
            && p.height > 0
            && p.height <= 180
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "VP8 180p never played: {p:?}; {l}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let info = reqwest::get(format!("{base}/api/streams/{name}"))
        .await
        .expect("GET stream")
        .text()
        .await
        .unwrap_or_default();
    let info: Value = serde_json::from_str(&info).unwrap_or(Value::Null);
    let heights: Vec<u64> = info["layers"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["height"].as_u64()).collect())
        .unwrap_or_default();
    assert!(
        heights.len() == 3 && heights.iter().all(|&h| h > 0),
        "VP8 picture sizes not measured: {info}"
    );
    drop(server);
}

/// Opens the broadcast page at `url` (which names the stream), types
/// `token` into its stream key field, as a broadcaster would, and clicks
/// Go Live with the page's default source (camera and mic). Not
/// `&autostart=1`: that goes live before the field can be filled.
async fn go_live(c: &Client, url: &str, token: &str) {
    c.goto(url).await.expect("open the broadcast page");
    let field = c
        .find(Locator::Id("token"))
        .await
        .expect("find the stream key field");
    field.clear().await.expect("clear the stream key field");
    field
        .send_keys(token)
        .await
        .expect("type the token into the stream key field");
    let typed = field
        .prop("value")
        .await
        .expect("read the stream key field");
    assert_eq!(typed.as_deref(), Some(token), "the stream key field");
    c.find(Locator::Id("golive"))
        .await
        .expect("find the Go Live button")
        .click()
        .await
        .expect("click Go Live");
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Playback {
    pub(crate) frames: u64,
    pub(crate) time: f64,
    pub(crate) width: u64,
    pub(crate) height: u64,
}

pub(crate) async fn playback(c: &Client) -> Playback {
    let v = c
        .execute(
            "const v = document.getElementById('video');
             const q = v.getVideoPlaybackQuality();
             return { frames: q.totalVideoFrames, time: v.currentTime, width: v.videoWidth,
                      height: v.videoHeight };",
            vec![],
        )
        .await
        .expect("read the video element");
    Playback {
        frames: v["frames"].as_u64().unwrap_or(0),
        time: v["time"].as_f64().unwrap_or(0.0),
        width: v["width"].as_u64().unwrap_or(0),
        height: v["height"].as_u64().unwrap_or(0),
    }
}

/// The page's `window.lumen`, or null.
pub(crate) async fn lumen(c: &Client) -> Value {
    c.execute("return window.lumen ?? null;", vec![])
        .await
        .expect("read window.lumen")
}

/// Picks `rid` in the watch page's quality menu, as a viewer does.
pub(crate) async fn choose_quality(c: &Client, rid: &str) {
    c.execute(
        "const q = document.getElementById('quality');
         q.value = arguments[0]; q.dispatchEvent(new Event('change'));",
        vec![Value::from(rid)],
    )
    .await
    .unwrap_or_else(|e| panic!("choose {rid} in the quality menu: {e}"));
}

/// Opens the watch page at `url` in `viewer` and waits until its player
/// says it is live.
pub(crate) async fn open_live(viewer: &Client, url: &str, within: Duration) {
    viewer.goto(url).await.expect("open the watch page");
    wait_for_state(viewer, "viewer", "live", within).await;
}

/// Polls `window.lumen.state` until it is `want`. A broadcaster in `error`
/// fails at once: it does not retry by itself.
pub(crate) async fn wait_for_state(c: &Client, who: &str, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let l = lumen(c).await;
        let state = l["state"].as_str().unwrap_or("");
        if state == want {
            return;
        }
        if who == "broadcaster" && state == "error" {
            panic!("the broadcaster failed while waiting for {want:?}: {l}");
        }
        if Instant::now() >= deadline {
            panic!("the {who} did not reach {want:?} within {within:?}; window.lumen = {l}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_element(
    c: &Client,
    css: &str,
    within: Duration,
) -> Option<fantoccini::elements::Element> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            return Some(e);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
