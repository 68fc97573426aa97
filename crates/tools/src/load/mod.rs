//! `lumen load`: many WHEP viewers against any WHEP server, cheap enough to
//! run next to the server on the same machine.
//!
//! Each viewer is a str0m `Rtc` in RTP mode doing what a browser does up to
//! decryption (ICE as the controlling side, DTLS, SRTP, receiver reports,
//! NACK, TWCC feedback) without depacketizing or decoding; they are driven
//! from one thread, or spread over `--threads` (`driver`), and the report
//! puts the generator's CPU beside the server's so a reader sees which one
//! ran out. The async side only does HTTP: the optional in-process
//! publisher, the WHEP POSTs paced at the ramp rate (`plan`: viewer k at
//! k/ramp seconds, every viewer asked for, the duration after the ramp),
//! and the DELETEs at the end. Signaling is plain non-trickle WHEP, so the
//! same run can measure another server.
//!
//! With `--chat-rate` every viewer also opens the `chat` data channel and
//! the loop paces stamped messages over the chatters (`chat`).
//!
//! Measurement stops at the deadline (the freeze); the loop then runs half a
//! second more so NACKs can repair the last gaps, and only repairs count in
//! that grace period.

mod chat;
mod cli;
mod driver;
mod plan;
mod plot;
mod procfs;
mod report;
mod viewer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, RtcConfig};
use tokio::task::JoinSet;

use crate::client::{PublishOptions, Publisher};
use crate::whip;
use driver::{Command, Driver, DriverResult, LatencySample, NewViewer, Place, Shared};

pub use chat::{ChatLoad, ChatReport};
pub use cli::{LoadArgs, run_load_cli};
pub use plan::Plan;
pub use plot::timeline_svg;
pub use procfs::ProcSample;
pub use report::{LoadReport, Percentiles, Steady, TimelinePoint, ViewerReport};
pub use viewer::{H264Info, inspect_h264};

/// How long the loop keeps running after the freeze so NACKs can repair the
/// last gaps.
const REPAIR_GRACE: Duration = Duration::from_millis(500);
/// Longest a DELETE at the end may take: the run is over, and a server
/// that is slow to answer should not hold the report back.
const DELETE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for an in-process publisher's first frame.
const PUBLISH_WARMUP: Duration = Duration::from_secs(10);
/// DELETEs in flight at once at the end.
const DELETE_CONCURRENCY: usize = 64;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// WHEP endpoint of the stream to watch.
    pub whep_url: String,
    /// Bearer token for WHEP (and WHIP with `publish`).
    pub token: Option<String>,
    /// Viewers to start.
    pub viewers: usize,
    /// Viewers started per second: viewer k starts k / ramp seconds after
    /// the first.
    pub ramp_per_sec: f64,
    /// How long the run goes on after the last viewer started (the ramp
    /// lasts `(viewers - 1) / ramp_per_sec`).
    pub duration: Duration,
    /// Publish the test pattern first, in this process.
    pub publish: Option<PublishSpec>,
    /// Read the server's CPU and RSS from `/proc/PID`.
    pub server_pid: Option<u32>,
    /// Print a progress line every second on stderr.
    pub progress: bool,
}

/// The in-process publisher of `--publish`.
#[derive(Clone, Debug)]
pub struct PublishSpec {
    /// WHIP endpoint.
    pub whip_url: String,
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Video bitrate (one layer).
    pub bitrate_bps: u32,
    /// Send the three simulcast layers instead of one picture.
    pub simulcast: bool,
}

/// Runs the publisher (if asked), the ramp and the measurement; returns the
/// report. Everything is bounded by the ramp and `duration` plus a few
/// seconds of setup and teardown.
pub async fn run(opts: LoadOptions) -> anyhow::Result<LoadReport> {
    run_with_chat(opts, None).await
}

