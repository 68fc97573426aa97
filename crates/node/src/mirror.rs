//! The channels that carry mirror messages between a node's workers: one
//! bounded queue into each worker, and every worker holds a sender to each.
//! Bounded so that a worker that falls behind loses its mirrors' packets
//! (counted) rather than hold the origin back.

use lumen_sfu::SinkMessage;
use tokio::sync::mpsc;

/// Mirror messages (each a batch of packets or a control message) queued
/// towards one worker before more are dropped.
pub(crate) const MIRROR_QUEUE: usize = 1024;

/// A message from worker `.0` to another.
pub(crate) type Mirrored = (usize, SinkMessage);

/// A worker's ends of the mirror channels.
pub(crate) struct MirrorLinks {
    /// Messages for this worker.
    pub rx: mpsc::Receiver<Mirrored>,
    /// Senders to every worker, by index (its own included, unused).
    pub to: Vec<mpsc::Sender<Mirrored>>,
}

/// One bounded channel per worker, and each worker's links.
pub(crate) fn links(workers: usize) -> Vec<MirrorLinks> {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..workers).map(|_| mpsc::channel(MIRROR_QUEUE)).unzip();
    rxs.into_iter()
        .map(|rx| MirrorLinks {
            rx,
            to: txs.clone(),
        })
        .collect()
}
