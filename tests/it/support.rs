//! A lumen server on loopback for a test, stopped when dropped.

use std::path::PathBuf;

pub struct TestServer {
    running: Option<lumen_signaling::Running>,
    url: String,
    dir: PathBuf,
}

impl TestServer {
    pub fn http_url(&self) -> String {
        self.url.clone()
    }

    /// A fresh token of this server with `publish:*`, valid an hour: the
    /// Bearer for WHIP on any stream (and, as any credential, for WHEP of a
    /// public one).
    pub fn publish_token(&self) -> String {
        let running = self.running.as_ref().expect("running");
        let scopes = lumen_signaling::auth::Scopes::parse("publish:*").expect("scopes");
        running
            .auth()
            .mint("test", &scopes, std::time::Duration::from_secs(3600))
            .expect("a token is minted")
    }

    /// The server's accounts and tokens (to create users and mint tokens
    /// for them in a test).
    pub fn auth(&self) -> &lumen_signaling::auth::Auth {
        self.running.as_ref().expect("running").auth()
    }

    /// The data directory (for `lumen key …` and `lumen token …` run
    /// against this server's database while it runs).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The transcoder's counters.
    pub fn transcoder_stats(&self) -> lumen_signaling::transcoder::TranscoderStats {
        self.running
            .as_ref()
            .map(|r| r.transcoder().stats())
            .unwrap_or_default()
    }

    /// The media worker sockets.
    pub fn rtc_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.running
            .as_ref()
            .map(|r| r.rtc_addrs().to_vec())
            .unwrap_or_default()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.signal_shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn start_server() -> TestServer {
    start_server_with(|_| {}).await
}

/// A server on [`lumen_signaling::Config::ephemeral`] changed by `configure`.
pub async fn start_server_with(configure: impl FnOnce(&mut lumen_signaling::Config)) -> TestServer {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(remove_dirs_of_ended_runs);
    let dir = std::env::temp_dir().join(format!(
        "lumen-e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut config = lumen_signaling::Config::ephemeral();
    config.data_dir = dir.clone();
    configure(&mut config);
    let running = lumen_signaling::start(config)
        .await
        .expect("the lumen server starts");
    let url = running.http_url();
    TestServer {
        running: Some(running),
        url,
        dir,
    }
}

/// Removes the data directories earlier test processes left behind. A
/// server dropped at the end of a test is told to stop, and its directory
/// removed, but its tasks (the recorder's segments, the spool) can still
/// write into it, and recreate it, until the test's runtime is gone. Only
/// directories named by this file (`lumen-e2e-PID-N`) of processes that
/// have ended are removed.
fn remove_dirs_of_ended_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("lumen-e2e-"))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, n)| n.parse::<u32>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        let ended =
            pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists();
        if ended {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