/// [`run`], and with `chat` every viewer opens the chat channel and the
/// chatters send `chat.rate_per_sec` messages a second in total; the
/// report's `chat` section says what arrived and how late.
// A separate entry rather than a field of `LoadOptions`, which other
// crates build with struct literals.
pub async fn run_with_chat(
    opts: LoadOptions,
    chat: Option<ChatLoad>,
) -> anyhow::Result<LoadReport> {
    run_on_threads(opts, chat, 1).await
}

/// [`run_with_chat`] with the viewers spread over `threads` media loops,
/// each on a thread of its own (at most one per viewer).
pub async fn run_on_threads(
    opts: LoadOptions,
    chat: Option<ChatLoad>,
    threads: usize,
) -> anyhow::Result<LoadReport> {
    let plan = Plan::new(opts.viewers, opts.ramp_per_sec, opts.duration, threads)?;
    if let Some(c) = &chat {
        if !(c.rate_per_sec.is_finite() && c.rate_per_sec > 0.0) {
            bail!("--chat-rate must be a positive number of messages per second");
        }
        if c.chatters == 0 || c.chatters > opts.viewers {
            bail!("--chatters must be from 1 to --viewers ({})", opts.viewers);
        }
    }
    let publisher = match &opts.publish {
        Some(spec) => Some(start_publisher(spec, opts.token.clone()).await?),
        None => None,
    };
    let result = measure(&opts, &plan, chat.as_ref()).await;
    let frames = publisher.as_ref().map(Publisher::frames_sent);
    if let Some(p) = publisher
        && let Err(e) = p.stop().await
    {
        tracing::warn!("stopping the publisher: {e:#}");
    }
    let mut report = result?;
    report.publisher_frames_sent = frames;
    Ok(report)
}

