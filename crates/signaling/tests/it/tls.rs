//! Encryption in transit and reverse proxies: HTTPS on the HTTP port with a
//! self-signed certificate, plain HTTP there redirected, HSTS on every
//! HTTPS answer, the TLS handshake under the header timeout, unusable
//! certificate files named at start, and the per-client limits keyed on
//! the forwarded address only when a trusted proxy forwarded it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use lumen_signaling::{Limits, TlsFiles};
use reqwest::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};

use crate::support::Server;

/// A self-signed certificate for `localhost` and 127.0.0.1, in PEM files
/// removed on drop.
struct SelfSigned {
    dir: PathBuf,
    files: TlsFiles,
    der: CertificateDer<'static>,
}

impl SelfSigned {
    fn new(tag: &str) -> SelfSigned {
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("certificate");
        let dir = std::env::temp_dir().join(format!(
            "lumen-tls-{tag}-{}-{:x}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, ck.cert.pem()).expect("write cert");
        std::fs::write(&files.key, ck.signing_key.serialize_pem()).expect("write key");
        SelfSigned {
            dir,
            files,
            der: ck.cert.der().clone(),
        }
    }

    /// A client that trusts this certificate only.
    fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).expect("root");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        // As a browser offers: the server must choose HTTP/1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One HTTPS request to `addr`, checking the certificate for `name`; the
/// status, the HSTS header and the body.
async fn https_get(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &str,
    path: &str,
) -> (StatusCode, Option<String>, String) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let server_name = ServerName::try_from(name.to_string()).expect("server name");
    let tls = connector
        .connect(server_name, tcp)
        .await
        .expect("handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "ALPN"
    );
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", format!("{name}:{}", addr.port()))
        .body(Body::empty())
        .expect("request");
    let res = sender.send_request(req).await.expect("response");
    let status = res.status();
    let hsts = res
        .headers()
        .get("strict-transport-security")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = axum::body::to_bytes(Body::new(res.into_body()), 1 << 20)
        .await
        .expect("body");
    (status, hsts, String::from_utf8_lossy(&body).into_owned())
}

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
async fn https_is_served_with_hsts_and_plain_http_is_redirected() {
    let cert = SelfSigned::new("serve");
    let files = cert.files.clone();
    let server = Server::start_with(|c| c.tls = Some(files)).await;
    let addr = server.addr();
    assert!(
        server.url("/").starts_with("https://"),
        "{}",
        server.url("/")
    );
    let connector = cert.connector();

    for name in ["localhost", "127.0.0.1"] {
        let (status, hsts, _) = https_get(&connector, addr, name, "/").await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert_eq!(hsts.as_deref(), Some("max-age=31536000"), "{name}");
    }
    // Errors too carry it.
    let (status, hsts, _) = https_get(&connector, addr, "localhost", "/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(hsts.as_deref(), Some("max-age=31536000"));

    // Plain HTTP to the same port: a redirect to the same URL over HTTPS.
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /whep/cam?x=1 HTTP/1.1\r\nHost: localhost:{}\r\nContent-Length: 3\r\n\r\nv=0",
        addr.port()
    );
    plain.write_all(request.as_bytes()).await.expect("write");
    let answer = read_until_closed(&mut plain).await;
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains(&format!(
            "location: https://localhost:{}/whep/cam?x=1\r\n",
            addr.port()
        )),
        "{answer}"
    );
    assert!(!lower.contains("strict-transport-security"), "{answer}");

    // And reqwest, which speaks no TLS here, is told the same.
    let r = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("http://{addr}/watch/cam"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), reqwest::StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(format!("https://{addr}/watch/cam").as_str())
    );
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_while_others_are_served() {
    let cert = SelfSigned::new("stall");
    let files = cert.files.clone();
    let server = Server::start_with(|c| {
        c.tls = Some(files);
        c.header_timeout = Duration::from_secs(1);
    })
    .await;
    // The first byte of a handshake record, then nothing.
    let mut stalled = TcpStream::connect(server.addr()).await.expect("connect");
    stalled.write_all(&[0x16]).await.expect("write");
    // Connected, never a byte.
    let mut silent = TcpStream::connect(server.addr()).await.expect("connect");
    let (status, _, _) = https_get(&cert.connector(), server.addr(), "localhost", "/").await;
    assert_eq!(status, StatusCode::OK);
    for conn in [&mut stalled, &mut silent] {
        assert_eq!(read_until_closed(conn).await, "");
    }
    server.stop().await;
}

