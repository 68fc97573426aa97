//! `lumen publish` and `lumen watch` on a terminal: run until a duration
//! passes or Ctrl-C, print a line a second, end the session on the way out.
//! With chat on, received chat messages go to stdout, the status lines and
//! chat errors to stderr, and every line typed on stdin is sent.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use webrtc::peer_connection::RTCPeerConnectionState;

use super::chat::{ChatFrames, ChatSender, render};
use super::publish::{LayerStats, PublishOptions, Publisher};
use super::stats::WatchStats;
use super::watch::{WatchOptions, Watcher};

/// Publishes until `duration` passes or Ctrl-C, printing a line a second,
/// then DELETEs the session.
pub async fn run_publish_cli(
    opts: PublishOptions,
    duration: Option<Duration>,
) -> anyhow::Result<()> {
    let fps = opts.fps;
    let chat = opts.chat;
    let mut publisher = Publisher::start(opts).await?;
    let chat_task = terminal_chat(publisher.chat_sender(), publisher.chat_frames());
    let ladder: Vec<String> = publisher
        .layers()
        .iter()
        .map(|l| {
            let rid = l.rid.as_ref().map_or_else(String::new, |r| format!("{r} "));
            format!(
                "{rid}{}x{} {} kbit/s",
                l.width,
                l.height,
                l.bitrate_bps / 1000
            )
        })
        .collect();
    let simulcast = if ladder.len() > 1 { "simulcast " } else { "" };
    status(
        chat,
        format_args!(
            "publishing {simulcast}{} @ {fps} fps target: {}",
            ladder.join(", "),
            publisher.session_url()
        ),
    );
    let mut seconds = Seconds::new(duration, chat).await;
    let (mut last_frames, mut last_bytes, mut last_at) = (0u64, 0u64, Instant::now());
    let mut last_layers = publisher.layers();
    let outcome = loop {
        if !seconds.next().await {
            break Ok(());
        }
        let state = publisher.connection_state();
        if let Err(e) = still_up(state) {
            break Err(e);
        }
        let now = Instant::now();
        let secs = now.duration_since(last_at).as_secs_f64().max(1e-3);
        let (frames, bytes) = (publisher.frames_sent(), publisher.bytes_sent());
        let rtt = publisher.rtt().await.map_or_else(
            || "-".to_owned(),
            |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
        );
        let layers = publisher.layers();
        status(
            chat,
            format_args!(
                "t={:>5.1}s frames={frames} fps={:.1} bitrate={:.0} kbit/s{} keyframes={} pli={} audio={} rtt={rtt} state={state}",
                publisher.elapsed().as_secs_f64(),
                (frames - last_frames) as f64 / secs,
                (bytes - last_bytes) as f64 * 8.0 / secs / 1000.0,
                per_layer(&layers, &last_layers, secs),
                publisher.keyframes_sent(),
                publisher.keyframe_requests(),
                publisher.audio_packets(),
            ),
        );
        (last_frames, last_bytes, last_at) = (frames, bytes, now);
        last_layers = layers;
    };
    let frames = publisher.frames_sent();
    if let Some(task) = chat_task {
        task.abort();
    }
    let code = publisher.stop().await?;
    status(
        chat,
        format_args!("sent {frames} frames; DELETE answered {code}"),
    );
    outcome
}

/// Watches until `duration` passes or Ctrl-C, printing a line a second, then
/// DELETEs the session.
pub async fn run_watch_cli(opts: WatchOptions, duration: Option<Duration>) -> anyhow::Result<()> {
    let layer = opts.layer.clone();
    let chat = opts.chat;
    let mut watcher = Watcher::start(opts).await?;
    let chat_task = terminal_chat(watcher.chat_sender(), watcher.chat_frames());
    status(chat, format_args!("watching: {}", watcher.session_url()));
    if let (Some(rid), Some(url)) = (layer, watcher.layer_url()) {
        status(chat, format_args!("layer {rid} requested at {url}"));
    }
    let started = Instant::now();
    let mut seconds = Seconds::new(duration, chat).await;
    let outcome = loop {
        if !seconds.next().await {
            break Ok(());
        }
        if let Err(e) = still_up(watcher.connection_state()) {
            break Err(e);
        }
        status(
            chat,
            format_args!(
                "t={:>5.1}s {}",
                started.elapsed().as_secs_f64(),
                summary(&watcher.stats())
            ),
        );
    };
    if let Some(task) = chat_task {
        task.abort();
    }
    let (code, stats) = watcher.stop().await?;
    status(chat, format_args!("final: {}", summary(&stats)));
    status(chat, format_args!("DELETE answered {code}"));
    outcome
}

