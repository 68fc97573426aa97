//! The recordings table and the journal of their fragments, in SQL that
//! SQLite and PostgreSQL both run, like `chat.rs`. The recorder
//! (`lumen-recorder`) owns what the rows mean; this is only their storage,
//! so that one database holds accounts, chat and recordings alike.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use utoipa::ToSchema;

use crate::{Auth, AuthError, Result, model};

/// Recordings [`Recordings::list`] returns at most.
pub const MAX_PAGE: usize = 100;

/// Where a recording is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Fragments are being written while the stream is live.
    Recording,
    /// The stream ended (or lumen restarted): the MP4 is being made.
    Finalizing,
    /// Playable.
    Ready,
    /// Nothing playable could be made (`error` says why).
    Failed,
}

impl RecordingState {
    fn as_str(self) -> &'static str {
        match self {
            RecordingState::Recording => "recording",
            RecordingState::Finalizing => "finalizing",
            RecordingState::Ready => "ready",
            RecordingState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<RecordingState> {
        Ok(match s {
            "recording" => RecordingState::Recording,
            "finalizing" => RecordingState::Finalizing,
            "ready" => RecordingState::Ready,
            "failed" => RecordingState::Failed,
            other => {
                return Err(AuthError::Invalid(format!(
                    "stored recording state {other:?}"
                )));
            }
        })
    }
}

/// One recording.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Recording {
    /// `rec_…`.
    pub id: String,
    /// The stream it recorded.
    pub stream: String,
    /// The broadcast: the publisher's WHIP session id (its chat replays
    /// with it).
    pub broadcast: Option<String>,
    /// Where it is in its life.
    pub state: RecordingState,
    /// When recording began, ms since the epoch.
    pub started_at: i64,
    /// When it ended.
    pub ended_at: Option<i64>,
    /// Its length.
    pub duration_ms: i64,
    /// Bytes of the playable MP4 (0 until ready).
    pub size: i64,
    /// RFC 6381 codec strings, comma-separated (`avc1.42e01f,opus`).
    pub codecs: String,
    /// Picture width in pixels (0: no video).
    pub width: i64,
    /// Picture height in pixels.
    pub height: i64,
    /// Object key of the init segment (`ftyp` + `moov`) of its fragments.
    #[serde(skip)]
    pub init_object: Option<String>,
    /// Object key of its thumbnail (JPEG), once there is one.
    #[serde(skip)]
    pub thumbnail_object: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One fragment as journalled.
#[derive(Debug, Clone, PartialEq)]
pub struct FragmentRecord {
    /// Its number in the recording, from 0.
    pub seq: u64,
    /// Its object key.
    pub object: String,
    /// Its bytes.
    pub size: u64,
    /// Its length.
    pub duration_ms: u64,
    /// In the object store (else still spooled on local disk).
    pub uploaded: bool,
    /// Its index (the recorder's `FragmentIndex`) as JSON.
    pub index: String,
}

/// What a finished recording is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Finished {
    /// Its length.
    pub duration_ms: u64,
    /// Bytes of the playable MP4.
    pub size: u64,
    /// RFC 6381 codec strings, comma-separated.
    pub codecs: String,
    /// Picture width (0: no video).
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Object key of its thumbnail.
    pub thumbnail_object: Option<String>,
}

/// The recordings tables of an [`Auth`]: `auth.recordings()`.
#[derive(Clone, Copy)]
pub struct Recordings<'a> {
    pool: &'a AnyPool,
}

impl Auth {
    /// The recordings' storage.
    pub fn recordings(&self) -> Recordings<'_> {
        Recordings {
            pool: self.inner.store.pool(),
        }
    }
}

/// The columns `recording_from` reads (a macro: sqlx takes only static
/// SQL, which `concat!` keeps).
macro_rules! select_recordings {
    ($($rest:literal),*) => {
        concat!(
            "SELECT id, stream, broadcast, state, started_at, ended_at, duration_ms, size, \
             codecs, width, height, init_object, thumbnail_object, error FROM recordings ",
            $($rest),*
        )
    };
}

