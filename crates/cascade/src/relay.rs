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
//! The link ends when the child goes away (ICE fails), when
//! [`RelayLink::close`] is called, when the stream goes offline or its new
//! publisher sends other tracks (the child then finds a parent again), or
//! when the node shuts down.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lumen_node::{FeedEvent, NodeError, NodeHandle, SinkFeed};
use lumen_sfu::{MediaPacket, Rid, TrackDescription};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::CodecConfig;
use str0m::media::{Direction, Mid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// How long a parent waits for the stream's description after attaching.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Packets held while the link connects (ICE and DTLS), oldest dropped
/// first; a link that dropped some asks for keyframes once it is up.
const HELD_PACKETS: usize = 4096;

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
    rtc: Rtc,
    pending: SdpPendingOffer,
    offer: String,
    socket: UdpSocket,
    local: SocketAddr,
    feed: SinkFeed,
    tracks: Vec<TrackDescription>,
    /// The link's m-line for each of the publisher's, by position.
    mids: Vec<(Mid, Mid)>,
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
        let now = Instant::now();
        let mut config = RtcConfig::new()
            .set_rtp_mode(true)
            .set_ice_lite(false)
            .clear_codecs();
        // The publisher's payload types, so packets go through unchanged.
        let mut params = Vec::new();
        for t in &tracks {
            for p in &t.params {
                if !params.contains(p) {
                    params.push(*p);
                }
            }
        }
        *config.codec_config() = CodecConfig::new_from_payload_params(params);
        let mut rtc = config.build(now);
        let candidate =
            Candidate::host(local, "udp").map_err(|e| RelayError::Io(format!("candidate: {e}")))?;
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let mut mids = Vec::with_capacity(tracks.len());
        for t in &tracks {
            let simulcast = (!t.rids.is_empty()).then(|| Simulcast {
                send: t
                    .rids
                    .iter()
                    .map(|rid| SimulcastLayer {
                        rid: *rid,
                        attributes: None,
                    })
                    .collect(),
                recv: Vec::new(),
            });
            let mid = api.add_media(t.kind, Direction::SendOnly, None, None, simulcast);
            mids.push((t.mid, mid));
        }
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| RelayError::Io("str0m made no offer".to_string()))?;
        Ok(PendingRelay {
            stream: stream.to_string(),
            rtc,
            pending,
            offer: offer.to_sdp_string(),
            socket,
            local,
            feed,
            tracks,
            mids,
        })
    }

    /// The SDP offer for the child.
    pub fn offer_sdp(&self) -> &str {
        &self.offer
    }

    /// The stream it carries.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Takes the child's answer and starts the link on a task of its own.
    pub fn accept(mut self, answer: &str) -> Result<RelayLink, RelayError> {
        let answer =
            SdpAnswer::from_sdp_string(answer).map_err(|e| RelayError::BadAnswer(e.to_string()))?;
        self.rtc
            .sdp_api()
            .accept_answer(self.pending, answer)
            .map_err(|e| RelayError::BadAnswer(e.to_string()))?;
        let stats = Arc::new(RelayStats::default());
        let (stop, stopped) = watch::channel(false);
        let sender = Sender {
            stream: self.stream.clone(),
            rtc: self.rtc,
            socket: self.socket,
            local: self.local,
            feed: self.feed,
            tracks: self.tracks,
            mids: self.mids,
            seqs: HashMap::new(),
            held: VecDeque::new(),
            held_dropped: false,
            stats: stats.clone(),
        };
        let task = tokio::spawn(sender.run(stopped));
        Ok(RelayLink { stats, stop, task })
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
}

