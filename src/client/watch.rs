//! WHEP watcher: receives one Opus and one H.264 track, reassembles access
//! units, reads the lumen timing SEI for frame-number continuity and
//! send-to-receive latency, and decodes with openh264 to prove the pictures
//! are real.
//!
//! Packets are handled on the async track tasks (cheap bookkeeping); decoding
//! runs on its own thread.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::shared::marshal::MarshalSize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState, StatsSelector};

use super::depacketize::{AccessUnit, JitterBuffer, SeqTracker};
use super::sei::{FrameTiming, access_unit_has_idr, find_timing_in_access_unit};
use super::{
    Signals, build_peer, clip, delete_session, find_link, http_client, micros_since_epoch,
    negotiate, rtt_from_stats, wait_connected,
};

/// Link relation of the WHEP video layer selection extension
/// (draft-ietf-wish-whep): POST `{"encodingId": rid}` to pin a layer.
pub const LAYER_LINK_REL: &str = "urn:ietf:params:whep:ext:core:layer";

/// How often a viewer that waits for a keyframe may ask for one.
const PLI_INTERVAL: Duration = Duration::from_millis(500);
/// How long an access unit with a hole waits for its retransmission.
const JITTER_HOLD: Duration = Duration::from_millis(200);

/// How to watch.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    /// WHEP endpoint, e.g. `http://127.0.0.1:8080/whep/mystream`.
    pub url: String,
    /// Bearer token, if the server wants one.
    pub token: Option<String>,
    /// Pin this simulcast layer (rid, e.g. `h`, `m`, `l`) through the WHEP
    /// layer extension right after the session is created; `None` leaves
    /// the choice to the server.
    pub layer: Option<String>,
}

/// A snapshot of what a watcher has received.
#[derive(Clone, Debug, Default)]
pub struct WatchStats {
    /// Pictures openh264 actually decoded.
    pub frames_decoded: u64,
    /// Frame number (from the SEI) of the first access unit received.
    pub first_frame_number: Option<u64>,
    /// Highest frame number received so far.
    pub last_frame_number: Option<u64>,
    /// Frame numbers skipped between consecutive received access units.
    pub frame_number_gaps: u64,
    /// Access units whose frame number was not above the previous one.
    pub out_of_order: u64,
    /// From the WHEP POST to the first decoded picture.
    pub time_to_first_frame: Option<Duration>,
    /// From the WHEP POST to the peer connection being connected (ICE +
    /// DTLS); the rest of `time_to_first_frame` is waiting for a keyframe.
    pub time_to_connect: Option<Duration>,
    /// Size of the last decoded picture.
    pub width: u32,
    /// Size of the last decoded picture.
    pub height: u32,
    /// RTP bytes (header + payload), audio and video.
    pub bytes_received: u64,
    /// RTP packets, audio and video.
    pub rtp_packets: u64,
    /// Packets missing from the RTP sequence numbers, audio and video.
    pub packets_lost: u64,
    /// Opus packets received.
    pub audio_packets: u64,
    /// Decoded pictures per second over the last second (or the run so far).
    pub fps: f64,
    /// Received bits per second over the last second (or the run so far).
    pub bitrate_bps: f64,
    /// ICE round-trip time to the server, if measured.
    pub rtt: Option<Duration>,
    /// Access units that lost packets (not decoded; a keyframe is requested).
    pub incomplete_frames: u64,
    /// Access units openh264 rejected.
    pub decode_errors: u64,
    /// PLIs sent to the server.
    pub keyframe_requests: u64,
    /// Access units that carried the lumen timing SEI.
    pub timed_frames: u64,
    /// Mean publisher-send to watcher-receive time of complete access units,
    /// from the SEI wall-clock stamp (meaningful when both run on one host).
    pub latency_avg: Option<Duration>,
    /// Largest such time seen.
    pub latency_max: Option<Duration>,
    /// The simulcast layer pinned through the WHEP layer extension, if any.
    pub requested_layer: Option<String>,
}

