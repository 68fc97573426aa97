//! `lumen serve` as a child process, for a bench that needs a server set up
//! its own way. lumen-tools does not link the server: it measures one over
//! HTTP and UDP like any other, so it starts the `lumen` binary it runs in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long the server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `lumen serve`, killed when dropped.
pub(crate) struct ChildServer {
    child: Child,
    http_addr: SocketAddr,
    rtc_addr: SocketAddr,
    dir: PathBuf,
    exe: PathBuf,
}

impl ChildServer {
    /// Starts `exe serve` on free loopback ports with one media worker (which
    /// announces `public_port` in its ICE candidates, if given, for a proxy
    /// in front of it) and its default limits. Its data directory (named
    /// after `tag`) is also its working directory, and no `LUMEN_*` variable
    /// of this process reaches it, so neither a `lumen.toml` nor the
    /// caller's environment changes the scene. Returns once it accepts HTTP.
    pub(crate) async fn start(
        exe: &Path,
        public_port: Option<u16>,
        tag: &str,
    ) -> anyhow::Result<ChildServer> {
        let http_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let rtc_addr = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        let dir = std::env::temp_dir().join(format!("lumen-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .args(["--http-addr", &http_addr.to_string()])
            .args(["--rtc-addr", &rtc_addr.to_string()])
            .args(["--workers", "1"])
            .arg("--data-dir")
            .arg(&dir)
            .current_dir(&dir)
            // Its banner would mix with the bench's table; its log goes
            // where this process's goes, as when the server ran inside it.
            .stdout(Stdio::null());
        if let Some(port) = public_port {
            cmd.args(["--public-port", &port.to_string()]);
        }
        clean_env(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} serve", exe.display()))?;
        let mut server = ChildServer {
            child,
            http_addr,
            rtc_addr,
            dir,
            exe: exe.to_path_buf(),
        };
        let until = Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(http_addr).await.is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("lumen serve exited before listening: {status}");
            }
            if Instant::now() > until {
                bail!("lumen serve did not listen on {http_addr} within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    /// A token of this server with `scope` (`publish:NAME`), minted by
    /// `lumen token mint` against its data directory, as an operator would.
    pub(crate) fn mint(&self, scope: &str) -> anyhow::Result<String> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(["token", "mint", "--scope", scope, "--ttl", "1d"])
            .arg("--data-dir")
            .arg(&self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        clean_env(&mut cmd);
        let out = cmd
            .output()
            .with_context(|| format!("running {} token mint", self.exe.display()))?;
        if !out.status.success() {
            bail!(
                "lumen token mint failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .context("lumen token mint printed no token")
    }

    /// The server's process id (for `/proc`).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The HTTP listener's address.
    pub(crate) fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Base URL of the HTTP side.
    pub(crate) fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The media worker's socket.
    pub(crate) fn rtc_addr(&self) -> SocketAddr {
        self.rtc_addr
    }
}

/// No `LUMEN_*` variable (nor `DATABASE_URL`) of this process reaches a
/// child: the scene is the bench's own.
fn clean_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("LUMEN_") || n == "DATABASE_URL" {
            cmd.env_remove(name);
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
