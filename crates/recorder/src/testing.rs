//! Test support: a throwaway S3-compatible server (moto's `moto_server`) on
//! a loopback port, killed when dropped, and a TCP proxy that can cut the
//! way to it. Not part of lumen's API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::S3Config;

/// Whether a test that cannot run must fail (CI) instead of skipping.
pub fn require_all() -> bool {
    std::env::var("LUMEN_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// A moto S3 server of its own, with one bucket. Its state lives in its
/// memory: a restart loses every bucket and object.
pub struct TempS3 {
    child: Child,
    port: u16,
    bucket: String,
}

fn find_moto() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        let home = PathBuf::from(home);
        dirs.push(home.join(".pyenv/shims"));
        dirs.push(home.join(".local/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("moto_server"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl TempS3 {
    /// Starts one with the bucket `lumen-test`, or `None` with a loud
    /// message when moto is not installed (a panic instead under
    /// `LUMEN_REQUIRE_ALL=1`).
    pub fn start(test: &str) -> Option<TempS3> {
        let Some(bin) = find_moto() else {
            let msg = format!(
                "{test}: moto_server is not installed (pip install 'moto[server]'); \
                 this S3 test is SKIPPED"
            );
            if require_all() {
                panic!("{msg} (LUMEN_REQUIRE_ALL=1)");
            }
            eprintln!("\n!!!!! {msg}\n");
            return None;
        };
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let s3 = TempS3 {
            child,
            port,
            bucket: "lumen-test".to_owned(),
        };
        // Python takes a few seconds to import moto on a cold machine.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http(s3.port, "GET", "/") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // object_store cannot create buckets; a plain PUT does it.
        let (status, body) =
            http(s3.port, "PUT", &format!("/{}", s3.bucket)).expect("create bucket");
        assert_eq!(
            status,
            200,
            "create bucket: {}",
            String::from_utf8_lossy(&body)
        );
        Some(s3)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A store config for the bucket through `endpoint` (its own, or a
    /// proxy's).
    pub fn config_via(&self, endpoint: &str) -> S3Config {
        S3Config::local(endpoint, &self.bucket, "testing", "testing")
    }

    /// A store config for the bucket.
    pub fn config(&self) -> S3Config {
        self.config_via(&self.endpoint())
    }

    /// An object's bytes as the bucket holds them, fetched with a plain
    /// HTTP GET (not through object_store); `None` when absent.
    pub fn raw_get(&self, key: &str) -> Option<Vec<u8>> {
        let (status, body) =
            http(self.port, "GET", &format!("/{}/{key}", self.bucket)).expect("GET from moto");
        match status {
            200 => Some(body),
            404 => None,
            s => panic!("GET {key}: HTTP {s}: {}", String::from_utf8_lossy(&body)),
        }
    }

    /// An object's user metadata entry `x-amz-meta-<name>`, by a plain
    /// HEAD request.
    pub fn raw_metadata(&self, key: &str, name: &str) -> Option<String> {
        self.raw_header(key, &format!("x-amz-meta-{name}"))
    }

    /// A response header of a plain HEAD request for an object.
    pub fn raw_header(&self, key: &str, name: &str) -> Option<String> {
        let head = http_head(self.port, &format!("/{}/{key}", self.bucket)).expect("HEAD");
        let want = format!("{}:", name.to_ascii_lowercase());
        head.lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&want))
            .map(|l| l[want.len()..].trim().to_owned())
    }
}

impl Drop for TempS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy on a loopback port in front of `target`. [`CutProxy::cut`]
/// drops every open connection and refuses new ones (accepted, then closed
/// at once) until [`CutProxy::restore`]: to the client the server is gone,
/// while the server itself keeps running with its data.
pub struct CutProxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Starts one forwarding to `127.0.0.1:<target_port>`.
    pub async fn start(target_port: u16) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (cut, watch_cut) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if *watch_cut.borrow() {
                    drop(client);
                    continue;
                }
                let mut watch_cut = watch_cut.clone();
                tokio::spawn(async move {
                    let Ok(server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch_cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        CutProxy { addr, cut, task }
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts the way to the server.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Restores it.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A minimal blocking HTTP/1.0 request (HTTP/1.0 so the answer is never
/// chunked and ends at EOF): status and body.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let raw = http_raw(port, method, path)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    Ok((status, raw[split + 4..].to_vec()))
}

fn http_head(port: u16, path: &str) -> std::io::Result<String> {
    let raw = http_raw(port, "HEAD", path)?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

fn http_raw(port: u16, method: &str, path: &str) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    // moto answers 403 to anonymous reads of private objects but does not
    // check signatures: any well-formed Authorization header will do.
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, \
         SignedHeaders=host, Signature=0000\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    Ok(raw)
}