/// A live WHEP session.
pub struct Watcher {
    pc: Arc<dyn PeerConnection>,
    http: reqwest::Client,
    token: Option<String>,
    session_url: String,
    /// The layer selection endpoint, if the server advertised one.
    layer_url: Option<reqwest::Url>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    decoder_thread: Option<std::thread::JoinHandle<()>>,
    signals: Signals,
}

impl Watcher {
    /// POSTs a recvonly offer (audio then video), pins `opts.layer` if set,
    /// connects, and receives and decodes in the background. A 409 means
    /// nobody is publishing.
    pub async fn start(opts: WatchOptions) -> anyhow::Result<Watcher> {
        let http = http_client()?;
        let (track_tx, mut track_rx) = mpsc::unbounded_channel();
        let (pc, mut signals) = build_peer(Some(track_tx), false, true).await?;
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await
            .context("adding a recvonly transceiver")?;
        }

        let shared = Arc::new(Shared {
            state: Mutex::new(WatchState::default()),
            posted_at: Mutex::new(Instant::now()),
            decoder_failed: std::sync::atomic::AtomicBool::new(false),
        });
        let (au_tx, au_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
        let decoder_thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("lumen-watch-decoder".into())
                .spawn(move || decode_loop(&au_rx, &shared))
                .context("spawning the decoder thread")?
        };

        let mut tasks = Vec::new();
        {
            let shared = Arc::clone(&shared);
            tasks.push(tokio::spawn(async move {
                // Owning the track tasks here means aborting this task ends
                // them too, which drops the last decoder senders.
                let mut track_tasks = tokio::task::JoinSet::new();
                while let Some(track) = track_rx.recv().await {
                    let shared = Arc::clone(&shared);
                    let au_tx = au_tx.clone();
                    track_tasks.spawn(async move {
                        match track.kind().await {
                            RtpCodecKind::Video => receive_video(track, shared, au_tx).await,
                            _ => receive_audio(track, shared).await,
                        }
                    });
                }
                drop(au_tx);
                track_tasks.join_all().await;
            }));
        }

