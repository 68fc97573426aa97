//! lumen's HTTP side: WHIP (RFC 9725) and WHEP with their extensions, the
//! REST API, Prometheus metrics and the embedded web client, in axum.
//!
//! [`start`] starts a media node ([`lumen_node::Node`]: the SFU workers and
//! their sockets) and the HTTP listener, and wires them: handlers command the
//! node through its [`NodeHandle`](lumen_node::NodeHandle), and a task
//! applies the node's events to the session table and the event feeds.
//! Nothing below this crate knows about HTTP.
#![deny(missing_docs)]

mod api;
mod authn;
mod chat;
mod cluster;
mod endpoints;
mod error;
mod events;
mod hub;
mod limits;
mod prom;
mod proxy;
mod recording;
mod relays;
mod request;
mod revocations;
mod routes;
mod server;
mod sessions;
mod state;
mod sync;
#[cfg(test)]
mod test_app;
mod tls;
mod transcoding;
mod v1;
mod vod;
mod web;
mod webhooks;
mod whep_ext;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lumen_node::{Node, NodeConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use chat::ChatSettings;
pub use cluster::{ClusterConfig, DEFAULT_REGION};
pub use error::ApiError;
pub use limits::Limits;
pub use lumen_auth as auth;
pub use lumen_cascade::DEFAULT_FANOUT_LIMIT;
pub use lumen_node::DEFAULT_WORKER_SPREAD;
pub use lumen_recorder as recorder;
pub use lumen_transcoder as transcoder;
pub use proxy::{Cidr, CidrError};
pub use tls::TlsFiles;

/// How to run lumen's server.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address (WHIP, WHEP, API, web client).
    pub http_addr: SocketAddr,
    /// Serve HTTPS with this certificate and key instead of HTTP; plain
    /// HTTP to the same port is then redirected.
    pub tls: Option<TlsFiles>,
    /// Peers (reverse proxies) whose `Forwarded` or `X-Forwarded-For` and
    /// `X-Forwarded-Proto` headers say who the client is; from anyone else
    /// those headers are ignored.
    pub trusted_proxies: Vec<Cidr>,
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
    /// How long a client may take to send a request's headers; also how
    /// long an idle keep-alive connection stays open.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body.
    pub body_timeout: Duration,
    /// Open HTTP connections at most (kept below the file-descriptor
    /// limit, whose soft value is raised to the hard one at start); one
    /// more gets `503` with `Retry-After` at once.
    pub max_connections: usize,
    /// Per-client and total limits on sessions and event-stream readers.
    pub limits: Limits,
    /// Remote ICE candidates a session may give, in its offer and trickled
    /// (then `429`).
    pub max_remote_candidates: usize,
    /// m-lines an offer may have (then `413`).
    pub max_m_lines: usize,
    /// Source addresses a session's media may come from (more are dropped
    /// and counted).
    pub max_addrs_per_session: usize,
    /// How long a session may take to complete ICE and DTLS before it is
    /// closed and, for a publisher, its stream name freed.
    pub connect_timeout: Duration,
    /// Accounts, keys and tokens (its `data_dir` is replaced by this
    /// config's `data_dir`).
    pub auth: lumen_auth::AuthConfig,
    /// The rules chat rooms start with.
    pub chat: ChatSettings,
    /// Recording: the policy, the object store, sealing, the spool,
    /// retention.
    pub recording: lumen_recorder::RecorderConfig,
    /// The ladder made for streams that send one H.264 layer.
    pub transcode: lumen_transcoder::TranscodeConfig,
    /// The cluster this node joins (none: a cluster of one).
    pub cluster: ClusterConfig,
    /// Delete `data_dir` at shutdown (servers made by [`Config::ephemeral`]).
    pub remove_data_dir: bool,
}

/// Default of [`Config::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`Config::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`Config::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

