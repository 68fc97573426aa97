//! WHIP publisher: the test pattern as H.264 plus Opus, over one sendonly
//! peer connection; with `simulcast`, as three H.264 layers (rids `h`, `m`,
//! `l`) of the same picture on one video m-line.
//!
//! Encoding runs on its own thread per layer (it is CPU work and paces itself
//! to the frame rate; all layers share one clock, so frame `n` carries the
//! same number in every layer); an async task per layer packetizes and writes
//! the access units, another sends audio every 20 ms, and a third turns
//! keyframe requests from the server into forced IDRs on the layer asked for.
//!
//! Simulcast uses webrtc-rs's own support: one local track whose encodings
//! carry a rid and an SSRC each makes the offer say `a=rid:h send`, …,
//! `a=simulcast:send h;m;l`; the packets are tagged with the `mid` and `rid`
//! header extensions here, as webrtc-rs does not add them by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
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
    MID_EXTENSION_URI, RID_EXTENSION_URI, Signals, build_peer, delete_session, h264_codec,
    http_client, micros_since_epoch, negotiate, opus_codec, rtt_from_stats, sdes_extension,
    wait_connected,
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

/// One simulcast layer of `lumen publish --simulcast`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimulcastLayer {
    /// RTP stream id (`a=rid`).
    pub rid: &'static str,
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Target bitrate.
    pub bitrate_bps: u32,
}

/// The simulcast ladder, highest first (the order of `a=simulcast:send`).
pub const SIMULCAST_LAYERS: [SimulcastLayer; 3] = [
    SimulcastLayer {
        rid: "h",
        width: 1280,
        height: 720,
        bitrate_bps: 2_500_000,
    },
    SimulcastLayer {
        rid: "m",
        width: 640,
        height: 360,
        bitrate_bps: 800_000,
    },
    SimulcastLayer {
        rid: "l",
        width: 320,
        height: 180,
        bitrate_bps: 200_000,
    },
];

/// How to publish.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// WHIP endpoint, e.g. `http://127.0.0.1:8080/whip/mystream`.
    pub url: String,
    /// Bearer token (stream key), if the server wants one.
    pub token: Option<String>,
    /// Picture width (rounded down to even). Ignored with `simulcast`.
    pub width: u32,
    /// Picture height (rounded down to even). Ignored with `simulcast`.
    pub height: u32,
    /// Frames per second (of every layer).
    pub fps: u32,
    /// Target video bitrate. Ignored with `simulcast`.
    pub bitrate_bps: u32,
    /// Send the three layers of [`SIMULCAST_LAYERS`] instead of one picture.
    pub simulcast: bool,
    /// Encode two seconds once and send them round
    /// ([`PatternEncoder::looping`]): for load tests, so the encoder does
    /// not compete with the server for the machine.
    pub loop_pattern: bool,
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
            simulcast: false,
            loop_pattern: false,
        }
    }
}

/// What one video layer (the only one without simulcast) has sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// RTP stream id; `None` without simulcast.
    pub rid: Option<String>,
    /// SSRC of the layer.
    pub ssrc: u32,
    /// Encoded picture width.
    pub width: u32,
    /// Encoded picture height.
    pub height: u32,
    /// Target bitrate.
    pub bitrate_bps: u32,
    /// Access units handed to the RTP stack.
    pub frames_sent: u64,
    /// Encoded bytes handed to the RTP stack.
    pub bytes_sent: u64,
    /// IDR access units sent.
    pub keyframes_sent: u64,
    /// PLI/FIR received for this layer's SSRC.
    pub keyframe_requests: u64,
}

/// One video encoding: its identity and counters.
struct Layer {
    rid: Option<&'static str>,
    ssrc: u32,
    width: u32,
    height: u32,
    bitrate_bps: u32,
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    keyframes_sent: AtomicU64,
    keyframe_requests: AtomicU64,
    /// Set by a keyframe request, taken by the layer's encoder thread.
    force_idr: AtomicBool,
}

impl Layer {
    fn stats(&self) -> LayerStats {
        LayerStats {
            rid: self.rid.map(str::to_owned),
            ssrc: self.ssrc,
            width: self.width,
            height: self.height,
            bitrate_bps: self.bitrate_bps,
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            keyframes_sent: self.keyframes_sent.load(Ordering::Relaxed),
            keyframe_requests: self.keyframe_requests.load(Ordering::Relaxed),
        }
    }

