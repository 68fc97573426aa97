//! The ladder on synthetic streams: a source encoded here with openh264,
//! packetized as a publisher would, fed packet by packet.

use std::time::Instant;

use openh264::decoder::Decoder;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, RateControlMode};
use str0m::format::{Codec as SdpCodec, CodecSpec, FormatParams, PayloadParams};
use str0m::media::Frequency;

use super::*;
use crate::TranscodeConfig;

const PT: u8 = 96;
const SOURCE_SSRC: u32 = 0x1234;

pub(super) fn video_track(rids: &[&str], codec: SdpCodec) -> TrackDescription {
    let spec = CodecSpec {
        codec,
        clock_rate: Frequency::NINETY_KHZ,
        channels: None,
        format: FormatParams::default(),
    };
    TrackDescription {
        mid: "1".into(),
        kind: MediaKind::Video,
        params: vec![PayloadParams::new(PT.into(), None, spec)],
        rids: rids.iter().map(|r| (*r).into()).collect(),
    }
}

/// An SEI NAL unit that carries `n` (stands for lumen's timing SEI: the
/// ladder carries SEI messages over whatever they say).
fn sei(n: u64) -> Vec<u8> {
    let mut s = vec![0x06, 0x05, 0x08];
    s.extend((n as u32 | 0x0101_0101).to_be_bytes());
    s.extend([1, 1, 1, 1, 0x80]);
    s
}

/// A moving picture, so P frames carry something.
fn picture(w: usize, h: usize, n: usize) -> Picture {
    let mut p = Picture::new(w, h);
    for (i, y) in p.y.iter_mut().enumerate() {
        let (x, row) = (i % w, i / w);
        *y = ((x + row + n * 7) % 220 + 16) as u8;
    }
    p
}

/// `n` source frames of `w`×`h` as a publisher packetizes them: IDRs at
/// the indexes in `idr`, each frame with an SEI carrying its number,
/// RTP timestamps 3000 apart.
fn source(w: usize, h: usize, n: usize, idr: &[usize]) -> Vec<Vec<MediaPacket>> {
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(1_500_000))
        .max_frame_rate(FrameRate::from_hz(30.0))
        .rate_control_mode(RateControlMode::Bitrate)
        .skip_frames(false);
    let mut enc = Encoder::with_api_config(OpenH264API::from_source(), config).unwrap();
    let mut pk = Packetizer::new(1000);
    let at = Instant::now();
    (0..n)
        .map(|i| {
            if idr.contains(&i) {
                enc.force_intra_frame();
            }
            let raw = enc.encode(&picture(w, h, i)).unwrap().to_vec();
            let s = sei(i as u64);
            let mut nals: Vec<&[u8]> = vec![&s];
            nals.extend(split_annex_b(&raw));
            pk.packetize(&nals)
                .into_iter()
                .map(|p| MediaPacket {
                    mid: "1".into(),
                    rid: None,
                    ssrc: SOURCE_SSRC,
                    seq: p.seq,
                    pt: PT.into(),
                    timestamp: 90_000 + 3000 * i as u32,
                    marker: p.marker,
                    payload: Arc::from(p.payload),
                    ext: Default::default(),
                    at,
                })
                .collect()
        })
        .collect()
}

/// One rung frame as a viewer reassembles it.
struct RungFrame {
    ts: u32,
    idr: bool,
    size: (usize, usize),
    sei: Vec<Vec<u8>>,
}

/// Feeds the frames; returns per rid the rung frames, decoded.
fn run(ladder: &mut Ladder, frames: &[Vec<MediaPacket>]) -> Vec<(Rid, Vec<RungFrame>)> {
    let mut by_rid: Vec<(Rid, Vec<MediaPacket>)> =
        ladder.rids().into_iter().map(|r| (r, Vec::new())).collect();
    for f in frames {
        for p in f {
            for out in ladder.push(p).packets {
                assert!(out.payload.len() <= crate::packetize::MAX_PAYLOAD);
                let rid = out.rid.expect("a rung packet has a rid");
                by_rid
                    .iter_mut()
                    .find(|(r, _)| *r == rid)
                    .unwrap()
                    .1
                    .push(out);
            }
        }
    }
    by_rid
        .into_iter()
        .map(|(rid, packets)| (rid, decode(&packets)))
        .collect()
}

