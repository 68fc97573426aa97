//! The live path: one publisher, several viewers, late joins.

use std::time::{Duration, Instant};

use crate::harness::{World, gaps_and_reorders, link};

#[test]
fn three_viewers_receive_every_frame_in_order() {
    let mut w = World::new(1);
    let p = w.publisher("cam", link()).expect("publish");
    w.browsers[p].keyframe_every = Some(60);
    let viewers: Vec<usize> = (0..3)
        .map(|_| w.viewer("cam", link()).expect("watch"))
        .collect();
    w.run_for(Duration::from_secs(6));

    let sent = w.browsers[p].frame_no;
    assert!(sent >= 150, "publisher sent only {sent} frames");
    for v in viewers {
        let b = &w.browsers[v];
        assert!(b.connected_at.is_some(), "viewer {v} never connected");
        let frames = &b.frames;
        assert!(
            frames.len() as u64 >= sent - 45,
            "viewer {v} got {} of {sent} frames",
            frames.len()
        );
        assert!(frames[0].keyframe, "viewer {v} started on a delta frame");
        let (gaps, reorders) = gaps_and_reorders(frames);
        assert_eq!((gaps, reorders), (0, 0), "viewer {v}: gaps and reorders");
        assert!(
            b.audio_frames > 100,
            "viewer {v} got {} audio frames",
            b.audio_frames
        );
    }
    let stream = w.sfu.stream("cam").expect("stream exists");
    assert!(stream.live);
    assert_eq!(stream.viewers, 3);
    // Each live copy is timed once the shell (here the harness) sent it;
    // copies replayed from the keyframe cache are not live forwarding.
    let m = w.sfu.metrics();
    let timed = m.forwarding_delay_us.count;
    assert!(
        timed > m.rtp_forwarded * 9 / 10 && timed <= m.rtp_forwarded,
        "{timed} of {} copies timed",
        m.rtp_forwarded
    );
}

#[test]
fn a_viewer_joining_mid_stream_starts_on_a_keyframe_it_asked_for() {
    let mut w = World::new(2);
    // The publisher sends one keyframe at the start and then only when asked,
    // so the late viewer can only see a picture if the SFU asks for one.
    let p = w.publisher("cam", link()).expect("publish");
    w.run_for(Duration::from_secs(3));
    assert!(w.browsers[p].frame_no > 60);
    let before = w.browsers[p].keyframe_requests.len();

    let v = w.viewer("cam", link()).expect("watch");
    let joined = w.now;
    let got_picture = w.run_until(Duration::from_secs(3), |w| !w.browsers[v].frames.is_empty());
    assert!(got_picture, "the late viewer never received a frame");
    let b = &w.browsers[v];
    assert!(
        b.frames[0].keyframe,
        "the late viewer's first frame is not a keyframe"
    );
    // Virtual time: ICE + DTLS + one PLI round trip + a frame interval.
    let ttff = b.frames[0].at - joined;
    assert!(
        ttff < Duration::from_millis(600),
        "first frame after {ttff:?} of virtual time"
    );
    assert!(
        w.browsers[p].keyframe_requests.len() > before,
        "no PLI reached the publisher"
    );

    w.run_for(Duration::from_secs(2));
    let (gaps, reorders) = gaps_and_reorders(&w.browsers[v].frames);
    assert_eq!((gaps, reorders), (0, 0));
}

