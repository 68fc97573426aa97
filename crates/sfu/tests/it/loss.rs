//! Loss on the viewer's link is repaired by NACK and RTX from the SFU; loss
//! on the publisher's link by NACKs the SFU sends upstream.

use std::time::Duration;

use str0m_netem::{NetemConfig, Probability, RandomLoss};

use crate::harness::{World, gaps_and_reorders};

fn lossy(p: f32) -> NetemConfig {
    NetemConfig::new()
        .latency(Duration::from_millis(20))
        .loss(RandomLoss::new(Probability::new(p)))
}

#[test]
fn loss_towards_a_viewer_is_repaired_by_nack_and_rtx() {
    let mut w = World::new(11);
    let p = w
        .publisher("cam", NetemConfig::new().latency(Duration::from_millis(5)))
        .expect("publish");
    w.browsers[p].keyframe_every = Some(60);
    let clean = w
        .viewer("cam", NetemConfig::new().latency(Duration::from_millis(20)))
        .expect("watch");
    let lossy_v = w.viewer("cam", lossy(0.05)).expect("watch");
    w.run_for(Duration::from_secs(8));

    let fwd = w.sfu.metrics().rtp_forwarded;
    assert!(fwd > 1000, "only {fwd} packets forwarded");
    let clean_frames = w.browsers[clean].frames.len();
    let b = &w.browsers[lossy_v];
    let (gaps, reorders) = gaps_and_reorders(&b.frames);
    assert_eq!(gaps, 0, "the lossy viewer lost frames for good");
    assert_eq!(reorders, 0);
    assert!(
        b.frames.len() + 3 >= clean_frames,
        "lossy viewer got {} frames, clean viewer {}",
        b.frames.len(),
        clean_frames
    );
    // The repairs were asked for, and counted.
    assert!(w.sfu.metrics().nacks_received > 0, "{:?}", w.sfu.metrics());
}

#[test]
fn loss_from_the_publisher_is_repaired_upstream() {
    let mut w = World::new(12);
    let p = w.publisher("cam", lossy(0.05)).expect("publish");
    w.browsers[p].keyframe_every = Some(60);
    let v = w
        .viewer("cam", NetemConfig::new().latency(Duration::from_millis(10)))
        .expect("watch");
    w.run_for(Duration::from_secs(8));
    let b = &w.browsers[v];
    assert!(b.frames.len() > 150, "viewer got {} frames", b.frames.len());
    let (gaps, reorders) = gaps_and_reorders(&b.frames);
    assert_eq!((gaps, reorders), (0, 0));
    assert!(w.sfu.metrics().nacks_sent > 0, "{:?}", w.sfu.metrics());
}

/// A viewer far away (150 ms one way): its repairs are asked for a round
/// trip after the loss, and a repair that is lost again is asked for once
/// more later. The retransmission history is long enough for both (a
/// history cut to three round trips loses frames here).
#[test]
fn loss_on_a_long_path_is_repaired() {
    for seed in [21, 22, 23] {
        let mut w = World::new(seed);
        let p = w
            .publisher("cam", NetemConfig::new().latency(Duration::from_millis(5)))
            .expect("publish");
        w.browsers[p].keyframe_every = Some(90);
        let far = NetemConfig::new()
            .latency(Duration::from_millis(150))
            .loss(RandomLoss::new(Probability::new(0.05)));
        let v = w.viewer("cam", far).expect("watch");
        w.run_for(Duration::from_secs(10));
        let b = &w.browsers[v];
        let (gaps, reorders) = gaps_and_reorders(&b.frames);
        assert!(
            b.frames.len() > 200,
            "seed {seed}: {} frames",
            b.frames.len()
        );
        assert_eq!(gaps, 0, "seed {seed}: the far viewer lost frames for good");
        assert_eq!(reorders, 0, "seed {seed}");
    }
}
