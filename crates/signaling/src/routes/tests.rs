//! The handlers through `Router::oneshot`: no HTTP socket, a node whose
//! workers run in this process on loopback.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::Response;
use lumen_node::{Node, NodeConfig};
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, RtcConfig};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::hub::{self, Hub};
use crate::sessions::Sessions;
use crate::state::AppState;

struct App {
    router: Router,
    sessions: Arc<Sessions>,
    node: Node,
    _stop: watch::Sender<bool>,
}

async fn app() -> App {
    let mut node = Node::start(&NodeConfig {
        rtc_addr: "127.0.0.1:0".parse().expect("addr"),
        workers: 2,
        ..NodeConfig::new()
    })
    .expect("node starts");
    let (stop, stop_rx) = watch::channel(false);
    let sessions = Arc::new(Sessions::default());
    let hub = Arc::new(Hub::default());
    let state = Arc::new(AppState::new(
        node.handle(),
        sessions.clone(),
        hub.clone(),
        stop_rx,
        &["stun:stun.example.net:3478".to_string()],
    ));
    if let Some(events) = node.take_events() {
        tokio::spawn(hub::follow(events, sessions.clone(), hub));
    }
    App {
        router: super::router(state),
        sessions,
        node,
        _stop: stop,
    }
}

fn offer(dir: Direction) -> String {
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
    async fn send(
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
        let req = req.body(Body::from(body.to_string())).expect("request");
        self.router.clone().oneshot(req).await.expect("infallible")
    }

    async fn post_sdp(&self, uri: &str, sdp: &str) -> Response {
        self.send(
            Method::POST,
            uri,
            &[("content-type", "application/sdp")],
            sdp,
        )
        .await
    }
}

