//! Fan-out benchmark: how close the server's forwarding gets to this
//! machine's ceiling.
//!
//! 1. Measures the ceiling (AES-128-GCM + sendmmsg, one thread), and again
//!    after each level: on a shared machine one thread's speed drifts by a
//!    fifth within minutes, so each level is divided by the mean of the
//!    ceilings measured just before and just after it.
//! 2. Starts `lumen serve` as a child process on free loopback ports (the
//!    binary of this build profile), so its CPU and RSS are its own.
//! 3. For each viewer count, publishes the test pattern (1280x720, 2.5 Mbit/s
//!    by default) in this process on a fresh stream and runs the load
//!    generator against it: a fast ramp, then a steady window.
//! 4. Prints, per level, subscriber packets forwarded per server CPU-second
//!    divided by the ceiling (on one line with the CPU model and the
//!    ceiling, so runs on different machines compare), and the first level at which loss passes 0.5 %
//!    or the forwarding latency p99 (SEI send time to the viewer's socket,
//!    over the steady window) passes 10 ms, and the server's own forwarding
//!    delay (its `/metrics` histogram, from all viewers joined to the end);
//!    then `BENCHMARKS.md` rows.
//!
//! Run: `cargo bench --bench fanout`. Environment overrides:
//! `LUMEN_FANOUT_LEVELS=50,100,200` (viewer counts), `LUMEN_FANOUT_STEADY=5`
//! (seconds of steady state per level), `LUMEN_FANOUT_BITRATE=2500000`,
//! `LUMEN_FANOUT_SIZE=1280x720`, `LUMEN_FANOUT_RAMP=100` (viewers per second),
//! `LUMEN_FANOUT_THREADS=1` (the load generator's threads; its CPU is in
//! each level's table, next to the server's), `LUMEN_FANOUT_SERVER=path`
//! (another `lumen` binary to serve, e.g. an earlier build to compare
//! with in the same session).

use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lumen_tools::bench::{CeilingOptions, cpu_model, run_ceiling};
use lumen_tools::load::{LoadOptions, LoadReport, ProcSample, PublishSpec, run_on_threads};

