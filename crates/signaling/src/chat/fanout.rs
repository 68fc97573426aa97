//! Chat's way out: the frames of the rooms to their members' channels, one
//! task per worker, so that a room never waits for a worker busy
//! forwarding video.
//!
//! The rooms' task hands each frame with its targets on that worker to the
//! worker's task without waiting ([`Fanout::send`]). The task keeps each
//! frame once, with each channel's place in what it has still to get (a
//! room's frame costs the same for one member as for five hundred), and
//! sends in **rounds**, at most one per [`ROUND_EVERY`] and
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
        let round = q.round();
        for (peer, channel) in q.lagged.drain(..) {
            let _ = lagging.send((SessionRef { worker, peer }, channel));
        }
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

/// The queues of one worker's channels, and its counters: the fan-out's
/// bookkeeping without I/O.
///
/// A frame for many channels (a room's members on this worker, one
/// [`Targets`] until the membership changes) is kept **once**, in the
/// [`Group`] of its targets, and each channel keeps only where it is in
/// that group's frames: taking a frame costs the same for 1 member or
/// 500. A frame for one channel (its `history`, an `error`) goes into
/// that channel's own queue, between the group's frames it came between.
/// A group's frames go once every channel has had them.
struct Queues<K = (PeerId, ChannelId)> {
    channels: HashMap<K, ChannelQueue>,
    /// Each group by the address of its targets ([`targets_addr`]), which
    /// the group keeps alive and so unique.
    groups: HashMap<u64, Group<K>>,
    /// Channels that started lagging, for the rooms' task.
    lagged: Vec<K>,
    stats: Stats,
}

impl<K> Default for Queues<K> {
    fn default() -> Self {
        Queues {
            channels: HashMap::new(),
            groups: HashMap::new(),
            lagged: Vec::new(),
            stats: Stats::default(),
        }
    }
}

/// The frames sent to one set of targets, numbered from 0.
struct Group<K> {
    /// The targets; also keeps their address (the group's key) unique.
    to: Arc<[K]>,
    /// The number of `frames[0]`.
    base: u64,
    /// Each frame, with the bytes of all frames before it in the group.
    frames: std::collections::VecDeque<(Arc<str>, u64)>,
    /// The bytes of all frames ever in the group.
    total: u64,
    /// How many of the targets have their open segment here; all of them
    /// unless one was forgotten or moved on to another group.
    open: usize,
}

impl<K> Group<K> {
    /// The number the next frame gets.
    fn end(&self) -> u64 {
        self.base + self.frames.len() as u64
    }

    /// Frame `n`, if still kept.
    fn frame(&self, n: u64) -> Option<&Arc<str>> {
        let i = usize::try_from(n.checked_sub(self.base)?).ok()?;
        self.frames.get(i).map(|(f, _)| f)
    }

    /// Bytes of all frames before frame `n`.
    fn bytes_before(&self, n: u64) -> u64 {
        n.checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.frames.get(i))
            .map_or(self.total, |(_, before)| *before)
    }
}

/// What a channel has still to get, in order.
enum Item {
    /// Frames `start..end` of a group; `end: None` is the channel's open
    /// segment, which grows with the group (always the last item).
    Segment {
        group: u64,
        start: u64,
        end: Option<u64>,
    },
    /// A frame for this channel alone.
    One(Arc<str>),
}

#[derive(Default)]
struct ChannelQueue {
    items: std::collections::VecDeque<Item>,
    /// Frames and bytes of all items but the open segment.
    closed: (u64, u64),
    /// Lagging: frames are dropped until the resync's arrive.
    resync: bool,
    /// Takes large messages compressed.
    deflate: bool,
}

impl ChannelQueue {
    /// The group of the open segment.
    fn open_group(&self) -> Option<u64> {
        match self.items.back() {
            Some(Item::Segment {
                group, end: None, ..
            }) => Some(*group),
            _ => None,
        }
    }