impl RelayLink {
    /// What it has done so far.
    pub fn stats(&self) -> &Arc<RelayStats> {
        &self.stats
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

/// One layer's sequence numbers on the link.
#[derive(Debug, Clone, Copy, Default)]
struct SeqMap {
    /// The publisher's sequence number that maps to `link_base`.
    origin_base: u64,
    link_base: u64,
    /// The next link number never written.
    next: u64,
    /// Whether `origin_base` holds (false: the next packet sets it).
    started: bool,
}

impl SeqMap {
    /// A publisher's numbers jump this far (either way) only when the
    /// stream restarted: renumber from there.
    const JUMP: u64 = 3000;

    /// The link's number for the publisher's `seq`, or `None` for a packet
    /// older than the numbering.
    fn map(&mut self, seq: u64) -> Option<u64> {
        let span = self.next.saturating_sub(self.link_base);
        if !self.started
            || seq + Self::JUMP < self.origin_base
            || seq > self.origin_base + span + Self::JUMP
        {
            // Continue after the last number written (from 1: a receiver
            // starts its rollover counter at 0).
            self.origin_base = seq;
            self.link_base = self.next.max(1);
            self.started = true;
        }
        let n = self.link_base + seq.checked_sub(self.origin_base)?;
        self.next = self.next.max(n + 1);
        Some(n)
    }

    /// A new publisher: its first packet continues the link's numbering.
    fn restart(&mut self) {
        self.started = false;
    }
}

struct Sender {
    stream: String,
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    feed: SinkFeed,
    tracks: Vec<TrackDescription>,
    mids: Vec<(Mid, Mid)>,
    seqs: HashMap<(Mid, Option<Rid>), SeqMap>,
    /// Packets that came before the link was up.
    held: VecDeque<MediaPacket>,
    held_dropped: bool,
    stats: Arc<RelayStats>,
}

/// Why a link's loop ended.
enum End {
    Stopped,
    ChildGone,
    StreamChanged,
    FeedEnded,
}

impl Sender {
    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let mut buf = vec![0u8; 2048];
        let end = loop {
            let timeout = match self.drive() {
                Ok(t) => t,
                Err(end) => break end,
            };
            let sleep = tokio::time::sleep_until(timeout.into());
            tokio::select! {
                _ = stopped.changed() => break End::Stopped,
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        let now = Instant::now();
                        if let Ok(r) = Receive::new(Protocol::Udp, from, self.local, &buf[..n]) {
                            let _ = self.rtc.handle_input(Input::Receive(now, r));
                        }
                    }
                    Err(e) => tracing::debug!(stream = %self.stream, "relay recv: {e}"),
                },
                ev = self.feed.recv() => match ev {
                    None => break End::FeedEnded,
                    Some(ev) => if let Err(end) = self.on_feed(ev) { break end },
                },
                _ = sleep => {
                    let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                }
            }
        };
        match end {
            End::Stopped => tracing::info!(stream = %self.stream, "relay link closed"),
            End::ChildGone => {
                tracing::info!(stream = %self.stream, "relay link: the child went away")
            }
            End::StreamChanged => {
                tracing::info!(stream = %self.stream, "relay link: the stream ended or changed")
            }
            End::FeedEnded => tracing::info!(stream = %self.stream, "relay link: the feed ended"),
        }
        self.stats.connected.store(false, Ordering::Relaxed);
        self.rtc.disconnect();
        self.feed.detach().await;
    }

    /// Drains str0m: sends what it transmits, handles its events; returns
    /// when it wants to be woken.
    fn drive(&mut self) -> Result<Instant, End> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Ok(t),
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => self.on_event(e)?,
                Err(e) => {
                    tracing::debug!(stream = %self.stream, "relay link: {e}");
                    return Err(End::ChildGone);
                }
            }
        }
    }

    fn on_event(&mut self, e: Event) -> Result<(), End> {
        match e {
            Event::Connected => {
                self.stats.connected.store(true, Ordering::Relaxed);
                let held: Vec<MediaPacket> = self.held.drain(..).collect();
                for p in held {
                    self.write(p);
                }
                if std::mem::take(&mut self.held_dropped) {
                    self.ask_keyframe(None);
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                return Err(End::ChildGone);
            }
            Event::KeyframeRequest(r) => {
                self.stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                self.ask_keyframe(r.rid);
            }
            _ => {}
        }
        Ok(())
    }

    /// Passes a keyframe request upstream. A full worker queue loses it;
    /// the child asks again.
    fn ask_keyframe(&self, rid: Option<Rid>) {
        let _ = self.feed.try_request_keyframe(rid);
    }

    fn on_feed(&mut self, ev: FeedEvent) -> Result<(), End> {
        match ev {
            FeedEvent::Source { tracks, fresh, .. } => {
                if tracks.is_empty() || tracks != self.tracks {
                    return Err(End::StreamChanged);
                }
                if fresh {
                    // A new publisher with the same tracks: its numbers
                    // continue the link's.
                    self.seqs.values_mut().for_each(SeqMap::restart);
                }
            }
            FeedEvent::Packets(packets) => {
                for p in packets {
                    if self.stats.connected.load(Ordering::Relaxed) {
                        self.write(p);
                    } else {
                        if self.held.len() >= HELD_PACKETS {
                            self.held.pop_front();
                            self.held_dropped = true;
                        }
                        self.held.push_back(p);
                    }
                }
            }
            FeedEvent::Gap { .. } => self.ask_keyframe(None),
            _ => {}
        }
        Ok(())
    }

    fn write(&mut self, p: MediaPacket) {
        let Some(&(_, mid)) = self.mids.iter().find(|(o, _)| *o == p.mid) else {
            return;
        };
        let Some(seq) = self.seqs.entry((mid, p.rid)).or_default().map(p.seq) else {
            return;
        };
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, p.rid) else {
            return;
        };
        let seq: SeqNo = seq.into();
        tx.write_rtp(
            RtpWrite::new(p.pt, seq, p.timestamp, p.at, p.payload)
                .marker(p.marker)
                .ext_vals(p.ext)
                .nackable(true),
        );
        self.stats.packets.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::SeqMap;

    #[test]
    fn link_numbers_start_low_and_follow_the_publisher() {
        let mut m = SeqMap::default();
        // A publisher well past its first rollover.
        assert_eq!(m.map(200_000), Some(1));
        assert_eq!(m.map(200_001), Some(2));
        // A gap upstream stays a gap.
        assert_eq!(m.map(200_005), Some(6));
        // Reordered: still its own number.
        assert_eq!(m.map(200_004), Some(5));
        // Older than the first: dropped.
        assert_eq!(m.map(199_999), None);
    }

    #[test]
    fn a_new_publisher_continues_the_link_numbers() {
        let mut m = SeqMap::default();
        for s in 500..600 {
            m.map(s);
        }
        // A jump: the next publisher starts anywhere.
        assert_eq!(m.map(40_000), Some(101));
        assert_eq!(m.map(40_001), Some(102));
        assert_eq!(m.map(10), Some(103));
        // Told: a new publisher close to the old numbers.
        m.restart();
        assert_eq!(m.map(12), Some(104));
    }
}
