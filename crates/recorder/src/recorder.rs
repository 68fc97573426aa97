//! The recorder's runtime: one task per live stream reads the stream's
//! sink feed from the node, records it when the policy says so (fragments
//! through the spool to the store, each journalled in the recordings table
//! as soon as the spool holds it), keeps the stream's live thumbnail, and
//! hands a finished recording to a finalisation task that makes the
//! progressive MP4, the HLS playlist and the row's facts.
//!
//! Crash safety rests on the order of two writes: a fragment is journalled
//! only after [`Uploader::enqueue`] returned, so it is fsync'd in the spool
//! and reaches the store across restarts; what the journal lists is what
//! [`Recorder::start`] finalises after a crash. A SIGKILL loses the open
//! fragment (at most [`crate::mux::MAX_FRAGMENT`] of media) and nothing
//! else.
//!
//! Decisions:
//! - A recording's row is made when recording starts (so the API can name
//!   it at once); one that never got a frame ends `failed` ("no media").
//! - Fragments are marked uploaded at finalisation, after the spool's
//!   flush; until then the journal says which exist, the spool makes sure
//!   they arrive.
//! - Live thumbnails are made under every policy (they are for the live
//!   cards, not the recordings), H.264 only.

mod finalize;
mod pipeline;
mod stream;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use lumen_auth::{Auth, AuthError};
use lumen_node::NodeHandle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::config::{Policy, RecorderConfig};
use crate::seal::{KeyError, Keyring};
use crate::spool::{SpoolError, Uploader};
use crate::store::{Objects, StoreError};

use stream::Command;

/// How long [`Recorder::shutdown`] waits for the streams' last fragments.
const SHUTDOWN_STREAMS: Duration = Duration::from_secs(10);
/// How long [`Recorder::shutdown`] waits for finalisations; what is left
/// stays `finalizing` and the next start finishes it.
const SHUTDOWN_FINALIZE: Duration = Duration::from_secs(30);

/// Why a recorder operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecorderError {
    /// The object store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The spool refused (full, or its directory cannot be written).
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The encryption keys cannot be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The recordings table failed.
    #[error("recordings database: {0}")]
    Database(#[from] AuthError),
    /// Stored fragments or their journal cannot make a recording.
    #[error("recording {id} cannot be finalised: {reason}")]
    Corrupt {
        /// The recording.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// Recording is off by configuration.
    #[error("recording is turned off")]
    PolicyOff,
    /// The stream has no publisher.
    #[error("stream {0:?} is not live")]
    NotLive(String),
    /// The stream is already being recorded.
    #[error("stream {stream:?} is already being recorded ({id})")]
    AlreadyRecording {
        /// The stream.
        stream: String,
        /// Its recording.
        id: String,
    },
    /// The stream is not being recorded.
    #[error("stream {0:?} is not being recorded")]
    NotRecording(String),
    /// The recording is still being recorded or finalised.
    #[error("recording {0} is not finished yet")]
    InProgress(String),
    /// The recorder is shutting down.
    #[error("the recorder is shutting down")]
    ShuttingDown,
}

/// The recorder of a node. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: RecorderConfig,
    auth: Auth,
    node: NodeHandle,
    objects: Objects,
    uploader: Uploader,
    streams: Mutex<HashMap<String, StreamEntry>>,
    finalizing: Mutex<JoinSet<()>>,
    retention: Mutex<Option<JoinHandle<()>>>,
    next_task: AtomicU64,
    closing: AtomicBool,
    fragments_written: AtomicU64,
    gap_frames: AtomicU64,
}

struct StreamEntry {
    task: u64,
    tx: mpsc::UnboundedSender<Command>,
    shared: Arc<StreamShared>,
    handle: JoinHandle<()>,
}

/// What a stream's task shows the handle.
#[derive(Default)]
pub(crate) struct StreamShared {
    recording: Mutex<Option<String>>,
    thumbnail: Mutex<Option<Bytes>>,
}

impl StreamShared {
    fn recording(&self) -> MutexGuard<'_, Option<String>> {
        lock(&self.recording)
    }

    fn thumbnail(&self) -> MutexGuard<'_, Option<Bytes>> {
        lock(&self.thumbnail)
    }
}

