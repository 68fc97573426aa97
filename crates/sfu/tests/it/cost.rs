//! What the SFU spends per forwarded packet, counted in instructions: a
//! scenario for `valgrind --tool=callgrind`, whose counts repeat from run
//! to run where this shared machine's CPU times swing by 10–15 %. Ignored
//! in the ordinary test run; `benches/forward-cost.sh` runs it and divides
//! the SFU's instructions in the measured window by the packets it
//! forwarded there.

use std::time::Duration;

use crate::harness::{World, link};

/// A one-layer 2.5 Mbit/s publisher (30 fps of ~10.4 kB frames, a
/// keyframe every 2 s, and audio) and `LUMEN_COST_VIEWERS` viewers
/// (default 20) on clean links. Once every viewer has played for a while
/// (its receivers have reported, so its packets carry no `mid`), three
/// seconds of forwarding run inside [`measured_window`], the function the
/// script tells callgrind to count.
#[test]
#[ignore = "a measurement: benches/forward-cost.sh runs it under callgrind"]
fn forwarding_cost() {
    let viewers: usize = std::env::var("LUMEN_COST_VIEWERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut w = World::new(5);
    let p = w.publisher("cost", link()).expect("publish");
    w.browsers[p].frame_size = 10_400;
    w.browsers[p].keyframe_every = Some(60);
    let vs: Vec<usize> = (0..viewers)
        .map(|_| w.viewer("cost", link()).expect("watch"))
        .collect();
    // str0m's receivers report audio every 5 s, video every second.
    w.run_for(Duration::from_secs(6));

    let forwarded_before = w.sfu.metrics().rtp_forwarded;
    let frames_before: Vec<usize> = vs.iter().map(|v| w.browsers[*v].frames.len()).collect();
    let window = Duration::from_secs(3);
    measured_window(&mut w, window);
    let forwarded = w.sfu.metrics().rtp_forwarded - forwarded_before;

    for (v, before) in vs.iter().zip(frames_before) {
        let got = w.browsers[*v].frames.len() - before;
        // 90 frames were sent in the window; a few may still be in flight.
        assert!(got >= 85, "viewer {v} got {got} frames in the window");
    }
    // Video (about 9 packets a frame) and audio (50 a second) to each.
    assert!(
        forwarded as usize >= viewers * 3 * (30 * 9 + 50) * 9 / 10,
        "forwarded {forwarded}"
    );
    println!("forwarded {forwarded} packets to {viewers} viewers in {window:?}");
}

/// The window callgrind counts (`--toggle-collect=*measured_window*`).
#[inline(never)]
fn measured_window(w: &mut World, d: Duration) {
    w.run_for(d);
}