#[test]
fn viewers_joining_soon_after_a_keyframe_start_on_the_cached_one() {
    let mut w = World::new(4);
    // Keyframes only when asked for: every start below is either the cache
    // or a request.
    let p = w.publisher("cam", link()).expect("publish");
    w.run_for(Duration::from_secs(3));
    let first = w.viewer("cam", link()).expect("watch");
    assert!(w.run_until(Duration::from_secs(2), |w| {
        !w.browsers[first].frames.is_empty()
    }));
    let requests = w.browsers[p].keyframe_requests.len();

    // Ten viewers over the next 800 ms: all within a second of that keyframe.
    let mut joined = Vec::new();
    for _ in 0..10 {
        joined.push(w.viewer("cam", link()).expect("watch"));
        w.run_for(Duration::from_millis(80));
    }
    w.run_for(Duration::from_secs(1));
    for &v in &joined {
        let b = &w.browsers[v];
        let connected = b.connected_at.expect("connected");
        assert!(!b.frames.is_empty(), "a viewer got no frame");
        assert!(b.frames[0].keyframe, "first frame is not a keyframe");
        // The picture comes with the connection, not a request later.
        let wait = b.frames[0].at.saturating_duration_since(connected);
        assert!(
            wait <= Duration::from_millis(15),
            "first frame {wait:?} after connecting"
        );
        assert_eq!(gaps_and_reorders(&b.frames), (0, 0));
    }
    assert_eq!(
        w.browsers[p].keyframe_requests.len(),
        requests,
        "joins served from the cache asked the publisher for keyframes"
    );
    assert!(w.sfu.metrics().starts_from_cache >= 10);
    // Every start is in the time-to-first-frame histogram; the ten cached
    // starts took no longer than connecting (virtual time, 10 ms links).
    let ttff = &w.sfu.metrics().ttff_ms;
    assert_eq!(ttff.count, 11);
    let within_100ms = ttff.cumulative()[lumen_sfu::TTFF_MS_BOUNDS.binary_search(&100).unwrap()];
    assert!(within_100ms >= 10, "{ttff:?}");

    // Once the keyframe is old, a join asks for a new one instead.
    w.run_for(Duration::from_secs(1));
    let late = w.viewer("cam", link()).expect("watch");
    assert!(w.run_until(Duration::from_secs(2), |w| {
        !w.browsers[late].frames.is_empty()
    }));
    assert!(w.browsers[late].frames[0].keyframe);
    assert_eq!(w.browsers[p].keyframe_requests.len(), requests + 1);
}

#[test]
fn many_joins_cause_at_most_one_pli_per_interval() {
    let mut w = World::new(3);
    let p = w.publisher("cam", link()).expect("publish");
    w.run_for(Duration::from_secs(2));
    let before = w.browsers[p].keyframe_requests.len();
    // 30 viewers arrive over one second.
    for _ in 0..30 {
        w.viewer("cam", link()).expect("watch");
        w.run_for(Duration::from_millis(33));
    }
    w.run_for(Duration::from_secs(1));
    let plis: Vec<_> = w.browsers[p].keyframe_requests[before..].to_vec();
    assert!(!plis.is_empty(), "joins caused no keyframe request");
    // Over the ~2 s of joins, 500 ms apart at the least: at most 5.
    assert!(
        plis.len() <= 5,
        "{} PLIs for 30 joins: {:?}",
        plis.len(),
        plis
    );
    for pair in plis.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(450),
            "PLIs too close: {pair:?}"
        );
    }
    // And every viewer got a picture.
    for b in &w.browsers[p + 1..] {
        assert!(!b.frames.is_empty(), "a viewer got no frame");
        assert!(b.frames[0].keyframe);
    }
}

/// A keyframe bigger than a fan-out chunk does not go whole to one viewer
/// before the next viewer gets any of it: the SFU sends a viewer at most 16
/// of its packets in a row, then the other viewers theirs, then the rest;
/// and every viewer still gets every frame in order.
#[test]
fn a_big_keyframe_goes_to_every_viewer_a_chunk_at_a_time() {
    let mut w = World::new(5);
    let p = w.publisher("cam", link()).expect("publish");
    // Keyframes of 3 × 8000 bytes: 21 packets or more; delta frames 7.
    w.browsers[p].frame_size = 8000;
    w.browsers[p].keyframe_every = Some(30);
    let viewers: Vec<usize> = (0..4)
        .map(|_| w.viewer("cam", link()).expect("watch"))
        .collect();
    w.run_for(Duration::from_secs(1));
    w.sent_log = Some(Vec::new());
    w.run_for(Duration::from_secs(3));
    let log = w.sent_log.take().expect("log");

    // The longest run of video-sized datagrams to one viewer (audio and
    // RTCP are small and left out).
    let (mut longest, mut run, mut last) = (0, 0, None);
    for (to, len) in &log {
        if *len < 1000 {
            continue;
        }
        if Some(*to) == last {
            run += 1;
        } else {
            (run, last) = (1, Some(*to));
        }
        longest = longest.max(run);
    }
    // Longer than a delta frame (so keyframes were in the log), and cut at
    // the chunk (a whole keyframe would be 21 or more).
    assert!(
        (12..=16).contains(&longest),
        "longest run of packets to one viewer: {longest}"
    );
    for v in viewers {
        let f = &w.browsers[v].frames;
        assert!(f.len() > 100, "viewer {v} got {} frames", f.len());
        assert_eq!(gaps_and_reorders(f), (0, 0), "viewer {v}");
    }
}

