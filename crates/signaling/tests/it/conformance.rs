//! WHIP (RFC 9725) and WHEP conformance: every status code a client can meet,
//! against a real server on loopback, with offers from a real WebRTC stack.

use lumen_signaling::auth::{Role, Visibility};
use reqwest::{Client, Method, StatusCode};
use str0m::media::Direction;

use crate::support::{Server, detail, header, offer, post_sdp, post_sdp_as, problem};

#[tokio::test]
async fn whip_and_whep_walk_every_status_code() {
    let s = Server::start().await;
    let c = Client::new();
    // The publisher's credential: WHIP and its session need one.
    let token = s.publish_token();

    // OPTIONS: CORS preflight and Accept-Post.
    let r = c
        .request(Method::OPTIONS, s.url("/whip/cam"))
        .send()
        .await
        .expect("options");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "accept-post"), "application/sdp");
    assert_eq!(header(&r, "access-control-allow-origin"), "*");
    assert!(header(&r, "access-control-allow-methods").contains("POST"));

    // GET and HEAD on the endpoint: 405 with Allow.
    for m in [Method::GET, Method::HEAD, Method::PUT] {
        let r = c
            .request(m.clone(), s.url("/whip/cam"))
            .send()
            .await
            .expect("req");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{m}");
        assert!(header(&r, "allow").contains("POST"));
    }

    // WHEP before anyone publishes: 409 with Retry-After.
    let (_v0, voffer) = offer(Direction::RecvOnly);
    let r = post_sdp(&c, &s.url("/whep/cam"), voffer.to_sdp_string()).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(header(&r, "retry-after").parse::<u32>().is_ok());

    // Content type, size, syntax, and what cannot be served.
    let r = c
        .post(s.url("/whip/cam"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("v=0")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let d = detail(r).await;
    assert!(d.contains("application/sdp"), "{d}");
    let r = c
        .post(s.url("/whip/cam"))
        .bearer_auth(&token)
        .body("v=0")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = post_sdp_as(&c, &s.url("/whip/cam"), &token, "v=0\r\n".repeat(20_000)).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = post_sdp_as(
        &c,
        &s.url("/whip/cam"),
        &token,
        "this is not an offer".into(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let d = detail(r).await;
    assert!(d.starts_with("malformed SDP"), "{d}");
    let r = post_sdp_as(&c, &s.url("/whip/bad%2Fname"), &token, "v=0\r\n".into()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A publisher that only wants to receive has nothing to publish: 422.
    let (_r1, recv_only) = offer(Direction::RecvOnly);
    let r = post_sdp_as(&c, &s.url("/whip/cam"), &token, recv_only.to_sdp_string()).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!detail(r).await.is_empty(), "422 without a reason");

    // The publisher: 201 with everything RFC 9725 asks for.
    let (_p, poffer) = offer(Direction::SendOnly);
    let r = post_sdp_as(&c, &s.url("/whip/cam"), &token, poffer.to_sdp_string()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "content-type"), "application/sdp");
    let location = header(&r, "location").to_string();
    assert!(location.starts_with("/whip/cam/"), "{location}");
    let session_id = location.rsplit('/').next().expect("id");
    assert!(
        session_id.len() >= 31,
        "session id {session_id} has too few bits"
    );
    let etag = header(&r, "etag").to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong etag: {etag}"
    );
    let links: Vec<_> = r.headers().get_all("link").iter().collect();
    assert!(
        links.iter().any(|l| l.to_str().unwrap_or("") == "<stun:stun.example.net:3478>; rel=\"ice-server\""),
        "{links:?}"
    );
    let answer = r.text().await.expect("answer");
    assert!(answer.starts_with("v=0"));
    assert!(answer.contains("a=ice-lite"), "lumen is ICE-lite");
    assert!(answer.contains("typ host"));

    // A second publisher on the same name: 409.
    let (_p2, poffer2) = offer(Direction::SendOnly);
    let r = post_sdp_as(&c, &s.url("/whip/cam"), &token, poffer2.to_sdp_string()).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // The name is taken (409 above), but the stream is not listed: it is
    // live once its publisher connects, which it never does here.
    let list = c.get(s.url("/api/streams")).send().await.expect("list");
    let list = list.text().await.expect("body");
    assert!(!list.contains("\"name\":\"cam\""), "{list}");

    // Session resource: OPTIONS, 405s, PATCH preconditions.
    let sess = s.url(&location);
    let r = c
        .request(Method::OPTIONS, &sess)
        .send()
        .await
        .expect("options");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(&r, "accept-patch"),
        "application/trickle-ice-sdpfrag"
    );
    for m in [Method::GET, Method::HEAD, Method::POST, Method::PUT] {
        let r = c.request(m.clone(), &sess).send().await.expect("req");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{m}");
        assert!(header(&r, "allow").contains("PATCH"));
    }
    let frag = "a=ice-ufrag:zzzz\r\na=ice-pwd:0123456789abcdefghijklmn\r\n\
                a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 6000 typ host\r\n";
    let patch = |ct: &'static str, if_match: Option<&str>, body: String| {
        let mut b = c
            .patch(&sess)
            .bearer_auth(&token)
            .header("content-type", ct)
            .body(body);
        if let Some(m) = if_match {
            b = b.header("if-match", m.to_string());
        }
        b.send()
    };
    let r = patch("application/sdp", Some(&etag), frag.into())
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = patch("application/trickle-ice-sdpfrag", None, frag.into())
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::PRECONDITION_REQUIRED);
    let r = patch(
        "application/trickle-ice-sdpfrag",
        Some("\"stale\""),
        frag.into(),
    )
    .await
    .expect("req");
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);

    // Trickle with the current ETag: 204. A broken candidate: 400.
    let trickle = "a=mid:0\r\na=candidate:2 1 udp 2130706431 127.0.0.1 6001 typ host\r\n";
    let r = patch(
        "application/trickle-ice-sdpfrag",
        Some(&etag),
        trickle.into(),
    )
    .await
    .expect("req");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = patch(
        "application/trickle-ice-sdpfrag",
        Some(&etag),
        "a=candidate:garbage\r\n".into(),
    )
    .await
    .expect("req");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // ICE restart: If-Match "*", new credentials in: 200, a new fragment and a new ETag.
    let r = patch("application/trickle-ice-sdpfrag", Some("*"), frag.into())
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "content-type"),
        "application/trickle-ice-sdpfrag"
    );
    let new_etag = header(&r, "etag").to_string();
    assert_ne!(new_etag, etag);
    let body = r.text().await.expect("body");
    assert!(
        body.contains("a=ice-ufrag:") && body.contains("a=ice-pwd:"),
        "{body}"
    );
    assert!(body.contains("typ host"));
    // The old ETag is stale now.
    let r = patch(
        "application/trickle-ice-sdpfrag",
        Some(&etag),
        trickle.into(),
    )
    .await
    .expect("req");
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);

    // A viewer now gets 201 on WHEP; its session lives under /whep.
    let (_v, voffer) = offer(Direction::RecvOnly);
    let r = post_sdp(&c, &s.url("/whep/cam"), voffer.to_sdp_string()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let wloc = header(&r, "location").to_string();
    assert!(wloc.starts_with("/whep/cam/"));
    assert!(header(&r, "etag").starts_with('"'));
    // A WHEP session is not a WHIP one.
    let wrong = wloc.replacen("/whep/", "/whip/", 1);
    let r = c.delete(s.url(&wrong)).send().await.expect("req");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c.delete(s.url(&wloc)).send().await.expect("req");
    assert_eq!(r.status(), StatusCode::OK);

    // DELETE ends the publisher: 200, then 404, and the stream is gone.
    let r = c
        .delete(&sess)
        .bearer_auth(&token)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .delete(&sess)
        .bearer_auth(&token)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = patch("application/trickle-ice-sdpfrag", Some("*"), frag.into())
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let list = c.get(s.url("/api/streams")).send().await.expect("list");
    assert_eq!(list.text().await.expect("body"), "[]");
    let r = post_sdp(
        &c,
        &s.url("/whep/cam"),
        offer(Direction::RecvOnly).1.to_sdp_string(),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "the stream ended with its publisher"
    );

    // Metrics are served in the Prometheus text format.
    let m = c.get(s.url("/metrics")).send().await.expect("metrics");
    let m = m.text().await.expect("body");
    assert!(m.contains("lumen_datagrams_dropped_total{reason=\"malformed\"}"));
    assert!(m.contains("lumen_sessions_created_total 2"), "{m}");
    s.stop().await;
}

