//! Chromium broadcasts and watches over HTTPS: lumen serves TLS with a
//! certificate made in the test (rcgen), the pages are a secure context
//! (camera capture needs one off localhost), the stream key crosses the
//! network only inside TLS, and the plain-HTTP URL on the same port is
//! redirected.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use lumen_signaling::TlsFiles;
use serde_json::Value;

use crate::chrome::ChromeDriver;
use crate::support::start_server_with;

const LIVE_WITHIN: Duration = Duration::from_secs(20);

struct Cert {
    dir: std::path::PathBuf,
    files: TlsFiles,
}

impl Cert {
    fn new() -> Cert {
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("a certificate");
        let dir = std::env::temp_dir().join(format!(
            "lumen-https-browser-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, ck.cert.pem()).expect("cert");
        std::fs::write(&files.key, ck.signing_key.serialize_pem()).expect("key");
        Cert { dir, files }
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn page_state(c: &Client) -> Value {
    c.execute(
        "return { secure: window.isSecureContext, proto: location.protocol,
                  state: (window.lumen && window.lumen.state) || null };",
        vec![],
    )
    .await
    .expect("read the page")
}

async fn wait_state(c: &Client, who: &str, want: &str) {
    let deadline = Instant::now() + LIVE_WITHIN;
    loop {
        let s = page_state(c).await;
        if s["state"].as_str() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the {who} page never reached {want:?}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_broadcasts_and_watches_over_https() {
    let Some(chrome) = ChromeDriver::start().await else {
        return;
    };
    let cert = Cert::new();
    let files = cert.files.clone();
    let server = start_server_with(move |c| c.tls = Some(files)).await;
    let base = server.http_url();
    assert!(base.starts_with("https://"), "{base}");
    let name = "secure-cam";
    // The certificate is the test's own: this browser is told to accept it.
    let flags = ["--ignore-certificate-errors"];

    let broadcaster = chrome.new_session_with(&flags).await;
    // Plain HTTP to the same port is sent to HTTPS.
    let plain = base.replacen("https://", "http://", 1);
    broadcaster
        .goto(&format!("{plain}/broadcast?stream={name}"))
        .await
        .expect("open the broadcast page over http");
    let s = page_state(&broadcaster).await;
    assert_eq!(s["proto"], "https:", "not redirected: {s}");
    assert_eq!(s["secure"], true, "not a secure context: {s}");
    let token = server.publish_token();
    let field = broadcaster
        .find(Locator::Id("token"))
        .await
        .expect("the stream key field");
    field.send_keys(&token).await.expect("type the token");
    broadcaster
        .find(Locator::Id("golive"))
        .await
        .expect("the Go Live button")
        .click()
        .await
        .expect("click Go Live");
    wait_state(&broadcaster, "broadcaster", "live").await;

    let viewer = chrome.new_session_with(&flags).await;
    viewer
        .goto(&format!("{base}/watch/{name}"))
        .await
        .expect("open the watch page");
    wait_state(&viewer, "viewer", "live").await;
    let deadline = Instant::now() + LIVE_WITHIN;
    loop {
        let v = viewer
            .execute(
                "const v = document.getElementById('video');
                 return { w: v.videoWidth, t: v.currentTime };",
                vec![],
            )
            .await
            .expect("read the video");
        if v["w"].as_u64().unwrap_or(0) > 0 && v["t"].as_f64().unwrap_or(0.0) > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the viewer decoded nothing over HTTPS: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    broadcaster.close().await.expect("close");
    viewer.close().await.expect("close");
    drop(chrome);
    server.stop().await;
}
