//! `Sfu`: one worker. Demultiplexes datagrams to peers, drives their str0m
//! instances, and fans RTP packets out from each stream's publisher to its
//! viewers and sinks.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::BweKind;
use str0m::crypto::CryptoProvider;
use str0m::media::MediaKind;
use str0m::rtp::RtpPacket;
use str0m::{Event, IceConnectionState, Rtc};

use crate::metrics::Metrics;
use crate::peer::{NackCounts, Peer};
use crate::router::{Router, RouterId};
use crate::sink::MediaPacket;
use crate::{
    CloseReason, Input, LayerRequest, Output, PeerId, Role, SfuConfig, SfuEvent, SinkId, StreamInfo,
};

mod channels;
mod demux;
mod forward;
mod mirror;
mod select;
mod session;

/// How far ahead `poll_output` may say "nothing to do" when no peer has a timer.
const IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// A map keyed by the worker's own sequential ids (peers, routers), looked
/// up for every copy of every packet: hashed with one multiply (FxHash's),
/// since no client chooses these keys and SipHash's resistance to chosen
/// keys buys nothing (maps keyed by what clients send keep SipHash).
type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// See [`IdMap`].
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// One SFU worker. See the crate docs for the drive loop.
pub struct Sfu {
    config: SfuConfig,
    crypto: Arc<CryptoProvider>,
    /// Boxed: a `Peer` (its `Rtc`) is kilobytes, and a map's spare
    /// capacity would hold that much per empty slot.
    peers: IdMap<PeerId, Box<Peer>>,
    next_peer: u64,
    routers: IdMap<RouterId, Router>,
    router_names: HashMap<String, RouterId>,
    next_router: u64,
    by_addr: HashMap<std::net::SocketAddr, PeerId>,
    by_ufrag: HashMap<String, PeerId>,
    dirty: VecDeque<PeerId>,
    timers: BinaryHeap<Reverse<(Instant, PeerId)>>,
    out: VecDeque<Output>,
    /// Packets to fan out, in arrival order (see `fan_out`).
    pending_rtp: VecDeque<Pending>,
    pending_keyframe: Vec<(RouterId, MediaKind)>,
    /// Streams whose publisher (on this worker) is partway through a
    /// video frame: their packets wait for the frame's last one, until
    /// the deadline (see `forward::FRAME_HOLD`).
    holding: Vec<(RouterId, Instant)>,
    /// During a fan-out: the largest payload of each frame of two or more
    /// packets waiting (see `forward::frame_sizes`).
    frame_sizes: Vec<(u32, u32, usize)>,
    /// The packets of the fan-out's chunk that viewers wait to have
    /// sealed, and the viewers (see `forward::Chunked`).
    chunk: Vec<forward::Chunked>,
    sealing: Vec<PeerId>,
    pending_reselect: Vec<(RouterId, PeerId)>,
    /// Packets for sinks gathered during one fan-out: (sink, stream,
    /// packets).
    sink_batches: Vec<(SinkId, String, Vec<MediaPacket>)>,
    next_generation: u64,
    last_sweep: Instant,
    /// Packets forwarded since the shell last said what the worker
    /// produced was sent: their arrival, and copies made.
    unsent: Vec<(Instant, u64)>,
    to_close: Vec<(PeerId, CloseReason)>,
    /// Every peer's connect deadline, in the order they were made (so in
    /// deadline order: the timeout is one for all, and time only moves
    /// forward). Peers that connected meanwhile are skipped when their
    /// turn comes; the queue holds one entry per peer made in the last
    /// `connect_timeout`, and checking it costs nothing per datagram.
    connect_deadlines: VecDeque<(Instant, PeerId)>,
    last_now: Instant,
    metrics: Metrics,
}

/// A packet waiting to be fanned out.
pub(crate) enum Pending {
    /// From a publisher on this worker.
    Local(PeerId, RouterId, Box<RtpPacket>),
    /// From the stream's origin worker, for the viewers of this worker's
    /// mirror.
    Mirrored(RouterId, MediaPacket),
    /// Of a layer a sink makes (a transcoder's rung), on the origin.
    Injected(RouterId, MediaPacket),
}

impl Pending {
    /// The stream it belongs to.
    fn router(&self) -> RouterId {
        match self {
            Pending::Local(_, r, _) | Pending::Mirrored(r, _) | Pending::Injected(r, _) => *r,
        }
    }
}

