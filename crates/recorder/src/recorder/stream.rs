//! One live stream's task: reads its sink feed into the [`Pipeline`],
//! writes what comes out (init segment and fragments through the spool,
//! each journalled once the spool has it), asks the publisher for
//! keyframes, keeps the live thumbnail, and takes the handle's commands.
//!
//! A new publisher of the stream shows up twice, in either order: as a
//! `fresh` source on the feed and as [`Command::NewPublisher`] with its
//! broadcast. Whichever comes first ends the old publisher's recording;
//! the new one starts once both are there (after [`BROADCAST_WAIT`] without
//! the broadcast it starts without one).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use lumen_auth::recordings::FragmentRecord;
use lumen_node::{FeedEvent, SinkFeed};
use lumen_sfu::TrackDescription;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::pipeline::{Out, Pipeline};
use super::{Inner, RecorderError, StreamShared, finalize};
use crate::config::Policy;
use crate::depacketize::Codec;
use crate::paths;

/// How often a live thumbnail is refreshed.
pub(crate) const THUMBNAIL_EVERY: Duration = Duration::from_secs(10);
/// A wanted thumbnail's keyframe is asked for after this long without one,
/// and again this often.
const THUMBNAIL_ASK: Duration = Duration::from_secs(2);
/// How long a new publisher's recording waits for its broadcast id.
const BROADCAST_WAIT: Duration = Duration::from_secs(3);
/// How long a stream task tries to attach to a stream that is not (yet)
/// known to the node.
const ATTACH_PATIENCE: Duration = Duration::from_secs(5);

/// What the handle asks of a stream's task.
pub(crate) enum Command {
    NewPublisher {
        broadcast: String,
    },
    Start {
        reply: oneshot::Sender<Result<String, RecorderError>>,
    },
    Stop {
        reply: oneshot::Sender<Result<String, RecorderError>>,
    },
    Gone,
    Shutdown,
}

pub(crate) async fn run(
    inner: Arc<Inner>,
    stream: String,
    task: u64,
    shared: Arc<StreamShared>,
    mut rx: mpsc::UnboundedReceiver<Command>,
    broadcast: String,
) {
    let mut t = StreamTask {
        want_record: inner.config.policy == Policy::Always,
        inner: inner.clone(),
        stream: stream.clone(),
        shared: shared.clone(),
        pipeline: Pipeline::default(),
        broadcast: Some(broadcast),
        recording: None,
        bound: None,
        need_fresh: false,
        awaiting_broadcast: None,
        live: false,
        next_thumbnail: Instant::now(),
        wanted_since: None,
        last_ask: None,
        skipped_seen: 0,
    };
    // Attached first: the node keeps the stream's latest keyframe for a
    // new sink, so the recording starts where the stream is, however long
    // the row takes to make.
    if let Some(mut feed) = attach(&inner, &stream).await {
        if t.want_record {
            t.begin_logged().await;
        }
        t.run(&mut feed, &mut rx).await;
        feed.detach().await;
    } else {
        tracing::warn!(stream = %stream, "recorder: the stream never became live on the node");
    }
    t.end_recording(None).await;
    *shared.thumbnail() = None;
    inner.stream_ended(&stream, task);
    // Commands that raced with the end get their answer.
    rx.close();
    while let Ok(c) = rx.try_recv() {
        match c {
            Command::Start { reply } => {
                let _ = reply.send(Err(RecorderError::NotLive(stream.clone())));
            }
            Command::Stop { reply } => {
                let _ = reply.send(Err(RecorderError::NotRecording(stream.clone())));
            }
            _ => {}
        }
    }
}

