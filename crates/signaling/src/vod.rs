//! `/vod/…`: recordings served from the object store, opened on the fly
//! when they are sealed.
//!
//! - `/vod/{id}`: the recording's page; `/vod/{id}.mp4`: the playable MP4,
//!   with HTTP Range (`206`, `Accept-Ranges`, `Content-Range`, `416`) and
//!   conditional requests (`ETag`, `If-None-Match` → `304`, `If-Range`).
//! - `/vod/{id}/index.m3u8`, `/vod/{id}/init.mp4`, `/vod/{id}/NNNNNNNN.m4s`:
//!   the CMAF HLS presentation of its fragments; `/vod/{id}/thumbnail.jpg`.
//!
//! A private stream's recordings need the rights to watch the stream: the
//! session cookie, a Bearer token, or `?token=` (share links; a `<video>`
//! element sends no header). Anyone else gets `404`, as for the stream.

use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lumen_auth::recordings::{Recording, RecordingState};
use lumen_auth::{Action, Principal, Visibility};
use lumen_recorder::paths;
use lumen_recorder::store::{Objects, StoreError};
use serde::Deserialize;

use crate::authn::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Bytes read from the store per piece of a response body: a Range
/// request on a sealed object opens only the chunks it covers.
const PIECE: u64 = 1024 * 1024;

type St = State<Arc<AppState>>;

#[derive(Deserialize)]
pub(crate) struct TokenQuery {
    #[serde(default)]
    token: Option<String>,
}

/// `/vod/{name}`: the page of recording `name`, or its MP4 when `name` is
/// `{id}.mp4`.
pub(crate) async fn vod(
    State(st): St,
    Path(name): Path<String>,
    Query(q): Query<TokenQuery>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(id) = name.strip_suffix(".mp4") else {
        return Ok(crate::api::page("vod.html").await);
    };
    let rec = watchable(&st, id, &caller, q.token.as_deref()).await?;
    if rec.state != RecordingState::Ready {
        return Err(ApiError::NotFound(format!(
            "recording {id} is not ready ({})",
            state_name(rec.state)
        )));
    }
    let objects = objects(&st)?;
    let size = u64::try_from(rec.size).unwrap_or(0);
    let etag = format!("\"{}-{size}\"", rec.id);
    serve(
        objects,
        paths::mp4(&rec.id),
        size,
        "video/mp4",
        &etag,
        &headers,
    )
    .await
}

/// `/vod/{id}/{file}`: the HLS presentation and the thumbnail.
pub(crate) async fn vod_file(
    State(st): St,
    Path((id, file)): Path<(String, String)>,
    Query(q): Query<TokenQuery>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rec = watchable(&st, &id, &caller, q.token.as_deref()).await?;
    let objects = objects(&st)?;
    let (path, content_type) = match file.as_str() {
        "index.m3u8" if rec.state == RecordingState::Ready => {
            (paths::playlist(&rec.id), "application/vnd.apple.mpegurl")
        }
        "init.mp4" => (paths::init(&rec.id), "video/mp4"),
        "thumbnail.jpg" => match &rec.thumbnail_object {
            Some(p) => (p.clone(), "image/jpeg"),
            None => {
                return Err(ApiError::NotFound(format!(
                    "recording {id} has no thumbnail"
                )));
            }
        },
        f => match paths::fragment_seq(f) {
            Some(seq) => (paths::fragment(&rec.id, seq), "video/iso.segment"),
            None => return Err(ApiError::NotFound(format!("no {f:?} in recording {id}"))),
        },
    };
    let size = objects
        .size(&path)
        .await
        .map_err(|e| store_error(&path, e))?;
    let etag = format!("\"{}-{}-{size}\"", rec.id, file);
    serve(objects, path, size, content_type, &etag, &headers).await
}

/// `/api/streams/{stream}/thumbnail.jpg`: the stream's live thumbnail (a
/// recent keyframe as JPEG, refreshed about every 10 s), to whoever may
/// see the stream; `404` when there is none (not live, VP8, or not yet).
pub(crate) async fn live_thumbnail(
    State(st): St,
    Path(stream): Path<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    crate::request::check_stream_name(&stream)?;
    let none = || ApiError::NotFound("no thumbnail of this stream".to_string());
    may_watch(&st, &stream, &caller, None)
        .await
        .map_err(|_| none())?;
    let jpeg = st
        .recorder
        .as_ref()
        .and_then(|r| r.live_thumbnail(&stream))
        .ok_or_else(none)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, max-age=10"),
        ],
        jpeg,
    )
        .into_response())
}

/// The recording, if `caller` (or `token`) may watch its stream.
async fn watchable(
    st: &AppState,
    id: &str,
    caller: &Caller,
    token: Option<&str>,
) -> Result<Recording, ApiError> {
    let not_found = || ApiError::NotFound(format!("no recording {id}"));
    let rec = st.auth.recordings().get(id).await?.ok_or_else(not_found)?;
    may_watch(st, &rec.stream, caller, token)
        .await
        .map_err(|_| not_found())?;
    Ok(rec)
}

/// Whether the caller may watch `stream`'s recordings: anyone for a public
/// or unlisted stream, who may watch it for a private one.
pub(crate) async fn may_watch(
    st: &AppState,
    stream: &str,
    caller: &Caller,
    token: Option<&str>,
) -> Result<(), ApiError> {
    let private = st
        .auth
        .stream(stream)
        .await?
        .is_some_and(|s| s.visibility == Visibility::Private);
    if !private {
        return Ok(());
    }
    let from_query;
    let principal = match (&caller.principal, token) {
        (Principal::Anonymous, Some(t)) => {
            from_query = st.auth.principal(t).await?;
            &from_query
        }
        (p, _) => p,
    };
    st.auth
        .authorize(principal, Action::Subscribe, stream)
        .await
        .map(|_| ())
        .map_err(ApiError::from)
}

