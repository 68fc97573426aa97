//! Session rules: one publisher per stream, no viewers of nothing, close
//! tears down, viewers survive a publisher that reconnects. (Offers that
//! are refused: `malformed_offers`, `big_offer`.)

use std::time::Duration;

use lumen_sfu::{CloseReason, SessionError, SfuEvent};
use str0m_netem::NetemConfig;

use crate::harness::{World, gaps_and_reorders};

#[test]
fn a_second_publisher_on_a_live_stream_is_refused() {
    let mut w = World::new(21);
    w.publisher("cam", NetemConfig::new()).expect("publish");
    let err = w.publisher("cam", NetemConfig::new()).err();
    assert_eq!(err, Some(SessionError::StreamBusy("cam".into())));
    // Another name is fine.
    w.publisher("cam2", NetemConfig::new())
        .expect("publish another stream");
}

#[test]
fn watching_a_stream_that_is_not_live_is_refused() {
    let mut w = World::new(22);
    let err = w.viewer("nobody", NetemConfig::new()).err();
    assert_eq!(err, Some(SessionError::NotLive("nobody".into())));
}

#[test]
fn close_tears_down_and_viewers_follow_a_new_publisher() {
    let mut w = World::new(23);
    let p = w.publisher("cam", NetemConfig::new()).expect("publish");
    w.browsers[p].keyframe_every = Some(30);
    let v = w.viewer("cam", NetemConfig::new()).expect("watch");
    w.run_for(Duration::from_secs(2));
    let got = w.browsers[v].frames.len();
    assert!(got > 30);

    let peer = w.browsers[p].session.expect("session");
    assert!(w.sfu.close(peer));
    assert!(!w.sfu.close(peer), "closing twice finds nothing");
    w.browsers[p].publishing = false;
    w.run_for(Duration::from_millis(500));
    assert!(w.sfu_events.iter().any(|e| matches!(
        e,
        SfuEvent::Closed { peer: q, reason: CloseReason::Requested, .. } if *q == peer
    )));
    let s = w.sfu.stream("cam").expect("the viewer keeps the stream");
    assert!(!s.live);
    assert_eq!(s.viewers, 1);

    // A new publisher takes the name; the waiting viewer sees it, with
    // frame numbers starting over but no decoder break.
    let p2 = w.publisher("cam", NetemConfig::new()).expect("republish");
    w.browsers[p2].keyframe_every = Some(30);
    let before = w.browsers[v].frames.len();
    w.run_for(Duration::from_secs(2));
    let after = &w.browsers[v].frames[before..];
    assert!(
        after.len() > 30,
        "viewer got {} frames from the new publisher",
        after.len()
    );
    assert!(after[0].keyframe);
    assert_eq!(gaps_and_reorders(after), (0, 0));

    // Everyone leaves: the stream is gone.
    let vp = w.browsers[v].session.expect("session");
    let pp = w.browsers[p2].session.expect("session");
    assert!(w.sfu.close(vp));
    assert!(w.sfu.close(pp));
    w.run_for(Duration::from_millis(100));
    assert_eq!(w.sfu.stream("cam"), None);
    assert!(w.sfu.streams().is_empty());
}
