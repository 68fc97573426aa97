use std::sync::Arc;

use openh264::encoder::Encoder;
use openh264::formats::{RgbSliceU8, YUVBuffer};
use str0m::format::{CodecSpec, FormatParams, PayloadParams};
use str0m::media::Frequency;
use str0m::rtp::ExtensionValues;

use super::*;
use crate::mux::parse_fragment_index;

const VIDEO_PT: u8 = 102;
const AUDIO_PT: u8 = 111;

fn track(kind: MediaKind, mid: &str, rids: &[&str]) -> TrackDescription {
    let (codec, pt, rate, channels) = match kind {
        MediaKind::Video => (SdpCodec::H264, VIDEO_PT, Frequency::NINETY_KHZ, None),
        MediaKind::Audio => (
            SdpCodec::Opus,
            AUDIO_PT,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
        ),
    };
    let spec = CodecSpec {
        codec,
        clock_rate: rate,
        channels,
        format: FormatParams::default(),
    };
    TrackDescription {
        mid: mid.into(),
        kind,
        params: vec![PayloadParams::new(pt.into(), None, spec)],
        rids: rids.iter().map(|r| (*r).into()).collect(),
    }
}

/// `frames` access units of a `w`×`h` picture, the first an IDR, as lists
/// of NAL units (SPS and PPS in front of the IDR, as encoders send them).
fn access_units(w: usize, h: usize, frames: usize) -> Vec<Vec<Vec<u8>>> {
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
    let yuv = YUVBuffer::from_rgb_source(RgbSliceU8::new(&rgb, (w, h)));
    let mut enc = Encoder::new().expect("encoder");
    (0..frames)
        .map(|_| {
            let bits = enc.encode(&yuv).expect("encode");
            let mut nals = Vec::new();
            for layer in 0..bits.num_layers() {
                let Some(layer) = bits.layer(layer) else {
                    continue;
                };
                for i in 0..layer.nal_count() {
                    let Some(nal) = layer.nal_unit(i) else {
                        continue;
                    };
                    let start = if nal.starts_with(&[0, 0, 0, 1]) { 4 } else { 3 };
                    nals.push(nal[start..].to_vec());
                }
            }
            nals
        })
        .collect()
}

/// A sender of RTP packets on one track, one packet per NAL unit.
struct Sender {
    mid: Mid,
    rid: Option<Rid>,
    pt: u8,
    seq: u64,
}

impl Sender {
    fn new(mid: &str, rid: Option<&str>, pt: u8) -> Self {
        Sender {
            mid: mid.into(),
            rid: rid.map(Into::into),
            pt,
            seq: 100,
        }
    }

    fn frame(&mut self, nals: &[Vec<u8>], ts: u32, at: Instant) -> Vec<MediaPacket> {
        let n = nals.len();
        nals.iter()
            .enumerate()
            .map(|(i, nal)| {
                self.seq += 1;
                MediaPacket {
                    mid: self.mid,
                    rid: self.rid,
                    ssrc: 1,
                    seq: self.seq,
                    pt: self.pt.into(),
                    timestamp: ts,
                    marker: i + 1 == n,
                    payload: Arc::from(nal.as_slice()),
                    ext: ExtensionValues::default(),
                    at,
                }
            })
            .collect()
    }
}

fn wall(at: Instant) -> (Instant, SystemTime) {
    (at, SystemTime::now())
}