#[tokio::test]
async fn unusable_certificate_files_are_named_at_start() {
    let a = SelfSigned::new("files-a");
    let b = SelfSigned::new("files-b");
    let missing = a.dir.join("missing.pem");
    let cases = [
        // The key of another certificate.
        (
            a.files.cert.clone(),
            b.files.key.clone(),
            b.files.key.clone(),
        ),
        (missing.clone(), a.files.key.clone(), missing.clone()),
        // A certificate where the key should be, and the other way round.
        (
            a.files.cert.clone(),
            a.files.cert.clone(),
            a.files.cert.clone(),
        ),
        (
            a.files.key.clone(),
            a.files.key.clone(),
            a.files.key.clone(),
        ),
    ];
    for (cert, key, named) in cases {
        let mut config = lumen_signaling::Config::ephemeral();
        // Created before the files are read; removed with `a`.
        config.data_dir = a.dir.join("data");
        config.tls = Some(TlsFiles { cert, key });
        let Err(e) = lumen_signaling::start(config).await else {
            panic!("started with unusable TLS files");
        };
        let msg = e.to_string();
        assert!(
            msg.contains(&named.display().to_string()),
            "{} not named in: {msg}",
            named.display()
        );
    }
}

/// `WHEP` offers carrying `headers`, until one is refused with `429`; how
/// many were let through first (at most `limit`).
async fn admitted(server: &Server, headers: &[(&str, &str)], limit: usize) -> usize {
    let c = Client::new();
    for n in 0..=limit {
        let mut req = c
            .post(server.url("/whep/cam"))
            .header("content-type", "application/sdp")
            .body("not an offer");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let r = req.send().await.expect("request");
        if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return n;
        }
    }
    limit + 1
}

#[tokio::test]
async fn per_client_limits_see_forwarded_addresses_from_trusted_proxies_only() {
    // Two sessions per address, and no refill within the test: a session
    // attempt is admitted (its budget spent) before its offer is read, so
    // offers that are not SDP count too.
    let limits = Limits {
        session_rate: 0.001,
        session_burst: 2,
        ..Limits::unlimited()
    };
    let xff = |a: &'static str| [("x-forwarded-for", a)];

    let trusting = Server::start_with(|c| {
        c.limits = limits.clone();
        c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("cidr")];
    })
    .await;
    assert_eq!(admitted(&trusting, &xff("198.51.100.1"), 3).await, 2);
    // Another forwarded client has its own budget.
    assert_eq!(admitted(&trusting, &xff("198.51.100.2"), 3).await, 2);
    // The right-most untrusted hop counts, not what the client wrote left
    // of it.
    assert_eq!(
        admitted(&trusting, &xff("203.0.113.9, 198.51.100.1"), 3).await,
        0
    );
    // RFC 7239, IPv6.
    let fwd = [("forwarded", "for=\"[2001:db8::1]:4711\"")];
    assert_eq!(admitted(&trusting, &fwd, 3).await, 2);
    // The proxy itself, with nothing forwarded, is one more client.
    assert_eq!(admitted(&trusting, &[], 3).await, 2);
    trusting.stop().await;

    let direct = Server::start_with(|c| c.limits = limits.clone()).await;
    // Untrusted: every header is ignored, and all of this is 127.0.0.1.
    assert_eq!(admitted(&direct, &xff("198.51.100.1"), 3).await, 2);
    assert_eq!(admitted(&direct, &xff("198.51.100.2"), 3).await, 0);
    assert_eq!(admitted(&direct, &fwd, 3).await, 0);
    direct.stop().await;
}

/// The same over HTTPS with the headers from a trusted proxy: the limit
/// is keyed the same way whatever the transport.
#[tokio::test]
async fn forwarded_addresses_are_read_over_https_too() {
    let cert = SelfSigned::new("fwd");
    let files = cert.files.clone();
    let server = Server::start_with(|c| {
        c.tls = Some(files);
        c.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
        c.limits = Limits {
            session_rate: 0.001,
            session_burst: 1,
            ..Limits::unlimited()
        };
    })
    .await;
    let connector = cert.connector();
    let mut statuses = Vec::new();
    for client in ["198.51.100.1", "198.51.100.2", "198.51.100.1"] {
        let tcp = TcpStream::connect(server.addr()).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        let tls = connector.connect(name, tcp).await.expect("handshake");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn);
        let req = Request::post("/whep/cam")
            .header("host", "localhost")
            .header("content-type", "application/sdp")
            .header("x-forwarded-for", client)
            .body(Body::from("not an offer"))
            .expect("request");
        let res = sender.send_request(req).await.expect("response");
        statuses.push(res.status());
    }
    assert_ne!(statuses[0], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    assert_ne!(statuses[1], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    assert_eq!(statuses[2], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    server.stop().await;
}
