//! The REST API, metrics and the embedded web client: what is not WHIP or
//! WHEP.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

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

pub(crate) async fn list_streams(State(st): State<Arc<AppState>>) -> Response {
    let streams: Vec<StreamJson> = st
        .node
        .streams()
        .await
        .into_iter()
        .filter(|s| s.live)
        .map(StreamJson::from_info)
        .collect();
    axum::Json(streams).into_response()
}

pub(crate) async fn one_stream(
    State(st): State<Arc<AppState>>,
    Path(stream): Path<String>,
) -> Result<Response, ApiError> {
    check_stream_name(&stream)?;
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
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

pub(crate) async fn page(name: &'static str) -> Response {
    match web::file(name) {
        Some((ct, body)) => ([(header::CONTENT_TYPE, ct)], body).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub(crate) async fn static_file(Path(name): Path<String>) -> Response {
    match web::file(&name) {
        Some((ct, body)) => ([(header::CONTENT_TYPE, ct)], body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}