/// Loss above this, or latency p99 above the next, marks the level where
/// the server stops keeping up.
const LOSS_LIMIT_PERCENT: f64 = 0.5;
const LATENCY_P99_LIMIT_MS: f64 = 10.0;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "warn,str0m=error,webrtc=error,rtc=error,rtc_dtls=error,webrtc_ice=error".into()
            }),
        )
        .init();
    let levels: Vec<usize> = env_list("LUMEN_FANOUT_LEVELS", "50,100,200,400,700")?;
    let steady = Duration::from_secs_f64(env_num("LUMEN_FANOUT_STEADY", 5.0)?);
    let ramp = env_num("LUMEN_FANOUT_RAMP", 100.0)?;
    let bitrate = env_num("LUMEN_FANOUT_BITRATE", 2_500_000.0)? as u32;
    let (width, height) = env_size("LUMEN_FANOUT_SIZE", (1280, 720))?;
    let threads = env_num("LUMEN_FANOUT_THREADS", 1.0)? as usize;
    let cpu = cpu_model();

    eprintln!("measuring the ceiling …");
    let ceiling = run_ceiling(&CeilingOptions::default())?;
    print!("{}", ceiling.table());
    let mut ceiling_before = ceiling.ceiling_pps();
    let mut ceilings = vec![ceiling_before];

    let server = Server::start()?;
    eprintln!(
        "server pid {} at {} (2 workers, {})",
        server.pid(),
        server.http_url,
        lumen_bin().display()
    );
    // Memory per viewer is counted from the idle server: the allocator keeps
    // what an earlier level freed, so growth over one level would count only
    // the viewers beyond the previous level's.
    let idle_rss_kib = ProcSample::read(server.pid())
        .context("reading the idle server's RSS")?
        .rss_kib;
    // One token publishes (and watches) every level's stream.
    let token = server.mint("publish:*")?;
    let rt = tokio::runtime::Runtime::new()?;
    let mut rows = Vec::new();
    let mut knee = None;
    for (i, &n) in levels.iter().enumerate() {
        let stream = format!("fanout{i}");
        // The load run's duration counts from the end of its ramp.
        let duration = Duration::from_secs_f64(n as f64 / ramp) + steady;
        eprintln!("== {n} viewers ({:.0} s) ==", duration.as_secs_f64());
        let options = LoadOptions {
            whep_url: format!("{}/whep/{stream}", server.http_url),
            token: Some(token.clone()),
            viewers: n,
            ramp_per_sec: ramp,
            duration: steady,
            publish: Some(PublishSpec {
                whip_url: format!("{}/whip/{stream}", server.http_url),
                width,
                height,
                fps: 30,
                bitrate_bps: bitrate,
                simulcast: false,
            }),
            server_pid: Some(server.pid()),
            progress: true,
        };
        let load = rt.spawn(run_on_threads(options, None, threads));
        // The server's forwarding delay is read from once every viewer is
        // on (and a second more) to the end: the steady state, not the joins.
        let delay_before = rt.block_on(async {
            let until = Instant::now() + duration + Duration::from_secs(10);
            while Instant::now() < until && viewers_on(&server.http_url, &stream).await < n {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            forwarding_delay(&server.http_url).await
        });
        let report = rt.block_on(load)??;
        print!("{}", report.table());
        let delay_after = rt.block_on(forwarding_delay(&server.http_url));
        let ceiling_after = run_ceiling(&CeilingOptions {
            phase: Duration::from_secs(1),
            ..CeilingOptions::default()
        })?
        .ceiling_pps();
        ceilings.push(ceiling_after);
        let level_ceiling = (ceiling_before + ceiling_after) / 2.0;
        println!(
            "ceiling before / after the level: {ceiling_before:.0} / {ceiling_after:.0} pkt/s"
        );
        ceiling_before = ceiling_after;
        let mut row = Row::new(n, &report, level_ceiling, idle_rss_kib);
        if let (Some(a), Some(b)) = (&delay_before, &delay_after) {
            let level: Vec<(f64, u64)> = b
                .iter()
                .zip(a)
                .map(|((bound, after), (_, before))| (*bound, after.saturating_sub(*before)))
                .collect();
            let q = |q: f64| quantile_bound(&level, q).map_or("-".into(), fmt_ms);
            row.server_delay = format!("{} / {}", q(0.5), q(0.99));
            println!(
                "server forwarding delay p50/p99 (bucket bounds): {}",
                row.server_delay
            );
        }
        println!(
            "{n} viewers on {cpu}: ceiling {:.0} pkt/s, server {} pkt per CPU-second, ratio to ceiling {}",
            level_ceiling,
            fmt_opt(row.pkts_per_cpu_s, 0),
            fmt_opt(row.ratio, 3)
        );
        if report.generator_saturated() {
            println!(
                "  the generator was near its capacity ({} thread(s)): this level measures it, not the server; try LUMEN_FANOUT_THREADS",
                report.generator_threads
            );
        }
        // Forwarding latency: the SEI send time (taken after encoding) to
        // the kernel's receive time on the viewer's socket, so neither the
        // encoder nor the generator's own queueing is in it. Judged on the
        // steady window, after the joins.
        let latency = report.steady.latency.or(report.latency);
        let over = report.loss_percent > LOSS_LIMIT_PERCENT
            || latency.is_some_and(|l| l.p99_ms > LATENCY_P99_LIMIT_MS)
            || report.viewers_connected < n;
        let broken = report.loss_percent > 5.0 || report.viewers_connected * 10 < n * 9;
        rows.push(row);
        if over && knee.is_none() {
            knee = Some(n);
        }
        if broken {
            eprintln!("stopping: more than 5 % loss or 10 % of the viewers failed");
            break;
        }
    }

    println!();
    println!(
        "ceiling: {:.0}–{:.0} pkt/s on one thread over the run; {}",
        ceilings.iter().copied().fold(f64::INFINITY, f64::min),
        ceilings.iter().copied().fold(0.0, f64::max),
        match knee {
            Some(n) => format!(
                "loss > {LOSS_LIMIT_PERCENT} %, steady forwarding latency p99 > {LATENCY_P99_LIMIT_MS} ms or failed viewers first at {n} viewers"
            ),
            None => "every level stayed within loss 0.5 %, forwarding latency p99 10 ms and no failed viewer"
                .to_owned(),
        }
    );
    println!();
    println!(
        "BENCHMARKS.md rows ({width}x{height} at {bitrate} bit/s, generator on the same machine, `cargo bench --bench fanout`):"
    );
    println!();
    println!("{}", Row::HEADER);
    for r in &rows {
        println!("{}", r.markdown());
    }
    drop(server);
    Ok(())
}