async fn start_publisher(spec: &PublishSpec, token: Option<String>) -> anyhow::Result<Publisher> {
    let publisher = Publisher::start(PublishOptions {
        url: spec.whip_url.clone(),
        token,
        width: spec.width,
        height: spec.height,
        fps: spec.fps,
        bitrate_bps: spec.bitrate_bps,
        simulcast: spec.simulcast,
        // The generator usually shares the server's machine: encoding once
        // leaves the cores to the server and the viewers.
        loop_pattern: true,
        chat: false,
    })
    .await
    .context("starting the publisher")?;
    let until = Instant::now() + PUBLISH_WARMUP;
    while publisher.frames_sent() == 0 {
        if Instant::now() > until {
            let _ = publisher.stop().await;
            bail!("the publisher sent no frame in {PUBLISH_WARMUP:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(publisher)
}

async fn measure(
    opts: &LoadOptions,
    plan: &Plan,
    chat: Option<&ChatLoad>,
) -> anyhow::Result<LoadReport> {
    let http = whip::http_client()?;
    let start = Instant::now();
    let shared = Arc::new(Shared::default());
    let mut loops: Vec<Loop> = Vec::with_capacity(plan.threads());
    for index in 0..plan.threads() {
        let (tx, rx) = std::sync::mpsc::channel();
        let place = Place {
            index,
            plan: *plan,
            started: start,
            shared: shared.clone(),
        };
        let made = Driver::new(rx, place, opts.server_pid, opts.progress, chat)
            .context("setting up the poll loop")
            .and_then(|(driver, waker)| {
                let thread = std::thread::Builder::new()
                    .name(format!("lumen-load-{index}"))
                    .spawn(move || driver.run())
                    .context("spawning a media thread")?;
                Ok((Arc::new(waker), thread))
            });
        match made {
            Ok((waker, thread)) => loops.push((tx, waker, thread)),
            Err(e) => {
                // The loops already running would wait for commands forever.
                send_all(&loops, || Command::Stop);
                return Err(e);
            }
        }
    }

    let deadline = start + plan.deadline();
    // Each session with the credential that made it: only that one may
    // DELETE it.
    let mut connecting: JoinSet<anyhow::Result<Session>> = JoinSet::new();
    let mut sessions = Vec::new();
    let mut failures = Vec::new();
    for id in 0..plan.viewers() {
        let due = start + plan.due(id);
        // Collect finished POSTs while waiting for the next slot; with none
        // in flight, just wait (issue 16: not waiting opened the whole ramp
        // at once).
        while Instant::now() < due {
            match tokio::time::timeout_at(due.into(), connecting.join_next()).await {
                Ok(Some(done)) => record(done, &mut sessions, &mut failures),
                Ok(None) => tokio::time::sleep_until(due.into()).await,
                // Due; the loop's condition checks against the clock.
                Err(_) => {}
            }
        }
        let http = http.clone();
        let url = opts.whep_url.clone();
        let token = viewer_token(opts, chat, id);
        let (tx, waker, _) = &loops[plan.loop_of(id)];
        let (tx, waker) = (tx.clone(), waker.clone());
        let chat_deflate = chat.map(|c| c.deflate);
        connecting.spawn(async move {
            let v = connect_viewer(id, &http, &url, token.as_deref(), chat_deflate).await?;
            let session = (v.session_url.clone(), token);
            tx.send(Command::Add(Box::new(v)))
                .map_err(|_| anyhow::anyhow!("the media loop is gone"))?;
            waker.wake().context("waking the media loop")?;
            Ok(session)
        });
    }
    let started = plan.viewers();
    let ramp_done = Instant::now();
    while let Ok(Some(done)) =
        tokio::time::timeout_at(deadline.into(), connecting.join_next()).await
    {
        record(done, &mut sessions, &mut failures);
    }
    let unanswered = connecting.len();
    connecting.abort_all();
    tokio::time::sleep_until(deadline.into()).await;
    send_all(&loops, || Command::Freeze);
    tokio::time::sleep(REPAIR_GRACE).await;
    send_all(&loops, || Command::Stop);
    let threads: Vec<_> = loops.into_iter().map(|(_, _, thread)| thread).collect();
    let results = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| t.join())
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .context("joining the media threads")?
    .map_err(|_| anyhow::anyhow!("a media thread panicked"))?;
    let result = driver::merge(results).context("no media loop ran")?;

    delete_sessions(&http, &sessions).await;
    let mut report = report_from(opts, plan, chat, result, ramp_done, started);
    let post_failures = failures.len() + unanswered;
    report.viewers_failed += post_failures;
    if unanswered > 0 {
        failures.push(format!("{unanswered} POSTs unanswered at the deadline"));
    }
    failures.append(&mut report.failures);
    failures.truncate(5);
    report.failures = failures;
    Ok(report)
}

/// A media loop as the async side holds it: its commands, its waker, its
/// thread.
type Loop = (
    std::sync::mpsc::Sender<Command>,
    Arc<mio::Waker>,
    std::thread::JoinHandle<DriverResult>,
);

/// Sends a command to every loop.
fn send_all(loops: &[Loop], command: fn() -> Command) {
    for (tx, waker, _) in loops {
        // A closed channel means the loop is gone; join() reports why.
        let _ = tx.send(command());
        let _ = waker.wake();
    }
}

/// A WHEP session's URL and the Bearer that made it.
type Session = (String, Option<String>);

/// The WHEP Bearer of viewer `id`: a chatter's own token, or the run's.
fn viewer_token(opts: &LoadOptions, chat: Option<&ChatLoad>, id: usize) -> Option<String> {
    match chat {
        Some(c) if id < c.chatters && !c.tokens.is_empty() => {
            Some(c.tokens[id % c.tokens.len()].clone())
        }
        _ => opts.token.clone(),
    }
}

fn record(
    done: Result<anyhow::Result<Session>, tokio::task::JoinError>,
    sessions: &mut Vec<Session>,
    failures: &mut Vec<String>,
) {
    match done {
        Ok(Ok(url)) => sessions.push(url),
        Ok(Err(e)) => failures.push(format!("{e:#}")),
        Err(e) => failures.push(format!("viewer task: {e}")),
    }
}

/// Binds a socket, makes the offer (with the `chat` channel if asked),
/// POSTs it and applies the answer.
async fn connect_viewer(
    id: usize,
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    // With a chat channel: whether it asks for compressed messages.
    chat: Option<bool>,
) -> anyhow::Result<NewViewer> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("binding a viewer socket")?;
    socket.set_nonblocking(true)?;
    let local = socket.local_addr()?;
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false)
        .set_rtp_mode(true)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").context("host candidate")?);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let chat = chat.map(|deflate| {
        api.add_channel_with_config(str0m::channel::ChannelConfig {
            label: chat::CHAT_LABEL.to_owned(),
            protocol: if deflate {
                lumen_chat::protocol::DEFLATE_PROTOCOL.to_owned()
            } else {
                String::new()
            },
            ..Default::default()
        })
    });
    let (offer, pending) = api.apply().context("the offer has no changes")?;

    let answer = whip::post_offer(http, url, token, offer.to_sdp_string()).await?;
    let sdp = SdpAnswer::from_sdp_string(&answer.sdp).context("the answer is not valid SDP")?;
    rtc.sdp_api()
        .accept_answer(pending, sdp)
        .context("the answer does not fit the offer")?;
    Ok(NewViewer {
        id,
        session_url: answer.session_url,
        rtc,
        socket,
        posted_at: answer.posted_at,
        chat,
    })
}