fn header(r: &Response, name: header::HeaderName) -> &str {
    r.headers()
        .get(&name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

async fn text(r: Response) -> String {
    let b = axum::body::to_bytes(r.into_body(), 1 << 20)
        .await
        .expect("body");
    String::from_utf8(b.to_vec()).expect("utf-8")
}

#[tokio::test]
async fn a_whip_session_is_created_patched_and_deleted() {
    let app = app().await;
    let res = app.post_sdp("/whip/cam", &offer(Direction::SendOnly)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(header(&res, header::CONTENT_TYPE), "application/sdp");
    let location = header(&res, header::LOCATION).to_string();
    assert!(location.starts_with("/whip/cam/"), "{location}");
    assert_eq!(location.len(), "/whip/cam/".len() + 32);
    let etag = header(&res, header::ETAG).to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    assert!(header(&res, header::LINK).contains("rel=\"ice-server\""));
    assert!(text(res).await.starts_with("v=0"));
    assert_eq!(app.sessions.len(), 1);

    // A second publisher for the name is refused.
    let res = app.post_sdp("/whip/cam", &offer(Direction::SendOnly)).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);

    let frag = "a=candidate:1 1 udp 2130706431 127.0.0.1 5001 typ host\r\n";
    let trickle = [("content-type", "application/trickle-ice-sdpfrag")];
    let res = app.send(Method::PATCH, &location, &trickle, frag).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_REQUIRED);
    let stale = [trickle[0], ("if-match", "\"0000\"")];
    let res = app.send(Method::PATCH, &location, &stale, frag).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    // If-Match compares strongly: the same tag marked weak is stale.
    let weak_tag = format!("W/{etag}");
    let weak = [trickle[0], ("if-match", weak_tag.as_str())];
    let res = app.send(Method::PATCH, &location, &weak, frag).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    let fresh = [trickle[0], ("if-match", etag.as_str())];
    let res = app.send(Method::PATCH, &location, &fresh, frag).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let bad = "a=candidate:not a candidate\r\n";
    let res = app.send(Method::PATCH, &location, &fresh, bad).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    // An ICE restart answers the server's new credentials and a new ETag.
    let restart = "a=ice-ufrag:newU\r\na=ice-pwd:newpasswordnewpassword00\r\n";
    let wildcard = [trickle[0], ("if-match", "*")];
    let res = app.send(Method::PATCH, &location, &wildcard, restart).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_ne!(header(&res, header::ETAG), etag);
    let body = text(res).await;
    assert!(
        body.contains("a=ice-ufrag:") && body.contains("typ host"),
        "{body}"
    );

    let res = app.send(Method::DELETE, &location, &[], "").await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.send(Method::DELETE, &location, &[], "").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.sessions.len(), 0);
    // The name is free again.
    let res = app.post_sdp("/whip/cam", &offer(Direction::SendOnly)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    app.node.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_precise_statuses() {
    let app = app().await;
    let res = app
        .send(
            Method::POST,
            "/whip/cam",
            &[("content-type", "text/plain")],
            "v=0",
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(text(res).await.contains("application/sdp"));
    let res = app.post_sdp("/whip/cam", "this is not SDP").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = app
        .post_sdp("/whip/cam", &"a".repeat(crate::request::MAX_BODY + 1))
        .await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let res = app
        .post_sdp("/whip/bad%20name", &offer(Direction::SendOnly))
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // Path-dot names would make session URLs that resolve elsewhere.
    for name in [".", ".."] {
        let res = app
            .post_sdp(&format!("/whip/{name}"), &offer(Direction::SendOnly))
            .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{name}");
    }
    // Nobody publishes it: a viewer is told to come back.
    let res = app.post_sdp("/whep/cam", &offer(Direction::RecvOnly)).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(header(&res, header::RETRY_AFTER), "2");
    let res = app
        .send(
            Method::PATCH,
            "/whep/cam/00000000000000000000000000000000",
            &[],
            "",
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.sessions.len(), 0, "no refusal left a session");
    app.node.shutdown().await;
}

#[tokio::test]
async fn methods_and_options_follow_rfc_9725() {
    let app = app().await;
    for path in ["/whip/cam", "/whep/cam"] {
        let res = app.send(Method::GET, path, &[], "").await;
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(header(&res, header::ALLOW), "OPTIONS, POST");
        let res = app.send(Method::OPTIONS, path, &[], "").await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            header(&res, "accept-post".parse().expect("name")),
            "application/sdp"
        );
        assert_eq!(header(&res, header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
        assert!(header(&res, header::LINK).contains("stun:stun.example.net:3478"));
    }
    let res = app.send(Method::PUT, "/whep/cam/abc", &[], "").await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&res, header::ALLOW), "OPTIONS, PATCH, DELETE");
    let res = app.send(Method::OPTIONS, "/whep/cam/abc", &[], "").await;
    assert_eq!(
        header(&res, "accept-patch".parse().expect("name")),
        "application/trickle-ice-sdpfrag"
    );
    app.node.shutdown().await;
}

#[tokio::test]
async fn a_whep_session_advertises_its_extensions_and_serves_them() {
    let app = app().await;
    let res = app.post_sdp("/whip/cam", &offer(Direction::SendOnly)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app.post_sdp("/whep/cam", &offer(Direction::RecvOnly)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = header(&res, header::LOCATION).to_string();
    let links: Vec<&str> = res
        .headers()
        .get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        links
            .iter()
            .any(|l| l.contains(&format!("<{location}/sse>"))
                && l.contains("server-sent-events")
                && l.contains("events=\"active,inactive,layers,viewercount,reconnect,layer\""))
    );
    assert!(
        links
            .iter()
            .any(|l| l.contains(&format!("<{location}/layer>")))
    );

    let res = app
        .send(Method::POST, &format!("{location}/sse"), &[], "")
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(header(&res, header::LOCATION).starts_with(&format!("{location}/sse/")));
    let json = [("content-type", "application/json")];
    let res = app
        .send(
            Method::POST,
            &format!("{location}/layer"),
            &json,
            r#"{"encodingId":"x y"}"#,
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = app
        .send(Method::POST, &format!("{location}/layer"), &json, "{}")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(text(res).await.contains("\"requested\":null"));

    // The REST API sees the stream, but neither live nor watched: its
    // publisher and viewer never connect here, and half-open sessions are
    // not counted.
    let res = app.send(Method::GET, "/api/streams/cam", &[], "").await;
    assert_eq!(res.status(), StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&text(res).await).expect("json");
    assert_eq!(v["live"], false);
    assert_eq!(v["viewers"], 0);
    let res = app.send(Method::GET, "/metrics", &[], "").await;
    let metrics = text(res).await;
    assert!(
        metrics.contains("lumen_stream_viewers{stream=\"cam\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("lumen_rtp_packets_mirrored_total"));
    app.node.shutdown().await;
}
