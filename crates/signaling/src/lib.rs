//! lumen's HTTP side and the tokio shell around the SFU core.
//!
//! [`start`] binds one UDP socket per SFU worker and the HTTP listener, and
//! serves WHIP (RFC 9725), WHEP, the REST API, Prometheus metrics and the
//! embedded web client. Every stream's publisher is pinned to one worker,
//! chosen by a hash of its name; its viewers join that worker until it is
//! busier than the others (see [`Config::worker_spread`]), then the least
//! busy one, which the publisher's worker feeds through a mirror.
#![deny(missing_docs)]

mod api;
mod error;
mod events;
mod gso;
mod http;
mod prom;
mod shell;
mod web;
mod whep_ext;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use error::ApiError;

/// How to run lumen's server.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address (WHIP, WHEP, API, web client).
    pub http_addr: SocketAddr,
    /// UDP address of the first worker; worker `i` listens on port + `i`
    /// (port 0: every worker takes a free port).
    pub rtc_addr: SocketAddr,
    /// Address announced in ICE candidates instead of the bound one.
    pub public_ip: Option<IpAddr>,
    /// UDP port announced for the first worker instead of the bound one
    /// (worker `i`: this + `i`), when a NAT, load balancer or proxy forwards
    /// another port to it.
    pub public_port: Option<u16>,
    /// Where lumen keeps its data.
    pub data_dir: PathBuf,
    /// STUN/TURN URLs announced in `Link: <…>; rel="ice-server"` headers.
    pub ice_servers: Vec<String>,
    /// Number of SFU workers (default: one per core).
    pub workers: usize,
    /// How many more peers a stream's own worker may have than the least
    /// busy one before its new viewers go to another worker (fed by the
    /// stream's worker through a mirror). 0 spreads every stream's viewers
    /// over all workers; a small stream stays on one worker by default.
    pub worker_spread: usize,
}

/// Default of [`Config::worker_spread`]: a stream's first few dozen viewers
/// share its publisher's worker (no hand-over between threads); a bigger
/// audience spreads over every core.
pub const DEFAULT_WORKER_SPREAD: usize = 32;

impl Config {
    /// Embedded defaults: HTTP on 127.0.0.1:8080, media on UDP 8000+, one
    /// worker per core, data in `./lumen-data`.
    pub fn new() -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            rtc_addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            public_ip: None,
            public_port: None,
            data_dir: PathBuf::from("lumen-data"),
            ice_servers: Vec::new(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            worker_spread: DEFAULT_WORKER_SPREAD,
        }
    }

    /// Loopback on free ports, for tests and local tools.
    pub fn ephemeral() -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            rtc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 2,
            ..Config::new()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A socket could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which socket.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running server. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    http_addr: SocketAddr,
    rtc_addrs: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `http://host:port` of the server.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The bound UDP address of each worker.
    pub fn rtc_addrs(&self) -> &[SocketAddr] {
        &self.rtc_addrs
    }

    /// Stops accepting, closes every session and waits for the tasks to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Asks the server to stop without waiting.
    pub fn signal_shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until the server stops (after a shutdown signal).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds every socket and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let (stop, stop_rx) = watch::channel(false);
    let sessions = Arc::new(shell::Sessions::default());
    let hub = Arc::new(shell::Hub::default());
    let mut tasks = Vec::new();
    let mut workers = Vec::new();
    let mut rtc_addrs = Vec::new();
    let mut links = shell::relay_links(config.workers.max(1)).into_iter();
    for i in 0..config.workers.max(1) {
        let mut addr = config.rtc_addr;
        if addr.port() != 0 {
            let port = u16::try_from(i)
                .ok()
                .and_then(|i| addr.port().checked_add(i))
                .ok_or_else(|| StartError::Bind {
                    what: "the media UDP socket",
                    addr,
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "one port per worker runs past 65535",
                    ),
                })?;
            addr.set_port(port);
        }
        let socket = bind_media_socket(addr).map_err(|source| StartError::Bind {
            what: "the media UDP socket",
            addr,
            source,
        })?;
        let local = socket.local_addr().map_err(|source| StartError::Bind {
            what: "the media UDP socket",
            addr,
            source,
        })?;
        let port = match config.public_port {
            Some(first) => u16::try_from(i)
                .ok()
                .and_then(|i| first.checked_add(i))
                .ok_or_else(|| StartError::Bind {
                    what: "the announced media port",
                    addr: local,
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "one public port per worker runs past 65535",
                    ),
                })?,
            None => local.port(),
        };
        let announced = SocketAddr::new(config.public_ip.unwrap_or(local.ip()), port);
        rtc_addrs.push(local);
        let Some(link) = links.next() else {
            break;
        };
        let (handle, task) = shell::spawn_worker(
            i,
            socket,
            announced,
            link,
            sessions.clone(),
            hub.clone(),
            stop_rx.clone(),
        );
        workers.push(handle);
        tasks.push(task);
    }
    let state = Arc::new(http::AppState::new(
        workers,
        sessions,
        hub,
        stop_rx.clone(),
        config.ice_servers.clone(),
        config.worker_spread,
    ));
    let listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| StartError::Bind {
            what: "the HTTP listener",
            addr: config.http_addr,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| StartError::Bind {
        what: "the HTTP listener",
        addr: config.http_addr,
        source,
    })?;
    let app = http::router(state);
    let mut stop_http = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_http.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed");
        }
    }));
    Ok(Running {
        http_addr,
        rtc_addrs,
        stop,
        tasks,
    })
}

/// Socket buffers of a media worker. The kernel default (~200 KiB) drops
/// datagrams when a keyframe burst for many viewers meets a busy worker; the
/// kernel caps the request at `net.core.{r,w}mem_max` silently.
const MEDIA_SOCKET_BUFFER: usize = 8 * 1024 * 1024;

fn bind_media_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(MEDIA_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(MEDIA_SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}
