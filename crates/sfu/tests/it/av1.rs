//! An AV1 layer made by a sink (a transcoder's AV1 rung) with the SFU set
//! to carry one (`SfuConfig::sink_av1`): the stream's description lists an
//! AV1 payload type the publisher never sends, the sink injects its layer
//! with it, a viewer whose offer has AV1 gets the layer's packets under
//! its own AV1 payload type (starting on the layer's key frame, found by
//! the `N` bit), and a viewer without AV1 never does, even pinned to it.

use std::sync::Arc;
use std::time::Duration;

use lumen_sfu::{LayerRequest, MediaPacket, Rid, SessionError, SinkBody, SinkId, SinkMessage};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};

use crate::harness::{World, link};

/// A sequence header OBU (no size field) as rav1e writes it for 320x180,
/// 8-bit 4:2:0.
const SEQUENCE_HEADER: &[u8] = &[
    0x08, 0x00, 0x00, 0x00, 0xfa, 0x1e, 0x7f, 0x66, 0x21, 0x0a, 0x80, 0xa0,
];

/// Frame `n` of the AV1 rung `a` as one RTP payload: on a key frame the
/// sequence header and a frame OBU (`W=2`, `N` set), else the frame OBU
/// alone (`W=1`). The frame OBU carries the harness's frame tag, which the
/// viewer finds in what its str0m reassembles.
fn av1_payload(n: u64, key: bool) -> Vec<u8> {
    let mut frame_obu = vec![6 << 3];
    frame_obu.extend_from_slice(format!("F{n:010}a;").as_bytes());
    frame_obu.extend(std::iter::repeat_n(0x5a, 300));
    if key {
        let mut p = vec![0x20 | 0x08, SEQUENCE_HEADER.len() as u8];
        p.extend_from_slice(SEQUENCE_HEADER);
        p.extend(frame_obu);
        p
    } else {
        let mut p = vec![0x10];
        p.extend(frame_obu);
        p
    }
}

/// The timestamp of the latest source packet the sink got: a rung frame
/// carries its source frame's.
fn last_source_ts(w: &World, mid: Mid) -> Option<u32> {
    w.sink_log.iter().rev().find_map(|(_, m)| match m.body() {
        SinkBody::Packets(p) => p.iter().rev().find(|p| p.mid == mid).map(|p| p.timestamp),
        _ => None,
    })
}

/// Attaches sink 1 (the transcoder's place) to `cam`; the stream's video
/// track as its description says.
fn attach_sink(w: &mut World) -> lumen_sfu::TrackDescription {
    w.on_worker(|sfu, now| sfu.attach_sink(now, "cam", SinkId::External(1)))
        .expect("attach");
    w.run_for(Duration::from_millis(100));
    w.sink_log
        .iter()
        .find_map(|(_, m)| match m.body() {
            SinkBody::Source { tracks, .. } => {
                tracks.iter().find(|t| t.kind == MediaKind::Video).cloned()
            }
            _ => None,
        })
        .expect("the description")
}

