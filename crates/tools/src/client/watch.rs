//! WHEP watcher: receives one Opus and one H.264 track, reassembles access
//! units, reads the lumen timing SEI for frame-number continuity and
//! send-to-receive latency, and decodes with openh264 to prove the pictures
//! are real.
//!
//! This module is the session; [`super::receive`] handles the packets and
//! pictures, and [`super::stats`] keeps the counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};

use super::chat::{ChatChannel, ChatFrames, ChatSender};
use super::peer::{PeerRole, build_peer, rtt};
use super::receive::{Receiver, lock};
use super::session::Session;
use super::stats::WatchStats;
use crate::whip::{self, LAYER_LINK_REL};

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
    /// Open the `chat` data channel on the session (see
    /// [`Watcher::chat_sender`] and [`Watcher::chat_frames`]).
    pub chat: bool,
}

/// A live WHEP session.
pub struct Watcher {
    session: Session,
    /// The layer selection endpoint, if the server advertised one.
    layer_url: Option<reqwest::Url>,
    receiver: Receiver,
    rtt_task: Option<JoinHandle<()>>,
    chat: Option<ChatChannel>,
}

impl Watcher {
    /// POSTs a recvonly offer (audio then video), pins `opts.layer` if set,
    /// connects, and receives and decodes in the background. A 409 means
    /// nobody is publishing.
    pub async fn start(opts: WatchOptions) -> anyhow::Result<Watcher> {
        let (track_tx, track_rx) = mpsc::unbounded_channel();
        let (pc, signals) = build_peer(PeerRole {
            tracks: Some(track_tx),
            rtx: true,
            ..PeerRole::default()
        })
        .await?;
        let prepared = async {
            add_recvonly_transceivers(pc.as_ref()).await?;
            let chat = if opts.chat {
                Some(ChatChannel::open(pc.as_ref()).await?)
            } else {
                None
            };
            Ok::<_, anyhow::Error>((Receiver::start(track_rx)?, chat))
        };
        let (receiver, chat) = match prepared.await {
            Ok(r) => r,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        let session = match Session::open(pc, signals, &opts.url, opts.token).await {
            Ok(s) => s,
            Err(e) => {
                receiver.abort();
                return Err(e);
            }
        };
        let posted_at = session.posted_at();
        receiver.set_posted_at(posted_at);
        let mut watcher = Watcher {
            layer_url: session.link(LAYER_LINK_REL),
            session,
            receiver,
            rtt_task: None,
            chat,
        };
        // Before ICE completes, so the first keyframe is of the right layer.
        if let Some(rid) = &opts.layer
            && let Err(e) = watcher.select_layer(rid).await
        {
            let _ = watcher.stop().await;
            return Err(e);
        }
        if let Err(e) = watcher.session.connected().await {
            let _ = watcher.stop().await;
            return Err(e);
        }
        lock(&watcher.receiver.shared().state).stats.time_to_connect = Some(posted_at.elapsed());
        let pc = Arc::clone(watcher.session.pc());
        let shared = Arc::clone(watcher.receiver.shared());
        watcher.rtt_task = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Some(rtt) = rtt(pc.as_ref()).await {
                    lock(&shared.state).stats.rtt = Some(rtt);
                }
            }
        }));
        Ok(watcher)
    }

    /// Absolute URL of the WHEP session (the resolved `Location`).
    pub fn session_url(&self) -> &str {
        self.session.url()
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
        self.post_layer(Some(rid)).await
    }

    /// Returns the video to the server's automatic layer choice (WHEP
    /// layer extension: POST `{}`).
    pub async fn select_automatic(&self) -> anyhow::Result<()> {
        self.post_layer(None).await
    }

    async fn post_layer(&self, rid: Option<&str>) -> anyhow::Result<()> {
        let url = self.layer_url.as_ref().with_context(|| {
            format!(
                "the server offers no layer selection for {} (no Link header with \
                 rel=\"{LAYER_LINK_REL}\" in the WHEP answer)",
                self.session.url()
            )
        })?;
        let (http, token) = self.session.http();
        whip::post_layer(http, url, token, rid).await?;
        lock(&self.receiver.shared().state).stats.requested_layer = rid.map(str::to_owned);
        Ok(())
    }

    /// Puts frames on the `chat` data channel (sent once it is open);
    /// `None` without [`WatchOptions::chat`].
    pub fn chat_sender(&self) -> Option<ChatSender> {
        self.chat.as_ref().map(ChatChannel::sender)
    }

    /// The frames received on the `chat` data channel; `None` without
    /// [`WatchOptions::chat`], and after the first call.
    pub fn chat_frames(&mut self) -> Option<ChatFrames> {
        self.chat.as_mut().and_then(ChatChannel::take_frames)
    }

    /// Current peer connection state.
    pub fn connection_state(&self) -> RTCPeerConnectionState {
        self.session.state()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> WatchStats {
        lock(&self.receiver.shared().state).snapshot(Instant::now())
    }

    /// DELETEs the session, closes the peer connection, and returns the
    /// DELETE status with the final counters.
    pub async fn stop(mut self) -> anyhow::Result<(u16, WatchStats)> {
        let closed = self.session.close().await;
        if let Some(task) = self.rtt_task.take() {
            task.abort();
        }
        // Closing the connection ended the tracks, and so the decoder.
        self.receiver.finish().await;
        let stats = self.stats();
        Ok((closed?, stats))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(task) = &self.rtt_task {
            task.abort();
        }
        self.receiver.abort();
    }
}

async fn add_recvonly_transceivers(pc: &dyn PeerConnection) -> anyhow::Result<()> {
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
    Ok(())
}
