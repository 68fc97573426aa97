//! Viewers whose offers were answered but who never start ICE: never
//! counted as viewers, and all closed `connect_timeout` later.

use std::time::Duration;

use lumen_sfu::{CloseReason, DEFAULT_CONNECT_TIMEOUT, Role, SfuEvent};
use str0m::RtcConfig;
use str0m::media::{Direction, MediaKind};
use str0m_netem::NetemConfig;

use crate::harness::World;

const HALF_OPEN: usize = 2_000;

#[test]
fn viewers_that_never_connect_are_not_counted_and_are_closed_in_time() {
    let mut w = World::new(45);
    let p = w.publisher("cam", NetemConfig::new()).expect("publish");
    w.run_for(Duration::from_secs(1));
    assert!(
        w.sfu
            .stream("cam")
            .is_some_and(|s| s.live && s.viewers == 0)
    );

    // One offer, sent 2,000 times, by a client that never does ICE.
    let mut rtc = RtcConfig::new().build(w.now);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("offer");
    let offer = offer.to_sdp_string();
    let opened = w.now;
    let now = w.now;
    let peers: Vec<_> = (0..HALF_OPEN)
        .map(|_| w.sfu.subscribe(now, "cam", &offer).expect("subscribe").peer)
        .collect();
    assert_eq!(w.sfu.peer_count(), HALF_OPEN + 1);

    // Not counted while they wait.
    let counted = |w: &World| w.sfu.stream("cam").map(|s| (s.live, s.viewers));
    let mut seen = Vec::new();
    let step = Duration::from_millis(100);
    while w.now - opened + step < DEFAULT_CONNECT_TIMEOUT {
        w.run_for(step);
        seen.push(counted(&w));
    }
    assert!(seen.iter().all(|c| *c == Some((true, 0))), "{seen:?}");
    assert_eq!(
        w.sfu.peer_count(),
        HALF_OPEN + 1,
        "closed before their time"
    );

    // All closed at their deadline, each said so; the publisher stays.
    w.run_for(Duration::from_millis(200));
    assert_eq!(w.sfu.peer_count(), 1, "half-open viewers left");
    assert!(w.sfu.has_peer(w.browsers[p].session.expect("session")));
    assert_eq!(counted(&w), Some((true, 0)));
    let timed_out = w
        .sfu_events
        .iter()
        .filter(|e| {
            matches!(
                e,
                SfuEvent::Closed {
                    role: Role::Viewer,
                    reason: CloseReason::ConnectTimeout,
                    ..
                }
            )
        })
        .count();
    assert_eq!(timed_out, HALF_OPEN);
    assert_eq!(w.sfu.metrics().connect_timeouts, HALF_OPEN as u64);
    // No update ever counted one of them.
    assert!(w.sfu_events.iter().all(|e| match e {
        SfuEvent::StreamUpdated(i) => i.viewers == 0,
        _ => true,
    }));
    assert!(peers.iter().all(|peer| !w.sfu.has_peer(*peer)));
}
