//! The relay tree on a virtual clock: origin → relay → edge, each node an
//! `Sfu`, each relay link the sans-IO link core over a seeded lossy
//! network link. Media crosses both hops with every layer, each node
//! adapts per viewer, and a relay killed mid-stream is routed around: the
//! edge re-parents to the origin and its viewers' frames resume within 3 s
//! of virtual time, on the same sessions, with sequence numbers that run
//! on.

use std::time::Duration;

use lumen_cascade::relay::{CHILD_SILENCE, LinkEnd};
use lumen_sfu::SfuEvent;
use str0m_netem::{Bitrate, DataSize, NetemConfig, Probability, RandomLoss};

use crate::harness::{Got, Tree};

/// Between two nodes: the given one-way latency, 1 % random loss, room
/// for every layer (about 3.5 Mbit/s).
fn backbone(latency_ms: u64) -> NetemConfig {
    NetemConfig::new()
        .latency(Duration::from_millis(latency_ms))
        .loss(RandomLoss::new(Probability::new(0.01)))
        .link(Bitrate::mbps(50), DataSize::kbytes(512))
}

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

fn layer_now(frames: &[Got]) -> Option<char> {
    frames.last().map(|f| f.layer as char)
}

#[test]
fn a_stream_crosses_two_hops_adapts_per_hop_and_heals_around_a_killed_relay() {
    let mut t = Tree::new(141);
    let (origin, relay, edge) = (t.add_node(), t.add_node(), t.add_node());
    let p = t.simulcast_publisher(
        origin,
        "show",
        NetemConfig::new().latency(Duration::from_millis(5)),
    );
    t.browsers[p].keyframe_every = Some(30);
    t.run_for(Duration::from_millis(500));

    // The tree forms as viewers come: origin → relay, then relay → edge.
    let up = t.relay(origin, relay, "show", backbone(20));
    assert!(
        t.run_until(Duration::from_secs(3), |t| t.nodes[relay]
            .sfu
            .stream("show")
            .is_some_and(|s| s.live)),
        "the relay never got the stream"
    );
    let on_relay = t.viewer(relay, "show", wide());
    let down = t.relay(relay, edge, "show", backbone(30));
    assert!(t.run_until(Duration::from_secs(3), |t| {
        t.nodes[edge].sfu.stream("show").is_some_and(|s| s.live)
    }));
    let fast = t.viewer(edge, "show", wide());
    let slow = t.viewer(edge, "show", narrow());
    t.run_for(Duration::from_secs(10));

    // Every layer crossed both hops, so each node chose per viewer: the
    // relay's viewer and the edge's wide one on h, the edge's narrow one
    // on l.
    let edge_layers = t.nodes[edge].sfu.stream("show").expect("the edge has it");
    let active: Vec<_> = edge_layers
        .layers
        .iter()
        .filter(|l| l.active)
        .filter_map(|l| l.rid.clone())
        .collect();
    assert_eq!(active, ["h", "m", "l"], "{edge_layers:?}");
    for (who, v, layer) in [
        ("relay", on_relay, 'h'),
        ("fast", fast, 'h'),
        ("slow", slow, 'l'),
    ] {
        let got = &t.browsers[v].frames;
        assert!(got.len() > 150, "{who}: only {} frames in 10 s", got.len());
        assert_eq!(layer_now(got), Some(layer), "{who}");
    }
    // The 1 % loss on the links between nodes was asked for again.
    for k in [relay, edge] {
        assert!(t.nodes[k].sfu.metrics().nacks_sent > 0, "node {k}");
    }

    // The relay dies. The edge notices as its carry task does (a check of
    // the link every 500 ms, answered within 500 ms: at most 1 s) and
    // re-parents to the origin.
    let killed_at = t.now;
    t.kill(relay);
    t.run_for(Duration::from_secs(1));
    let seen = [fast, slow].map(|v| t.browsers[v].frames.len());
    let newest = [fast, slow].map(|v| t.browsers[v].frames.iter().map(|f| f.number).max());
    let healed = t.reparent(down, origin, backbone(40));
    t.run_for(Duration::from_secs(10));
    assert!(t.links[healed].sender.packets() > 1000);

    for (i, (who, v)) in [("fast", fast), ("slow", slow)].into_iter().enumerate() {
        let got = &t.browsers[v].frames;
        // The first picture newer than any before: within 3 s of the kill.
        let resumed = got[seen[i]..]
            .iter()
            .position(|f| Some(f.number) > newest[i])
            .map(|p| seen[i] + p)
            .unwrap_or_else(|| panic!("{who}: no new picture after the kill"));
        let frozen = got[resumed].at - killed_at;
        eprintln!("{who}: new pictures {frozen:?} after the kill");
        assert!(
            frozen < Duration::from_secs(3),
            "{who}: no new picture for {frozen:?} after the kill"
        );
        // Same session, and its sequence numbers run on from the last
        // frame of the old parent to the first of the new one (a new
        // session or a reset would jump anywhere; what was in flight on
        // the dead link is a few packets).
        let (old, new) = (got[seen[i] - 1], got[seen[i]]);
        assert!(
            new.seqs.0 > old.seqs.1 && new.seqs.0 - old.seqs.1 <= 64,
            "{who}: sequence numbers jumped at the heal: {old:?} -> {new:?}"
        );
        assert!(
            got.windows(2).all(|w| w[1].seqs.0 > w[0].seqs.1),
            "{who}: sequence numbers went back"
        );
        assert!(
            got.len() - resumed > 150,
            "{who}: {} frames in the 10 s after healing",
            got.len() - resumed
        );
        let peer = t.browsers[v].session.expect("session");
        assert!(
            !t.nodes[edge]
                .events
                .iter()
                .any(|e| matches!(e, SfuEvent::Closed { peer: p, .. } if *p == peer)),
            "{who}'s session closed"
        );
        assert!(t.browsers[v].rtc.is_alive(), "{who}'s connection died");
    }
    // Each viewer adapts again on the new parent's layers.
    assert_eq!(layer_now(&t.browsers[fast].frames), Some('h'));
    assert_eq!(layer_now(&t.browsers[slow].frames), Some('l'));

    // The origin's link to the dead relay ends by itself (its child has
    // been silent too long) and its sink detaches.
    assert_eq!(t.links[up].ended, Some(LinkEnd::ChildGone));
    assert!(
        t.links[up]
            .ended_at
            .is_some_and(|at| at - killed_at < CHILD_SILENCE + Duration::from_secs(1)),
        "the origin fed the dead relay until {:?} after the kill",
        t.links[up].ended_at.map(|at| at - killed_at)
    );
}