fn decode(packets: &[MediaPacket]) -> Vec<RungFrame> {
    let mut d = Depacketizer::new(DepacketizerCodec::H264);
    let mut dec = Decoder::new().unwrap();
    let mut ssrcs: Vec<u32> = packets.iter().map(|p| p.ssrc).collect();
    ssrcs.dedup();
    assert!(ssrcs.len() <= 1, "one SSRC per rung");
    let mut out = Vec::new();
    for p in packets {
        for f in d.push(p.seq, p.timestamp, p.marker, &p.payload).frames {
            let nals = split_avcc(&f.data).unwrap();
            let pic = dec
                .decode(&annex_b(&nals))
                .expect("a rung frame decodes")
                .expect("a rung frame is a picture");
            out.push(RungFrame {
                ts: f.rtp_ts as u32,
                idr: nals.iter().any(|n| nal_type(n) == Some(NAL_IDR)),
                size: pic.dimensions(),
                sei: nals
                    .iter()
                    .filter(|n| nal_type(n) == Some(NAL_SEI))
                    .map(|n| n.to_vec())
                    .collect(),
            });
        }
    }
    out
}

#[test]
fn a_720p_source_gets_360p_and_180p_rungs_frame_for_frame() {
    let mut ladder = Ladder::new(&TranscodeConfig::default().rungs, 7);
    assert_eq!(
        ladder.set_source(&[video_track(&[], SdpCodec::H264)], true),
        Transcodable::Yes
    );
    let frames = source(1280, 720, 6, &[0]);
    let rungs = run(&mut ladder, &frames);
    assert_eq!(rungs.len(), 2);
    for (rid, got) in &rungs {
        let want = if rid.to_string() == "m" {
            (640, 360)
        } else {
            (320, 180)
        };
        assert_eq!(got.len(), 6, "rung {rid}: one frame per source frame");
        for (i, f) in got.iter().enumerate() {
            assert_eq!(f.size, want, "rung {rid} frame {i}");
            assert_eq!(
                f.ts,
                90_000 + 3000 * i as u32,
                "rung {rid} frame {i} keeps the source's timestamp"
            );
            assert_eq!(
                f.sei,
                [sei(i as u64)],
                "rung {rid} frame {i} carries the source's SEI"
            );
        }
    }
    let s = ladder.stats();
    assert_eq!(
        (s.frames_in, s.frames_decoded, s.frames_out, s.decode_errors),
        (6, 6, 12, 0)
    );
}

/// Small pictures, so the debug build stays quick: 320×240 into 160×120
/// and 80×60.
fn small_ladder(seed: u32) -> Ladder {
    let rung = |rid: &str, w, h| RungConfig {
        rid: rid.into(),
        width: w,
        height: h,
        bitrate_kbps: 100,
        codec: crate::RungCodec::H264,
    };
    let mut l = Ladder::new(&[rung("m", 160, 120), rung("l", 80, 60)], seed);
    assert_eq!(
        l.set_source(&[video_track(&[], SdpCodec::H264)], true),
        Transcodable::Yes
    );
    l
}

#[test]
fn rung_keyframes_fall_where_the_source_has_them_and_nowhere_else() {
    let mut ladder = small_ladder(1);
    let idr = [0, 5, 11];
    let rungs = run(&mut ladder, &source(320, 240, 15, &idr));
    for (rid, got) in &rungs {
        assert_eq!(got.len(), 15);
        let idrs: Vec<usize> = (0..15).filter(|&i| got[i].idr).collect();
        assert_eq!(idrs, idr, "rung {rid}");
    }
}