impl Recordings<'_> {
    /// A new recording of `stream` (in `broadcast`), in state `recording`,
    /// starting now.
    pub async fn create(&self, stream: &str, broadcast: Option<&str>) -> Result<Recording> {
        let id = format!("rec_{}", model::random_token(10));
        let now = model::now_ms();
        sqlx::query(
            "INSERT INTO recordings (id, stream, broadcast, state, started_at) \
             VALUES ($1, $2, $3, 'recording', $4)",
        )
        .bind(&id)
        .bind(stream)
        .bind(broadcast)
        .bind(now)
        .execute(self.pool)
        .await?;
        self.get(&id)
            .await?
            .ok_or_else(|| AuthError::Invalid("a recording vanished as it was made".into()))
    }

    /// Records where its init segment is.
    pub async fn set_init(&self, id: &str, object: &str) -> Result<()> {
        sqlx::query("UPDATE recordings SET init_object = $1 WHERE id = $2")
            .bind(object)
            .bind(id)
            .execute(self.pool)
            .await?;
        Ok(())
    }

    /// Journals a closed fragment (written again: replaced).
    pub async fn add_fragment(&self, id: &str, f: &FragmentRecord) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM recording_fragments WHERE recording = $1 AND seq = $2")
            .bind(id)
            .bind(int(f.seq))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO recording_fragments (recording, seq, object, size, duration_ms, uploaded, idx) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(int(f.seq))
        .bind(&f.object)
        .bind(int(f.size))
        .bind(int(f.duration_ms))
        .bind(i64::from(f.uploaded))
        .bind(&f.index)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks a journalled fragment as in the object store.
    pub async fn mark_uploaded(&self, id: &str, seq: u64) -> Result<()> {
        sqlx::query(
            "UPDATE recording_fragments SET uploaded = 1 WHERE recording = $1 AND seq = $2",
        )
        .bind(id)
        .bind(int(seq))
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// A recording's journalled fragments, in order.
    pub async fn fragments(&self, id: &str) -> Result<Vec<FragmentRecord>> {
        let rows = sqlx::query(
            "SELECT seq, object, size, duration_ms, uploaded, idx FROM recording_fragments \
             WHERE recording = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.try_get("seq")?;
                let size: i64 = r.try_get("size")?;
                let duration: i64 = r.try_get("duration_ms")?;
                let uploaded: i64 = r.try_get("uploaded")?;
                Ok(FragmentRecord {
                    seq: seq.max(0) as u64,
                    object: r.try_get("object")?,
                    size: size.max(0) as u64,
                    duration_ms: duration.max(0) as u64,
                    uploaded: uploaded != 0,
                    index: r.try_get("idx")?,
                })
            })
            .collect()
    }

    /// Moves a recording to `state` (`error` for a failure).
    pub async fn set_state(
        &self,
        id: &str,
        state: RecordingState,
        error: Option<&str>,
    ) -> Result<()> {
        let ended = matches!(state, RecordingState::Finalizing | RecordingState::Failed);
        sqlx::query(
            "UPDATE recordings SET state = $1, error = $2, \
             ended_at = CASE WHEN $3 = 1 AND ended_at IS NULL THEN $4 ELSE ended_at END \
             WHERE id = $5",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(i64::from(ended))
        .bind(model::now_ms())
        .bind(id)
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// The recording is playable: what it is.
    pub async fn finish(&self, id: &str, f: &Finished) -> Result<()> {
        sqlx::query(
            "UPDATE recordings SET state = 'ready', error = NULL, duration_ms = $1, size = $2, \
             codecs = $3, width = $4, height = $5, thumbnail_object = $6, \
             ended_at = COALESCE(ended_at, $7) WHERE id = $8",
        )
        .bind(int(f.duration_ms))
        .bind(int(f.size))
        .bind(&f.codecs)
        .bind(i64::from(f.width))
        .bind(i64::from(f.height))
        .bind(&f.thumbnail_object)
        .bind(model::now_ms())
        .bind(id)
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// One recording.
    pub async fn get(&self, id: &str) -> Result<Option<Recording>> {
        let row = sqlx::query(select_recordings!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool)
            .await?;
        row.as_ref().map(recording_from).transpose()
    }

    /// Recordings newest first: of `stream` or all, started before
    /// `before` (ms; paging), at most `limit` (capped at [`MAX_PAGE`]).
    pub async fn list(
        &self,
        stream: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Recording>> {
        let rows = sqlx::query(select_recordings!(
            "WHERE ($1 IS NULL OR stream = $1) ",
            "AND started_at < $2 ORDER BY started_at DESC, id DESC LIMIT $3"
        ))
        .bind(stream)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit.clamp(1, MAX_PAGE) as i64)
        .fetch_all(self.pool)
        .await?;
        rows.iter().map(recording_from).collect()
    }

    /// Recordings a crash or a stop left unfinished (`recording` or
    /// `finalizing`), oldest first.
    pub async fn unfinished(&self) -> Result<Vec<Recording>> {
        let rows = sqlx::query(select_recordings!(
            "WHERE state IN ('recording', 'finalizing') ORDER BY started_at"
        ))
        .fetch_all(self.pool)
        .await?;
        rows.iter().map(recording_from).collect()
    }

    /// Moves a recording's start to `started_at` (ms since the epoch): for
    /// importing recordings made elsewhere, and for retention tests, which
    /// cannot wait days. `false`: there was no such recording.
    pub async fn backdate(&self, id: &str, started_at: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE recordings SET started_at = $1 WHERE id = $2")
            .bind(started_at)
            .bind(id)
            .execute(self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Finished recordings (ready or failed) that started before `ms`.
    pub async fn older_than(&self, ms: i64) -> Result<Vec<Recording>> {
        let rows = sqlx::query(select_recordings!(
            "WHERE state IN ('ready', 'failed') AND started_at < $1 ORDER BY started_at"
        ))
        .bind(ms)
        .fetch_all(self.pool)
        .await?;
        rows.iter().map(recording_from).collect()
    }

    /// Forgets a recording and its journal (its objects are the caller's
    /// to delete first). `false`: there was no such recording.
    pub async fn delete(&self, id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM recording_fragments WHERE recording = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM recordings WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }
}

fn recording_from(r: &AnyRow) -> Result<Recording> {
    let state: String = r.try_get("state")?;
    Ok(Recording {
        id: r.try_get("id")?,
        stream: r.try_get("stream")?,
        broadcast: r.try_get("broadcast")?,
        state: RecordingState::parse(&state)?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
        duration_ms: r.try_get("duration_ms")?,
        size: r.try_get("size")?,
        codecs: r.try_get("codecs")?,
        width: r.try_get("width")?,
        height: r.try_get("height")?,
        init_object: r.try_get("init_object")?,
        thumbnail_object: r.try_get("thumbnail_object")?,
        error: r.try_get("error")?,
    })
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
