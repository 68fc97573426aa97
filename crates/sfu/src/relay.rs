//! Cross-worker fan-out of one stream.
//!
//! A stream's publisher is pinned to one worker, its *origin*. When one core
//! cannot forward to all of a stream's viewers, signaling puts viewers on
//! other workers: each such worker keeps a *mirror* of the stream's Router,
//! fed by the origin with batches of the publisher's decrypted RTP packets
//! (one batch per drain, the payloads shared, not copied), and sends the
//! keyframe requests of its viewers back. A mirror measures layers, caches
//! keyframes and chooses each viewer's layer exactly as the origin does; its
//! viewers cannot tell the difference.
//!
//! The messages travel through the shell (a bounded channel between worker
//! tasks, see DESIGN.md); the SFU only produces them as
//! [`Output::Relay`](crate::Output::Relay) and consumes them in
//! [`Sfu::handle_relay`](crate::Sfu::handle_relay).
//!
//! Attaching: [`Sfu::attach_mirror`](crate::Sfu::attach_mirror) on the
//! origin queues a [`RelayMessage`] describing the stream's tracks followed
//! by the cached group of pictures of each layer, then live packets. The
//! mirror's worker must receive them before it takes the viewer's offer (the
//! shell drains its relay channel before each command). Detaching: a mirror
//! left without viewers tells its origin and forgets the stream; a
//! generation number makes a detach that crossed a newer attach harmless.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::ExtensionValues;

/// A mirror that never gets a viewer (the viewer's offer failed after the
/// attach) detaches after this long.
pub(crate) const UNUSED_MIRROR_TTL: Duration = Duration::from_secs(5);

/// A message between two workers about one stream. Opaque outside the SFU:
/// the shell only carries it from [`Output::Relay`](crate::Output::Relay)
/// to the [`Sfu::handle_relay`](crate::Sfu::handle_relay) of the worker it
/// names.
#[derive(Debug, Clone)]
pub struct RelayMessage {
    pub(crate) stream: String,
    pub(crate) body: RelayBody,
}

impl RelayMessage {
    /// The stream it is about.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Packets it carries (0 for control messages).
    pub fn packets(&self) -> usize {
        match &self.body {
            RelayBody::Packets(p) => p.len(),
            _ => 0,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum RelayBody {
    /// Origin → mirror: the publisher's tracks (none: the stream went
    /// offline). `fresh`: a new publisher, whose viewers must bind again.
    Source {
        generation: u64,
        tracks: Vec<RelayTrack>,
        fresh: bool,
    },
    /// Origin → mirror: packets, in the order the origin forwarded them.
    Packets(Vec<RelayPacket>),
    /// Mirror → origin: a viewer needs a keyframe of this layer.
    Keyframe(Option<Rid>),
    /// Mirror → origin: no more viewers here; stop sending.
    Detach { generation: u64 },
}

/// One incoming track, as a mirror builds its Router from it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RelayTrack {
    pub mid: Mid,
    pub kind: MediaKind,
    pub params: Vec<PayloadParams>,
    pub rids: Vec<Rid>,
}

/// One packet from the publisher, as every Router forwards it.
#[derive(Debug, Clone)]
pub(crate) struct RelayPacket {
    pub mid: Mid,
    pub rid: Option<Rid>,
    pub ssrc: u32,
    /// Extended sequence number on the publisher's stream.
    pub seq: u64,
    pub pt: Pt,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Arc<[u8]>,
    pub ext: ExtensionValues,
    /// When it arrived at the origin.
    pub at: Instant,
}

/// The origin's side of a Router: who mirrors it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mirror {
    pub worker: usize,
    pub generation: u64,
}

/// A mirror Router's side: where its packets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    pub worker: usize,
    pub generation: u64,
    /// Whether the origin has a publisher now.
    pub live: bool,
    /// When the mirror was made, for [`UNUSED_MIRROR_TTL`].
    pub since: Instant,
}
