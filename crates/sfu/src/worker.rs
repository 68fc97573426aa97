//! `Sfu`: one worker. Demultiplexes datagrams to peers, drives their str0m
//! instances, and fans RTP packets out from each stream's publisher to its
//! viewers.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::crypto::CryptoProvider;
use str0m::format::PayloadParams;
use str0m::ice::StunMessage;
use str0m::media::{KeyframeRequestKind, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Rtc, RtcConfig};

use crate::codec::is_keyframe_start;
use crate::consumer::{Consumer, codec_names};
use crate::metrics::Metrics;
use crate::peer::Peer;
use crate::router::{Router, RouterId, TrackIn, video_codec};
use crate::sdp::m_lines;
use crate::{
    CloseReason, IceCredentials, Input, Output, PeerId, Role, SessionAnswer, SessionError,
    SfuConfig, SfuEvent, StreamInfo,
};

/// How far ahead `poll_output` may say "nothing to do" when no peer has a timer.
const IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// One SFU worker. See the crate docs for the drive loop.
pub struct Sfu {
    config: SfuConfig,
    crypto: Arc<CryptoProvider>,
    peers: HashMap<PeerId, Peer>,
    next_peer: u64,
    routers: HashMap<RouterId, Router>,
    router_names: HashMap<String, RouterId>,
    next_router: u64,
    by_addr: HashMap<std::net::SocketAddr, PeerId>,
    by_ufrag: HashMap<String, PeerId>,
    dirty: VecDeque<PeerId>,
    timers: BinaryHeap<Reverse<(Instant, PeerId)>>,
    out: VecDeque<Output>,
    pending_rtp: Vec<(PeerId, RouterId, RtpPacket)>,
    pending_keyframe: Vec<(RouterId, MediaKind)>,
    to_close: Vec<(PeerId, CloseReason)>,
    last_now: Instant,
    metrics: Metrics,
}

impl Sfu {
    /// A worker with no peers.
    pub fn new(config: SfuConfig, now: Instant) -> Self {
        Sfu {
            config,
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            peers: HashMap::new(),
            next_peer: 1,
            routers: HashMap::new(),
            router_names: HashMap::new(),
            next_router: 1,
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            dirty: VecDeque::new(),
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
            pending_rtp: Vec::new(),
            pending_keyframe: Vec::new(),
            to_close: Vec::new(),
            last_now: now,
            metrics: Metrics::default(),
        }
    }

    /// Counters since start.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The streams this worker knows: live ones and ones with waiting viewers.
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

    /// Whether the peer exists on this worker.
    pub fn has_peer(&self, peer: PeerId) -> bool {
        self.peers.contains_key(&peer)
    }

    /// Starts a publisher (WHIP) session on `stream` from an SDP offer.
    pub fn publish(
        &mut self,
        now: Instant,
        stream: &str,
        offer_sdp: &str,
    ) -> Result<SessionAnswer, SessionError> {
        self.advance(now);
        let offer = parse_offer(offer_sdp)?;
        if let Some(r) = self
            .router_names
            .get(stream)
            .and_then(|id| self.routers.get(id))
            && r.publisher.is_some()
        {
            return Err(SessionError::StreamBusy(stream.to_string()));
        }
        let (mut rtc, ufrag) = self.new_rtc(now);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SessionError::Unsupported(e.to_string()))?;
        let answer_sdp = answer.to_sdp_string();

        let mut tracks: Vec<TrackIn> = Vec::new();
        for line in m_lines(&answer_sdp) {
            let (Some(kind), Some(mid), true) = (line.kind, line.mid, line.accepted) else {
                continue;
            };
            if tracks.iter().any(|t| t.kind == kind) {
                continue;
            }
            let Some(media) = rtc.media(mid) else {
                continue;
            };
            if !media.direction().is_receiving() {
                continue;
            }
            let params = negotiated_params(&rtc, mid);
            if params.is_empty() {
                continue;
            }
            tracks.push(TrackIn::new(
                mid,
                kind,
                params,
                self.config.keyframe_request_interval,
            ));
        }
        if tracks.is_empty() {
            return Err(SessionError::Unsupported(
                "the offer sends no audio or video lumen can receive \
                 (it takes Opus audio and H.264 or VP8 video)"
                    .to_string(),
            ));
        }