        let negotiated =
            negotiate(&pc, &mut signals, &http, &opts.url, opts.token.as_deref()).await;
        let negotiated = match negotiated {
            Ok(ok) => ok,
            Err(e) => {
                for t in &tasks {
                    t.abort();
                }
                let _ = pc.close().await;
                return Err(e);
            }
        };
        let posted_at = negotiated.posted_at;
        *lock(&shared.posted_at) = posted_at;
        let layer_url = find_link(&negotiated.links, LAYER_LINK_REL, &negotiated.base_url);
        let mut watcher = Watcher {
            pc,
            http,
            token: opts.token,
            session_url: negotiated.session_url,
            layer_url,
            shared,
            tasks,
            decoder_thread: Some(decoder_thread),
            signals,
        };
        // Before ICE completes, so the first keyframe is of the right layer.
        if let Some(rid) = &opts.layer
            && let Err(e) = watcher.select_layer(rid).await
        {
            let _ = watcher.stop().await;
            return Err(e);
        }
        if let Err(e) = wait_connected(&mut watcher.signals).await {
            let _ = watcher.stop().await;
            return Err(e);
        }
        lock(&watcher.shared.state).stats.time_to_connect = Some(posted_at.elapsed());
        let pc = Arc::clone(&watcher.pc);
        let shared = Arc::clone(&watcher.shared);
        watcher.tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
                if let Some(rtt) = rtt_from_stats(&report) {
                    lock(&shared.state).stats.rtt = Some(rtt);
                }
            }
        }));
        Ok(watcher)
    }

    /// Absolute URL of the WHEP session (the resolved `Location`).
    pub fn session_url(&self) -> &str {
        &self.session_url
    }

    /// The WHEP layer selection endpoint (`Link` with
    /// `rel="urn:ietf:params:whep:ext:core:layer"`), if the server sent one.
    pub fn layer_url(&self) -> Option<&str> {
        self.layer_url.as_ref().map(reqwest::Url::as_str)
    }

    /// Asks the server to send simulcast layer `rid` (WHEP layer extension:
    /// POST `{"encodingId": rid}`). Fails if the server advertised no layer
    /// endpoint or does not answer 2xx.
    pub async fn select_layer(&self, rid: &str) -> anyhow::Result<()> {
        let url = self.layer_url.as_ref().with_context(|| {
            format!(
                "the server offers no layer selection for {} (no Link header with \
                 rel=\"{LAYER_LINK_REL}\" in the WHEP answer)",
                self.session_url
            )
        })?;
        post_layer(&self.http, url, self.token.as_deref(), rid).await?;
        lock(&self.shared.state).stats.requested_layer = Some(rid.to_owned());
        Ok(())
    }

    /// Current peer connection state.
    pub fn connection_state(&self) -> RTCPeerConnectionState {
        *self.signals.state.borrow()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> WatchStats {
        lock(&self.shared.state).snapshot(Instant::now())
    }

    /// DELETEs the session, closes the peer connection, and returns the
    /// DELETE status with the final counters.
    pub async fn stop(mut self) -> anyhow::Result<(u16, WatchStats)> {
        let status = delete_session(&self.http, &self.session_url, self.token.as_deref()).await;
        let closed = self.pc.close().await;
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some(thread) = self.decoder_thread.take() {
            // The decoder ends when the last sender (held by the track
            // tasks) is gone; closing the connection ends those.
            let joined = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::task::spawn_blocking(move || thread.join()),
            )
            .await;
            if joined.is_err() {
                tracing::debug!("decoder thread still busy after close");
            }
        }
        let stats = self.stats();
        let status = status?;
        closed.context("closing the peer connection")?;
        Ok((status, stats))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// POSTs `{"encodingId": rid}` to a WHEP layer endpoint.
async fn post_layer(
    http: &reqwest::Client,
    url: &reqwest::Url,
    token: Option<&str>,
    rid: &str,
) -> anyhow::Result<()> {
    let body = serde_json::json!({ "encodingId": rid }).to_string();
    let mut req = http
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        anyhow::bail!(
            "selecting layer {rid:?}: POST {url} answered {status}: {}",
            clip(&body)
        );
    }
    Ok(())
}

/// Watches until `duration` passes or Ctrl-C, printing a line a second, then
/// DELETEs the session.
pub async fn run_watch_cli(opts: WatchOptions, duration: Option<Duration>) -> anyhow::Result<()> {
    let layer = opts.layer.clone();
    let watcher = Watcher::start(opts).await?;
    println!("watching: {}", watcher.session_url());
    if let (Some(rid), Some(url)) = (layer, watcher.layer_url()) {
        println!("layer {rid} requested at {url}");
    }
    let started = Instant::now();
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    // Created once, so a Ctrl-C between two polls is not missed.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let until_deadline = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);
    let outcome = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut until_deadline => break Ok(()),
            _ = &mut ctrl_c => {
                println!("interrupted");
                break Ok(());
            }
        }
        let state = watcher.connection_state();
        if matches!(
            state,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        ) {
            break Err(anyhow::anyhow!("peer connection {state}"));
        }
        println!(
            "t={:>5.1}s {}",
            started.elapsed().as_secs_f64(),
            summary(&watcher.stats())
        );
    };
    let (status, stats) = watcher.stop().await?;
    println!("final: {}", summary(&stats));
    println!("DELETE answered {status}");
    outcome
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

struct Shared {
    state: Mutex<WatchState>,
    /// When the WHEP POST went out: the origin of time-to-first-frame.
    posted_at: Mutex<Instant>,
    /// The decoder rejected a picture: resynchronise on a keyframe (asked
    /// for with a PLI), as a browser does, instead of feeding it more
    /// pictures that reference the lost one.
    decoder_failed: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct WatchState {
    stats: WatchStats,
    video_seq: SeqTracker,
    audio_seq: SeqTracker,
    latency_sum: Duration,
    latency_count: u32,
    /// Start of the current rate window: (when, frames decoded, bytes).
    rate_mark: Option<(Instant, u64, u64)>,
    rates: Option<(f64, f64)>,
}

impl WatchState {
    fn on_packet(&mut self, now: Instant, bytes: usize) {
        self.stats.rtp_packets += 1;
        self.stats.bytes_received += bytes as u64;
        self.stats.packets_lost = self.video_seq.lost() + self.audio_seq.lost();
        self.roll(now);
    }

