//! Chat's way out: the frames of the rooms to their members' channels, one
//! task per worker, so that a room never waits for a worker busy
//! forwarding video.
//!
//! The rooms' task hands each frame with its targets on that worker to the
//! worker's task without waiting ([`Fanout::send`]). The task keeps a queue
//! per channel and sends in **rounds**, at most one per [`ROUND_EVERY`] and
//! one at a time: per channel, the frames queued since its last round as
//! one data-channel message (one frame as itself, several as a `batch`
//! frame of at most [`ROUND_BYTES`], or of at most `MAX_FRAME_BYTES` when
//! it goes compressed), all of the worker's channels in one command.
//! Under load the frames a round carries are the ones that came while the
//! previous round was on the worker, so the cost per frame falls as the
//! rate rises, and a quiet room's frame goes at once. To a
//! channel opened with the subprotocol
//! [`DEFLATE_PROTOCOL`](lumen_chat::protocol::DEFLATE_PROTOCOL), a large
//! message goes as raw DEFLATE in a binary message, compressed once per
//! round for all the channels that get the same frames: a fifth of the
//! bytes, so a fraction of the SCTP packets to encrypt, send and
//! acknowledge per member.
//!
//! Nothing is lost silently. A message the channel's send buffer refuses
//! (`ChannelFull`) stays queued, ahead of what follows it, for the next
//! round. A channel whose queue passes [`LAG_BYTES`] is **lagging**: its
//! queue is dropped (counted), the rooms' task is asked for a fresh
//! `history` and `state` for it ([`Room::resync`](lumen_chat::Room::resync)),
//! and what the room sends it before those is dropped too, since that
//! history covers it. A closed channel's queue is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lumen_chat::protocol::{BATCH_OVERHEAD, MAX_FRAME_BYTES, batch, deflate};
use lumen_node::{NodeHandle, SessionRef};
use lumen_sfu::{ChannelId, PeerId, SessionError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A round starts at most this long after the previous one started.
pub(crate) const ROUND_EVERY: Duration = Duration::from_millis(20);
/// The most a round sends a channel that takes plain text, in bytes (a
/// larger single frame goes alone). Well under [`MAX_FRAME_BYTES`]:
/// str0m's SCTP slows down with many chunks in flight per association,
/// and a round's command must not hold the worker from its socket for
/// long; at 1,000 messages a second of ~140 bytes a channel needs about
/// 2.8 KB a round.
///
/// A channel that takes compressed messages gets up to
/// [`MAX_FRAME_BYTES`] of frames a round instead: about as many bytes on
/// the wire (chat compresses to a fifth). The cap is also the most a
/// channel can receive per round, so it sets how long a round may take
/// before the channel falls behind for good: at 1,000 messages a second,
/// ~29 ms with 4 KB, ~115 ms with 16 KiB. A round that took longer than
/// 29 ms (a worker busy with video) used to leave a backlog that grew
/// until the channel lagged (BENCHMARKS.md, "Chat").
const ROUND_BYTES: usize = 4 * 1024;
/// A channel that refused its message is tried again this long after.
const RETRY_EVERY: Duration = Duration::from_millis(20);
/// Frame bytes queued for one channel (beyond what its SCTP send buffer
/// holds) at which it is lagging.
pub(crate) const LAG_BYTES: usize = 256 * 1024;
/// How often the counters are logged (at debug level).
const LOG_EVERY: Duration = Duration::from_secs(1);

/// The channels of one worker a frame goes to, shared by the frames of a
/// room until its membership changes.
pub(crate) type Targets = Arc<[(PeerId, ChannelId)]>;

/// A channel on the node.
pub(crate) type At = (SessionRef, ChannelId);

/// The rooms' side: one queue per worker's task.
pub(crate) struct Fanout {
    txs: Vec<mpsc::UnboundedSender<FanIn>>,
}

/// What the rooms' task tells a worker's fan-out; `K` names a channel of
/// the worker (`(PeerId, ChannelId)`; plain numbers in tests).
enum FanIn<K = (PeerId, ChannelId)> {
    Frame {
        to: Arc<[K]>,
        frame: Arc<str>,
        /// A resync's `history` or `state`, for a lagging channel.
        resync: bool,
    },
    /// The channel takes compressed messages (it asked for them when it
    /// opened); sent before its first frame.
    Deflate(K),
    /// The channel left its room: its queue goes.
    Forget(K),
}

impl Fanout {
    /// A task per worker of `node`; channels that lag are reported on
    /// `lagging`.
    pub(crate) fn start(
        node: &NodeHandle,
        lagging: mpsc::UnboundedSender<At>,
    ) -> (Fanout, Vec<JoinHandle<()>>) {
        let mut txs = Vec::new();
        let mut tasks = Vec::new();
        for worker in 0..node.workers() {
            let (tx, rx) = mpsc::unbounded_channel();
            txs.push(tx);
            tasks.push(tokio::spawn(run(worker, node.clone(), rx, lagging.clone())));
        }
        (Fanout { txs }, tasks)
    }

    /// How many workers (and tasks) there are.
    pub(crate) fn workers(&self) -> usize {
        self.txs.len()
    }

    /// Queues `frame` for `to`, channels of worker `worker`. Never waits:
    /// the queue is unbounded, and bounded in practice by [`LAG_BYTES`]
    /// per channel once the task has taken it.
    pub(crate) fn send(&self, worker: usize, to: Targets, frame: Arc<str>, resync: bool) {
        if let Some(tx) = self.txs.get(worker) {
            // A task gone (its worker is gone): nothing to send to.
            let _ = tx.send(FanIn::Frame { to, frame, resync });
        }
    }

    /// Compresses what goes to a channel from now on.
    pub(crate) fn deflate(&self, at: At) {
        if let Some(tx) = self.txs.get(at.0.worker) {
            let _ = tx.send(FanIn::Deflate((at.0.peer, at.1)));
        }
    }

    /// Forgets a channel that left its room.
    pub(crate) fn forget(&self, at: At) {
        if let Some(tx) = self.txs.get(at.0.worker) {
            let _ = tx.send(FanIn::Forget((at.0.peer, at.1)));
        }
    }
}

/// One worker's fan-out task.
async fn run(
    worker: usize,
    node: NodeHandle,
    mut rx: mpsc::UnboundedReceiver<FanIn>,
    lagging: mpsc::UnboundedSender<At>,
) {
    let mut q = Queues::default();
    let mut last_round: Option<Instant> = None;
    let mut log_at = Instant::now() + LOG_EVERY;
    loop {
        // Something to send: new frames, or refused ones to try again.
        if q.is_empty() {
            let Some(m) = rx.recv().await else { return };
            q.take(m);
        } else {
            let retry = last_round.map_or_else(Instant::now, |t| t + RETRY_EVERY);
            tokio::select! {
                m = rx.recv() => {
                    let Some(m) = m else { return };
                    q.take(m);
                }
                _ = tokio::time::sleep_until(retry.into()) => {}
            }
        }
        if let Some(due) = last_round.map(|t| t + ROUND_EVERY)
            && due > Instant::now()
        {
            tokio::time::sleep_until(due.into()).await;
        }
        while let Ok(m) = rx.try_recv() {
            q.take(m);
        }
        for (peer, channel) in q.lagged.drain(..) {
            let _ = lagging.send((SessionRef { worker, peer }, channel));
        }
        let round = q.round();
        if !round.sends.is_empty() {
            let start = Instant::now();
            last_round = Some(start);
            // Text and binary (compressed) messages: one command each.
            let (mut text, mut binary) = (Vec::new(), Vec::new());
            let mut which = Vec::with_capacity(round.sends.len());
            for ((peer, channel), data, compressed) in &round.sends {
                let to = if *compressed { &mut binary } else { &mut text };
                which.push((*compressed, to.len()));
                to.push((*peer, *channel, data.clone()));
            }
            let (text, binary) = tokio::join!(
                send_each(&node, worker, false, text),
                send_each(&node, worker, true, binary)
            );
            let (Ok(text), Ok(binary)) = (text, binary) else {
                // The worker is gone: the node is shutting down.
                return;
            };
            let results: Vec<_> = which
                .into_iter()
                .map(|(compressed, i)| {
                    let from = if compressed { &binary } else { &text };
                    from.get(i)
                        .cloned()
                        .unwrap_or(Err(SessionError::UnknownPeer))
                })
                .collect();
            q.settle(&round, &results);
            q.stats.busy += start.elapsed();
        }
        if Instant::now() >= log_at {
            log_at = Instant::now() + LOG_EVERY;
            q.log(worker);
        }
    }
}

/// [`NodeHandle::send_each`], skipped when there is nothing to send.
async fn send_each(
    node: &NodeHandle,
    worker: usize,
    binary: bool,
    sends: Vec<(PeerId, ChannelId, Arc<[u8]>)>,
) -> Result<Vec<Result<(), SessionError>>, lumen_node::NodeError> {
    if sends.is_empty() {
        return Ok(Vec::new());
    }
    node.send_each(worker, binary, sends).await
}

/// The per-channel queues of one worker, and its counters: the fan-out's
/// bookkeeping without I/O.
struct Queues<K = (PeerId, ChannelId)> {
    channels: HashMap<K, ChannelQueue>,
    /// Channels that started lagging, for the rooms' task.
    lagged: Vec<K>,
    stats: Stats,
}

impl<K> Default for Queues<K> {
    fn default() -> Self {
        Queues {
            channels: HashMap::new(),
            lagged: Vec::new(),
            stats: Stats::default(),
        }
    }
}

#[derive(Default)]
struct ChannelQueue {
    frames: std::collections::VecDeque<Arc<str>>,
    bytes: usize,
    /// Lagging: frames are dropped until the resync's arrive.
    resync: bool,
    /// Takes large messages compressed.
    deflate: bool,
}

/// What one round asks of the worker: a message per channel (binary when
/// compressed), and how many frames of the channel's queue it carries.
struct Round<K> {
    sends: Vec<(K, Arc<[u8]>, bool)>,
    frames: Vec<usize>,
}

#[derive(Default)]
struct Stats {
    rounds: u64,
    messages: u64,
    frames: u64,
    full: u64,
    closed: u64,
    lagged: u64,
    /// Frames dropped from lagging channels' queues, or meant for them
    /// before their resync.
    dropped: u64,
    busy: Duration,
}

impl<K: Copy + Eq + std::hash::Hash + std::fmt::Debug> Queues<K> {
    fn is_empty(&self) -> bool {
        self.channels.values().all(|c| c.frames.is_empty())
    }

    fn take(&mut self, m: FanIn<K>) {
        match m {
            FanIn::Frame { to, frame, resync } => {
                for key in to.iter() {
                    let c = self.channels.entry(*key).or_default();
                    if c.resync {
                        if !resync {
                            self.stats.dropped += 1;
                            continue;
                        }
                        c.resync = false;
                    }
                    c.bytes += frame.len();
                    c.frames.push_back(frame.clone());
                    if c.bytes > LAG_BYTES {
                        self.stats.lagged += 1;
                        self.stats.dropped += c.frames.len() as u64;
                        c.frames.clear();
                        c.bytes = 0;
                        c.resync = true;
                        self.lagged.push(*key);
                    }
                }
            }
            FanIn::Deflate(key) => self.channels.entry(key).or_default().deflate = true,
            FanIn::Forget(key) => {
                self.channels.remove(&key);
            }
        }
    }

    /// A message per channel with frames queued: as many frames from the
    /// front of its queue as fit in one frame's size. Channels with the
    /// same frames share one message.
    fn round(&mut self) -> Round<K> {
        let mut round = Round {
            sends: Vec::new(),
            frames: Vec::new(),
        };
        // By the frames it carries and whether compressed: the message.
        type Made = HashMap<(Vec<usize>, bool), (Arc<[u8]>, bool)>;
        let mut made = Made::new();
        for (key, c) in &self.channels {
            // As many frames from the front as fit in one message; the
            // first goes whatever its size (the room keeps every frame
            // within the limit).
            let cap = if c.deflate {
                MAX_FRAME_BYTES
            } else {
                ROUND_BYTES.min(MAX_FRAME_BYTES)
            };
            let (mut n, mut sum) = (0, 0);
            for f in &c.frames {
                let with = sum + f.len();
                if n > 0 && BATCH_OVERHEAD + with + n > cap {
                    break;
                }
                sum = with;
                n += 1;
            }
            if n == 0 {
                continue;
            }
            let frames: Vec<&Arc<str>> = c.frames.iter().take(n).collect();
            let id: Vec<usize> = frames
                .iter()
                .map(|f| Arc::as_ptr(f).cast::<u8>() as usize)
                .collect();
            let (data, compressed) = made
                .entry((id, c.deflate))
                .or_insert_with(|| {
                    let text = batch(&frames.iter().map(|f| &***f).collect::<Vec<&str>>());
                    match c.deflate.then(|| deflate(&text)).flatten() {
                        Some(packed) => (packed.into(), true),
                        None => (text.into_bytes().into(), false),
                    }
                })
                .clone();
            round.sends.push((*key, data, compressed));
            round.frames.push(n);
        }
        self.stats.rounds += 1;
        round
    }

    /// What the worker answered for each message of `round`.
    fn settle(&mut self, round: &Round<K>, results: &[Result<(), SessionError>]) {
        for (((key, _, _), n), r) in round.sends.iter().zip(&round.frames).zip(results) {
            let key = *key;
            match r {
                Ok(()) => {
                    self.stats.messages += 1;
                    self.stats.frames += *n as u64;
                    if let Some(c) = self.channels.get_mut(&key) {
                        for f in c.frames.drain(..*n) {
                            c.bytes -= f.len();
                        }
                    }
                }
                // Kept, with what follows, for the next round.
                Err(SessionError::ChannelFull) => self.stats.full += 1,
                Err(e) => {
                    if !matches!(e, SessionError::ChannelClosed | SessionError::UnknownPeer) {
                        tracing::warn!(channel = ?key, error = %e, "chat frames not sent");
                    }
                    self.stats.closed += 1;
                    if let Some(c) = self.channels.remove(&key) {
                        self.stats.dropped += c.frames.len() as u64;
                    }
                }
            }
        }
    }

    fn log(&mut self, worker: usize) {
        let s = std::mem::take(&mut self.stats);
        if s.rounds == 0 && s.dropped == 0 {
            return;
        }
        let queued: usize = self.channels.values().map(|c| c.frames.len()).sum();
        tracing::debug!(
            worker,
            rounds = s.rounds,
            messages = s.messages,
            frames = s.frames,
            full = s.full,
            closed = s.closed,
            lagged = s.lagged,
            dropped = s.dropped,
            queued,
            busy_ms = s.busy.as_millis() as u64,
            "chat fan-out"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: usize) -> Arc<str> {
        format!(r#"{{"type":"deleted","id":{i}}}"#).into()
    }

    /// Queues `frames` for the channels `keys`, in order.
    fn take_all(q: &mut Queues<u32>, keys: &[u32], frames: impl IntoIterator<Item = Arc<str>>) {
        for frame in frames {
            q.take(FanIn::Frame {
                to: to(keys),
                frame,
                resync: false,
            });
        }
    }

    /// Where the round's message to channel `k` is.
    fn at(round: &Round<u32>, k: u32) -> usize {
        round
            .sends
            .iter()
            .position(|(key, _, _)| *key == k)
            .expect("a message for the channel")
    }

    fn to(keys: &[u32]) -> Arc<[u32]> {
        keys.iter().copied().collect()
    }

    fn text(data: &Arc<[u8]>) -> &str {
        std::str::from_utf8(data).expect("utf-8")
    }

    #[test]
    fn a_round_sends_each_channel_its_frames_in_one_message() {
        let (a, b) = (1u32, 2u32);
        let mut q = Queues::<u32>::default();
        for i in 0..3 {
            q.take(FanIn::Frame {
                to: to(&[a, b]),
                frame: frame(i),
                resync: false,
            });
        }
        let round = q.round();
        assert_eq!(round.sends.len(), 2);
        assert_eq!(round.frames, vec![3, 3]);
        let batch = text(&round.sends[0].1);
        let v: serde_json::Value = serde_json::from_str(batch).expect("json");
        assert_eq!(v["type"], "batch");
        let ids: Vec<u64> = v["frames"]
            .as_array()
            .expect("frames")
            .iter()
            .map(|f| f["id"].as_u64().unwrap_or(99))
            .collect();
        assert_eq!(ids, vec![0, 1, 2], "in order");
        // The same frames: one message shared by both channels.
        assert!(Arc::ptr_eq(&round.sends[0].1, &round.sends[1].1));
        q.settle(&round, &[Ok(()), Ok(())]);
        assert!(q.is_empty());
        // One frame alone goes as itself.
        q.take(FanIn::Frame {
            to: to(&[a]),
            frame: frame(7),
            resync: false,
        });
        let round = q.round();
        assert_eq!(text(&round.sends[0].1), &*frame(7));
    }

    #[test]
    fn a_channel_that_asked_gets_large_messages_compressed_once_for_all_such_channels() {
        let (a, b, c) = (1u32, 2u32, 3u32);
        let mut q = Queues::<u32>::default();
        q.take(FanIn::Deflate(a));
        q.take(FanIn::Deflate(b));
        take_all(&mut q, &[a, b, c], (0..40).map(frame));
        let round = q.round();
        let of = |k: u32| round.sends[at(&round, k)].clone();
        let (a_msg, b_msg, c_msg) = (of(a), of(b), of(c));
        assert!(a_msg.2 && b_msg.2, "compressed for the channels that asked");
        assert!(!c_msg.2, "plain text for the other");
        assert!(Arc::ptr_eq(&a_msg.1, &b_msg.1), "compressed once");
        let inflated = lumen_chat::protocol::inflate(&a_msg.1).expect("raw deflate");
        assert_eq!(inflated, text(&c_msg.1), "the same frames");
        assert!(a_msg.1.len() * 3 < c_msg.1.len());
        q.settle(&round, &[Ok(()), Ok(()), Ok(())]);
        // A short message goes as text, even to a channel that asked.
        q.take(FanIn::Frame {
            to: to(&[a]),
            frame: frame(99),
            resync: false,
        });
        let round = q.round();
        assert!(!round.sends[0].2);
        assert_eq!(text(&round.sends[0].1), &*frame(99));
    }

    /// A round that came late carries what queued meanwhile: a channel
    /// taking compressed messages gets up to a frame's size of frames,
    /// about a plain channel's 4 KB on the wire.
    #[test]
    fn a_compressed_channel_catches_up_in_one_message() {
        let (a, c) = (1u32, 2u32);
        let mut q = Queues::<u32>::default();
        q.take(FanIn::Deflate(a));
        // ~7 KB of frames: what 50 ms of a busy room brings.
        let sent: Vec<Arc<str>> = (0..50)
            .map(|i| {
                format!(
                    r#"{{"type":"message","id":{i},"text":"hello number {i} {}"}}"#,
                    "y".repeat(80)
                )
                .into()
            })
            .collect();
        take_all(&mut q, &[a, c], sent);
        let round = q.round();
        let (ia, ic) = (at(&round, a), at(&round, c));
        assert_eq!(round.frames[ia], 50, "all of it, compressed");
        assert!(round.sends[ia].2);
        let inflated = lumen_chat::protocol::inflate(&round.sends[ia].1).expect("raw deflate");
        assert!(inflated.len() <= MAX_FRAME_BYTES);
        assert!(
            round.sends[ia].1.len() <= ROUND_BYTES,
            "about a plain round on the wire"
        );
        assert!(round.frames[ic] < 50, "plain text keeps its round size");
        assert!(round.sends[ic].1.len() <= ROUND_BYTES);
        let v: serde_json::Value = serde_json::from_str(&inflated).expect("json");
        assert_eq!(v["frames"].as_array().map(Vec::len), Some(50));
        assert_eq!(v["frames"][49]["id"], 49, "in order");
    }

    #[test]
    fn a_full_channel_keeps_its_frames_in_order_for_the_next_round() {
        let (a, b) = (1u32, 2u32);
        let mut q = Queues::<u32>::default();
        q.take(FanIn::Frame {
            to: to(&[a, b]),
            frame: frame(0),
            resync: false,
        });
        let round = q.round();
        let results: Vec<_> = round
            .sends
            .iter()
            .map(|(k, _, _)| {
                if *k == a {
                    Err(SessionError::ChannelFull)
                } else {
                    Ok(())
                }
            })
            .collect();
        q.settle(&round, &results);
        assert_eq!(q.stats.full, 1);
        q.take(FanIn::Frame {
            to: to(&[a, b]),
            frame: frame(1),
            resync: false,
        });
        let round = q.round();
        let mine = round
            .sends
            .iter()
            .position(|(k, _, _)| *k == a)
            .expect("a again");
        let v: serde_json::Value = serde_json::from_str(text(&round.sends[mine].1)).expect("json");
        assert_eq!(v["frames"][0]["id"], 0, "the refused frame first");
        assert_eq!(v["frames"][1]["id"], 1);
        let other = 1 - mine;
        assert_eq!(text(&round.sends[other].1), &*frame(1));
    }

    #[test]
    fn a_closed_channel_is_forgotten_and_a_message_stays_within_its_bound() {
        let a = 1u32;
        let mut q = Queues::<u32>::default();
        let big: Arc<str> = format!(r#"{{"type":"notice","text":"{}"}}"#, "x".repeat(1500)).into();
        for _ in 0..5 {
            q.take(FanIn::Frame {
                to: to(&[a]),
                frame: big.clone(),
                resync: false,
            });
        }
        let round = q.round();
        assert!(round.sends[0].1.len() <= ROUND_BYTES);
        assert_eq!(round.frames, vec![2]);
        q.settle(&round, &[Err(SessionError::ChannelClosed)]);
        assert!(q.is_empty());
        assert_eq!(q.stats.dropped, 5);
    }

    #[test]
    fn a_lagging_channel_drops_its_backlog_until_its_resync() {
        let (a, b) = (1u32, 2u32);
        let mut q = Queues::<u32>::default();
        let mut i = 0;
        // `a` refuses everything; `b` takes everything.
        while q.lagged.is_empty() {
            q.take(FanIn::Frame {
                to: to(&[a, b]),
                frame: frame(i),
                resync: false,
            });
            i += 1;
            let round = q.round();
            let results: Vec<_> = round
                .sends
                .iter()
                .map(|(k, _, _)| {
                    if *k == a {
                        Err(SessionError::ChannelFull)
                    } else {
                        Ok(())
                    }
                })
                .collect();
            q.settle(&round, &results);
        }
        assert_eq!(q.lagged, vec![a]);
        assert_eq!(q.stats.lagged, 1);
        // Until the resync comes, what is meant for `a` is covered by it.
        q.take(FanIn::Frame {
            to: to(&[a, b]),
            frame: frame(i),
            resync: false,
        });
        q.take(FanIn::Frame {
            to: to(&[a]),
            frame: "history".into(),
            resync: true,
        });
        q.take(FanIn::Frame {
            to: to(&[a, b]),
            frame: frame(i + 1),
            resync: false,
        });
        let round = q.round();
        let mine = round.sends.iter().position(|(k, _, _)| *k == a).expect("a");
        let v: serde_json::Value = serde_json::from_str(
            &text(&round.sends[mine].1).replace("history", r#"{"type":"history"}"#),
        )
        .expect("json");
        assert_eq!(v["frames"][0]["type"], "history", "the resync first");
        assert_eq!(v["frames"][1]["id"], i + 1);
        assert_eq!(round.frames[mine], 2);
    }
}