        let router_id = self.router_for(stream);
        let id = self.add_peer(rtc, ufrag, Role::Publisher, router_id, stream);
        let mut incompatible = Vec::new();
        if let Some(router) = self.routers.get_mut(&router_id) {
            router.publisher = Some(id);
            router.tracks = tracks;
            // Viewers that waited through a publisher change follow the new one.
            for vid in &router.viewers {
                let Some(v) = self.peers.get_mut(vid) else {
                    continue;
                };
                let mut any = false;
                for c in &mut v.consumers {
                    if let Some(t) = router.tracks.iter().find(|t| t.kind == c.kind) {
                        any |= c.bind(&t.params);
                    } else {
                        c.pt_map.clear();
                    }
                }
                if !any {
                    incompatible.push(*vid);
                }
            }
        }
        for vid in incompatible {
            self.close_peer(vid, CloseReason::Incompatible);
        }
        Ok(SessionAnswer {
            peer: id,
            answer_sdp,
        })
    }

    /// Starts a viewer (WHEP) session on `stream` from an SDP offer.
    pub fn subscribe(
        &mut self,
        now: Instant,
        stream: &str,
        offer_sdp: &str,
    ) -> Result<SessionAnswer, SessionError> {
        self.advance(now);
        let offer = parse_offer(offer_sdp)?;
        let Some(router_id) = self.router_names.get(stream).copied() else {
            return Err(SessionError::NotLive(stream.to_string()));
        };
        let Some(router) = self.routers.get(&router_id) else {
            return Err(SessionError::NotLive(stream.to_string()));
        };
        if router.publisher.is_none() {
            return Err(SessionError::NotLive(stream.to_string()));
        }
        let (mut rtc, ufrag) = self.new_rtc(now);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SessionError::Unsupported(e.to_string()))?;
        let answer_sdp = answer.to_sdp_string();

        let mut consumers = Vec::new();
        let mut any_bound = false;
        for line in m_lines(&answer_sdp) {
            let (Some(kind), Some(mid), true) = (line.kind, line.mid, line.accepted) else {
                continue;
            };
            if consumers.iter().any(|c: &Consumer| c.kind == kind) {
                continue;
            }
            let sending = rtc.media(mid).is_some_and(|m| m.direction().is_sending());
            if !sending {
                continue;
            }
            let Some(tx_ssrc) = rtc
                .direct_api()
                .stream_tx_by_mid(mid, None)
                .map(|s| s.ssrc())
            else {
                continue;
            };
            let mut c = Consumer::new(kind, mid, tx_ssrc, negotiated_params(&rtc, mid));
            if let Some(t) = router.tracks.iter().find(|t| t.kind == kind) {
                any_bound |= c.bind(&t.params);
            }
            consumers.push(c);
        }
        if !any_bound {
            let sent: Vec<PayloadParams> = router
                .tracks
                .iter()
                .flat_map(|t| t.params.iter().copied())
                .collect();
            return Err(SessionError::Unsupported(format!(
                "the offer receives no codec the stream sends ({})",
                codec_names(&sent)
            )));
        }
        let id = self.add_peer(rtc, ufrag, Role::Viewer, router_id, stream);
        if let Some(p) = self.peers.get_mut(&id) {
            p.consumers = consumers;
        }
        if let Some(r) = self.routers.get_mut(&router_id) {
            r.viewers.push(id);
        }
        Ok(SessionAnswer {
            peer: id,
            answer_sdp,
        })
    }

    /// Ends a session. Returns whether the peer existed.
    pub fn close(&mut self, peer: PeerId) -> bool {
        if !self.peers.contains_key(&peer) {
            return false;
        }
        self.close_peer(peer, CloseReason::Requested);
        true
    }

    /// Adds a trickled remote candidate (`candidate:...`, with or without `a=`).
    pub fn add_remote_candidate(&mut self, peer: PeerId, line: &str) -> Result<(), SessionError> {
        let p = self.peers.get_mut(&peer).ok_or(SessionError::UnknownPeer)?;
        let line = line.trim().trim_start_matches("a=");
        let c = Candidate::from_sdp_string(line)
            .map_err(|e| SessionError::BadCandidate(e.to_string()))?;
        p.rtc.add_remote_candidate(c);
        self.mark_dirty(peer);
        Ok(())
    }

    /// ICE restart: the remote side has new credentials; we answer with ours.
    pub fn restart_ice(
        &mut self,
        peer: PeerId,
        remote_ufrag: &str,
        remote_pwd: &str,
    ) -> Result<IceCredentials, SessionError> {
        let p = self.peers.get_mut(&peer).ok_or(SessionError::UnknownPeer)?;
        let local = IceCreds::new();
        let mut api = p.rtc.direct_api();
        api.set_local_ice_credentials(local.clone());
        api.set_remote_ice_credentials(IceCreds {
            ufrag: remote_ufrag.to_string(),
            pass: remote_pwd.to_string(),
        });
        self.by_ufrag.remove(&p.ufrag);
        p.ufrag = local.ufrag.clone();
        self.by_ufrag.insert(local.ufrag.clone(), peer);
        self.mark_dirty(peer);
        Ok(IceCredentials {
            ufrag: local.ufrag,
            pwd: local.pass,
        })
    }

    /// Feeds a datagram or the passing of time.
    pub fn handle_input(&mut self, input: Input<'_>) {
        match input {
            Input::Timeout(now) => {
                self.advance(now);
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
            if !self.to_close.is_empty() {
                let closing = std::mem::take(&mut self.to_close);
                for (id, reason) in closing {
                    self.close_peer(id, reason);
                }
                continue;
            }
            if !self.pending_rtp.is_empty() || !self.pending_keyframe.is_empty() {
                self.fan_out();
                continue;
            }
            if let Some(id) = self.dirty.pop_front() {
                self.drain_peer(id);
                continue;
            }
            while let Some(Reverse((t, id))) = self.timers.peek().copied() {
                let valid = self
                    .peers
                    .get(&id)
                    .is_some_and(|p| p.next_timeout == Some(t));
                if valid {
                    return Output::Timeout(t);
                }
                self.timers.pop();
            }
            return Output::Timeout(self.last_now + IDLE_TIMEOUT);
        }
    }

    fn advance(&mut self, now: Instant) {
        if now > self.last_now {
            self.last_now = now;
        }
    }

    fn new_rtc(&self, now: Instant) -> (Rtc, String) {
        let creds = IceCreds::new();
        let ufrag = creds.ufrag.clone();
        let mut rtc = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_crypto_provider(self.crypto.clone())
            .set_local_ice_credentials(creds)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_h264(true)
            .enable_vp8(true)
            .build(now);
        for addr in &self.config.candidate_addrs {
            if let Ok(c) = Candidate::host(*addr, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        (rtc, ufrag)
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

    fn add_peer(
        &mut self,
        rtc: Rtc,
        ufrag: String,
        role: Role,
        router: RouterId,
        stream: &str,
    ) -> PeerId {
        let id = PeerId(self.next_peer);
        self.next_peer += 1;
        self.by_ufrag.insert(ufrag.clone(), id);
        self.peers.insert(
            id,
            Peer {
                role,
                router,
                stream: stream.to_string(),
                rtc,
                ufrag,
                next_timeout: None,
                dirty: false,
                connected: false,
                addrs: Vec::new(),
                consumers: Vec::new(),
                ssrc_cache: Vec::new(),
            },
        );
        self.metrics.peers_created += 1;
        self.mark_dirty(id);
        id
    }

    fn mark_dirty(&mut self, id: PeerId) {
        if let Some(p) = self.peers.get_mut(&id)
            && !p.dirty
        {
            p.dirty = true;
            self.dirty.push_back(id);
        }
    }

    fn receive(
        &mut self,
        now: Instant,
        source: std::net::SocketAddr,
        destination: std::net::SocketAddr,
        data: &[u8],
    ) {
        let Ok(recv) = Receive::new(Protocol::Udp, source, destination, data) else {
            self.metrics.dropped_malformed += 1;
            return;
        };
        let input = str0m::Input::Receive(now, recv);
        let id = match self.by_addr.get(&source) {
            Some(id) => *id,
            None => {
                // An unknown address may only introduce itself with a STUN
                // check naming one of our ufrags (and passing its integrity).
                let Some(id) = StunMessage::parse(data)
                    .ok()
                    .and_then(|m| m.split_username().map(|(local, _)| local.to_string()))
                    .and_then(|local| self.by_ufrag.get(&local).copied())
                else {
                    self.metrics.dropped_unknown_source += 1;
                    return;
                };
                let Some(p) = self.peers.get_mut(&id) else {
                    self.metrics.dropped_unknown_source += 1;
                    return;
                };
                if !p.rtc.accepts(&input) {
                    self.metrics.dropped_rejected += 1;
                    return;
                }
                p.addrs.push(source);
                self.by_addr.insert(source, id);
                id
            }
        };
        let Some(p) = self.peers.get_mut(&id) else {
            self.metrics.dropped_unknown_source += 1;
            return;
        };
        if let Err(e) = p.rtc.handle_input(input) {
            // A datagram the connection cannot use (bad SRTP, stray DTLS) is
            // dropped; only a dead connection closes the session.
            tracing::debug!(peer = %id, error = %e, "datagram rejected");
            self.metrics.dropped_rejected += 1;
            if !p.rtc.is_alive() {
                self.to_close.push((id, CloseReason::Failed));
            }
        }
        // str0m's RTP mode holds one received packet until the next
        // poll_output: drain now, before another datagram overwrites it.
        self.drain_peer(id);
    }

    fn drain_peer(&mut self, id: PeerId) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.dirty = false;
        loop {
            match p.rtc.poll_output() {
                Ok(str0m::Output::Timeout(t)) => {
                    if p.next_timeout != Some(t) {
                        p.next_timeout = Some(t);
                        self.timers.push(Reverse((t, id)));
                    }
                    break;
                }
                Ok(str0m::Output::Transmit(t)) => self.out.push_back(Output::Transmit(t)),
                Ok(str0m::Output::Event(e)) => match e {
                    Event::Connected => {
                        p.connected = true;
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
                        self.pending_rtp.push((id, p.router, pkt));
                    }
                    Event::KeyframeRequest(req) if p.role == Role::Viewer => {
                        self.metrics.keyframe_requests_received += 1;
                        if let Some(c) = p.consumers.iter().find(|c| c.mid == req.mid) {
                            self.pending_keyframe.push((p.router, c.kind));
                        }
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
    }

    /// Forwards the RTP packets collected while draining publishers.
    fn fan_out(&mut self) {
        for (router_id, kind) in std::mem::take(&mut self.pending_keyframe) {
            let now = self.last_now;
            self.request_keyframe(router_id, kind, now);
        }
        let pending = std::mem::take(&mut self.pending_rtp);
        for (pub_id, router_id, pkt) in pending {
            self.forward(pub_id, router_id, pkt);
        }
    }

    fn forward(&mut self, pub_id: PeerId, router_id: RouterId, pkt: RtpPacket) {
        let now = pkt.timestamp;
        let Some(publisher) = self.peers.get_mut(&pub_id) else {
            return;
        };
        let ssrc = pkt.header.ssrc;
        let Some((mid, rid)) = publisher.midrid_of(ssrc) else {
            return;
        };
        let Some(router) = self.routers.get_mut(&router_id) else {
            return;
        };
        let Some(track) = router.tracks.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        if !track.rid_chosen {
            track.rid = rid;
            track.rid_chosen = true;
        } else if track.rid != rid {
            return;
        }
        self.metrics.rtp_in += 1;
        let kind = track.kind;
        let pt = pkt.header.payload_type;
        let codec = track
            .params
            .iter()
            .find(|p| p.pt() == pt)
            .and_then(video_codec);
        let is_key = codec.is_some_and(|c| is_keyframe_start(c, &pkt.payload));
        if is_key {
            track.keyframes.keyframe_received();
        }
        let ext = ExtensionValues {
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            video_orientation: pkt.header.ext_vals.video_orientation,
            ..Default::default()
        };
        let mut waiting = false;
        for vid in &router.viewers {
            let Some(v) = self.peers.get_mut(vid) else {
                continue;
            };
            if !v.connected {
                continue;
            }
            let Some(c) = v.consumers.iter_mut().find(|c| c.kind == kind) else {
                continue;
            };
            let Some(map) = c.map_pt(pt) else {
                continue;
            };
            if c.waiting_keyframe {
                if !is_key {
                    waiting = true;
                    continue;
                }
                c.waiting_keyframe = false;
            }
            let Some(m) = c
                .munger
                .munge(now, *ssrc, *pkt.seq_no, pkt.header.timestamp)
            else {
                continue;
            };
            let tx_ssrc = c.tx_ssrc;
            let mut api = v.rtc.direct_api();
            let Some(tx) = api.stream_tx(&tx_ssrc) else {
                continue;
            };
            tx.write_rtp(
                RtpWrite::new(map.to, m.seq.into(), m.timestamp, now, pkt.payload.clone())
                    .marker(pkt.header.marker)
                    .nackable(kind == MediaKind::Video)
                    .ext_vals(ext.clone()),
            );
            self.metrics.rtp_forwarded += 1;
            if !v.dirty {
                v.dirty = true;
                self.dirty.push_back(*vid);
            }
        }
        if waiting {
            self.request_keyframe(router_id, kind, now);
        } else if let Some(t) = self
            .routers
            .get_mut(&router_id)
            .and_then(|r| r.tracks.iter_mut().find(|t| t.mid == mid))
            && t.keyframes.poll(now)
        {
            // A request that was held back by the throttle goes out now.
            self.send_pli(router_id, kind);
        }
    }

    /// Someone needs a keyframe on this router's track of `kind`.
    fn request_keyframe(&mut self, router_id: RouterId, kind: MediaKind, now: Instant) {
        let Some(router) = self.routers.get_mut(&router_id) else {
            return;
        };
        let Some(track) = router.tracks.iter_mut().find(|t| t.kind == kind) else {
            return;
        };
        if kind != MediaKind::Video {
            return;
        }
        if track.keyframes.request(now) {
            self.send_pli(router_id, kind);
        }
    }

    fn send_pli(&mut self, router_id: RouterId, kind: MediaKind) {
        let Some(router) = self.routers.get(&router_id) else {
            return;
        };
        let Some(track) = router.tracks.iter().find(|t| t.kind == kind) else {
            return;
        };
        let (mid, rid) = (track.mid, track.rid);
        let Some(pub_id) = router.publisher else {
            return;
        };
        let Some(p) = self.peers.get_mut(&pub_id) else {
            return;
        };
        if let Some(rx) = p.rtc.direct_api().stream_rx_by_mid(mid, rid) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            self.metrics.keyframe_requests_sent += 1;
            self.mark_dirty(pub_id);
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
            match p.role {
                Role::Publisher => {
                    if router.publisher == Some(id) {
                        router.publisher = None;
                        router.tracks.clear();
                    }
                }
                Role::Viewer => router.viewers.retain(|v| *v != id),
            }
            if router.is_empty() {
                self.router_names.remove(&router.name);
                self.routers.remove(&p.router);
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
    StreamInfo {
        name: r.name.clone(),
        live: r.publisher.is_some(),
        viewers: r.viewers.len(),
    }
}

fn parse_offer(sdp: &str) -> Result<SdpOffer, SessionError> {
    if !sdp.trim_start().starts_with("v=") {
        return Err(SessionError::MalformedSdp(
            "an SDP starts with a v= line".to_string(),
        ));
    }
    for (i, line) in sdp.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let b = line.as_bytes();
        if b.len() < 2 || !b[0].is_ascii_lowercase() || b[1] != b'=' {
            return Err(SessionError::MalformedSdp(format!(
                "line {} is not of the form <letter>=<value>",
                i + 1
            )));
        }
    }
    if !sdp.lines().any(|l| l.starts_with("m=")) {
        return Err(SessionError::MalformedSdp(
            "the SDP has no media (m=) section".to_string(),
        ));
    }
    SdpOffer::from_sdp_string(sdp).map_err(|e| {
        // str0m's parser reports positions as pointers; keep only the kind.
        let msg = e.to_string();
        let msg = msg
            .split(" at PointerOffset")
            .next()
            .unwrap_or(&msg)
            .to_string();
        SessionError::MalformedSdp(msg)
    })
}

/// The primary payload types negotiated on one m-line.
fn negotiated_params(rtc: &Rtc, mid: str0m::media::Mid) -> Vec<PayloadParams> {
    let Some(media) = rtc.media(mid) else {
        return Vec::new();
    };
    let pts = media.remote_pts();
    rtc.codec_config()
        .params()
        .iter()
        .filter(|p| pts.contains(&p.pt()))
        .copied()
        .collect()
}
