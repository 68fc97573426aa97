//! WHIP publisher: the test pattern as H.264 plus Opus, over one sendonly
//! peer connection; with `simulcast`, as three H.264 layers (rids `h`, `m`,
//! `l`) of the same picture on one video m-line.
//!
//! This module is the session and its counters; [`super::tracks`] makes the
//! offer's tracks and [`super::send`] runs the encoders and writers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use webrtc::peer_connection::RTCPeerConnectionState;

use super::chat::{ChatChannel, ChatFrames, ChatSender};
use super::pattern::PatternEncoder;
use super::peer::{PeerRole, build_peer};
use super::send::{Counters, Pumps};
use super::session::Session;
use super::tracks::{Layer, add_local_media, distinct_ssrcs, send_params};

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
    /// Open the `chat` data channel on the session, chatting as the
    /// stream's broadcaster (see [`Publisher::chat_sender`] and
    /// [`Publisher::chat_frames`]).
    pub chat: bool,
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
            chat: false,
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

/// A live WHIP session sending the test pattern.
pub struct Publisher {
    session: Session,
    counters: Arc<Counters>,
    layers: Arc<[Layer]>,
    pumps: Pumps,
    started: Instant,
    chat: Option<ChatChannel>,
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
            layers.push(Layer::new(rid, ssrc, width, height, bps));
        }
        let layers: Arc<[Layer]> = layers.into();
        let (pc, signals) = build_peer(PeerRole {
            forward_keyframe_requests: true,
            ..PeerRole::default()
        })
        .await?;
        let prepared = async {
            let media = add_local_media(&pc, &layers, audio_ssrc).await?;
            let chat = if opts.chat {
                Some(ChatChannel::open(pc.as_ref()).await?)
            } else {
                None
            };
            Ok::<_, anyhow::Error>((media, chat))
        };
        let (media, chat) = match prepared.await {
            Ok(m) => m,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        let session = Session::open(pc, signals, &opts.url, opts.token).await?;
        let mut publisher = Publisher {
            session,
            counters: Arc::default(),
            layers,
            pumps: Pumps::default(),
            started,
            chat,
        };
        let begun = async {
            publisher.session.connected().await?;
            let params = send_params(publisher.session.pc(), &media, opts.simulcast).await?;
            publisher.pumps.start(
                encoders,
                media,
                &params,
                &publisher.layers,
                &publisher.counters,
                opts.fps,
            )
        };
        if let Err(e) = begun.await {
            // Leave no session behind on the server.
            let _ = publisher.stop().await;
            return Err(e);
        }
        Ok(publisher)
    }

    /// Absolute URL of the WHIP session (the resolved `Location`).
    pub fn session_url(&self) -> &str {
        self.session.url()
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

    /// Puts frames on the `chat` data channel (sent once it is open);
    /// `None` without [`PublishOptions::chat`].
    pub fn chat_sender(&self) -> Option<ChatSender> {
        self.chat.as_ref().map(ChatChannel::sender)
    }

    /// The frames received on the `chat` data channel; `None` without
    /// [`PublishOptions::chat`], and after the first call.
    pub fn chat_frames(&mut self) -> Option<ChatFrames> {
        self.chat.as_mut().and_then(ChatChannel::take_frames)
    }

    /// Current peer connection state.
    pub fn connection_state(&self) -> RTCPeerConnectionState {
        self.session.state()
    }

    /// ICE round-trip time to the server, when measured.
    pub async fn rtt(&self) -> Option<Duration> {
        self.session.rtt().await
    }

    /// How long ago [`Publisher::start`] was called.
    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops sending, DELETEs the session (returning the status code) and
    /// closes the peer connection.
    pub async fn stop(mut self) -> anyhow::Result<u16> {
        self.pumps.stop().await;
        self.session.close().await
    }
}
