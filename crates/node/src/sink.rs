//! External sinks: code outside the node (the recorder first, later the
//! transcoder and relay links) attached to a stream as a sink of its Router
//! ([`SinkId::External`](lumen_sfu::SinkId::External)), through
//! [`NodeHandle::attach_sink`](crate::NodeHandle::attach_sink).
//!
//! The origin worker hands the sink's messages to a [`SinkFeed`] over a
//! channel that holds at most a given number of packet batches
//! ([`DEFAULT_SINK_QUEUE`]). A worker never waits for a feed: when the feed
//! holds that many unread batches, the next ones are dropped and counted
//! (`WorkerSnapshot::sink_dropped`), and the feed reports
//! [`FeedEvent::Gap`] before whatever it delivers next, so its reader
//! knows to wait for a keyframe (and may ask for one).
//!
//! Descriptions of the stream ([`FeedEvent::Source`]) are never dropped: a
//! reader that missed one could not read any packet after it. They are
//! few (one or two per publisher) and small, so they do not count against
//! the bound.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use lumen_sfu::{MediaPacket, Rid, SinkBody, SinkMessage, TrackDescription};
use tokio::sync::{mpsc, oneshot};

use crate::NodeError;
use crate::feed::{Delivery, FeedTx, Shared};
use crate::worker::Command;

/// Default bound of a feed: packet batches (one per fan-out of the stream,
/// a few packets each) it holds unread before the worker drops the next
/// ones. A few seconds of a busy stream.
pub const DEFAULT_SINK_QUEUE: usize = 1024;

/// What a [`SinkFeed`] delivers, in the order the stream's Router produced
/// it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FeedEvent {
    /// The stream's publisher and its tracks. Comes first, then again when
    /// the publisher connects (`live`), leaves (no `tracks`: the stream is
    /// offline; the feed stays attached) or is replaced (`fresh`: what was
    /// bound to the old publisher's payload types, SSRCs and sequence
    /// numbers must be bound again).
    Source {
        /// The publisher's tracks; empty while the stream is offline.
        tracks: Vec<TrackDescription>,
        /// A new publisher.
        fresh: bool,
        /// The publisher is connected: packets flow.
        live: bool,
    },
    /// Packets, in the order the Router forwarded them. Right after
    /// attaching (and after a `fresh` source), video starts on a keyframe
    /// of each layer when one is cached.
    Packets(Vec<MediaPacket>),
    /// This many batches of packets were dropped here because the feed was
    /// full (its reader is slower than the stream): decode nothing more of
    /// a video layer until its next keyframe, and ask for one
    /// ([`SinkFeed::request_keyframe`]).
    Gap {
        /// Batches dropped since the last delivery.
        batches: u64,
    },
    /// A keyframe of video layer `rid`, which this sink makes
    /// ([`SinkFeed::try_inject`]), is needed: a viewer joined it or lost a
    /// picture. Throttled per layer by the Router.
    Keyframe {
        /// The layer.
        rid: Option<Rid>,
    },
}

/// A stream's packets for code outside the node; made by
/// [`NodeHandle::attach_sink`](crate::NodeHandle::attach_sink).
///
/// [`recv`](SinkFeed::recv) returns `None` once the feed ended: it was
/// detached, or the node shut down. Dropping the feed detaches it.
pub struct SinkFeed {
    stream: String,
    id: u64,
    rx: mpsc::UnboundedReceiver<Delivery>,
    shared: Arc<Shared>,
    worker: mpsc::Sender<Command>,
    /// What came right after a gap, delivered after the gap is reported.
    held: Option<SinkMessage>,
    detached: bool,
}

impl SinkFeed {
    /// The next event; `None` when the feed ended (detached, or the node
    /// shut down). Cancel-safe.
    pub async fn recv(&mut self) -> Option<FeedEvent> {
        loop {
            let message = match self.held.take() {
                Some(m) => m,
                None => {
                    let d = self.rx.recv().await?;
                    if matches!(d.message.body(), SinkBody::Packets(_)) {
                        self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                    }
                    if d.gap > 0 {
                        self.held = Some(d.message);
                        return Some(FeedEvent::Gap { batches: d.gap });
                    }
                    d.message
                }
            };
            match message.into_parts().1 {
                SinkBody::Source {
                    tracks,
                    fresh,
                    live,
                    ..
                } => {
                    return Some(FeedEvent::Source {
                        tracks,
                        fresh,
                        live,
                    });
                }
                SinkBody::Packets(p) => return Some(FeedEvent::Packets(p)),
                SinkBody::Keyframe(rid) => return Some(FeedEvent::Keyframe { rid }),
                // Sink → Router messages never come this way.
                _ => continue,
            }
        }
    }

