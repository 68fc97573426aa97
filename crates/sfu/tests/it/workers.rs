//! Cross-worker fan-out: viewers on a worker that does not hold the
//! publisher get the stream through a mirror of its Router, with the same
//! cached start, layer choice and keyframe requests as the origin's own.

use std::time::Duration;

use lumen_sfu::{
    LayerRequest, Output, SessionError, SfuEvent, SinkBody, SinkId, VideoCodec, is_keyframe_start,
};
use str0m::media::MediaKind;

use crate::harness::{World, gaps_and_reorders, link};

#[test]
fn viewers_on_another_worker_get_the_stream_from_its_origin() {
    let mut w = World::new(61);
    let other = w.add_worker();
    let p = w.simulcast_publisher("cam").expect("publish");
    let here = w.viewer("cam", link()).expect("watch on the origin");
    assert!(w.run_until(Duration::from_secs(3), |w| {
        !w.browsers[here].frames.is_empty()
    }));
    let requests = w.browsers[p].keyframe_requests.len();

    // Two viewers on the other worker, soon after the origin's keyframe:
    // they start on it without asking the publisher for another.
    let there = w.viewer_on(other, "cam", link()).expect("watch elsewhere");
    w.run_for(Duration::from_millis(100));
    let there2 = w.viewer_on(other, "cam", link()).expect("watch elsewhere");
    assert!(w.run_until(Duration::from_secs(1), |w| {
        !w.browsers[there].frames.is_empty() && !w.browsers[there2].frames.is_empty()
    }));
    assert_eq!(
        w.browsers[p].keyframe_requests.len(),
        requests,
        "{:?}",
        w.browsers[p].keyframe_requests_by_rid
    );
    w.run_for(Duration::from_secs(3));
    for v in [there, there2] {
        let b = &w.browsers[v];
        assert!(b.frames.len() > 60, "only {} frames", b.frames.len());
        assert!(b.frames[0].keyframe, "first frame is not a keyframe");
        let wait = b.frames[0].at - b.connected_at.expect("connected");
        assert!(
            wait <= Duration::from_millis(15),
            "first frame {wait:?} late"
        );
        assert_eq!(gaps_and_reorders(&b.frames), (0, 0));
        assert!(b.audio_frames > 50, "audio: {}", b.audio_frames);
    }
    let mirror = w.node(other);
    assert_eq!(mirror.metrics().starts_from_cache, 2);
    assert_eq!(mirror.metrics().rtp_in, 0, "the mirror has no publisher");
    let info = mirror.stream("cam").expect("the mirror knows the stream");
    assert!(info.live);
    assert_eq!(info.viewers, 2);
    assert_eq!(info.layers.len(), 3, "{info:?}");
    // Both workers forward the same frames.
    let (a, b) = (&w.browsers[here].frames, &w.browsers[there].frames);
    let last = b.last().expect("frames").number;
    assert!(a.iter().any(|f| f.number == last));
    assert!(w.sfu.metrics().rtp_mirrored > 0);
    assert_eq!(w.sfu.stream("cam").expect("origin").viewers, 1);

    // A layer pinned on the mirror: its keyframe request reaches the
    // publisher through the origin.
    let peer = w.browsers[there].session.expect("session");
    w.node(other)
        .set_layer(peer, LayerRequest::Rid("l".into()))
        .expect("pin");
    let on_l = w.run_until(Duration::from_secs(2), |w| {
        w.browsers[there].frames.last().map(|f| f.layer) == Some(b'l')
    });
    assert!(on_l, "the mirror's viewer never got l");
    assert!(
        w.browsers[p]
            .keyframe_requests_by_rid
            .iter()
            .any(|(_, rid)| rid.is_some_and(|r| &*r == "l")),
        "no keyframe request for l reached the publisher: {:?}",
        w.browsers[p].keyframe_requests_by_rid
    );
    let before = w.browsers[there].frames.len();
    w.run_for(Duration::from_secs(2));
    let pinned = &w.browsers[there].frames[before..];
    assert!(pinned.len() > 40 && pinned.iter().all(|f| f.layer == b'l'));
    assert_eq!(gaps_and_reorders(&w.browsers[there].frames).1, 0);
}

#[test]
fn a_mirror_follows_its_publisher_off_and_back_and_detaches_when_empty() {
    let mut w = World::new(62);
    let other = w.add_worker();
    let p = w.publisher("cam", link()).expect("publish");
    w.run_for(Duration::from_secs(1));
    let v = w.viewer_on(other, "cam", link()).expect("watch elsewhere");
    w.run_for(Duration::from_secs(2));
    assert!(!w.browsers[v].frames.is_empty());

    // The publisher leaves: the mirror's viewer waits, the stream is offline
    // on both workers but neither forgets it (the viewer is still there).
    let pub_peer = w.browsers[p].session.expect("session");
    assert!(w.sfu.close(pub_peer));
    w.run_for(Duration::from_millis(500));
    let mirror = w.node(other);
    assert!(!mirror.stream("cam").expect("kept for its viewer").live);
    assert!(
        w.sfu.stream("cam").is_some(),
        "the origin forgot its mirror"
    );
    let vp = w.browsers[v].session.expect("session");
    assert!(w.node(other).has_peer(vp));

    // A new publisher: the waiting viewer on the mirror gets it.
    let frames_before = w.browsers[v].frames.len();
    w.publisher("cam", link()).expect("publish again");
    let resumed = w.run_until(Duration::from_secs(3), |w| {
        w.browsers[v].frames.len() > frames_before + 30
    });
    assert!(
        resumed,
        "the mirror's viewer did not follow the new publisher"
    );

    // The last viewer there leaves: the mirror detaches and the origin
    // stops feeding it.
    assert!(w.node(other).close(vp));
    w.run_for(Duration::from_millis(200));
    assert!(w.node(other).stream("cam").is_none());
    let mirrored = w.sfu.metrics().rtp_mirrored;
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.sfu.metrics().rtp_mirrored, mirrored, "still mirroring");
    assert!(w.workers[0].events.iter().any(|e| matches!(
        e,
        SfuEvent::StreamUpdated(i) if i.name == "cam" && !i.live && i.viewers == 0
    )));
}

