//! The upload queue between the muxer and the store: every closed fragment
//! lands in a spool directory on local disk first (fsync'd), then a single
//! task uploads the entries in order and deletes each after the store has
//! it. When the store is unreachable the task retries with exponential
//! backoff while the spool grows, bounded by `max_bytes`; when the store is
//! back it catches up. A restart picks up what the spool holds.
//!
//! Spool entries are the bytes as stored ([`Objects`] seals before the
//! spool sees them), so plaintext never rests on local disk when sealing is
//! on. One file per entry, `<seq>.spool`: a JSON line `{"path", "len"}` then
//! `len` bytes, written as `<seq>.tmp` and renamed, so a crash leaves either
//! a whole entry or a `.tmp` that the next start deletes (its fragment was
//! never acknowledged to the caller). A spool dir belongs to one
//! [`Uploader`] at a time.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

use crate::store::{Objects, StoreError};

/// `[recording.spool]`.
///
/// ```toml
/// [recording.spool]
/// dir = "spool"              # relative to the data dir; default "spool"
/// max_bytes = 2147483648     # default 2 GiB
/// retry_initial_ms = 500
/// retry_max_ms = 30000
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Where entries wait; relative paths are under the data dir.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Bytes the spool may hold before [`Uploader::enqueue`] refuses.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// First retry delay after a failed upload, doubling from there.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest retry delay.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: None,
            max_bytes: default_max_bytes(),
            retry_initial_ms: default_retry_initial_ms(),
            retry_max_ms: default_retry_max_ms(),
        }
    }
}

impl SpoolConfig {
    /// The spool directory for this data dir.
    pub fn dir_in(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(self.dir.as_deref().unwrap_or(Path::new("spool")))
    }
}

fn default_max_bytes() -> u64 {
    2 << 30
}
fn default_retry_initial_ms() -> u64 {
    500
}
fn default_retry_max_ms() -> u64 {
    30_000
}

/// Why an object was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The spool is full because the store has been failing. The object was
    /// not accepted; everything accepted before stays queued. The recorder
    /// keeps the fragment and offers it again later, or stops the recording
    /// with this reason.
    #[error("spool full: {spool_bytes} of {max_bytes} bytes waiting for the store")]
    Full {
        /// Bytes in the spool.
        spool_bytes: u64,
        /// The bound.
        max_bytes: u64,
    },
    /// The spool directory could not be written.
    #[error("spool {dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The path is not a valid object path.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The uploader stopped (its task panicked or was shut down).
    #[error("uploader stopped")]
    Stopped,
}

/// Uploads objects in order through a crash-safe local spool.
pub struct Uploader {
    shared: Arc<Shared>,
    objects: Objects,
    tx: mpsc::UnboundedSender<Entry>,
    /// The next sequence number; held across the write so entries reach
    /// the queue in the order their files were numbered.
    next_seq: Mutex<u64>,
    uploaded: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    spool_bytes: AtomicU64,
    pending: AtomicU64,
    enqueued: AtomicU64,
    failing: AtomicBool,
    last_error: std::sync::Mutex<Option<String>>,
}

