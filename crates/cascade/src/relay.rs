//! The parent's end of a relay link: a stream's packets, as a sink of its
//! Router on this node, sent over WebRTC to a child node.
//!
//! A child node that needs a stream asks a parent for it (lumen-signaling's
//! internal relay endpoint). The parent attaches a sink to the stream
//! ([`NodeHandle::attach_sink`]), reads its description, and answers with
//! an SDP *offer* made by a str0m `Rtc` of its own: one `sendonly` m-line
//! per track of the publisher, video with the publisher's simulcast rids,
//! the publisher's payload types. The child hands that offer to its own
//! SFU exactly as a WHIP offer (the relay link is the stream's publisher
//! there), and returns the SFU's answer; [`PendingRelay::accept`] then
//! starts the link. Every layer and the audio travel, so the child adapts
//! per viewer exactly as the origin does, and the child's keyframe requests
//! (PLI, already throttled per layer by the child's Router, so an edge's
//! viewers cost one request per layer) come back as the sink's keyframe
//! requests.
//!
//! The link is DTLS-SRTP between two str0m stacks, so it negotiates
//! AEAD-AES-GCM and media stays encrypted between regions. It runs in RTP
//! mode: packets are forwarded as they came, never depacketized. Each
//! layer gets sequence numbers of its own, starting low (a receiver starts
//! its SRTP rollover counter at 0) and continuing across a new publisher;
//! timestamps are the publisher's. The parent's str0m keeps what it sent
//! for retransmission, so a lossy link between regions is repaired by NACK.
//!
//! The link also carries the stream's chat: a data channel
//! ([`CHAT_LABEL`]) whose messages [`RelayLink::take_chat`] hands to the
//! node's chat (lumen-signaling), which reads and writes lumen-chat's
//! relay envelopes; this crate only carries them.
//!
//! The link ends when the child goes away (ICE fails, or it has sent
//! nothing for [`CHILD_SILENCE`]), when
//! [`RelayLink::close`] is called, when the stream goes offline or its new
//! publisher sends other tracks (the child then finds a parent again), or
//! when the node shuts down.
//!
//! The link's packet logic is sans-IO ([`LinkOffer`], [`LinkSender`] in
//! `relay/link.rs`): this module is its tokio shell (a UDP socket, the
//! node's [`SinkFeed`], a timer), and the scenario tests drive the same
//! core on a virtual clock between `Sfu`s.

mod link;

pub use link::{
    CHAT_HELD_BYTES, CHAT_LABEL, CHILD_SILENCE, HELD_PACKETS, LinkChat, LinkEnd, LinkOffer,
    LinkOutput, LinkSender,
};

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lumen_node::{FeedEvent, NodeError, NodeHandle, SinkFeed};
use lumen_sfu::Rid;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// Chat events from the child queued for the node's chat at most (a
/// full queue drops them, logged).
const CHAT_UP_QUEUE: usize = 1024;
/// Chat messages for the child queued at most before the link's task
/// takes them.
const CHAT_DOWN_QUEUE: usize = 4096;

/// The node's end of a link's chat channel.
pub struct RelayChat {
    /// Messages for the child (envelopes); a full queue refuses them.
    pub down: mpsc::Sender<String>,
    /// What the child does on the channel; `None` once the link ended.
    pub up: mpsc::Receiver<LinkChat>,
}

/// How long a parent waits for the stream's description after attaching.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a relay link could not be offered or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The stream has no publisher on this node.
    #[error("stream {0} is not live here")]
    NotLive(String),
    /// The node refused the sink.
    #[error("the node refused the relay sink: {0}")]
    Node(#[from] NodeError),
    /// The child's answer is not SDP str0m accepts.
    #[error("bad answer: {0}")]
    BadAnswer(String),
    /// A socket or str0m failure.
    #[error("relay link: {0}")]
    Io(String),
}

/// What a running link has done, for metrics and the cluster view.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Packets written to the link.
    pub packets: AtomicU64,
    /// Keyframe requests that came from the child.
    pub keyframe_requests: AtomicU64,
    /// Whether ICE and DTLS are up.
    pub connected: AtomicBool,
}

/// A link offered to a child, waiting for its answer.
pub struct PendingRelay {
    stream: String,
    offer: LinkOffer,
    socket: UdpSocket,
    feed: SinkFeed,
}

impl PendingRelay {
    /// Attaches a sink to `stream` (which needs a publisher on this node,
    /// local or itself relayed) and makes the offer for a child. The link's
    /// socket binds to `bind` (the node's media address), any port.
    pub async fn offer(
        node: &NodeHandle,
        stream: &str,
        bind: IpAddr,
    ) -> Result<PendingRelay, RelayError> {
        let mut feed = node.attach_sink(stream).await?;
        let tracks = match tokio::time::timeout(DESCRIBE_TIMEOUT, feed.recv()).await {
            Ok(Some(FeedEvent::Source { tracks, .. })) if !tracks.is_empty() => tracks,
            _ => {
                feed.detach().await;
                return Err(RelayError::NotLive(stream.to_string()));
            }
        };
        let socket = UdpSocket::bind((bind, 0))
            .await
            .map_err(|e| RelayError::Io(format!("bind {bind}: {e}")))?;
        let local = socket
            .local_addr()
            .map_err(|e| RelayError::Io(e.to_string()))?;
        let offer = match LinkOffer::new(Instant::now(), tracks, local) {
            Ok(o) => o,
            Err(e) => {
                feed.detach().await;
                return Err(e);
            }
        };
        Ok(PendingRelay {
            stream: stream.to_string(),
            offer,
            socket,
            feed,
        })
    }

