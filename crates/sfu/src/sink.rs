//! Sinks: everything after a stream's Router that is not a viewer.
//!
//! A Router forwards its publisher's packets to its viewers' Consumers and
//! hands the same packets, as [`MediaPacket`]s in batches, to each of its
//! *sinks*. A sink attaches to a stream
//! ([`Sfu::attach_sink`](crate::Sfu::attach_sink)), gets the stream's
//! description first, then the cached group of pictures of each layer (so it
//! starts on a keyframe), then live batches; it can send keyframe requests
//! back, and it detaches when it has no more use.
//!
//! Two kinds of sink exist, both fed by the same code of the Router:
//!
//! - a *mirror* of the stream on another worker of the same node
//!   ([`SinkId::Worker`], see `crate::mirror`), which serves viewers there;
//! - an *external* sink ([`SinkId::External`]): anything outside the SFU
//!   that wants the stream's packets: the recorder first, later the
//!   transcoder and the relay link to a child node of the relay tree. The
//!   shell gives each one a number and carries its messages; in lumen-node
//!   that is `NodeHandle::attach_sink`, which returns a feed.
//!
//! Both receive exactly the same messages: [`SinkBody::Source`], the cached
//! group of pictures, then [`SinkBody::Packets`]; a stream that goes offline
//! sends a `Source` without tracks and keeps the sink attached for its next
//! publisher (`fresh`). A sink talks back with [`SinkBody::Keyframe`] (made
//! by [`SinkMessage::keyframe`]; throttled per layer like a viewer's
//! request) and [`SinkBody::Detach`] ([`SinkMessage::detach`]).
//!
//! An external sink may also *make* layers of the stream's video: a
//! transcoder's rungs. It sends their packets with [`SinkBody::Inject`]
//! ([`SinkMessage::inject`]), under rids the publisher does not send; the
//! origin's Router forwards them exactly like a simulcast publisher's
//! layers (viewers choose and pin them, mirrors and other sinks get them),
//! and keyframe requests for those layers go back to the sink as
//! [`SinkBody::Keyframe`] instead of to the publisher. From an external
//! sink nothing else is taken.
//!
//! Messages come out of [`Sfu::poll_output`](crate::Sfu::poll_output) as
//! [`Output::Sink`](crate::Output::Sink) and go in through
//! [`Sfu::handle_sink_message`](crate::Sfu::handle_sink_message); the SFU
//! never carries them itself.

use std::sync::Arc;
use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::ExtensionValues;

/// Who a sink is. Messages to and from it carry this id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SinkId {
    /// A mirror of the stream on the worker of this index (the messages go
    /// to and come from that worker's [`Sfu`](crate::Sfu)).
    Worker(usize),
    /// A sink outside the SFU (a recorder, a transcoder, a relay link),
    /// numbered by the shell, which must not reuse a number while the sink
    /// may still be attached. Its messages go to whatever the shell keeps
    /// under that number; it sends only keyframe requests and its detach.
    External(u64),
}

/// One packet from a stream's publisher, as every Router forwards it: what
/// every sink of the stream receives (a mirror on another worker, a
/// recorder, later a transcoder or a relay link to another node). The
/// payload is shared, not copied, between all who hold the packet.
#[derive(Debug, Clone)]
pub struct MediaPacket {
    /// The publisher's m-line it arrived on.
    pub mid: Mid,
    /// Its simulcast layer (`None` without simulcast).
    pub rid: Option<Rid>,
    /// The SSRC the publisher sent it with.
    pub ssrc: u32,
    /// Extended sequence number on the publisher's stream.
    pub seq: u64,
    /// The publisher's payload type (see [`TrackDescription::params`]).
    pub pt: Pt,
    /// RTP timestamp, as the publisher sent it.
    pub timestamp: u32,
    /// RTP marker bit (the last packet of a video frame).
    pub marker: bool,
    /// The RTP payload.
    pub payload: Arc<[u8]>,
    /// The header extensions forwarded with it (audio level, voice
    /// activity, video orientation).
    pub ext: ExtensionValues,
    /// When it arrived at the origin (the worker of the publisher).
    pub at: Instant,
}

/// One incoming track of a stream's publisher: what a sink needs to read
/// its packets (and a mirror to build its Router from).
#[derive(Debug, Clone, PartialEq)]
pub struct TrackDescription {
    /// The publisher's m-line.
    pub mid: Mid,
    /// Audio or video.
    pub kind: MediaKind,
    /// The negotiated primary payload types (no RTX). With
    /// [`SfuConfig::sink_av1`](crate::SfuConfig::sink_av1), a video track
    /// also lists an AV1 entry the publisher never sends: the payload type
    /// a sink injects an AV1 layer with.
    pub params: Vec<PayloadParams>,
    /// The simulcast rids the publisher announced (empty without simulcast).
    pub rids: Vec<Rid>,
}