impl Recorder {
    /// Opens the store (sealing with the configured keys), starts the
    /// spool's uploader (re-uploading what a previous run left), finalises
    /// in the background every recording a crash or a stop left unfinished,
    /// and starts the hourly retention sweep when `retention_days` is set.
    pub async fn start(
        config: RecorderConfig,
        data_dir: &Path,
        auth: Auth,
        node: NodeHandle,
    ) -> Result<Recorder, RecorderError> {
        let keyring = Keyring::from_config(&config.encryption)?;
        let objects = Objects::open(&config.store, data_dir, keyring)?;
        let uploader = Uploader::start(
            objects.clone(),
            config.spool.dir_in(data_dir),
            &config.spool,
        )
        .await?;
        let unfinished = auth.recordings().unfinished().await?;
        let retention_days = config.retention_days;
        let inner = Arc::new(Inner {
            config,
            auth,
            node,
            objects,
            uploader,
            streams: Mutex::new(HashMap::new()),
            finalizing: Mutex::new(JoinSet::new()),
            retention: Mutex::new(None),
            next_task: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            fragments_written: AtomicU64::new(0),
            gap_frames: AtomicU64::new(0),
        });
        for r in unfinished {
            tracing::info!(recording = %r.id, stream = %r.stream, state = ?r.state, "recorder: finalising a recording left unfinished");
            finalize::spawn(&inner, r.id);
        }
        if retention_days > 0 {
            let task = tokio::spawn(finalize::retention(Arc::downgrade(&inner), retention_days));
            *lock(&inner.retention) = Some(task);
        }
        Ok(Recorder { inner })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &RecorderConfig {
        &self.inner.config
    }

    /// A stream's publisher connected (signaling calls it with the WHIP
    /// session as `broadcast`). Starts following the stream for its live
    /// thumbnail and, under [`Policy::Always`], records it. For a stream
    /// already followed it is a new publisher: the current recording ends
    /// and, under `always`, a new one starts in the new broadcast.
    pub fn publisher_live(&self, stream: &str, broadcast: &str) {
        let inner = &self.inner;
        if inner.closing.load(Ordering::Acquire) {
            return;
        }
        let mut streams = lock(&inner.streams);
        if let Some(e) = streams.get(stream)
            && !e.tx.is_closed()
        {
            let _ = e.tx.send(Command::NewPublisher {
                broadcast: broadcast.to_owned(),
            });
            return;
        }
        let task = inner.next_task.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(StreamShared::default());
        let handle = tokio::spawn(stream::run(
            inner.clone(),
            stream.to_owned(),
            task,
            shared.clone(),
            rx,
            broadcast.to_owned(),
        ));
        streams.insert(
            stream.to_owned(),
            StreamEntry {
                task,
                tx,
                shared,
                handle,
            },
        );
    }

    /// The stream's publisher left: its recording ends and is finalised in
    /// the background, and the stream is no longer followed.
    pub fn publisher_gone(&self, stream: &str) {
        if let Some(e) = lock(&self.inner.streams).get(stream) {
            let _ = e.tx.send(Command::Gone);
        }
    }

    /// Starts recording a live stream (on demand; under `always` after a
    /// [`Recorder::stop_recording`]). Returns the new recording's id.
    pub async fn start_recording(&self, stream: &str) -> Result<String, RecorderError> {
        if self.inner.config.policy == Policy::Off {
            return Err(RecorderError::PolicyOff);
        }
        let (reply, answer) = oneshot::channel();
        self.ask(stream, Command::Start { reply })?;
        answer
            .await
            .map_err(|_| RecorderError::NotLive(stream.to_owned()))?
    }

    /// Stops recording a stream; its recording is finalised in the
    /// background. Returns the recording's id.
    pub async fn stop_recording(&self, stream: &str) -> Result<String, RecorderError> {
        let (reply, answer) = oneshot::channel();
        self.ask(stream, Command::Stop { reply })
            .map_err(|_| RecorderError::NotRecording(stream.to_owned()))?;
        answer
            .await
            .map_err(|_| RecorderError::NotRecording(stream.to_owned()))?
    }

    /// The id of the recording being made of `stream`.
    pub fn recording_of(&self, stream: &str) -> Option<String> {
        let streams = lock(&self.inner.streams);
        streams.get(stream)?.shared.recording().clone()
    }

    /// The stream's latest live thumbnail (JPEG, refreshed about every
    /// 10 s while it is live; H.264 streams only).
    pub fn live_thumbnail(&self, stream: &str) -> Option<Bytes> {
        let streams = lock(&self.inner.streams);
        streams.get(stream)?.shared.thumbnail().clone()
    }

    /// The recordings store (signaling serves objects from it).
    pub fn objects(&self) -> &Objects {
        &self.inner.objects
    }

    /// Deletes a finished recording: its objects, then its row. `false`:
    /// there is no such recording. A recording still being recorded or
    /// finalised is refused ([`RecorderError::InProgress`]).
    pub async fn delete(&self, id: &str) -> Result<bool, RecorderError> {
        finalize::delete(&self.inner, id).await
    }

    /// Ends every recording (their last fragments are written and they are
    /// finalised) and stops the recorder's tasks, within bounds: what does
    /// not finish in time stays `finalizing` and the next start finishes it.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closing.store(true, Ordering::Release);
        let handles: Vec<JoinHandle<()>> = {
            let mut streams = lock(&inner.streams);
            streams
                .drain()
                .map(|(_, e)| {
                    let _ = e.tx.send(Command::Shutdown);
                    e.handle
                })
                .collect()
        };
        let streams = futures::future::join_all(handles);
        if tokio::time::timeout(SHUTDOWN_STREAMS, streams)
            .await
            .is_err()
        {
            tracing::warn!("recorder: streams did not stop in time");
        }
        let mut finalizing = std::mem::take(&mut *lock(&inner.finalizing));
        let all = async { while finalizing.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_FINALIZE, all).await.is_err() {
            tracing::warn!("recorder: finalisations left for the next start");
        }
        if let Some(task) = lock(&inner.retention).take() {
            task.abort();
        }
    }