    /// Closes the open segment where its group ends now (dropping it when
    /// empty), and gives its group.
    fn close_open<K>(&mut self, groups: &HashMap<u64, Group<K>>) -> Option<u64> {
        let Some(Item::Segment {
            group,
            start,
            end: end @ None,
        }) = self.items.back_mut()
        else {
            return None;
        };
        let group = *group;
        let g = groups.get(&group);
        let at = g.map_or(*start, Group::end);
        if at > *start {
            let bytes = g.map_or(0, |g| {
                g.bytes_before(at).saturating_sub(g.bytes_before(*start))
            });
            self.closed.0 += at - *start;
            self.closed.1 += bytes;
            *end = Some(at);
        } else {
            self.items.pop_back();
        }
        Some(group)
    }

    /// Opens a segment at the end of `group`.
    fn open<K>(&mut self, groups: &HashMap<u64, Group<K>>, group: u64) {
        if let Some(g) = groups.get(&group) {
            self.items.push_back(Item::Segment {
                group,
                start: g.end(),
                end: None,
            });
        }
    }

    /// A frame for this channel alone, after what it has to get.
    fn push_one(&mut self, frame: Arc<str>) {
        self.closed.0 += 1;
        self.closed.1 += frame.len() as u64;
        self.items.push_back(Item::One(frame));
    }

    /// Frames and bytes still to get.
    fn pending<K>(&self, groups: &HashMap<u64, Group<K>>) -> (usize, usize) {
        let (mut frames, mut bytes) = self.closed;
        if let Some(Item::Segment {
            group,
            start,
            end: None,
        }) = self.items.back()
            && let Some(g) = groups.get(group)
        {
            frames += g.end().saturating_sub(*start);
            bytes += g.total.saturating_sub(g.bytes_before(*start));
        }
        (frames as usize, bytes as usize)
    }

    /// Drops everything still to get but the open segment, which starts
    /// again at its group's end; gives how many frames went.
    fn drop_pending<K>(&mut self, groups: &HashMap<u64, Group<K>>) -> usize {
        let (frames, _) = self.pending(groups);
        let open = self.open_group();
        self.items.clear();
        self.closed = (0, 0);
        if let Some(group) = open {
            self.open(groups, group);
        }
        frames
    }
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

/// Which frames a message carries: per item, (group or `u64::MAX` for a
/// channel's own frame, its first frame's number or address, how many).
type Carried = Vec<(u64, u64, u64)>;

impl<K: Copy + Eq + std::hash::Hash + std::fmt::Debug> Queues<K> {
    fn is_empty(&self) -> bool {
        self.channels
            .values()
            .all(|c| c.resync || c.pending(&self.groups).0 == 0)
    }

    fn take(&mut self, m: FanIn<K>) {
        match m {
            FanIn::Frame { to, frame, resync } if to.len() == 1 => {
                let c = self.channels.entry(to[0]).or_default();
                if c.resync {
                    if !resync {
                        self.stats.dropped += 1;
                        return;
                    }
                    c.resync = false;
                    self.stats.dropped += c.drop_pending(&self.groups) as u64;
                }
                // Between the group's frames before and after it.
                let open = c.close_open(&self.groups);
                c.push_one(frame);
                if let Some(group) = open {
                    c.open(&self.groups, group);
                }
            }
            FanIn::Frame { to, frame, resync } => {
                let group = self.group_of(&to);
                if resync {
                    for key in to.iter() {
                        if let Some(c) = self.channels.get_mut(key)
                            && c.resync
                        {
                            c.resync = false;
                            self.stats.dropped += c.drop_pending(&self.groups) as u64;
                        }
                    }
                }
                if let Some(g) = self.groups.get_mut(&group) {
                    let len = frame.len() as u64;
                    g.frames.push_back((frame, g.total));
                    g.total += len;
                }
            }
            FanIn::Deflate(key) => self.channels.entry(key).or_default().deflate = true,
            FanIn::Forget(key) => {
                self.remove(&key);
            }
        }
    }

    /// Forgets a channel; its open segment's group has one target fewer
    /// there.
    fn remove(&mut self, key: &K) -> Option<ChannelQueue> {
        let c = self.channels.remove(key)?;
        if let Some(g) = c.open_group().and_then(|g| self.groups.get_mut(&g)) {
            g.open = g.open.saturating_sub(1);
        }
        Some(c)
    }