impl Config {
    /// Embedded defaults: HTTP on 127.0.0.1:8080, media on UDP 8000+, one
    /// worker per core, data in `./lumen-data`.
    pub fn new() -> Self {
        let node = NodeConfig::new();
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            trusted_proxies: Vec::new(),
            rtc_addr: node.rtc_addr,
            public_ip: node.public_ip,
            public_port: node.public_port,
            data_dir: PathBuf::from("lumen-data"),
            ice_servers: Vec::new(),
            workers: node.workers,
            worker_spread: node.worker_spread,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            limits: Limits::new(),
            max_remote_candidates: node.max_remote_candidates,
            max_m_lines: node.max_m_lines,
            max_addrs_per_session: node.max_addrs_per_session,
            connect_timeout: node.connect_timeout,
            auth: lumen_auth::AuthConfig::new("lumen-data"),
            chat: ChatSettings::default(),
            recording: lumen_recorder::RecorderConfig::default(),
            transcode: lumen_transcoder::TranscodeConfig::default(),
            cluster: ClusterConfig::default(),
            remove_data_dir: false,
        }
    }

    /// The accounts' part.
    pub fn auth(&self) -> lumen_auth::AuthConfig {
        lumen_auth::AuthConfig {
            data_dir: self.data_dir.clone(),
            ..self.auth.clone()
        }
    }

    /// The media node's part.
    pub fn node(&self) -> NodeConfig {
        NodeConfig {
            rtc_addr: self.rtc_addr,
            public_ip: self.public_ip,
            public_port: self.public_port,
            workers: self.workers,
            worker_spread: self.worker_spread,
            max_remote_candidates: self.max_remote_candidates,
            max_m_lines: self.max_m_lines,
            max_addrs_per_session: self.max_addrs_per_session,
            connect_timeout: self.connect_timeout,
            out_of_band_channel: self.chat.out_of_band.then(|| chat::LABEL.to_string()),
            // Rungs come after a stream's first viewers joined.
            estimate_single_layer: self.transcode.enabled,
            // An AV1 rung needs the SFU to carry AV1 layers.
            sink_av1: self.transcode.has_av1(),
        }
    }

    /// Loopback on free ports with a fresh data directory (deleted at
    /// shutdown), for tests and local tools: every client is on one
    /// address there, so the per-client limits are off, and transcoding is
    /// off (turn it on with `transcode.enabled`). Credentials are checked
    /// as always: create them through [`Running::auth`].
    pub fn ephemeral() -> Self {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nonce: u64 = rand::random();
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            rtc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 2,
            limits: Limits::unlimited(),
            data_dir: std::env::temp_dir().join(format!(
                "lumen-ephemeral-{}-{n}-{nonce:x}",
                std::process::id()
            )),
            remove_data_dir: true,
            // No ladder unless a test asks for one: a 720p ladder costs a
            // third of a core, and it changes which layer an automatic
            // viewer of a single-layer stream starts on.
            transcode: lumen_transcoder::TranscodeConfig {
                enabled: false,
                ..Default::default()
            },
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
    /// The media node could not start.
    #[error(transparent)]
    Node(#[from] lumen_node::StartError),
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
    /// A TLS certificate or key file is unreadable or unusable.
    #[error("cannot load the TLS {what} from {path}: {reason}")]
    Tls {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The account store could not be opened.
    #[error("cannot open the account store: {0}")]
    Auth(#[from] lumen_auth::AuthError),
    /// The recorder could not start (its store, keys or spool).
    #[error("cannot start the recorder: {0}")]
    Recorder(#[from] lumen_recorder::RecorderError),
    /// The cluster settings are unusable (a bad node name, a bad Redis URL).
    #[error("cannot join the cluster: {0}")]
    Cluster(String),
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
    /// This node's entry in its cluster, and the task that keeps it fresh.
    heartbeat: JoinHandle<()>,
    cluster: Arc<cluster::Cluster>,
    sessions: Arc<sessions::Sessions>,
    http_addr: SocketAddr,
    tls: bool,
    rtc_addrs: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    node: Node,
    tasks: Vec<JoinHandle<()>>,
    auth: lumen_auth::Auth,
    recorder: lumen_recorder::Recorder,
    transcoder: lumen_transcoder::Transcoder,
    remove_data_dir: Option<PathBuf>,
}

impl Running {
    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `http://host:port` of the server (`https://` with TLS on).
    pub fn http_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.http_addr)
    }

    /// The bound UDP address of each worker.
    pub fn rtc_addrs(&self) -> &[SocketAddr] {
        &self.rtc_addrs
    }

    /// The account service (users, streams, keys, tokens) this server
    /// checks credentials with.
    pub fn auth(&self) -> &lumen_auth::Auth {
        &self.auth
    }

    /// The recorder.
    pub fn recorder(&self) -> &lumen_recorder::Recorder {
        &self.recorder
    }

    /// The transcoder.
    pub fn transcoder(&self) -> &lumen_transcoder::Transcoder {
        &self.transcoder
    }

    /// When no admin exists yet: the one-time setup URL (a fresh code,
    /// valid an hour) where the first admin chooses a password.
    pub async fn setup_url(&self) -> Result<Option<String>, lumen_auth::AuthError> {
        Ok(self
            .auth
            .setup_code()
            .await?
            .map(|code| format!("{}/setup?code={code}", self.http_url())))
    }

    /// Stops accepting, closes every session and waits for the tasks to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.wait().await;
    }

    /// Drains, then stops (a node of a cluster on SIGTERM): takes no new
    /// sessions or relay children (`/readyz` answers 503), leaves the
    /// cluster's directory, tells its viewers to reconnect to another node
    /// (the WHEP `reconnect` event with that node's URL), ends the relay
    /// links it feeds so their children re-parent, and stops once every
    /// session has ended or `deadline` has passed.
    pub async fn drain(self, deadline: std::time::Duration) {
        // No heartbeat may register the node again once it has left.
        self.heartbeat.abort();
        cluster::drain(&self.cluster).await;
        let until = tokio::time::Instant::now() + deadline;
        while self.sessions.len() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        tracing::info!(left = self.sessions.len(), "drained; stopping");
        self.shutdown().await;
    }

    /// Asks the server to stop without waiting.
    pub fn signal_shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until the server stops (after a shutdown signal): the HTTP
    /// server first, then the node closes every session.
    pub async fn wait(mut self) {
        // The HTTP task ends when the stop signal is seen.
        let http = self.tasks.remove(0);
        let _ = http.await;
        // Out of the directory at once: other nodes stop sending viewers
        // and children here.
        self.heartbeat.abort();
        let me = self.cluster.me.clone();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            self.cluster.dir.deregister(&me),
        )
        .await;
        // Recordings end (their last fragments written, then finalised,
        // within bounds) while the node still feeds them.
        self.recorder.shutdown().await;
        self.transcoder.shutdown().await;
        self.node.shutdown().await;
        // The event follower ends with the node's event stream.
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(dir) = self.remove_data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Binds every socket and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    // Before any socket: a bad certificate should stop nothing half-started.
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    // The HTTP port first: if it is taken, no worker has started.
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
    let auth = lumen_auth::Auth::open(config.auth()).await?;
    let mut node = Node::start(&config.node())?;
    let recorder = lumen_recorder::Recorder::start(
        config.recording.clone(),
        &config.data_dir,
        auth.clone(),
        node.handle(),
    )
    .await?;
    let transcoder = lumen_transcoder::Transcoder::start(config.transcode.clone(), node.handle());
    let rtc_addrs = node.handle().local_addrs();
    let (stop, stop_rx) = watch::channel(false);
    let sessions = Arc::new(sessions::Sessions::default());
    let session_table = sessions.clone();
    let hub = Arc::new(hub::Hub::default());
    let mut state = state::AppState::new(
        node.handle(),
        auth.clone(),
        sessions.clone(),
        hub.clone(),
        stop_rx.clone(),
        &config.ice_servers,
    );
    state.body_timeout = config.body_timeout;
    state.recorder = Some(recorder.clone());
    state.transcoder = Some(transcoder.clone());
    let chat_queue = chat::Queue::new();
    state.chat = chat_queue.handle();
    state.limits = config.limits.clone();
    // Relay links bind where the media does (loopback by default).
    let media_ip = config
        .public_ip
        .or(Some(config.rtc_addr.ip()).filter(|ip| !ip.is_unspecified()))
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let (cluster, heartbeat) = cluster::join(
        &config.cluster,
        http_addr,
        tls.is_some(),
        media_ip,
        sessions.clone(),
    )?;
    state.cluster = cluster.clone();
    let refused_connections = state.refusals.connections.clone();
    let state = Arc::new(state);
    let cluster_tap = relays::Tap::new(state.clone());
    let max_connections = server::connection_cap(config.max_connections, server::raise_nofile());

    let app = routes::router(state.clone());
    let https = tls.is_some();
    let listening = server::Listening {
        max_connections,
        header_timeout: config.header_timeout,
        refused: refused_connections,
        tls,
        trusted_proxies: config.trusted_proxies.clone().into(),
    };
    let mut tasks = vec![tokio::spawn(server::serve(
        listener,
        app,
        listening,
        stop_rx.clone(),
    ))];
    tasks.push(tokio::spawn(revocations::follow(
        auth.clone(),
        sessions.clone(),
        node.handle(),
        stop_rx.clone(),
    )));
    tasks.push(lumen_auth::webhooks::spawn_deliverer(
        auth.clone(),
        stop_rx.clone(),
    ));
    if let Some(events) = node.take_events() {
        // The emitter ends after the follower, once it has queued the
        // events of the node's shutdown.
        let (tap, emitter) = webhooks::tap(auth.clone());
        tasks.push(emitter);
        let (chat, rooms) = chat::tap(chat_queue, auth.clone(), node.handle(), config.chat.clone());
        tasks.push(rooms);
        tasks.push(tokio::spawn(hub::follow_observed(
            events,
            sessions,
            hub,
            (
                tap,
                (
                    chat,
                    (
                        recording::Tap::new(recorder.clone()),
                        (transcoding::Tap::new(transcoder.clone()), cluster_tap),
                    ),
                ),
            ),
        )));
    }
    Ok(Running {
        heartbeat,
        cluster,
        sessions: session_table,
        http_addr,
        tls: https,
        rtc_addrs,
        stop,
        node,
        tasks,
        auth,
        recorder,
        transcoder,
        remove_data_dir: config.remove_data_dir.then(|| config.data_dir.clone()),
    })
}
