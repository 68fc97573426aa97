//! The runtime of one lumen node: what drives the sans-IO [`lumen_sfu::Sfu`]
//! workers with real sockets, timers and channels, as `quinn` drives
//! `quinn-proto`.
//!
//! [`Node::start`] binds one UDP socket per worker (one worker per core) and
//! starts each on a thread of its own with a tokio runtime of its own
//! (`worker::spawn` says why). Everything above (HTTP signaling, later
//! accounts, chat, the recorder) talks to the workers through a
//! [`NodeHandle`]: typed async commands (`publish`, `subscribe`, `close`,
//! `candidates`, `restart_ice`, `set_layer`, `viewer_state`, `snapshot`)
//! answered by the worker that owns the session, and a stream of
//! [`NodeEvent`]s (stream updated, viewer layer changed, session closed)
//! that the layer above subscribes to. Code that wants a stream's packets
//! rather than a WebRTC session (the recorder) attaches a sink to it:
//! [`NodeHandle::attach_sink`] returns a [`SinkFeed`].
//!
//! Placement: a stream's publisher is pinned to one worker by a hash of its
//! name (its *origin*). Its viewers join the origin until it has
//! [`NodeConfig::worker_spread`] more peers than the least busy worker; then
//! they go to the least busy one, which the origin feeds through a *mirror*
//! of the stream (a sink of the origin's Router, over a bounded channel of
//! packet batches between the two workers).
//!
//! This crate has no HTTP types: it sits below signaling and above the
//! sans-IO core and the UDP syscalls (`lumen-udp`).
#![deny(missing_docs)]

mod event;
mod feed;
mod handle;
mod mirror;
mod placement;
mod sink;
mod worker;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use event::NodeEvent;
pub use handle::{
    ChannelSend, NodeAnswer, NodeError, NodeHandle, SessionRef, ViewerState, WorkerSnapshot,
    merge_streams,
};
pub use sink::{DEFAULT_SINK_QUEUE, FeedEvent, SinkFeed};

/// How to run a node's media workers.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// UDP address of the first worker; worker `i` listens on port + `i`
    /// (port 0: every worker takes a free port).
    pub rtc_addr: SocketAddr,
    /// Address announced in ICE candidates instead of the bound one.
    pub public_ip: Option<IpAddr>,
    /// UDP port announced for the first worker instead of the bound one
    /// (worker `i`: this + `i`), when a NAT, load balancer or proxy forwards
    /// another port to it.
    pub public_port: Option<u16>,
    /// Number of SFU workers (at least one).
    pub workers: usize,
    /// How many more peers a stream's own worker may have than the least
    /// busy one before its new viewers go to another worker (fed by the
    /// stream's worker through a mirror). 0 spreads every stream's viewers
    /// over all workers.
    pub worker_spread: usize,
    /// Remote ICE candidates a session may give (see
    /// [`lumen_sfu::SfuConfig::max_remote_candidates`]).
    pub max_remote_candidates: usize,
    /// m-lines an offer may have ([`lumen_sfu::SfuConfig::max_m_lines`]).
    pub max_m_lines: usize,
    /// Source addresses a session's media may come from
    /// ([`lumen_sfu::SfuConfig::max_addrs_per_session`]).
    pub max_addrs_per_session: usize,
    /// How long a session may take to complete ICE and DTLS before it is
    /// closed ([`lumen_sfu::SfuConfig::connect_timeout`]).
    pub connect_timeout: Duration,
    /// A data channel clients may negotiate out of band on SCTP stream 0
    /// ([`lumen_sfu::SfuConfig::out_of_band_channel`]); default none.
    pub out_of_band_channel: Option<String>,
    /// Estimate the bandwidth of viewers of one-layer streams too
    /// ([`lumen_sfu::SfuConfig::estimate_single_layer`]): on when a
    /// transcoder makes ladders; default off.
    pub estimate_single_layer: bool,
    /// Carry AV1 layers a sink makes and let viewers negotiate AV1
    /// ([`lumen_sfu::SfuConfig::sink_av1`]): on when a transcoder rung is
    /// AV1; default off.
    pub sink_av1: bool,
}