impl Shared {
    fn last_error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A panic while holding it cannot leave a string half-written.
        self.last_error.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct Entry {
    file: PathBuf,
    path: String,
    size: u64,
}

#[derive(Serialize, Deserialize)]
struct EntryHeader {
    path: String,
    len: u64,
}

impl Uploader {
    /// Starts the upload task; entries already in `dir` (from a previous
    /// run) are uploaded first, in their order.
    pub async fn start(
        objects: Objects,
        dir: PathBuf,
        cfg: &SpoolConfig,
    ) -> Result<Uploader, SpoolError> {
        let io = |source| SpoolError::Io {
            dir: dir.clone(),
            source,
        };
        let scan_dir = dir.clone();
        let recovered = tokio::task::spawn_blocking(move || recover(&scan_dir))
            .await
            .map_err(|_| SpoolError::Stopped)?
            .map_err(io)?;
        let next = recovered.last().map_or(0, |(seq, _)| seq + 1);
        let count = recovered.len() as u64;
        let bytes: u64 = recovered.iter().map(|(_, e)| e.size).sum();
        if count > 0 {
            tracing::info!(entries = count, bytes, dir = %dir.display(), "spool: re-uploading entries from a previous run");
        }
        let shared = Arc::new(Shared {
            dir,
            max_bytes: cfg.max_bytes,
            spool_bytes: AtomicU64::new(bytes),
            pending: AtomicU64::new(count),
            enqueued: AtomicU64::new(count),
            failing: AtomicBool::new(false),
            last_error: std::sync::Mutex::new(None),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        for (_, entry) in recovered {
            // The receiver is alive: it is right here.
            let _ = tx.send(entry);
        }
        let (uploaded_tx, uploaded) = watch::channel(0);
        let backoff = Backoff {
            initial: Duration::from_millis(cfg.retry_initial_ms.max(1)),
            max: Duration::from_millis(cfg.retry_max_ms.max(cfg.retry_initial_ms).max(1)),
        };
        let task = tokio::spawn(run(
            objects.clone(),
            shared.clone(),
            rx,
            uploaded_tx,
            backoff,
        ));
        Ok(Uploader {
            shared,
            objects,
            tx,
            next_seq: Mutex::new(next),
            uploaded,
            task,
        })
    }

    /// Accepts an object for upload: once this returns `Ok` it is on local
    /// disk and will reach the store, across restarts. Objects are uploaded
    /// in the order they are accepted. Refused with [`SpoolError::Full`]
    /// when the spool would pass `max_bytes`.
    pub async fn enqueue(&self, path: &str, data: Bytes) -> Result<(), SpoolError> {
        if self.task.is_finished() {
            return Err(SpoolError::Stopped);
        }
        crate::store::check_path(path)?;
        let encoded = self.objects.encode(data);
        let header = serde_json::to_vec(&EntryHeader {
            path: path.to_owned(),
            len: encoded.len() as u64,
        })
        .map_err(|e| self.io(std::io::Error::other(e)))?;
        let size = (header.len() + 1 + encoded.len()) as u64;

        let mut next = self.next_seq.lock().await;
        let spool_bytes = self.shared.spool_bytes.load(Ordering::Acquire);
        if spool_bytes + size > self.shared.max_bytes {
            return Err(SpoolError::Full {
                spool_bytes,
                max_bytes: self.shared.max_bytes,
            });
        }
        let seq = *next;
        let dir = self.shared.dir.clone();
        let file = tokio::task::spawn_blocking(move || write_entry(&dir, seq, &header, &encoded))
            .await
            .map_err(|_| SpoolError::Stopped)?
            .map_err(|e| self.io(e))?;
        *next += 1;
        self.shared.spool_bytes.fetch_add(size, Ordering::AcqRel);
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        self.shared.enqueued.fetch_add(1, Ordering::AcqRel);
        let entry = Entry {
            file,
            path: path.to_owned(),
            size,
        };
        self.tx.send(entry).map_err(|_| SpoolError::Stopped)?;
        Ok(())
    }

    /// Waits until everything accepted so far is in the store. Waits as
    /// long as the store is down: bound it with a timeout where needed.
    pub async fn flush(&self) -> Result<(), SpoolError> {
        let target = {
            let _order = self.next_seq.lock().await;
            self.shared.enqueued.load(Ordering::Acquire)
        };
        let mut uploaded = self.uploaded.clone();
        uploaded
            .wait_for(|done| *done >= target)
            .await
            .map(|_| ())
            .map_err(|_| SpoolError::Stopped)
    }

    /// Bytes waiting in the spool (a gauge).
    pub fn spool_bytes(&self) -> u64 {
        self.shared.spool_bytes.load(Ordering::Acquire)
    }

    /// Objects waiting in the spool (a gauge).
    pub fn pending(&self) -> u64 {
        self.shared.pending.load(Ordering::Acquire)
    }

    /// Whether the last upload attempt failed.
    pub fn is_failing(&self) -> bool {
        self.shared.failing.load(Ordering::Acquire)
    }

    /// Why the last upload attempt failed, while the store is failing.
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error().clone()
    }

    /// Stops the upload task. What is still spooled stays on disk for the
    /// next start.
    pub fn shutdown(self) {
        self.task.abort();
    }

    fn io(&self, source: std::io::Error) -> SpoolError {
        SpoolError::Io {
            dir: self.shared.dir.clone(),
            source,
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        // An upload cut off here is repeated from the spool next time;
        // puts are idempotent.
        self.task.abort();
    }
}

#[derive(Clone, Copy)]
struct Backoff {
    initial: Duration,
    max: Duration,
}

async fn run(
    objects: Objects,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Entry>,
    uploaded: watch::Sender<u64>,
    backoff: Backoff,
) {
    while let Some(entry) = rx.recv().await {
        let mut delay = backoff.initial;
        let mut attempts = 0u32;
        let mut keep_file = false;
        loop {
            match upload(&objects, &entry).await {
                Ok(()) => break,
                Err(Failure::Store(e)) => {
                    attempts += 1;
                    shared.failing.store(true, Ordering::Release);
                    *shared.last_error() = Some(e.to_string());
                    tracing::warn!(
                        error = %e,
                        object = %entry.path,
                        attempts,
                        retry_in_ms = delay.as_millis() as u64,
                        spool_bytes = shared.spool_bytes.load(Ordering::Acquire),
                        spool_objects = shared.pending.load(Ordering::Acquire),
                        "recording store failing; spooling to local disk",
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(backoff.max);
                }
                Err(Failure::Local(e)) => {
                    // A damaged spool file cannot become right by waiting;
                    // set it aside so later entries still go up.
                    tracing::error!(error = %e, file = %entry.file.display(), object = %entry.path, "spool entry unreadable; moved to failed/");
                    set_aside(&shared.dir, &entry.file);
                    keep_file = true;
                    break;
                }
            }
        }
        if shared.failing.swap(false, Ordering::AcqRel) {
            *shared.last_error() = None;
            tracing::info!(
                spool_objects = shared.pending.load(Ordering::Acquire).saturating_sub(1),
                "recording store reachable again; catching up",
            );
        }
        if !keep_file && let Err(e) = std::fs::remove_file(&entry.file) {
            tracing::warn!(error = %e, file = %entry.file.display(), "cannot delete uploaded spool entry");
        }
        shared.spool_bytes.fetch_sub(entry.size, Ordering::AcqRel);
        shared.pending.fetch_sub(1, Ordering::AcqRel);
        uploaded.send_modify(|n| *n += 1);
    }
}

enum Failure {
    Store(StoreError),
    Local(std::io::Error),
}

async fn upload(objects: &Objects, entry: &Entry) -> Result<(), Failure> {
    let file = entry.file.clone();
    let (header, body) = tokio::task::spawn_blocking(move || read_entry(&file))
        .await
        .map_err(|e| Failure::Local(std::io::Error::other(e)))?
        .map_err(Failure::Local)?;
    debug_assert_eq!(header.path, entry.path);
    objects
        .put_encoded(&header.path, body)
        .await
        .map_err(Failure::Store)
}

fn write_entry(dir: &Path, seq: u64, header: &[u8], body: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{seq:020}.tmp"));
    let done = dir.join(format!("{seq:020}.spool"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(header)?;
    f.write_all(b"\n")?;
    f.write_all(body)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &done)?;
    // The rename is the commit; it is durable once the directory is synced.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(done)
}

fn read_entry(file: &Path) -> std::io::Result<(EntryHeader, Bytes)> {
    let raw = std::fs::read(file)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let nl = raw
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| bad("no header line"))?;
    let header: EntryHeader =
        serde_json::from_slice(&raw[..nl]).map_err(|e| bad(&format!("header: {e}")))?;
    let body = Bytes::from(raw).slice(nl + 1..);
    if body.len() as u64 != header.len {
        return Err(bad("length does not match its header"));
    }
    Ok((header, body))
}

/// Whole entries left by a previous run, in order; half-written ones are
/// deleted (they were never acknowledged).
fn recover(dir: &Path) -> std::io::Result<Vec<(u64, Entry)>> {
    std::fs::create_dir_all(dir)?;
    let mut found = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let file = item.path();
        let name = item.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") {
            std::fs::remove_file(&file)?;
            continue;
        }
        let Some(seq) = name
            .strip_suffix(".spool")
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        match read_entry(&file) {
            Ok((header, _)) => {
                let size = item.metadata()?.len();
                found.push((
                    seq,
                    Entry {
                        file,
                        path: header.path,
                        size,
                    },
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, file = %file.display(), "spool entry unreadable; moved to failed/");
                set_aside(dir, &file);
            }
        }
    }
    found.sort_by_key(|(seq, _)| *seq);
    Ok(found)
}

fn set_aside(dir: &Path, file: &Path) {
    let failed = dir.join("failed");
    let moved = std::fs::create_dir_all(&failed)
        .and_then(|()| std::fs::rename(file, failed.join(file.file_name().unwrap_or_default())));
    if let Err(e) = moved {
        tracing::error!(error = %e, file = %file.display(), "cannot move spool entry aside");
    }
}

#[cfg(test)]
mod tests;
