//! An automatic viewer behind a bottleneck, over real UDP: the UDP
//! impairment proxy (`lumen_tools::impair`) caps the downlink of every client at
//! 500 kbit/s with a 100 ms drop-tail buffer; the server announces the
//! proxy's port (`public_port`), so the publisher and the viewer both reach
//! it through the proxy. The simulcast publisher's `h` layer (or the one
//! 720p layer of a publisher without simulcast, whose ladder the server
//! makes) does not fit the link; the server must move the viewer to a layer
//! that does, from its bandwidth estimate, and keep it there with (almost)
//! no lost frames.

use std::time::{Duration, Instant};

use lumen_tools::client::{PublishOptions, Publisher, WatchOptions, WatchStats, Watcher};
use lumen_tools::impair::{ImpairConfig, ImpairProxy};

use crate::support::start_server_with;

const FPS: u32 = 15;
const DOWNLINK_BPS: u64 = 500_000;
/// Time the server gets to find the viewer's layer.
const SETTLE: Duration = Duration::from_secs(8);
/// The window in which frame loss is counted.
const WATCH: Duration = Duration::from_secs(8);

async fn get(url: &str) -> String {
    match reqwest::get(url).await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(e) => format!("GET {url}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_viewer_behind_500_kbps_settles_on_a_layer_that_fits() {
    settles_behind_the_bottleneck(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_viewer_of_one_720p_layer_behind_500_kbps_settles_on_a_rung() {
    settles_behind_the_bottleneck(false).await;
}

/// A publisher (three simulcast layers, or one 720p layer and the server's
/// ladder) and an automatic viewer behind the 500 kbit/s link.
async fn settles_behind_the_bottleneck(simulcast: bool) {
    let listen = std::net::UdpSocket::bind("127.0.0.1:0").expect("proxy socket");
    let public_port = listen.local_addr().expect("proxy address").port();
    let server = start_server_with(|c| {
        c.workers = 1;
        c.public_port = Some(public_port);
        c.transcode.enabled = !simulcast;
    })
    .await;
    let base = server.http_url();
    let proxy = ImpairProxy::start(
        listen,
        server.rtc_addrs()[0],
        ImpairConfig {
            down_bps: Some(DOWNLINK_BPS),
            queue: Duration::from_millis(100),
            ..ImpairConfig::default()
        },
    )
    .expect("proxy starts");

    let options = if simulcast {
        PublishOptions {
            simulcast: true,
            ..Default::default()
        }
    } else {
        PublishOptions {
            width: 1280,
            height: 720,
            bitrate_bps: 1_500_000,
            ..Default::default()
        }
    };
    let publisher = Publisher::start(PublishOptions {
        url: format!("{base}/whip/narrow"),
        token: Some(server.publish_token()),
        fps: FPS,
        ..options
    })
    .await
    .expect("publish through the proxy");
    let viewer = Watcher::start(WatchOptions {
        url: format!("{base}/whep/narrow"),
        token: None,
        layer: None,
        chat: false,
    })
    .await
    .expect("automatic viewer through the proxy");

    tokio::time::sleep(SETTLE).await;
    let s0 = viewer.stats();
    let started = Instant::now();
    let mut sizes: Vec<u32> = Vec::new();
    while started.elapsed() < WATCH {
        let s = viewer.stats();
        if sizes.last() != Some(&s.height) {
            sizes.push(s.height);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s1 = viewer.stats();
    let stream = get(&format!("{base}/api/streams/narrow")).await;
    let layer = match viewer.layer_url() {
        Some(url) => get(url).await,
        None => "no layer endpoint".to_owned(),
    };
    let through = proxy.stats();
    let (_, _) = viewer.stop().await.expect("stop viewer");
    publisher.stop().await.expect("stop publisher");
    server.stop().await;
    drop(proxy);

    let context = format!(
        "\nstream: {stream}\nviewer layer: {layer}\nproxy: {through:?}\nsizes seen: {sizes:?}\nbefore: {s0:?}\nafter: {s1:?}"
    );
    eprintln!("behind {DOWNLINK_BPS} bit/s:{context}");
    // The link is a real bottleneck: the best layer does not fit it.
    let best = if simulcast {
        "\"rid\":\"h\""
    } else {
        "\"rid\":null"
    };
    let h_bps = bitrate_of(&stream, best).unwrap_or_else(|| panic!("no {best} layer{context}"));
    assert!(
        h_bps > DOWNLINK_BPS,
        "h sends {h_bps} bit/s, which fits the link: the test proves nothing{context}"
    );
    // Settled on l or m for the whole window.
    assert!(
        !sizes.is_empty() && sizes.iter().all(|&h| h == 180 || h == 360),
        "the viewer was not on l or m throughout{context}"
    );
    assert!(
        layer.contains("\"reason\":\"bandwidth\""),
        "the server did not choose by bandwidth{context}"
    );
    // Less than 1 % of the frames sent in the window are lost.
    let (expected, decoded) = frames_in_window(&s0, &s1);
    assert!(expected >= u64::from(FPS) * 6, "too few frames{context}");
    let lost = expected.saturating_sub(decoded);
    assert!(
        lost * 100 < expected,
        "{lost} of {expected} frames lost{context}"
    );
}

/// Frames the publisher sent between two snapshots (by frame number) and
/// pictures the viewer decoded.
fn frames_in_window(s0: &WatchStats, s1: &WatchStats) -> (u64, u64) {
    let expected = s1
        .last_frame_number
        .unwrap_or(0)
        .saturating_sub(s0.last_frame_number.unwrap_or(0));
    (expected, s1.frames_decoded - s0.frames_decoded)
}

/// The measured bitrate of the layer whose JSON starts with `rid` (such as
/// `"rid":"h"`) in a `/api/streams/{name}` body.
fn bitrate_of(body: &str, rid: &str) -> Option<u64> {
    let at = body.find(rid)?;
    let rest = &body[at..];
    let key = "\"bitrate_bps\":";
    let from = rest.find(key)? + key.len();
    let digits: String = rest[from..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}
