//! The sans-IO core of a relay link's parent end: the str0m `Rtc` (RTP
//! mode) that carries a stream's sink to a child node, and the packet
//! logic around it (per-layer renumbering, packets held until the link is
//! up, keyframe requests passed upstream). It never reads the clock or
//! touches a socket: [`super::PendingRelay`] drives it from a tokio task
//! with a UDP socket and a node's `SinkFeed`, and the scenario tests drive
//! it on a virtual clock with `Sfu`s on both ends.
//!
//! Beside the media, the link has one data channel, [`CHAT_LABEL`], that
//! carries the stream's chat between the nodes (lumen-chat's `relay`
//! envelopes, opaque here): [`LinkSender::send_chat`] down,
//! [`LinkOutput::Chat`] up.
//!
//! The rule is str0m's: after every input, drain [`LinkSender::poll_output`]
//! until it returns [`LinkOutput::Timeout`] (or [`LinkOutput::End`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lumen_sfu::{MediaPacket, Rid, TrackDescription};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::CodecConfig;
use str0m::media::{Direction, Mid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use super::RelayError;

/// Packets held while the link connects (ICE and DTLS), oldest dropped
/// first; a link that dropped some asks for keyframes once it is up.
pub const HELD_PACKETS: usize = 4096;

/// A connected child that sent nothing for this long is gone (killed, or
/// cut off). A live child's SFU sends receiver reports and transport
/// feedback many times a second; str0m's ICE alone would take some 25 s
/// to give up, sending the stream to the dead address all along.
pub const CHILD_SILENCE: Duration = Duration::from_secs(5);

/// The label of the link's chat channel: lumen-chat's `relay::LABEL`
/// (never `chat`, so that the child, which takes the link as the stream's
/// publisher, never gives it the broadcaster's chat rights).
pub const CHAT_LABEL: &str = "lumen-relay";

/// Chat bytes held for the child while its channel is not open or its
/// send buffer is full; past it new messages are dropped (counted): the
/// child's members then miss them, as a lagging member does.
pub const CHAT_HELD_BYTES: usize = 1024 * 1024;

/// A link offered to a child, waiting for its answer.
pub struct LinkOffer {
    rtc: Rtc,
    pending: SdpPendingOffer,
    offer: String,
    local: SocketAddr,
    tracks: Vec<TrackDescription>,
    /// The link's m-line for each of the publisher's, by position.
    mids: Vec<(Mid, Mid)>,
    chat: ChannelId,
}

impl LinkOffer {
    /// The offer for a child of a stream with these `tracks` (its sink's
    /// description): one `sendonly` m-line per track, video with the
    /// publisher's simulcast rids, the publisher's payload types (so
    /// packets go through unchanged). `local` is the link's socket address,
    /// its only ICE candidate.
    pub fn new(
        now: Instant,
        tracks: Vec<TrackDescription>,
        local: SocketAddr,
    ) -> Result<LinkOffer, RelayError> {
        let mut config = RtcConfig::new()
            // SRTP as the SFU seals it (lumen-sfu's cipher module).
            .set_crypto_provider(std::sync::Arc::new(lumen_sfu::crypto_provider()))
            .set_rtp_mode(true)
            .set_ice_lite(false)
            .clear_codecs();
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
        let chat = api.add_channel(CHAT_LABEL.to_string());
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| RelayError::Io("str0m made no offer".to_string()))?;
        Ok(LinkOffer {
            rtc,
            pending,
            offer: offer.to_sdp_string(),
            local,
            tracks,
            mids,
            chat,
        })
    }

    /// The SDP offer for the child.
    pub fn offer_sdp(&self) -> &str {
        &self.offer
    }

    /// Takes the child's answer: the link starts connecting.
    pub fn accept(mut self, answer: &str) -> Result<LinkSender, RelayError> {
        let answer =
            SdpAnswer::from_sdp_string(answer).map_err(|e| RelayError::BadAnswer(e.to_string()))?;
        self.rtc
            .sdp_api()
            .accept_answer(self.pending, answer)
            .map_err(|e| RelayError::BadAnswer(e.to_string()))?;
        Ok(LinkSender {
            rtc: self.rtc,
            local: self.local,
            tracks: self.tracks,
            mids: self.mids,
            seqs: HashMap::new(),
            held: VecDeque::new(),
            held_dropped: false,
            connected: false,
            packets: 0,
            keyframe_requests: 0,
            upstream: VecDeque::new(),
            ended: None,
            last_heard: None,
            chat: self.chat,
            chat_open: false,
            chat_out: VecDeque::new(),
            chat_out_bytes: 0,
            chat_dropped: 0,
            chat_in: VecDeque::new(),
        })
    }
}