#[test]
fn a_viewers_keyframe_request_makes_an_idr_on_its_rung_only() {
    let mut ladder = small_ladder(2);
    let frames = source(320, 240, 8, &[0]);
    let (first, rest) = frames.split_at(4);
    let before = run(&mut ladder, first);
    ladder.request_keyframe(Some(Rid::from("l")));
    let after = run(&mut ladder, rest);
    assert!(before.iter().all(|(_, f)| f.len() == 4 && f[0].idr));
    for (rid, got) in &after {
        // (Decoded alone: the "m" rung's P frames need the frames before.)
        let idrs: Vec<usize> = (0..got.len()).filter(|&i| got[i].idr).collect();
        if rid.to_string() == "l" {
            assert_eq!(idrs, [0], "the l rung answers at once");
            assert_eq!(got.len(), 4);
        } else {
            assert!(idrs.is_empty(), "the m rung is not disturbed");
        }
    }
}

#[test]
fn rungs_not_smaller_than_the_source_are_left_out() {
    let mut ladder = Ladder::new(&TranscodeConfig::default().rungs, 3);
    ladder.set_source(&[video_track(&[], SdpCodec::H264)], true);
    let rungs = run(&mut ladder, &source(640, 360, 3, &[0]));
    let count = |rid: &str| {
        rungs
            .iter()
            .find(|(r, _)| r.to_string() == rid)
            .unwrap()
            .1
            .len()
    };
    assert_eq!(count("m"), 0);
    assert_eq!(count("l"), 3);
}

#[test]
fn simulcast_and_other_codecs_are_not_transcoded() {
    let mut ladder = Ladder::new(&TranscodeConfig::default().rungs, 4);
    assert_eq!(
        ladder.set_source(&[video_track(&["h", "m", "l"], SdpCodec::H264)], true),
        Transcodable::Simulcast
    );
    assert_eq!(
        ladder.set_source(&[video_track(&[], SdpCodec::Vp8)], true),
        Transcodable::NotH264
    );
    assert_eq!(ladder.set_source(&[], true), Transcodable::NoVideo);
    // Nothing is made from packets of a stream it does not follow.
    let frames = source(320, 240, 2, &[0]);
    assert!(
        frames
            .iter()
            .flatten()
            .all(|p| ladder.push(p).packets.is_empty())
    );
}

