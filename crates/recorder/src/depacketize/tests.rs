use super::*;

const SPS: [u8; 25] = [
    0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01,
    0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
];
const PPS: [u8; 5] = [0x68, 0xcb, 0x83, 0xcb, 0x20];

fn idr(len: usize) -> Vec<u8> {
    // first_mb_in_slice 0: the first bit after the header is 1.
    std::iter::once(0x65)
        .chain(std::iter::once(0x88))
        .chain((0..len).map(|i| i as u8 | 1))
        .collect()
}

fn p_slice(len: usize) -> Vec<u8> {
    std::iter::once(0x41)
        .chain(std::iter::once(0x9a))
        .chain((0..len).map(|i| i as u8 | 1))
        .collect()
}

fn fu_a(nal: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let chunks: Vec<_> = nal[1..].chunks(chunk).collect();
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let mut fu = vec![(nal[0] & 0xe0) | 28, nal[0] & 0x1f];
            if i == 0 {
                fu[1] |= 0x80;
            }
            if i == n - 1 {
                fu[1] |= 0x40;
            }
            fu.extend_from_slice(c);
            fu
        })
        .collect()
}

fn stap_a(nals: &[&[u8]]) -> Vec<u8> {
    let mut p = vec![0x78];
    for n in nals {
        p.extend_from_slice(&(n.len() as u16).to_be_bytes());
        p.extend_from_slice(n);
    }
    p
}

fn avcc(nals: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in nals {
        out.extend_from_slice(&(n.len() as u32).to_be_bytes());
        out.extend_from_slice(n);
    }
    out
}

/// (payload, marker) packets of one H.264 keyframe.
fn keyframe_packets() -> Vec<(Vec<u8>, bool)> {
    let mut packets = vec![(stap_a(&[&SPS, &PPS]), false)];
    let fus = fu_a(&idr(300), 100);
    let n = fus.len();
    packets.extend(fus.into_iter().enumerate().map(|(i, p)| (p, i == n - 1)));
    packets
}

fn feed(d: &mut Depacketizer, seq: &mut u64, ts: u32, packets: &[(Vec<u8>, bool)]) -> Push {
    let mut all = Push::default();
    for (p, marker) in packets {
        let push = d.push(*seq, ts, *marker, p);
        *seq += 1;
        all.frames.extend(push.frames);
        all.keyframe_needed |= push.keyframe_needed;
    }
    all
}

#[test]
fn h264_stap_a_and_fu_a_make_an_avcc_keyframe() {
    let mut d = Depacketizer::new(Codec::H264);
    let mut seq = 100;
    let out = feed(&mut d, &mut seq, 9000, &keyframe_packets());
    assert_eq!(out.frames.len(), 1);
    let f = &out.frames[0];
    assert!(f.keyframe);
    assert_eq!(f.data, avcc(&[&SPS, &PPS, &idr(300)]));
    assert!(!out.keyframe_needed);
    assert_eq!(
        d.track_config(),
        Some(TrackConfig::H264 {
            sps: SPS.to_vec(),
            pps: PPS.to_vec(),
            width: 640,
            height: 360
        })
    );
    // A delta frame in single NAL unit packets, with an AUD that is dropped.
    let out = feed(
        &mut d,
        &mut seq,
        12000,
        &[(vec![0x09, 0xf0], false), (p_slice(10), true)],
    );
    assert_eq!(out.frames.len(), 1);
    assert!(!out.frames[0].keyframe);
    assert_eq!(out.frames[0].data, avcc(&[&p_slice(10)]));
    assert_eq!(out.frames[0].rtp_ts - f.rtp_ts, 3000);
}

#[test]
fn h264_start_without_keyframe_asks_for_one() {
    let mut d = Depacketizer::new(Codec::H264);
    let mut seq = 0;
    let out = feed(&mut d, &mut seq, 0, &[(p_slice(10), true)]);
    assert!(out.frames.is_empty());
    assert!(out.keyframe_needed);
    let out = feed(&mut d, &mut seq, 3000, &[(p_slice(10), true)]);
    assert!(out.frames.is_empty() && !out.keyframe_needed);
    let out = feed(&mut d, &mut seq, 6000, &keyframe_packets());
    assert_eq!(out.frames.len(), 1);
    assert_eq!(d.stats().skipped, 2);
}

