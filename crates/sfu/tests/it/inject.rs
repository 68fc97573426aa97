//! Layers made by a sink (a transcoder's rungs, `SinkBody::Inject`): the
//! Router forwards them like a simulcast publisher's layers, so a viewer
//! pins one; a keyframe request for such a layer goes to the sink that
//! makes it, never to the publisher; the sink does not get its own packets
//! back; packets that do not fit the stream are refused and counted.

use std::sync::Arc;
use std::time::Duration;

use lumen_sfu::{LayerRequest, MediaPacket, Rid, SinkBody, SinkId, SinkMessage};
use str0m::media::{MediaKind, Mid, Pt};

use crate::harness::{World, link, make_frame};

/// A stand-in transcoder: numbers its packets and frames as a rung would.
struct Rung {
    mid: Mid,
    pt: Pt,
    rid: Rid,
    seq: u64,
}

impl Rung {
    /// Frame `n` of the rung (tagged `l`), one packet per NAL unit, made
    /// of the source frame the sink got last (its timestamp), as a
    /// transcoder makes it.
    fn frame(&mut self, w: &World, n: u64, key: bool) -> Vec<MediaPacket> {
        let ts = w
            .sink_log
            .iter()
            .rev()
            .find_map(|(_, m)| match m.body() {
                SinkBody::Packets(p) => p
                    .iter()
                    .rev()
                    .find(|p| p.mid == self.mid)
                    .map(|p| p.timestamp),
                _ => None,
            })
            .unwrap_or(n as u32 * 3000);
        let data = make_frame(n, key, b'l', 60);
        let nals: Vec<&[u8]> = data
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty() && *s != [1])
            .map(|s| s.strip_prefix(&[1]).unwrap_or(s))
            .collect();
        let last = nals.len() - 1;
        nals.into_iter()
            .enumerate()
            .map(|(i, nal)| {
                self.seq += 1;
                MediaPacket {
                    mid: self.mid,
                    rid: Some(self.rid),
                    ssrc: 0xabc,
                    seq: self.seq,
                    pt: self.pt,
                    timestamp: ts,
                    marker: i == last,
                    payload: Arc::from(nal),
                    ext: Default::default(),
                    at: w.now,
                }
            })
            .collect()
    }
}

fn keyframe_asks(w: &World, sink: u64, from: usize) -> Vec<Option<Rid>> {
    w.sink_log[from..]
        .iter()
        .filter(|(k, _)| *k == sink)
        .filter_map(|(_, m)| match m.body() {
            SinkBody::Keyframe(rid) => Some(*rid),
            _ => None,
        })
        .collect()
}