/// A viewer's packets carry no header extension it has no use for: the
/// answers leave absolute send time out (str0m makes no receiver-side
/// estimate that reads it), a viewer of one layer gets no transport-wide
/// sequence numbers (nothing estimates its bandwidth), and the mid stops
/// once the viewer's receiver report shows it bound the SSRC. So a
/// one-layer viewer's RTP headers are the bare 12 bytes, and a simulcast
/// viewer's carry only the transport-wide sequence number (8 bytes more).
#[test]
fn packets_carry_only_the_header_extensions_their_viewer_uses() {
    let mut w = World::new(11);
    let p = w.publisher("one", link()).expect("publish");
    let v = w.viewer("one", link()).expect("watch");
    let sp = w.simulcast_publisher("three").expect("publish simulcast");
    let sv = w.viewer("three", link()).expect("watch simulcast");
    // str0m's receivers report audio every 5 s (video every second).
    w.run_for(Duration::from_secs(7));
    w.rtp_header_log = Some(Vec::new());
    w.run_for(Duration::from_secs(2));
    let log = w.rtp_header_log.take().expect("log");

    for i in [p, v, sp, sv] {
        let sdp = &w.browsers[i].answer_sdp;
        assert!(!sdp.contains("abs-send-time"), "answer {i}:\n{sdp}");
    }
    assert!(w.browsers[p].answer_sdp.contains("transport-wide-cc"));
    assert!(w.browsers[sv].answer_sdp.contains("transport-wide-cc"));
    assert!(!w.browsers[v].answer_sdp.contains("transport-wide-cc"));

    // Media packets (a viewer's resends and bandwidth probes go on its
    // RTX SSRC, which carries the mid until the viewer reports on it).
    let headers = |i: usize, video_only: bool| -> Vec<usize> {
        let addr = w.browsers[i].addr;
        let video = w.browsers[i].frames.first().map(|f| *f.pt);
        log.iter()
            .filter(|(to, pt, _)| *to == addr && (!video_only || Some(*pt) == video))
            .map(|(_, _, len)| *len)
            .collect()
    };
    let one = headers(v, false);
    assert!(
        one.len() > 100,
        "one-layer viewer got {} packets",
        one.len()
    );
    assert!(one.iter().all(|l| *l == 12), "one-layer viewer: {one:?}");
    let three = headers(sv, true);
    assert!(
        three.len() > 100,
        "simulcast viewer got {} packets",
        three.len()
    );
    assert!(
        three.iter().all(|l| *l == 20),
        "simulcast viewer: {three:?}"
    );
    assert!(w.browsers[v].frames.len() > 100 && w.browsers[sv].frames.len() > 100);
}

/// The audio level and voice activity a publisher's audio carries
/// (RFC 6464, what a player's speaking indicator shows) reach its viewer
/// on every audio packet, while its video packets carry no extension
/// values to copy.
#[test]
fn audio_levels_reach_the_viewer() {
    let mut w = World::new(12);
    let p = w.publisher("talk", link()).expect("publish");
    let v = w.viewer("talk", link()).expect("watch");
    w.browsers[p].audio_level = Some((-30, true));
    w.run_for(Duration::from_secs(1));
    w.browsers[v].audio_levels.clear();
    let frames = w.browsers[v].frames.len();
    w.run_for(Duration::from_secs(2));
    let heard = &w.browsers[v].audio_levels;
    assert!(
        heard.len() > 50,
        "the viewer heard {} audio frames",
        heard.len()
    );
    assert!(
        heard.iter().all(|l| *l == (Some(-30), Some(true))),
        "levels heard: {heard:?}"
    );
    assert!(w.browsers[v].frames.len() > frames + 30, "video went on");
}