#[test]
fn h264_fu_a_loss_drops_frames_until_the_next_keyframe() {
    let mut d = Depacketizer::with_reorder_window(Codec::H264, 4);
    let mut seq = 0;
    assert_eq!(
        feed(&mut d, &mut seq, 0, &keyframe_packets()).frames.len(),
        1
    );
    // A delta frame in FU-A loses its middle packet.
    let fus = fu_a(&p_slice(300), 100);
    let n = fus.len();
    let mut packets: Vec<_> = fus
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p, i == n - 1))
        .collect();
    packets.remove(1);
    let mut lost_at = seq;
    let mut out = feed(&mut d, &mut seq, 3000, &packets[..1]);
    lost_at += 1;
    seq += 1; // the hole
    let rest = feed(&mut d, &mut seq, 3000, &packets[1..]);
    out.frames.extend(rest.frames);
    // Later delta frames fill the window; the hole is given up.
    for i in 0..6 {
        let push = feed(&mut d, &mut seq, 6000 + i * 3000, &[(p_slice(20), true)]);
        assert!(
            push.frames.is_empty(),
            "frame {i} after the loss was handed out"
        );
        out.keyframe_needed |= push.keyframe_needed;
    }
    assert!(out.keyframe_needed);
    assert!(out.frames.is_empty());
    assert!(d.stats().losses >= 1, "{:?} (hole at {lost_at})", d.stats());
    let out = feed(&mut d, &mut seq, 30000, &keyframe_packets());
    assert_eq!(out.frames.len(), 1);
    assert!(out.frames[0].keyframe);
}

#[test]
fn reordered_and_late_packets_still_complete_the_frame() {
    let mut d = Depacketizer::new(Codec::H264);
    let packets = keyframe_packets();
    let order = [0usize, 2, 1, 4, 3];
    let mut frames = Vec::new();
    for &i in &order {
        let (p, m) = &packets[i];
        frames.extend(d.push(10 + i as u64, 90, *m, p).frames);
    }
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].data, avcc(&[&SPS, &PPS, &idr(300)]));
    // A duplicate after the frame went out is counted, not handed out.
    assert!(d.push(12, 90, false, &packets[2].0).frames.is_empty());
    assert_eq!(d.stats().late_or_duplicate, 1);
}

#[test]
fn missing_marker_ends_the_frame_at_the_next_timestamp() {
    let mut d = Depacketizer::new(Codec::H264);
    let mut seq = 0;
    let mut packets = keyframe_packets();
    if let Some(last) = packets.last_mut() {
        last.1 = false;
    }
    let out = feed(&mut d, &mut seq, 0, &packets);
    assert!(out.frames.is_empty());
    let out = feed(&mut d, &mut seq, 3000, &[(p_slice(5), true)]);
    assert_eq!(out.frames.len(), 2);
    assert!(out.frames[0].keyframe);
}

#[test]
fn rtp_timestamps_extend_across_the_wrap() {
    let mut d = Depacketizer::new(Codec::Opus);
    let mut last = None;
    let mut ts = u32::MAX - 960 * 2;
    for seq in 0..6u64 {
        let out = d.push(seq, ts, false, &[0xfc, 1, 2]);
        let f = &out.frames[0];
        if let Some(prev) = last {
            assert_eq!(f.rtp_ts, prev + 960);
        }
        last = Some(f.rtp_ts);
        ts = ts.wrapping_add(960);
    }
}

#[test]
fn opus_loss_needs_no_keyframe() {
    let mut d = Depacketizer::with_reorder_window(Codec::Opus, 2);
    let mut got = 0;
    for seq in (0..10u64).filter(|s| *s != 4) {
        let out = d.push(seq, seq as u32 * 960, false, &[0xfc, seq as u8]);
        assert!(!out.keyframe_needed);
        got += out.frames.len();
    }
    got += d.flush().frames.len();
    assert_eq!(got, 9);
    assert_eq!(d.stats().losses, 1);
    assert!(d.push(10, 0, false, &[]).frames.is_empty());
    assert_eq!(d.stats().malformed, 1);
}

fn vp8_keyframe(width: u16, height: u16, len: usize) -> Vec<u8> {
    let mut f = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
    f.extend_from_slice(&width.to_le_bytes());
    f.extend_from_slice(&height.to_le_bytes());
    f.extend((0..len).map(|i| i as u8));
    f
}