/// One level's figures.
struct Row {
    viewers: usize,
    connected: usize,
    rx_pps: f64,
    server_cpu_percent: Option<f64>,
    pkts_per_cpu_s: Option<f64>,
    /// The mean of the ceilings measured before and after the level.
    ceiling_pps: f64,
    ratio: Option<f64>,
    loss_percent: f64,
    latency: String,
    spread: String,
    ttff: String,
    rss_per_viewer_kib: Option<f64>,
    generator_cpu_percent: Option<f64>,
    /// The server's own forwarding delay over the level, p50 / p99, as
    /// histogram bucket bounds.
    server_delay: String,
}

impl Row {
    const HEADER: &'static str = "| viewers | connected | received pkt/s | server CPU % | pkt per server CPU-s | ceiling pkt/s | ÷ ceiling | loss % | steady latency p50/p99 ms | behind first viewer p50/p99 ms | server forwarding delay p50/p99 ms | TTFF p50/p99 ms | server RSS/viewer KiB | generator CPU % |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

    fn new(n: usize, r: &LoadReport, ceiling_pps: f64, idle_rss_kib: u64) -> Self {
        let pcs = r.steady.packets_per_server_cpu_s;
        Self {
            viewers: n,
            connected: r.viewers_connected,
            rx_pps: r.steady.rx_packets_per_s,
            server_cpu_percent: r.steady.server_cpu_percent,
            pkts_per_cpu_s: pcs,
            ceiling_pps,
            ratio: pcs.map(|p| p / ceiling_pps),
            loss_percent: r.loss_percent,
            // Both over the steady window (the whole run when it has none).
            latency: r
                .steady
                .latency
                .or(r.latency)
                .map_or("-".into(), |l| format!("{:.1} / {:.1}", l.p50_ms, l.p99_ms)),
            spread: r
                .steady
                .latency_spread
                .or(r.latency_spread)
                .map_or("-".into(), |l| format!("{:.1} / {:.1}", l.p50_ms, l.p99_ms)),
            ttff: r
                .ttff
                .map_or("-".into(), |l| format!("{:.0} / {:.0}", l.p50_ms, l.p99_ms)),
            rss_per_viewer_kib: r
                .server_rss_mib
                .filter(|_| r.viewers_connected > 0)
                .map(|mib| (mib * 1024.0 - idle_rss_kib as f64) / r.viewers_connected as f64),
            generator_cpu_percent: r.generator_cpu_percent,
            server_delay: "-".into(),
        }
    }

    fn markdown(&self) -> String {
        format!(
            "| {} | {} | {:.0} | {} | {} | {:.0} | {} | {:.3} | {} | {} | {} | {} | {} | {} |",
            self.viewers,
            self.connected,
            self.rx_pps,
            fmt_opt(self.server_cpu_percent, 0),
            fmt_opt(self.pkts_per_cpu_s, 0),
            self.ceiling_pps,
            fmt_opt(self.ratio, 3),
            self.loss_percent,
            self.latency,
            self.spread,
            self.server_delay,
            self.ttff,
            fmt_opt(self.rss_per_viewer_kib, 0),
            fmt_opt(self.generator_cpu_percent, 0),
        )
    }
}

/// Viewers the server counts on a stream now (0 when it cannot say).
async fn viewers_on(base: &str, stream: &str) -> usize {
    let Ok(r) = reqwest::get(format!("{base}/api/streams/{stream}")).await else {
        return 0;
    };
    let Ok(text) = r.text().await else {
        return 0;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return 0;
    };
    v["viewers"].as_u64().map_or(0, |n| n as usize)
}

/// The server's `lumen_forwarding_delay_us` histogram now: (upper bound in
/// µs, cumulative count) per bucket, `+Inf` last.
async fn forwarding_delay(base: &str) -> Option<Vec<(f64, u64)>> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let buckets: Vec<(f64, u64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("lumen_forwarding_delay_us_bucket{le=\"")?;
            let (bound, count) = rest.split_once("\"} ")?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, count.trim().parse().ok()?))
        })
        .collect();
    (!buckets.is_empty()).then_some(buckets)
}

