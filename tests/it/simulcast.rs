//! Simulcast end to end over real UDP and HTTP: `lumen publish --simulcast`'s
//! client sends three layers (h 1280×720, m 640×360, l 320×180); viewers that
//! pin a layer through the WHEP layer extension decode exactly that size, and
//! a viewer that leaves the choice to the server decodes the layer the server
//! picks from its bandwidth estimate.
//!
//! (How fast the automatic viewer climbs depends on the server's BWE probes
//! and this machine's load, so its exact layer is not asserted here; the
//! climb is covered on the virtual clock by the sans-IO scenarios in
//! crates/sfu, and `lumen bench switch` measures the way down.)

use std::time::{Duration, Instant};

use lumen_tools::client::{
    PublishOptions, Publisher, SIMULCAST_LAYERS, WatchOptions, WatchStats, Watcher,
};

use crate::support::start_server;

/// Frame rate of every layer: enough motion, and light enough for three
/// encoders plus three decoders on a 2-core CI machine.
const FPS: u32 = 15;
/// How long a pinned viewer may take to show its first picture of the right
/// size.
const SETTLE: Duration = Duration::from_secs(15);
/// How long the pinned viewers are watched once settled.
const WATCH: Duration = Duration::from_secs(4);

async fn stream_is_live(base: &str, stream: &str) -> bool {
    let Ok(resp) = reqwest::get(format!("{base}/api/streams/{stream}")).await else {
        return false;
    };
    resp.text()
        .await
        .is_ok_and(|body| body.contains("\"live\":true"))
}

fn watch(base: &str, layer: Option<&str>) -> WatchOptions {
    WatchOptions {
        url: format!("{base}/whep/simulcast"),
        token: None,
        layer: layer.map(str::to_owned),
        chat: false,
    }
}

fn shows(s: &WatchStats, size: (u32, u32)) -> bool {
    s.frames_decoded > 0 && (s.width, s.height) == size
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_viewers_decode_their_layer_and_auto_follows_bandwidth() {
    let server = start_server().await;
    let base = server.http_url();

    let publisher = Publisher::start(PublishOptions {
        url: format!("{base}/whip/simulcast"),
        token: Some(server.publish_token()),
        fps: FPS,
        simulcast: true,
        ..Default::default()
    })
    .await
    .expect("simulcast publish");
    let layers = publisher.layers();
    let rids: Vec<_> = layers.iter().map(|l| l.rid.as_deref()).collect();
    assert_eq!(rids, [Some("h"), Some("m"), Some("l")]);

    let mut live = false;
    for _ in 0..100 {
        if stream_is_live(&base, "simulcast").await {
            live = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(live, "the stream never went live");

    let low = Watcher::start(watch(&base, Some("l")))
        .await
        .expect("viewer pinned to l");
    let high = Watcher::start(watch(&base, Some("h")))
        .await
        .expect("viewer pinned to h");
    let auto = Watcher::start(watch(&base, None))
        .await
        .expect("automatic viewer");
    assert!(low.layer_url().is_some() && high.layer_url().is_some());

    let l_size = (SIMULCAST_LAYERS[2].width, SIMULCAST_LAYERS[2].height);
    let h_size = (SIMULCAST_LAYERS[0].width, SIMULCAST_LAYERS[0].height);
    assert_eq!((l_size, h_size), ((320, 180), (1280, 720)));

    // Wait (bounded) for each pinned viewer's first picture of its layer;
    // continuity is counted from there.
    let started = Instant::now();
    let (mut low_base, mut high_base) = (None, None);
    while started.elapsed() < SETTLE && (low_base.is_none() || high_base.is_none()) {
        let (l, h) = (low.stats(), high.stats());
        if low_base.is_none() && shows(&l, l_size) {
            low_base = Some(l);
        }
        if high_base.is_none() && shows(&h, h_size) {
            high_base = Some(h);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let low_base = low_base.unwrap_or_else(|| {
        panic!(
            "viewer pinned to l never decoded 320x180: {:?}",
            low.stats()
        )
    });
    let high_base = high_base.unwrap_or_else(|| {
        panic!(
            "viewer pinned to h never decoded 1280x720: {:?}",
            high.stats()
        )
    });

    // Watch the pinned viewers for a while.
    tokio::time::sleep(WATCH).await;
    let auto_end = auto.stats();
    // The server's view of the automatic viewer (target, reason, estimate),
    // for the failure message.
    let auto_layer = match auto.layer_url() {
        Some(url) => match reqwest::get(url).await {
            Ok(resp) => resp.text().await.unwrap_or_default(),
            Err(e) => format!("GET {url}: {e}"),
        },
        None => "no layer endpoint".to_owned(),
    };

    let (_, low_end) = low.stop().await.expect("stop l viewer");
    let (_, high_end) = high.stop().await.expect("stop h viewer");
    let (_, auto_final) = auto.stop().await.expect("stop auto viewer");
    let sent = publisher.layers();
    publisher.stop().await.expect("stop publisher");
    server.stop().await;

    for (name, size, s0, s1) in [
        ("l", l_size, &low_base, &low_end),
        ("h", h_size, &high_base, &high_end),
    ] {
        assert_eq!(
            (s1.width, s1.height),
            size,
            "viewer pinned to {name} changed size: {s1:?}"
        );
        assert_eq!(s1.requested_layer.as_deref(), Some(name));
        let decoded = s1.frames_decoded - s0.frames_decoded;
        // 4 s at 15 fps is 60 pictures; a loaded CI machine may stretch it.
        assert!(
            decoded >= 40,
            "viewer pinned to {name} decoded {decoded} pictures in {WATCH:?}: {s1:?}"
        );
        assert_eq!(
            s1.frame_number_gaps, s0.frame_number_gaps,
            "viewer pinned to {name} missed frames after its first picture: {s0:?} -> {s1:?}"
        );
        assert_eq!(
            s1.out_of_order, s0.out_of_order,
            "viewer pinned to {name} saw frames out of order: {s0:?} -> {s1:?}"
        );
    }
    // The automatic viewer decodes whichever layer the server chose for it,
    // and the server says it chose by bandwidth.
    assert!(auto_final.frames_decoded > 0, "{auto_final:?}");
    assert!(auto_end.width > 0, "{auto_end:?}");
    assert!(
        auto_layer.contains("\"reason\":\"bandwidth\""),
        "server says {auto_layer}"
    );
    for layer in &sent {
        assert!(
            layer.frames_sent > u64::from(FPS) * 4,
            "layer {:?} barely sent: {layer:?}",
            layer.rid
        );
    }
}
