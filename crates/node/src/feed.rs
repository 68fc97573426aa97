//! The worker's end of an external sink's feed: what the worker sends
//! through, kept apart from the reader's end (`SinkFeed`) so that the
//! worker does not depend on the handle side.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use lumen_sfu::{SinkBody, SinkMessage};
use tokio::sync::mpsc;

/// The worker's end of a feed.
pub(crate) struct FeedTx {
    pub(crate) tx: mpsc::UnboundedSender<Delivery>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) capacity: usize,
    /// Batches dropped since the last delivery.
    pub(crate) gap: u64,
    pub stream: String,
    /// Of the attachment, once the SFU answered it.
    pub generation: u64,
}

/// What [`FeedTx::send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    Queued,
    /// The feed was full: dropped and counted.
    Dropped,
    /// The feed is gone: detach it.
    Closed,
}

impl FeedTx {
    pub fn send(&mut self, message: SinkMessage) -> Sent {
        let packets = matches!(message.body(), SinkBody::Packets(_));
        if packets {
            if self.shared.queued.load(Ordering::Acquire) >= self.capacity {
                if self.tx.is_closed() {
                    return Sent::Closed;
                }
                self.gap += 1;
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return Sent::Dropped;
            }
            self.shared.queued.fetch_add(1, Ordering::AcqRel);
        }
        let d = Delivery {
            gap: std::mem::take(&mut self.gap),
            message,
        };
        match self.tx.send(d) {
            Ok(()) => Sent::Queued,
            Err(_) => Sent::Closed,
        }
    }
}

/// One message for a feed, with the batches dropped just before it.
pub(crate) struct Delivery {
    pub(crate) gap: u64,
    pub(crate) message: SinkMessage,
}

#[derive(Default)]
pub(crate) struct Shared {
    /// Packet batches in the channel.
    pub(crate) queued: AtomicUsize,
    /// Batches dropped, ever.
    pub(crate) dropped: AtomicU64,
}
