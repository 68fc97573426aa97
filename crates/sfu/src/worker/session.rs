//! Session commands: publish (WHIP), subscribe (WHEP), close, trickle and
//! ICE restart. Each answers synchronously; a refusal changes nothing.

use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::change::SdpOffer;
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Rids};
use str0m::{Candidate, IceCreds, Rtc, RtcConfig, RtcError};

use super::Sfu;
use crate::consumer::{Consumer, codec_names};
use crate::router::TrackIn;
use crate::sdp::{check_ice_credentials, check_offer, dtls_client_for_channels, m_lines};
use crate::{
    CloseReason, IceCredentials, LayerRequest, PeerId, Role, SessionAnswer, SessionError,
    ViewerLayer,
};

/// Video packets each outgoing stream keeps for retransmission: about 0.45 s
/// at 2.5 Mbit/s (longer on lower layers), enough to answer NACKs on paths
/// with a round trip up to a few hundred ms; a repair later than that comes
/// after a sub-second player gave the picture up. Each costs ~430 bytes per
/// viewer (str0m's default of 1000: ~420 KiB per viewer). A window by time
/// that follows the viewer's round trip (three round trips and 100 ms) was
/// tried and lost frames at 150 ms one way and 5 % loss
/// (`loss_on_a_long_path_is_repaired`); a window long enough for that keeps
/// as many packets as this on a short path.
const SEND_BUFFER_VIDEO: usize = 128;

/// How often str0m reports a peer's stats (NACK counts) when it has no
/// bandwidth estimation to feed.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// An offer that passed the checks of one pass over its text, then
/// str0m's parser.
struct Offer {
    sdp: SdpOffer,
    /// lumen is the DTLS client (see `dtls_client_for_channels`), so SCTP
    /// stream 0 is free for a channel negotiated out of band.
    stream_zero_free: bool,
    /// Its distinct `a=candidate` lines: they count towards the session's
    /// `max_remote_candidates`.
    candidates: usize,
}

/// A new peer connection that accepted an offer.
struct Accepted {
    rtc: Rtc,
    ufrag: String,
    answer_sdp: String,
    /// The answer's accepted audio and video m-lines, in order (a data
    /// channel's `m=application` is not among them: str0m serves it).
    media: Vec<(MediaKind, Mid)>,
    /// The channel on SCTP stream 0 lumen made for a client that
    /// negotiates it out of band, with its label.
    quiet_channel: Option<(ChannelId, String)>,
}

