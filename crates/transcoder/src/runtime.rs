//! The transcoder on a node: one thread per transcoded stream, reading the
//! stream's sink feed, running its [`Ladder`] and handing the rungs back
//! to the stream's Router. Started when a publisher connects (signaling's
//! event follower calls [`Transcoder::publisher_live`]) and stopped when
//! it leaves; at most [`TranscodeConfig::max_streams`] at a time.
//!
//! Rungs cost CPU only while someone may receive them: a ladder makes its
//! first picture on each rung (so the rungs are known layers, which a
//! viewer may pin from its first request) and pauses at once if the
//! stream has no viewer yet; one whose viewers have all left pauses after
//! [`TranscodeConfig::idle_secs`]. A viewer connecting (signaling tells it:
//! [`Transcoder::viewers`]) wakes it, and it asks the publisher for a
//! keyframe to start from.
//!
//! A ladder's thread never holds up the media path: the feed drops batches
//! when the thread falls behind (the depacketizer then waits for the next
//! keyframe), and the rungs go back with `try_inject`, which drops rather
//! than waits when the worker's queue is full.
//!
//! AV1 rungs (rav1e, several times slower per frame than openh264) run on
//! a second thread of the ladder ([`Av1Worker`]): the ladder hands it each
//! scaled picture without waiting, drops the picture when the AV1 thread
//! is still busy with the last one (counted in
//! [`TranscoderStats::av1_skipped`]; the rung's next picture is then a
//! key frame if the dropped one was), and injects what it made when it
//! comes back.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lumen_node::{FeedEvent, NodeHandle, SinkFeed};
use tokio::sync::oneshot;

use crate::av1::{Av1Job, Av1Made, Av1Rung};
use crate::config::TranscodeConfig;
use crate::ladder::{Ladder, LadderStats, Transcodable};

/// The transcoder of a node. Cheap to clone.
#[derive(Clone)]
pub struct Transcoder {
    inner: Arc<Inner>,
}

/// Counters of a node's transcoder.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TranscoderStats {
    /// Streams being transcoded now (paused ones included).
    pub active: usize,
    /// Of those, the ones paused because nobody watches.
    pub paused: usize,
    /// Ladders started so far.
    pub started: u64,
    /// Streams not transcoded because `max_streams` were.
    pub refused_over_budget: u64,
    /// Source frames read.
    pub frames_in: u64,
    /// Rung frames made.
    pub frames_out: u64,
    /// Of those, IDRs (where the source had one, or a viewer asked).
    pub keyframes_out: u64,
    /// Source frames that did not decode (corrupt or unsupported
    /// bitstream, malformed payloads).
    pub decode_errors: u64,
    /// Batches of rung packets the worker's full queue refused.
    pub batches_dropped: u64,
    /// Ladders stopped by a fault of the codec library (a panic caught).
    pub faults: u64,
    /// Pictures an AV1 rung skipped because its encoder was still busy
    /// with the one before (the machine cannot hold the rung's rate).
    pub av1_skipped: u64,
}

struct Inner {
    config: TranscodeConfig,
    node: NodeHandle,
    runtime: Option<tokio::runtime::Handle>,
    jobs: Mutex<HashMap<String, Job>>,
    /// Connected viewers per stream, as signaling counts them (kept for
    /// streams without a ladder too, for when one starts).
    viewers: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    paused: AtomicUsize,
    closing: AtomicBool,
    started: AtomicU64,
    refused: AtomicU64,
    /// Streams whose publisher is live without a ladder because
    /// `max_streams` were transcoded when it came.
    over_budget: Mutex<HashSet<String>>,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    keyframes_out: AtomicU64,
    decode_errors: AtomicU64,
    batches_dropped: AtomicU64,
    faults: AtomicU64,
    av1_skipped: AtomicU64,
    seed: AtomicU64,
}

struct Job {
    stop: Option<oneshot::Sender<()>>,
    thread: std::thread::JoinHandle<()>,
}