async fn delete_sessions(http: &reqwest::Client, sessions: &[Session]) {
    let mut set = JoinSet::new();
    let mut queue = sessions.iter().cloned();
    loop {
        while set.len() < DELETE_CONCURRENCY {
            let Some((url, token)) = queue.next() else {
                break;
            };
            let http = http.clone();
            set.spawn(async move {
                tokio::time::timeout(
                    DELETE_TIMEOUT,
                    whip::delete_session(&http, &url, token.as_deref()),
                )
                .await
            });
        }
        if set.join_next().await.is_none() {
            break;
        }
    }
}

fn report_from(
    opts: &LoadOptions,
    plan: &Plan,
    chat: Option<&ChatLoad>,
    r: DriverResult,
    ramp_done: Instant,
    started: usize,
) -> LoadReport {
    let end = r.frozen_at.unwrap_or_else(Instant::now);
    let mut viewers = Vec::with_capacity(r.viewers.len());
    let mut failures = Vec::new();
    let (mut connect, mut ttff) = (Vec::new(), Vec::new());
    let (mut expected, mut lost, mut plis, mut disconnects) = (0u64, 0u64, 0u64, 0u64);
    let mut in_future = 0;
    let mut failed = 0;
    let mut last_connect = None::<Instant>;
    for v in &r.viewers {
        let s = &v.stats;
        let since_post = |t: Option<Instant>| {
            t.zip(s.posted_at)
                .map(|(t, p)| t.saturating_duration_since(p))
        };
        let c = since_post(s.connected_at);
        let k = since_post(s.first_keyframe_at);
        if let Some(c) = c {
            connect.push(c.as_micros() as u64);
        }
        if let Some(k) = k {
            ttff.push(k.as_micros() as u64);
        }
        last_connect = last_connect.max(s.connected_at);
        if v.failure.is_some() || s.connected_at.is_none() {
            failed += 1;
            if let Some(f) = &v.failure {
                failures.push(format!("viewer {}: {f}", v.id));
            }
        }
        let (e, l) = s.expected_and_lost();
        expected += e;
        lost += l;
        plis += s.plis_sent;
        disconnects += s.ice_disconnects;
        in_future += s.sei_in_future;
        let secs = s
            .first_packet_at
            .map_or(0.0, |f| end.saturating_duration_since(f).as_secs_f64());
        viewers.push(ViewerReport {
            id: v.id,
            posted_s: s
                .posted_at
                .map(|p| p.saturating_duration_since(r.started).as_secs_f64()),
            connected: s.connected_at.is_some(),
            connect_ms: c.map(report::ms),
            ttff_ms: k.map(report::ms),
            packets: s.packets,
            lost: l,
            bitrate_kbps: if secs > 0.0 {
                s.bytes as f64 * 8.0 / secs / 1000.0
            } else {
                0.0
            },
            latency_samples: s.sei_count,
            latency_mean_ms: (s.sei_count > 0)
                .then(|| s.latency_sum_us as f64 / s.sei_count as f64 / 1000.0),
            chat_sent: v.chat.as_ref().map_or(0, |c| c.sent),
            chat_latency: v.chat.as_ref().and_then(|c| c.latency.percentiles()),
        });
    }
    let connected = viewers.iter().filter(|v| v.connected).count();
    let receiving: Vec<f64> = viewers
        .iter()
        .filter(|v| v.packets > 0)
        .map(|v| v.bitrate_kbps)
        .collect();
    let mut latencies: Vec<u64> = r.latencies.iter().map(|l| l.latency_us).collect();
    let (mut first_arrival, mut spread) = latency_split(r.latencies.iter());

    // Whole-run CPU and memory: from the loop's start to the freeze.
    let span = |samples: &[(Instant, ProcSample)]| {
        let first = samples.first()?;
        let last = samples.iter().rev().find(|(t, _)| *t <= end)?;
        let secs = last.0.saturating_duration_since(first.0).as_secs_f64();
        (secs > 0.0).then(|| {
            (
                last.1.cpu_secs_since(&first.1) / secs * 100.0,
                first.1,
                last.1,
            )
        })
    };
    let server = span(&r.server_samples);
    let own = span(&r.own_samples);

    // Steady window: from the first tick after the ramp ended and the last
    // viewer connected, to the freeze.
    let steady_from = ramp_done.max(last_connect.unwrap_or(ramp_done));
    let points = &r.cumulative_packets;
    let first_point = points
        .iter()
        .find(|(t, _)| *t >= steady_from)
        .copied()
        .unwrap_or((r.started, 0));
    let last_point = points.last().copied().unwrap_or((end, 0));
    let (a, b) = if last_point.0 > first_point.0 {
        (first_point, last_point)
    } else {
        ((r.started, 0), last_point)
    };
    let window = b.0.saturating_duration_since(a.0).as_secs_f64();
    // CPU seconds between the window's ends, from samples taken with the
    // timeline points.
    let cpu_in_window = |samples: &[(Instant, ProcSample)]| {
        let at = |t: Instant| samples.iter().find(|(s, _)| *s == t).map(|x| x.1);
        at(a.0)
            .or_else(|| samples.first().map(|x| x.1))
            .zip(at(b.0))
            .map(|(sa, sb)| sb.cpu_secs_since(&sa))
    };
    let server_cpu_s = cpu_in_window(&r.server_samples);
    let generator_cpu_s = cpu_in_window(&r.own_samples);
    let rx_pps = if window > 0.0 {
        (b.1 - a.1) as f64 / window
    } else {
        0.0
    };
    let mut steady_latencies: Vec<u64> = r
        .latencies
        .iter()
        .filter(|l| l.at >= a.0)
        .map(|l| l.latency_us)
        .collect();
    let (_, mut steady_spread) = latency_split(r.latencies.iter().filter(|l| l.at >= a.0));
    let steady = Steady {
        window_s: window,
        latency: Percentiles::from_micros(&mut steady_latencies),
        latency_spread: Percentiles::from_micros(&mut steady_spread),
        rx_packets_per_s: rx_pps,
        server_cpu_s,
        server_cpu_percent: server_cpu_s
            .filter(|_| window > 0.0)
            .map(|c| c / window * 100.0),
        packets_per_server_cpu_s: server_cpu_s
            .filter(|c| *c > 0.0)
            .map(|c| (b.1 - a.1) as f64 / c),
        generator_cpu_percent: generator_cpu_s
            .filter(|_| window > 0.0)
            .map(|c| c / window * 100.0),
    };

    LoadReport {
        whep_url: opts.whep_url.clone(),
        viewers_requested: opts.viewers,
        viewers_started: started,
        viewers_connected: connected,
        viewers_failed: failed,
        failures,
        viewers_with_keyframe: ttff.len(),
        connect: Percentiles::from_micros(&mut connect),
        ttff: Percentiles::from_micros(&mut ttff),
        bitrate_kbps_mean: if receiving.is_empty() {
            0.0
        } else {
            receiving.iter().sum::<f64>() / receiving.len() as f64
        },
        packets_received: viewers.iter().map(|v| v.packets).sum(),
        packets_lost: lost,
        loss_percent: if expected > 0 {
            lost as f64 * 100.0 / expected as f64
        } else {
            0.0
        },
        latency: Percentiles::from_micros(&mut latencies),
        latency_first_viewer: Percentiles::from_micros(&mut first_arrival),
        latency_spread: Percentiles::from_micros(&mut spread),
        latency_in_future: in_future,
        plis_sent: plis,
        ice_disconnects: disconnects,
        send_errors: r.send_errors,
        generator_socket_drops: r.socket_drops,
        server_socket_drops: r.server_socket_drops,
        measured_s: end.saturating_duration_since(r.started).as_secs_f64(),
        server_cpu_percent: server.map(|s| s.0),
        server_rss_mib: server.map(|s| s.2.rss_kib as f64 / 1024.0),
        server_rss_kib_per_viewer: server
            .filter(|_| connected > 0)
            .map(|s| (s.2.rss_kib as f64 - s.1.rss_kib as f64) / connected as f64),
        generator_cpu_percent: own.map(|s| s.0),
        generator_cpu_percent_per_viewer: own
            .filter(|_| connected > 0)
            .map(|s| s.0 / connected as f64),
        generator_threads: plan.threads(),
        steady,
        chat: chat.map(|c| {
            r.chat
                .report(c, a.0, r.viewers.iter().filter_map(|v| v.chat.as_ref()))
        }),
        publisher_frames_sent: None,
        timeline: r.timeline,
        viewers,
    }
}

