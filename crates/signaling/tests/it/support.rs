//! Shared by the signaling tests: a server on loopback with a temporary data
//! dir, offers from str0m acting as a browser, and small HTTP helpers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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

pub async fn post_sdp(c: &Client, url: &str, body: String) -> Response {
    c.post(url)
        .header("content-type", "application/sdp")
        .body(body)
        .send()
        .await
        .expect("request")
}

pub fn header<'a>(r: &'a Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("missing header {name}"))
}