/// Default of [`NodeConfig::worker_spread`]: a stream's first few dozen
/// viewers share its publisher's worker (no hand-over between threads); a
/// bigger audience spreads over every core.
pub const DEFAULT_WORKER_SPREAD: usize = 32;

impl NodeConfig {
    /// Media on UDP 127.0.0.1:8000+, one worker per core.
    pub fn new() -> Self {
        NodeConfig {
            rtc_addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            public_ip: None,
            public_port: None,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            worker_spread: DEFAULT_WORKER_SPREAD,
            max_remote_candidates: lumen_sfu::DEFAULT_MAX_REMOTE_CANDIDATES,
            max_m_lines: lumen_sfu::DEFAULT_MAX_M_LINES,
            max_addrs_per_session: lumen_sfu::DEFAULT_MAX_ADDRS_PER_SESSION,
            connect_timeout: lumen_sfu::DEFAULT_CONNECT_TIMEOUT,
            out_of_band_channel: None,
            estimate_single_layer: false,
            sink_av1: false,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig::new()
    }
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A media socket could not be bound, or the ports run out.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which socket.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running node: its handle, its event stream and its worker tasks.
pub struct Node {
    handle: NodeHandle,
    events: Option<mpsc::UnboundedReceiver<NodeEvent>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Binds every worker's socket and starts the workers. Must be called
    /// inside a tokio runtime.
    pub fn start(config: &NodeConfig) -> Result<Node, StartError> {
        let workers = config.workers.max(1);
        let (stop, stop_rx) = watch::channel(false);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut links = mirror::links(workers).into_iter();
        let mut handles = Vec::with_capacity(workers);
        let mut tasks = Vec::with_capacity(workers);
        for i in 0..workers {
            let addr = nth_port(config.rtc_addr, i, "the media UDP socket")?;
            let socket = lumen_udp::bind_media_socket(addr).map_err(|source| StartError::Bind {
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
                Some(first) => nth_port(
                    SocketAddr::new(local.ip(), first),
                    i,
                    "the announced media port",
                )?
                .port(),
                None => local.port(),
            };
            let announced = SocketAddr::new(config.public_ip.unwrap_or(local.ip()), port);
            let Some(link) = links.next() else {
                break;
            };
            let mut sfu = lumen_sfu::SfuConfig::new(vec![announced]);
            sfu.max_remote_candidates = config.max_remote_candidates;
            sfu.max_m_lines = config.max_m_lines;
            sfu.max_addrs_per_session = config.max_addrs_per_session;
            sfu.connect_timeout = config.connect_timeout;
            sfu.out_of_band_channel = config.out_of_band_channel.clone();
            sfu.estimate_single_layer = config.estimate_single_layer;
            sfu.sink_av1 = config.sink_av1;
            let (handle, task) = worker::spawn(
                i,
                sfu,
                socket,
                (local, announced),
                link,
                events_tx.clone(),
                stop_rx.clone(),
            )
            .map_err(|source| StartError::Bind {
                what: "the media worker's thread",
                addr,
                source,
            })?;
            handles.push(handle);
            tasks.push(task);
        }
        Ok(Node {
            handle: NodeHandle::new(handles, config.worker_spread),
            events: Some(events_rx),
            stop,
            tasks,
        })
    }

    /// A handle for commands; cheap to clone.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// The node's events, in the order each worker produced them. There is
    /// one stream per node: the first call takes it, later calls get `None`.
    /// Whoever takes it must keep reading it (it is unbounded, so a slow
    /// reader holds memory, never a worker).
    pub fn take_events(&mut self) -> Option<mpsc::UnboundedReceiver<NodeEvent>> {
        self.events.take()
    }

    /// Closes every session (their peers get a DTLS close) and waits for the
    /// worker tasks to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// `base` with its port moved up by `i` (port 0 stays 0: any free port).
fn nth_port(base: SocketAddr, i: usize, what: &'static str) -> Result<SocketAddr, StartError> {
    if base.port() == 0 {
        return Ok(base);
    }
    let port = u16::try_from(i)
        .ok()
        .and_then(|i| base.port().checked_add(i))
        .ok_or_else(|| StartError::Bind {
            what,
            addr: base,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "one port per worker runs past 65535",
            ),
        })?;
    Ok(SocketAddr::new(base.ip(), port))
}