/// What a [`LinkSender`] wants done next.
#[derive(Debug)]
pub enum LinkOutput {
    /// A datagram for the child.
    Transmit(Transmit),
    /// Ask the stream's Router for a keyframe of this layer (`None`: of
    /// every layer): the child asked, or the link lost packets.
    KeyframeRequest(Option<Rid>),
    /// The link is over; detach the sink. Returned again on every poll.
    End(LinkEnd),
    /// Something happened on the link's chat channel.
    Chat(LinkChat),
    /// Nothing more until this time or the next input.
    Timeout(Instant),
}

/// What the child did on the link's chat channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChat {
    /// The channel is open: the child's envelopes may come.
    Open,
    /// A message from the child, as it came (the caller parses it).
    Message {
        /// The message's binary flag.
        binary: bool,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// The channel closed: the child's chat members are gone.
    Closed,
}

/// Why a link ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEnd {
    /// The child went away (ICE failed) or str0m gave up on the link.
    ChildGone,
    /// The stream went offline, or its new publisher sends other tracks:
    /// the child finds a parent again.
    StreamChanged,
}

/// A relay link that was answered: it connects, then forwards.
pub struct LinkSender {
    rtc: Rtc,
    local: SocketAddr,
    tracks: Vec<TrackDescription>,
    mids: Vec<(Mid, Mid)>,
    seqs: HashMap<(Mid, Option<Rid>), SeqMap>,
    /// Packets that came before the link was up.
    held: VecDeque<MediaPacket>,
    held_dropped: bool,
    connected: bool,
    packets: u64,
    keyframe_requests: u64,
    /// Keyframe requests not yet polled.
    upstream: VecDeque<Option<Rid>>,
    ended: Option<LinkEnd>,
    /// When the child last sent a datagram.
    last_heard: Option<Instant>,
    chat: ChannelId,
    chat_open: bool,
    /// Chat messages for the child not yet taken by its channel.
    chat_out: VecDeque<String>,
    chat_out_bytes: usize,
    chat_dropped: u64,
    /// Chat events not yet polled.
    chat_in: VecDeque<LinkChat>,
}

impl LinkSender {
    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Packets written to the link so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Keyframe requests that came from the child so far.
    pub fn keyframe_requests(&self) -> u64 {
        self.keyframe_requests
    }

    /// Chat messages dropped because [`CHAT_HELD_BYTES`] were held.
    pub fn chat_dropped(&self) -> u64 {
        self.chat_dropped
    }

