//! The deliverer against a receiver on loopback: signed deliveries,
//! retries with backoff, an endpoint that is down at first, `410 Gone`,
//! and https.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::open;
use crate::webhooks::send::Client;
use crate::webhooks::*;
use crate::{Auth, AuthConfig, model};

/// One request a receiver got.
#[derive(Debug)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    /// Checks the Standard Webhooks headers against `secret`.
    fn verified(&self, secret: &str) -> bool {
        let ts: i64 = self.header("webhook-timestamp").parse().unwrap_or(0);
        let skew = (model::now_ms() / 1000 - ts).abs();
        skew < 300
            && verify(
                secret,
                self.header("webhook-id"),
                ts,
                &self.body,
                self.header("webhook-signature"),
            )
    }
}

/// A minimal HTTP/1.1 server on loopback answering `statuses` in turn,
/// then 200, and reporting every request.
struct Receiver {
    url: String,
    got: mpsc::UnboundedReceiver<Received>,
    _task: tokio::task::JoinHandle<()>,
}

async fn receiver(statuses: &[u16], tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let (tx, got) = mpsc::unbounded_channel();
    let statuses = Arc::new(Mutex::new(
        statuses.iter().copied().collect::<VecDeque<_>>(),
    ));
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tx, statuses, tls) = (tx.clone(), statuses.clone(), tls.clone());
            tokio::spawn(async move {
                let status = || statuses.lock().unwrap().pop_front().unwrap_or(200);
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(tcp).await {
                            serve_one(s, status, tx).await;
                        }
                    }
                    None => serve_one(tcp, status, tx).await,
                }
            });
        }
    });
    Receiver {
        url: format!("{scheme}://127.0.0.1:{}/hook", addr.port()),
        got,
        _task: task,
    }
}

