//! External sinks (`SinkId::External`: the recorder, later the transcoder
//! and relay links): attached and fed like a mirror: the stream's
//! description, its cached group of pictures from a keyframe, then live
//! packets in order; their keyframe requests reach the publisher through
//! the layer's throttle; a detach stops the packets; they outlive a
//! publisher and get the next one.

use std::time::Duration;

use lumen_sfu::{
    MediaPacket, SessionError, SinkBody, SinkId, SinkMessage, VideoCodec, is_keyframe_start,
};
use str0m::media::{MediaKind, Mid};

use crate::harness::{World, link};

/// The video packets among `messages`, in order.
fn video(messages: &[SinkMessage], mid: Mid) -> Vec<MediaPacket> {
    messages
        .iter()
        .filter_map(|m| match m.body() {
            SinkBody::Packets(p) => Some(p.iter().filter(|p| p.mid == mid).cloned()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The messages for sink `n` logged since index `from` of the log.
fn for_sink(w: &World, n: u64, from: usize) -> Vec<SinkMessage> {
    w.sink_log[from..]
        .iter()
        .filter(|(k, _)| *k == n)
        .map(|(_, m)| m.clone())
        .collect()
}

#[test]
fn an_external_sink_gets_the_description_a_keyframe_then_packets_in_order() {
    let mut w = World::new(71);
    let p = w.publisher("cam", link()).expect("publish");
    w.browsers[p].keyframe_every = Some(15);
    w.run_for(Duration::from_secs(1));

    let sink = SinkId::External(1);
    let generation = w
        .on_worker(|sfu, now| sfu.attach_sink(now, "cam", sink))
        .expect("attach");
    w.run_for(Duration::from_millis(500));
    let got = for_sink(&w, 1, 0);
    assert!(got.len() > 10, "{} messages", got.len());
    assert!(got.iter().all(|m| m.stream() == "cam"));
    let SinkBody::Source {
        generation: g,
        tracks,
        fresh,
        live,
    } = got[0].body()
    else {
        panic!("first came {:?}", got[0].body());
    };
    assert_eq!(*g, generation);
    assert!(!fresh);
    assert!(live, "the publisher is connected");
    let mid = tracks
        .iter()
        .find(|t| t.kind == MediaKind::Video)
        .expect("a video track")
        .mid;
    assert!(tracks.iter().any(|t| t.kind == MediaKind::Audio));
    assert!(
        got[1..]
            .iter()
            .all(|m| matches!(m.body(), SinkBody::Packets(_))),
        "only packets after the description"
    );
    // The cached group of pictures, from its keyframe, then live packets:
    // one gapless, ordered run.
    let v = video(&got, mid);
    assert!(is_keyframe_start(VideoCodec::H264, &v[0].payload));
    assert!(v.windows(2).all(|p| p[1].seq == p[0].seq + 1));
    let m = w.sfu.metrics();
    assert_eq!(m.rtp_mirrored, 0, "no mirror here");
    assert_eq!(m.rtp_to_sinks, got.iter().map(|m| m.packets() as u64).sum());

    // A keyframe request of the sink reaches the publisher, through the
    // layer's throttle: a burst of them is one PLI.
    w.browsers[p].keyframe_every = None;
    w.run_for(Duration::from_secs(1));
    let asked = w.browsers[p].keyframe_requests.len();
    let from = w.sink_log.len();
    for _ in 0..5 {
        w.sink_says(1, SinkMessage::keyframe("cam", None));
    }
    assert!(w.run_until(Duration::from_secs(1), |w| {
        w.browsers[p].keyframe_requests.len() > asked
    }));
    w.run_for(Duration::from_millis(300));
    assert_eq!(w.browsers[p].keyframe_requests.len(), asked + 1);
    let after = video(&for_sink(&w, 1, from), mid);
    assert!(
        after
            .iter()
            .any(|p| is_keyframe_start(VideoCodec::H264, &p.payload)),
        "the requested keyframe did not reach the sink"
    );

    // A sink does not feed a Router: packets sent back are ignored.
    let rtp_in = w.sfu.metrics().rtp_in;
    let echo = got[1].clone();
    w.sink_says(1, echo);
    assert_eq!(w.sfu.metrics().rtp_in, rtp_in);

    // A detach of an older attachment is stale; the current one's stops the
    // packets.
    w.sink_says(1, SinkMessage::detach("cam", generation - 1));
    let sent = w.sfu.metrics().rtp_to_sinks;
    w.run_for(Duration::from_millis(200));
    assert!(
        w.sfu.metrics().rtp_to_sinks > sent,
        "a stale detach stopped it"
    );
    w.sink_says(1, SinkMessage::detach("cam", generation));
    let sent = w.sfu.metrics().rtp_to_sinks;
    let logged = w.sink_log.len();
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.sfu.metrics().rtp_to_sinks, sent);
    assert_eq!(w.sink_log.len(), logged);
    assert!(w.sfu.metrics().rtp_forwarded == 0 && w.sfu.metrics().rtp_in > 0);
}

#[test]
fn an_external_sink_stays_through_an_offline_stream_and_gets_the_next_publisher() {
    let mut w = World::new(72);
    let now = w.now;
    assert_eq!(
        w.sfu.attach_sink(now, "cam", SinkId::External(5)),
        Err(SessionError::NotLive("cam".into())),
        "a stream without a publisher"
    );
    let p = w.publisher("cam", link()).expect("publish");
    w.run_for(Duration::from_millis(500));
    w.on_worker(|sfu, now| sfu.attach_sink(now, "cam", SinkId::External(5)))
        .expect("attach");
    w.run_for(Duration::from_millis(500));

    // The publisher leaves: a description without tracks, and the stream
    // is kept (offline) for the sink.
    let session = w.browsers[p].session.expect("session");
    assert!(w.sfu.close(session));
    w.run_for(Duration::from_millis(500));
    let last = for_sink(&w, 5, 0).pop().expect("messages");
    assert!(
        matches!(last.body(), SinkBody::Source { tracks, live: false, .. } if tracks.is_empty()),
        "{:?}",
        last.body()
    );
    let info = w.sfu.stream("cam").expect("kept for its sink");
    assert!(!info.live);

    // The next publisher: `fresh`, not live, then live, then its packets,
    // video from its first keyframe.
    let from = w.sink_log.len();
    w.publisher("cam", link()).expect("publish again");
    assert!(w.run_until(Duration::from_secs(3), |w| {
        w.sink_log[from..]
            .iter()
            .any(|(_, m)| matches!(m.body(), SinkBody::Packets(_)))
    }));
    w.run_for(Duration::from_millis(300));
    let got = for_sink(&w, 5, from);
    let SinkBody::Source {
        fresh: true,
        live: false,
        tracks,
        ..
    } = got[0].body()
    else {
        panic!("first came {:?}", got[0].body());
    };
    let mid = tracks
        .iter()
        .find(|t| t.kind == MediaKind::Video)
        .expect("video")
        .mid;
    let first_packets = got
        .iter()
        .position(|m| matches!(m.body(), SinkBody::Packets(_)))
        .expect("packets");
    assert!(
        matches!(
            got[first_packets - 1].body(),
            SinkBody::Source {
                fresh: false,
                live: true,
                ..
            }
        ),
        "{:?}",
        got[first_packets - 1].body()
    );
    let v = video(&got, mid);
    assert!(is_keyframe_start(VideoCodec::H264, &v[0].payload));
    assert!(v.windows(2).all(|p| p[1].seq == p[0].seq + 1));
}