    /// The group of the targets `to`, made on their first frame; every
    /// target has its open segment there afterwards.
    fn group_of(&mut self, to: &Arc<[K]>) -> u64 {
        let id = targets_addr(to);
        self.groups.entry(id).or_insert_with(|| Group {
            to: to.clone(),
            base: 0,
            frames: Default::default(),
            total: 0,
            open: 0,
        });
        let Some(g) = self.groups.get(&id) else {
            return id;
        };
        if g.open < g.to.len() {
            // A new group, or one a target left: (re)open it for them.
            let to = g.to.clone();
            for key in to.iter() {
                let c = self.channels.entry(*key).or_default();
                if c.open_group() == Some(id) {
                    continue;
                }
                if let Some(old) = c.close_open(&self.groups)
                    && let Some(g) = self.groups.get_mut(&old)
                {
                    g.open = g.open.saturating_sub(1);
                }
                c.open(&self.groups, id);
                if let Some(g) = self.groups.get_mut(&id) {
                    g.open += 1;
                }
            }
        }
        id
    }

    /// A message per channel with frames queued: as many frames from the
    /// front of its queue as fit in one frame's size. Channels with the
    /// same frames share one message. A channel whose queue passed
    /// [`LAG_BYTES`] is lagging instead.
    fn round(&mut self) -> Round<K> {
        let mut round = Round {
            sends: Vec::new(),
            frames: Vec::new(),
        };
        // By the frames it carries and whether compressed: the message.
        let mut made = HashMap::<(Carried, bool), (Arc<[u8]>, bool)>::new();
        for (key, c) in self.channels.iter_mut() {
            if c.resync {
                continue;
            }
            let (queued, bytes) = c.pending(&self.groups);
            if queued == 0 {
                continue;
            }
            if bytes > LAG_BYTES {
                self.stats.lagged += 1;
                self.stats.dropped += c.drop_pending(&self.groups) as u64;
                c.resync = true;
                self.lagged.push(*key);
                continue;
            }
            // As many frames from the front as fit in one message; the
            // first goes whatever its size (the room keeps every frame
            // within the limit).
            let cap = if c.deflate {
                MAX_FRAME_BYTES
            } else {
                ROUND_BYTES.min(MAX_FRAME_BYTES)
            };
            let (mut n, mut sum) = (0, 0);
            let mut carried = Carried::new();
            let mut fits = |f: &Arc<str>| {
                let with = sum + f.len();
                if n > 0 && BATCH_OVERHEAD + with + n > cap {
                    return false;
                }
                sum = with;
                n += 1;
                true
            };
            'items: for item in &c.items {
                match item {
                    Item::Segment { group, start, end } => {
                        let Some(g) = self.groups.get(group) else {
                            continue;
                        };
                        let end = end.unwrap_or_else(|| g.end());
                        let mut taken = 0;
                        for i in *start..end {
                            match g.frame(i) {
                                Some(f) if fits(f) => taken += 1,
                                _ => break,
                            }
                        }
                        if taken > 0 {
                            carried.push((*group, *start, taken));
                        }
                        if *start + taken < end {
                            break 'items;
                        }
                    }
                    Item::One(f) => {
                        if !fits(f) {
                            break;
                        }
                        carried.push((u64::MAX, frame_addr(f), 1));
                    }
                }
            }
            if n == 0 {
                continue;
            }
            let groups = &self.groups;
            let (data, compressed) = made
                .entry((carried, c.deflate))
                .or_insert_with_key(|(carried, _)| {
                    let frames = carried_frames(groups, &c.items, carried);
                    let text = batch(&frames);
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
                        consume(&self.groups, c, *n as u64);
                    }
                }
                // Kept, with what follows, for the next round.
                Err(SessionError::ChannelFull) => self.stats.full += 1,
                Err(e) => {
                    if !matches!(e, SessionError::ChannelClosed | SessionError::UnknownPeer) {
                        tracing::warn!(channel = ?key, error = %e, "chat frames not sent");
                    }
                    self.stats.closed += 1;
                    if let Some(c) = self.remove(&key) {
                        self.stats.dropped += c.pending(&self.groups).0 as u64;
                    }
                }
            }
        }
        self.trim();
    }

    /// Lets go of the frames every channel has had, and of groups no
    /// channel is in any more.
    fn trim(&mut self) {
        let mut first: HashMap<u64, u64> = HashMap::with_capacity(self.groups.len());
        for c in self.channels.values() {
            for item in &c.items {
                if let Item::Segment { group, start, .. } = item {
                    let at = first.entry(*group).or_insert(*start);
                    *at = (*at).min(*start);
                }
            }
        }
        self.groups.retain(|id, g| match first.get(id) {
            Some(&at) => {
                while g.base < at && g.frames.pop_front().is_some() {
                    g.base += 1;
                }
                true
            }
            None => false,
        });
    }

    /// Frames kept for all channels together (each once).
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.groups.values().map(|g| g.frames.len()).sum::<usize>()
            + self
                .channels
                .values()
                .flat_map(|c| &c.items)
                .filter(|i| matches!(i, Item::One(_)))
                .count()
    }

    fn log(&mut self, worker: usize) {
        let s = std::mem::take(&mut self.stats);
        if s.rounds == 0 && s.dropped == 0 {
            return;
        }
        let queued: usize = self
            .channels
            .values()
            .map(|c| c.pending(&self.groups).0)
            .sum();
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

/// Where a set of targets lives: its group's key while the group holds it.
fn targets_addr<K>(to: &Arc<[K]>) -> u64 {
    Arc::as_ptr(to).cast::<K>() as usize as u64
}

/// Where a frame lives: a channel's own frame in a message's [`Carried`].
fn frame_addr(f: &Arc<str>) -> u64 {
    Arc::as_ptr(f).cast::<u8>() as usize as u64
}

/// The frames `carried` names, from a channel's `items`.
fn carried_frames<'a, K>(
    groups: &'a HashMap<u64, Group<K>>,
    items: &'a std::collections::VecDeque<Item>,
    carried: &Carried,
) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut ones = items.iter().filter_map(|i| match i {
        Item::One(f) => Some(f),
        Item::Segment { .. } => None,
    });
    for &(group, start, n) in carried {
        if group == u64::MAX {
            if let Some(f) = ones.find(|f| frame_addr(f) == start) {
                out.push(&**f);
            }
        } else if let Some(g) = groups.get(&group) {
            out.extend((start..start + n).filter_map(|i| g.frame(i)).map(|f| &**f));
        }
    }
    out
}