    fn request_keyframe(&self) {
        self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        self.force_idr.store(true, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Counters {
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
    layers: Arc<[Layer]>,
    stop: Arc<AtomicBool>,
    encoder_threads: Vec<std::thread::JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    signals: Signals,
    started: Instant,
}

/// The local tracks and transceivers of a publisher's offer.
struct LocalMedia {
    video: Arc<TrackLocalStaticSample>,
    audio: Arc<TrackLocalStaticSample>,
    audio_ssrc: u32,
    /// Audio, then video.
    transceivers: Vec<Arc<dyn RtpTransceiver>>,
}

impl Publisher {
    /// POSTs the offer, connects, and starts sending the pattern and audio in
    /// the background.
    pub async fn start(opts: PublishOptions) -> anyhow::Result<Publisher> {
        let started = Instant::now();
        let ladder: Vec<(Option<&'static str>, u32, u32, u32)> = if opts.simulcast {
            SIMULCAST_LAYERS
                .iter()
                .map(|l| (Some(l.rid), l.width, l.height, l.bitrate_bps))
                .collect()
        } else {
            vec![(None, opts.width, opts.height, opts.bitrate_bps)]
        };
        // Fail on a bad size or codec setup before touching the network.
        let mut encoders = Vec::with_capacity(ladder.len());
        let mut ssrcs = distinct_ssrcs(ladder.len() + 1);
        let audio_ssrc = ssrcs.pop().context("no SSRC for audio")?;
        let mut layers = Vec::with_capacity(ladder.len());
        for ((rid, w, h, bps), ssrc) in ladder.into_iter().zip(ssrcs) {
            let mut encoder = PatternEncoder::new(w, h, opts.fps, bps)?;
            if opts.loop_pattern {
                encoder = encoder.looping();
            }
            let (width, height) = encoder.dimensions();
            encoders.push(encoder);
            layers.push(Layer {
                rid,
                ssrc,
                width,
                height,
                bitrate_bps: bps,
                frames_sent: AtomicU64::new(0),
                bytes_sent: AtomicU64::new(0),
                keyframes_sent: AtomicU64::new(0),
                keyframe_requests: AtomicU64::new(0),
                force_idr: AtomicBool::new(false),
            });
        }
        let layers: Arc<[Layer]> = layers.into();
        let http = http_client()?;
        let (pc, mut signals) = build_peer(None, true, false).await?;
        let media = match add_local_media(&pc, &layers, audio_ssrc).await {
            Ok(m) => m,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };

        let session_url =
            match negotiate(&pc, &mut signals, &http, &opts.url, opts.token.as_deref()).await {
                Ok(n) => n.session_url,
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
            layers,
            stop: Arc::new(AtomicBool::new(false)),
            encoder_threads: Vec::new(),
            tasks: Vec::new(),
            signals,
            started,
        };
        if let Err(e) = publisher
            .begin_media(encoders, media, opts.fps, opts.simulcast)
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

    /// Pictures handed to the RTP stack so far (with simulcast: of the top
    /// layer; each picture goes out once per layer).
    pub fn frames_sent(&self) -> u64 {
        self.layers
            .first()
            .map_or(0, |l| l.frames_sent.load(Ordering::Relaxed))
    }

    /// Encoded video bytes handed to the RTP stack so far, all layers.
    pub fn bytes_sent(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| l.bytes_sent.load(Ordering::Relaxed))
            .sum()
    }

    /// IDR access units sent so far, all layers.
    pub fn keyframes_sent(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| l.keyframes_sent.load(Ordering::Relaxed))
            .sum()
    }

    /// PLI/FIR received from the server so far.
    pub fn keyframe_requests(&self) -> u64 {
        self.counters.keyframe_requests.load(Ordering::Relaxed)
    }

    /// Opus packets sent so far.
    pub fn audio_packets(&self) -> u64 {
        self.counters.audio_packets.load(Ordering::Relaxed)
    }

    /// Per-layer counters, highest layer first (one entry without simulcast).
    pub fn layers(&self) -> Vec<LayerStats> {
        self.layers.iter().map(Layer::stats).collect()
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
        let threads = std::mem::take(&mut self.encoder_threads);
        if !threads.is_empty() {
            // The threads see the flag within one frame interval.
            let _ = tokio::task::spawn_blocking(move || {
                for thread in threads {
                    let _ = thread.join();
                }
            })
            .await;
        }
        let status = delete_session(&self.http, &self.session_url, self.token.as_deref()).await;
        let closed = self.pc.close().await;
        let status = status?;
        closed.context("closing the peer connection")?;
        Ok(status)
    }

    async fn begin_media(
        &mut self,
        encoders: Vec<PatternEncoder>,
        media: LocalMedia,
        fps: u32,
        simulcast: bool,
    ) -> anyhow::Result<()> {
        wait_connected(&mut self.signals).await?;
        let mut pts = Vec::new();
        let mut video_extensions = Vec::new();
        for t in &media.transceivers {
            let sender = t.sender().await?.context("transceiver without a sender")?;
            let params = sender.get_parameters().await?;
            let pt = params
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.payload_type)
                .context("the server accepted no codec for a sender")?;
            pts.push(pt);
            video_extensions = params.rtp_parameters.header_extensions;
        }
        let (audio_pt, video_pt) = match pts[..] {
            [a, v] => (a, v),
            _ => anyhow::bail!("expected an audio and a video sender"),
        };
        // With simulcast every video packet says which m-line and which
        // layer it belongs to; a server that did not accept the extensions
        // could not tell the layers apart.
        let mid = if simulcast {
            for uri in [MID_EXTENSION_URI, RID_EXTENSION_URI] {
                anyhow::ensure!(
                    video_extensions.iter().any(|e| e.uri == uri),
                    "the server's answer did not accept the {uri} header extension, \
                     which simulcast needs"
                );
            }
            let answer = self
                .pc
                .remote_description()
                .await
                .map(|d| d.sdp)
                .unwrap_or_default();
            let video_answer = answer.find("m=video").map_or("", |i| &answer[i..]);
            anyhow::ensure!(
                video_answer.contains("a=simulcast:recv"),
                "the server's answer does not accept simulcast (no a=simulcast:recv on video)"
            );
            let video = media.transceivers.get(1).context("no video transceiver")?;
            Some(Bytes::from(
                video
                    .mid()
                    .await?
                    .context("the video m-line has no mid after negotiation")?,
            ))
        } else {
            None
        };
        let fps = fps.clamp(1, 120);
        let frame_duration = Duration::from_secs(1) / fps;

        // One clock for all layers: frame n is due at the same instant in
        // each, and carries the same number.
        let start = Instant::now();
        for (index, encoder) in encoders.into_iter().enumerate() {
            let layer_name = self.layers[index].rid.unwrap_or("video");
            // Encoder thread -> async writer. Small: a stalled writer should
            // hold the encoder back, not queue seconds of video.
            let (frame_tx, mut frame_rx) = mpsc::channel::<EncodedFrame>(4);
            let stop = Arc::clone(&self.stop);
            let layers = Arc::clone(&self.layers);
            self.encoder_threads.push(
                std::thread::Builder::new()
                    .name(format!("lumen-publish-encoder-{layer_name}"))
                    .spawn(move || {
                        encode_loop(
                            encoder,
                            &layers[index],
                            start,
                            frame_duration,
                            &stop,
                            &frame_tx,
                        );
                    })
                    .context("spawning an encoder thread")?,
            );

            let layers = Arc::clone(&self.layers);
            let track = Arc::clone(&media.video);
            let tags = mid.clone().and_then(|mid| {
                layers[index]
                    .rid
                    .map(|rid| (mid, Bytes::from_static(rid.as_bytes())))
            });
            self.tasks.push(tokio::spawn(async move {
                let layer = &layers[index];
                while let Some(frame) = frame_rx.recv().await {
                    let len = frame.data.len() as u64;
                    let sample = Sample {
                        data: Bytes::from(frame.data),
                        duration: frame_duration,
                        ..Sample::new(Instant::now())
                    };
                    let mut writer = track.sample_writer(layer.ssrc, video_pt);
                    if let Some((mid, rid)) = &tags {
                        writer = writer
                            .with_extension(sdes_extension(MID_EXTENSION_URI, mid))
                            .with_extension(sdes_extension(RID_EXTENSION_URI, rid));
                    }
                    match writer.write_sample(&sample).await {
                        Ok(()) => {
                            layer.frames_sent.fetch_add(1, Ordering::Relaxed);
                            layer.bytes_sent.fetch_add(len, Ordering::Relaxed);
                            if frame.keyframe {
                                layer.keyframes_sent.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => tracing::debug!("video write failed: {e}"),
                    }
                }
            }));
        }

        let counters = Arc::clone(&self.counters);
        let (audio, audio_ssrc) = (media.audio, media.audio_ssrc);
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
        let layers = Arc::clone(&self.layers);
        let video = media.video;
        self.tasks.push(tokio::spawn(async move {
            while let Some(event) = video.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(packets) = event {
                    // The forwarder lets only PLI and FIR through.
                    counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    route_keyframe_requests(&packets, &layers);
                }
            }
        }));
        Ok(())
    }
}

/// Paces, draws and encodes one layer until `stop`.
fn encode_loop(
    mut encoder: PatternEncoder,
    layer: &Layer,
    start: Instant,
    frame_duration: Duration,
    stop: &AtomicBool,
    frame_tx: &mpsc::Sender<EncodedFrame>,
) {
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = start + frame_duration * (n as u32);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if layer.force_idr.swap(false, Ordering::Relaxed) {
            encoder.force_keyframe();
        }
        match encoder.encode(n, micros_since_epoch) {
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
}

/// Forces an IDR on each layer a PLI or FIR names; on every layer when none
/// matches (a request for an SSRC we do not know still wants a picture).
fn route_keyframe_requests(packets: &[Box<dyn rtc::rtcp::Packet>], layers: &[Layer]) {
    let mut ssrcs = Vec::new();
    for p in packets {
        let any = p.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            ssrcs.push(pli.media_ssrc);
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            ssrcs.extend(fir.fir.iter().map(|e| e.ssrc));
        }
    }
    let mut matched = false;
    for layer in layers.iter().filter(|l| ssrcs.contains(&l.ssrc)) {
        layer.request_keyframe();
        matched = true;
    }
    if !matched {
        for layer in layers {
            layer.request_keyframe();
        }
    }
}

/// Adds the sendonly audio and video transceivers (audio first). With more
/// than one layer, the video track carries one encoding per layer, each with
/// its rid and SSRC: webrtc-rs then offers `a=rid:… send` and
/// `a=simulcast:send …`.
async fn add_local_media(
    pc: &Arc<dyn PeerConnection>,
    layers: &[Layer],
    audio_ssrc: u32,
) -> anyhow::Result<LocalMedia> {
    let video = Arc::new(video_track(layers)?);
    let audio = Arc::new(audio_track(audio_ssrc)?);
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
    Ok(LocalMedia {
        video,
        audio,
        audio_ssrc,
        transceivers,
    })
}

/// Publishes until `duration` passes or Ctrl-C, printing a line a second,
/// then DELETEs the session.
pub async fn run_publish_cli(
    opts: PublishOptions,
    duration: Option<Duration>,
) -> anyhow::Result<()> {
    let fps = opts.fps;
    let publisher = Publisher::start(opts).await?;
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
    println!(
        "publishing {simulcast}{} @ {fps} fps target: {}",
        ladder.join(", "),
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
    let mut last_layers = publisher.layers();
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
        let layers = publisher.layers();
        // Per layer with simulcast: "h=2480k/30.0 m=…".
        let per_layer = if layers.len() > 1 {
            let parts: Vec<String> = layers
                .iter()
                .zip(&last_layers)
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
        } else {
            String::new()
        };
        println!(
            "t={:>5.1}s frames={frames} fps={:.1} bitrate={:.0} kbit/s{per_layer} keyframes={} pli={} audio={} rtt={rtt} state={state}",
            publisher.started.elapsed().as_secs_f64(),
            (frames - last_frames) as f64 / secs,
            (bytes - last_bytes) as f64 * 8.0 / secs / 1000.0,
            publisher.keyframes_sent(),
            publisher.keyframe_requests(),
            publisher.audio_packets(),
        );
        (last_frames, last_bytes, last_at) = (frames, bytes, now);
        last_layers = layers;
    };
    let frames = publisher.frames_sent();
    let status = publisher.stop().await?;
    println!("sent {frames} frames; DELETE answered {status}");
    outcome
}

fn video_track(layers: &[Layer]) -> anyhow::Result<TrackLocalStaticSample> {
    let encodings = layers
        .iter()
        .map(|layer| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: layer.rid.unwrap_or_default().to_owned(),
                ssrc: Some(layer.ssrc),
                ..Default::default()
            },
            codec: h264_codec(),
            ..Default::default()
        })
        .collect();
    let track = MediaStreamTrack::new(
        "lumen-test-pattern".to_owned(),
        "lumen-video".to_owned(),
        "lumen video".to_owned(),
        RtpCodecKind::Video,
        encodings,
    );
    Ok(TrackLocalStaticSample::new(Instant::now(), track)?)
}

