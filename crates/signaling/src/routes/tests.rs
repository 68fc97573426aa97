//! The handlers through `Router::oneshot` (see `crate::test_app`).

use axum::http::{Method, StatusCode, header};
use lumen_auth::{Scopes, Visibility};
use str0m::media::Direction;

use crate::test_app::{app, header, offer, text};

#[tokio::test]
async fn a_whip_session_is_created_patched_and_deleted() {
    let app = app(super::router).await;
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
    let app = app(super::router).await;
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
    let app = app(super::router).await;
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
    let app = app(super::router).await;
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

#[tokio::test]
async fn publishing_needs_the_stream_key_or_a_publish_token() {
    let app = app(super::router).await;
    let sdp = [("content-type", "application/sdp")];
    let o = offer(Direction::SendOnly);
    // No credential: 401 with a Bearer challenge, before the body counts.
    let res = app
        .send(
            Method::POST,
            "/whip/cam",
            &[sdp[0], ("authorization", "")],
            &o,
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&res, header::WWW_AUTHENTICATE).starts_with("Bearer"));
    assert_eq!(
        header(&res, header::CONTENT_TYPE),
        "application/problem+json"
    );
    let other_key = {
        let owner = app.auth.user_by_name("owner").await.expect("owner");
        app.auth
            .create_stream(&owner, "other", Visibility::Public, "")
            .await
            .expect("stream");
        app.auth.create_key("other", "").await.expect("key").secret
    };
    let t = |scope: &str| {
        app.auth
            .mint(
                "svc",
                &Scopes::parse(scope).expect("scope"),
                std::time::Duration::from_secs(60),
            )
            .expect("token")
    };
    let refused = [
        (format!("Bearer {other_key}"), StatusCode::FORBIDDEN),
        ("Bearer lk_notakey".to_string(), StatusCode::UNAUTHORIZED),
        ("Basic b3duZXI6cHc=".to_string(), StatusCode::UNAUTHORIZED),
        (
            format!("Bearer {}", t("subscribe:cam")),
            StatusCode::FORBIDDEN,
        ),
        (
            format!("Bearer {}", t("publish:other")),
            StatusCode::FORBIDDEN,
        ),
        (
            "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".to_string(),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (auth, want) in &refused {
        let res = app
            .send(
                Method::POST,
                "/whip/cam",
                &[sdp[0], ("authorization", auth)],
                &o,
            )
            .await;
        assert_eq!(res.status(), *want, "{auth}");
    }
    assert_eq!(app.sessions.len(), 0, "no refusal left a session");

    // A publish token works, and only it may end its session.
    let token = format!("Bearer {}", t("publish:cam"));
    let res = app
        .send(
            Method::POST,
            "/whip/cam",
            &[sdp[0], ("authorization", &token)],
            &o,
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = header(&res, header::LOCATION).to_string();
    // (the default credential of `send` is the stream key: another one)
    let res = app.send(Method::DELETE, &location, &[], "").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = app
        .send(Method::DELETE, &location, &[("authorization", "")], "")
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let trickle = [
        ("content-type", "application/trickle-ice-sdpfrag"),
        ("if-match", "*"),
    ];
    let res = app
        .send(
            Method::PATCH,
            &location,
            &trickle,
            "a=end-of-candidates\r\n",
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.sessions.len(), 1);
    let res = app
        .send(Method::DELETE, &location, &[("authorization", &token)], "")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    app.node.shutdown().await;
}

#[tokio::test]
async fn private_streams_refuse_anonymous_viewers() {
    let app = app(super::router).await;
    let res = app.post_sdp("/whip/cam", &offer(Direction::SendOnly)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    app.auth
        .update_stream("cam", Some(Visibility::Private), None)
        .await
        .expect("update");
    let res = app.post_sdp("/whep/cam", &offer(Direction::RecvOnly)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // The stream key publishes; it does not watch a private stream.
    let key = format!("Bearer {}", app.key);
    let sdp = [("content-type", "application/sdp")];
    let o = offer(Direction::RecvOnly);
    let res = app
        .send(
            Method::POST,
            "/whep/cam",
            &[sdp[0], ("authorization", &key)],
            &o,
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let token = app
        .auth
        .mint(
            "friend",
            &Scopes::parse("subscribe:cam").expect("scope"),
            std::time::Duration::from_secs(60),
        )
        .expect("token");
    let bearer = format!("Bearer {token}");
    let res = app
        .send(
            Method::POST,
            "/whep/cam",
            &[sdp[0], ("authorization", &bearer)],
            &o,
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // Its session URL's extensions answer its creator only.
    let location = header(&res, header::LOCATION).to_string();
    let json = [("content-type", "application/json")];
    let res = app
        .send(Method::POST, &format!("{location}/layer"), &json, "{}")
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app
        .send(
            Method::POST,
            &format!("{location}/layer"),
            &[json[0], ("authorization", &bearer)],
            "{}",
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    app.node.shutdown().await;
}

#[tokio::test]
async fn pages_keep_tokens_in_their_urls_to_themselves() {
    let app = app(super::router).await;
    for path in [
        "/",
        "/watch/cam?token=secret",
        "/setup?code=c",
        "/dashboard",
    ] {
        let res = app.send(Method::GET, path, &[], "").await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header(&res, header::REFERRER_POLICY),
            "no-referrer",
            "{path}"
        );
        assert_eq!(header(&res, header::X_FRAME_OPTIONS), "DENY", "{path}");
    }
    app.node.shutdown().await;
}
