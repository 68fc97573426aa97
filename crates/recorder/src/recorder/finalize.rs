//! A recording's end, from its journal alone (the same code after a stream
//! ends and after a crash): the spool is flushed, the progressive MP4 is
//! written by copying the fragments' media ranges from the store behind a
//! header planned from their indexes (one fragment's media in memory at a
//! time), then the HLS playlist, then the row's facts. Also deletion and
//! the retention sweep.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lumen_auth::recordings::{Finished, RecordingState};

use super::{Inner, RecorderError, lock};
use crate::hls::{self, Segment};
use crate::mux::{FragmentIndex, parse_fragment_index, progressive};
use crate::paths;
use crate::store::StoreError;

/// Attempts at a finalisation that fails for a reason worth retrying
/// (store or database errors), with delays doubling from
/// [`RETRY_INITIAL`]; after that it stays `finalizing` for the next start.
const ATTEMPTS: u32 = 6;
const RETRY_INITIAL: Duration = Duration::from_secs(1);
/// How often the retention sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Finalises `id` in the background (tracked, so shutdown can wait).
pub(super) fn spawn(inner: &Arc<Inner>, id: String) {
    let task_inner = inner.clone();
    let mut set = lock(&inner.finalizing);
    while set.try_join_next().is_some() {}
    set.spawn(async move {
        let inner = task_inner;
        let mut delay = RETRY_INITIAL;
        for attempt in 1..=ATTEMPTS {
            match finalize(&inner, &id).await {
                Ok(()) => return,
                Err(e) if retryable(&e) && attempt < ATTEMPTS => {
                    tracing::warn!(recording = %id, error = %e, attempt, "recorder: finalisation failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) if retryable(&e) => {
                    tracing::error!(recording = %id, error = %e, "recorder: finalisation failed; left for the next start");
                }
                Err(e) => {
                    tracing::error!(recording = %id, error = %e, "recorder: recording failed");
                    let reason = e.to_string();
                    let _ = inner
                        .auth
                        .recordings()
                        .set_state(&id, RecordingState::Failed, Some(&reason))
                        .await;
                }
            }
        }
    });
}

fn retryable(e: &RecorderError) -> bool {
    matches!(
        e,
        RecorderError::Store(StoreError::Backend(_))
            | RecorderError::Spool(_)
            | RecorderError::Database(_)
    )
}

async fn finalize(inner: &Inner, id: &str) -> Result<(), RecorderError> {
    let recordings = inner.auth.recordings();
    let Some(rec) = recordings.get(id).await? else {
        return Ok(());
    };
    if matches!(rec.state, RecordingState::Ready | RecordingState::Failed) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    recordings
        .set_state(id, RecordingState::Finalizing, None)
        .await?;
    // Everything journalled is in the store once this returns (after a
    // crash: the spool's recovered entries too).
    inner.uploader.flush().await?;
    let flushed = started.elapsed();
    let mut fragments = recordings.fragments(id).await?;
    // A journalled fragment the store lacks (its spool entry was damaged
    // and set aside) becomes a gap rather than failing the recording: one
    // listing, not a request per fragment.
    let present: HashSet<String> = inner
        .objects
        .list(&paths::prefix(id))
        .await?
        .into_iter()
        .map(|l| l.path)
        .collect();
    let journalled = fragments.len();
    fragments.retain(|f| present.contains(&f.object));
    if fragments.len() < journalled {
        tracing::warn!(recording = %id, missing = journalled - fragments.len(), "recorder: journalled fragments missing from the store; finalising without them");
    }
    let Some(init_object) = rec.init_object.filter(|_| !fragments.is_empty()) else {
        tracing::info!(recording = %id, "recorder: nothing was recorded");
        recordings
            .set_state(id, RecordingState::Failed, Some("no media"))
            .await?;
        return Ok(());
    };
    let objects = &inner.objects;
    let corrupt = |reason: String| RecorderError::Corrupt {
        id: id.to_owned(),
        reason,
    };
    let init = objects.get(&init_object).await?;
    let mut indexes = Vec::with_capacity(fragments.len());
    for f in &fragments {
        let index = match serde_json::from_str::<FragmentIndex>(&f.index) {
            Ok(index) => index,
            // A journal without the index: read it from the fragment.
            Err(_) => {
                let bytes = objects.get(&f.object).await?;
                parse_fragment_index(&init, &bytes).map_err(|e| corrupt(e.to_string()))?
            }
        };
        indexes.push(index);
    }
    let plan = progressive(&init, &indexes).map_err(|e| corrupt(e.to_string()))?;

    let mp4 = paths::mp4(id);
    let mut writer = objects.writer(&mp4).await?;
    let copied: Result<(), RecorderError> = async {
        writer.write(&plan.header).await?;
        for c in &plan.copies {
            let object = &fragments[c.fragment].object;
            let bytes = objects
                .get_range(object, c.offset..c.offset + c.len)
                .await?;
            if bytes.len() as u64 != c.len {
                return Err(corrupt(format!("{object} is shorter than its index")));
            }
            writer.write(&bytes).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = copied {
        let _ = writer.abort().await;
        return Err(e);
    }
    writer.finish().await?;
    let copied = started.elapsed();

    let uris: Vec<&str> = fragments
        .iter()
        .map(|f| f.object.rsplit('/').next().unwrap_or(&f.object))
        .collect();
    let segments: Vec<Segment<'_>> = indexes
        .iter()
        .zip(&uris)
        .map(|(index, uri)| Segment {
            uri,
            duration: index.duration_secs(),
            independent: index.keyframe_start,
        })
        .collect();
    let init_uri = init_object.rsplit('/').next().unwrap_or(&init_object);
    let playlist = hls::playlist(&segments, init_uri, true);
    objects
        .put(&paths::playlist(id), Bytes::from(playlist))
        .await?;

    let thumbnail = paths::thumbnail(id);
    let thumbnail_object = match objects.size(&thumbnail).await {
        Ok(_) => Some(thumbnail),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let info = plan.info;
    recordings
        .finish(
            id,
            &Finished {
                duration_ms: info.duration.as_millis() as u64,
                size: info.size,
                codecs: info.codecs,
                width: info.width.unwrap_or(0),
                height: info.height.unwrap_or(0),
                thumbnail_object,
            },
        )
        .await?;
    for f in fragments.iter().filter(|f| !f.uploaded) {
        recordings.mark_uploaded(id, f.seq).await?;
    }
    // `recording.ready`: queued in the database like every webhook; a
    // failure to queue it is logged, the recording is ready regardless.
    if let Ok(Some(rec)) = recordings.get(id).await {
        let data = serde_json::json!({
            "stream": rec.stream,
            "recording": id,
            "broadcast": rec.broadcast,
            "duration_ms": rec.duration_ms,
            "url": format!("/vod/{id}"),
        });
        if let Err(e) = inner
            .auth
            .webhooks()
            .emit(lumen_auth::webhooks::EventType::RecordingReady, data)
            .await
        {
            tracing::warn!(recording = %id, error = %e, "recording.ready not queued");
        }
    }
    tracing::info!(
        recording = %id,
        duration_ms = info.duration.as_millis() as u64,
        size = info.size,
        fragments = fragments.len(),
        flush_ms = flushed.as_millis() as u64,
        mp4_ms = (copied - flushed).as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "recording ready"
    );
    Ok(())
}

/// Deletes a finished recording's objects, then its row.
pub(super) async fn delete(inner: &Inner, id: &str) -> Result<bool, RecorderError> {
    let recordings = inner.auth.recordings();
    let Some(rec) = recordings.get(id).await? else {
        return Ok(false);
    };
    if matches!(
        rec.state,
        RecordingState::Recording | RecordingState::Finalizing
    ) {
        return Err(RecorderError::InProgress(id.to_owned()));
    }
    // Listed rather than named: a fragment a crash left unjournalled goes
    // too.
    for object in inner.objects.list(&paths::prefix(id)).await? {
        inner.objects.delete(&object.path).await?;
    }
    Ok(recordings.delete(id).await?)
}

/// Every [`SWEEP_EVERY`] (first at once): deletes recordings that started
/// more than `days` ago.
pub(super) async fn retention(inner: Weak<Inner>, days: u32) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let cutoff = now_ms - i64::from(days) * 86_400_000;
        match inner.auth.recordings().older_than(cutoff).await {
            Ok(old) => {
                for r in old {
                    match delete(&inner, &r.id).await {
                        Ok(_) => {
                            tracing::info!(recording = %r.id, stream = %r.stream, days, "recording deleted by retention")
                        }
                        Err(e) => {
                            tracing::warn!(recording = %r.id, error = %e, "retention: cannot delete")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention: cannot list old recordings"),
        }
    }
}