fn objects(st: &AppState) -> Result<&Objects, ApiError> {
    st.recorder
        .as_ref()
        .map(|r| r.objects())
        .ok_or_else(|| ApiError::NotFound("recording is off on this server".to_string()))
}

fn state_name(s: RecordingState) -> &'static str {
    match s {
        RecordingState::Recording => "still recording",
        RecordingState::Finalizing => "being finalised",
        RecordingState::Ready => "ready",
        RecordingState::Failed => "failed",
    }
}

/// A store error as the API says it: a missing object is `404`, one that
/// cannot be opened (its key is not configured, it is damaged) a plain
/// `500` saying so, anything else `503`.
pub(crate) fn store_error(path: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(_) => ApiError::NotFound(format!("{path} is not in the store")),
        StoreError::Sealed { .. } => {
            tracing::error!(%path, error = %e, "a stored object cannot be opened");
            ApiError::CannotOpen(format!("{path} cannot be opened: {e}"))
        }
        e => {
            tracing::warn!(%path, error = %e, "object store");
            ApiError::Unavailable
        }
    }
}

/// Answers a GET of object `path` (`size` plaintext bytes): the whole of
/// it, one range of it, or `304`/`416`.
async fn serve(
    objects: &Objects,
    path: String,
    size: u64,
    content_type: &'static str,
    etag: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let etag_value = HeaderValue::from_str(etag).map_err(|_| ApiError::Unavailable)?;
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    // If-Range with another validator: the whole object, as RFC 9110 says.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if if_range_ok => match parse_range(r, size) {
            RangeAsked::One(r) => Some(r),
            RangeAsked::Ignore => None,
            RangeAsked::Unsatisfiable => {
                return Ok((
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [
                        (header::CONTENT_RANGE, format!("bytes */{size}")),
                        (header::ACCEPT_RANGES, "bytes".to_string()),
                    ],
                )
                    .into_response());
            }
        },
        _ => None,
    };
    let (status, span) = match &range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.clone()),
        None => (StatusCode::OK, 0..size),
    };
    // The first piece is read before the answer starts, so that an object
    // that cannot be opened is an error, not a broken body.
    let first_end = span.end.min(span.start + PIECE);
    let first = if span.is_empty() {
        bytes::Bytes::new()
    } else {
        objects
            .get_range(&path, span.start..first_end)
            .await
            .map_err(|e| store_error(&path, e))?
    };
    let rest = futures_util::stream::try_unfold(
        (objects.clone(), path.clone(), first_end, span.end),
        |(objects, path, at, end)| async move {
            if at >= end {
                return Ok(None);
            }
            let to = end.min(at + PIECE);
            let piece = objects.get_range(&path, at..to).await.map_err(|e| {
                tracing::warn!(%path, error = %e, "a body stopped midway");
                std::io::Error::other(e.to_string())
            })?;
            Ok::<_, std::io::Error>(Some((piece, (objects, path, to, end))))
        },
    );
    let body = futures_util::StreamExt::chain(
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }),
        rest,
    );
    let mut res = Response::new(Body::from_stream(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, etag_value);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(span.end - span.start),
    );
    if let Some(r) = range
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(res)
}

/// What a `Range` header asks of an object of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeAsked {
    /// One satisfiable range.
    One(Range<u64>),
    /// Several ranges, another unit, or a malformed header: the whole
    /// object (a server may ignore Range, RFC 9110 §14.2).
    Ignore,
    /// A well-formed range that starts past the end: `416`.
    Unsatisfiable,
}

fn parse_range(header: &str, size: u64) -> RangeAsked {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeAsked::Ignore;
    };
    if spec.contains(',') {
        return RangeAsked::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsked::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (a.is_empty(), num(a), num(b)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                RangeAsked::Unsatisfiable
            } else {
                RangeAsked::One(size.saturating_sub(n)..size)
            }
        }
        (false, Some(start), end) if b.is_empty() || end.is_some() => {
            if start >= size {
                return RangeAsked::Unsatisfiable;
            }
            match end {
                Some(e) if e < start => RangeAsked::Ignore,
                Some(e) => RangeAsked::One(start..e.saturating_add(1).min(size)),
                None => RangeAsked::One(start..size),
            }
        }
        _ => RangeAsked::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::{RangeAsked, parse_range};

    #[test]
    fn ranges_as_rfc_9110_reads_them() {
        use RangeAsked::*;
        assert_eq!(parse_range("bytes=0-99", 1000), One(0..100));
        assert_eq!(parse_range("bytes=900-", 1000), One(900..1000));
        assert_eq!(parse_range("bytes=900-5000", 1000), One(900..1000));
        assert_eq!(parse_range("bytes=-100", 1000), One(900..1000));
        assert_eq!(parse_range("bytes=-5000", 1000), One(0..1000));
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        for ignored in [
            "bytes=0-1,5-9",
            "items=0-1",
            "bytes=9-3",
            "bytes=x-",
            "bytes=",
            "bytes=-",
            "0-1",
        ] {
            assert_eq!(parse_range(ignored, 1000), Ignore, "{ignored}");
        }
    }
}