/// The upper bound of the bucket holding quantile `q` of cumulative counts.
fn quantile_bound(cumulative: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = cumulative.last()?.1;
    if total == 0 {
        return None;
    }
    let want = (q * total as f64).ceil() as u64;
    cumulative
        .iter()
        .find(|(_, c)| *c >= want)
        .map(|(bound, _)| *bound)
}

fn fmt_ms(us: f64) -> String {
    if us.is_infinite() {
        "> 250".into()
    } else {
        format!("≤ {}", us / 1000.0)
    }
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

/// `lumen serve` as a child process, killed when dropped.
struct Server {
    child: Child,
    http_url: String,
    dir: PathBuf,
}

/// The `lumen` binary to serve: this build's, or `LUMEN_FANOUT_SERVER`.
fn lumen_bin() -> PathBuf {
    std::env::var_os("LUMEN_FANOUT_SERVER")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_lumen")), PathBuf::from)
}

impl Server {
    fn start() -> anyhow::Result<Self> {
        let http = free_tcp_port()?;
        let rtc = free_udp_pair()?;
        let dir = std::env::temp_dir().join(format!("lumen-fanout-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("serve.log"))?;
        let child = Command::new(lumen_bin())
            .args([
                "serve",
                "--http-addr",
                &format!("127.0.0.1:{http}"),
                "--rtc-addr",
                &format!("127.0.0.1:{rtc}"),
                "--workers",
                "2",
                // Every viewer comes from this one address: the per-client
                // limits, made for the open internet, are off.
                "--session-rate",
                "0",
                "--sessions-per-client",
                "0",
                "--data-dir",
            ])
            .arg(&dir)
            .env("RUST_LOG", "warn")
            // Forwarding is measured on the publisher's one layer: with the
            // ladder on, viewers would start on its rungs (and the encoder
            // would take a core's share beside the workers).
            .env("LUMEN_TRANSCODE", "false")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting lumen serve")?;
        let server = Self {
            child,
            http_url: format!("http://127.0.0.1:{http}"),
            dir,
        };
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
            if Instant::now() > until {
                bail!("lumen serve did not listen on {http} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A publish token, from `lumen token mint` on the server's data dir.
    ///
    /// Tried a few times: the server may still hold its new store's first
    /// write when it already listens (seen once as "opening the account
    /// store").
    fn mint(&self, scope: &str) -> anyhow::Result<String> {
        let mut tries = 0;
        loop {
            match self.mint_once(scope) {
                Err(e) if tries < 10 => {
                    tries += 1;
                    eprintln!("{e:#}; trying again");
                    std::thread::sleep(Duration::from_millis(300));
                }
                r => return r,
            }
        }
    }

    fn mint_once(&self, scope: &str) -> anyhow::Result<String> {
        let out = Command::new(lumen_bin())
            .args([
                "token",
                "mint",
                "--scope",
                scope,
                "--ttl",
                "1d",
                "--data-dir",
            ])
            .arg(&self.dir)
            .env_remove("LUMEN_DATABASE_URL")
            .env_remove("DATABASE_URL")
            .output()
            .context("running lumen token mint")?;
        if !out.status.success() {
            bail!("lumen token mint: {}", String::from_utf8_lossy(&out.stderr));
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(|l| l.trim().to_string())
            .context("lumen token mint printed nothing")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A UDP port whose successor is free too (worker i listens on port + i).
fn free_udp_pair() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let a = UdpSocket::bind("127.0.0.1:0")?;
        let port = a.local_addr()?.port();
        if port < u16::MAX && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no two consecutive free UDP ports")
}

fn env_num(name: &str, default: f64) -> anyhow::Result<f64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

fn env_list(name: &str, default: &str) -> anyhow::Result<Vec<usize>> {
    let v = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    v.split(',')
        .map(|s| {
            s.trim()
                .parse()
                .with_context(|| format!("{name}: {s:?} is not a count"))
        })
        .collect()
}

fn env_size(name: &str, default: (u32, u32)) -> anyhow::Result<(u32, u32)> {
    let Ok(v) = std::env::var(name) else {
        return Ok(default);
    };
    let (w, h) = v
        .split_once('x')
        .with_context(|| format!("{name}={v}: expected WIDTHxHEIGHT"))?;
    Ok((w.trim().parse()?, h.trim().parse()?))
}
