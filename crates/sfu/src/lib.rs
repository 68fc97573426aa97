//! lumen's media core: a sans-IO SFU built on str0m.
//!
//! One [`Sfu`] is one worker: it owns the str0m [`Rtc`](str0m::Rtc) of every
//! peer pinned to it, demultiplexes their datagrams arriving on one UDP
//! socket, and forwards RTP packets from each stream's publisher (its
//! Producer) to its viewers (their Consumers). It never touches a socket and
//! never reads the clock: time is an input, like in str0m and quinn-proto.
//!
//! The rule is str0m's: after every input or command, drain
//! [`Sfu::poll_output`] until it returns [`Output::Timeout`].
//!
//! Besides its viewers, a stream's Router feeds its *sinks*
//! ([`Sfu::attach_sink`]): mirrors of the stream on other workers, which
//! serve viewers there ([`SinkId::Worker`]), and sinks outside the SFU such
//! as the recorder ([`SinkId::External`]). Their messages come out as
//! [`Output::Sink`] and go in through [`Sfu::handle_sink_message`]. Data channels pass
//! through the same way: [`SfuEvent::ChannelData`] out,
//! [`Sfu::send_channel`] in.
//!
//! ```no_run
//! use std::net::{SocketAddr, UdpSocket};
//! use std::time::Instant;
//! use lumen_sfu::{Input, Output, Sfu, SfuConfig};
//!
//! let socket = UdpSocket::bind("127.0.0.1:8000").unwrap();
//! let local: SocketAddr = socket.local_addr().unwrap();
//! let mut sfu = Sfu::new(SfuConfig::new(vec![local]), Instant::now());
//! // Commands come from signaling, e.g.:
//! // let session = sfu.publish(Instant::now(), "cam1", &offer_sdp)?;
//! let mut buf = vec![0; 2000];
//! loop {
//!     let deadline = loop {
//!         match sfu.poll_output() {
//!             Output::Transmit(t) => {
//!                 socket.send_to(&t.contents, t.destination).ok();
//!             }
//!             Output::Event(event) => println!("{event:?}"),
//!             // With one worker there are no mirrors, and no other sinks
//!             // were attached.
//!             Output::Sink { .. } => {}
//!             Output::Timeout(at) => break at,
//!         }
//!     };
//!     let wait = deadline.saturating_duration_since(Instant::now());
//!     socket.set_read_timeout(Some(wait.max(std::time::Duration::from_millis(1)))).unwrap();
//!     match socket.recv_from(&mut buf) {
//!         Ok((n, source)) => sfu.handle_input(Input::Receive {
//!             now: Instant::now(),
//!             source,
//!             destination: local,
//!             data: &buf[..n],
//!         }),
//!         Err(_) => sfu.handle_input(Input::Timeout(Instant::now())),
//!     }
//! }
//! ```
#![deny(missing_docs)]

mod cipher;
mod codec;
mod consumer;
#[doc(hidden)]
pub mod fuzzing;
mod gop;
mod keyframe;
mod layers;
mod metrics;
mod mirror;
mod munger;
mod peer;
mod router;
mod sdp;
mod sink;
mod worker;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use cipher::crypto_provider;
pub use codec::{VideoCodec, is_keyframe_start, picture_size, read_leb128};
pub use keyframe::KeyframeRequester;
pub use metrics::{BWE_BPS_BOUNDS, FORWARDING_DELAY_US_BOUNDS, Histogram, Metrics, TTFF_MS_BOUNDS};
pub use munger::{Munged, RtpMunger};
pub use sdp::TrickleFragment;
pub use sink::{MediaPacket, SinkBody, SinkId, SinkMessage, TrackDescription};
pub use str0m::channel::ChannelId;
/// A simulcast layer's RTP stream id, as [`MediaPacket::rid`] and
/// [`SinkMessage::keyframe`] name it.
pub use str0m::media::Rid;
pub use str0m::net::Transmit;
/// Hands back the buffer of a [`Transmit`] once it is sent, so that a
/// packet the [`Sfu`] encrypts later on this thread is written into it
/// instead of a new allocation (optional; lumen-node's outbox does it).
pub use str0m::net::recycle_datagram;
pub use worker::Sfu;

/// A peer connection (a WHIP or WHEP session) inside one [`Sfu`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u64);

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer-{}", self.0)
    }
}

/// What a peer does on its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends media in (WHIP).
    Publisher,
    /// Receives media (WHEP).
    Viewer,
}

