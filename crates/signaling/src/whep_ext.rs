//! The WHEP extensions of draft-ietf-wish-whep on a WHEP session
//! `/whep/{stream}/{session}`:
//!
//! - `POST …/sse` with an optional JSON array of event names (all of them
//!   when the body is empty) creates an event stream: `201 Created`,
//!   `Location: …/sse/{id}`. `GET` on it is a `text/event-stream` (see
//!   [`crate::events`] for the events); `DELETE` ends it (`404` after).
//! - `POST …/layer` with `{"mediaId": "0", "encodingId": "h"}` pins the
//!   viewer's video to that simulcast encoding; `{}` returns it to automatic.
//!   `200` with the viewer's layer state (the `layer` event's JSON). `GET …/layer`
//!   answers that state too (lumen's addition), and so is `"maxWidth"` /
//!   `"maxHeight"`: the player's size in device pixels, above which automatic
//!   choice does not go (each POST sets both the pin and the size).
//!
//! An unknown session is `404`, a body that is not the JSON described `400`,
//! a request lumen understands but cannot apply (another m-line, an SVC
//! layer, a rid the publisher does not send) `422`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use lumen_sfu::LayerRequest;
use serde::Deserialize;
use serde_json::Value;

use axum::routing::{MethodRouter, get, post};
use lumen_node::NodeError;

use crate::authn::{Caller, may_touch};
use crate::error::ApiError;
use crate::events::{EventSet, EventStream, Feed, layer_json};
use crate::request::{
    ClientAddr, not_allowed, options, random_hex, read_text, require_content_type,
};
use crate::sessions::{Kind, SessionEntry};
use crate::state::AppState;

/// Event streams one session may hold; creating one more drops the oldest,
/// so a player that re-creates its stream on every reconnect cannot pile
/// them up.
const MAX_EVENT_STREAMS: usize = 4;

const SSE_METHODS: &str = "OPTIONS, POST";
const EVENT_STREAM_METHODS: &str = "OPTIONS, GET, DELETE";
const LAYER_METHODS: &str = "OPTIONS, GET, POST";
const REQUEST_HEADERS: &str = "Authorization, Content-Type";

/// `…/sse`: create an event stream.
pub(crate) fn sse_routes() -> MethodRouter<Arc<AppState>> {
    post(sse_create)
        .options(|| async { options(SSE_METHODS, REQUEST_HEADERS) })
        .fallback(|| async { not_allowed(SSE_METHODS) })
}

/// `…/sse/{events}`: follow or end an event stream.
pub(crate) fn event_stream_routes() -> MethodRouter<Arc<AppState>> {
    get(sse_get)
        .delete(sse_delete)
        .options(|| async { options(EVENT_STREAM_METHODS, REQUEST_HEADERS) })
        .fallback(|| async { not_allowed(EVENT_STREAM_METHODS) })
}

/// `…/layer`: choose or read the viewer's video layer.
pub(crate) fn layer_routes() -> MethodRouter<Arc<AppState>> {
    post(layer_post)
        .get(layer_get)
        .options(|| async { options(LAYER_METHODS, REQUEST_HEADERS) })
        .fallback(|| async { not_allowed(LAYER_METHODS) })
}

