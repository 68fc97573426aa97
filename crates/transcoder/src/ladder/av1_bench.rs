//! The AV1 rung against the H.264 rung: quality per bit and encode speed
//! on this machine, to decide whether AV1 rungs are on by default. A
//! measurement, not a test:
//!
//! `cargo test -p lumen-transcoder --lib av1_bench -- --ignored --nocapture --test-threads 1`
//!
//! The same frames ([`camera`]: a panning texture and a moving block, 720p,
//! scaled down with the ladder's own scaler) go through the ladder's own
//! encoders at the same bitrate: openh264 as an H.264 rung is made, rav1e
//! as an AV1 rung is made (low-latency, speed 10). Quality is the PSNR of
//! what a viewer's decoder shows against the scaled source: the H.264
//! frames decoded with openh264, the AV1 frames from rav1e's own
//! reconstruction (`Packet::rec`, bit-exact with what a decoder shows) as
//! no AV1 decoder is in the tree. Bytes are what RTP carries (NAL units;
//! OBUs without temporal delimiters and size fields), without RTP headers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::bench::{camera, source_packets, thread_cpu};
use super::*;
use crate::TranscodeConfig;
use crate::av1::{Av1Encoder, Av1Frame};
use crate::av1_packetize::obus_for_rtp;

/// Frames per size: 10 s at 320x180, 5 s at 640x360 (rav1e without
/// assembly takes a while).
const FRAMES: [usize; 2] = [300, 150];
const FPS: f64 = 30.0;

/// One encode of the frames.
struct Row {
    what: String,
    frames_out: usize,
    /// Wall time spent in the encoder (all its threads).
    wall: Duration,
    /// CPU of the whole process while it encoded (rav1e runs on its own
    /// pool threads; in the loaded rows this includes the H.264 ladder).
    cpu: Duration,
    bytes: usize,
    psnr_y: f64,
    psnr_yuv: f64,
    /// Frames the encoder held back before writing the first.
    delay_frames: usize,
}

impl Row {
    fn print(&self) {
        let media = self.frames_out as f64 / FPS;
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} | {:.2} | {} |",
            self.what,
            self.frames_out,
            self.frames_out as f64 / self.wall.as_secs_f64(),
            self.wall.as_secs_f64() * 1e3 / self.frames_out as f64,
            self.cpu.as_secs_f64() * 1e3 / self.frames_out as f64,
            self.bytes as f64 * 8.0 / media / 1000.0,
            self.psnr_y,
            self.psnr_yuv,
            self.delay_frames,
        );
    }
}

/// CPU time of the whole process (`/proc/self/stat`, utime + stime).
fn process_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the line.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    let ticks = f.iter().sum::<u64>();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn sources(size: (usize, usize), frames: usize) -> Vec<Picture> {
    (0..frames)
        .map(|n| {
            let src = camera(n);
            let mut p = Picture::new(size.0, size.1);
            scale_i420(&src.planes(), &mut p).unwrap();
            p
        })
        .collect()
}

fn mse(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (i64::from(*x) - i64::from(*y)).pow(2) as u64)
        .sum();
    sum as f64 / a.len() as f64
}

