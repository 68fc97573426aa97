//! `lumen bench abuse`: the hardening issue's soak. A live stream with 50
//! viewers, first alone (the baseline), then on a fresh server with every
//! attack of the issue running together for the same window, each from its
//! own loopback address ([`Attack`]); the viewers' loss and latency p99
//! compared between the two, the server's CPU, peak RSS and peak open file
//! descriptors, what each attack got, and whether the server let go of
//! everything the attacks made it hold once they stopped.
//!
//! A run, on a fresh `lumen serve` (one worker, default limits):
//! 1. the load generator ([`crate::load`]) publishes the test pattern and
//!    ramps the viewers at 10 a second (the default per-client rate);
//! 2. three seconds after the ramp, with every viewer connected, the
//!    window: the attacks (or nothing), and halfway through five more
//!    viewers join, whose time to first frame is the "late joiners'" TTFF;
//! 3. the attacks stop; every second, for up to 25 s (sessions that never
//!    connect are reaped after 15 s), what the server holds is compared with
//!    just before the window: the same `/api/streams`, `lumen_http_sessions`,
//!    session gauges and SFU peers, no event-stream reader, about as many
//!    open descriptors;
//! 4. the load run ends; its loss and latency cover ramp, window and wait,
//!    which are the same in both runs (the window's worst second is
//!    reported apart, from the load generator's timeline).
//!
//! The server is sampled (`/proc/PID`: CPU, RSS, open fds) four times a
//! second throughout. This is a bench, not a test: it fails (an error, so a
//! non-zero exit) only when the attack run is worse than the baseline by
//! the generous bounds of [`LOSS_SLACK_PP`], [`P99_FACTOR`] and
//! [`P99_SLACK_MS`], or state is left.

mod attacks;
mod craft;
mod report;
mod server;

pub use attacks::Attack;
pub use report::{
    AbuseReport, AttackReport, LOSS_SLACK_PP, P99_FACTOR, P99_SLACK_MS, RunReport, Verdict, Window,
};
pub use server::{CheckItem, Holdings};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinSet;

use crate::load::{self, LoadOptions, LoadReport, PublishSpec};
use attacks::{Tally, Target};
use server::{Sample, Server};

/// The stream the viewers watch.
const STREAM: &str = "abuse";
/// Viewers started per second: the server's default per-client rate, so the
/// viewers on 127.0.0.1 never meet a limit.
const RAMP_PER_SEC: f64 = 10.0;
/// Longest wait for the publisher and the first viewer.
const FIRST_VIEWER_WAIT: Duration = Duration::from_secs(20);
/// From the end of the ramp to the window, for the last viewers to connect
/// and settle. The window starts at a fixed point of the load run (the
/// load generator's run has a fixed length), with every viewer or not.
const SETTLE: Duration = Duration::from_secs(3);
/// Longest wait after the window for the attacks' state to be gone: the
/// server's 15 s reaping of sessions that never connect, and margin.
const REAP_WAIT: Duration = Duration::from_secs(25);
/// The load run goes on this long after the last state check could end.
const END_MARGIN: Duration = Duration::from_secs(3);
/// Viewers joining halfway through the window, at this rate, for this long.
const LATE_JOINERS: usize = 5;
const LATE_RAMP_PER_SEC: f64 = 2.0;
const LATE_DURATION: Duration = Duration::from_secs(8);
/// How often the server's process is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Open descriptors after the attacks may exceed those before by this much
/// (log files, a connection being closed).
const FD_SLACK: usize = 16;
/// The publisher: small, so the machine's cores go to the server.
const WIDTH: u32 = 640;
const HEIGHT: u32 = 360;
const FPS: u32 = 30;
const BITRATE_BPS: u32 = 1_000_000;

/// What to run.
#[derive(Clone, Debug)]
pub struct AbuseOptions {
    /// The attack window (the baseline has a quiet one as long).
    pub duration: Duration,
    /// Legitimate viewers.
    pub viewers: usize,
    /// The attacks to run (the eight by default).
    pub attacks: Vec<Attack>,
    /// The `lumen` binary to run the server with; `None`: this executable
    /// (`lumen bench abuse`).
    pub server_exe: Option<PathBuf>,
}

impl Default for AbuseOptions {
    fn default() -> Self {
        AbuseOptions {
            duration: Duration::from_secs(60),
            viewers: 50,
            attacks: Attack::ALL.to_vec(),
            server_exe: None,
        }
    }
}

