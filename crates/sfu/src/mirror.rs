//! Mirrors: cross-worker fan-out of one stream, the first kind of sink.
//!
//! A stream's publisher is pinned to one worker, its *origin*. When one core
//! cannot forward to all of a stream's viewers, signaling puts viewers on
//! other workers: each such worker keeps a *mirror* of the stream's Router,
//! attached to the origin's Router as a sink ([`SinkId::Worker`]). The
//! origin feeds it batches of the publisher's decrypted RTP packets (one
//! batch per drain, the payloads shared, not copied), and the mirror sends
//! the keyframe requests of its viewers back. A mirror measures layers,
//! caches keyframes and chooses each viewer's layer exactly as the origin
//! does; its viewers cannot tell the difference.
//!
//! The messages travel through the shell (a bounded channel between worker
//! tasks, see DESIGN.md); the SFU only produces them as
//! [`Output::Sink`](crate::Output::Sink) and consumes them in
//! [`Sfu::handle_sink_message`](crate::Sfu::handle_sink_message).
//!
//! Attaching: [`Sfu::attach_sink`](crate::Sfu::attach_sink) on the origin
//! queues a [`SinkBody::Source`](crate::SinkBody::Source) describing the
//! stream's tracks, followed by the cached group of pictures of each layer,
//! then live packets. The mirror's worker must receive them before it takes
//! the viewer's offer (the shell drains its mirror channel before each
//! command). Detaching: a mirror left without viewers tells its origin and
//! forgets the stream; a generation number makes a detach that crossed a
//! newer attach harmless.

use std::time::{Duration, Instant};

use crate::SinkId;

/// A mirror that never gets a viewer (the viewer's offer failed after the
/// attach) detaches after this long.
pub(crate) const UNUSED_MIRROR_TTL: Duration = Duration::from_secs(5);

/// A mirror Router's side: where its packets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    /// Who feeds it (the origin worker), as its messages name it.
    pub from: SinkId,
    pub generation: u64,
    /// Whether the origin has a publisher now (connected or not): the
    /// mirror takes viewers and packets.
    pub publishing: bool,
    /// Whether the origin's publisher is connected: the stream is live.
    pub live: bool,
    /// When the mirror was made, for [`UNUSED_MIRROR_TTL`].
    pub since: Instant,
}