/// The viewer's video frames as they came into worker 0 from publisher
/// `p` and left for viewer `v`, in order: per frame, the times of its
/// packets.
fn frames_in_and_out(w: &World, p: usize, v: usize) -> Vec<(Vec<Instant>, Vec<Instant>)> {
    use std::collections::BTreeMap;
    let log = w.rtp_times.as_ref().expect("log");
    let video = *w.browsers[v]
        .frames
        .first()
        .expect("the viewer got frames")
        .pt;
    let (pub_addr, view_addr) = (w.browsers[p].addr, w.browsers[v].addr);
    // The publisher's video: its payload type with the most packets per
    // timestamp (an audio packet has a timestamp of its own).
    let mut per_pt: BTreeMap<u8, (usize, std::collections::BTreeSet<u32>)> = BTreeMap::new();
    for s in log.iter().filter(|s| s.inbound && s.peer == pub_addr) {
        let e = per_pt.entry(s.pt).or_default();
        e.0 += 1;
        e.1.insert(s.timestamp);
    }
    let pub_video = per_pt
        .iter()
        .max_by_key(|(_, (n, ts))| n * 1000 / ts.len().max(1))
        .map(|(pt, _)| *pt)
        .expect("the publisher sent RTP");
    let mut came: BTreeMap<u32, Vec<Instant>> = BTreeMap::new();
    let mut left: BTreeMap<u32, Vec<Instant>> = BTreeMap::new();
    for s in log {
        if s.inbound && s.peer == pub_addr && s.pt == pub_video {
            came.entry(s.timestamp).or_default().push(s.at);
        } else if !s.inbound && s.peer == view_addr && s.pt == video {
            left.entry(s.timestamp).or_default().push(s.at);
        }
    }
    // A one-layer viewer's timestamps are the publisher's plus a fixed
    // offset: the one most frames show between a frame that came in and
    // one that left within 50 ms.
    let mut offsets: BTreeMap<u32, usize> = BTreeMap::new();
    for (ts_in, t_in) in &came {
        for (ts_out, t_out) in &left {
            let (a, b) = (t_in[0], t_out[0]);
            if b >= a && b - a < Duration::from_millis(50) {
                *offsets.entry(ts_out.wrapping_sub(*ts_in)).or_default() += 1;
            }
        }
    }
    let offset = offsets
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(o, _)| *o)
        .expect("frames in and out");
    came.into_iter()
        .filter_map(|(ts, t_in)| Some((t_in, left.get(&ts.wrapping_add(offset))?.clone())))
        .collect()
}

/// A publisher on link `up` and a viewer: their frames (see
/// [`frames_in_and_out`]) over 3 s, after 3 s to settle.
fn frames_through(seed: u64, up: str0m_netem::NetemConfig) -> Vec<(Vec<Instant>, Vec<Instant>)> {
    let mut w = World::new(seed);
    let p = w.publisher("s", up).expect("publish");
    let v = w.viewer("s", link()).expect("watch");
    w.run_for(Duration::from_secs(3));
    w.rtp_times = Some(Vec::new());
    w.run_for(Duration::from_secs(3));
    frames_in_and_out(&w, p, v)
}

fn spread(t: &[Instant]) -> Duration {
    *t.iter().max().expect("a time") - *t.iter().min().expect("a time")
}

/// A browser's pacer spaces a frame's packets, so they reach the SFU in
/// separate reads (here the publisher's link serializes them at 8 Mbit/s,
/// ~1.2 ms a packet). The SFU holds a video frame's packets until its last
/// one is in, then sends them to the viewer together: one train per frame
/// instead of a datagram per packet, and the frame complete no later.
#[test]
fn a_frame_s_packets_leave_together_once_its_last_one_is_in() {
    use str0m_netem::{Bitrate, DataSize};
    let frames = frames_through(12, link().link(Bitrate::mbps(8), DataSize::kbytes(256)));
    let mut paced = 0;
    for (i, (came, left)) in frames.iter().enumerate() {
        // Frames whose packets came spread over time, within the hold.
        if came.len() < 2 || came.len() > 16 || spread(came) == Duration::ZERO {
            continue;
        }
        if spread(came) >= Duration::from_millis(5) {
            continue;
        }
        assert_eq!(left.len(), came.len(), "frame {i}: packets in and out");
        assert_eq!(
            spread(left),
            Duration::ZERO,
            "frame {i}: came over {:?}, left over {:?}",
            spread(came),
            spread(left)
        );
        paced += 1;
    }
    assert!(
        paced >= 50,
        "only {paced} frames came paced (of {})",
        frames.len()
    );
}

/// A frame whose last packet is lost on the way in is not held for it
/// past the hold: its packets leave at most 5 ms after the first came.
#[test]
fn a_frame_without_its_last_packet_is_held_5_ms_at_most() {
    use str0m_netem::{Probability, RandomLoss};
    let frames = frames_through(13, link().loss(RandomLoss::new(Probability::new(0.1))));
    let mut held = 0;
    for (i, (came, left)) in frames.iter().enumerate() {
        let first_in = *came.iter().min().expect("a packet");
        let first_out = *left.iter().min().expect("a packet");
        let wait = first_out - first_in;
        assert!(
            wait <= Duration::from_millis(5),
            "frame {i}: first packet held {wait:?}"
        );
        if wait == Duration::from_millis(5) {
            held += 1;
        }
    }
    assert!(
        held > 0,
        "no frame lost its last packet (of {})",
        frames.len()
    );
}
