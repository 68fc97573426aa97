//! `/api/v1/recordings…` and `/api/v1/streams/{name}/recording`: past
//! broadcasts, their chat replay, deleting them, and starting or stopping
//! a recording while live (the `on_demand` policy). The recorder itself is
//! `lumen_recorder::Recorder`; the rows are `lumen_auth::recordings`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lumen_auth::chat::ReplayRecord;
use lumen_auth::recordings::{MAX_PAGE, Recording};
use lumen_auth::{Role, Visibility};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::{BadRequest, Conflict, Forbidden, NotFound, Unauthorized, Unavailable};
use super::{ApiPath, ApiQuery, St, acting_user, json};
use crate::authn::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use crate::vod::may_watch;

/// A recording as the API shows it: its row, and where to play it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RecordingJson {
    #[serde(flatten)]
    recording: Recording,
    /// The stream's title when the recording was listed.
    title: String,
    /// The recording's page.
    page_url: String,
    /// The playable MP4 (`null` until ready).
    mp4_url: Option<String>,
    /// The CMAF HLS playlist (`null` until ready).
    hls_url: Option<String>,
    /// Its thumbnail (`null` without one).
    thumbnail_url: Option<String>,
}

async fn view(st: &AppState, r: Recording) -> RecordingJson {
    let title = match st.auth.stream(&r.stream).await {
        Ok(Some(s)) => s.title,
        _ => String::new(),
    };
    let ready = r.state == lumen_auth::recordings::RecordingState::Ready;
    RecordingJson {
        title,
        page_url: format!("/vod/{}", r.id),
        mp4_url: ready.then(|| format!("/vod/{}.mp4", r.id)),
        hls_url: ready.then(|| format!("/vod/{}/index.m3u8", r.id)),
        thumbnail_url: r
            .thumbnail_object
            .as_ref()
            .map(|_| format!("/vod/{}/thumbnail.jpg", r.id)),
        recording: r,
    }
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    limit: Option<u32>,
}