/// Secure by default: WHIP needs a credential for its stream (`401` with a
/// `Bearer` challenge and problem details without one, `403` with another
/// stream's), WHEP of a public stream needs none (of a private one it
/// does), and a session is changed or ended only with the credential that
/// created it.
#[tokio::test]
async fn whip_needs_a_credential_and_whep_of_a_public_stream_does_not() {
    let s = Server::start().await;
    let c = Client::new();
    let (_p, poffer) = offer(Direction::SendOnly);
    let poffer = poffer.to_sdp_string();

    // No Authorization: 401 with WWW-Authenticate: Bearer, as problem+json.
    let r = post_sdp(&c, &s.url("/whip/cam"), poffer.clone()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = header(&r, "www-authenticate").to_string();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let p = problem(r).await;
    assert_eq!(p["status"], 401, "{p}");
    assert!(
        p["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "401 without a reason: {p}"
    );
    // Not a Bearer, or a Bearer that is nothing of this server's: 401 too.
    let r = c
        .post(s.url("/whip/cam"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .header("content-type", "application/sdp")
        .body(poffer.clone())
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").starts_with("Bearer"));
    let r = post_sdp_as(&c, &s.url("/whip/cam"), "not-a-credential", poffer.clone()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    problem(r).await;

    // A stream key, and a token, for another stream: 403.
    let auth = s.auth();
    let alice = auth
        .create_user("alice", "a long enough password", Role::Broadcaster)
        .await
        .expect("user");
    auth.create_stream(&alice, "other", Visibility::Public, "")
        .await
        .expect("stream");
    auth.create_stream(&alice, "secret", Visibility::Private, "")
        .await
        .expect("private stream");
    let key = auth.create_key("other", "test").await.expect("key").secret;
    for credential in [key.clone(), s.token("publish:other")] {
        let r = post_sdp_as(&c, &s.url("/whip/cam"), &credential, poffer.clone()).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(!detail(r).await.is_empty(), "403 without a reason");
    }

    // The key publishes its own stream.
    let r = post_sdp_as(&c, &s.url("/whip/other"), &key, poffer.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let publisher = s.url(header(&r, "location"));

    // WHEP of the public stream: no credential needed, and the session it
    // makes can be ended without one.
    let (_v, voffer) = offer(Direction::RecvOnly);
    let r = post_sdp(&c, &s.url("/whep/other"), voffer.to_sdp_string()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let viewer = s.url(header(&r, "location"));
    let r = c.delete(&viewer).send().await.expect("req");
    assert_eq!(r.status(), StatusCode::OK);
    // A viewer that came with a credential: its session's extensions
    // (event streams, layer choice) and its DELETE need that credential.
    let viewer_token = s.token("subscribe:other");
    let r = post_sdp_as(
        &c,
        &s.url("/whep/other"),
        &viewer_token,
        offer(Direction::RecvOnly).1.to_sdp_string(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let viewer = s.url(header(&r, "location"));
    for ext in ["sse", "layer"] {
        let post = |token: Option<&str>| {
            let mut b = c
                .post(format!("{viewer}/{ext}"))
                .header("content-type", "application/json")
                .body("{}");
            if let Some(t) = token {
                b = b.bearer_auth(t);
            }
            b.send()
        };
        let r = post(None).await.expect("req");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{ext}");
        problem(r).await;
        let r = post(Some(&key)).await.expect("req");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{ext}");
        problem(r).await;
    }
    let r = c
        .post(format!("{viewer}/layer"))
        .bearer_auth(&viewer_token)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.delete(&viewer).send().await.expect("req");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .delete(&viewer)
        .bearer_auth(&viewer_token)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::OK);
    // Of a private stream it is: 401.
    let r = post_sdp(
        &c,
        &s.url("/whep/secret"),
        offer(Direction::RecvOnly).1.to_sdp_string(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    problem(r).await;

    // The publisher's session: without a credential 401, with another
    // (even one that may publish everywhere) 403, with its own 200.
    let trickle = "a=mid:0\r\na=candidate:2 1 udp 2130706431 127.0.0.1 6001 typ host\r\n";
    let r = c
        .patch(&publisher)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .header("if-match", "*")
        .body(trickle)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").starts_with("Bearer"));
    problem(r).await;
    let r = c.delete(&publisher).send().await.expect("req");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    problem(r).await;
    let r = c
        .delete(&publisher)
        .bearer_auth(s.publish_token())
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    problem(r).await;
    let r = c
        .delete(&publisher)
        .bearer_auth(&key)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn the_web_client_is_served() {
    let s = Server::start().await;
    let c = Client::new();
    for (path, ct) in [
        ("/", "text/html"),
        ("/broadcast", "text/html"),
        ("/watch/cam", "text/html"),
        ("/static/lumen.js", "text/javascript"),
        ("/static/style.css", "text/css"),
    ] {
        let r = c.get(s.url(path)).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(header(&r, "content-type").starts_with(ct), "{path}");
    }
    let r = c.get(s.url("/static/nope.js")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}