async fn attach(inner: &Inner, stream: &str) -> Option<SinkFeed> {
    let deadline = Instant::now() + ATTACH_PATIENCE;
    loop {
        match inner.node.attach_sink(stream).await {
            Ok(feed) => return Some(feed),
            Err(e) if Instant::now() >= deadline => {
                tracing::debug!(stream, error = %e, "recorder: cannot attach");
                return None;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

struct Active {
    id: String,
    /// A write failed: nothing more is written to it.
    failed: bool,
}

struct StreamTask {
    inner: Arc<Inner>,
    stream: String,
    shared: Arc<StreamShared>,
    pipeline: Pipeline,
    /// Of the current publisher, as signaling named it.
    broadcast: Option<String>,
    recording: Option<Active>,
    /// Record the next publisher too (policy `always`).
    want_record: bool,
    /// The tracks bound now.
    bound: Option<Vec<TrackDescription>>,
    /// A new publisher was announced; the feed still shows the old one.
    need_fresh: bool,
    /// A new publisher came on the feed; its broadcast id has not.
    awaiting_broadcast: Option<Instant>,
    live: bool,
    next_thumbnail: Instant,
    wanted_since: Option<Instant>,
    last_ask: Option<Instant>,
    skipped_seen: u64,
}

impl StreamTask {
    async fn run(&mut self, feed: &mut SinkFeed, rx: &mut mpsc::UnboundedReceiver<Command>) {
        // The stream's description comes first: read it before any
        // command, so a start right after `publisher_live` finds the
        // stream bound.
        match feed.recv().await {
            Some(e) => self.on_event(e, feed).await,
            None => return,
        }
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = feed.recv() => match event {
                    Some(e) => self.on_event(e, feed).await,
                    None => return,
                },
                command = rx.recv() => match command {
                    None | Some(Command::Gone) | Some(Command::Shutdown) => return,
                    Some(c) => self.on_command(c).await,
                },
                _ = tick.tick() => self.on_tick(feed).await,
            }
        }
    }

    async fn on_event(&mut self, event: FeedEvent, feed: &SinkFeed) {
        match event {
            FeedEvent::Source {
                tracks,
                fresh,
                live,
            } => {
                self.live = live && !tracks.is_empty();
                if tracks.is_empty() {
                    // Offline: this publisher's recording is over.
                    self.end_recording(None).await;
                    self.pipeline.unbind();
                    self.bound = None;
                    *self.shared.thumbnail() = None;
                    return;
                }
                if fresh && self.bound.is_some() {
                    if self.need_fresh {
                        self.need_fresh = false;
                    } else {
                        // A new publisher before its broadcast id.
                        self.end_recording(None).await;
                        self.want_record = self.inner.config.policy == Policy::Always;
                        if self.want_record {
                            self.awaiting_broadcast = Some(Instant::now());
                        }
                    }
                } else if fresh {
                    self.need_fresh = false;
                }
                if fresh || self.bound.as_ref() != Some(&tracks) {
                    self.pipeline.bind(&tracks);
                    self.bound = Some(tracks);
                    if self.pipeline.thumbnails_possible() {
                        // The keyframes a sink gets when it attaches (or a
                        // new publisher's first) make the first thumbnail.
                        self.pipeline.want_thumbnail();
                        self.wanted_since = Some(Instant::now());
                    }
                }
            }
            FeedEvent::Packets(packets) => {
                if self.need_fresh {
                    return;
                }
                let out = self
                    .pipeline
                    .packets(packets, (std::time::Instant::now(), SystemTime::now()));
                self.act(out, feed).await;
            }
            FeedEvent::Gap { batches } => {
                tracing::debug!(stream = %self.stream, batches, "recorder: the feed lost batches; waiting for a keyframe");
                let out = self.pipeline.gap();
                self.act(out, feed).await;
            }
            _ => {}
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::NewPublisher { broadcast } => {
                self.want_record = self.inner.config.policy == Policy::Always;
                if self.awaiting_broadcast.take().is_some() {
                    self.broadcast = Some(broadcast);
                    self.begin_logged().await;
                } else if self.bound.is_some() {
                    // The feed still shows the old publisher: its
                    // recording ends now, the new one waits for it.
                    self.end_recording(None).await;
                    self.broadcast = Some(broadcast);
                    self.need_fresh = true;
                    if self.want_record {
                        self.begin_logged().await;
                    }
                } else {
                    // Not bound: the task's first publisher, or one after
                    // the stream went offline.
                    self.broadcast = Some(broadcast);
                    if self.want_record && self.recording.is_none() {
                        self.begin_logged().await;
                    }
                }
            }
            Command::Start { reply } => {
                let answer = if let Some(a) = &self.recording {
                    Err(RecorderError::AlreadyRecording {
                        stream: self.stream.clone(),
                        id: a.id.clone(),
                    })
                } else if !self.live && self.bound.is_none() {
                    Err(RecorderError::NotLive(self.stream.clone()))
                } else {
                    let b = self.broadcast.clone();
                    self.begin(b).await
                };
                let _ = reply.send(answer);
            }
            Command::Stop { reply } => {
                let answer = match self.recording.as_ref().map(|a| a.id.clone()) {
                    Some(id) => {
                        self.end_recording(None).await;
                        // Stopped by hand: not again for this publisher.
                        self.want_record = false;
                        Ok(id)
                    }
                    None => Err(RecorderError::NotRecording(self.stream.clone())),
                };
                let _ = reply.send(answer);
            }
            Command::Gone | Command::Shutdown => {}
        }
    }

    async fn on_tick(&mut self, feed: &SinkFeed) {
        let now = Instant::now();
        if let Some(since) = self.awaiting_broadcast
            && now.duration_since(since) >= BROADCAST_WAIT
        {
            self.awaiting_broadcast = None;
            self.broadcast = None;
            self.begin_logged().await;
        }
        if !self.live || !self.pipeline.thumbnails_possible() {
            return;
        }
        if now >= self.next_thumbnail && !self.pipeline.wants_thumbnail() {
            self.pipeline.want_thumbnail();
            self.wanted_since = Some(now);
        }
        if self.pipeline.wants_thumbnail()
            && self
                .wanted_since
                .is_some_and(|t| now.duration_since(t) >= THUMBNAIL_ASK)
            && self
                .last_ask
                .is_none_or(|t| now.duration_since(t) >= THUMBNAIL_ASK)
        {
            self.last_ask = Some(now);
            let _ = feed.request_keyframe(self.pipeline.layer()).await;
        }
    }

    /// Starts a recording in `broadcast`: its row now, its media from the
    /// next keyframe.
    async fn begin(&mut self, broadcast: Option<String>) -> Result<String, RecorderError> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(RecorderError::ShuttingDown);
        }
        let rec = self
            .inner
            .auth
            .recordings()
            .create(&self.stream, broadcast.as_deref())
            .await?;
        tracing::info!(stream = %self.stream, recording = %rec.id, broadcast = ?broadcast, "recording started");
        self.pipeline.start_recording();
        *self.shared.recording() = Some(rec.id.clone());
        self.recording = Some(Active {
            id: rec.id.clone(),
            failed: false,
        });
        Ok(rec.id)
    }

    async fn begin_logged(&mut self) {
        let b = self.broadcast.clone();
        if let Err(e) = self.begin(b).await {
            tracing::error!(stream = %self.stream, error = %e, "recorder: cannot start a recording");
        }
    }

    /// Ends the recording (writing its last fragments) and hands it to a
    /// finalisation task.
    async fn end_recording(&mut self, error: Option<String>) {
        if self.recording.is_none() {
            return;
        }
        let out = self.pipeline.stop_recording();
        self.write(out).await;
        let Some(active) = self.recording.take() else {
            return;
        };
        *self.shared.recording() = None;
        if let Some(e) = error {
            tracing::error!(stream = %self.stream, recording = %active.id, error = %e, "recording stopped");
        } else {
            tracing::info!(stream = %self.stream, recording = %active.id, "recording ended");
        }
        finalize::spawn(&self.inner, active.id);
    }

    /// Does what the pipeline asked for.
    async fn act(&mut self, out: Out, feed: &SinkFeed) {
        if out.keyframe_request {
            let _ = feed.request_keyframe(self.pipeline.layer()).await;
        }
        let skipped = self.pipeline.skipped();
        self.inner
            .gap_frames
            .fetch_add(skipped.saturating_sub(self.skipped_seen), Ordering::Relaxed);
        self.skipped_seen = skipped;
        let error = out.error.clone();
        self.write(out).await;
        if let Some(e) = error {
            self.end_recording(Some(e)).await;
        } else if self.recording.as_ref().is_some_and(|a| a.failed) {
            self.end_recording(Some("writing failed".into())).await;
        }
    }

    /// Writes the init segment, fragments and thumbnail of `out`.
    async fn write(&mut self, out: Out) {
        if let Some((codec, frame)) = out.thumbnail {
            let width = self.inner.config.thumbnail_width;
            let jpeg = tokio::task::spawn_blocking(move || match codec {
                Codec::Vp8 => crate::thumbnail::vp8_jpeg(&frame, width),
                _ => crate::thumbnail::h264_jpeg(&frame, width),
            })
            .await;
            match jpeg {
                Ok(Ok(jpeg)) => {
                    let jpeg = Bytes::from(jpeg);
                    *self.shared.thumbnail() = Some(jpeg.clone());
                    self.next_thumbnail = Instant::now() + THUMBNAIL_EVERY;
                    self.wanted_since = None;
                    if out.thumbnail_recording
                        && let Some(a) = &self.recording
                        && let Err(e) = self
                            .inner
                            .uploader
                            .enqueue(&paths::thumbnail(&a.id), jpeg)
                            .await
                    {
                        tracing::warn!(recording = %a.id, error = %e, "recorder: thumbnail not stored");
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(stream = %self.stream, error = %e, "recorder: no thumbnail");
                    self.next_thumbnail = Instant::now() + THUMBNAIL_EVERY;
                }
                Err(_) => {}
            }
        }
        let Some(active) = &mut self.recording else {
            return;
        };
        if active.failed {
            return;
        }
        let recordings = self.inner.auth.recordings();
        if let Some(init) = out.init {
            let object = paths::init(&active.id);
            let done = match self
                .inner
                .uploader
                .enqueue(&object, Bytes::from(init))
                .await
            {
                Ok(()) => recordings
                    .set_init(&active.id, &object)
                    .await
                    .map_err(RecorderError::from),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = done {
                tracing::error!(recording = %active.id, error = %e, "recorder: init segment not written");
                active.failed = true;
                return;
            }
        }
        for f in out.fragments {
            let seq = u64::from(f.index.seq);
            let object = paths::fragment(&active.id, seq);
            let record = FragmentRecord {
                seq,
                object: object.clone(),
                size: f.bytes.len() as u64,
                duration_ms: (f.index.duration_secs() * 1000.0).round() as u64,
                uploaded: false,
                index: serde_json::to_string(&f.index).unwrap_or_default(),
            };
            // Journalled only once the spool holds it (fsync'd): what the
            // journal lists always reaches the store.
            let done = match self
                .inner
                .uploader
                .enqueue(&object, Bytes::from(f.bytes))
                .await
            {
                Ok(()) => recordings
                    .add_fragment(&active.id, &record)
                    .await
                    .map_err(RecorderError::from),
                Err(e) => Err(e.into()),
            };
            match done {
                Ok(()) => {
                    self.inner.fragments_written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(recording = %active.id, seq, error = %e, "recorder: fragment not written");
                    active.failed = true;
                    return;
                }
            }
        }
    }
}