    /// Bytes waiting in the spool for the store (a gauge).
    pub fn spool_bytes(&self) -> u64 {
        self.inner.uploader.spool_bytes()
    }

    /// Whether the store is failing (the spool grows meanwhile).
    pub fn store_failing(&self) -> bool {
        self.inner.uploader.is_failing()
    }

    /// Recordings being made now (a gauge).
    pub fn active_recordings(&self) -> usize {
        let streams = lock(&self.inner.streams);
        streams
            .values()
            .filter(|e| e.shared.recording().is_some())
            .count()
    }

    /// Fragments written (journalled) since start (a counter).
    pub fn fragments_written(&self) -> u64 {
        self.inner.fragments_written.load(Ordering::Relaxed)
    }

    /// Video frames dropped while waiting for a keyframe after a loss or a
    /// gap in a feed, since start (a counter).
    pub fn frames_dropped_for_gaps(&self) -> u64 {
        self.inner.gap_frames.load(Ordering::Relaxed)
    }

    /// Recordings being finalised in the background now (a gauge).
    pub fn finalizing(&self) -> usize {
        lock(&self.inner.finalizing).len()
    }

    fn ask(&self, stream: &str, command: Command) -> Result<(), RecorderError> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(RecorderError::ShuttingDown);
        }
        let streams = lock(&self.inner.streams);
        let entry = streams
            .get(stream)
            .ok_or_else(|| RecorderError::NotLive(stream.to_owned()))?;
        entry
            .tx
            .send(command)
            .map_err(|_| RecorderError::NotLive(stream.to_owned()))
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("policy", &self.inner.config.policy)
            .field("active", &self.active_recordings())
            .field("spool_bytes", &self.spool_bytes())
            .finish()
    }
}

impl Inner {
    /// A stream's task ended: forget it unless a newer task took its place.
    fn stream_ended(&self, stream: &str, task: u64) {
        let mut streams = lock(&self.streams);
        if streams.get(stream).is_some_and(|e| e.task == task) {
            streams.remove(stream);
        }
    }
}

/// A poisoned lock only means a panic elsewhere; the data (ids, bytes,
/// handles) cannot be half-written.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
