//! What a ladder costs: CPU for a 720p30 source made into the default
//! 360p + 180p rungs, and the time from the source frame's last packet to
//! its rung packets (the latency a rung adds over the source, before the
//! two channel hops of the node). A measurement, not a test:
//!
//! `cargo test -p lumen-transcoder --lib bench -- --ignored --nocapture`
//!
//! (The dev profile builds this crate and every dependency at opt-level 2,
//! see the workspace's Cargo.toml.)

use std::time::{Duration, Instant};

use openh264::decoder::Decoder;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, RateControlMode};

use super::*;
use crate::TranscodeConfig;

const W: usize = 1280;
const H: usize = 720;
const FPS: u32 = 30;
const FRAMES: usize = 300;

/// CPU time this thread has used (Linux: `/proc/thread-self/schedstat`).
pub(super) fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = s
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// Camera-like content: a fine texture that pans, and a bright block
/// that moves across it (harder to encode than lumen's test pattern).
pub(super) fn camera(n: usize) -> Picture {
    let mut p = Picture::new(W, H);
    for (i, y) in p.y.iter_mut().enumerate() {
        let (x, row) = (i % W + n * 3, i / W + n);
        let h = (x as u32 / 3).wrapping_mul(2_654_435_761) ^ (row as u32 / 3).wrapping_mul(40_503);
        *y = 40 + (h >> 26) as u8 * 2 + ((x + row) % 64) as u8;
    }
    let bx = (n * 8) % (W - 200);
    for row in 260..460 {
        p.y[row * W + bx..row * W + bx + 200].fill(230);
    }
    for (i, c) in p.u.iter_mut().enumerate() {
        *c = 100 + ((i + n) % 56) as u8;
    }
    p
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The source: `FRAMES` frames of [`camera`] at 2.5 Mbit/s, an IDR every
/// 2 s, packetized as a publisher would; and its size in bytes.
pub(super) fn source_packets() -> (Vec<Vec<MediaPacket>>, usize) {
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(2_500_000))
        .max_frame_rate(FrameRate::from_hz(FPS as f32))
        .rate_control_mode(RateControlMode::Bitrate)
        .scene_change_detect(false)
        .skip_frames(false);
    let mut enc = Encoder::with_api_config(OpenH264API::from_source(), config).unwrap();
    let mut pk = Packetizer::new(1);
    let at = Instant::now();
    let mut source_bytes = 0;
    let frames: Vec<Vec<MediaPacket>> = (0..FRAMES)
        .map(|i| {
            if i % 60 == 0 {
                enc.force_intra_frame();
            }
            let raw = enc.encode(&camera(i)).unwrap().to_vec();
            source_bytes += raw.len();
            pk.packetize(&split_annex_b(&raw))
                .into_iter()
                .map(|p| MediaPacket {
                    mid: "1".into(),
                    rid: None,
                    ssrc: 1,
                    seq: p.seq,
                    pt: 96.into(),
                    timestamp: 3000 * i as u32,
                    marker: p.marker,
                    payload: Arc::from(p.payload),
                    ext: Default::default(),
                    at,
                })
                .collect()
        })
        .collect();
    (frames, source_bytes)
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn bench_a_720p30_source_into_the_default_ladder() {
    let (frames, source_bytes) = source_packets();
    let media = Duration::from_secs_f64(FRAMES as f64 / f64::from(FPS));

    // Decoding alone: the part no ladder can avoid.
    let mut dec = Decoder::new().unwrap();
    let mut depack = Depacketizer::new(DepacketizerCodec::H264);
    let mut source_idrs = 0;
    let cpu0 = thread_cpu();
    for p in frames.iter().flatten() {
        for f in depack.push(p.seq, p.timestamp, p.marker, &p.payload).frames {
            source_idrs += u64::from(f.keyframe);
            let nals = split_avcc(&f.data).unwrap();
            let _ = dec.decode(&annex_b(&nals)).unwrap();
        }
    }
    let decode_cpu = thread_cpu() - cpu0;

    // The ladder: per frame, from its last packet in to its rungs out.
    let mut ladder = Ladder::new(&TranscodeConfig::default().rungs, 9);
    ladder.set_source(&[tests::video_track(&[], str0m::format::Codec::H264)], true);
    let mut per_frame = Vec::with_capacity(FRAMES);
    let mut per_frame_cpu = Vec::with_capacity(FRAMES);
    let mut rung_bytes = [0usize; 2];
    let cpu0 = thread_cpu();
    let wall0 = Instant::now();
    for f in &frames {
        for p in f {
            let (t, c) = (Instant::now(), thread_cpu());
            let out = ladder.push(p).packets;
            if p.marker {
                per_frame.push(t.elapsed());
                per_frame_cpu.push(thread_cpu() - c);
            }
            for o in out {
                let i = usize::from(o.rid.is_some_and(|r| r.to_string() == "l"));
                rung_bytes[i] += o.payload.len();
            }
        }
    }
    let ladder_cpu = thread_cpu() - cpu0;
    let wall = wall0.elapsed();
    per_frame.sort();
    per_frame_cpu.sort();
    let s = ladder.stats();
    assert_eq!(s.frames_out, 2 * FRAMES as u64, "{s:?}");
    let kbps = |b: usize| b as f64 * 8.0 / media.as_secs_f64() / 1000.0;
    println!(
        "source: {FRAMES} frames {W}x{H} at {FPS} fps ({:.1} s of media), {:.0} kbit/s",
        media.as_secs_f64(),
        kbps(source_bytes)
    );
    println!(
        "decode only: {:.3} s CPU = {:.3} cores",
        decode_cpu.as_secs_f64(),
        decode_cpu.as_secs_f64() / media.as_secs_f64()
    );
    println!(
        "ladder (decode + 640x360 + 320x180): {:.3} s CPU ({:.3} s wall) = {:.3} cores; {:.2}x decoding alone",
        ladder_cpu.as_secs_f64(),
        wall.as_secs_f64(),
        ladder_cpu.as_secs_f64() / media.as_secs_f64(),
        ladder_cpu.as_secs_f64() / decode_cpu.as_secs_f64().max(1e-9)
    );
    println!(
        "rungs: m {:.0} kbit/s, l {:.0} kbit/s; {} IDR on the rungs for {} in the source",
        kbps(rung_bytes[0]),
        kbps(rung_bytes[1]),
        s.keyframes_out,
        source_idrs
    );
    assert_eq!(
        s.keyframes_out,
        2 * source_idrs,
        "rung IDRs where the source has them"
    );
    println!(
        "per frame, last source packet to rung packets: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&per_frame, 0.5).as_secs_f64() * 1e3,
        percentile(&per_frame, 0.99).as_secs_f64() * 1e3,
        per_frame.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "per frame, CPU of that work: p50 {:.1} ms, p99 {:.1} ms (wall above CPU: the thread waited for a core)",
        percentile(&per_frame_cpu, 0.5).as_secs_f64() * 1e3,
        percentile(&per_frame_cpu, 0.99).as_secs_f64() * 1e3,
    );
}
