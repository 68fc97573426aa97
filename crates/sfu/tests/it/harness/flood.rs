//! The scene of the flood tests: a live stream with a viewer (the
//! bystander) and, on the same worker, a client that publishes a stream of
//! its own and then floods its session; and what the bystander must still
//! see.

use std::time::Duration;

use str0m_netem::NetemConfig;

use super::{Got, World, gaps_and_reorders};

/// A connected viewer of `cam` (keyframes every 30 frames) and a connected
/// publisher of `flood` on one worker, a second in: (world, bystander
/// viewer, attacker), as indexes into `browsers`.
pub fn bystander_and_attacker(seed: u64) -> (World, usize, usize) {
    let mut w = World::new(seed);
    let p = w.publisher("cam", NetemConfig::new()).expect("publish");
    w.browsers[p].keyframe_every = Some(30);
    let v = w.viewer("cam", NetemConfig::new()).expect("watch");
    let a = w.publisher("flood", NetemConfig::new()).expect("publish");
    w.run_for(Duration::from_secs(1));
    assert!(w.browsers[v].connected_at.is_some() && w.browsers[a].connected_at.is_some());
    (w, v, a)
}

/// The bystander's frames over `elapsed` came at the publisher's pace (one
/// per 34 ms at least), in order, with no gap over 100 ms.
pub fn assert_undisturbed(frames: &[Got], elapsed: Duration) {
    assert!(
        frames.len() >= (elapsed.as_millis() / 34) as usize,
        "the viewer got {} frames in {elapsed:?}",
        frames.len()
    );
    assert_eq!(gaps_and_reorders(frames), (0, 0));
    let worst = frames
        .windows(2)
        .map(|f| f[1].at - f[0].at)
        .max()
        .expect("frames");
    assert!(
        worst < Duration::from_millis(100),
        "a frame came {worst:?} after the one before it"
    );
}