    /// The stream it feeds from.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Batches dropped so far because the feed was full (each reported by
    /// a [`FeedEvent::Gap`] before the next delivery).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Packet batches waiting to be read.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Asks the stream's publisher for a keyframe of video layer `rid`
    /// (`None`: of every layer). Requests go through the same per-layer
    /// throttle as the viewers' ([`lumen_sfu::SfuConfig::keyframe_request_interval`]),
    /// so asking often costs nothing. While the stream is offline it is
    /// ignored.
    pub async fn request_keyframe(&self, rid: Option<Rid>) -> Result<(), NodeError> {
        self.worker
            .send(Command::FeedKeyframe { id: self.id, rid })
            .await
            .map_err(|_| NodeError::Unavailable)
    }

    /// [`SinkFeed::request_keyframe`] without waiting: a worker whose
    /// command queue is full loses the request
    /// ([`NodeError::Unavailable`]), which a caller that keeps asking can
    /// afford.
    pub fn try_request_keyframe(&self, rid: Option<Rid>) -> Result<(), NodeError> {
        self.worker
            .try_send(Command::FeedKeyframe { id: self.id, rid })
            .map_err(|_| NodeError::Unavailable)
    }

    /// Hands the stream's Router packets of video layers this sink makes (a
    /// transcoder's rungs): each with a rid the publisher does not send,
    /// its own SSRC and sequence numbers, the video track's mid and one of
    /// its payload types. The Router forwards them like a simulcast
    /// publisher's layers and sends keyframe requests for them back here
    /// ([`FeedEvent::Keyframe`]); packets that do not fit the stream are
    /// dropped and counted (`Metrics::sink_packets_refused`). Never waits:
    /// a worker whose command queue is full loses them
    /// ([`NodeError::Unavailable`]), as a lossy network would.
    pub fn try_inject(&self, packets: Vec<MediaPacket>) -> Result<(), NodeError> {
        self.worker
            .try_send(Command::FeedInject {
                id: self.id,
                packets,
            })
            .map_err(|_| NodeError::Unavailable)
    }

    /// Detaches from the stream; once it returns, the worker sends
    /// nothing more for this feed. (Dropping the feed detaches it too,
    /// without waiting.)
    pub async fn detach(mut self) {
        self.detached = true;
        let (reply, done) = oneshot::channel();
        let sent = self
            .worker
            .send(Command::DetachFeed {
                id: self.id,
                reply: Some(reply),
            })
            .await;
        if sent.is_ok() {
            let _ = done.await;
        }
    }

    /// Drops the feed without telling the worker (it was never attached).
    pub(crate) fn forget(mut self) {
        self.detached = true;
    }
}

impl Drop for SinkFeed {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        // Never waits: if the worker's command queue is full, the worker
        // finds the feed gone the next time it has something for it and
        // detaches it then.
        let _ = self.worker.try_send(Command::DetachFeed {
            id: self.id,
            reply: None,
        });
    }
}

impl std::fmt::Debug for SinkFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkFeed")
            .field("stream", &self.stream)
            .field("id", &self.id)
            .field("queued", &self.queued())
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// A new feed's two ends: the worker's and the reader's.
pub(crate) fn feed(
    stream: &str,
    id: u64,
    capacity: usize,
    worker: mpsc::Sender<Command>,
) -> (FeedTx, SinkFeed) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::default());
    let feed_tx = FeedTx {
        tx,
        shared: shared.clone(),
        capacity: capacity.max(1),
        gap: 0,
        stream: stream.to_string(),
        generation: 0,
    };
    let feed = SinkFeed {
        stream: stream.to_string(),
        id,
        rx,
        shared,
        worker,
        held: None,
        detached: false,
    };
    (feed_tx, feed)
}
