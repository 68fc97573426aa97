//! WHIP publisher: the test pattern as H.264 plus Opus, over one sendonly
//! peer connection.
//!
//! Encoding runs on its own thread (it is CPU work and paces itself to the
//! frame rate); an async task packetizes and writes the access units, another
//! sends audio every 20 ms, and a third turns keyframe requests from the
//! server into forced IDRs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState, StatsSelector};
use webrtc::rtp_transceiver::RtpTransceiver;

use super::pattern::{EncodedFrame, PatternEncoder};
use super::{
    Signals, build_peer, delete_session, h264_codec, http_client, micros_since_epoch, negotiate,
    opus_codec, rtt_from_stats, wait_connected,
};

/// An Opus packet of 20 ms of silence: TOC 0xF8 (CELT fullband, 20 ms, mono,
/// one frame) followed by the two-byte silent frame browsers themselves send.
///
/// The publisher sends only this: a real Opus encoder would mean a C library
/// built with cmake (libopus), which this project does not pull in. The
/// audio path (SSRC, packetization, forwarding, loss) is exercised all the
/// same, and decoders play it as silence.
pub const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

const AUDIO_FRAME: Duration = Duration::from_millis(20);

/// How to publish.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// WHIP endpoint, e.g. `http://127.0.0.1:8080/whip/mystream`.
    pub url: String,
    /// Bearer token (stream key), if the server wants one.
    pub token: Option<String>,
    /// Picture width (rounded down to even).
    pub width: u32,
    /// Picture height (rounded down to even).
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Target video bitrate.
    pub bitrate_bps: u32,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            url: String::new(),
            token: None,
            width: 640,
            height: 360,
            fps: 30,
            bitrate_bps: 1_000_000,
        }
    }
}

#[derive(Default)]
struct Counters {
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    keyframes_sent: AtomicU64,
    keyframe_requests: AtomicU64,
    audio_packets: AtomicU64,
}

/// A live WHIP session sending the test pattern.
pub struct Publisher {
    pc: Arc<dyn PeerConnection>,
    http: reqwest::Client,
    token: Option<String>,
    session_url: String,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    force_idr: Arc<AtomicBool>,
    encoder_thread: Option<std::thread::JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    signals: Signals,
    started: Instant,
}