#[test]
fn an_av1_viewer_gets_the_av1_rung_and_a_viewer_without_av1_never_does() {
    let mut w = World::with_config(83, |c| c.sink_av1 = true);
    let p = w.publisher("cam", link()).expect("publish");
    w.browsers[p].keyframe_every = Some(60);
    let plain = w.viewer("cam", link()).expect("an H.264 viewer");
    let av1 = w.viewer_av1("cam", link()).expect("an AV1 viewer");
    assert!(w.browsers[av1].answer_sdp.contains("AV1/90000"));
    assert!(!w.browsers[plain].answer_sdp.contains("AV1"));
    assert!(
        !w.browsers[p].answer_sdp.contains("AV1"),
        "publishers are not offered AV1"
    );
    w.run_for(Duration::from_secs(1));

    let video = attach_sink(&mut w);
    let h264: Vec<Pt> = video
        .params
        .iter()
        .filter(|p| p.spec().codec == Codec::H264)
        .map(|p| p.pt())
        .collect();
    let av1_pt = video
        .params
        .iter()
        .find(|p| p.spec().codec == Codec::Av1)
        .map(|p| p.pt())
        .expect("the description lists AV1 for layers a sink makes");
    assert!(!h264.is_empty() && !h264.contains(&av1_pt));

    let viewer_av1_pt = w.browsers[av1]
        .rtc
        .codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == Codec::Av1)
        .map(|p| p.pt())
        .expect("the AV1 viewer's AV1 payload type");

    // Both viewers pin the AV1 rung; it starts with a key frame.
    for v in [plain, av1] {
        let peer = w.browsers[v].session.expect("session");
        w.sfu
            .set_layer(peer, LayerRequest::Rid("a".into()))
            .expect("pin a");
    }
    let from = [w.browsers[plain].frames.len(), w.browsers[av1].frames.len()];
    for n in 0..60u64 {
        let ts = last_source_ts(&w, video.mid).unwrap_or(0) + 1;
        let pkt = MediaPacket {
            mid: video.mid,
            rid: Some(Rid::from("a")),
            ssrc: 0xa1,
            seq: 500 + n,
            pt: av1_pt,
            timestamp: ts,
            marker: true,
            payload: Arc::from(av1_payload(n, n == 0 || n == 30)),
            ext: Default::default(),
            at: w.now,
        };
        w.sink_says(1, SinkMessage::inject("cam", vec![pkt]));
        w.run_for(Duration::from_millis(33));
    }
    assert_eq!(w.sfu.metrics().sink_packets_refused, 0);
    let layers = w.sfu.stream("cam").expect("stream").layers;
    let a = layers
        .iter()
        .find(|l| l.rid.as_deref() == Some("a"))
        .expect("the AV1 rung is a layer");
    assert!(a.active);
    assert_eq!(
        (a.width, a.height),
        (320, 180),
        "the size from its sequence header"
    );

    // The AV1 viewer: the rung's frames, in order, under its AV1 PT.
    let got = &w.browsers[av1].frames[from[1]..];
    let on_rung: Vec<u64> = got
        .iter()
        .skip_while(|f| f.layer != b'a')
        .map(|f| f.number)
        .collect();
    assert!(on_rung.len() > 25, "{} AV1 frames", on_rung.len());
    assert!(on_rung.windows(2).all(|p| p[1] == p[0] + 1), "{on_rung:?}");
    assert!(
        got.iter()
            .skip_while(|f| f.layer != b'a')
            .all(|f| f.layer == b'a' && f.pt == viewer_av1_pt)
    );
    let peer = w.browsers[av1].session.expect("session");
    let layer = w.sfu.viewer_layer(peer).expect("viewer");
    assert_eq!(layer.current.as_deref(), Some("a"));

    // The viewer without AV1: never a packet of the rung; it keeps
    // watching the source.
    let got = &w.browsers[plain].frames[from[0]..];
    assert!(got.len() > 50, "{} frames", got.len());
    let plain_h264: Vec<Pt> = w.browsers[plain]
        .rtc
        .codec_config()
        .params()
        .iter()
        .filter(|p| p.spec().codec == Codec::H264)
        .map(|p| p.pt())
        .collect();
    assert!(
        got.iter()
            .all(|f| f.layer == b'-' && plain_h264.contains(&f.pt))
    );
    let peer = w.browsers[plain].session.expect("session");
    let layer = w.sfu.viewer_layer(peer).expect("viewer");
    assert_eq!(layer.current, None, "on the source, not the rung");
    assert_ne!(layer.target.as_deref(), Some("a"));
}

#[test]
fn without_sink_av1_the_stream_has_no_av1_and_an_av1_layer_is_refused() {
    let mut w = World::new(84);
    w.publisher("cam", link()).expect("publish");
    let av1 = w.viewer_av1("cam", link()).expect("an AV1 viewer");
    assert!(!w.browsers[av1].answer_sdp.contains("AV1"));
    w.run_for(Duration::from_secs(1));
    let video = attach_sink(&mut w);
    assert!(video.params.iter().all(|p| p.spec().codec != Codec::Av1));
    let pkt = MediaPacket {
        mid: video.mid,
        rid: Some(Rid::from("a")),
        ssrc: 0xa1,
        seq: 1,
        pt: 45.into(),
        timestamp: 1,
        marker: true,
        payload: Arc::from(av1_payload(0, true)),
        ext: Default::default(),
        at: w.now,
    };
    w.sink_says(1, SinkMessage::inject("cam", vec![pkt]));
    w.run_for(Duration::from_millis(50));
    assert_eq!(w.sfu.metrics().sink_packets_refused, 1);
}

/// A viewer that can receive nothing but AV1 video, on a stream whose
/// publisher sends H.264 (AV1 would only ever be a sink's layer, which the
/// stream may never get), is refused with the reason, not left waiting.
#[test]
fn a_viewer_that_takes_only_av1_is_refused_with_the_reason() {
    let mut w = World::with_config(85, |c| c.sink_av1 = true);
    w.publisher("cam", link()).expect("publish");
    w.run_for(Duration::from_millis(500));
    let mut rtc = str0m::RtcConfig::new()
        .clear_codecs()
        .enable_av1(true)
        .build(w.now);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    let now = w.now;
    match w.sfu.subscribe(now, "cam", &offer.to_sdp_string()) {
        Err(SessionError::Unsupported(why)) => {
            assert!(why.contains("H264"), "{why}");
            assert!(
                !why.contains("Av1"),
                "AV1 is not what the stream sends: {why}"
            );
        }
        other => panic!("an AV1-only viewer: {:?}", other.map(|a| a.peer)),
    }
}