#[test]
fn the_largest_simulcast_layer_is_recorded_from_its_keyframe() {
    let small = access_units(160, 120, 40);
    let large = access_units(320, 240, 40);
    let mut p = Pipeline::default();
    p.bind(&[track(MediaKind::Video, "0", &["q", "f"])]);
    p.start_recording();
    let (mut q, mut f) = (
        Sender::new("0", Some("q"), VIDEO_PT),
        Sender::new("0", Some("f"), VIDEO_PT),
    );
    let t0 = Instant::now();
    let mut out = Vec::new();
    for i in 0..40 {
        let at = t0 + Duration::from_millis(i as u64 * 33);
        let ts = 3000 * i as u32;
        let mut batch = q.frame(&small[i], ts, at);
        batch.extend(f.frame(&large[i], ts, at));
        out.push(p.packets(batch, wall(at)));
    }
    assert_eq!(p.layer(), Some("f".into()));
    let init = out
        .iter()
        .find_map(|o| o.init.clone())
        .expect("an init segment");
    let mut end = p.stop_recording();
    let fragments: Vec<Fragment> = out
        .iter_mut()
        .flat_map(|o| std::mem::take(&mut o.fragments))
        .chain(std::mem::take(&mut end.fragments))
        .collect();
    assert!(!fragments.is_empty());
    let index = parse_fragment_index(&init, &fragments[0].bytes).expect("index");
    assert!(index.keyframe_start);
    let samples: usize = fragments
        .iter()
        .map(|f| {
            f.index
                .tracks
                .iter()
                .map(|t| t.samples.len())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(samples, 40, "every frame of the large layer");
    // The recording's poster is the large layer's first keyframe.
    assert!(out.iter().any(|o| o.thumbnail_recording));
    let (codec, au) = out
        .iter()
        .find_map(|o| o.thumbnail.clone())
        .expect("keyframe");
    assert_eq!(codec, crate::depacketize::Codec::H264);
    let jpeg = crate::thumbnail::h264_jpeg(&au, 1000).expect("decodes");
    let mut d = jpeg_decoder::Decoder::new(&jpeg[..]);
    d.decode().expect("jpeg");
    assert_eq!(d.info().map(|i| (i.width, i.height)), Some((320, 240)));
}

#[test]
fn after_a_gap_video_waits_for_a_keyframe_and_asks_for_one() {
    let aus = access_units(160, 120, 30);
    let mut p = Pipeline::default();
    p.bind(&[track(MediaKind::Video, "0", &[])]);
    p.start_recording();
    let mut s = Sender::new("0", None, VIDEO_PT);
    let t0 = Instant::now();
    let at = |i: usize| t0 + Duration::from_millis(i as u64 * 33);
    let mut frames = 0;
    for (i, au) in aus.iter().enumerate().take(10) {
        let o = p.packets(s.frame(au, 3000 * i as u32, at(i)), wall(at(i)));
        frames += o.fragments.len();
    }
    let gap = p.gap();
    assert!(gap.keyframe_request);
    s.seq += 50; // the batches the feed dropped
    let mut asked = false;
    for (i, au) in aus.iter().enumerate().take(20).skip(10) {
        let o = p.packets(s.frame(au, 3000 * i as u32, at(i)), wall(at(i)));
        asked |= o.keyframe_request;
    }
    assert!(asked, "asks again while it waits");
    assert!(
        p.skipped() >= 9,
        "delta frames after the gap are dropped: {}",
        p.skipped()
    );
    // The keyframe comes: recording goes on from it.
    let key = access_units(160, 120, 1);
    let o = p.packets(s.frame(&key[0], 3000 * 20, at(20)), wall(at(20)));
    assert!(!o.keyframe_request);
    let end = p.stop_recording();
    frames += end.fragments.len();
    assert!(frames >= 1);
    let last = end.fragments.last().expect("a last fragment");
    let video = &last.index.tracks[0];
    let first_sync = video.samples.iter().position(|s| s.sync);
    assert!(
        first_sync.is_some(),
        "the keyframe after the gap is written"
    );
    assert!(p.skipped() < 20);
}

#[test]
fn a_stream_without_video_keyframes_is_recorded_audio_only() {
    let mut p = Pipeline::default();
    p.bind(&[
        track(MediaKind::Video, "0", &[]),
        track(MediaKind::Audio, "1", &[]),
    ]);
    p.start_recording();
    let mut a = Sender::new("1", None, AUDIO_PT);
    let t0 = Instant::now();
    let mut init = None;
    for i in 0..400u32 {
        let at = t0 + Duration::from_millis(u64::from(i) * 20);
        let o = p.packets(a.frame(&[vec![0xfc, 1, 2]], i * 960, at), wall(at));
        init = init.or(o.init);
    }
    let init = init.expect("an audio-only recording began");
    let end = p.stop_recording();
    let last = end.fragments.last().expect("fragments");
    let index = parse_fragment_index(&init, &last.bytes).expect("index");
    assert_eq!(index.tracks.len(), 1);
    assert_eq!(index.tracks[0].timescale, 48_000);
}

#[test]
fn a_clock_places_the_first_frame_by_arrival_and_follows_rtp_across_the_wrap() {
    let mut c = Clock::default();
    let start = u32::MAX - 1500;
    assert_eq!(c.dts(start, Duration::from_millis(100), 90_000), 9000);
    assert_eq!(
        c.dts(start.wrapping_add(3000), Duration::ZERO, 90_000),
        12_000
    );
    // Earlier than the first: saturates (the muxer drops it).
    let mut c = Clock::default();
    assert_eq!(c.dts(10_000, Duration::ZERO, 90_000), 0);
    assert_eq!(c.dts(7_000, Duration::ZERO, 90_000), 0);
}

#[test]
fn parameter_sets_are_put_in_front_once() {
    let idr = [0, 0, 0, 2, 0x65, 1];
    let au = with_parameter_sets(&idr, Some(&[0x67, 9]), Some(&[0x68, 8]));
    assert_eq!(nal_types(&au).collect::<Vec<_>>(), [7, 8, 5]);
    assert_eq!(with_parameter_sets(&au, Some(&[0x67]), None), au);
}