impl Publisher {
    /// POSTs the offer, connects, and starts sending the pattern and audio in
    /// the background.
    pub async fn start(opts: PublishOptions) -> anyhow::Result<Publisher> {
        let started = Instant::now();
        // Fail on a bad size or codec setup before touching the network.
        let encoder = PatternEncoder::new(opts.width, opts.height, opts.fps, opts.bitrate_bps)?;
        let http = http_client()?;
        let (pc, mut signals) = build_peer(None, true).await?;

        let video = Arc::new(sample_track(RtpCodecKind::Video)?);
        let audio = Arc::new(sample_track(RtpCodecKind::Audio)?);
        let mut transceivers = Vec::new();
        for track in [&audio, &video] {
            let t = pc
                .add_transceiver_from_track(
                    Arc::clone(track) as Arc<dyn TrackLocal>,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Sendonly,
                        ..Default::default()
                    }),
                )
                .await
                .context("adding a sendonly transceiver")?;
            transceivers.push(t);
        }

        let session_url =
            match negotiate(&pc, &mut signals, &http, &opts.url, opts.token.as_deref()).await {
                Ok((url, _)) => url,
                Err(e) => {
                    let _ = pc.close().await;
                    return Err(e);
                }
            };
        let mut publisher = Publisher {
            pc,
            http,
            token: opts.token.clone(),
            session_url,
            counters: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
            force_idr: Arc::new(AtomicBool::new(false)),
            encoder_thread: None,
            tasks: Vec::new(),
            signals,
            started,
        };
        if let Err(e) = publisher
            .begin_media(encoder, &transceivers, video, audio, opts.fps)
            .await
        {
            // Leave no session behind on the server.
            let _ = publisher.stop().await;
            return Err(e);
        }
        Ok(publisher)
    }

    /// Absolute URL of the WHIP session (the resolved `Location`).
    pub fn session_url(&self) -> &str {
        &self.session_url
    }

    /// Access units handed to the RTP stack so far.
    pub fn frames_sent(&self) -> u64 {
        self.counters.frames_sent.load(Ordering::Relaxed)
    }

    /// Encoded video bytes handed to the RTP stack so far.
    pub fn bytes_sent(&self) -> u64 {
        self.counters.bytes_sent.load(Ordering::Relaxed)
    }

    /// IDR access units sent so far.
    pub fn keyframes_sent(&self) -> u64 {
        self.counters.keyframes_sent.load(Ordering::Relaxed)
    }

    /// PLI/FIR received from the server so far.
    pub fn keyframe_requests(&self) -> u64 {
        self.counters.keyframe_requests.load(Ordering::Relaxed)
    }

    /// Opus packets sent so far.
    pub fn audio_packets(&self) -> u64 {
        self.counters.audio_packets.load(Ordering::Relaxed)
    }

    /// Current peer connection state.
    pub fn connection_state(&self) -> RTCPeerConnectionState {
        *self.signals.state.borrow()
    }

    /// ICE round-trip time to the server, when measured.
    pub async fn rtt(&self) -> Option<Duration> {
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None).await;
        rtt_from_stats(&report)
    }

    /// Stops sending, DELETEs the session (returning the status code) and
    /// closes the peer connection.
    pub async fn stop(mut self) -> anyhow::Result<u16> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some(thread) = self.encoder_thread.take() {
            // The thread sees the flag within one frame interval.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let status = delete_session(&self.http, &self.session_url, self.token.as_deref()).await;
        let closed = self.pc.close().await;
        let status = status?;
        closed.context("closing the peer connection")?;
        Ok(status)
    }

    async fn begin_media(
        &mut self,
        mut encoder: PatternEncoder,
        transceivers: &[Arc<dyn RtpTransceiver>],
        video: Arc<TrackLocalStaticSample>,
        audio: Arc<TrackLocalStaticSample>,
        fps: u32,
    ) -> anyhow::Result<()> {
        wait_connected(&mut self.signals).await?;
        let mut pts = Vec::new();
        for t in transceivers {
            let sender = t.sender().await?.context("transceiver without a sender")?;
            let params = sender.get_parameters().await?;
            let pt = params
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.payload_type)
                .context("the server accepted no codec for a sender")?;
            pts.push(pt);
        }
        let (audio_pt, video_pt) = match pts[..] {
            [a, v] => (a, v),
            _ => anyhow::bail!("expected an audio and a video sender"),
        };
        let video_ssrc = first_ssrc(&video).await?;
        let audio_ssrc = first_ssrc(&audio).await?;
        let fps = fps.clamp(1, 120);
        let frame_duration = Duration::from_secs(1) / fps;

        // Encoder thread -> async writer. Small: a stalled writer should hold
        // the encoder back, not queue seconds of video.
        let (frame_tx, mut frame_rx) = mpsc::channel::<EncodedFrame>(4);
        let stop = Arc::clone(&self.stop);
        let force_idr = Arc::clone(&self.force_idr);
        self.encoder_thread = Some(
            std::thread::Builder::new()
                .name("lumen-publish-encoder".into())
                .spawn(move || {
                    let start = Instant::now();
                    let mut n: u64 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let due = start + frame_duration * (n as u32);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        if force_idr.swap(false, Ordering::Relaxed) {
                            encoder.force_keyframe();
                        }
                        match encoder.encode(n, micros_since_epoch()) {
                            Ok(Some(frame)) => {
                                if frame_tx.blocking_send(frame).is_err() {
                                    return;
                                }
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::error!("encoder stopped: {e:#}");
                                return;
                            }
                        }
                        n += 1;
                    }
                })
                .context("spawning the encoder thread")?,
        );

        let counters = Arc::clone(&self.counters);
        let track = Arc::clone(&video);
        self.tasks.push(tokio::spawn(async move {
            while let Some(frame) = frame_rx.recv().await {
                let len = frame.data.len() as u64;
                let sample = Sample {
                    data: Bytes::from(frame.data),
                    duration: frame_duration,
                    ..Sample::new(Instant::now())
                };
                match track
                    .sample_writer(video_ssrc, video_pt)
                    .write_sample(&sample)
                    .await
                {
                    Ok(()) => {
                        counters.frames_sent.fetch_add(1, Ordering::Relaxed);
                        counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
                        if frame.keyframe {
                            counters.keyframes_sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => tracing::debug!("video write failed: {e}"),
                }
            }
        }));

        let counters = Arc::clone(&self.counters);
        self.tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(AUDIO_FRAME);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let sample = Sample {
                    data: Bytes::from_static(&OPUS_SILENCE),
                    duration: AUDIO_FRAME,
                    ..Sample::new(Instant::now())
                };
                match audio
                    .sample_writer(audio_ssrc, audio_pt)
                    .write_sample(&sample)
                    .await
                {
                    Ok(()) => {
                        counters.audio_packets.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::debug!("audio write failed: {e}"),
                }
            }
        }));

        let counters = Arc::clone(&self.counters);
        let force_idr = Arc::clone(&self.force_idr);
        self.tasks.push(tokio::spawn(async move {
            while let Some(event) = video.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(_) = event {
                    // The forwarder lets only PLI and FIR through.
                    counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    force_idr.store(true, Ordering::Relaxed);
                }
            }
        }));
        Ok(())
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Publishes until `duration` passes or Ctrl-C, printing a line a second,
/// then DELETEs the session.
pub async fn run_publish_cli(
    opts: PublishOptions,
    duration: Option<Duration>,
) -> anyhow::Result<()> {
    let (w, h, fps, bps) = (opts.width, opts.height, opts.fps, opts.bitrate_bps);
    let publisher = Publisher::start(opts).await?;
    println!(
        "publishing {w}x{h} @ {fps} fps, {} kbit/s target: {}",
        bps / 1000,
        publisher.session_url()
    );
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
    let (mut last_frames, mut last_bytes, mut last_at) = (0u64, 0u64, Instant::now());
    let outcome = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut until_deadline => break Ok(()),
            _ = &mut ctrl_c => {
                println!("interrupted");
                break Ok(());
            }
        }
        let state = publisher.connection_state();
        if matches!(
            state,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        ) {
            break Err(anyhow::anyhow!("peer connection {state}"));
        }
        let now = Instant::now();
        let secs = now.duration_since(last_at).as_secs_f64().max(1e-3);
        let (frames, bytes) = (publisher.frames_sent(), publisher.bytes_sent());
        let rtt = publisher.rtt().await.map_or_else(
            || "-".to_owned(),
            |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
        );
        println!(
            "t={:>5.1}s frames={frames} fps={:.1} bitrate={:.0} kbit/s keyframes={} pli={} audio={} rtt={rtt} state={state}",
            publisher.started.elapsed().as_secs_f64(),
            (frames - last_frames) as f64 / secs,
            (bytes - last_bytes) as f64 * 8.0 / secs / 1000.0,
            publisher.keyframes_sent(),
            publisher.keyframe_requests(),
            publisher.audio_packets(),
        );
        (last_frames, last_bytes, last_at) = (frames, bytes, now);
    };
    let frames = publisher.frames_sent();
    let status = publisher.stop().await?;
    println!("sent {frames} frames; DELETE answered {status}");
    outcome
}

fn sample_track(kind: RtpCodecKind) -> anyhow::Result<TrackLocalStaticSample> {
    let codec = match kind {
        RtpCodecKind::Video => h264_codec(),
        _ => opus_codec(),
    };
    let track = MediaStreamTrack::new(
        "lumen-test-pattern".to_owned(),
        format!("lumen-{kind}"),
        format!("lumen {kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(rand::random::<u32>()),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    );
    Ok(TrackLocalStaticSample::new(Instant::now(), track)?)
}

async fn first_ssrc(track: &TrackLocalStaticSample) -> anyhow::Result<u32> {
    use webrtc::media_stream::Track;
    track
        .ssrcs()
        .await
        .first()
        .copied()
        .context("local track without an SSRC")
}