/// Configuration of one worker.
///
/// The `max_*` bounds and `connect_timeout` keep one hostile client from
/// stalling the worker, holding its memory or squatting a stream name: each
/// refusal is a precise [`SessionError`] (or a counted drop, for datagrams)
/// and has a counter in [`Metrics`].
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Addresses announced as ICE host candidates (the worker's socket, or its
    /// public address). Datagrams must be handed in with one of these as the
    /// destination.
    pub candidate_addrs: Vec<SocketAddr>,
    /// At most one keyframe request per incoming track per this interval.
    pub keyframe_request_interval: Duration,
    /// Remote ICE candidates a session may give, in its offer and trickled
    /// together (default [`DEFAULT_MAX_REMOTE_CANDIDATES`]). str0m keeps every
    /// one and scans them all for each new one, so without a bound each
    /// trickle costs in proportion to all before it. Past it
    /// [`Sfu::add_remote_candidate`] refuses with
    /// [`SessionError::TooManyCandidates`] (counted in
    /// [`Metrics::candidates_refused`]), and an offer with more is refused
    /// with [`SessionError::OfferTooLarge`].
    pub max_remote_candidates: usize,
    /// m-lines an offer may have (default [`DEFAULT_MAX_M_LINES`]), counted
    /// before str0m parses it: each costs str0m a media section with its
    /// streams and buffers. More: [`SessionError::OfferTooLarge`], counted
    /// in [`Metrics::offers_too_large`].
    pub max_m_lines: usize,
    /// Source addresses a session's traffic may come from (default
    /// [`DEFAULT_MAX_ADDRS_PER_SESSION`]). A new one is taken only with a
    /// connectivity check that passes the session's credentials, and only
    /// while the session has fewer than this; past it the datagram is
    /// dropped before str0m sees it and counted in
    /// [`Metrics::dropped_address_limit`].
    pub max_addrs_per_session: usize,
    /// A peer that has not completed ICE and DTLS this long after its offer
    /// was accepted is closed ([`CloseReason::ConnectTimeout`], counted in
    /// [`Metrics::connect_timeouts`]); default [`DEFAULT_CONNECT_TIMEOUT`].
    /// Until it connects a publisher holds its stream's name (a second one
    /// is refused) but the stream is not live, and a viewer is not counted.
    pub connect_timeout: Duration,
    /// The label of a data channel a client may negotiate out of band on
    /// SCTP stream 0 (`negotiated: true, id: 0`) instead of opening it in
    /// band (`chat`); default `None`: in-band channels only. With it, lumen
    /// answers an offer with a data section as the DTLS client, so the
    /// client's own channels use odd stream ids; a browser as DTLS server
    /// then picks AES-CM + HMAC-SHA1 SRTP instead of AES-GCM, which costs
    /// lumen more per packet. Hence off by default.
    pub out_of_band_channel: Option<String>,
    /// Estimate the bandwidth of every viewer of a stream with video (TWCC
    /// feedback and str0m's BWE), not only of one whose stream has several
    /// layers when it joins. On when a transcoder may add layers to a
    /// one-layer stream after its first viewers joined (a viewer's BWE
    /// cannot be turned on later); default off: an estimate costs feedback
    /// processing per viewer and serves no choice without layers.
    pub estimate_single_layer: bool,
    /// Carry AV1 layers made by a sink (a transcoder's AV1 rung): the
    /// video track of every stream lists an AV1 payload type the publisher
    /// never sends ([`TrackDescription::params`] has it; a sink injects
    /// its AV1 layer with it), and viewers may negotiate AV1, so a viewer
    /// whose offer has AV1 gets a payload type for it and may be sent the
    /// AV1 layer; a viewer without AV1 never chooses it. Publishers are
    /// still answered with H.264 or VP8 only. Default off: lumen turns it
    /// on when a transcoder rung is AV1.
    pub sink_av1: bool,
}

/// Default of [`SfuConfig::max_remote_candidates`]: a browser gives one
/// candidate per interface and kind (host, server-reflexive, relay) and
/// address family, a dozen or two at most; and lumen is ICE-lite, so it
/// learns the address a check comes from whether it was trickled or not.
pub const DEFAULT_MAX_REMOTE_CANDIDATES: usize = 64;
/// Default of [`SfuConfig::max_m_lines`]: lumen serves one audio and one
/// video m-line (and a data channel) per session; browsers offer three.
pub const DEFAULT_MAX_M_LINES: usize = 16;
/// Default of [`SfuConfig::max_addrs_per_session`]: towards one server
/// address a browser checks from one address per local candidate of the
/// same family (host, server-reflexive, relay, each per interface: two to
/// four in practice); eight leaves room for a multi-homed machine, or one
/// that roams once or twice (addresses are kept for the session's life).
pub const DEFAULT_MAX_ADDRS_PER_SESSION: usize = 8;
/// Default of [`SfuConfig::connect_timeout`]: ICE and DTLS take well under
/// a second on most paths, and a few seconds through a slow relay or over
/// loss (DTLS waits 1, 2, then 4 s before it sends a flight again).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