/// A message between a stream's Router and one of its sinks. The shell
/// carries it from an [`Output::Sink`](crate::Output::Sink) to whoever its
/// [`SinkId`] names; for a mirror that is the other worker's
/// [`Sfu::handle_sink_message`](crate::Sfu::handle_sink_message).
#[derive(Debug, Clone)]
pub struct SinkMessage {
    pub(crate) stream: String,
    pub(crate) body: SinkBody,
}

impl SinkMessage {
    /// The stream it is about.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Packets it carries (0 for control messages).
    pub fn packets(&self) -> usize {
        match &self.body {
            SinkBody::Packets(p) => p.len(),
            _ => 0,
        }
    }

    /// What it says.
    pub fn body(&self) -> &SinkBody {
        &self.body
    }

    /// The stream and what it says, taken apart (a sink keeps the packets
    /// without copying them).
    pub fn into_parts(self) -> (String, SinkBody) {
        (self.stream, self.body)
    }

    /// Sink → Router: a keyframe of layer `rid` of the stream's video is
    /// needed (`None`: of every layer it has).
    pub fn keyframe(stream: &str, rid: Option<Rid>) -> Self {
        SinkMessage {
            stream: stream.to_string(),
            body: SinkBody::Keyframe(rid),
        }
    }

    /// Sink → Router: packets of video layers this sink makes (a
    /// transcoder's rungs), each with its own `rid` (one the publisher
    /// does not send), SSRC and sequence numbers, the track's `mid` and one
    /// of its payload types. `at` is ignored: the Router stamps them when
    /// it takes them.
    pub fn inject(stream: &str, packets: Vec<MediaPacket>) -> Self {
        SinkMessage {
            stream: stream.to_string(),
            body: SinkBody::Inject(packets),
        }
    }

    /// Sink → Router: the attachment `generation` (as its
    /// [`SinkBody::Source`] said, or [`Sfu::attach_sink`](crate::Sfu::attach_sink)
    /// answered) has no more use for the stream.
    pub fn detach(stream: &str, generation: u64) -> Self {
        SinkMessage {
            stream: stream.to_string(),
            body: SinkBody::Detach { generation },
        }
    }
}

/// What a [`SinkMessage`] says.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SinkBody {
    /// Router → sink: the publisher's tracks (none: the stream went
    /// offline).
    Source {
        /// The attachment it belongs to: a later [`SinkBody::Detach`] names
        /// it, so a detach that crossed a newer attach is ignored.
        generation: u64,
        /// The publisher's tracks; empty while the stream is offline.
        tracks: Vec<TrackDescription>,
        /// A new publisher: whatever was bound to the old one's tracks
        /// (payload types, sequence numbers) must be bound again.
        fresh: bool,
        /// The publisher is connected (ICE and DTLS up): the stream is
        /// live. Until then the sink has the description but no packets,
        /// and a mirror reports the stream as not live. Sent again, with
        /// the same tracks, when the publisher connects.
        live: bool,
    },
    /// Router → sink: packets, in the order the Router forwarded them.
    Packets(Vec<MediaPacket>),
    /// Sink → Router: a keyframe of this layer is needed (`None` on a
    /// simulcast track: of every layer the publisher sends).
    ///
    /// Router → sink: a keyframe of this layer, which the sink makes
    /// ([`SinkBody::Inject`]), is needed (a viewer joined or lost a
    /// picture); throttled per layer like a request to a publisher.
    Keyframe(Option<Rid>),
    /// Sink → Router: packets of layers the sink makes (see
    /// [`SinkMessage::inject`]). Packets that do not fit the stream (no
    /// such track, a payload type it did not negotiate, a rid the
    /// publisher sends, no room for another layer) are dropped and counted
    /// ([`Metrics::sink_packets_refused`](crate::Metrics)).
    Inject(Vec<MediaPacket>),
    /// Sink → Router: no more use for the stream; stop sending.
    Detach {
        /// The attachment being ended (from [`SinkBody::Source`]).
        generation: u64,
    },
}

/// The Router's side of one attached sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sink {
    pub id: SinkId,
    /// Of its latest attach, which its messages carry.
    pub generation: u64,
}