    fn on_timing(&mut self, timing: FrameTiming, complete: bool) {
        let n = timing.frame_number;
        let s = &mut self.stats;
        s.timed_frames += 1;
        s.first_frame_number.get_or_insert(n);
        match s.last_frame_number {
            Some(prev) if n <= prev => s.out_of_order += 1,
            Some(prev) => {
                s.frame_number_gaps += n - prev - 1;
                s.last_frame_number = Some(n);
            }
            None => s.last_frame_number = Some(n),
        }
        if complete {
            let latency =
                Duration::from_micros(micros_since_epoch().saturating_sub(timing.sent_at_micros));
            self.latency_sum += latency;
            self.latency_count += 1;
            s.latency_avg = Some(self.latency_sum / self.latency_count);
            s.latency_max = Some(s.latency_max.map_or(latency, |m| m.max(latency)));
        }
    }

    /// Closes the rate window once it spans a second.
    fn roll(&mut self, now: Instant) {
        let (frames, bytes) = (self.stats.frames_decoded, self.stats.bytes_received);
        match self.rate_mark {
            None => self.rate_mark = Some((now, frames, bytes)),
            Some((at, f0, b0)) => {
                let dt = now.duration_since(at).as_secs_f64();
                if dt >= 1.0 {
                    self.rates = Some(((frames - f0) as f64 / dt, (bytes - b0) as f64 * 8.0 / dt));
                    self.rate_mark = Some((now, frames, bytes));
                }
            }
        }
    }

    fn snapshot(&mut self, now: Instant) -> WatchStats {
        self.roll(now);
        let mut s = self.stats.clone();
        match (self.rates, self.rate_mark) {
            (Some((fps, bps)), _) => (s.fps, s.bitrate_bps) = (fps, bps),
            (None, Some((at, f0, b0))) => {
                let dt = now.duration_since(at).as_secs_f64().max(1e-3);
                s.fps = (s.frames_decoded - f0) as f64 / dt;
                s.bitrate_bps = (s.bytes_received - b0) as f64 * 8.0 / dt;
            }
            (None, None) => {}
        }
        s
    }
}

async fn receive_video(
    track: Arc<dyn TrackRemote>,
    shared: Arc<Shared>,
    au_tx: std::sync::mpsc::SyncSender<Vec<u8>>,
) {
    let mut jitter = JitterBuffer::new(JITTER_HOLD);
    let mut media_ssrc = 0;
    let mut need_keyframe = true;
    let mut last_pli: Option<Instant> = None;
    loop {
        // Wake for the next packet, or when a hole in the buffer is given up.
        let event = match jitter.deadline() {
            Some(at) => tokio::time::timeout_at(at.into(), track.poll()).await.ok(),
            None => Some(track.poll().await),
        };
        let now = Instant::now();
        match event {
            Some(None | Some(TrackRemoteEvent::OnEnded)) => break,
            Some(Some(TrackRemoteEvent::OnRtpPacket(pkt))) => {
                media_ssrc = pkt.header.ssrc;
                let mut st = lock(&shared.state);
                st.video_seq.record(pkt.header.sequence_number);
                st.on_packet(now, pkt.header.marshal_size() + pkt.payload.len());
                jitter.push(
                    now,
                    pkt.header.sequence_number,
                    pkt.header.timestamp,
                    pkt.header.marker,
                    &pkt.payload,
                );
            }
            Some(Some(_)) => continue,
            None => {}
        }
        let units: Vec<AccessUnit> = std::iter::from_fn(|| jitter.pop(now)).collect();
        if shared
            .decoder_failed
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            need_keyframe = true;
        }
        for unit in units {
            let (data, complete) = match unit {
                AccessUnit::Complete(data) => (data, true),
                AccessUnit::Incomplete { partial } => (partial, false),
            };
            let timing = find_timing_in_access_unit(&data);
            {
                let mut st = lock(&shared.state);
                if let Some(t) = timing {
                    st.on_timing(t, complete);
                }
                if !complete {
                    st.stats.incomplete_frames += 1;
                }
            }
            if complete && (!need_keyframe || access_unit_has_idr(&data)) {
                need_keyframe = false;
                // A full queue means the decoder is behind: drop and resync
                // on the next keyframe rather than queue up latency.
                if au_tx.try_send(data).is_err() {
                    need_keyframe = true;
                }
            } else {
                need_keyframe = true;
            }
            if need_keyframe && last_pli.is_none_or(|t| now.duration_since(t) >= PLI_INTERVAL) {
                last_pli = Some(now);
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
                if track.write_rtcp(vec![Box::new(pli)]).await.is_ok() {
                    lock(&shared.state).stats.keyframe_requests += 1;
                }
            }
        }
    }
}