    /// Sends a chat message (an envelope) to the child on the link's chat
    /// channel, in order; held while the channel is not open or full.
    pub fn send_chat(&mut self, text: String) {
        if self.chat_out_bytes + text.len() > CHAT_HELD_BYTES {
            self.chat_dropped += 1;
            if self.chat_dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = self.chat_dropped,
                    "relay link: chat for the child dropped (its channel does not keep up)"
                );
            }
            return;
        }
        self.chat_out_bytes += text.len();
        self.chat_out.push_back(text);
        self.flush_chat();
    }

    /// The link's own address (its ICE candidate).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A datagram from `from` reached the link's address. Anything that is
    /// not a datagram of this link is dropped.
    pub fn handle_receive(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if let Ok(r) = Receive::new(Protocol::Udp, from, self.local, data)
            && self.rtc.handle_input(Input::Receive(now, r)).is_ok()
        {
            self.last_heard = Some(now);
        }
    }

    /// The time of the last [`LinkOutput::Timeout`] came.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = self.rtc.handle_input(Input::Timeout(now));
        self.flush_chat();
        if self.connected
            && self
                .last_heard
                .is_some_and(|t| now.saturating_duration_since(t) >= CHILD_SILENCE)
        {
            tracing::debug!("relay link: the child has been silent for {CHILD_SILENCE:?}");
            self.connected = false;
            self.ended.get_or_insert(LinkEnd::ChildGone);
        }
    }

    /// The stream's description came again (the sink's `Source`): the
    /// same tracks keep the link (`fresh`: a new publisher, whose numbers
    /// continue the link's); none, or other ones, end it.
    pub fn handle_source(&mut self, tracks: &[TrackDescription], fresh: bool) {
        if tracks.is_empty() || tracks != self.tracks {
            self.ended.get_or_insert(LinkEnd::StreamChanged);
            return;
        }
        if fresh {
            self.seqs.values_mut().for_each(SeqMap::restart);
        }
    }

    /// The stream's packets, in the Router's order: written to the link,
    /// or held until it is up.
    pub fn handle_packets(&mut self, packets: impl IntoIterator<Item = MediaPacket>) {
        for p in packets {
            if self.connected {
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

    /// The sink lost packets before they reached the link: the child's
    /// decoders need a keyframe of every layer.
    pub fn handle_gap(&mut self) {
        self.upstream.push_back(None);
    }

    /// Ends the link from this side (the child's session times out).
    pub fn close(&mut self) {
        self.connected = false;
        self.rtc.disconnect();
    }

    /// What to do next; drain until [`LinkOutput::Timeout`].
    pub fn poll_output(&mut self) -> LinkOutput {
        loop {
            if let Some(end) = self.ended {
                return LinkOutput::End(end);
            }
            if let Some(rid) = self.upstream.pop_front() {
                return LinkOutput::KeyframeRequest(rid);
            }
            if let Some(c) = self.chat_in.pop_front() {
                return LinkOutput::Chat(c);
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return LinkOutput::Timeout(t),
                Ok(Output::Transmit(t)) => return LinkOutput::Transmit(t),
                Ok(Output::Event(e)) => self.on_event(e),
                Err(e) => {
                    tracing::debug!("relay link: {e}");
                    self.ended = Some(LinkEnd::ChildGone);
                }
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => {
                self.connected = true;
                let held: Vec<MediaPacket> = self.held.drain(..).collect();
                for p in held {
                    self.write(p);
                }
                if std::mem::take(&mut self.held_dropped) {
                    self.upstream.push_back(None);
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.connected = false;
                self.ended.get_or_insert(LinkEnd::ChildGone);
            }
            Event::KeyframeRequest(r) => {
                self.keyframe_requests += 1;
                self.upstream.push_back(r.rid);
            }
            Event::ChannelOpen(id, _) if id == self.chat => {
                self.chat_open = true;
                self.chat_in.push_back(LinkChat::Open);
                self.flush_chat();
            }
            Event::ChannelData(d) if d.id == self.chat => {
                self.chat_in.push_back(LinkChat::Message {
                    binary: d.binary,
                    data: d.data,
                });
            }
            Event::ChannelBufferedAmountLow(id) if id == self.chat => self.flush_chat(),
            Event::ChannelClose(id) if id == self.chat => {
                self.chat_open = false;
                self.chat_in.push_back(LinkChat::Closed);
            }
            _ => {}
        }
    }

    /// Hands held chat messages to the channel while it takes them.
    fn flush_chat(&mut self) {
        if !self.chat_open {
            return;
        }
        while let Some(text) = self.chat_out.front() {
            let Some(mut ch) = self.rtc.channel(self.chat) else {
                return;
            };
            match ch.write(false, text.as_bytes()) {
                Ok(true) => {}
                // Full: tried again when it drains (and on every poll).
                Ok(false) => {
                    ch.set_buffered_amount_low_threshold(CHAT_HELD_BYTES / 4);
                    return;
                }
                Err(e) => tracing::debug!("relay link: a chat message not sent: {e}"),
            }
            self.chat_out_bytes -= text.len();
            self.chat_out.pop_front();
        }
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
        self.packets += 1;
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
