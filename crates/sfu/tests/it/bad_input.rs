//! Garbage on the media socket is counted and dropped and never disturbs a
//! live session.

use std::net::SocketAddr;
use std::time::Duration;

use lumen_sfu::Input;
use str0m_netem::NetemConfig;

use crate::harness::{World, gaps_and_reorders};

#[test]
fn garbage_datagrams_are_counted_dropped_and_harmless() {
    let mut w = World::new(31);
    let p = w.publisher("cam", NetemConfig::new()).expect("publish");
    w.browsers[p].keyframe_every = Some(30);
    let v = w.viewer("cam", NetemConfig::new()).expect("watch");
    w.run_for(Duration::from_secs(1));

    let stranger: SocketAddr = "10.9.9.9:1234".parse().expect("addr");
    let publisher_addr = w.browsers[p].addr;
    let dest = w.sfu_addr;
    let mut seed: u32 = 7;
    let mut junk = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect()
    };
    let before = w.sfu.metrics().clone();
    let cases: Vec<(SocketAddr, Vec<u8>)> = vec![
        (stranger, vec![]),
        (stranger, vec![0xff; 3]),
        (stranger, junk(1200)),
        // RTP-looking and STUN-looking bytes from a stranger.
        (stranger, [vec![0x80, 0x60], junk(40)].concat()),
        (stranger, [vec![0x00, 0x01, 0x00, 0x00], junk(40)].concat()),
        // From the publisher's own address: fake SRTP and a truncated DTLS record.
        (
            publisher_addr,
            [vec![0x80, 0x66, 0x00, 0x01], junk(100)].concat(),
        ),
        (publisher_addr, vec![22, 0xfe, 0xfd, 0, 0]),
        (publisher_addr, vec![]),
    ];
    for _ in 0..50 {
        for (src, data) in &cases {
            let now = w.now;
            w.sfu.handle_input(Input::Receive {
                now,
                source: *src,
                destination: dest,
                data,
            });
        }
        w.run_for(Duration::from_millis(20));
    }
    let after = w.sfu.metrics();
    let dropped = (after.dropped_malformed - before.dropped_malformed)
        + (after.dropped_unknown_source - before.dropped_unknown_source)
        + (after.dropped_rejected - before.dropped_rejected);
    assert!(
        dropped >= 50 * 5,
        "only {dropped} datagrams counted as dropped"
    );
    assert!(after.dropped_unknown_source > before.dropped_unknown_source);
    assert!(after.dropped_malformed > before.dropped_malformed);

    // The session went on undisturbed.
    w.run_for(Duration::from_secs(1));
    let frames = &w.browsers[v].frames;
    assert!(frames.len() > 50, "viewer got {} frames", frames.len());
    assert_eq!(gaps_and_reorders(frames), (0, 0));
    assert!(
        w.sfu
            .stream("cam")
            .is_some_and(|s| s.live && s.viewers == 1)
    );
}
