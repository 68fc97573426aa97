//! One client must not starve the others: slow or idle connections are
//! closed, connections past the cap get `503` at once, and each client's
//! session creations, sessions and event-stream readers are bounded with
//! `429` and `Retry-After` (the total with `503`).

use std::time::Duration;

use lumen_signaling::Limits;
use reqwest::{Client, StatusCode};
use str0m::media::Direction;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Server, offer, post_sdp, post_sdp_as};

/// Reads until the server closes the connection (or resets it); what it
/// sent before, as text. Bounded: a server that never closes fails the test.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_while_others_are_served() {
    let server = Server::start_with(|c| c.header_timeout = Duration::from_secs(1)).await;
    // Headers one byte at a time, then nothing more.
    let mut slow = TcpStream::connect(server.addr()).await.expect("connect");
    slow.write_all(b"GET /api/streams HTTP/1.1\r\nHo")
        .await
        .expect("write");
    // Connected, never a byte.
    let mut silent = TcpStream::connect(server.addr()).await.expect("connect");
    // One request, then idle on keep-alive.
    let mut idle = TcpStream::connect(server.addr()).await.expect("connect");
    idle.write_all(b"GET /api/streams HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    // Meanwhile another client is served at once.
    let r = Client::new()
        .get(server.url("/api/streams"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    // Closed after the timeout (hyper may say 408 first).
    for (name, conn) in [("slow", &mut slow), ("silent", &mut silent)] {
        let said = read_until_closed(conn).await;
        assert!(
            said.is_empty() || said.starts_with("HTTP/1.1 408"),
            "{name}: {said}"
        );
    }
    let answered = read_until_closed(&mut idle).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408() {
    let server = Server::start_with(|c| c.body_timeout = Duration::from_secs(1)).await;
    // With a valid credential: the body is read only after it is checked.
    let token = server.publish_token();
    let mut s = TcpStream::connect(server.addr()).await.expect("connect");
    s.write_all(
        format!(
            "POST /whip/cam HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
             Authorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\nv=0\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let answer = read_until_closed(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn connections_past_the_cap_get_503_at_once() {
    let server = Server::start_with(|c| c.max_connections = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.addr()).await.expect("connect"));
    }
    // Let the server take them before the next one arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(server.addr()).await.expect("connect");
    let answer = read_until_closed(&mut extra).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    // One lets go: a new client is served again.
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = Client::new()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let metrics = r.text().await.expect("body");
    assert!(
        metrics.contains("lumen_http_refused_total{limit=\"connections\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn session_creations_are_rate_limited_per_client() {
    let server = Server::start_with(|c| {
        c.limits = Limits {
            session_rate: 0.5,
            session_burst: 3,
            ..Limits::new()
        }
    })
    .await;
    let c = Client::new();
    let token = server.publish_token();
    // Even refused offers spend the client's budget: it is taken before
    // the body is read.
    for _ in 0..3 {
        let r = post_sdp_as(&c, &server.url("/whip/cam"), &token, "not sdp".into()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    let r = post_sdp_as(&c, &server.url("/whip/cam"), &token, "not sdp".into()).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let r = c.get(server.url("/metrics")).send().await.expect("metrics");
    let metrics = r.text().await.expect("body");
    assert!(
        metrics.contains("lumen_http_refused_total{limit=\"session_rate\"} 1"),
        "{metrics}"
    );
    // The budget is taken before the credential is checked: a client
    // without one is held back as well, rather than told 401.
    let r = post_sdp(&c, &server.url("/whip/cam"), "not sdp".into()).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    server.stop().await;
}

#[tokio::test]
async fn sessions_are_bounded_per_client_and_in_total() {
    let server = Server::start_with(|c| {
        c.limits = Limits {
            sessions_per_client: 2,
            ..Limits::unlimited()
        }
    })
    .await;
    let c = Client::new();
    let token = server.publish_token();
    let mut locations = Vec::new();
    for name in ["a", "b"] {
        let r = post_sdp_as(
            &c,
            &server.url(&format!("/whip/{name}")),
            &token,
            offer(Direction::SendOnly).1.to_sdp_string(),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        locations.push(crate::support::header(&r, "location").to_string());
    }
    let r = post_sdp_as(
        &c,
        &server.url("/whip/c"),
        &token,
        offer(Direction::SendOnly).1.to_sdp_string(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    // One ends: there is room again.
    let r = c
        .delete(server.url(&locations[0]))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::OK);
    let r = post_sdp_as(
        &c,
        &server.url("/whip/c"),
        &token,
        offer(Direction::SendOnly).1.to_sdp_string(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    server.stop().await;

    let server = Server::start_with(|c| {
        c.limits = Limits {
            max_sessions: 1,
            ..Limits::unlimited()
        }
    })
    .await;
    let token = server.publish_token();
    let r = post_sdp_as(
        &c,
        &server.url("/whip/a"),
        &token,
        offer(Direction::SendOnly).1.to_sdp_string(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = post_sdp_as(
        &c,
        &server.url("/whip/b"),
        &token,
        offer(Direction::SendOnly).1.to_sdp_string(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    server.stop().await;
}

#[tokio::test]
async fn event_stream_readers_are_bounded() {
    let server = Server::start_with(|c| {
        c.limits = Limits {
            event_readers_per_session: 1,
            ..Limits::unlimited()
        }
    })
    .await;
    let c = Client::new();
    let r = post_sdp_as(
        &c,
        &server.url("/whip/cam"),
        &server.publish_token(),
        offer(Direction::SendOnly).1.to_sdp_string(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = post_sdp(
        &c,
        &server.url("/whep/cam"),
        offer(Direction::RecvOnly).1.to_sdp_string(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let session = crate::support::header(&r, "location").to_string();
    let r = c
        .post(server.url(&format!("{session}/sse")))
        .send()
        .await
        .expect("sse");
    assert_eq!(r.status(), StatusCode::CREATED);
    let events = server.url(crate::support::header(&r, "location"));
    let first = c.get(&events).send().await.expect("first reader");
    assert_eq!(first.status(), StatusCode::OK);
    let second = c.get(&events).send().await.expect("second reader");
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    // The first reader leaves: its place is free.
    drop(first);
    let mut third = None;
    for _ in 0..50 {
        let r = c.get(&events).send().await.expect("third reader");
        if r.status() == StatusCode::OK {
            third = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(third.is_some(), "the first reader's place was never freed");
    server.stop().await;
}