/// `POST /whep/{stream}/{session}/sse`
async fn sse_create(
    State(st): State<Arc<AppState>>,
    Path((stream, id)): Path<(String, String)>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let entry = st.lookup(Kind::Whep, &stream, &id)?;
    may_touch(&caller, &entry.holder)?;
    let text = read_text(&headers, body, st.body_timeout).await?;
    let events = if text.trim().is_empty() {
        EventSet::all()
    } else {
        require_content_type(&headers, "application/json")?;
        let names: Vec<String> = serde_json::from_str(&text).map_err(|e| {
            ApiError::BadRequest(format!("the body must be a JSON array of event names: {e}"))
        })?;
        EventSet::from_names(&names)
    };
    let es = random_hex(16);
    let created = st.sessions.update(&id, |e| {
        if e.event_streams.len() >= MAX_EVENT_STREAMS {
            e.event_streams.remove(0);
        }
        e.event_streams.push(EventStream {
            id: es.clone(),
            events,
        });
    });
    if !created {
        return Err(no_session());
    }
    let location = format!("/whep/{stream}/{id}/sse/{es}");
    let mut res = (StatusCode::CREATED, axum::Json(events.names())).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

/// `GET /whep/{stream}/{session}/sse/{events}`
async fn sse_get(
    State(st): State<Arc<AppState>>,
    Path((stream, id, es)): Path<(String, String, String)>,
    ClientAddr(client): ClientAddr,
) -> Result<Response, ApiError> {
    let entry = st.lookup(Kind::Whep, &stream, &id)?;
    let events = event_stream(&entry, &es)?.events;
    // Held for as long as the response streams.
    let reader = st
        .readers
        .acquire(&st.limits, &id, client)
        .inspect_err(|_| crate::limits::count(&st.refusals.event_readers))?;
    // Watches first, then the worker's snapshot: whatever changes after the
    // snapshot wakes the feed, so nothing is missed in between.
    let stream_rx = st.hub.watch_stream(&stream);
    let layer_rx = st.hub.watch_viewer(entry.session).ok_or_else(no_session)?;
    let mut initial = st
        .node
        .viewer_state(entry.session, &stream)
        .await?
        .ok_or_else(no_session)?;
    // The stream as the whole node serves it (viewers on every worker).
    if let Some(merged) = stream_rx.borrow().clone() {
        initial.stream = Some(merged);
    }
    let feed = Feed {
        events,
        media_id: media_id(&entry),
        stream_rx,
        layer_rx,
        stop: st.stop.clone(),
        moved: st.cluster.moved.subscribe(),
        stream: stream.clone(),
        reader,
        still_exists: {
            let sessions = st.sessions.clone();
            Box::new(move || {
                sessions
                    .get(&id)
                    .is_some_and(|e| e.event_streams.iter().any(|s| s.id == es))
            })
        },
        over_budget: {
            let transcoder = st.transcoder.clone();
            let stream = stream.clone();
            Box::new(move || transcoder.as_ref().is_some_and(|t| t.over_budget(&stream)))
        },
    };
    let mut res = Sse::new(feed.into_stream(initial))
        .keep_alive(KeepAlive::default())
        .into_response();
    // Proxies that buffer responses would hold the events back.
    res.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

/// `DELETE /whep/{stream}/{session}/sse/{events}`
async fn sse_delete(
    State(st): State<Arc<AppState>>,
    Path((stream, id, es)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let entry = st.lookup(Kind::Whep, &stream, &id)?;
    event_stream(&entry, &es)?;
    st.sessions
        .update(&id, |e| e.event_streams.retain(|s| s.id != es));
    Ok(StatusCode::OK.into_response())
}

/// `POST /whep/{stream}/{session}/layer`
async fn layer_post(
    State(st): State<Arc<AppState>>,
    Path((stream, id)): Path<(String, String)>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let entry = st.lookup(Kind::Whep, &stream, &id)?;
    may_touch(&caller, &entry.holder)?;
    require_content_type(&headers, "application/json")?;
    let text = read_text(&headers, body, st.body_timeout).await?;
    let (request, render_size) = parse_layer_request(&text, &entry)?;
    let state = st
        .node
        .set_layer(entry.session, &stream, request, render_size)
        .await
        .map_err(|e| match e {
            e @ NodeError::UnknownRid { .. } => ApiError::Unprocessable(e.to_string()),
            e => ApiError::from(e),
        })?;
    if let Some(layer) = &state {
        // Feeds show a new request at once, even before media flows and
        // the SFU has a layer to report.
        st.hub.viewer_layer(entry.session, layer.clone());
    }
    Ok(match state {
        Some(l) => axum::Json(layer_json(&l, &media_id(&entry))).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// `GET /whep/{stream}/{session}/layer`
async fn layer_get(
    State(st): State<Arc<AppState>>,
    Path((stream, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let entry = st.lookup(Kind::Whep, &stream, &id)?;
    let state = st
        .node
        .viewer_state(entry.session, &stream)
        .await?
        .ok_or_else(no_session)?;
    let layer = state
        .layer
        .ok_or_else(|| ApiError::Unprocessable("this session receives no video".to_string()))?;
    Ok(axum::Json(layer_json(&layer, &media_id(&entry))).into_response())
}

/// The body of a layer selection request (draft-ietf-wish-whep).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayerBody {
    /// The m-line index (or, leniently, the mid) of the video to apply it to.
    media_id: Option<MediaId>,
    /// The rid to pin; absent or null for automatic selection.
    encoding_id: Option<String>,
    spatial_layer_id: Option<u32>,
    temporal_layer_id: Option<u32>,
    /// Caps on SVC layers: nothing to cap with simulcast, so they are accepted
    /// and have no effect.
    #[allow(dead_code)]
    max_spatial_layer_id: Option<u32>,
    #[allow(dead_code)]
    max_temporal_layer_id: Option<u32>,
    /// lumen's addition: the player's size in device pixels.
    max_width: Option<u32>,
    max_height: Option<u32>,
}

/// The largest player size taken seriously (8K is 7680 × 4320).
const MAX_RENDER_DIMENSION: u32 = 16_384;

/// The draft says a string; a number is the same index written sloppily.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum MediaId {
    Text(String),
    Number(u64),
}

fn parse_layer_request(
    text: &str,
    entry: &SessionEntry,
) -> Result<(LayerRequest, Option<(u32, u32)>), ApiError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object such as {\"encodingId\": \"h\"}, or {} for automatic"
                .to_string(),
        ));
    }
    let body: LayerBody = serde_json::from_value(value)
        .map_err(|e| ApiError::BadRequest(format!("bad layer selection: {e}")))?;
    let Some((index, mid)) = &entry.video else {
        return Err(ApiError::Unprocessable(
            "this session receives no video".to_string(),
        ));
    };
    if let Some(m) = &body.media_id {
        let ok = match m {
            MediaId::Text(t) => *t == index.to_string() || mid.as_deref() == Some(t.as_str()),
            MediaId::Number(n) => *n == *index as u64,
        };
        if !ok {
            return Err(ApiError::Unprocessable(format!(
                "mediaId {m:?} is not this session's video m-line (\"{index}\")"
            )));
        }
    }
    if body.spatial_layer_id.is_some_and(|l| l != 0)
        || body.temporal_layer_id.is_some_and(|l| l != 0)
    {
        return Err(ApiError::Unprocessable(
            "lumen selects simulcast encodings only; spatialLayerId and temporalLayerId must be 0"
                .to_string(),
        ));
    }
    let render_size = match (body.max_width, body.max_height) {
        (None, None) => None,
        (Some(w), Some(h))
            if (1..=MAX_RENDER_DIMENSION).contains(&w)
                && (1..=MAX_RENDER_DIMENSION).contains(&h) =>
        {
            Some((w, h))
        }
        (w, h) => {
            return Err(ApiError::BadRequest(format!(
                "maxWidth and maxHeight come together, each 1 to {MAX_RENDER_DIMENSION} \
                 (got {w:?} and {h:?})"
            )));
        }
    };
    let request = match body.encoding_id {
        None => LayerRequest::Auto,
        Some(rid) if valid_rid(&rid) => LayerRequest::Rid(rid),
        Some(rid) => {
            return Err(ApiError::BadRequest(format!(
                "encodingId {rid:?} is not a rid (1 to 255 letters, digits, '-' or '_')"
            )));
        }
    };
    Ok((request, render_size))
}

/// RFC 8851 `rid-syntax`.
fn valid_rid(rid: &str) -> bool {
    !rid.is_empty()
        && rid.len() <= 255
        && rid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The key of the `layers` event and the `mediaId` of the `layer` event.
fn media_id(entry: &SessionEntry) -> String {
    entry
        .video
        .as_ref()
        .map_or_else(|| "0".to_string(), |(i, _)| i.to_string())
}

fn event_stream<'a>(entry: &'a SessionEntry, id: &str) -> Result<&'a EventStream, ApiError> {
    entry
        .event_streams
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ApiError::NotFound("no such event stream".to_string()))
}

fn no_session() -> ApiError {
    ApiError::NotFound("no such session".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumen_sfu::PeerId;

    fn entry(video: Option<(usize, Option<String>)>) -> SessionEntry {
        SessionEntry {
            kind: Kind::Whep,
            stream: "cam".into(),
            session: lumen_node::SessionRef {
                worker: 0,
                peer: PeerId(1),
            },
            etag: "e".into(),
            remote_ufrag: "u".into(),
            video,
            event_streams: Vec::new(),
            client: None,
            grant: Default::default(),
            holder: crate::authn::Holder::Anyone,
            chat: Default::default(),
        }
    }

    fn status(r: Result<(LayerRequest, Option<(u32, u32)>), ApiError>) -> u16 {
        r.err().map_or(200, |e| e.status().as_u16())
    }

    #[test]
    fn layer_requests_parse_like_the_draft() {
        let e = entry(Some((1, Some("v".into()))));
        assert_eq!(
            parse_layer_request(r#"{"mediaId":"1","encodingId":"h"}"#, &e)
                .ok()
                .map(|r| r.0),
            Some(LayerRequest::Rid("h".into()))
        );
        assert_eq!(
            parse_layer_request("{}", &e).ok(),
            Some((LayerRequest::Auto, None))
        );
        // lumen's player size comes with either choice, both sides at once.
        assert_eq!(
            parse_layer_request(r#"{"maxWidth":640,"maxHeight":360}"#, &e).ok(),
            Some((LayerRequest::Auto, Some((640, 360))))
        );
        assert_eq!(status(parse_layer_request(r#"{"maxWidth":640}"#, &e)), 400);
        assert_eq!(
            status(parse_layer_request(r#"{"maxWidth":0,"maxHeight":360}"#, &e)),
            400
        );
        assert_eq!(
            status(parse_layer_request(
                r#"{"maxWidth":-1,"maxHeight":360}"#,
                &e
            )),
            400
        );
        assert_eq!(
            parse_layer_request(r#"{"mediaId":"v","encodingId":null}"#, &e)
                .ok()
                .map(|r| r.0),
            Some(LayerRequest::Auto)
        );
        assert_eq!(
            parse_layer_request(r#"{"mediaId":1,"encodingId":"l"}"#, &e)
                .ok()
                .map(|r| r.0),
            Some(LayerRequest::Rid("l".into()))
        );
        assert_eq!(status(parse_layer_request("{", &e)), 400);
        assert_eq!(status(parse_layer_request("[]", &e)), 400);
        assert_eq!(status(parse_layer_request(r#"{"encodingId":3}"#, &e)), 400);
        assert_eq!(
            status(parse_layer_request(r#"{"encodingId":"a b"}"#, &e)),
            400
        );
        assert_eq!(status(parse_layer_request(r#"{"mediaId":"0"}"#, &e)), 422);
        assert_eq!(
            status(parse_layer_request(r#"{"spatialLayerId":1}"#, &e)),
            422
        );
        assert_eq!(status(parse_layer_request("{}", &entry(None))), 422);
    }
}
