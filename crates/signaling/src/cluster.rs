//! This node in its cluster: its entry in the [`Directory`] (kept fresh
//! by a heartbeat), the relay links it feeds and the streams it carries,
//! and draining. The HTTP side of all this (the internal relay endpoint,
//! carrying a stream for a viewer, healing, redirects, readiness) is in
//! the `relays` module.
//!
//! Without `--redis-url` the directory is in-process and the node is a
//! cluster of one: every stream's origin is here or nowhere, so none of the
//! relay paths runs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lumen_cascade::relay::{PendingRelay, RelayLink};
use lumen_cascade::{Directory, NodeId, NodeInfo};

use crate::sessions::Sessions;

/// How long an offered link waits for its child's answer.
const PENDING_TTL: Duration = Duration::from_secs(10);

/// A node's region when its config names none.
pub const DEFAULT_REGION: &str = "default";

/// The cluster settings of `lumen serve`.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// `redis://…`: join the cluster whose directory lives there. `None`:
    /// a cluster of one.
    pub redis_url: Option<String>,
    /// This node's name in the cluster (default: made from the host name
    /// and HTTP port).
    pub node_id: Option<String>,
    /// This node's region (default `default`).
    pub region: Option<String>,
    /// The URL other nodes and redirected clients reach this node at
    /// (default: the HTTP listener's URL).
    pub public_url: Option<String>,
    /// How many relay links this node feeds at most.
    pub fanout_limit: Option<u32>,
    /// How long a drain (SIGTERM) may take before the node stops anyway.
    pub drain_timeout: Option<std::time::Duration>,
}

/// This node's cluster state.
pub(crate) struct Cluster {
    pub dir: Arc<dyn Directory>,
    pub me: NodeId,
    pub region: String,
    pub public_url: String,
    pub fanout_limit: u32,
    /// Where relay links bind their sockets.
    pub media_ip: IpAddr,
    /// For the parents' relay endpoints.
    pub client: lumen_cascade::RelayClient,
    pub next_link: AtomicU64,
    /// Parent side: links offered or running, by number.
    pub out: Mutex<HashMap<u64, Outbound>>,
    /// Child side: the streams carried from a parent.
    pub carried: tokio::sync::Mutex<HashMap<String, Carried>>,
    /// The node is draining: it takes no new sessions.
    pub draining: AtomicBool,
    /// Set when draining: the base URL of the node viewers move to.
    pub moved: tokio::sync::watch::Sender<Option<String>>,
}

/// A relay link this node feeds.
pub(crate) enum Outbound {
    /// Offered, waiting for the child's answer. Boxed: a str0m `Rtc` is
    /// some kilobytes.
    Offered {
        relay: Box<PendingRelay>,
        since: Instant,
    },
    Running {
        stream: String,
        link: RelayLink,
    },
}

/// A stream this node carries from a parent.
pub(crate) struct Carried {
    /// The parent now (`None` while re-parenting).
    pub parent: Arc<Mutex<Option<NodeId>>>,
    /// The task that watches the link and heals it.
    pub task: tokio::task::JoinHandle<()>,
}

impl Cluster {
    pub(crate) fn new(
        dir: Arc<dyn Directory>,
        me: NodeId,
        region: String,
        public_url: String,
        fanout_limit: u32,
        media_ip: IpAddr,
    ) -> Cluster {
        Cluster {
            dir,
            me,
            region,
            public_url,
            fanout_limit,
            media_ip,
            client: lumen_cascade::RelayClient::new(),
            next_link: AtomicU64::new(1),
            out: Mutex::new(HashMap::new()),
            carried: tokio::sync::Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            moved: tokio::sync::watch::Sender::new(None),
        }
    }

    /// A cluster of one, on an in-process directory: what unit tests' apps
    /// get before `start` sets the configured one.
    pub(crate) fn alone() -> Cluster {
        let me = NodeId::new("local").unwrap_or_else(|_| unreachable!("a valid name"));
        Cluster::new(
            Arc::new(lumen_cascade::InProcessDirectory::new(
                lumen_cascade::DEFAULT_TTL,
            )),
            me,
            DEFAULT_REGION.to_string(),
            String::new(),
            lumen_cascade::DEFAULT_FANOUT_LIMIT,
            IpAddr::from([127, 0, 0, 1]),
        )
    }

    /// This node as the directory shows it, with its relay links counted.
    pub(crate) fn info(&self, sessions: &Sessions) -> NodeInfo {
        let mut info = NodeInfo::new(self.me.clone(), &self.region, &self.public_url);
        info.fanout_limit = self.fanout_limit;
        info.fanout_used = self.links_running() as u32;
        info.load.sessions = u32::try_from(sessions.len()).unwrap_or(u32::MAX);
        info.streams = sessions.published();
        info
    }