/// RFC 7741 packets of one frame, with a 15-bit PictureID, TL0PICIDX and
/// TID/KEYIDX (every optional field), split in `chunk`-byte pieces.
fn vp8_packets(frame: &[u8], chunk: usize, picture_id: u16) -> Vec<(Vec<u8>, bool)> {
    let chunks: Vec<_> = frame.chunks(chunk).collect();
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let s = if i == 0 { 0x10 } else { 0 };
            let mut p = vec![
                0x80 | s,
                0xf0,
                0x80 | (picture_id >> 8) as u8,
                picture_id as u8,
                7,
                0x40,
            ];
            p.extend_from_slice(c);
            (p, i == n - 1)
        })
        .collect()
}

#[test]
fn vp8_partitions_reassemble_and_give_the_size() {
    let mut d = Depacketizer::new(Codec::Vp8);
    let mut seq = 0;
    let key = vp8_keyframe(1280, 720, 500);
    let out = feed(&mut d, &mut seq, 0, &vp8_packets(&key, 120, 300));
    assert_eq!(out.frames.len(), 1);
    assert!(out.frames[0].keyframe);
    assert_eq!(out.frames[0].data, key);
    assert_eq!(
        d.track_config(),
        Some(TrackConfig::Vp8 {
            width: 1280,
            height: 720
        })
    );
    // A delta frame with the minimal descriptor (no X bit).
    let delta: Vec<u8> = std::iter::once(0x31).chain(1..50).collect();
    let out = feed(
        &mut d,
        &mut seq,
        3000,
        &[([&[0x10u8][..], &delta].concat(), true)],
    );
    assert_eq!(out.frames.len(), 1);
    assert!(!out.frames[0].keyframe);
    assert_eq!(out.frames[0].data, delta);
}

#[test]
fn vp8_loss_waits_for_a_keyframe() {
    let mut d = Depacketizer::with_reorder_window(Codec::Vp8, 2);
    let mut seq = 0;
    let key = vp8_keyframe(320, 240, 300);
    assert_eq!(
        feed(&mut d, &mut seq, 0, &vp8_packets(&key, 100, 1))
            .frames
            .len(),
        1
    );
    // The first packet of a delta frame is lost: its other packets do not
    // start a partition and must not make a frame.
    let delta: Vec<u8> = std::iter::once(0x31)
        .chain(0..200)
        .map(|b| b as u8)
        .collect();
    let packets = vp8_packets(&delta, 60, 2);
    seq += 1;
    let mut out = feed(&mut d, &mut seq, 3000, &packets[1..]);
    for i in 0..3 {
        let more = feed(
            &mut d,
            &mut seq,
            6000 + i * 3000,
            &vp8_packets(&delta, 300, 3),
        );
        out.frames.extend(more.frames);
        out.keyframe_needed |= more.keyframe_needed;
    }
    assert!(out.frames.is_empty());
    assert!(out.keyframe_needed);
    let out = feed(&mut d, &mut seq, 20000, &vp8_packets(&key, 100, 4));
    assert_eq!(out.frames.len(), 1);
    assert!(out.frames[0].keyframe);
}

#[test]
fn garbage_never_panics() {
    // A fixed-seed generator: the same garbage every run.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for codec in [Codec::H264, Codec::Vp8, Codec::Opus] {
        let mut d = Depacketizer::with_reorder_window(codec, 8);
        for _ in 0..20_000 {
            let r = next();
            let len = (r % 40) as usize;
            let mut payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Mostly plausible headers, so the deeper paths run too.
            if let Some(first) = payload.first_mut()
                && r % 3 == 0
            {
                *first = [0x78, 0x7c, 0x65, 0x67, 0x10, 0x90][(r >> 8) as usize % 6];
            }
            let seq = next() % 64;
            let _ = d.push(seq, (next() % 4) as u32 * 3000, r & 0x100 != 0, &payload);
        }
        let _ = d.flush();
    }
}

#[test]
fn keyframe_requests_repeat_while_waiting() {
    let mut d = Depacketizer::new(Codec::H264);
    let mut seq = 0;
    let mut requests = 0;
    for i in 0..61 {
        requests +=
            usize::from(feed(&mut d, &mut seq, i * 3000, &[(p_slice(4), true)]).keyframe_needed);
    }
    // At the first dropped frame, then every KEYFRAME_REREQUEST_FRAMES.
    assert_eq!(requests, 3);
    assert_eq!(d.stats().keyframe_requests, 3);
}