#[test]
fn garbage_nal_units_are_counted_never_a_panic_and_the_next_keyframe_recovers() {
    let mut ladder = small_ladder(5);
    let at = Instant::now();
    let mut seq = 1;
    let mut garbage = |payload: Vec<u8>, ts: u32| {
        seq += 1;
        MediaPacket {
            mid: "1".into(),
            rid: None,
            ssrc: 99,
            seq,
            pt: PT.into(),
            timestamp: ts,
            marker: true,
            payload: Arc::from(payload),
            ext: Default::default(),
            at,
        }
    };
    // An "IDR" of noise, an SPS of noise, a FU-A that never ends, an empty
    // payload, a STAP-A whose lengths lie.
    let noise: Vec<u8> = (0..900u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut idr = vec![0x65];
    idr.extend(&noise);
    let mut sps = vec![0x67, 0x42, 0xff];
    sps.extend(&noise[..40]);
    let inputs = [
        sps.clone(),
        idr.clone(),
        vec![0x7c, 0x85, 1, 2, 3],
        Vec::new(),
        vec![0x78, 0, 200, 0x65, 1],
        [sps, idr].concat(),
    ];
    for (i, payload) in inputs.into_iter().enumerate() {
        let made = ladder.push(&garbage(payload, 3000 * i as u32)).packets;
        assert!(made.len() < 64, "no runaway output from garbage");
    }
    assert!(ladder.stats().malformed >= 2, "{:?}", ladder.stats());
    assert_eq!(ladder.stats().frames_decoded, 0);
    // Parameter sets that parse, in front of a slice of noise: the
    // decoder gets it and refuses it.
    let real = source(320, 240, 1, &[0]);
    let mut au = Vec::new();
    let mut whole = Depacketizer::new(DepacketizerCodec::H264);
    for p in &real[0] {
        au.extend(whole.push(p.seq, p.timestamp, p.marker, &p.payload).frames);
    }
    let nals = split_avcc(&au[0].data).unwrap();
    let mut corrupt_idr = vec![0x65, 0x88, 0x84];
    corrupt_idr.extend(&noise);
    for (i, n) in [nals[1], nals[2], &corrupt_idr].into_iter().enumerate() {
        let mut p = garbage(n.to_vec(), 40_000);
        p.marker = i == 2;
        let _ = ladder.push(&p);
    }
    let s = ladder.stats();
    assert!(
        s.frames_in == 1 && s.decode_errors == 1 && s.frames_out == 0,
        "{s:?}"
    );
    // The same ladder then follows a real source (new SSRC) from its IDR.
    let rungs = run(&mut ladder, &source(320, 240, 4, &[0]));
    for (rid, got) in &rungs {
        assert_eq!(got.len(), 4, "rung {rid} recovers on the next keyframe");
    }
    assert!(ladder.stats().frames_in >= 4);
}

/// The rungs' bitrate follows the configured one whatever the source's
/// frame rate: the encoder's rate control is told each frame's time.
#[test]
fn rung_bitrates_hold_at_15_and_30_fps() {
    let rung = |rid: &str, w, h, kbps| RungConfig {
        rid: rid.into(),
        width: w,
        height: h,
        bitrate_kbps: kbps,
        codec: crate::RungCodec::H264,
    };
    let targets = [100.0, 30.0];
    for fps in [15u32, 30] {
        let mut ladder = Ladder::new(&[rung("m", 160, 120, 100), rung("l", 80, 60, 30)], 6);
        ladder.set_source(&[video_track(&[], SdpCodec::H264)], true);
        let n = (fps * 6) as usize;
        let step = 90_000 / fps;
        let frames: Vec<Vec<MediaPacket>> = source(320, 240, n, &[0])
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                f.into_iter()
                    .map(|mut p| {
                        p.timestamp = 90_000 + step * i as u32;
                        p
                    })
                    .collect()
            })
            .collect();
        let mut bytes = [0usize; 2];
        // The last 4 s: after the rate control settled.
        for (i, f) in frames.iter().enumerate() {
            for p in f {
                for o in ladder.push(p).packets {
                    if i >= (fps * 2) as usize {
                        let k = usize::from(o.rid == Some(Rid::from("l")));
                        bytes[k] += o.payload.len();
                    }
                }
            }
        }
        let kbps = bytes.map(|b| b as f64 * 8.0 / 4.0 / 1000.0);
        for (k, want) in kbps.into_iter().zip(targets) {
            assert!(
                (want * 0.65..=want * 1.35).contains(&k),
                "{fps} fps: {k:.0} kbit/s for a {want} kbit/s rung"
            );
        }
    }
}

/// A ladder of one H.264 rung `l` and one AV1 rung `a`, 80x60 each, over
/// a description whose video lists AV1 (PT 45) for layers a sink makes
/// when `av1` is set.
fn av1_ladder(av1: bool) -> Ladder {
    let rung = |rid: &str, codec| RungConfig {
        rid: rid.into(),
        width: 80,
        height: 60,
        bitrate_kbps: 100,
        codec,
    };
    let mut l = Ladder::new(
        &[
            rung("l", crate::RungCodec::H264),
            rung("a", crate::RungCodec::Av1),
        ],
        7,
    );
    let mut track = video_track(&[], SdpCodec::H264);
    if av1 {
        let spec = CodecSpec {
            codec: SdpCodec::Av1,
            clock_rate: Frequency::NINETY_KHZ,
            channels: None,
            format: FormatParams::default(),
        };
        track.params.push(PayloadParams::new(45.into(), None, spec));
    }
    assert_eq!(l.set_source(&[track], true), Transcodable::Yes);
    l
}

