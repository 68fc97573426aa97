//! What a node tells the layers above it, as each worker produces it.

use lumen_sfu::{ChannelId, CloseReason, Role, StreamInfo, ViewerLayer};

use crate::SessionRef;

/// Something that happened on one of the node's workers. Events of one
/// worker arrive in the order it produced them; a session's events come
/// after the answer that created it was sent.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// ICE and DTLS are up for a session.
    Connected {
        /// The session.
        session: SessionRef,
        /// Publisher or viewer.
        role: Role,
        /// Its stream.
        stream: String,
    },
    /// A stream as one worker has it changed (went live or offline, a viewer
    /// came or went, a layer started or stopped; every few seconds while
    /// live). [`crate::merge_streams`] gives the stream as the whole node
    /// serves it from every worker's latest part.
    StreamUpdated {
        /// The worker whose part this is.
        worker: usize,
        /// The stream on that worker.
        info: StreamInfo,
    },
    /// A viewer's layer, or the reason for it, changed.
    ViewerLayerChanged {
        /// The viewer's session.
        session: SessionRef,
        /// Its stream.
        stream: String,
        /// Its layer state now.
        layer: ViewerLayer,
    },
    /// A data channel opened on a session.
    ChannelOpen {
        /// The session.
        session: SessionRef,
        /// The channel.
        channel: ChannelId,
        /// Its label (`chat`).
        label: String,
        /// The subprotocol the client named for it (empty when none).
        protocol: String,
    },
    /// A message arrived on a session's data channel.
    ChannelData {
        /// The session.
        session: SessionRef,
        /// The channel.
        channel: ChannelId,
        /// Whether it is a binary message (else UTF-8 text).
        binary: bool,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// A data channel closed.
    ChannelClose {
        /// The session.
        session: SessionRef,
        /// The channel.
        channel: ChannelId,
    },
    /// A session is gone (DELETE, ICE timeout, DTLS close, shutdown); it
    /// should be forgotten.
    Closed {
        /// The session.
        session: SessionRef,
        /// Publisher or viewer.
        role: Role,
        /// Its stream.
        stream: String,
        /// Why.
        reason: CloseReason,
    },
}