    /// The SDP offer for the child.
    pub fn offer_sdp(&self) -> &str {
        self.offer.offer_sdp()
    }

    /// The stream it carries.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Takes the child's answer and starts the link on a task of its own.
    pub fn accept(self, answer: &str) -> Result<RelayLink, RelayError> {
        let link = self.offer.accept(answer)?;
        let stats = Arc::new(RelayStats::default());
        let (stop, stopped) = watch::channel(false);
        let (up_tx, up) = mpsc::channel(CHAT_UP_QUEUE);
        let (down, down_rx) = mpsc::channel(CHAT_DOWN_QUEUE);
        let sender = Sender {
            stream: self.stream,
            link,
            socket: self.socket,
            feed: self.feed,
            stats: stats.clone(),
            chat_up: up_tx,
            chat_down: down_rx,
        };
        let task = tokio::spawn(sender.run(stopped));
        Ok(RelayLink {
            stats,
            stop,
            task,
            chat: Some(RelayChat { down, up }),
        })
    }

    /// Gives up on the offer: the sink detaches.
    pub async fn abandon(self) {
        self.feed.detach().await;
    }
}

/// A running relay link (its task). Dropping it leaves the task running;
/// [`RelayLink::close`] ends it.
pub struct RelayLink {
    stats: Arc<RelayStats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    chat: Option<RelayChat>,
}

impl RelayLink {
    /// What it has done so far.
    pub fn stats(&self) -> &Arc<RelayStats> {
        &self.stats
    }

    /// The node's end of the link's chat channel; `None` after the first
    /// call.
    pub fn take_chat(&mut self) -> Option<RelayChat> {
        self.chat.take()
    }

    /// Whether its task ended (the child went away, the stream ended).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Ends the link: the sink detaches, the child's session times out.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The tokio shell of a [`LinkSender`]: its socket, its sink's feed, its
/// timer.
struct Sender {
    stream: String,
    link: LinkSender,
    socket: UdpSocket,
    feed: SinkFeed,
    stats: Arc<RelayStats>,
    chat_up: mpsc::Sender<LinkChat>,
    chat_down: mpsc::Receiver<String>,
}

/// Why a link's loop ended.
enum End {
    Stopped,
    Link(LinkEnd),
    FeedEnded,
}

impl Sender {
    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let mut buf = vec![0u8; 2048];
        let end = loop {
            let timeout = match self.drive() {
                Ok(t) => t,
                Err(end) => break End::Link(end),
            };
            let sleep = tokio::time::sleep_until(timeout.into());
            tokio::select! {
                _ = stopped.changed() => break End::Stopped,
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.link.handle_receive(Instant::now(), from, &buf[..n]),
                    Err(e) => tracing::debug!(stream = %self.stream, "relay recv: {e}"),
                },
                ev = self.feed.recv() => match ev {
                    None => break End::FeedEnded,
                    Some(FeedEvent::Source { tracks, fresh, .. }) => {
                        self.link.handle_source(&tracks, fresh);
                    }
                    Some(FeedEvent::Packets(packets)) => self.link.handle_packets(packets),
                    Some(FeedEvent::Gap { .. }) => self.link.handle_gap(),
                    Some(_) => {}
                },
                Some(text) = self.chat_down.recv() => {
                    self.link.send_chat(text);
                    // What else is queued goes in the same drain.
                    while let Ok(text) = self.chat_down.try_recv() {
                        self.link.send_chat(text);
                    }
                }
                _ = sleep => self.link.handle_timeout(Instant::now()),
            }
        };
        match end {
            End::Stopped => tracing::info!(stream = %self.stream, "relay link closed"),
            End::Link(LinkEnd::ChildGone) => {
                tracing::info!(stream = %self.stream, "relay link: the child went away")
            }
            End::Link(LinkEnd::StreamChanged) => {
                tracing::info!(stream = %self.stream, "relay link: the stream ended or changed")
            }
            End::FeedEnded => tracing::info!(stream = %self.stream, "relay link: the feed ended"),
        }
        self.stats.connected.store(false, Ordering::Relaxed);
        self.link.close();
        self.feed.detach().await;
    }

    /// Drains the link: sends what it transmits, passes its keyframe
    /// requests upstream; returns when it wants to be woken.
    fn drive(&mut self) -> Result<Instant, LinkEnd> {
        let out = loop {
            match self.link.poll_output() {
                LinkOutput::Timeout(t) => break Ok(t),
                LinkOutput::Transmit(t) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                LinkOutput::KeyframeRequest(rid) => self.ask_keyframe(rid),
                LinkOutput::Chat(c) => {
                    if self.chat_up.try_send(c).is_err() {
                        tracing::warn!(stream = %self.stream, "relay link: chat from the child dropped (the node's chat is behind)");
                    }
                }
                LinkOutput::End(end) => break Err(end),
            }
        };
        let s = &self.stats;
        s.packets.store(self.link.packets(), Ordering::Relaxed);
        s.keyframe_requests
            .store(self.link.keyframe_requests(), Ordering::Relaxed);
        s.connected
            .store(self.link.is_connected(), Ordering::Relaxed);
        out
    }

    /// Passes a keyframe request upstream. A full worker queue loses it;
    /// the child asks again.
    fn ask_keyframe(&self, rid: Option<Rid>) {
        let _ = self.feed.try_request_keyframe(rid);
    }
}
