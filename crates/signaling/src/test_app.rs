//! The handler tests' app: the router through `Router::oneshot`, no HTTP
//! socket, a node whose workers run in this process on loopback, an
//! account store in a temporary directory with a broadcaster who owns
//! `cam` and one key of it.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use axum::response::Response;
use lumen_node::{Node, NodeConfig};
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, RtcConfig};
use tokio::sync::watch;
use tower::ServiceExt;

use lumen_auth::{Auth, AuthConfig, Role, Visibility};

use crate::hub::{self, Hub};
use crate::sessions::Sessions;
use crate::state::AppState;

pub(crate) struct App {
    router: Router,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) node: Node,
    pub(crate) auth: Auth,
    /// A stream key of `cam`, sent with every request to `/whip/…`
    /// unless the request names its own Authorization.
    pub(crate) key: String,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// The app over the router `router` makes of the state.
pub(crate) async fn app(router: fn(Arc<AppState>) -> Router) -> App {
    let mut node = Node::start(&NodeConfig {
        rtc_addr: "127.0.0.1:0".parse().expect("addr"),
        workers: 2,
        ..NodeConfig::new()
    })
    .expect("node starts");
    let (stop, stop_rx) = watch::channel(false);
    let sessions = Arc::new(Sessions::default());
    let hub = Arc::new(Hub::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let auth = Auth::open(AuthConfig::new(dir.path()))
        .await
        .expect("account store");
    let owner = auth
        .create_user("owner", "owner's password", Role::Broadcaster)
        .await
        .expect("user");
    auth.create_stream(&owner, "cam", Visibility::Public, "")
        .await
        .expect("stream");
    let key = auth.create_key("cam", "test").await.expect("key").secret;
    let state = Arc::new(AppState::new(
        node.handle(),
        auth.clone(),
        sessions.clone(),
        hub.clone(),
        stop_rx,
        &["stun:stun.example.net:3478".to_string()],
    ));
    if let Some(events) = node.take_events() {
        tokio::spawn(hub::follow(events, sessions.clone(), hub));
    }
    App {
        router: router(state),
        sessions,
        node,
        auth,
        key,
        _stop: stop,
        _dir: dir,
    }
}

pub(crate) fn offer(dir: Direction) -> String {
    let mut rtc = RtcConfig::new().build(Instant::now());
    rtc.add_local_candidate(
        Candidate::host("127.0.0.1:5000".parse().expect("addr"), "udp").expect("candidate"),
    );
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    let (offer, _pending) = api.apply().expect("offer");
    offer.to_sdp_string()
}

impl App {
    pub(crate) async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if uri.starts_with("/whip/") && !headers.iter().any(|(k, _)| *k == "authorization") {
            req = req.header("authorization", format!("Bearer {}", self.key));
        }
        let req = req.body(Body::from(body.to_string())).expect("request");
        self.router.clone().oneshot(req).await.expect("infallible")
    }

    pub(crate) async fn post_sdp(&self, uri: &str, sdp: &str) -> Response {
        self.send(
            Method::POST,
            uri,
            &[("content-type", "application/sdp")],
            sdp,
        )
        .await
    }
}

pub(crate) fn header(r: &Response, name: header::HeaderName) -> &str {
    r.headers()
        .get(&name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

pub(crate) async fn text(r: Response) -> String {
    let b = axum::body::to_bytes(r.into_body(), 1 << 20)
        .await
        .expect("body");
    String::from_utf8(b.to_vec()).expect("utf-8")
}