impl SfuConfig {
    /// Defaults with the given candidate addresses.
    pub fn new(candidate_addrs: Vec<SocketAddr>) -> Self {
        SfuConfig {
            candidate_addrs,
            keyframe_request_interval: Duration::from_millis(500),
            max_remote_candidates: DEFAULT_MAX_REMOTE_CANDIDATES,
            max_m_lines: DEFAULT_MAX_M_LINES,
            max_addrs_per_session: DEFAULT_MAX_ADDRS_PER_SESSION,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            out_of_band_channel: None,
            estimate_single_layer: false,
            sink_av1: false,
        }
    }
}

/// Input to [`Sfu::handle_input`].
#[derive(Debug)]
pub enum Input<'a> {
    /// A datagram arrived on the worker's socket.
    Receive {
        /// When it arrived.
        now: Instant,
        /// Who sent it.
        source: SocketAddr,
        /// The local (candidate) address it was sent to.
        destination: SocketAddr,
        /// Its bytes; anything at all may be in here.
        data: &'a [u8],
    },
    /// Time passed; at least up to the last [`Output::Timeout`].
    Timeout(Instant),
}

/// Output of [`Sfu::poll_output`].
#[derive(Debug)]
pub enum Output {
    /// Send this datagram.
    Transmit(Transmit),
    /// Something signaling should know about.
    Event(SfuEvent),
    /// Hand this to the sink `to` (for [`SinkId::Worker`]: to that
    /// worker's [`Sfu::handle_sink_message`]; for [`SinkId::External`]: to
    /// whatever the shell attached under that number). See [`SinkMessage`].
    Sink {
        /// Whom it is for.
        to: SinkId,
        /// What to hand it.
        message: SinkMessage,
    },
    /// Nothing more to do until this time or the next input.
    Timeout(Instant),
}

/// Why a peer was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A command closed it (DELETE, shutdown).
    Requested,
    /// ICE lost the peer (no consent for too long).
    Disconnected,
    /// The peer's connection failed (DTLS error, protocol error).
    Failed,
    /// A viewer whose stream's new publisher sends a codec it cannot receive.
    Incompatible,
    /// ICE and DTLS did not complete within
    /// [`SfuConfig::connect_timeout`] of the offer.
    ConnectTimeout,
}

/// Events for signaling.
#[derive(Debug, Clone, PartialEq)]
pub enum SfuEvent {
    /// ICE and DTLS are up for this peer.
    Connected {
        /// The peer.
        peer: PeerId,
        /// Its role.
        role: Role,
        /// Its stream.
        stream: String,
    },
    /// A stream changed: went live or offline, gained or lost a viewer, a
    /// layer started or stopped; also every few seconds while live, with
    /// fresh layer bitrates.
    StreamUpdated(StreamInfo),
    /// A viewer's layer or the reason for it changed.
    ViewerLayerChanged {
        /// The viewer.
        peer: PeerId,
        /// Its stream.
        stream: String,
        /// Its layer state.
        layer: ViewerLayer,
    },
    /// The peer is gone; its session should be forgotten.
    Closed {
        /// The peer.
        peer: PeerId,
        /// Its role.
        role: Role,
        /// Its stream.
        stream: String,
        /// Why.
        reason: CloseReason,
    },
    /// A data channel of the peer opened (the peer created it, e.g. `chat`).
    ChannelOpen {
        /// The peer.
        peer: PeerId,
        /// The channel, for [`Sfu::send_channel`].
        channel: ChannelId,
        /// The label the peer gave it.
        label: String,
        /// The subprotocol the peer named for it (`protocol` in the
        /// browser's `createDataChannel`), empty when none was named or
        /// the channel was negotiated out of band.
        protocol: String,
    },
    /// A message arrived on a data channel.
    ChannelData {
        /// The peer.
        peer: PeerId,
        /// The channel.
        channel: ChannelId,
        /// Sent as binary (else as text, UTF-8 by the WebRTC rules, which
        /// nobody checked).
        binary: bool,
        /// The message.
        data: Vec<u8>,
    },
    /// A data channel of the peer closed; it takes no more messages.
    ChannelClose {
        /// The peer.
        peer: PeerId,
        /// The channel.
        channel: ChannelId,
    },
}

/// A new session: the SDP answer and the peer that serves it.
#[derive(Debug, Clone)]
pub struct SessionAnswer {
    /// The peer created for the session.
    pub peer: PeerId,
    /// The SDP answer to send back.
    pub answer_sdp: String,
}

/// ICE credentials after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    /// `a=ice-ufrag`.
    pub ufrag: String,
    /// `a=ice-pwd`.
    pub pwd: String,
}