#[test]
fn a_mirror_needs_a_live_origin_and_an_unused_one_goes_away() {
    let mut w = World::new(63);
    let other = w.add_worker();
    let now = w.now;
    assert_eq!(
        w.sfu.attach_sink(now, "cam", SinkId::Worker(other)),
        Err(SessionError::NotLive("cam".into()))
    );
    w.publisher("cam", link()).expect("publish");
    w.run_for(Duration::from_secs(1));
    // Attached, but the viewer's offer never comes.
    let now = w.now;
    w.sfu
        .attach_sink(now, "cam", SinkId::Worker(other))
        .expect("attach");
    w.run_for(Duration::from_secs(1));
    assert!(w.node(other).stream("cam").is_some());
    w.run_for(Duration::from_secs(6));
    assert!(
        w.node(other).stream("cam").is_none(),
        "an unused mirror stayed"
    );
    let mirrored = w.sfu.metrics().rtp_mirrored;
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.sfu.metrics().rtp_mirrored, mirrored, "still mirroring");
}

#[test]
fn a_sink_gets_the_description_then_a_keyframe_then_live_batches() {
    let mut w = World::new(64);
    let p = w.publisher("cam", link()).expect("publish");
    w.browsers[p].keyframe_every = Some(15);
    w.run_for(Duration::from_secs(1));

    // A sink nobody in this world serves: read what it is sent.
    let sink = SinkId::Worker(7);
    let now = w.now;
    w.sfu.attach_sink(now, "cam", sink).expect("attach");
    let mut messages = Vec::new();
    loop {
        match w.sfu.poll_output() {
            Output::Sink { to, message } => {
                assert_eq!(to, sink);
                assert_eq!(message.stream(), "cam");
                messages.push(message);
            }
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    assert_eq!(messages.len(), 2, "{messages:?}");
    let SinkBody::Source { tracks, fresh, .. } = messages[0].body() else {
        panic!("first came {:?}", messages[0].body());
    };
    assert!(!fresh);
    let video = tracks
        .iter()
        .find(|t| t.kind == MediaKind::Video)
        .expect("a video track");
    assert!(tracks.iter().any(|t| t.kind == MediaKind::Audio));
    assert!(video.rids.is_empty(), "no simulcast");
    let SinkBody::Packets(gop) = messages[1].body() else {
        panic!("then came {:?}", messages[1].body());
    };
    assert_eq!(messages[1].packets(), gop.len());
    assert!(is_keyframe_start(VideoCodec::H264, &gop[0].payload));
    assert!(gop.iter().all(|p| p.mid == video.mid));
    assert!(gop.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert_eq!(w.sfu.metrics().rtp_mirrored, gop.len() as u64);

    // Then live packets, continuing the sequence.
    w.run_for(Duration::from_millis(200));
    let mirrored = w.sfu.metrics().rtp_mirrored;
    assert!(mirrored > gop.len() as u64 + 10, "{mirrored}");
}

#[test]
fn a_mirror_is_live_once_its_origins_publisher_connects() {
    let mut w = World::new(66);
    let other = w.add_worker();
    let p = w.publisher("cam", link()).expect("publish");
    w.browsers[p].keyframe_every = Some(30);
    // A viewer on each worker, arriving with the broadcaster: the mirror is
    // attached while the publisher is still connecting.
    let here = w.viewer("cam", link()).expect("watch a connecting stream");
    let there = w.viewer_on(other, "cam", link()).expect("through a mirror");
    for k in [0, other] {
        let info = w.node(k).stream("cam").expect("the stream");
        assert!(
            !info.live,
            "worker {k}: live before its publisher connected"
        );
        assert_eq!(info.viewers, 0, "worker {k}: counts half-open viewers");
    }
    assert!(w.run_until(Duration::from_secs(2), |w| {
        w.browsers[here].frames.len() > 10 && w.browsers[there].frames.len() > 10
    }));
    for k in [0, other] {
        let info = w.node(k).stream("cam").expect("the stream");
        assert!(info.live, "worker {k}: not live with a connected publisher");
        assert_eq!(info.viewers, 1, "worker {k}");
    }
    assert!(w.workers[other - 1].events.iter().any(|e| matches!(
        e,
        SfuEvent::StreamUpdated(i) if i.name == "cam" && i.live && i.viewers == 1
    )));
}