fn audio_track(ssrc: u32) -> anyhow::Result<TrackLocalStaticSample> {
    let track = MediaStreamTrack::new(
        "lumen-test-pattern".to_owned(),
        "lumen-audio".to_owned(),
        "lumen audio".to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: opus_codec(),
            ..Default::default()
        }],
    );
    Ok(TrackLocalStaticSample::new(Instant::now(), track)?)
}

/// `n` random, distinct, non-zero SSRCs.
fn distinct_ssrcs(n: usize) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::with_capacity(n);
    while out.len() < n {
        let ssrc = rand::random::<u32>();
        if ssrc != 0 && !out.contains(&ssrc) {
            out.push(ssrc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers_for(simulcast: bool) -> Vec<Layer> {
        let ladder: Vec<(Option<&'static str>, u32, u32)> = if simulcast {
            SIMULCAST_LAYERS
                .iter()
                .map(|l| (Some(l.rid), l.width, l.height))
                .collect()
        } else {
            vec![(None, 640, 360)]
        };
        ladder
            .into_iter()
            .zip(distinct_ssrcs(3))
            .map(|((rid, width, height), ssrc)| Layer {
                rid,
                ssrc,
                width,
                height,
                bitrate_bps: 0,
                frames_sent: AtomicU64::new(0),
                bytes_sent: AtomicU64::new(0),
                keyframes_sent: AtomicU64::new(0),
                keyframe_requests: AtomicU64::new(0),
                force_idr: AtomicBool::new(false),
            })
            .collect()
    }

    async fn offer(simulcast: bool) -> String {
        let (pc, _signals) = build_peer(None, true, false).await.expect("peer");
        let layers = layers_for(simulcast);
        add_local_media(&pc, &layers, 1234).await.expect("media");
        let offer = pc.create_offer(None).await.expect("offer");
        let _ = pc.close().await;
        offer.sdp
    }

    fn video_section(sdp: &str) -> &str {
        let start = sdp.find("m=video").expect("a video m-line");
        &sdp[start..]
    }

    #[tokio::test]
    async fn simulcast_offer_declares_three_rids() {
        let sdp = offer(true).await;
        let video = video_section(&sdp);
        for line in [
            "a=rid:h send",
            "a=rid:m send",
            "a=rid:l send",
            "a=simulcast:send h;m;l",
            "urn:ietf:params:rtp-hdrext:sdes:mid",
            "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            "a=sendonly",
        ] {
            assert!(video.contains(line), "no {line:?} in\n{video}");
        }
        assert_eq!(video.matches("a=simulcast").count(), 1, "{video}");
    }

    #[tokio::test]
    async fn single_layer_offer_has_no_simulcast() {
        let sdp = offer(false).await;
        let video = video_section(&sdp);
        assert!(!video.contains("a=rid"), "{video}");
        assert!(!video.contains("a=simulcast"), "{video}");
        assert!(video.contains("a=ssrc:"), "{video}");
    }

    #[test]
    fn keyframe_requests_go_to_the_layer_asked_for() {
        let layers = layers_for(true);
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: layers[2].ssrc,
        };
        route_keyframe_requests(&[Box::new(pli)], &layers);
        let forced: Vec<bool> = layers
            .iter()
            .map(|l| l.force_idr.load(Ordering::Relaxed))
            .collect();
        assert_eq!(forced, [false, false, true]);
        let unknown = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 7,
        };
        route_keyframe_requests(&[Box::new(unknown)], &layers);
        assert!(layers.iter().all(|l| l.force_idr.load(Ordering::Relaxed)));
    }
}