#[test]
fn an_av1_rung_is_packetized_with_the_av1_payload_type_and_the_source_timestamps() {
    let mut ladder = av1_ladder(true);
    let frames = source(320, 240, 20, &[0, 10]);
    let mut av1: Vec<MediaPacket> = Vec::new();
    let mut h264 = 0;
    for p in frames.iter().flatten() {
        let pushed = ladder.push(p);
        assert!(pushed.av1_jobs.is_empty(), "inline: no jobs");
        for out in pushed.packets {
            assert!(out.payload.len() <= crate::packetize::MAX_PAYLOAD);
            match out.rid.map(|r| r.to_string()).as_deref() {
                Some("a") => av1.push(out),
                Some("l") => {
                    assert_eq!(out.pt, Pt::from(PT));
                    h264 += 1;
                }
                other => panic!("a packet of {other:?}"),
            }
        }
    }
    assert!(h264 > 0);
    // rav1e holds a few frames back; the rest came, in order, each with
    // the timestamp of its own source frame.
    assert!(av1.iter().all(|p| p.pt == Pt::from(45)));
    let frames_ts: Vec<u32> = av1
        .iter()
        .filter(|p| p.marker)
        .map(|p| p.timestamp)
        .collect();
    assert!(frames_ts.len() >= 14, "{} AV1 frames", frames_ts.len());
    let expected: Vec<u32> = (0..frames_ts.len() as u32)
        .map(|i| 90_000 + 3000 * i)
        .collect();
    assert_eq!(frames_ts, expected);
    // Key frames (N bit on a frame's first packet) where the source had
    // its IDRs.
    let mut keys = Vec::new();
    let mut first = true;
    for p in &av1 {
        if first && lumen_sfu::is_keyframe_start(lumen_sfu::VideoCodec::Av1, &p.payload) {
            keys.push((p.timestamp - 90_000) / 3000);
        }
        first = p.marker;
    }
    assert_eq!(keys, [0, 10]);
    // The payloads reassemble into OBUs (no temporal delimiter).
    let frame0: Vec<&[u8]> = av1
        .iter()
        .take_while(|p| p.timestamp == 90_000)
        .map(|p| &p.payload[..])
        .collect();
    let obus = crate::av1_packetize::tests::depacketize(&frame0);
    assert_eq!(
        crate::av1_packetize::obu_type(&obus[0]),
        crate::av1_packetize::OBU_SEQUENCE_HEADER
    );
    let s = ladder.stats();
    assert_eq!(s.frames_out, 20 + frames_ts.len() as u64);
}

#[test]
fn an_av1_rung_is_left_out_when_the_sfu_carries_no_av1_and_detached_it_makes_jobs() {
    let mut ladder = av1_ladder(false);
    let frames = source(320, 240, 3, &[0]);
    for p in frames.iter().flatten() {
        let pushed = ladder.push(p);
        assert!(pushed.av1_jobs.is_empty());
        assert!(pushed.packets.iter().all(|p| p.rid == Some(Rid::from("l"))));
    }

    // Taken by the runtime: pictures come out as jobs, with the keyframe
    // flag of the source's IDR and of a viewer's request.
    let mut ladder = av1_ladder(true);
    let rungs = ladder.detach_av1();
    assert_eq!(rungs.len(), 1);
    let mut jobs = Vec::new();
    for (i, f) in source(320, 240, 4, &[0]).iter().enumerate() {
        if i == 2 {
            ladder.request_keyframe(Some(Rid::from("a")));
        }
        for p in f {
            let pushed = ladder.push(p);
            assert!(pushed.packets.iter().all(|p| p.rid == Some(Rid::from("l"))));
            jobs.extend(pushed.av1_jobs);
        }
    }
    assert_eq!(
        jobs.iter().map(|j| j.keyframe).collect::<Vec<_>>(),
        [true, false, true, false]
    );
    assert!(
        jobs.iter()
            .all(|j| (j.picture.width, j.picture.height) == (80, 60))
    );
    assert!(jobs.iter().all(|j| j.pt == Pt::from(45)));
}