/// What a stream looks like now. Half-open sessions (offer answered, ICE
/// and DTLS not yet up) are not counted: a stream is live once its
/// publisher connected, and only connected viewers are viewers.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// Its name.
    pub name: String,
    /// Whether its publisher is connected (here, or for a mirror on the
    /// stream's origin worker). A publisher that is attached but still
    /// connecting holds the name and takes viewers, but is not live yet.
    pub live: bool,
    /// Number of connected viewers.
    pub viewers: usize,
    /// The publisher's video layers, best first (one entry, `rid: None`, for
    /// a publisher without simulcast; empty when not live).
    pub layers: Vec<LayerInfo>,
}

/// One video layer (simulcast encoding) of a publisher, as measured.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    /// Its RTP stream id (`h`, `m`, `l`), `None` without simulcast.
    pub rid: Option<String>,
    /// Whether packets arrived recently (a browser drops `h` when short of
    /// uplink or CPU).
    pub active: bool,
    /// Measured bitrate over the last second or so, in bits per second.
    pub bitrate_bps: u64,
    /// Picture size from the last keyframe (0 until one is seen).
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second over the last second or so.
    pub fps: f64,
}

/// A viewer's wish for its video layer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LayerRequest {
    /// The SFU picks from the viewer's bandwidth estimate.
    #[default]
    Auto,
    /// Pin this rid (or the best layer below it while it is not sent).
    Rid(String),
}

/// Why a viewer receives the layer it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerReason {
    /// Nothing forwarded yet.
    Starting,
    /// The publisher sends a single layer.
    SingleLayer,
    /// Chosen from the viewer's bandwidth estimate.
    Bandwidth,
    /// The viewer pinned it.
    Requested,
    /// The better layer stopped; this is the best one still sent.
    LayerStopped,
    /// The player shows the video this small: a bigger layer would be
    /// bandwidth spent on pixels nobody sees.
    Size,
}

/// A viewer's layer state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerLayer {
    /// The rid being forwarded now (`None` without simulcast or before the first packet).
    pub current: Option<String>,
    /// The rid the viewer is moving to (equals `current` when settled).
    pub target: Option<String>,
    /// Why.
    pub reason: LayerReason,
    /// The viewer's bandwidth estimate, if one exists yet.
    pub estimate_bps: Option<u64>,
    /// What the viewer asked for.
    pub requested: LayerRequest,
}

/// Why a command was refused. Each maps to one HTTP status in signaling.
/// A refusal changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The SDP could not be parsed.
    #[error("malformed SDP: {0}")]
    MalformedSdp(String),
    /// The offer parsed but cannot be served (no usable media, no common codec).
    #[error("unsupported offer: {0}")]
    Unsupported(String),
    /// The stream already has a publisher (live, or still connecting).
    #[error("stream {0:?} already has a publisher")]
    StreamBusy(String),
    /// The stream has no publisher to watch.
    #[error("stream {0:?} is not live")]
    NotLive(String),
    /// The offer is larger than a worker takes: more m-lines than
    /// [`SfuConfig::max_m_lines`] or more candidates than
    /// [`SfuConfig::max_remote_candidates`]. Nothing of it was parsed.
    /// (HTTP: 413.)
    #[error("offer too large: {0}")]
    OfferTooLarge(String),
    /// The session has been given [`SfuConfig::max_remote_candidates`]
    /// remote candidates already; this one and any later ones are refused
    /// (the session goes on with those it has). (HTTP: 429, without a
    /// retry: the limit is per session.)
    #[error("the session already has {0} remote ICE candidates, the most it may")]
    TooManyCandidates(usize),
    /// ICE credentials that RFC 8839 does not allow (`ice-char`s only:
    /// letters, digits, `+`, `/`; a ufrag of 4 to 256 of them, a password
    /// of 22 to 256). Nothing changed. (HTTP: 400.)
    #[error("bad ICE credentials: {0}")]
    BadIceCredentials(String),
    /// No such peer on this worker.
    #[error("unknown session")]
    UnknownPeer,
    /// A trickled candidate could not be parsed.
    #[error("bad ICE candidate: {0}")]
    BadCandidate(String),
    /// The data channel is not open on this peer: it closed, or it never
    /// existed. It will not open again; forget it.
    #[error("data channel closed")]
    ChannelClosed,
    /// The data channel's send buffer cannot take the message now (the peer
    /// reads slower than it is written to). Nothing was sent; drop the
    /// message or send it later.
    #[error("data channel send buffer full")]
    ChannelFull,
    /// The message is larger than a data channel of this peer can ever
    /// carry (its send buffer, or the maximum message size the peer
    /// announced). Nothing was sent.
    #[error("data channel message too large")]
    ChannelMessageTooLarge,
}
