//! A publish offer that never connects (no candidates, no ICE) holds its
//! stream's name only until `connect_timeout`: the stream is never live
//! meanwhile, and then the real broadcaster publishes and is watched.

use std::time::Duration;

use lumen_sfu::{CloseReason, DEFAULT_CONNECT_TIMEOUT, Role, SessionError, SfuEvent};
use str0m::RtcConfig;
use str0m::media::{Direction, MediaKind};
use str0m_netem::NetemConfig;

use crate::harness::{World, gaps_and_reorders};

#[test]
fn a_publisher_that_never_connects_frees_the_name_after_the_connect_timeout() {
    let mut w = World::new(47);
    let mut rtc = RtcConfig::new().build(w.now);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("offer");
    let offer = offer.to_sdp_string();
    assert!(!offer.contains("a=candidate"), "{offer}");
    let squatted_at = w.now;
    let squatter = w.sfu.publish(w.now, "cam", &offer).expect("publish").peer;

    // A viewer that arrives with the broadcaster joins (and connects), but
    // the stream is not live: its publisher never connected.
    let early = w
        .viewer("cam", NetemConfig::new())
        .expect("watch a connecting stream");
    w.run_for(Duration::from_secs(1));
    assert!(w.browsers[early].connected_at.is_some());
    let info = w.sfu.stream("cam").expect("the stream");
    assert!(!info.live, "live without a connected publisher");
    assert_eq!(info.viewers, 1);
    assert!(info.layers.is_empty());

    // Until the deadline, the name is held: a second publisher is refused.
    w.run_for(DEFAULT_CONNECT_TIMEOUT - (w.now - squatted_at) - Duration::from_millis(300));
    assert_eq!(
        w.publisher("cam", NetemConfig::new()).err(),
        Some(SessionError::StreamBusy("cam".into()))
    );
    assert!(w.sfu.stream("cam").is_some_and(|s| !s.live));

    // At the deadline it is closed, and the name is free at once.
    w.run_for(Duration::from_millis(400));
    assert!(!w.sfu.has_peer(squatter));
    assert!(w.sfu_events.iter().any(|e| matches!(
        e,
        SfuEvent::Closed { peer, role: Role::Publisher, reason: CloseReason::ConnectTimeout, .. }
            if *peer == squatter
    )));
    let p = w
        .publisher("cam", NetemConfig::new())
        .expect("the real broadcaster");
    w.browsers[p].keyframe_every = Some(30);
    let late = w.viewer("cam", NetemConfig::new()).expect("watch");
    w.run_for(Duration::from_secs(2));
    let info = w.sfu.stream("cam").expect("the stream");
    assert!(info.live);
    assert_eq!(info.viewers, 2);
    for v in [early, late] {
        let frames = &w.browsers[v].frames;
        assert!(frames.len() > 40, "viewer {v} got {} frames", frames.len());
        assert!(frames[0].keyframe);
        assert_eq!(gaps_and_reorders(frames), (0, 0), "viewer {v}");
    }
}
