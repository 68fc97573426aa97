//! Shared by the signaling tests: a server on loopback with a temporary data
//! dir, offers from str0m acting as a browser, and small HTTP helpers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{Client, Response};
use str0m::change::SdpOffer;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc, RtcConfig};

pub struct Server {
    running: Option<lumen_signaling::Running>,
    url: String,
    _dir: TempDir,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(|_| {}).await
    }

    /// A server on [`lumen_signaling::Config::ephemeral`] changed by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut lumen_signaling::Config)) -> Server {
        let dir = TempDir::new("conformance");
        let mut config = lumen_signaling::Config::ephemeral();
        config.data_dir = dir.0.clone();
        config.ice_servers = vec!["stun:stun.example.net:3478".into()];
        configure(&mut config);
        let running = lumen_signaling::start(config).await.expect("server starts");
        let url = running.http_url();
        Server {
            running: Some(running),
            url,
            _dir: dir,
        }
    }

    /// `host:port` of the HTTP listener.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.running
            .as_ref()
            .map(|r| r.http_addr())
            .expect("running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// The server's account service, to make users, streams, keys, tokens.
    pub fn auth(&self) -> &lumen_signaling::auth::Auth {
        self.running.as_ref().map(|r| r.auth()).expect("running")
    }

    /// A fresh token of this server with `publish:*`: the Bearer of WHIP
    /// (and of the WHIP session's PATCH and DELETE) for any stream.
    pub fn publish_token(&self) -> String {
        self.token("publish:*")
    }

    /// A fresh token of this server with `scopes`, valid an hour.
    pub fn token(&self, scopes: &str) -> String {
        let scopes = lumen_signaling::auth::Scopes::parse(scopes).expect("scopes");
        self.auth()
            .mint("test", &scopes, Duration::from_secs(3600))
            .expect("a token is minted")
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    /// A directory no other test of any process has: the process id, a
    /// counter within the process, and the wall clock in nanoseconds.
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!(
            "lumen-{tag}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
        ));
        std::fs::create_dir(&p).expect("a fresh temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An offer from str0m acting as a browser: audio + video in `dir`.
pub fn offer(dir: Direction) -> (Rtc, SdpOffer) {
    let mut rtc = RtcConfig::new().build(Instant::now());
    rtc.add_local_candidate(
        Candidate::host("127.0.0.1:5000".parse().expect("addr"), "udp").expect("candidate"),
    );
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    let (offer, _pending) = api.apply().expect("offer");
    (rtc, offer)
}

/// `POST` of an SDP body without a credential (a WHEP viewer of a public
/// stream needs none).
pub async fn post_sdp(c: &Client, url: &str, body: String) -> Response {
    c.post(url)
        .header("content-type", "application/sdp")
        .body(body)
        .send()
        .await
        .expect("request")
}

/// `POST` of an SDP body with `token` as its Bearer credential (WHIP).
pub async fn post_sdp_as(c: &Client, url: &str, token: &str, body: String) -> Response {
    c.post(url)
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(body)
        .send()
        .await
        .expect("request")
}

/// The RFC 9457 problem details of an error answer, checked: its content
/// type, and `status` equal to the answer's.
pub async fn problem(r: Response) -> serde_json::Value {
    let status = r.status();
    let ct = header(&r, "content-type").to_string();
    assert_eq!(ct, "application/problem+json", "{status}");
    let text = r.text().await.expect("body");
    let p: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("a problem+json body that is not JSON ({e}): {text:?}"));
    assert_eq!(p["status"], status.as_u16(), "{text}");
    assert!(p["title"].is_string() && p["type"].is_string(), "{text}");
    p
}

/// The `detail` of an error answer's problem details.
pub async fn detail(r: Response) -> String {
    let p = problem(r).await;
    p["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("problem details without a detail: {p}"))
        .to_string()
}

pub fn header<'a>(r: &'a Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("missing header {name}"))
}