/// Runs the baseline, then the attack run; see the module documentation.
pub async fn run_abuse(opts: &AbuseOptions) -> anyhow::Result<AbuseReport> {
    // The viewers, the publisher and the late joiners all come from
    // 127.0.0.1, which may hold 100 sessions by default.
    anyhow::ensure!(
        (1..=90).contains(&opts.viewers),
        "--viewers must be 1 to 90 (127.0.0.1 may hold 100 sessions)"
    );
    anyhow::ensure!(!opts.duration.is_zero(), "--duration must be positive");
    let exe = match &opts.server_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().context("finding the lumen binary")?,
    };
    eprintln!(
        "baseline: {} viewers, a quiet {:.0} s window …",
        opts.viewers,
        opts.duration.as_secs_f64()
    );
    let baseline = run_once(opts, &exe, false)
        .await
        .context("the baseline run")?;
    eprintln!(
        "attack run: {} viewers, {:.0} s of {} …",
        opts.viewers,
        opts.duration.as_secs_f64(),
        opts.attacks
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let attack = run_once(opts, &exe, true).await.context("the attack run")?;
    let verdict = Verdict::judge(opts.viewers, &baseline, &attack);
    Ok(AbuseReport {
        viewers: opts.viewers,
        window_s: opts.duration.as_secs_f64(),
        stream: format!("{WIDTH}x{HEIGHT} {FPS} fps {} kbit/s", BITRATE_BPS / 1000),
        baseline,
        attack,
        verdict,
    })
}