/// Ticks a drain gives a peer whose str0m wants the time again at once.
const MAX_IMMEDIATE_TICKS: usize = 4;

impl Sfu {
    /// A worker with no peers.
    pub fn new(config: SfuConfig, now: Instant) -> Self {
        Sfu {
            config,
            crypto: Arc::new(crate::crypto_provider()),
            peers: IdMap::default(),
            next_peer: 1,
            routers: IdMap::default(),
            router_names: HashMap::new(),
            next_router: 1,
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            dirty: VecDeque::new(),
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
            pending_rtp: VecDeque::new(),
            pending_keyframe: Vec::new(),
            holding: Vec::new(),
            frame_sizes: Vec::new(),
            chunk: Vec::new(),
            sealing: Vec::new(),
            pending_reselect: Vec::new(),
            sink_batches: Vec::new(),
            next_generation: 1,
            last_sweep: now,
            unsent: Vec::new(),
            to_close: Vec::new(),
            connect_deadlines: VecDeque::new(),
            last_now: now,
            metrics: Metrics::default(),
        }
    }

    /// Counters since start.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The streams this worker knows: live ones, ones whose publisher is
    /// connecting, and ones with waiting viewers.
    pub fn streams(&self) -> Vec<StreamInfo> {
        let mut v: Vec<StreamInfo> = self.routers.values().map(stream_info).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One stream, if this worker has it.
    pub fn stream(&self, name: &str) -> Option<StreamInfo> {
        let id = self.router_names.get(name)?;
        self.routers.get(id).map(stream_info)
    }

    /// Every peer on this worker.
    pub fn peers(&self) -> Vec<PeerId> {
        self.peers.keys().copied().collect()
    }

    /// The shell sent every datagram the worker produced so far (call it
    /// after handing them to the socket): counts how long each forwarded
    /// copy among them took from its packet's arrival.
    pub fn sent(&mut self, now: Instant) {
        for (at, copies) in self.unsent.drain(..) {
            let us = now.saturating_duration_since(at).as_micros();
            self.metrics
                .forwarding_delay_us
                .observe_n(u64::try_from(us).unwrap_or(u64::MAX), copies);
        }
    }

    /// How many peers this worker serves.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Whether the peer exists on this worker.
    pub fn has_peer(&self, peer: PeerId) -> bool {
        self.peers.contains_key(&peer)
    }

    /// Feeds a datagram or the passing of time.
    pub fn handle_input(&mut self, input: Input<'_>) {
        match input {
            Input::Timeout(now) => {
                self.advance(now);
                self.sweep_mirrors(now);
                self.reap_unconnected(now);
                while let Some(Reverse((t, id))) = self.timers.peek().copied() {
                    if t > now {
                        break;
                    }
                    self.timers.pop();
                    let Some(p) = self.peers.get_mut(&id) else {
                        continue;
                    };
                    if p.next_timeout != Some(t) {
                        continue;
                    }
                    p.next_timeout = None;
                    if p.rtc.handle_input(str0m::Input::Timeout(now)).is_err() {
                        self.to_close.push((id, CloseReason::Failed));
                    }
                    self.mark_dirty(id);
                }
            }
            Input::Receive {
                now,
                source,
                destination,
                data,
            } => {
                self.advance(now);
                self.metrics.datagrams_in += 1;
                self.metrics.bytes_in += data.len() as u64;
                self.receive(now, source, destination, data);
            }
        }
    }

    /// What to do next. Drain until [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        loop {
            if let Some(o) = self.out.pop_front() {
                if let Output::Transmit(t) = &o {
                    self.metrics.datagrams_out += 1;
                    self.metrics.bytes_out += t.contents.len() as u64;
                }
                return o;
            }
            // Empty: the ring starts over at the front of its buffer
            // (`clear` does that; a `pop_front` that empties it does not).
            // Otherwise a queue that once grew walks its whole buffer for
            // good, and each output written lands on cache lines not used
            // since the last lap. It grows at the first start from the
            // keyframe cache (a group of pictures sealed in one go: the
            // queue grew to 1,024 slots, 128 KB); in the cache simulation of
            // `benches/forward-cost.sh` at 200 viewers that was two misses
            // per packet sealed.
            self.out.clear();
            if !self.to_close.is_empty() {
                let closing = std::mem::take(&mut self.to_close);
                for (id, reason) in closing {
                    self.close_peer(id, reason);
                }
                continue;
            }
            if !self.pending_reselect.is_empty() {
                let now = self.last_now;
                for (router, peer) in std::mem::take(&mut self.pending_reselect) {
                    self.reselect(router, peer, now);
                }
                continue;
            }
            // Connections written to go out before the next few packets
            // are fanned out: a viewer's queue holds a few packets, not a
            // keyframe, and no packet waits behind a whole frame for every
            // other viewer.
            if let Some(id) = self.dirty.pop_front() {
                self.drain_peer(id);
                continue;
            }
            // (Empty: to the front, as `out` above.)
            self.dirty.clear();
            if self.ready_to_fan_out() {
                self.fan_out();
                continue;
            }
            let mut next = self.last_now + IDLE_TIMEOUT;
            if let Some(t) = self.holding.iter().map(|(_, t)| *t).min() {
                next = next.min(t);
            }
            while let Some(Reverse((t, id))) = self.timers.peek().copied() {
                let valid = self
                    .peers
                    .get(&id)
                    .is_some_and(|p| p.next_timeout == Some(t));
                if valid {
                    next = next.min(t);
                    break;
                }
                self.timers.pop();
            }
            if let Some((t, _)) = self.connect_deadlines.front() {
                next = next.min(*t);
            }
            return Output::Timeout(next);
        }
    }

    /// Closes the peers whose connect deadline passed before they
    /// connected.
    fn reap_unconnected(&mut self, now: Instant) {
        while let Some(&(t, id)) = self.connect_deadlines.front() {
            if t > now {
                break;
            }
            self.connect_deadlines.pop_front();
            if self.peers.get(&id).is_some_and(|p| !p.connected) {
                tracing::debug!(peer = %id, "not connected in time");
                self.metrics.connect_timeouts += 1;
                self.to_close.push((id, CloseReason::ConnectTimeout));
            }
        }
    }

    fn advance(&mut self, now: Instant) {
        if now > self.last_now {
            self.last_now = now;
        }
    }

    fn stream_updated(&mut self, router: RouterId) {
        if let Some(r) = self.routers.get(&router) {
            self.out
                .push_back(Output::Event(SfuEvent::StreamUpdated(r.info())));
        }
    }

    fn router_for(&mut self, stream: &str) -> RouterId {
        if let Some(id) = self.router_names.get(stream) {
            return *id;
        }
        let id = RouterId(self.next_router);
        self.next_router += 1;
        self.routers.insert(id, Router::new(stream.to_string()));
        self.router_names.insert(stream.to_string(), id);
        id
    }

    /// A new peer, closed if it has not connected within
    /// `connect_timeout`. `remote_candidates`: those its offer gave.
    fn add_peer(
        &mut self,
        rtc: Rtc,
        ufrag: String,
        role: Role,
        router: RouterId,
        stream: &str,
        remote_candidates: usize,
    ) -> PeerId {
        let id = PeerId(self.next_peer);
        self.next_peer += 1;
        self.by_ufrag.insert(ufrag.clone(), id);
        self.connect_deadlines
            .push_back((self.last_now + self.config.connect_timeout, id));
        self.peers.insert(
            id,
            Box::new(Peer {
                role,
                router,
                stream: stream.to_string(),
                rtc,
                ufrag,
                next_timeout: None,
                dirty: false,
                poll_due: true,
                connected: false,
                addrs: Vec::new(),
                remote_candidates,
                consumers: Vec::new(),
                layer_request: LayerRequest::Auto,
                ssrc_cache: Vec::new(),
                waiting_since: (role == Role::Viewer).then_some(self.last_now),
                nacks: NackCounts::default(),
                quiet_channel: None,
                to_seal: Vec::new(),
            }),
        );
        self.metrics.peers_created += 1;
        self.mark_dirty(id);
        id
    }

    /// Queues the peer's drain, with a poll of its connection (see
    /// `Peer::poll_due`).
    fn mark_dirty(&mut self, id: PeerId) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.poll_due = true;
            if !p.dirty {
                p.dirty = true;
                self.dirty.push_back(id);
            }
        }
    }

    fn drain_peer(&mut self, id: PeerId) {
        // The fan-out's packets first, before what str0m has to send.
        self.seal(id);
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.dirty = false;
        if !p.poll_due {
            // Only sealed (see `Peer::poll_due`). The poll skipped found
            // the timeout str0m had kept (~260 instructions), but read the
            // parts of the connection it asks, cold at each viewer of a
            // fan-out. Built with debug assertions (the tests), it runs
            // and must find nothing new.
            #[cfg(debug_assertions)]
            match p.rtc.poll_output() {
                Ok(str0m::Output::Timeout(t)) => {
                    debug_assert_eq!(
                        Some(t),
                        p.next_timeout,
                        "a send at once moved the timeout ({:?})",
                        p.rtc.last_timeout_reason()
                    )
                }
                other => panic!("a send at once left output to poll: {other:?}"),
            }
            return;
        }
        p.poll_due = false;
        let now = self.last_now;
        let mut ticks = 0;
        let mut connected = None;
        loop {
            match p.rtc.poll_output() {
                // "Now" (str0m queued media and sends it on its next tick):
                // tick at once rather than after a trip through the shell's
                // timer, which a busy socket could hold back.
                Ok(str0m::Output::Timeout(t)) if t <= now && ticks < MAX_IMMEDIATE_TICKS => {
                    ticks += 1;
                    if p.rtc.handle_input(str0m::Input::Timeout(now)).is_err() {
                        self.to_close.push((id, CloseReason::Failed));
                        break;
                    }
                }
                Ok(str0m::Output::Timeout(t)) => {
                    if p.next_timeout != Some(t) {
                        p.next_timeout = Some(t);
                        self.timers.push(Reverse((t, id)));
                    }
                    break;
                }
                Ok(str0m::Output::Transmit(t)) => self.out.push_back(Output::Transmit(t)),
                Ok(str0m::Output::Event(e)) => match e {
                    Event::Connected if !p.connected => {
                        p.connected = true;
                        // Now it counts: a viewer, or the stream is live.
                        if let Some(r) = self.routers.get_mut(&p.router) {
                            match p.role {
                                Role::Viewer => r.connected_viewers += 1,
                                Role::Publisher if r.publisher == Some(id) => {
                                    r.publisher_connected = true;
                                }
                                Role::Publisher => {}
                            }
                            connected = Some((p.router, p.role));
                        }
                        if p.role == Role::Viewer {
                            // It may start on a cached keyframe now.
                            self.pending_reselect.push((p.router, id));
                        }
                        self.out.push_back(Output::Event(SfuEvent::Connected {
                            peer: id,
                            role: p.role,
                            stream: p.stream.clone(),
                        }));
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        self.to_close.push((id, CloseReason::Disconnected));
                    }
                    Event::RtpPacket(pkt) if p.role == Role::Publisher => {
                        let video = p
                            .midrid_of(pkt.header.ssrc)
                            .and_then(|(mid, _)| {
                                let r = self.routers.get(&p.router)?;
                                r.tracks.iter().find(|t| t.mid == mid)
                            })
                            .is_some_and(|t| t.kind == MediaKind::Video);
                        if video {
                            forward::hold_for_frame(
                                &mut self.holding,
                                p.router,
                                pkt.header.marker,
                                pkt.timestamp,
                            );
                        }
                        self.pending_rtp
                            .push_back(Pending::Local(id, p.router, pkt));
                    }
                    Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. })
                        if p.role == Role::Viewer =>
                    {
                        if let Some(c) = p.consumer_mut(MediaKind::Video) {
                            c.selector.estimate_bps = Some(estimate.as_u64());
                            self.metrics.bwe_bps.observe(estimate.as_u64());
                            self.pending_reselect.push((p.router, id));
                        }
                    }
                    Event::PeerStats(st) if p.role == Role::Viewer => {
                        if let (Some(c), Some(raw)) = (p.consumer_mut(MediaKind::Video), st.bwe_tx)
                        {
                            c.selector.raw_estimate_bps = Some(raw.as_u64());
                            self.pending_reselect.push((p.router, id));
                        }
                    }
                    Event::MediaEgressStats(st) if p.role == Role::Viewer => {
                        self.metrics.nacks_received += p.nacks.delta(st.mid, st.rid, st.nacks);
                        if let Some(c) = p.consumer_mut(MediaKind::Video)
                            && c.mid == st.mid
                            && c.selector.on_egress_stats(st.timestamp, st.bytes, st.loss)
                        {
                            self.pending_reselect.push((p.router, id));
                        }
                    }
                    Event::MediaIngressStats(st) if p.role == Role::Publisher => {
                        self.metrics.nacks_sent += p.nacks.delta(st.mid, st.rid, st.nacks);
                    }
                    Event::KeyframeRequest(req) if p.role == Role::Viewer => {
                        self.metrics.keyframe_requests_received += 1;
                        if let Some(c) = p.consumers.iter().find(|c| c.mid == req.mid) {
                            self.pending_keyframe.push((p.router, c.kind));
                        }
                    }
                    // Data channels (chat) are the application's: passed on.
                    // lumen's side of an out-of-band channel is open as
                    // soon as SCTP is: reported when the client speaks.
                    Event::ChannelOpen(channel, _)
                        if p.quiet_channel.as_ref().is_some_and(|(c, _)| *c == channel) => {}
                    Event::ChannelData(d)
                        if p.quiet_channel.as_ref().is_some_and(|(c, _)| *c == d.id) =>
                    {
                        if let Some((channel, label)) = p.quiet_channel.take() {
                            self.out.push_back(Output::Event(SfuEvent::ChannelOpen {
                                peer: id,
                                channel,
                                label,
                                // Out of band: no DCEP, no subprotocol.
                                protocol: String::new(),
                            }));
                        }
                        self.out.push_back(Output::Event(SfuEvent::ChannelData {
                            peer: id,
                            channel: d.id,
                            binary: d.binary,
                            data: d.data,
                        }));
                    }
                    Event::ChannelClose(channel)
                        if p.quiet_channel.as_ref().is_some_and(|(c, _)| *c == channel) =>
                    {
                        p.quiet_channel = None;
                    }
                    Event::ChannelOpen(channel, label) => {
                        let protocol = p
                            .rtc
                            .channel(channel)
                            .and_then(|c| c.config().map(|c| c.protocol.clone()))
                            .unwrap_or_default();
                        self.out.push_back(Output::Event(SfuEvent::ChannelOpen {
                            peer: id,
                            channel,
                            label,
                            protocol,
                        }));
                    }
                    Event::ChannelData(d) => {
                        self.out.push_back(Output::Event(SfuEvent::ChannelData {
                            peer: id,
                            channel: d.id,
                            binary: d.binary,
                            data: d.data,
                        }));
                    }
                    Event::ChannelClose(channel) => {
                        self.out
                            .push_back(Output::Event(SfuEvent::ChannelClose { peer: id, channel }));
                    }
                    _ => {}
                },
                Err(e) => {
                    tracing::debug!(peer = %id, error = %e, "peer failed");
                    self.to_close.push((id, CloseReason::Failed));
                    break;
                }
            }
        }
        if !p.rtc.is_alive() {
            self.to_close.push((id, CloseReason::Disconnected));
        }
        if let Some((router, role)) = connected {
            if role == Role::Publisher {
                // Its mirrors go live with it.
                self.send_source(router, false);
            }
            self.stream_updated(router);
        }
    }

    fn close_peer(&mut self, id: PeerId, reason: CloseReason) {
        let Some(mut p) = self.peers.remove(&id) else {
            return;
        };
        p.rtc.disconnect();
        // Whatever the disconnect queued (a DTLS close alert) still goes out.
        while let Ok(str0m::Output::Transmit(t)) = p.rtc.poll_output() {
            self.out.push_back(Output::Transmit(t));
        }
        for a in &p.addrs {
            self.by_addr.remove(a);
        }
        self.by_ufrag.remove(&p.ufrag);
        self.metrics.peers_closed += 1;
        if let Some(router) = self.routers.get_mut(&p.router) {
            let mut went_offline = false;
            match p.role {
                Role::Publisher => {
                    if router.publisher == Some(id) {
                        router.publisher = None;
                        router.publisher_connected = false;
                        router.tracks.clear();
                        went_offline = true;
                    }
                }
                Role::Viewer => {
                    router.viewers.retain(|v| *v != id);
                    if p.connected {
                        router.connected_viewers = router.connected_viewers.saturating_sub(1);
                    }
                }
            }
            let info = router.info();
            let unused_mirror = router.origin.is_some() && router.viewers.is_empty();
            if router.is_empty() {
                self.router_names.remove(&router.name);
                self.routers.remove(&p.router);
            }
            self.out
                .push_back(Output::Event(SfuEvent::StreamUpdated(info)));
            if went_offline {
                self.send_source(p.router, false);
            }
            if unused_mirror {
                self.detach(p.router);
            }
        }
        self.out.push_back(Output::Event(SfuEvent::Closed {
            peer: id,
            role: p.role,
            stream: p.stream,
            reason,
        }));
    }
}

fn stream_info(r: &Router) -> StreamInfo {
    r.info()
}