/// Recordings, newest first: of one stream (`?stream=`) or of every stream
/// the caller may watch; page on with `?before=` the last one's
/// `started_at`.
#[utoipa::path(
    get,
    path = "/api/v1/recordings",
    operation_id = "list_recordings",
    tag = "recordings",
    security((), ("bearer" = []), ("session" = [])),
    params(
        ("stream" = Option<String>, Query, pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$", description = "Only this stream's"),
        ("before" = Option<i64>, Query, description = "Only those started before this time (ms since the epoch)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "How many (default 20)"),
    ),
    responses(
        (status = 200, description = "The recordings", body = Vec<RecordingJson>),
        (status = 400, response = BadRequest),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn list(
    State(st): St,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.map_or(20, |n| n as usize);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit is 1 to {MAX_PAGE}")));
    }
    if let Some(s) = &q.stream {
        lumen_auth::scope::is_stream_name(s)
            .then_some(())
            .ok_or_else(|| ApiError::BadRequest(lumen_auth::scope::STREAM_NAME_RULE.to_string()))?;
    }
    let rows = st
        .auth
        .recordings()
        .list(q.stream.as_deref(), q.before, limit)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        // Private streams' recordings only to who may watch them; without a
        // stream filter, unlisted ones are not listed either.
        let visibility = st.auth.stream(&r.stream).await?.map(|s| s.visibility);
        if visibility == Some(Visibility::Unlisted) && q.stream.is_none() {
            continue;
        }
        if may_watch(&st, &r.stream, &caller, None).await.is_err() {
            continue;
        }
        out.push(view(&st, r).await);
    }
    Ok(json(StatusCode::OK, &out))
}

/// One recording (`404` when there is none, or its stream is private and
/// not the caller's to watch).
#[utoipa::path(
    get,
    path = "/api/v1/recordings/{id}",
    operation_id = "get_recording",
    tag = "recordings",
    security((), ("bearer" = []), ("session" = [])),
    params(("id" = String, Path, description = "The recording (`rec_…`)")),
    responses(
        (status = 200, description = "The recording", body = RecordingJson),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn one(
    State(st): St,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let r = visible(&st, &id, &caller).await?;
    Ok(json(StatusCode::OK, &view(&st, r).await))
}

async fn visible(st: &AppState, id: &str, caller: &Caller) -> Result<Recording, ApiError> {
    let not_found = || ApiError::NotFound(format!("no recording {id}"));
    let r = st.auth.recordings().get(id).await?.ok_or_else(not_found)?;
    may_watch(st, &r.stream, caller, None)
        .await
        .map_err(|_| not_found())?;
    Ok(r)
}

/// Deletes a recording and its objects: the stream's owner and admins.
#[utoipa::path(
    delete,
    path = "/api/v1/recordings/{id}",
    operation_id = "delete_recording",
    tag = "recordings",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("id" = String, Path, description = "The recording (`rec_…`)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn remove(
    State(st): St,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller)?;
    let r = visible(&st, &id, &caller).await?;
    owns(&st, &user, &r.stream).await?;
    let recorder = st
        .recorder
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("recording is off on this server".to_string()))?;
    let deleted = recorder.delete(&r.id).await.map_err(|e| match e {
        e @ lumen_recorder::RecorderError::InProgress(_) => ApiError::Conflict(e.to_string()),
        e => {
            tracing::warn!(recording = %r.id, error = %e, "deleting a recording");
            ApiError::Unavailable
        }
    })?;
    if !deleted {
        return Err(ApiError::NotFound(format!("no recording {id}")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub(super) struct ChatQuery {
    #[serde(default)]
    from_ms: Option<u64>,
    #[serde(default)]
    limit: Option<u32>,
}

/// The chat of the recording's broadcast, in the order it was sent, without
/// deleted messages: each message with `media_ms`, its time since the
/// broadcast went live. Page on with `?from_ms=` the last one's + 1.
#[utoipa::path(
    get,
    path = "/api/v1/recordings/{id}/chat",
    operation_id = "recording_chat",
    tag = "recordings",
    security((), ("bearer" = []), ("session" = [])),
    params(
        ("id" = String, Path, description = "The recording (`rec_…`)"),
        ("from_ms" = Option<u64>, Query, description = "From this far into the broadcast (ms)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "How many (default 1000)"),
    ),
    responses(
        (status = 200, description = "The messages", body = Vec<ReplayRecord>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn chat(
    State(st): St,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ChatQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.map_or(lumen_auth::chat::MAX_REPLAY, |n| n as usize);
    if !(1..=lumen_auth::chat::MAX_REPLAY).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit is 1 to {}",
            lumen_auth::chat::MAX_REPLAY
        )));
    }
    let r = visible(&st, &id, &caller).await?;
    let Some(broadcast) = r.broadcast else {
        return Ok(json(StatusCode::OK, &Vec::<ReplayRecord>::new()));
    };
    let messages = st
        .auth
        .chat()
        .replay(&broadcast, q.from_ms.unwrap_or(0), limit)
        .await?;
    Ok(json(StatusCode::OK, &messages))
}

/// Whether a stream is being recorded, and by which recording.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RecordingStatus {
    /// The recording being made, if any.
    recording: Option<String>,
}

/// Starts recording a live stream now (the `on_demand` policy; under
/// `always` a live stream is recorded already): the stream's owner and
/// admins. `409` when it is not live or already recorded.
#[utoipa::path(
    post,
    path = "/api/v1/streams/{name}/recording",
    operation_id = "start_recording",
    tag = "recordings",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("name" = String, Path, description = "The stream")),
    responses(
        (status = 201, description = "Recording", body = RecordingStatus),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn start(
    State(st): St,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller)?;
    owns(&st, &user, &name).await?;
    let recorder = st
        .recorder
        .as_ref()
        .ok_or_else(|| ApiError::Conflict("recording is off on this server".to_string()))?;
    let id = recorder
        .start_recording(&name)
        .await
        .map_err(recorder_error)?;
    Ok(json(
        StatusCode::CREATED,
        &RecordingStatus {
            recording: Some(id),
        },
    ))
}

/// Stops recording a stream; the recording is finalised in the background.
#[utoipa::path(
    delete,
    path = "/api/v1/streams/{name}/recording",
    operation_id = "stop_recording",
    tag = "recordings",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("name" = String, Path, description = "The stream")),
    responses(
        (status = 204, description = "Stopped"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn stop(
    State(st): St,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller)?;
    owns(&st, &user, &name).await?;
    let recorder = st
        .recorder
        .as_ref()
        .ok_or_else(|| ApiError::Conflict("recording is off on this server".to_string()))?;
    recorder
        .stop_recording(&name)
        .await
        .map_err(recorder_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn recorder_error(e: lumen_recorder::RecorderError) -> ApiError {
    use lumen_recorder::RecorderError as E;
    match e {
        e @ (E::NotLive(_)
        | E::AlreadyRecording { .. }
        | E::NotRecording(_)
        | E::PolicyOff
        | E::ShuttingDown) => ApiError::Conflict(e.to_string()),
        e => {
            tracing::warn!(error = %e, "the recorder");
            ApiError::Unavailable
        }
    }
}

/// The stream's owner or an admin (`404` for anyone else, as elsewhere).
/// An admin also acts on a stream without a record (one a service token
/// publishes), which `streams::owned` does not let through.
async fn owns(st: &AppState, user: &lumen_auth::User, name: &str) -> Result<(), ApiError> {
    if user.role == Role::Admin {
        return Ok(());
    }
    super::streams::owned(st, user, name).await.map(|_| ())
}