#[test]
fn a_sinks_layer_is_pinned_like_simulcast_and_its_keyframes_are_asked_of_the_sink() {
    let mut w = World::new(81);
    let p = w.publisher("cam", link()).expect("publish");
    w.browsers[p].keyframe_every = Some(60);
    let v = w.viewer("cam", link()).expect("watch");
    w.run_for(Duration::from_secs(1));
    let peer = w.browsers[v].session.expect("session");

    w.on_worker(|sfu, now| sfu.attach_sink(now, "cam", SinkId::External(1)))
        .expect("attach");
    w.run_for(Duration::from_millis(100));
    let (mid, pt) = w
        .sink_log
        .iter()
        .find_map(|(_, m)| match m.body() {
            SinkBody::Source { tracks, .. } => tracks
                .iter()
                .find(|t| t.kind == MediaKind::Video)
                .map(|t| (t.mid, t.params[0].pt())),
            _ => None,
        })
        .expect("the description");
    let mut rung = Rung {
        mid,
        pt,
        rid: Rid::from("l"),
        seq: 100,
    };
    // One keyframe, then only delta frames: 1.5 s later nothing of the
    // layer is fresh enough to start a viewer on.
    let mut injected = 0;
    for n in 0..45 {
        let pkts = rung.frame(&w, n, n == 0);
        injected += pkts.len() as u64;
        w.sink_says(1, SinkMessage::inject("cam", pkts));
        w.run_for(Duration::from_millis(33));
    }
    let layers = w.sfu.stream("cam").expect("stream").layers;
    let rids: Vec<Option<String>> = layers.iter().map(|l| l.rid.clone()).collect();
    assert_eq!(
        rids,
        [None, Some("l".to_string())],
        "source first, then the rung"
    );
    assert!(layers.iter().all(|l| l.active));
    assert_eq!(w.sfu.metrics().sink_packets_injected, injected);
    // The sink does not get its own packets back.
    assert!(w.sink_log.iter().all(|(_, m)| match m.body() {
        SinkBody::Packets(p) => p.iter().all(|p| p.rid.is_none()),
        _ => true,
    }));

    // Pinning the rung asks the sink for a keyframe, not the publisher.
    let publisher_asked = w.browsers[p].keyframe_requests.len();
    let logged = w.sink_log.len();
    w.sfu
        .set_layer(peer, LayerRequest::Rid("l".into()))
        .expect("pin l");
    w.run_for(Duration::from_millis(50));
    assert_eq!(keyframe_asks(&w, 1, logged), [Some(Rid::from("l"))]);
    assert_eq!(w.browsers[p].keyframe_requests.len(), publisher_asked);

    // The sink answers with a keyframe: the viewer switches to the rung.
    let from = w.browsers[v].frames.len();
    for n in 45..90 {
        let pkts = rung.frame(&w, n, n == 45);
        w.sink_says(1, SinkMessage::inject("cam", pkts));
        w.run_for(Duration::from_millis(33));
    }
    let got = &w.browsers[v].frames[from..];
    let on_rung: Vec<u64> = got
        .iter()
        .skip_while(|f| f.layer != b'l')
        .map(|f| f.number)
        .collect();
    assert!(on_rung.len() > 30, "{} rung frames", on_rung.len());
    assert!(
        got.iter()
            .skip_while(|f| f.layer != b'l')
            .all(|f| f.layer == b'l')
    );
    assert!(on_rung.windows(2).all(|p| p[1] == p[0] + 1), "{on_rung:?}");
    assert_eq!(w.browsers[p].keyframe_requests.len(), publisher_asked);
    let layer = w.sfu.viewer_layer(peer).expect("viewer");
    assert_eq!(layer.current.as_deref(), Some("l"));
}

#[test]
fn injected_packets_that_do_not_fit_the_stream_are_refused_and_counted() {
    let mut w = World::new(82);
    w.publisher("cam", link()).expect("publish");
    w.run_for(Duration::from_secs(1));
    w.on_worker(|sfu, now| sfu.attach_sink(now, "cam", SinkId::External(1)))
        .expect("attach");
    w.run_for(Duration::from_millis(100));
    let (mid, pt) = w
        .sink_log
        .iter()
        .find_map(|(_, m)| match m.body() {
            SinkBody::Source { tracks, .. } => tracks
                .iter()
                .find(|t| t.kind == MediaKind::Video)
                .map(|t| (t.mid, t.params[0].pt())),
            _ => None,
        })
        .expect("the description");
    let rung = |rid: Option<&str>, pt: Pt, mid: Mid| {
        let mut r = Rung {
            mid,
            pt,
            rid: Rid::from("l"),
            seq: 1,
        };
        let mut pkts = r.frame(&w, 0, true);
        for p in &mut pkts {
            p.rid = rid.map(Rid::from);
        }
        pkts
    };
    let cases = [
        // The publisher's own layer.
        rung(None, pt, mid),
        // A payload type the stream did not negotiate.
        rung(Some("l"), Pt::from(7), mid),
        // No such track.
        rung(Some("l"), pt, Mid::from("nope")),
    ];
    let sent: u64 = cases.iter().map(|c| c.len() as u64).sum();
    for c in cases.clone() {
        w.sink_says(1, SinkMessage::inject("cam", c));
    }
    // From a sink that is not attached, and to a stream that does not exist.
    w.sink_says(2, SinkMessage::inject("cam", cases[0].clone()));
    w.sink_says(1, SinkMessage::inject("nobody", cases[0].clone()));
    let m = w.sfu.metrics();
    assert_eq!(m.sink_packets_injected, 0);
    assert_eq!(m.sink_packets_refused, sent + 2 * cases[0].len() as u64);
    w.run_for(Duration::from_millis(200));
    let rids: Vec<Option<String>> = w
        .sfu
        .stream("cam")
        .expect("stream")
        .layers
        .iter()
        .map(|l| l.rid.clone())
        .collect();
    assert_eq!(rids, [None], "no layer was made");
}