async fn receive_audio(track: Arc<dyn TrackRemote>, shared: Arc<Shared>) {
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(pkt) => {
                let mut st = lock(&shared.state);
                st.audio_seq.record(pkt.header.sequence_number);
                st.stats.audio_packets += 1;
                st.on_packet(
                    Instant::now(),
                    pkt.header.marshal_size() + pkt.payload.len(),
                );
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

fn decode_loop(rx: &std::sync::mpsc::Receiver<Vec<u8>>, shared: &Shared) {
    let mut decoder = match Decoder::new() {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("openh264 decoder: {e}");
            return;
        }
    };
    while let Ok(au) = rx.recv() {
        let result = decoder.decode(&au).map(|pic| pic.map(|p| p.dimensions()));
        let mut st = lock(&shared.state);
        match result {
            Ok(Some((w, h))) => {
                st.stats.frames_decoded += 1;
                st.stats.width = w as u32;
                st.stats.height = h as u32;
                if st.stats.time_to_first_frame.is_none() {
                    st.stats.time_to_first_frame = Some(lock(&shared.posted_at).elapsed());
                }
            }
            Ok(None) => {}
            Err(_) => {
                st.stats.decode_errors += 1;
                shared
                    .decoder_failed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// Locks a mutex, shrugging off poisoning: the counters stay usable even if
/// a task panicked while holding them.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers one HTTP request with `status_line` and returns what it read.
    async fn one_shot_server(status_line: &'static str) -> (reqwest::Url, JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers, then the body by Content-Length.
            loop {
                let n = sock.read(&mut chunk).await.expect("read");
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())
                                .flatten()
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len || n == 0 {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let resp = format!("{status_line}\r\ncontent-length: 4\r\n\r\nnope");
            sock.write_all(resp.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&buf).to_string()
        });
        let url = reqwest::Url::parse(&format!("http://{addr}/whep/s/layer")).expect("url");
        (url, task)
    }

    #[tokio::test]
    async fn layer_request_is_json_with_the_encoding_id() {
        let (url, server) = one_shot_server("HTTP/1.1 204 No Content").await;
        let http = http_client().expect("client");
        post_layer(&http, &url, Some("secret"), "l")
            .await
            .expect("layer selected");
        let request = server.await.expect("server");
        let lower = request.to_ascii_lowercase();
        assert!(request.starts_with("POST /whep/s/layer "), "{request}");
        assert!(
            lower.contains("content-type: application/json"),
            "{request}"
        );
        assert!(lower.contains("authorization: bearer secret"), "{request}");
        assert!(request.ends_with(r#"{"encodingId":"l"}"#), "{request}");
    }

    #[tokio::test]
    async fn refused_layer_request_is_an_error_with_the_status() {
        let (url, server) = one_shot_server("HTTP/1.1 400 Bad Request").await;
        let http = http_client().expect("client");
        let err = post_layer(&http, &url, None, "x")
            .await
            .expect_err("400 is an error");
        let _ = server.await;
        let msg = format!("{err:#}");
        assert!(msg.contains("400") && msg.contains("\"x\""), "{msg}");
    }
}
