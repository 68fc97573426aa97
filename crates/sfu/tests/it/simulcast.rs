//! Simulcast: each viewer gets the best layer its link carries, a pinned
//! layer when it asks, the next one down when a layer stops, and the
//! publisher is not flooded with keyframe requests.

use std::time::Duration;

use lumen_sfu::{LayerReason, LayerRequest, SfuEvent};
use str0m_netem::{Bitrate, DataSize, NetemConfig};

use crate::harness::{Got, World, gaps_and_reorders};

fn wide() -> NetemConfig {
    NetemConfig::new()
        .latency(Duration::from_millis(15))
        .link(Bitrate::mbps(20), DataSize::kbytes(256))
}

fn narrow() -> NetemConfig {
    NetemConfig::new()
        .latency(Duration::from_millis(15))
        .link(Bitrate::kbps(400), DataSize::kbytes(30))
}

/// The layer of the last frame received, if any.
fn layer_now(frames: &[Got]) -> Option<char> {
    frames.last().map(|f| f.layer as char)
}

/// Layer changes in a run of frames.
fn switches(frames: &[Got]) -> Vec<char> {
    let mut out = Vec::new();
    for w in frames.windows(2) {
        if w[1].layer != w[0].layer {
            out.push(w[1].layer as char);
        }
    }
    out
}

/// The longest time between two frames.
fn longest_stall(frames: &[Got]) -> Duration {
    frames
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .max()
        .unwrap_or_default()
}

#[test]
fn a_viewer_on_a_link_that_drops_to_400_kbps_moves_to_l_and_climbs_back_to_h() {
    let mut w = World::new(41);
    w.simulcast_publisher("cam").expect("publish");
    let v = w.viewer("cam", wide()).expect("watch");
    let reached_h = w.run_until(Duration::from_secs(15), |w| {
        layer_now(&w.browsers[v].frames) == Some('h')
    });
    assert!(
        reached_h,
        "an unconstrained viewer never reached h: {:?}",
        switches(&w.browsers[v].frames)
    );
    w.run_for(Duration::from_secs(2));

    // The link drops to 400 kbps: on l within 2 s, and frames keep coming.
    w.set_down_link(v, narrow());
    let on_l = w.run_until(Duration::from_secs(2), |w| {
        layer_now(&w.browsers[v].frames) == Some('l')
    });
    assert!(
        on_l,
        "still on {:?} 2 s after the drop",
        layer_now(&w.browsers[v].frames)
    );
    let from = w.browsers[v].frames.len();
    w.run_for(Duration::from_secs(6));
    let low = &w.browsers[v].frames[from..];
    assert!(
        low.len() > 120,
        "only {} frames in 6 s at 400 kbps",
        low.len()
    );
    assert!(
        low.iter().all(|f| f.layer == b'l'),
        "left l on a 400 kbps link: {:?}",
        switches(low)
    );
    assert!(
        longest_stall(low) < Duration::from_millis(500),
        "starved for {:?}",
        longest_stall(low)
    );

    // The link recovers: back on h within 10 s, stepping up, no oscillation.
    w.set_down_link(v, wide());
    let from = w.browsers[v].frames.len();
    let back = w.run_until(Duration::from_secs(10), |w| {
        layer_now(&w.browsers[v].frames) == Some('h')
    });
    let climb = switches(&w.browsers[v].frames[from.saturating_sub(1)..]);
    assert!(
        back,
        "not back on h 10 s after the link recovered: {climb:?}"
    );
    assert!(climb.len() <= 2, "oscillated on the way up: {climb:?}");
    w.run_for(Duration::from_secs(3));
    let settled = &w.browsers[v].frames[from..];
    assert!(switches(settled).len() <= 2, "{:?}", switches(settled));
    // The decoder saw one continuous stream throughout, its sequence
    // numbers running on across every switch (the munger's job).
    assert_eq!(
        gaps_and_reorders(&w.browsers[v].frames).1,
        0,
        "frames out of order"
    );
    assert!(
        w.browsers[v]
            .frames
            .windows(2)
            .all(|f| f[1].seqs.0 > f[0].seqs.1),
        "sequence numbers went back at a switch"
    );
}

