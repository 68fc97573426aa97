//! What recording one 2.5 Mbit/s stream costs: the process's CPU time and
//! resident memory while a publisher sends a synthetic 720p H.264 stream (real parameter
//! sets and IDR, 10.4 kB slices of filler: 30 fps × 10.4 kB = 2.5 Mbit/s)
//! plus Opus through a node, first without the recorder, then with it; the
//! difference is the recorder's (its sink feed in the worker included).
//! Ignored by default; run in release:
//!
//! ```text
//! cargo test -p lumen-recorder --release --test runtime -- --ignored --nocapture recorder_cpu
//! ```

use std::time::{Duration, Instant};

use openh264::encoder::Encoder;
use openh264::formats::YUVBuffer;

use crate::common::workdir;
use crate::publisher::{FPS, Publisher, Video, fake_opus};
use crate::{Env, config};

const BITRATE: u64 = 2_500_000;
const WINDOW: Duration = Duration::from_secs(15);

/// CPU seconds this process has used (user + system), from /proc.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 (1-based), 12 and 13 after comm
    // and state; in clock ticks of 1/100 s on Linux.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

/// This process's resident set and its peak so far, in KiB, from /proc.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn measure(what: &str) -> f64 {
    let (cpu, wall) = (cpu_secs(), Instant::now());
    tokio::time::sleep(WINDOW).await;
    let share = (cpu_secs() - cpu) / wall.elapsed().as_secs_f64();
    eprintln!("{what}: {:.2} % of a core", share * 100.0);
    share
}

fn canned_720p() -> Video {
    let yuv = YUVBuffer::new(1280, 720);
    let mut enc = Encoder::new().expect("encoder");
    let key = enc.encode(&yuv).expect("encode").to_vec();
    let len = (BITRATE / 8 / FPS) as usize;
    // A P slice with first_mb_in_slice 0, then filler without zero bytes
    // (no start code can appear in it).
    let mut delta = vec![0, 0, 0, 1, 0x41, 0x9a];
    delta.extend((0..len - 6).map(|i| (i * 7 % 255) as u8 + 1));
    Video::Canned { key, delta }
}

/// Streams recorded at once: the cost per stream is the difference over
/// this many, which averages out one stream's noise and the fixed costs
/// (the first recording's threads and buffers) a single stream would carry.
const STREAMS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --release --ignored --nocapture"]
async fn recorder_cpu() {
    let dir = workdir("bench");
    let env = Env::start(dir.path(), {
        let mut c = config();
        c.policy = lumen_recorder::Policy::OnDemand;
        c
    })
    .await;
    let h = env.node.handle();
    let mut publishers = Vec::new();
    for i in 0..STREAMS {
        let name = format!("cam{i}");
        publishers.push(Publisher::start_with(&h, &name, fake_opus(), canned_720p()).await);
        env.recorder.publisher_live(&name, &format!("brd_bench{i}"));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let base = measure(&format!("{STREAMS} publishers + node")).await;
    let (rss_base, peak_base) = rss_kib();
    let mut ids = Vec::new();
    for i in 0..STREAMS {
        ids.push(
            env.recorder
                .start_recording(&format!("cam{i}"))
                .await
                .expect("recording"),
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let with = measure(&format!("{STREAMS} publishers + node + recorder")).await;
    let (rss_with, peak_with) = rss_kib();
    let n = STREAMS as f64;
    eprintln!(
        "recorder: {:.2} % of a core per recorded {:.1} Mbit/s stream ({STREAMS} streams, {} fragments, {} frames dropped for gaps)",
        (with - base) * 100.0 / n,
        BITRATE as f64 / 1e6,
        env.recorder.fragments_written(),
        env.recorder.frames_dropped_for_gaps(),
    );
    eprintln!(
        "recorder memory: resident {:+.0} KiB per stream ({rss_base} -> {rss_with} KiB for {STREAMS}), peak {:+.0} KiB per stream",
        (rss_with as f64 - rss_base as f64) / n,
        (peak_with as f64 - peak_base as f64) / n,
    );
    let t = Instant::now();
    for i in 0..STREAMS {
        env.recorder
            .stop_recording(&format!("cam{i}"))
            .await
            .expect("stop");
    }
    for id in &ids {
        let rec = env.ready(id).await;
        eprintln!("finalised {} ms / {} bytes", rec.duration_ms, rec.size);
    }
    eprintln!("{STREAMS} finalised in {:.2} s", t.elapsed().as_secs_f64());
    drop(publishers);
    env.stop().await;
}