impl Transcoder {
    /// A transcoder of `node`'s streams. Call it inside the tokio runtime
    /// the node runs on: the ladders' threads drive their feeds with it.
    pub fn start(config: TranscodeConfig, node: NodeHandle) -> Transcoder {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Transcoder {
            inner: Arc::new(Inner {
                config,
                node,
                runtime: tokio::runtime::Handle::try_current().ok(),
                jobs: Mutex::new(HashMap::new()),
                viewers: Mutex::new(HashMap::new()),
                paused: AtomicUsize::new(0),
                closing: AtomicBool::new(false),
                started: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                over_budget: Mutex::new(HashSet::new()),
                frames_in: AtomicU64::new(0),
                frames_out: AtomicU64::new(0),
                keyframes_out: AtomicU64::new(0),
                decode_errors: AtomicU64::new(0),
                batches_dropped: AtomicU64::new(0),
                faults: AtomicU64::new(0),
                av1_skipped: AtomicU64::new(0),
                seed: AtomicU64::new(seed),
            }),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &TranscodeConfig {
        &self.inner.config
    }

    /// A stream's publisher connected: transcode it if it sends one H.264
    /// layer, transcoding is on and the budget allows. Returns at once.
    pub fn publisher_live(&self, stream: &str) {
        let inner = &self.inner;
        if !inner.config.enabled
            || inner.config.rungs.is_empty()
            || inner.closing.load(Ordering::Acquire)
        {
            return;
        }
        let Some(runtime) = inner.runtime.clone() else {
            return;
        };
        let mut jobs = lock(&inner.jobs);
        jobs.retain(|_, j| !j.thread.is_finished());
        if jobs.contains_key(stream) {
            // The same ladder follows the new publisher (a fresh source).
            return;
        }
        if jobs.len() >= inner.config.max_streams {
            inner.refused.fetch_add(1, Ordering::Relaxed);
            lock(&inner.over_budget).insert(stream.to_string());
            tracing::info!(
                stream,
                max_streams = inner.config.max_streams,
                "transcoder: budget reached, the stream is forwarded without a ladder"
            );
            return;
        }
        let (stop, stopped) = oneshot::channel();
        let this = self.clone();
        let name = stream.to_string();
        let seed = inner.seed.fetch_add(0x9e37_79b9, Ordering::Relaxed) as u32;
        let spawned = std::thread::Builder::new()
            .name("lumen-transcode".into())
            .spawn(move || runtime.block_on(this.run(name, seed, stopped)));
        match spawned {
            Ok(thread) => {
                inner.started.fetch_add(1, Ordering::Relaxed);
                lock(&inner.over_budget).remove(stream);
                jobs.insert(
                    stream.to_string(),
                    Job {
                        stop: Some(stop),
                        thread,
                    },
                );
            }
            Err(e) => tracing::warn!(stream, error = %e, "transcoder: no thread"),
        }
    }

    /// A stream has `count` connected viewers now. A paused ladder starts
    /// again when it gets one; one without any for `idle_secs` pauses.
    pub fn viewers(&self, stream: &str, count: usize) {
        // (The entry stays while the stream is published: its ladder holds
        // it; `publisher_gone` forgets an unwatched one.)
        lock(&self.inner.viewers)
            .entry(stream.to_string())
            .or_default()
            .store(count, Ordering::Relaxed);
    }

    /// The viewer counter of a stream, shared with its ladder.
    fn viewer_count(&self, stream: &str) -> Arc<AtomicUsize> {
        lock(&self.inner.viewers)
            .entry(stream.to_string())
            .or_default()
            .clone()
    }

    /// Whether `stream`'s publisher went live without a ladder because
    /// `max_streams` streams were transcoded then (until it leaves): the
    /// WHEP `layers` event says so.
    pub fn over_budget(&self, stream: &str) -> bool {
        lock(&self.inner.over_budget).contains(stream)
    }

    /// A stream's publisher left: its ladder stops.
    pub fn publisher_gone(&self, stream: &str) {
        lock(&self.inner.over_budget).remove(stream);
        {
            let mut v = lock(&self.inner.viewers);
            if v.get(stream)
                .is_some_and(|c| c.load(Ordering::Relaxed) == 0)
            {
                v.remove(stream);
            }
        }
        if let Some(mut job) = lock(&self.inner.jobs).remove(stream)
            && let Some(stop) = job.stop.take()
        {
            let _ = stop.send(());
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> TranscoderStats {
        let i = &self.inner;
        let active = lock(&i.jobs)
            .values()
            .filter(|j| !j.thread.is_finished())
            .count();
        TranscoderStats {
            active,
            paused: i.paused.load(Ordering::Relaxed),
            started: i.started.load(Ordering::Relaxed),
            refused_over_budget: i.refused.load(Ordering::Relaxed),
            frames_in: i.frames_in.load(Ordering::Relaxed),
            frames_out: i.frames_out.load(Ordering::Relaxed),
            keyframes_out: i.keyframes_out.load(Ordering::Relaxed),
            decode_errors: i.decode_errors.load(Ordering::Relaxed),
            batches_dropped: i.batches_dropped.load(Ordering::Relaxed),
            faults: i.faults.load(Ordering::Relaxed),
            av1_skipped: i.av1_skipped.load(Ordering::Relaxed),
        }
    }

    /// Stops every ladder and waits for their threads.
    pub async fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::Release);
        let jobs: Vec<Job> = lock(&self.inner.jobs).drain().map(|(_, j)| j).collect();
        let mut threads = Vec::new();
        for mut j in jobs {
            if let Some(stop) = j.stop.take() {
                let _ = stop.send(());
            }
            threads.push(j.thread);
        }
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }

    /// One stream's ladder, on its own thread, until the publisher leaves,
    /// the stream turns out not to be transcodable, or the node stops.
    async fn run(self, stream: String, seed: u32, mut stopped: oneshot::Receiver<()>) {
        let inner = &self.inner;
        let feed = tokio::select! {
            f = inner.node.attach_sink(&stream) => f,
            _ = &mut stopped => return,
        };
        let mut feed = match feed {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(%stream, error = %e, "transcoder: cannot attach");
                return;
            }
        };
        let mut ladder = Ladder::new(&inner.config.rungs, seed);
        let mut av1 = Av1Worker::spawn(ladder.detach_av1());
        let mut counted = LadderStats::default();
        let mut idle = Idle::new(self.viewer_count(&stream), inner.config.idle_secs);
        // Whether the rungs have made a picture (and so are known layers).
        let mut made = false;
        loop {
            let event = tokio::select! {
                e = feed.recv() => e,
                Some(made) = Av1Worker::made(&mut av1) => {
                    self.count_av1(&made);
                    if !made.packets.is_empty() && feed.try_inject(made.packets).is_err() {
                        inner.batches_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                _ = &mut stopped => break,
            };
            let Some(event) = event else { break };
            match idle.check(Instant::now(), made) {
                Some(true) => {
                    inner.paused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%stream, "transcoder: nobody watches; paused");
                }
                Some(false) => {
                    inner.paused.fetch_sub(1, Ordering::Relaxed);
                    tracing::debug!(%stream, "transcoder: a viewer came; resumed");
                    ladder.restart();
                    let _ = feed.try_request_keyframe(ladder.source_rid());
                }
                None => {}
            }
            if idle.paused && matches!(event, FeedEvent::Packets(_) | FeedEvent::Keyframe { .. }) {
                continue;
            }
            let go_on = std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.on_event(&stream, &feed, &mut ladder, av1.as_ref(), event)
            }));
            let stats = ladder.stats();
            made |= stats.frames_out > 0;
            self.count(&mut counted, stats);
            match go_on {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => {
                    inner.faults.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%stream, "transcoder: the codec failed; the stream goes on without a ladder");
                    break;
                }
            }
        }
        if idle.paused {
            inner.paused.fetch_sub(1, Ordering::Relaxed);
        }
        feed.detach().await;
    }

    /// Returns whether the ladder goes on.
    fn on_event(
        &self,
        stream: &str,
        feed: &SinkFeed,
        ladder: &mut Ladder,
        av1: Option<&Av1Worker>,
        event: FeedEvent,
    ) -> bool {
        match event {
            FeedEvent::Source { tracks, fresh, .. } => {
                if tracks.is_empty() {
                    // Offline; a new publisher starts its own ladder.
                    return false;
                }
                match ladder.set_source(&tracks, fresh) {
                    Transcodable::Yes => true,
                    why => {
                        tracing::debug!(stream, ?why, "transcoder: not transcoded");
                        false
                    }
                }
            }
            FeedEvent::Packets(packets) => {
                let mut made = Vec::new();
                let mut keyframe_needed = false;
                for p in &packets {
                    let pushed = ladder.push(p);
                    keyframe_needed |= pushed.keyframe_needed;
                    made.extend(pushed.packets);
                    for job in pushed.av1_jobs {
                        let (rid, keyframe) = (job.rid, job.keyframe);
                        if av1.is_none_or(|w| !w.try_send(job)) {
                            self.inner.av1_skipped.fetch_add(1, Ordering::Relaxed);
                            if keyframe {
                                ladder.request_keyframe(Some(rid));
                            }
                        }
                    }
                }
                if keyframe_needed {
                    let _ = feed.try_request_keyframe(ladder.source_rid());
                }
                if !made.is_empty() && feed.try_inject(made).is_err() {
                    self.inner.batches_dropped.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
            FeedEvent::Keyframe { rid } => {
                ladder.request_keyframe(rid);
                true
            }
            // A gap shows in the sequence numbers: the depacketizer waits
            // for the next keyframe and asks for it.
            _ => true,
        }
    }

    /// Adds what the AV1 thread made to the node's counters.
    fn count_av1(&self, made: &Av1Made) {
        let i = &self.inner;
        i.frames_out.fetch_add(made.frames, Ordering::Relaxed);
        i.keyframes_out.fetch_add(made.keyframes, Ordering::Relaxed);
    }

    /// Adds what a ladder did since the last call to the node's counters.
    fn count(&self, counted: &mut LadderStats, now: LadderStats) {
        let i = &self.inner;
        i.frames_in
            .fetch_add(now.frames_in - counted.frames_in, Ordering::Relaxed);
        i.frames_out
            .fetch_add(now.frames_out - counted.frames_out, Ordering::Relaxed);
        i.keyframes_out
            .fetch_add(now.keyframes_out - counted.keyframes_out, Ordering::Relaxed);
        let bad = (now.decode_errors + now.malformed) - (counted.decode_errors + counted.malformed);
        i.decode_errors.fetch_add(bad, Ordering::Relaxed);
        *counted = now;
    }
}

/// The AV1 rungs of one ladder on a thread of their own: pictures in
/// (never waited for: one at a time per rung, the rest dropped), packets
/// back to the ladder's thread, which injects them.
struct Av1Worker {
    jobs: std::sync::mpsc::SyncSender<Av1Job>,
    made: tokio::sync::mpsc::Receiver<Av1Made>,
}

impl Av1Worker {
    /// `None` without AV1 rungs. The thread ends when the ladder drops
    /// its worker, or when an encoder panics (the AV1 rungs stop; the
    /// H.264 ones go on).
    fn spawn(rungs: Vec<Av1Rung>) -> Option<Av1Worker> {
        if rungs.is_empty() {
            return None;
        }
        let (jobs, jobs_rx) = std::sync::mpsc::sync_channel::<Av1Job>(rungs.len());
        let (made_tx, made) = tokio::sync::mpsc::channel(8);
        let mut rungs = rungs;
        let spawned = std::thread::Builder::new()
            .name("lumen-av1".into())
            .spawn(move || {
                while let Ok(job) = jobs_rx.recv() {
                    let Some(rung) = rungs.iter_mut().find(|r| r.rid == job.rid) else {
                        continue;
                    };
                    let made = std::panic::catch_unwind(AssertUnwindSafe(|| rung.encode(&job)));
                    let Ok(made) = made else {
                        tracing::error!("transcoder: the AV1 encoder failed; the AV1 rungs stop");
                        return;
                    };
                    if made_tx.blocking_send(made).is_err() {
                        return;
                    }
                }
            });
        match spawned {
            Ok(_) => Some(Av1Worker { jobs, made }),
            Err(e) => {
                tracing::warn!(error = %e, "transcoder: no thread for the AV1 rungs");
                None
            }
        }
    }

    /// Hands a picture over; `false` when the thread is still busy (or
    /// gone) and the picture is dropped.
    fn try_send(&self, job: Av1Job) -> bool {
        self.jobs.try_send(job).is_ok()
    }

    /// What the thread made next; never ready without a worker.
    async fn made(worker: &mut Option<Av1Worker>) -> Option<Av1Made> {
        match worker {
            Some(w) => w.made.recv().await,
            None => std::future::pending().await,
        }
    }
}

/// Whether a ladder's stream is watched: a ladder runs until its rungs
/// have made a picture (so they are known layers a viewer may pin) and
/// pauses then if nobody has watched the stream yet; once watched, it
/// pauses after `after` without a viewer. It runs again as soon as one
/// connects. Without `after` (`idle_secs = 0`) it never pauses.
struct Idle {
    viewers: Arc<AtomicUsize>,
    after: Option<Duration>,
    unwatched_since: Option<Instant>,
    /// Whether the stream has had a viewer since the ladder started.
    watched: bool,
    paused: bool,
}

impl Idle {
    fn new(viewers: Arc<AtomicUsize>, secs: u64) -> Idle {
        Idle {
            viewers,
            after: (secs > 0).then(|| Duration::from_secs(secs)),
            unwatched_since: None,
            watched: false,
            paused: false,
        }
    }

    /// `Some(true)`: pause now; `Some(false)`: run again now. `made`: the
    /// rungs have made a picture.
    fn check(&mut self, now: Instant, made: bool) -> Option<bool> {
        let after = self.after?;
        if self.viewers.load(Ordering::Relaxed) > 0 {
            self.watched = true;
            self.unwatched_since = None;
            if self.paused {
                self.paused = false;
                return Some(false);
            }
            return None;
        }
        if self.paused {
            return None;
        }
        let since = *self.unwatched_since.get_or_insert(now);
        if (!self.watched && made) || now.saturating_duration_since(since) >= after {
            self.paused = true;
            return Some(true);
        }
        None
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unwatched_ladder_pauses_once_its_rungs_are_known_and_a_watched_one_after_the_idle_time() {
        let viewers = Arc::new(AtomicUsize::new(0));
        let mut idle = Idle::new(viewers.clone(), 10);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            idle.check(at(0), false),
            None,
            "runs until its rungs are known"
        );
        assert_eq!(idle.check(at(0), true), Some(true), "then nobody watches");
        assert_eq!(idle.check(at(1), true), None, "said once");
        viewers.store(1, Ordering::Relaxed);
        assert_eq!(
            idle.check(at(2), true),
            Some(false),
            "the first viewer wakes it"
        );
        assert_eq!(idle.check(at(40), true), None, "watched: runs");
        viewers.store(0, Ordering::Relaxed);
        assert_eq!(idle.check(at(41), true), None, "the idle time counts");
        assert_eq!(idle.check(at(50), true), None);
        assert_eq!(idle.check(at(51), true), Some(true));
        assert_eq!(idle.check(at(60), true), None, "said once");
        viewers.store(2, Ordering::Relaxed);
        assert_eq!(idle.check(at(61), true), Some(false));

        let mut never = Idle::new(Arc::new(AtomicUsize::new(0)), 0);
        assert_eq!(never.check(at(0), true), None, "idle_secs 0: never pauses");
        assert_eq!(never.check(at(1000), true), None);
    }

    /// Past the budget a stream goes without a ladder and is known to,
    /// until its publisher leaves.
    #[tokio::test]
    async fn a_stream_past_the_budget_is_known_to_be_over_it_until_its_publisher_leaves() {
        let node = lumen_node::Node::start(&lumen_node::NodeConfig {
            rtc_addr: "127.0.0.1:0".parse().expect("addr"),
            workers: 1,
            ..lumen_node::NodeConfig::new()
        })
        .expect("node starts");
        let t = Transcoder::start(
            TranscodeConfig {
                max_streams: 0,
                ..TranscodeConfig::default()
            },
            node.handle(),
        );
        assert!(!t.over_budget("a"));
        t.publisher_live("a");
        assert!(t.over_budget("a"));
        assert!(!t.over_budget("b"), "only the refused stream");
        assert_eq!(t.stats().refused_over_budget, 1);
        t.publisher_gone("a");
        assert!(!t.over_budget("a"), "a new publisher is judged again");
    }
}