    pub(crate) fn links_running(&self) -> usize {
        lock(&self.out)
            .values()
            .filter(|o| matches!(o, Outbound::Running { link, .. } if !link.is_finished()))
            .count()
    }

    /// Relay links running for `stream` (its children here).
    pub(crate) fn children_of(&self, stream: &str) -> usize {
        lock(&self.out)
            .values()
            .filter(|o| matches!(o, Outbound::Running { stream: s, link } if s == stream && !link.is_finished()))
            .count()
    }

    /// Forgets offers never answered and links that ended.
    pub(crate) fn sweep(&self) {
        lock(&self.out).retain(|_, o| match o {
            Outbound::Offered { since, .. } => since.elapsed() < PENDING_TTL,
            Outbound::Running { link, .. } => !link.is_finished(),
        });
    }
}

/// Joins the configured cluster (a cluster of one without a Redis URL):
/// this node's entry, kept fresh by a heartbeat task (abort it at
/// shutdown).
pub(crate) fn join(
    config: &ClusterConfig,
    http_addr: std::net::SocketAddr,
    https: bool,
    media_ip: IpAddr,
    sessions: Arc<Sessions>,
) -> Result<(Arc<Cluster>, tokio::task::JoinHandle<()>), crate::StartError> {
    let bad = |e: lumen_cascade::DirectoryError| crate::StartError::Cluster(e.to_string());
    let scheme = if https { "https" } else { "http" };
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{http_addr}"));
    let id = match &config.node_id {
        Some(id) => id.clone(),
        None => default_node_id(http_addr.port()),
    };
    let me = NodeId::new(id).map_err(bad)?;
    let dir: Arc<dyn Directory> = match &config.redis_url {
        Some(url) => Arc::new(
            lumen_cascade::RedisDirectory::new(lumen_cascade::RedisConfig::new(url.clone()))
                .map_err(bad)?,
        ),
        None => Arc::new(lumen_cascade::InProcessDirectory::new(
            lumen_cascade::DEFAULT_TTL,
        )),
    };
    let cluster = Arc::new(Cluster::new(
        dir.clone(),
        me,
        config
            .region
            .clone()
            .unwrap_or_else(|| DEFAULT_REGION.to_string()),
        public_url,
        config
            .fanout_limit
            .unwrap_or(lumen_cascade::DEFAULT_FANOUT_LIMIT),
        media_ip,
    ));
    let c = cluster.clone();
    let heartbeat = lumen_cascade::spawn_heartbeat(
        dir,
        move || c.info(&sessions),
        lumen_cascade::DEFAULT_HEARTBEAT,
    );
    Ok((cluster, heartbeat))
}

/// `<host name>-<HTTP port>`, with what a node name cannot hold dropped.
fn default_node_id(port: u16) -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(48)
        .collect();
    let host = host.trim_start_matches('.');
    if host.is_empty() {
        format!("node-{port}")
    } else {
        format!("{host}-{port}")
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Draining: takes no more sessions or children, leaves the directory (no
/// node places anything here any more), tells every viewer's event stream
/// to reconnect to a sibling (in this region if one is there, the least
/// busy), and ends the relay links it feeds, whose children re-parent at
/// once (this node's readiness probe says 503). Answers the sibling.
pub(crate) async fn drain(cluster: &Cluster) -> Option<String> {
    cluster.draining.store(true, Ordering::Relaxed);
    let nodes = cluster.dir.nodes().await.unwrap_or_default();
    let _ = cluster.dir.deregister(&cluster.me).await;
    let sibling = nodes
        .iter()
        .filter(|n| n.id != cluster.me)
        .min_by(|a, b| {
            (a.region != cluster.region)
                .cmp(&(b.region != cluster.region))
                .then(a.load.sessions.cmp(&b.load.sessions))
                .then(a.id.cmp(&b.id))
        })
        .map(|n| n.public_url.trim_end_matches('/').to_string());
    if let Some(s) = &sibling {
        tracing::info!(sibling = %s, "draining: viewers move to {s}");
        cluster.moved.send_replace(Some(s.clone()));
    } else {
        tracing::warn!(
            "draining with no other node in the cluster: viewers are told to reconnect here"
        );
    }
    let links: Vec<Outbound> = lock(&cluster.out).drain().map(|(_, o)| o).collect();
    for o in links {
        match o {
            Outbound::Running { link, .. } => link.close().await,
            Outbound::Offered { relay, .. } => relay.abandon().await,
        }
    }
    sibling
}