async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    status: impl FnOnce() -> u16,
    tx: mpsc::UnboundedSender<Received>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    let code = status();
    let _ = tx.send(Received { headers, body });
    let answer = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = s.write_all(answer.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// Waits (generously) for the delivery log of `endpoint` to satisfy `ok`.
async fn until_log(auth: &Auth, endpoint: &str, ok: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = auth.webhooks().deliveries(endpoint, 50).await.unwrap();
        if ok(&log) {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {log:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next(r: &mut Receiver) -> Received {
    tokio::time::timeout(Duration::from_secs(30), r.got.recv())
        .await
        .expect("a delivery in time")
        .expect("receiver running")
}

fn fast(c: &mut AuthConfig) {
    c.webhooks.retry_delays = vec![Duration::from_millis(50), Duration::from_millis(100)];
    c.webhooks.poll_interval = Duration::from_millis(50);
    c.webhooks.timeout = Duration::from_secs(5);
}

#[tokio::test]
async fn deliveries_are_signed_and_retried() {
    let b = open(fast, None).await;
    let hooks = b.auth.webhooks();
    let (stop, stop_rx) = watch::channel(false);
    let deliverer = spawn_deliverer(b.auth.clone(), stop_rx);
    // Answers 503 twice, then 200: delivered on the third attempt.
    let mut rx = receiver(&[503, 503], None).await;
    let ep = hooks
        .register(&rx.url, &[EventType::StreamStarted], None, "")
        .await
        .unwrap();
    hooks
        .emit(
            EventType::StreamStarted,
            serde_json::json!({"stream": "cam"}),
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let got = next(&mut rx).await;
        assert!(got.verified(&ep.secret), "{got:?}");
        assert_eq!(got.header("content-type"), "application/json");
        let body: serde_json::Value = serde_json::from_str(&got.body).unwrap();
        assert_eq!(body["type"], "stream.started");
        assert_eq!(body["data"]["stream"], "cam");
        ids.push(got.header("webhook-id").to_string());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every attempt has the same id");
    let log = until_log(&b.auth, &ep.endpoint.id, |l| {
        l.first()
            .is_some_and(|d| d.status == DeliveryStatus::Delivered)
    })
    .await;
    assert_eq!(log[0].id, ids[0]);
    assert_eq!((log[0].attempts, log[0].last_status_code), (3, Some(200)));
    assert!(log[0].delivered_at.is_some());

    // A receiver that never answers 2xx: failed after every attempt.
    let mut down = receiver(&[500, 500, 500, 500], None).await;
    let ep = hooks
        .register(&down.url, &[EventType::StreamEnded], None, "")
        .await
        .unwrap();
    hooks
        .emit(EventType::StreamEnded, serde_json::json!({"stream": "cam"}))
        .await
        .unwrap();
    let log = until_log(&b.auth, &ep.endpoint.id, |l| {
        l.first()
            .is_some_and(|d| d.status == DeliveryStatus::Failed)
    })
    .await;
    assert_eq!((log[0].attempts, log[0].last_status_code), (3, Some(500)));
    for _ in 0..3 {
        next(&mut down).await;
    }

    // 410 Gone: failed at once, and the endpoint is disabled.
    let mut gone = receiver(&[410], None).await;
    let ep = hooks
        .register(&gone.url, &[EventType::KeyRevoked], None, "")
        .await
        .unwrap();
    hooks
        .emit(EventType::KeyRevoked, serde_json::json!({}))
        .await
        .unwrap();
    let log = until_log(&b.auth, &ep.endpoint.id, |l| {
        l.first()
            .is_some_and(|d| d.status == DeliveryStatus::Failed)
    })
    .await;
    assert_eq!((log[0].attempts, log[0].last_status_code), (1, Some(410)));
    next(&mut gone).await;
    assert!(!hooks.endpoint(&ep.endpoint.id).await.unwrap().enabled);
    stop.send(true).unwrap();
    deliverer.await.unwrap();
}

#[tokio::test]
async fn an_endpoint_that_is_down_gets_the_delivery_later() {
    let b = open(fast, None).await;
    let hooks = b.auth.webhooks();
    // A port nobody listens on (yet).
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ep = hooks
        .register(&format!("http://127.0.0.1:{port}/hook"), &[], None, "")
        .await
        .unwrap();
    hooks
        .emit(
            EventType::StreamStarted,
            serde_json::json!({"stream": "cam"}),
        )
        .await
        .unwrap();
    // Two quick retries fail too with the port closed, so this test keeps
    // the deliverer stopped until the port is open again: one attempt by
    // hand first.
    let client = Client::new(&b.auth.config().webhooks);
    let (due, until) = hooks
        .claim_due(model::now_ms(), 10)
        .await
        .unwrap()
        .remove(0);
    hooks.attempt(&client, due, until).await;
    let log = hooks.deliveries(&ep.endpoint.id, 1).await.unwrap();
    assert_eq!(
        (log[0].status, log[0].attempts),
        (DeliveryStatus::Pending, 1)
    );
    assert!(
        log[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("connect")),
        "{log:?}"
    );
    assert_eq!(log[0].last_status_code, None);
    // The endpoint comes up; the deliverer's retry gets through.
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (tx, mut got) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            serve_one(tcp, || 204, tx.clone()).await;
        }
    });
    let (stop, stop_rx) = watch::channel(false);
    let deliverer = spawn_deliverer(b.auth.clone(), stop_rx);
    let r = tokio::time::timeout(Duration::from_secs(30), got.recv())
        .await
        .expect("the retry in time")
        .expect("receiver running");
    assert!(r.verified(&ep.secret));
    let log = until_log(&b.auth, &ep.endpoint.id, |l| {
        l[0].status == DeliveryStatus::Delivered
    })
    .await;
    assert_eq!(
        (log[0].attempts, log[0].last_status_code, &log[0].last_error),
        (2, Some(204), &None)
    );
    stop.send(true).unwrap();
    deliverer.await.unwrap();
}

#[tokio::test]
async fn https_endpoints_are_verified_against_the_trusted_cas() {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::PrivateKeyDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;

    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(ck.signing_key.serialize_pem().as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let mut rx = receiver(&[], Some(acceptor)).await;

    // Not trusted: the attempt fails on the certificate.
    let b = open(fast, None).await;
    let ep = b
        .auth
        .webhooks()
        .register(&rx.url, &[EventType::StreamStarted], None, "")
        .await
        .unwrap();
    let client = Client::new(&b.auth.config().webhooks);
    b.auth
        .webhooks()
        .emit(EventType::StreamStarted, serde_json::json!({}))
        .await
        .unwrap();
    let (due, until) = b
        .auth
        .webhooks()
        .claim_due(model::now_ms(), 1)
        .await
        .unwrap()
        .remove(0);
    b.auth.webhooks().attempt(&client, due, until).await;
    let log = b
        .auth
        .webhooks()
        .deliveries(&ep.endpoint.id, 1)
        .await
        .unwrap();
    assert!(
        log[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("TLS")),
        "{log:?}"
    );

    // Trusted through `ca_file`: delivered.
    let b = open(
        |c| {
            fast(c);
            c.webhooks.ca_file = Some(ca.clone());
        },
        None,
    )
    .await;
    let ep = b
        .auth
        .webhooks()
        .register(&rx.url, &[EventType::StreamStarted], None, "")
        .await
        .unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let deliverer = spawn_deliverer(b.auth.clone(), stop_rx);
    b.auth
        .webhooks()
        .emit(
            EventType::StreamStarted,
            serde_json::json!({"stream": "tls"}),
        )
        .await
        .unwrap();
    let got = next(&mut rx).await;
    assert!(got.verified(&ep.secret));
    until_log(&b.auth, &ep.endpoint.id, |l| {
        l[0].status == DeliveryStatus::Delivered
    })
    .await;
    stop.send(true).unwrap();
    deliverer.await.unwrap();
}
