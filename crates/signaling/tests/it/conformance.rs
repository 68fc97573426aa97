//! WHIP (RFC 9725) and WHEP conformance: every status code a client can meet,
//! against a real server on loopback, with offers from a real WebRTC stack.

use reqwest::{Client, Method, StatusCode};
use str0m::media::Direction;

use crate::support::{Server, header, offer, post_sdp};

#[tokio::test]
async fn whip_and_whep_walk_every_status_code() {
    let s = Server::start().await;
    let c = Client::new();

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
        .header("content-type", "text/plain")
        .body("v=0")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(r.text().await.expect("body").contains("application/sdp"));
    let r = c
        .post(s.url("/whip/cam"))
        .body("v=0")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = post_sdp(&c, &s.url("/whip/cam"), "v=0\r\n".repeat(20_000)).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = post_sdp(&c, &s.url("/whip/cam"), "this is not an offer".into()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = r.text().await.expect("body");
    assert!(body.starts_with("malformed SDP"), "{body}");
    let r = post_sdp(&c, &s.url("/whip/bad%2Fname"), "v=0\r\n".into()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A publisher that only wants to receive has nothing to publish: 422.
    let (_r1, recv_only) = offer(Direction::RecvOnly);
    let r = post_sdp(&c, &s.url("/whip/cam"), recv_only.to_sdp_string()).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        !r.text().await.expect("body").is_empty(),
        "422 without a reason"
    );

    // The publisher: 201 with everything RFC 9725 asks for.
    let (_p, poffer) = offer(Direction::SendOnly);
    let r = post_sdp(&c, &s.url("/whip/cam"), poffer.to_sdp_string()).await;
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
    let r = post_sdp(&c, &s.url("/whip/cam"), poffer2.to_sdp_string()).await;
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
        let mut b = c.patch(&sess).header("content-type", ct).body(body);
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
    let r = c.delete(&sess).send().await.expect("req");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.delete(&sess).send().await.expect("req");
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
