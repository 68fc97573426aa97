//! Webhooks end to end: an endpoint registered through `/api/v1/webhooks`,
//! a real publish (a str0m peer completing ICE and DTLS with the server
//! over loopback UDP, then sending audio), and a receiver that checks the
//! Standard Webhooks signature of `stream.started` and `stream.ended`; and
//! a receiver that is down at first getting its delivery on a retry.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lumen_signaling::auth::webhooks::verify;
use reqwest::Client;
use serde_json::{Value, json};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, RtcConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

use crate::support::{Server, header, post_sdp_as};

/// Generous: a condition that holds at all holds long before this.
const WAIT: Duration = Duration::from_secs(30);

/// A server whose deliverer polls and retries quickly.
async fn server() -> Server {
    Server::start_with(|c| {
        c.auth.webhooks.poll_interval = Duration::from_millis(100);
        c.auth.webhooks.retry_delays = vec![Duration::from_millis(200); 50];
        c.auth.webhooks.jitter = 0.0;
    })
    .await
}

#[tokio::test]
async fn a_real_publish_is_delivered_as_signed_started_then_ended() {
    let s = server().await;
    let c = Client::new();
    let admin = s.token("admin");
    let mut receiver = Receiver::bind("127.0.0.1:0").await;

    // Only admins see or register endpoints.
    let r = c
        .get(s.url("/api/v1/webhooks"))
        .bearer_auth(s.publish_token())
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 403);
    let r = api(
        &c,
        &s,
        &admin,
        "POST",
        "/api/v1/webhooks",
        json!({"url": "ftp://x/"}),
    )
    .await;
    assert_eq!(r.0, 422, "{}", r.1);
    let (status, ep) = api(
        &c,
        &s,
        &admin,
        "POST",
        "/api/v1/webhooks",
        json!({"url": receiver.url(), "events": ["stream.started", "stream.ended"]}),
    )
    .await;
    assert_eq!(status, 201, "{ep}");
    let secret = ep["secret"].as_str().expect("the secret, once").to_string();
    assert!(secret.starts_with("whsec_"));
    let id = ep["id"].as_str().expect("id").to_string();
    let (_, list) = api(&c, &s, &admin, "GET", "/api/v1/webhooks", Value::Null).await;
    assert_eq!(list[0]["id"], id.as_str());
    assert!(list[0].get("secret").is_none(), "{list}");

    let publisher = Publisher::start(&s, &c, "cam").await;
    let started = receiver.next().await;
    started.check(&secret);
    let body = started.json();
    assert_eq!(body["type"], "stream.started");
    assert_eq!(body["data"], json!({"stream": "cam"}));
    assert!(publisher.connected(), "live means its publisher connected");

    publisher.stop(&c, &s).await;
    let ended = receiver.next().await;
    ended.check(&secret);
    let body = ended.json();
    assert_eq!(body["type"], "stream.ended");
    assert_eq!(body["data"], json!({"stream": "cam"}));
    assert_ne!(ended.header("webhook-id"), started.header("webhook-id"));

    // The delivery log: both delivered, newest first.
    let log = until_log(&c, &s, &admin, &id, |l| {
        l.len() == 2 && l.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    assert_eq!(log[0]["event_type"], "stream.ended");
    assert_eq!(log[0]["id"], ended.header("webhook-id"));
    assert_eq!(log[1]["event_type"], "stream.started");
    assert_eq!(
        (
            log[1]["attempts"].as_u64(),
            log[1]["last_status_code"].as_u64()
        ),
        (Some(1), Some(200))
    );

    let (status, _) = api(
        &c,
        &s,
        &admin,
        "DELETE",
        &format!("/api/v1/webhooks/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = api(
        &c,
        &s,
        &admin,
        "GET",
        &format!("/api/v1/webhooks/{id}/deliveries"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 404);
    s.stop().await;
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_delivery_on_a_retry() {
    let s = server().await;
    let c = Client::new();
    let admin = s.token("admin");
    // A free port that nobody listens on yet.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (_, ep) = api(
        &c,
        &s,
        &admin,
        "POST",
        "/api/v1/webhooks",
        json!({"url": format!("http://{addr}/hook"), "description": "down at first"}),
    )
    .await;
    let secret = ep["secret"].as_str().expect("secret").to_string();
    let id = ep["id"].as_str().expect("id").to_string();

    let publisher = Publisher::start(&s, &c, "late").await;
    // The first attempt fails: nothing listens.
    let log = until_log(&c, &s, &admin, &id, |l| {
        l.first().is_some_and(|d| d["attempts"].as_u64() >= Some(1))
    })
    .await;
    assert_eq!(log[0]["status"], "pending", "{log:?}");
    assert!(
        log[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connect")),
        "{log:?}"
    );
    assert!(log[0]["next_attempt_at"].is_i64());

    // It comes up; a retry gets through.
    let mut receiver = Receiver::bind(&addr.to_string()).await;
    let got = receiver.next().await;
    got.check(&secret);
    assert_eq!(got.json()["type"], "stream.started");
    assert_eq!(got.json()["data"]["stream"], "late");
    assert_eq!(
        got.header("webhook-id"),
        log[0]["id"].as_str().unwrap_or_default()
    );
    let log = until_log(&c, &s, &admin, &id, |l| {
        l.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    assert!(log[0]["attempts"].as_u64() >= Some(2), "{log:?}");
    assert_eq!(log[0]["last_error"], Value::Null);
    publisher.stop(&c, &s).await;
    s.stop().await;
}

/// A JSON call to the account API as `token`: the status and the body.
async fn api(
    c: &Client,
    s: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = c.request(method, s.url(path)).bearer_auth(token);
    if !body.is_null() {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Waits for an endpoint's delivery log to satisfy `ok`.
async fn until_log(
    c: &Client,
    s: &Server,
    token: &str,
    id: &str,
    ok: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, log) = api(
            c,
            s,
            token,
            "GET",
            &format!("/api/v1/webhooks/{id}/deliveries"),
            Value::Null,
        )
        .await;
        assert_eq!(status, 200, "{log}");
        let log = log.as_array().cloned().unwrap_or_default();
        if ok(&log) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting; the log: {log:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- the receiver ----

/// A minimal HTTP/1.1 server: answers every request 200 and reports it.
struct Receiver {
    addr: SocketAddr,
    got: mpsc::UnboundedReceiver<Delivered>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Delivered {
    headers: HashMap<String, String>,
    body: String,
}

impl Delivered {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The Standard Webhooks checks a receiver makes: a signature by the
    /// endpoint's secret over id, timestamp and body, a recent timestamp.
    fn check(&self, secret: &str) {
        assert_eq!(self.header("content-type"), "application/json");
        let id = self.header("webhook-id");
        assert!(id.starts_with("msg_"), "{self:?}");
        let ts: i64 = self
            .header("webhook-timestamp")
            .parse()
            .expect("a timestamp");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        assert!((now - ts).abs() < 300, "timestamp {ts} is not now ({now})");
        let sig = self.header("webhook-signature");
        assert!(sig.starts_with("v1,"), "{sig}");
        assert!(
            verify(secret, id, ts, &self.body, sig),
            "bad signature: {self:?}"
        );
        assert!(!verify(secret, id, ts + 1, &self.body, sig));
    }
}

impl Receiver {
    async fn bind(addr: &str) -> Receiver {
        let listener = TcpListener::bind(addr).await.expect("bind the receiver");
        let addr = listener.local_addr().expect("addr");
        let (tx, got) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, tx.clone()));
            }
        });
        Receiver { addr, got, task }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    async fn next(&mut self) -> Delivered {
        tokio::time::timeout(WAIT, self.got.recv())
            .await
            .expect("a delivery in time")
            .expect("the receiver runs")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut tcp: tokio::net::TcpStream, tx: mpsc::UnboundedSender<Delivered>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    assert!(
        lines.next().is_some_and(|l| l.starts_with("POST /hook ")),
        "{head}"
    );
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    let _ = tx.send(Delivered { headers, body });
    let _ = tcp
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await;
    let _ = tcp.shutdown().await;
}

// ---- the publisher ----

/// A str0m peer publishing to `/whip/{stream}` over a loopback UDP socket,
/// driven on its own task: ICE, DTLS, then an Opus packet every 20 ms.
struct Publisher {
    location: String,
    token: String,
    connected: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    async fn start(s: &Server, c: &Client, stream: &str) -> Publisher {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
        let local = socket.local_addr().expect("addr");
        let mut rtc = RtcConfig::new().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
        let mut sdp = rtc.sdp_api();
        let audio = sdp.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        sdp.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = sdp.apply().expect("an offer");
        let token = s.publish_token();
        let r = post_sdp_as(
            c,
            &s.url(&format!("/whip/{stream}")),
            &token,
            offer.to_sdp_string(),
        )
        .await;
        assert_eq!(r.status(), 201, "WHIP");
        let location = header(&r, "location").to_string();
        let answer = SdpAnswer::from_sdp_string(&r.text().await.expect("answer")).expect("SDP");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        let (connected_tx, connected) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(drive(rtc, socket, local, audio, connected_tx, stop_rx));
        Publisher {
            location,
            token,
            connected,
            stop,
            task,
        }
    }

    fn connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Ends the WHIP session (as a client that stops does) and the peer.
    async fn stop(self, c: &Client, s: &Server) {
        let r = c
            .delete(s.url(&self.location))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("DELETE");
        assert_eq!(r.status(), 200);
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn drive(
    mut rtc: str0m::Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    audio: Mid,
    connected: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let mut next_packet = start;
    let mut buf = vec![0u8; 2000];
    loop {
        // Drain the outputs until the next timeout (str0m's rule).
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(Event::Connected)) => {
                    connected.send_replace(true);
                }
                Ok(Output::Event(_)) => {}
                Err(e) => panic!("the publisher's peer failed: {e}"),
            }
        };
        let now = Instant::now();
        if *connected.borrow() && now >= next_packet {
            next_packet = now + Duration::from_millis(20);
            if let Some(w) = rtc.writer(audio) {
                let pt = w
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::Opus)
                    .map(|p| p.pt());
                if let Some(pt) = pt {
                    let t = (now - start).as_millis() as u64 * 48;
                    let time = MediaTime::new(t, Frequency::FORTY_EIGHT_KHZ);
                    let _ = w.write(pt, now, time, vec![0xf8, 0xff, 0xfe]);
                }
            }
            continue;
        }
        let wake = if *connected.borrow() {
            timeout.min(next_packet)
        } else {
            timeout
        };
        tokio::select! {
            _ = stop.changed() => return,
            r = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = r else { return };
                if let Ok(contents) = Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), contents));
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
    }
}