impl Sfu {
    /// Starts a publisher (WHIP) session on `stream` from an SDP offer.
    pub fn publish(
        &mut self,
        now: Instant,
        stream: &str,
        offer_sdp: &str,
    ) -> Result<SessionAnswer, SessionError> {
        self.advance(now);
        let offer = self.parse_offer(offer_sdp)?;
        // A publisher still connecting holds the name too: until it
        // connects, or `connect_timeout` closes it.
        if let Some(r) = self
            .router_names
            .get(stream)
            .and_then(|id| self.routers.get(id))
            && r.publisher.is_some()
        {
            return Err(SessionError::StreamBusy(stream.to_string()));
        }
        let candidates = offer.candidates;
        let Accepted {
            rtc,
            ufrag,
            answer_sdp,
            media,
            quiet_channel,
        } = self.accept(now, offer.sdp, offer.stream_zero_free, false, true, false)?;

        let mut tracks: Vec<TrackIn> = Vec::new();
        for (kind, mid) in media {
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
            let rids = match media.rids_rx() {
                Rids::Specific(r) => r.clone(),
                _ => Vec::new(),
            };
            let mut params = params;
            if kind == MediaKind::Video && self.config.sink_av1 {
                params.push(sink_av1_params(&params));
            }
            tracks.push(TrackIn::new(
                mid,
                kind,
                params,
                &rids,
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
        let id = self.add_peer(rtc, ufrag, Role::Publisher, router_id, stream, candidates);
        self.set_quiet_channel(id, quiet_channel);
        if let Some(router) = self.routers.get_mut(&router_id) {
            router.publisher = Some(id);
            router.publisher_connected = false;
            router.tracks = tracks;
        }
        // Viewers that waited through a publisher change follow the new one.
        for vid in self.rebind_viewers(router_id) {
            self.close_peer(vid, CloseReason::Incompatible);
        }
        self.send_source(router_id, true);
        self.stream_updated(router_id);
        Ok(SessionAnswer {
            peer: id,
            answer_sdp,
        })
    }

    /// Starts a viewer (WHEP) session on `stream` from an SDP offer.
    ///
    /// The stream needs a publisher, but not a connected one: viewers that
    /// arrive with the broadcaster join while its connection comes up (the
    /// stream is just not reported live yet). The viewer counts in
    /// [`StreamInfo::viewers`](crate::StreamInfo::viewers) once it
    /// connected.
    pub fn subscribe(
        &mut self,
        now: Instant,
        stream: &str,
        offer_sdp: &str,
    ) -> Result<SessionAnswer, SessionError> {
        self.advance(now);
        let offer = self.parse_offer(offer_sdp)?;
        let Some(router_id) = self.router_names.get(stream).copied() else {
            return Err(SessionError::NotLive(stream.to_string()));
        };
        let Some(router) = self.routers.get(&router_id) else {
            return Err(SessionError::NotLive(stream.to_string()));
        };
        if !router.has_publisher() {
            return Err(SessionError::NotLive(stream.to_string()));
        }
        // A bandwidth estimate only matters when there are layers to choose
        // from (or may be soon: a transcoder's rungs).
        let simulcast = router.video().is_some_and(|t| {
            t.layers.len() > 1 || (self.config.estimate_single_layer && !t.params.is_empty())
        });
        let candidates = offer.candidates;
        let Accepted {
            mut rtc,
            ufrag,
            answer_sdp,
            media,
            quiet_channel,
        } = self.accept(
            now,
            offer.sdp,
            offer.stream_zero_free,
            simulcast,
            simulcast,
            self.config.sink_av1,
        )?;

        let mut consumers = Vec::new();
        let mut any_bound = false;
        for (kind, mid) in media {
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
                c.bind(&t.params);
                // What the publisher itself sends: an AV1 entry is only
                // ever a sink's layer (`sink_av1`), which a stream may
                // never get, so a viewer that can take nothing else has
                // nothing to watch.
                any_bound |= publisher_sent(&t.params).any(|p| c.map_pt(p.pt()).is_some());
            }
            consumers.push(c);
        }
        if !any_bound {
            let sent: Vec<PayloadParams> = router
                .tracks
                .iter()
                .flat_map(|t| publisher_sent(&t.params).copied())
                .collect();
            return Err(SessionError::Unsupported(format!(
                "the offer receives no codec the stream sends ({})",
                codec_names(&sent)
            )));
        }
        let id = self.add_peer(rtc, ufrag, Role::Viewer, router_id, stream, candidates);
        self.set_quiet_channel(id, quiet_channel);
        if let Some(p) = self.peers.get_mut(&id) {
            p.consumers = consumers;
        }
        if let Some(r) = self.routers.get_mut(&router_id) {
            r.viewers.push(id);
        }
        self.reselect(router_id, id, now);
        // No `StreamUpdated` yet: the viewer counts once it connected.
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

    /// A viewer's layer wish (WHEP layer selection): pin a rid or go back to
    /// automatic choice.
    pub fn set_layer(&mut self, peer: PeerId, request: LayerRequest) -> Result<(), SessionError> {
        let p = self.peers.get_mut(&peer).ok_or(SessionError::UnknownPeer)?;
        if p.role != Role::Viewer {
            return Err(SessionError::UnknownPeer);
        }
        p.layer_request = request;
        let router = p.router;
        let now = self.last_now;
        self.reselect(router, peer, now);
        Ok(())
    }

    /// The size a viewer's player shows the video at, in device pixels
    /// (`None`: unknown). Automatic choice then stops at the smallest layer
    /// that covers it.
    pub fn set_render_size(
        &mut self,
        peer: PeerId,
        size: Option<(u32, u32)>,
    ) -> Result<(), SessionError> {
        let p = self.peers.get_mut(&peer).ok_or(SessionError::UnknownPeer)?;
        if p.role != Role::Viewer {
            return Err(SessionError::UnknownPeer);
        }
        if let Some(c) = p.consumer_mut(MediaKind::Video) {
            c.selector.render_size = size;
        }
        let router = p.router;
        let now = self.last_now;
        self.reselect(router, peer, now);
        Ok(())
    }

    /// A viewer's layer state.
    pub fn viewer_layer(&self, peer: PeerId) -> Option<ViewerLayer> {
        let p = self.peers.get(&peer)?;
        if p.role != Role::Viewer {
            return None;
        }
        let c = p.consumer(MediaKind::Video)?;
        Some(super::select::viewer_layer(c, p.layer_request.clone()))
    }

    /// Adds a trickled remote candidate (`candidate:...`, with or without `a=`).
    ///
    /// A session takes at most [`SfuConfig::max_remote_candidates`] (its
    /// offer's included, and not given back by an ICE restart: str0m keeps
    /// the old ones); past that this refuses with
    /// [`SessionError::TooManyCandidates`] before any parsing. str0m scans
    /// every candidate it holds for each one added, so the bound is what
    /// keeps each call's work small. Refusing costs a session little: lumen
    /// is ICE-lite and learns a browser's address from its connectivity
    /// checks, trickled or not.
    ///
    /// [`SfuConfig::max_remote_candidates`]: crate::SfuConfig::max_remote_candidates
    pub fn add_remote_candidate(&mut self, peer: PeerId, line: &str) -> Result<(), SessionError> {
        let max = self.config.max_remote_candidates;
        let p = self.peers.get_mut(&peer).ok_or(SessionError::UnknownPeer)?;
        if p.remote_candidates >= max {
            self.metrics.candidates_refused += 1;
            return Err(SessionError::TooManyCandidates(max));
        }
        let line = line.trim().trim_start_matches("a=");
        let c = Candidate::from_sdp_string(line)
            .map_err(|e| SessionError::BadCandidate(e.to_string()))?;
        p.remote_candidates += 1;
        p.rtc.add_remote_candidate(c);
        self.mark_dirty(peer);
        Ok(())
    }

    /// ICE restart: the remote side has new credentials; we answer with ours.
    /// Credentials RFC 8839 does not allow are refused with
    /// [`SessionError::BadIceCredentials`], and nothing changes.
    pub fn restart_ice(
        &mut self,
        peer: PeerId,
        remote_ufrag: &str,
        remote_pwd: &str,
    ) -> Result<IceCredentials, SessionError> {
        let p = self.peers.get_mut(&peer).ok_or(SessionError::UnknownPeer)?;
        check_ice_credentials(remote_ufrag, remote_pwd).map_err(SessionError::BadIceCredentials)?;
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

    /// Remembers the out-of-band channel made for a new peer.
    fn set_quiet_channel(&mut self, peer: PeerId, channel: Option<(ChannelId, String)>) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.quiet_channel = channel;
        }
    }

    /// An offer's text, checked in one pass (see `check_offer`), then
    /// parsed by str0m. A refusal for size is counted.
    fn parse_offer(&mut self, sdp: &str) -> Result<Offer, SessionError> {
        let candidates = check_offer(
            sdp,
            self.config.max_m_lines,
            self.config.max_remote_candidates,
        )
        .inspect_err(|e| {
            if matches!(e, SessionError::OfferTooLarge(_)) {
                self.metrics.offers_too_large += 1;
            }
        })?;
        let rewritten = self
            .config
            .out_of_band_channel
            .as_ref()
            .and_then(|_| dtls_client_for_channels(sdp));
        let stream_zero_free = rewritten.is_some();
        let sdp = SdpOffer::from_sdp_string(rewritten.as_deref().unwrap_or(sdp)).map_err(|e| {
            // str0m's parser reports positions as pointers; keep only the kind.
            let msg = e.to_string();
            let msg = msg
                .split(" at PointerOffset")
                .next()
                .unwrap_or(&msg)
                .to_string();
            SessionError::MalformedSdp(msg)
        })?;
        Ok(Offer {
            sdp,
            stream_zero_free,
            candidates,
        })
    }

    /// The part of publish and subscribe that does not depend on the role:
    /// a new connection (see `new_rtc`) accepts the offer; its answer's
    /// media m-lines come back for the role to use.
    ///
    /// str0m refuses an offer it cannot make sense of as a remote SDP
    /// error (no m-lines, credentials or fingerprint, m-lines and BUNDLE
    /// group that disagree, a mid twice): the client's fault, malformed.
    /// Anything else it refuses is on lumen's side of the line: unsupported.
    fn accept(
        &self,
        now: Instant,
        offer: SdpOffer,
        stream_zero_free: bool,
        bwe: bool,
        twcc: bool,
        av1: bool,
    ) -> Result<Accepted, SessionError> {
        let (mut rtc, ufrag) = self.new_rtc(now, bwe, twcc, av1);
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| match e {
            RtcError::RemoteSdp(msg) => SessionError::MalformedSdp(msg),
            RtcError::Sdp(e) => SessionError::MalformedSdp(e.to_string()),
            e => SessionError::Unsupported(e.to_string()),
        })?;
        let answer_sdp = answer.to_sdp_string();
        // A client may open `chat` itself in band (on an odd stream, as
        // the DTLS server) or negotiate it out of band on stream 0; the
        // second needs lumen's side of the channel made now.
        let quiet_channel = match (&self.config.out_of_band_channel, stream_zero_free) {
            (Some(label), true) if answer_sdp.contains("m=application ") => {
                let id = rtc.direct_api().create_data_channel(ChannelConfig {
                    label: label.clone(),
                    negotiated: Some(0),
                    ..ChannelConfig::default()
                });
                Some((id, label.clone()))
            }
            _ => None,
        };
        let media = m_lines(&answer_sdp)
            .into_iter()
            .filter_map(|l| match (l.kind, l.mid, l.accepted) {
                (Some(kind), Some(mid), true) => Some((kind, mid)),
                _ => None,
            })
            .collect();
        Ok(Accepted {
            rtc,
            ufrag,
            answer_sdp,
            media,
            quiet_channel,
        })
    }

    /// A peer connection. `bwe`: a viewer of several layers, whose
    /// bandwidth the SFU estimates. `twcc`: negotiate transport-wide
    /// congestion control feedback (a publisher's browser estimates its
    /// uplink from ours; a viewer needs it for `bwe`, and without it str0m
    /// keeps no record of each packet sent). `av1`: a viewer may
    /// negotiate AV1 (see [`crate::SfuConfig::sink_av1`]).
    fn new_rtc(&self, now: Instant, bwe: bool, twcc: bool, av1: bool) -> (Rtc, String) {
        let creds = IceCreds::new();
        let ufrag = creds.ufrag.clone();
        let config = RtcConfig::new().set_extension_map(extension_map(twcc));
        let config = if bwe {
            config
                .enable_bwe(Some(Bitrate::bps(crate::layers::INITIAL_ESTIMATE_BPS)))
                // Receiver-report loss, for the selector's loss guard.
                .set_stats_interval(Some(crate::layers::EGRESS_STATS_INTERVAL))
        } else {
            // NACK counts for /metrics.
            config.set_stats_interval(Some(STATS_INTERVAL))
        };
        let mut rtc = config
            .set_send_buffer_video(SEND_BUFFER_VIDEO)
            .set_sctp_max_buffered_amount(super::channels::SEND_BUFFER)
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_crypto_provider(self.crypto.clone())
            .set_local_ice_credentials(creds)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_h264(true)
            .enable_vp8(true)
            .enable_av1(av1)
            .build(now);
        for addr in &self.config.candidate_addrs {
            if let Ok(c) = Candidate::host(*addr, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        (rtc, ufrag)
    }
}

/// The entries of a track's params the publisher sends (publishers are
/// never offered AV1: an AV1 entry is the one [`sink_av1_params`] added).
fn publisher_sent(params: &[PayloadParams]) -> impl Iterator<Item = &PayloadParams> {
    params
        .iter()
        .filter(|p| p.spec().codec != str0m::format::Codec::Av1)
}

/// The AV1 entry a stream's video track gets for layers a sink makes
/// ([`crate::SfuConfig::sink_av1`]): str0m's usual AV1 payload type, or
/// the first dynamic one the publisher's params leave free.
fn sink_av1_params(publisher: &[PayloadParams]) -> PayloadParams {
    let taken = |pt: u8| {
        publisher
            .iter()
            .any(|p| *p.pt() == pt || p.resend().is_some_and(|r| *r == pt))
    };
    let pt = std::iter::once(45)
        .chain(96..=127)
        .find(|&pt| !taken(pt))
        .unwrap_or(45);
    let mut config = str0m::format::CodecConfig::empty();
    config.add_config(
        pt.into(),
        None,
        str0m::format::Codec::Av1,
        str0m::media::Frequency::NINETY_KHZ,
        None,
        str0m::format::FormatParams::default(),
    );
    config.params()[0]
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

/// The header extensions lumen negotiates: str0m's standard set without
/// absolute send time, which only a receiver-side estimate (REMB) reads and
/// str0m makes none (transport-wide feedback is the estimate), and without
/// transport-wide sequence numbers unless `twcc`. Every extension
/// negotiated is a few bytes on every packet that carries it.
fn extension_map(twcc: bool) -> str0m::rtp::ExtensionMap {
    use str0m::rtp::{Extension, ExtensionMap};
    let standard = ExtensionMap::standard();
    let mut exts = ExtensionMap::empty();
    for (id, e) in standard.iter() {
        let useless = *e == Extension::AbsoluteSendTime
            || (!twcc && *e == Extension::TransportSequenceNumber);
        if !useless {
            exts.set(id, e.clone());
        }
    }
    exts
}