/// A status line: on stdout, or on stderr when stdout carries the chat.
fn status(chat: bool, line: std::fmt::Arguments<'_>) {
    if chat {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// Chat on the terminal: prints received frames (messages on stdout,
/// errors on stderr) on a task, and sends each non-blank line of stdin from
/// a thread of its own (a blocking read cannot be cancelled; the thread ends
/// with the process, at end of input, or when the channel is gone).
fn terminal_chat(sender: Option<ChatSender>, frames: Option<ChatFrames>) -> Option<JoinHandle<()>> {
    let (sender, mut frames) = (sender?, frames?);
    let spawned = std::thread::Builder::new()
        .name("chat-stdin".to_owned())
        .spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                if sender.send_text(&line).is_err() {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("chat: cannot read stdin: {e}");
    }
    Some(tokio::spawn(async move {
        while let Some(frame) = frames.recv().await {
            for line in render(&frame) {
                match line {
                    Ok(out) => println!("{out}"),
                    Err(err) => eprintln!("{err}"),
                }
            }
        }
        eprintln!("chat channel closed");
    }))
}

/// The once-a-second clock of a CLI run, until its deadline or Ctrl-C.
struct Seconds {
    tick: tokio::time::Interval,
    deadline: Option<tokio::time::Instant>,
    /// Stdout carries the chat: say "interrupted" on stderr.
    chat: bool,
    /// Created once, so a Ctrl-C between two waits is not missed.
    ctrl_c: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>,
}

impl Seconds {
    async fn new(duration: Option<Duration>, chat: bool) -> Seconds {
        let deadline = duration.map(|d| tokio::time::Instant::now() + d);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        Seconds {
            tick,
            deadline,
            chat,
            ctrl_c: Box::pin(tokio::signal::ctrl_c()),
        }
    }

    /// Waits for the next second; `false` when the run is over instead.
    async fn next(&mut self) -> bool {
        let deadline = self.deadline;
        let until_deadline = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.tick.tick() => true,
            _ = until_deadline => false,
            _ = &mut self.ctrl_c => {
                status(self.chat, format_args!("interrupted"));
                false
            }
        }
    }
}

/// An error once the peer connection has failed or closed.
fn still_up(state: RTCPeerConnectionState) -> anyhow::Result<()> {
    match state {
        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
            Err(anyhow::anyhow!("peer connection {state}"))
        }
        _ => Ok(()),
    }
}

/// Per layer with simulcast: " layers h=2480k/30.0 m=…"; nothing without.
fn per_layer(layers: &[LayerStats], last: &[LayerStats], secs: f64) -> String {
    if layers.len() <= 1 {
        return String::new();
    }
    let parts: Vec<String> = layers
        .iter()
        .zip(last)
        .map(|(l, prev)| {
            format!(
                "{}={:.0}k/{:.1}",
                l.rid.as_deref().unwrap_or("?"),
                l.bytes_sent.saturating_sub(prev.bytes_sent) as f64 * 8.0 / secs / 1000.0,
                l.frames_sent.saturating_sub(prev.frames_sent) as f64 / secs,
            )
        })
        .collect();
    format!(" layers {}", parts.join(" "))
}

fn summary(s: &WatchStats) -> String {
    let ms = |d: Option<Duration>| {
        d.map_or_else(
            || "-".to_owned(),
            |d| format!("{:.1}ms", d.as_secs_f64() * 1e3),
        )
    };
    let frame = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let layer = s
        .requested_layer
        .as_deref()
        .map_or_else(String::new, |l| format!(" layer={l}"));
    format!(
        "decoded={} fps={:.1} bitrate={:.0}kbit/s {}x{}{layer} frames={}..{} gaps={} ooo={} lost={}/{} incomplete={} audio={} connect={} ttff={} latency avg={} max={} rtt={}",
        s.frames_decoded,
        s.fps,
        s.bitrate_bps / 1000.0,
        s.width,
        s.height,
        frame(s.first_frame_number),
        frame(s.last_frame_number),
        s.frame_number_gaps,
        s.out_of_order,
        s.packets_lost,
        s.rtp_packets,
        s.incomplete_frames,
        s.audio_packets,
        ms(s.time_to_connect),
        ms(s.time_to_first_frame),
        ms(s.latency_avg),
        ms(s.latency_max),
        ms(s.rtt),
    )
}