/// Takes the first `n` frames off a channel's queue.
fn consume<K>(groups: &HashMap<u64, Group<K>>, c: &mut ChannelQueue, mut n: u64) {
    while n > 0 {
        let Some(item) = c.items.front_mut() else {
            return;
        };
        match item {
            Item::Segment { group, start, end } => {
                let g = groups.get(group);
                let end_now = end.unwrap_or_else(|| g.map_or(*start, Group::end));
                let take = n.min(end_now.saturating_sub(*start));
                if end.is_some() {
                    let bytes = g.map_or(0, |g| {
                        g.bytes_before(*start + take)
                            .saturating_sub(g.bytes_before(*start))
                    });
                    c.closed.0 = c.closed.0.saturating_sub(take);
                    c.closed.1 = c.closed.1.saturating_sub(bytes);
                }
                *start += take;
                n -= take;
                if end.is_some() && *start >= end_now {
                    c.items.pop_front();
                } else if take == 0 {
                    return;
                }
            }
            Item::One(f) => {
                c.closed.0 = c.closed.0.saturating_sub(1);
                c.closed.1 = c.closed.1.saturating_sub(f.len() as u64);
                c.items.pop_front();
                n -= 1;
            }
        }
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
        // The room's targets, one `Arc` until its membership changes.
        let room = to(&[a, b]);
        // `a` refuses everything; `b` takes everything.
        while q.lagged.is_empty() {
            q.take(FanIn::Frame {
                to: room.clone(),
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
            to: room.clone(),
            frame: frame(i),
            resync: false,
        });
        q.take(FanIn::Frame {
            to: to(&[a]),
            frame: "history".into(),
            resync: true,
        });
        q.take(FanIn::Frame {
            to: room.clone(),
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

    /// The frames of one message, by their ids (a channel's own frames
    /// are `{"type":"deleted","id":…}` too).
    fn ids(data: &Arc<[u8]>) -> Vec<u64> {
        let v: serde_json::Value = serde_json::from_str(text(data)).expect("json");
        match v["frames"].as_array() {
            Some(frames) => frames
                .iter()
                .map(|f| f["id"].as_u64().unwrap_or(999))
                .collect(),
            None => vec![v["id"].as_u64().unwrap_or(999)],
        }
    }

    fn all_ok(q: &mut Queues<u32>) -> Round<u32> {
        let round = q.round();
        let results = vec![Ok(()); round.sends.len()];
        q.settle(&round, &results);
        round
    }

    #[test]
    fn a_frame_for_a_whole_room_is_kept_once_and_let_go_once_all_had_it() {
        let keys: Vec<u32> = (0..250).collect();
        let room = to(&keys);
        let mut q = Queues::<u32>::default();
        for i in 0..100 {
            q.take(FanIn::Frame {
                to: room.clone(),
                frame: frame(i),
                resync: false,
            });
        }
        assert_eq!(q.kept(), 100, "once, not once per member");
        // One member refuses: the others move on, its frames stay.
        let round = q.round();
        let results: Vec<_> = round
            .sends
            .iter()
            .map(|(k, _, _)| {
                if *k == 7 {
                    Err(SessionError::ChannelFull)
                } else {
                    Ok(())
                }
            })
            .collect();
        q.settle(&round, &results);
        assert_eq!(q.kept(), 100, "member 7 has had none of them");
        let round = all_ok(&mut q);
        assert_eq!(round.sends.len(), 1, "only member 7 had frames left");
        assert_eq!(ids(&round.sends[0].1), (0..100).collect::<Vec<u64>>());
        assert_eq!(q.kept(), 0);
        assert!(q.is_empty());
    }

    #[test]
    fn a_member_s_own_frames_and_a_new_membership_keep_the_order_they_came_in() {
        let (a, b, c) = (1u32, 2u32, 3u32);
        let mut q = Queues::<u32>::default();
        let room = to(&[a, b]);
        let send = |q: &mut Queues<u32>, to: &Arc<[u32]>, i: usize| {
            q.take(FanIn::Frame {
                to: to.clone(),
                frame: frame(i),
                resync: false,
            })
        };
        send(&mut q, &room, 0);
        send(&mut q, &to(&[a]), 100); // `a`'s own, say an error
        send(&mut q, &room, 1);
        // `c` joins: the room's targets change.
        let room = to(&[a, b, c]);
        send(&mut q, &room, 2);
        send(&mut q, &to(&[c]), 200); // `c`'s history
        send(&mut q, &room, 3);
        let round = all_ok(&mut q);
        let of = |k: u32| ids(&round.sends[at(&round, k)].1);
        assert_eq!(of(a), vec![0, 100, 1, 2, 3]);
        assert_eq!(of(b), vec![0, 1, 2, 3]);
        assert_eq!(of(c), vec![2, 200, 3]);
        assert!(q.is_empty());
        assert_eq!(q.kept(), 0);
        // `b` leaves; the rest go on with the next targets.
        q.take(FanIn::Forget(b));
        let room = to(&[a, c]);
        send(&mut q, &room, 4);
        let round = all_ok(&mut q);
        assert_eq!(round.sends.len(), 2);
        assert_eq!(ids(&round.sends[at(&round, a)].1), vec![4]);
        assert_eq!(ids(&round.sends[at(&round, c)].1), vec![4]);
        assert_eq!(q.groups.len(), 1, "the old targets' groups are gone");
    }
}