#[test]
fn a_pinned_layer_is_respected_and_auto_returns() {
    let mut w = World::new(42);
    w.simulcast_publisher("cam").expect("publish");
    let v = w.viewer("cam", wide()).expect("watch");
    w.run_for(Duration::from_secs(2));
    let peer = w.browsers[v].session.expect("session");

    w.sfu
        .set_layer(peer, LayerRequest::Rid("l".into()))
        .expect("pin");
    let on_l = w.run_until(Duration::from_secs(1), |w| {
        layer_now(&w.browsers[v].frames) == Some('l')
    });
    assert!(on_l, "a pinned l was not served");
    let from = w.browsers[v].frames.len();
    w.run_for(Duration::from_secs(5));
    let pinned = &w.browsers[v].frames[from..];
    assert!(pinned.len() > 100);
    assert!(
        pinned.iter().all(|f| f.layer == b'l'),
        "{:?}",
        switches(pinned)
    );
    let layer = w.sfu.viewer_layer(peer).expect("viewer");
    assert_eq!(layer.current.as_deref(), Some("l"));
    assert_eq!(layer.reason, LayerReason::Requested);
    assert!(w.sfu_events.iter().any(|e| matches!(
        e,
        SfuEvent::ViewerLayerChanged { peer: p, layer, .. }
            if *p == peer && layer.current.as_deref() == Some("l")
    )));

    w.sfu
        .set_layer(peer, LayerRequest::Rid("h".into()))
        .expect("pin h");
    let on_h = w.run_until(Duration::from_secs(1), |w| {
        layer_now(&w.browsers[v].frames) == Some('h')
    });
    assert!(on_h, "a pinned h was not served");

    w.sfu.set_layer(peer, LayerRequest::Auto).expect("auto");
    w.run_for(Duration::from_secs(1));
    let layer = w.sfu.viewer_layer(peer).expect("viewer");
    assert_eq!(layer.requested, LayerRequest::Auto);
    assert_eq!(layer.reason, LayerReason::Bandwidth);
    assert_eq!(gaps_and_reorders(&w.browsers[v].frames).1, 0);
}

#[test]
fn a_layer_that_stops_moves_its_viewers_to_the_next_one_down() {
    let mut w = World::new(43);
    let p = w.simulcast_publisher("cam").expect("publish");
    let v = w.viewer("cam", wide()).expect("watch");
    let peer = w.browsers[v].session.expect("session");
    w.sfu
        .set_layer(peer, LayerRequest::Rid("h".into()))
        .expect("pin h");
    let on_h = w.run_until(Duration::from_secs(3), |w| {
        layer_now(&w.browsers[v].frames) == Some('h')
    });
    assert!(on_h);

    // The browser drops h (short of uplink or CPU).
    w.browsers[p].paused.push("h".into());
    let moved = w.run_until(Duration::from_secs(2), |w| {
        layer_now(&w.browsers[v].frames) == Some('m')
    });
    assert!(
        moved,
        "the viewer stayed on a stopped layer: {:?} {:?}",
        w.sfu.viewer_layer(peer),
        w.sfu.stream("cam").map(|s| s.layers)
    );
    assert_eq!(
        w.sfu.viewer_layer(peer).map(|l| l.reason),
        Some(LayerReason::LayerStopped)
    );
    let info = w.sfu.stream("cam").expect("stream");
    let h = info
        .layers
        .iter()
        .find(|l| l.rid.as_deref() == Some("h"))
        .expect("h listed");
    assert!(!h.active, "h still listed as active");
    assert!(info.layers.iter().filter(|l| l.active).count() == 2);

    // h comes back: the pinned viewer returns to it.
    w.browsers[p].paused.clear();
    let back = w.run_until(Duration::from_secs(3), |w| {
        layer_now(&w.browsers[v].frames) == Some('h')
    });
    assert!(back, "the viewer did not return to h");
}

#[test]
fn a_hundred_joins_cost_the_publisher_at_most_two_plis_per_second_per_layer() {
    let mut w = World::new(44);
    let p = w.simulcast_publisher("cam").expect("publish");
    w.run_for(Duration::from_secs(1));
    let before = w.browsers[p].keyframe_requests_by_rid.len();
    for _ in 0..100 {
        w.viewer("cam", NetemConfig::new()).expect("watch");
        w.run_for(Duration::from_millis(20));
    }
    w.run_for(Duration::from_secs(2));
    let reqs = &w.browsers[p].keyframe_requests_by_rid[before..];
    assert!(!reqs.is_empty(), "joins caused no keyframe request");
    let start = w.browsers[p].keyframe_requests_by_rid[before].0;
    for rid in ["h", "m", "l"] {
        let times: Vec<_> = reqs
            .iter()
            .filter(|(_, r)| r.is_some_and(|r| r.to_string() == rid))
            .map(|(t, _)| *t - start)
            .collect();
        for second in 0..5u64 {
            let n = times.iter().filter(|t| t.as_secs() == second).count();
            assert!(
                n <= 2,
                "{n} PLIs for layer {rid} in second {second}: {times:?}"
            );
        }
    }
    // And every viewer has a picture.
    for b in &w.browsers[p + 1..] {
        assert!(!b.frames.is_empty(), "a viewer got no frame");
        assert!(b.frames[0].keyframe);
    }
}
