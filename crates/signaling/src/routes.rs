//! The URL space: WHIP and WHEP endpoints and sessions, the WHEP extensions,
//! the REST API, metrics and the web client, with CORS on every answer.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::{MethodRouter, get, patch, post};

use crate::authn::Caller;
use crate::endpoints::{self, ENDPOINT_METHODS, SESSION_METHODS};
use crate::request::{ClientAddr, not_allowed};
use crate::sessions::Kind;
use crate::state::AppState;
use crate::{api, whep_ext};

type St = State<Arc<AppState>>;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/whip/{stream}", endpoint(Kind::Whip))
        .route("/whep/{stream}", endpoint(Kind::Whep))
        .route("/whip/{stream}/{session}", session(Kind::Whip))
        .route("/whep/{stream}/{session}", session(Kind::Whep))
        .route("/whep/{stream}/{session}/sse", whep_ext::sse_routes())
        .route(
            "/whep/{stream}/{session}/sse/{events}",
            whep_ext::event_stream_routes(),
        )
        .route("/whep/{stream}/{session}/layer", whep_ext::layer_routes())
        .route("/api/streams", get(api::list_streams))
        .route("/api/streams/{stream}", get(api::one_stream))
        .route("/metrics", get(api::metrics))
        .route("/readyz", get(crate::relays::readyz))
        .route("/internal/v1/relay/{stream}", crate::relays::relay_routes())
        .route(
            "/internal/v1/relay/{stream}/{link}",
            crate::relays::link_routes(),
        )
        .route("/", get(|| api::page("index.html")))
        .route("/broadcast", get(|| api::page("broadcast.html")))
        .route("/watch/{stream}", get(|| api::page("watch.html")))
        .route("/setup", get(|| api::page("setup.html")))
        .route("/login", get(|| api::page("login.html")))
        .route("/signup", get(|| api::page("signup.html")))
        .route("/dashboard", get(|| api::page("dashboard.html")))
        .route("/admin", get(|| api::page("admin.html")))
        .route("/moderation", get(|| api::page("moderation.html")))
        .route("/cluster", get(|| api::page("cluster.html")))
        .route("/vod/{name}", get(crate::vod::vod))
        .route("/vod/{id}/{file}", get(crate::vod::vod_file))
        .route(
            "/api/streams/{stream}/thumbnail.jpg",
            get(crate::vod::live_thumbnail),
        )
        .route("/static/{file}", get(api::static_file))
        .merge(crate::v1::routes())
        .layer(axum::middleware::map_response(cors))
        .with_state(state)
}

/// `/{whip,whep}/{stream}`: POST an offer; OPTIONS; 405 for the rest
/// (RFC 9725: GET, HEAD and PUT on an endpoint are 405, with Allow).
fn endpoint(kind: Kind) -> MethodRouter<Arc<AppState>> {
    post(
        move |State(st): St,
              Path(stream): Path<String>,
              ClientAddr(client): ClientAddr,
              headers: HeaderMap,
              body: Body| { endpoints::create(st, kind, stream, client, headers, body) },
    )
    .options(|State(st): St| async move { endpoints::endpoint_options(&st) })
    .fallback(|| async { not_allowed(ENDPOINT_METHODS) })
}

/// `/{whip,whep}/{stream}/{session}`: PATCH, DELETE, OPTIONS; 405 for the
/// rest.
fn session(kind: Kind) -> MethodRouter<Arc<AppState>> {
    patch(
        move |State(st): St, Path(path): Path<(String, String)>, headers: HeaderMap, body: Body| {
            endpoints::patch(st, kind, path, headers, body)
        },
    )
    .delete(
        move |State(st): St, Path(path): Path<(String, String)>, caller: Caller| {
            endpoints::delete(st, kind, path, caller)
        },
    )
    .options(|| async { endpoints::session_options() })
    .fallback(|| async { not_allowed(SESSION_METHODS) })
}

async fn cors(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Post, Accept-Patch, Retry-After"),
    );
    res
}

#[cfg(test)]
mod tests;