fn psnr_of(mse: f64) -> f64 {
    if mse <= 0.0 {
        100.0
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

/// (Y PSNR, YUV PSNR weighted 6:1:1) of a picture against its source.
fn psnr(src: &Picture, shown: &Picture) -> (f64, f64) {
    let (y, u, v) = (
        mse(&src.y, &shown.y),
        mse(&src.u, &shown.u),
        mse(&src.v, &shown.v),
    );
    (psnr_of(y), psnr_of((6.0 * y + u + v) / 8.0))
}

fn h264(size: (usize, usize), kbps: u32, pics: &[Picture]) -> Row {
    let mut ladder = Ladder::new(
        &[RungConfig {
            rid: "x".into(),
            width: size.0 as u32,
            height: size.1 as u32,
            bitrate_kbps: kbps,
            codec: crate::RungCodec::H264,
        }],
        1,
    );
    let rung = &mut ladder.rungs[0];
    let mut dec = Decoder::new().unwrap();
    let (mut wall, mut cpu, mut bytes) = (Duration::ZERO, Duration::ZERO, 0);
    let (mut sum_y, mut sum_yuv, mut n) = (0.0, 0.0, 0);
    for (i, pic) in pics.iter().enumerate() {
        rung.picture = pic.clone();
        let (t, c) = (Instant::now(), thread_cpu());
        let enc = rung
            .encode(size, FPS as f32, i == 0, 3000 * i as u32, &[])
            .unwrap()
            .expect("a frame per picture");
        wall += t.elapsed();
        cpu += thread_cpu() - c;
        bytes += enc.nals.iter().map(Vec::len).sum::<usize>();
        let refs: Vec<&[u8]> = enc.nals.iter().map(Vec::as_slice).collect();
        let yuv = dec.decode(&annex_b(&refs)).unwrap().expect("a picture");
        let mut shown = Picture::new(size.0, size.1);
        let (w, h) = yuv.dimensions();
        assert_eq!((w, h), size);
        let (sy, su, _) = yuv.strides();
        let cw = w.div_ceil(2);
        for r in 0..h {
            shown.y[r * w..(r + 1) * w].copy_from_slice(&yuv.y()[r * sy..r * sy + w]);
        }
        for r in 0..h.div_ceil(2) {
            shown.u[r * cw..(r + 1) * cw].copy_from_slice(&yuv.u()[r * su..r * su + cw]);
            shown.v[r * cw..(r + 1) * cw].copy_from_slice(&yuv.v()[r * su..r * su + cw]);
        }
        let (y, yuv) = psnr(pic, &shown);
        sum_y += y;
        sum_yuv += yuv;
        n += 1;
    }
    Row {
        what: format!("H.264 openh264 {}x{} {kbps} kbit/s", size.0, size.1),
        frames_out: n,
        wall,
        cpu,
        bytes,
        psnr_y: sum_y / n as f64,
        psnr_yuv: sum_yuv / n as f64,
        delay_frames: 0,
    }
}

fn av1(size: (usize, usize), kbps: u32, threads: usize, pics: &[Picture], note: &str) -> Row {
    let mut enc = Av1Encoder::new(size, kbps * 1000, FPS as f32, threads).unwrap();
    let (mut wall, mut cpu, mut bytes) = (Duration::ZERO, Duration::ZERO, 0);
    let (mut sum_y, mut sum_yuv, mut n) = (0.0, 0.0, 0);
    let mut delay_frames = None;
    let mut count = |frames: Vec<Av1Frame>, sent: usize| {
        for f in frames {
            delay_frames.get_or_insert(sent - 1);
            bytes += obus_for_rtp(&f.data)
                .unwrap()
                .iter()
                .map(Vec::len)
                .sum::<usize>();
            let i = (f.ts / 3000) as usize;
            let rec = f.rec.expect("a reconstruction");
            let mut shown = Picture::new(size.0, size.1);
            let cw = size.0.div_ceil(2);
            rec.planes[0].copy_to_raw_u8(&mut shown.y, size.0, 1);
            rec.planes[1].copy_to_raw_u8(&mut shown.u, cw, 1);
            rec.planes[2].copy_to_raw_u8(&mut shown.v, cw, 1);
            let (y, yuv) = psnr(&pics[i], &shown);
            sum_y += y;
            sum_yuv += yuv;
            n += 1;
        }
    };
    for (i, pic) in pics.iter().enumerate() {
        let (t, c) = (Instant::now(), process_cpu());
        let out = enc.encode(pic, i == 0, 3000 * i as u32).unwrap();
        wall += t.elapsed();
        cpu += process_cpu() - c;
        count(out, i + 1);
    }
    let (t, c) = (Instant::now(), process_cpu());
    let rest = enc.finish().unwrap();
    wall += t.elapsed();
    cpu += process_cpu() - c;
    count(rest, pics.len());
    Row {
        what: format!(
            "AV1 rav1e speed 10 {}x{} {kbps} kbit/s, {threads} thread{}{note}",
            size.0,
            size.1,
            if threads == 1 { "" } else { "s" }
        ),
        frames_out: n,
        wall,
        cpu,
        bytes,
        psnr_y: sum_y / n as f64,
        psnr_yuv: sum_yuv / n as f64,
        delay_frames: delay_frames.unwrap_or(0),
    }
}

/// The default H.264 ladder on a 720p30 source, paced at 30 fps on its own
/// thread, until `stop`: the load an AV1 rung shares the machine with.
fn ladder_in_background(ready: &AtomicBool, stop: &AtomicBool) {
    let (frames, _) = source_packets();
    ready.store(true, Ordering::Relaxed);
    let mut ladder = Ladder::new(&TranscodeConfig::default().rungs, 3);
    ladder.set_source(&[tests::video_track(&[], str0m::format::Codec::H264)], true);
    let start = Instant::now();
    let frame = Duration::from_secs_f64(1.0 / FPS);
    let mut k = 0u32;
    while !stop.load(Ordering::Relaxed) {
        for (i, f) in frames.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            for p in f {
                let mut p = p.clone();
                // Loops go on in time and numbering.
                p.seq += u64::from(k) * 100_000;
                p.timestamp = p.timestamp.wrapping_add(k * 3000 * frames.len() as u32);
                let _ = ladder.push(&p);
            }
            let due = start + frame * (k * frames.len() as u32 + i as u32 + 1);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        k += 1;
    }
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn av1_bench_quality_per_bit_and_speed_against_h264() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average before: {}", load.trim());
    println!("a moving 720p picture, scaled; 30 fps timestamps; PSNR against the scaled source");
    println!(
        "| encoder | frames | encode fps (wall) | wall ms/frame | CPU ms/frame | kbit/s | PSNR Y dB | PSNR YUV dB | frames held back |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (size, kbps, frames) in [((320, 180), 200, FRAMES[0]), ((640, 360), 800, FRAMES[1])] {
        let pics = sources(size, frames);
        h264(size, kbps, &pics).print();
        av1(size, kbps, 1, &pics, "").print();
        av1(size, kbps, 2, &pics, "").print();
        // With the default H.264 ladder of a 720p30 source running.
        let (ready, stop) = (AtomicBool::new(false), AtomicBool::new(false));
        std::thread::scope(|s| {
            s.spawn(|| ladder_in_background(&ready, &stop));
            // Its source is encoded first.
            while !ready.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            std::thread::sleep(Duration::from_secs(1));
            av1(size, kbps, 1, &pics, ", H.264 ladder running").print();
            stop.store(true, Ordering::Relaxed);
        });
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
}
