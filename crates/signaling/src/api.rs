//! The REST API, metrics and the embedded web client: what is not WHIP or
//! WHEP.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use lumen_auth::{Action, Role, Stream, Visibility};
use serde::Serialize;

use crate::authn::Caller;
use crate::error::ApiError;
use crate::request::check_stream_name;
use crate::state::AppState;
use crate::{prom, web};

#[derive(Serialize)]
struct StreamJson {
    name: String,
    live: bool,
    viewers: usize,
    /// The video layers, best first.
    layers: Vec<LayerJson>,
}

#[derive(Serialize)]
struct LayerJson {
    rid: Option<String>,
    active: bool,
    bitrate_bps: u64,
    width: u32,
    height: u32,
    fps: f64,
}

impl StreamJson {
    fn from_info(s: lumen_sfu::StreamInfo) -> Self {
        StreamJson {
            name: s.name,
            live: s.live,
            viewers: s.viewers,
            layers: s
                .layers
                .into_iter()
                .map(|l| LayerJson {
                    rid: l.rid,
                    active: l.active,
                    bitrate_bps: l.bitrate_bps,
                    width: l.width,
                    height: l.height,
                    fps: (l.fps * 10.0).round() / 10.0,
                })
                .collect(),
        }
    }
}

/// Live streams the caller may see listed: public ones, and for a
/// logged-in user also those they may watch whatever the visibility (their
/// own; every stream for moderators and admins). Unlisted and private
/// streams are not shown to others.
pub(crate) async fn list_streams(
    State(st): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let hidden: HashMap<String, Stream> = st
        .auth
        .all_streams()
        .await?
        .into_iter()
        .filter(|s| s.visibility != Visibility::Public)
        .map(|s| (s.name.clone(), s))
        .collect();
    let streams: Vec<StreamJson> = st
        .node
        .streams()
        .await
        .into_iter()
        .filter(|s| s.live)
        .filter(|s| match hidden.get(&s.name) {
            None => true,
            Some(record) => sees_everything(&caller, record),
        })
        .map(StreamJson::from_info)
        .collect();
    Ok(axum::Json(streams).into_response())
}

/// Whether the caller may watch `record` whatever its visibility.
fn sees_everything(caller: &Caller, record: &Stream) -> bool {
    caller
        .user()
        .is_some_and(|u| u.id == record.owner_id || matches!(u.role, Role::Admin | Role::Moderator))
}

pub(crate) async fn one_stream(
    State(st): State<Arc<AppState>>,
    Path(stream): Path<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    check_stream_name(&stream)?;
    // A private stream is told only to who may watch it (`404` to others,
    // as for a stream that does not exist).
    if let Some(record) = st.auth.stream(&stream).await?
        && record.visibility == Visibility::Private
        && st
            .auth
            .authorize(&caller.principal, Action::Subscribe, &stream)
            .await
            .is_err()
    {
        return Err(ApiError::NotFound("no such stream".to_string()));
    }
    // Its viewers may be on every worker.
    let s = st
        .node
        .streams()
        .await
        .into_iter()
        .find(|s| s.name == stream)
        .map(StreamJson::from_info)
        .unwrap_or(StreamJson {
            name: stream,
            live: false,
            viewers: 0,
            layers: Vec::new(),
        });
    Ok(axum::Json(s).into_response())
}

pub(crate) async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let snaps = st.node.snapshot().await;
    let mut body = prom::render(&snaps);
    prom::render_http(&mut body, &st);
    if let Some(t) = &st.transcoder {
        prom::render_transcoder(&mut body, &t.stats());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// A page of the web client. Pages may carry a viewer token in their URL
/// (`/watch/{stream}?token=…`) or a setup code: no `Referer` takes either
/// elsewhere, and no other site frames them.
pub(crate) async fn page(name: &'static str) -> Response {
    match web::file(name) {
        Some((ct, body)) => (
            [
                (header::CONTENT_TYPE, ct),
                (header::REFERRER_POLICY, "no-referrer"),
                (header::X_FRAME_OPTIONS, "DENY"),
            ],
            body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub(crate) async fn static_file(Path(name): Path<String>) -> Response {
    match web::file(&name) {
        Some((ct, body)) => ([(header::CONTENT_TYPE, ct)], body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}