/// Splits (frame, latency) samples into the latency of the first viewer to
/// get each frame (the publisher's encoding plus one pass through the
/// server) and every other arrival's delay behind that first one (what
/// fanning the frame out to many viewers adds).
fn latency_split<'a>(
    samples: impl Iterator<Item = &'a LatencySample> + Clone,
) -> (Vec<u64>, Vec<u64>) {
    let mut first: HashMap<u64, u64> = HashMap::new();
    for l in samples.clone() {
        first
            .entry(l.frame)
            .and_modify(|m| *m = (*m).min(l.latency_us))
            .or_insert(l.latency_us);
    }
    let spread = samples
        .filter_map(|l| first.get(&l.frame).map(|m| l.latency_us - m))
        .collect();
    (first.into_values().collect(), spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_split_measures_against_the_first_arrival() {
        let at = Instant::now();
        let samples: Vec<LatencySample> =
            [(1, 5_000), (1, 5_300), (2, 4_000), (1, 5_100), (2, 6_000)]
                .into_iter()
                .map(|(frame, latency_us)| LatencySample {
                    frame,
                    latency_us,
                    at,
                })
                .collect();
        let (mut first, mut spread) = latency_split(samples.iter());
        first.sort_unstable();
        spread.sort_unstable();
        assert_eq!(first, vec![4_000, 5_000]);
        assert_eq!(spread, vec![0, 0, 100, 300, 2_000]);
    }
}
