//! Headless Chromium for end-to-end tests: finds chromedriver and chromium,
//! runs chromedriver on a free loopback port, opens WebDriver sessions with a
//! fresh profile each, and tears all of it down in `Drop`, even after a
//! failed assertion (sessions are deleted over plain blocking HTTP, so no
//! async runtime is needed at that point).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Flags for a quiet, deterministic headless browser with a fake camera and
/// microphone that needs no permission prompt and may autoplay with sound.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,800",
];

/// A running chromedriver and the browser sessions opened through it.
pub struct ChromeDriver {
    child: Child,
    port: u16,
    dir: PathBuf,
    sessions: Mutex<Vec<Opened>>,
}

struct Opened {
    id: Option<String>,
    profile: PathBuf,
}

impl ChromeDriver {
    /// Starts chromedriver, or returns `None` after a loud skip message when
    /// chromium or chromedriver is not installed. With `LUMEN_REQUIRE_ALL=1`
    /// (CI) a missing browser is a failure instead.
    pub async fn start() -> Option<ChromeDriver> {
        let missing: Vec<&str> = [CHROMEDRIVER, CHROMIUM]
            .into_iter()
            .filter(|p| !Path::new(p).exists())
            .collect();
        if !missing.is_empty() {
            if std::env::var("LUMEN_REQUIRE_ALL").is_ok_and(|v| v == "1") {
                panic!(
                    "LUMEN_REQUIRE_ALL=1 but {missing:?} not found (apt-get install chromium chromium-driver)"
                );
            }
            eprintln!();
            eprintln!("==================================================================");
            eprintln!("SKIPPED: chromium/chromedriver not installed ({missing:?} missing)");
            eprintln!("         apt-get install chromium chromium-driver to run this test");
            eprintln!("==================================================================");
            eprintln!();
            return None;
        }

        let dir = unique_temp_dir("lumen-chromedriver");
        std::fs::create_dir_all(&dir).expect("create the chromedriver temp dir");
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let driver = ChromeDriver {
            child,
            port,
            dir,
            sessions: Mutex::new(Vec::new()),
        };

        // Ready when /status answers.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if http(port, "GET", "/status").is_ok_and(|r| r.contains("\"ready\"")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on port {port} within 15 s; log: {}",
                driver.log_path().display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(driver)
    }

    /// `http://127.0.0.1:PORT` of the WebDriver endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// chromedriver's log, for failure messages.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("chromedriver.log")
    }

    /// Opens a new browser (own process, own fresh profile).
    pub async fn new_session(&self) -> Client {
        self.new_session_with(&[]).await
    }

    /// [`ChromeDriver::new_session`] with more command-line flags.
    pub async fn new_session_with(&self, extra: &[&str]) -> Client {
        static N: AtomicU32 = AtomicU32::new(0);
        let profile = self
            .dir
            .join(format!("profile-{}", N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&profile).expect("create a browser profile dir");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(extra.iter().map(|a| a.to_string()));

        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "open a chromium session: {e}; chromedriver log: {}",
                    self.log_path().display()
                )
            });
        let id = client.session_id().await.ok().flatten();
        self.sessions
            .lock()
            .expect("sessions lock")
            .push(Opened { id, profile });
        client
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // Quit every browser the test did not close itself; a deleted
        // session answers 404 at once.
        let opened = match self.sessions.get_mut() {
            Ok(s) => std::mem::take(s),
            Err(poisoned) => std::mem::take(poisoned.into_inner()),
        };
        for o in &opened {
            if let Some(id) = &o.id {
                let _ = http(self.port, "DELETE", &format!("/session/{id}"));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A browser that outlived its driver (the DELETE failed) would keep
        // running: its profile's SingletonLock names its pid.
        for o in &opened {
            kill_profile_owner(&o.profile);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that was free a moment ago. chromedriver takes a port number, not
/// a socket, so there is a small window in which another process could grab it.
fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free loopback port");
    l.local_addr().expect("local addr").port()
}

fn unique_temp_dir(prefix: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ))
}

/// One blocking HTTP/1.1 request to chromedriver; returns the whole answer.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    // chromedriver keeps the connection open despite `Connection: close`,
    // so read exactly one answer: the head, then Content-Length bytes.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + length {
                break;
            }
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn kill_profile_owner(profile: &Path) {
    let Ok(target) = std::fs::read_link(profile.join("SingletonLock")) else {
        return;
    };
    let Some(pid) = target
        .to_string_lossy()
        .rsplit('-')
        .next()
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return;
    };
    // Only a process that is this profile's browser: pids get reused.
    let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*profile.to_string_lossy()));
    if ours {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
    }
}