async fn run_once(opts: &AbuseOptions, exe: &Path, attacked: bool) -> anyhow::Result<RunReport> {
    let server = Server::start(
        exe,
        None,
        if attacked {
            "abuse-attack"
        } else {
            "abuse-baseline"
        },
    )
    .await
    .context("starting lumen serve")?;
    let pid = server.pid();
    let base = server.http_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let sampler = tokio::spawn({
        let samples = samples.clone();
        async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                if let Some(s) = Sample::read(pid) {
                    samples.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                }
            }
        }
    });
    let ramp = Duration::from_secs_f64(opts.viewers as f64 / RAMP_PER_SEC);
    // The load generator's one token publishes and watches.
    let token = server.mint(&format!("publish:{STREAM}"))?;
    let load = tokio::spawn(load::run(LoadOptions {
        whep_url: format!("{base}/whep/{STREAM}"),
        token: Some(token),
        viewers: opts.viewers,
        ramp_per_sec: RAMP_PER_SEC,
        // From the end of the ramp.
        duration: SETTLE + opts.duration + REAP_WAIT + END_MARGIN,
        publish: Some(PublishSpec {
            whip_url: format!("{base}/whip/{STREAM}"),
            width: WIDTH,
            height: HEIGHT,
            fps: FPS,
            bitrate_bps: BITRATE_BPS,
            simulcast: false,
        }),
        server_pid: Some(pid),
        progress: false,
    }));

    // 1. The viewers join: the window starts at a fixed time after the
    // first, the ramp's length and a settling time later.
    let until = Instant::now() + FIRST_VIEWER_WAIT;
    let mut first_viewer = None;
    while first_viewer.is_none() && Instant::now() < until && !load.is_finished() {
        if viewers_on(&http, &base).await > 0 {
            first_viewer = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if load.is_finished() {
        // It failed early (publisher, bad URL): its error says why.
        load.await.context("the load task")??;
        anyhow::bail!("the load run ended before the window");
    }
    let first_viewer = first_viewer.context("no viewer connected (is the publisher live?)")?;
    let window_at = first_viewer + ramp + SETTLE;
    while viewers_on(&http, &base).await < opts.viewers && Instant::now() < window_at {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep_until(window_at.into()).await;
    let on = viewers_on(&http, &base).await;
    if on < opts.viewers {
        eprintln!(
            "  only {on} of {} viewers connected; going on",
            opts.viewers
        );
    }

    // 2. The window.
    let before = Holdings::read(&http, &base, pid).await;
    let window_start = Instant::now();
    let target = Arc::new(Target {
        base: reqwest::Url::parse(&format!("{base}/"))?,
        http_addr: server.http_addr(),
        rtc_addr: server.rtc_addr(),
        stream: STREAM.to_owned(),
        publish_token: server.mint("publish:*")?,
    });
    let mut running = JoinSet::new();
    let mut tallies = Vec::new();
    if attacked {
        for &a in &opts.attacks {
            let tally = Arc::new(Tally::default());
            tallies.push((a, tally.clone()));
            running.spawn({
                let target = target.clone();
                async move { (a, attacks::run(a, target, tally).await) }
            });
        }
    }
    let late_at = window_start + opts.duration.saturating_sub(LATE_DURATION) / 2;
    tokio::time::sleep_until(late_at.into()).await;
    let late = load::run(LoadOptions {
        whep_url: format!("{base}/whep/{STREAM}"),
        token: None,
        viewers: LATE_JOINERS,
        ramp_per_sec: LATE_RAMP_PER_SEC,
        duration: LATE_DURATION,
        publish: None,
        server_pid: None,
        progress: false,
    })
    .await;
    tokio::time::sleep_until((window_start + opts.duration).into()).await;
    let window_end = Instant::now();
    let mut errors = std::collections::HashMap::new();
    while let Some(Ok((a, r))) = running.try_join_next() {
        if let Err(e) = r {
            errors.insert(a, format!("{e:#}"));
        }
    }
    running.abort_all();
    while running.join_next().await.is_some() {}
    let attacks = tallies
        .into_iter()
        .map(|(a, t)| AttackReport {
            attack: a,
            source: a.source().to_string(),
            what: a.what(),
            counts: t.snapshot(),
            error: errors.remove(&a),
        })
        .collect();
    if attacked {
        eprintln!("  attacks stopped; waiting for the server to let go of their state …");
    }

    // 3. The state check.
    let (after, checks, clean_after_s) = loop {
        let after = Holdings::read(&http, &base, pid).await;
        let checks = server::compare(&before, &after, FD_SLACK);
        let waited = window_end.elapsed();
        if checks.iter().all(|c| c.ok) {
            break (after, checks, Some(waited.as_secs_f64()));
        }
        if waited >= REAP_WAIT || load.is_finished() {
            break (after, checks, None);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    // 4. The end of the load run.
    let report = load.await.context("the load task")??;
    sampler.abort();
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    drop(server);
    let load_started = first_viewer - Duration::from_millis(50);
    let window = window_figures(&samples, &report, load_started, window_start, window_end);
    let (late_joiners, late_joiners_error) = match late {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    Ok(RunReport {
        attacked,
        load: report,
        late_joiners,
        late_joiners_error,
        window,
        before,
        after,
        checks,
        clean_after_s,
        attacks,
    })
}

/// Connected viewers of the stream, as the server counts them (0 when it
/// cannot say).
async fn viewers_on(http: &reqwest::Client, base: &str) -> usize {
    let Ok(r) = http
        .get(format!("{base}/api/streams/{STREAM}"))
        .send()
        .await
    else {
        return 0;
    };
    let Some(v) = r
        .text()
        .await
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return 0;
    };
    v["viewers"].as_u64().map_or(0, |n| n as usize)
}

/// The server's samples and the viewers' timeline within the window.
/// `load_started` (about when the first viewer was started) places the
/// timeline's seconds; its first second in the window is left out, as it
/// straddles the start.
fn window_figures(
    samples: &[Sample],
    load: &LoadReport,
    load_started: Instant,
    start: Instant,
    end: Instant,
) -> Window {
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= start && s.at <= end)
        .collect();
    let cpu = inside.first().zip(inside.last()).and_then(|(a, b)| {
        let secs = b.at.saturating_duration_since(a.at).as_secs_f64();
        (secs > 0.0).then(|| b.proc.cpu_secs_since(&a.proc) / secs * 100.0)
    });
    let from_s = start.saturating_duration_since(load_started).as_secs_f64() + 1.0;
    let to_s = end.saturating_duration_since(load_started).as_secs_f64();
    let seconds: Vec<_> = load
        .timeline
        .iter()
        .filter(|p| p.t_s >= from_s && p.t_s <= to_s)
        .collect();
    Window {
        seconds: end.saturating_duration_since(start).as_secs_f64(),
        server_cpu_percent: cpu,
        peak_rss_mib: inside
            .iter()
            .map(|s| s.proc.rss_kib)
            .max()
            .map(|k| k as f64 / 1024.0),
        peak_fds: inside.iter().map(|s| s.fds).max(),
        worst_second_p99_ms: seconds
            .iter()
            .filter_map(|p| p.latency.map(|l| l.p99_ms))
            .max_by(f64::total_cmp),
        lowest_second_rx_pps: seconds
            .iter()
            .map(|p| p.rx_packets_per_s)
            .min_by(f64::total_cmp),
    }
}
