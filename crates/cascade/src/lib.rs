//! lumen's relay tree: the cluster [`Directory`] that the nodes of a cluster
//! share, and the pure [`placement`] rules that pick a parent for a relay
//! link or an edge for a viewer; [`plan`] is the capacity model of a whole
//! tree (`lumen simulate`).
//!
//! A cluster is a set of `lumen serve` processes. Each one registers itself
//! with a heartbeat ([`spawn_heartbeat`]); a node that misses about three
//! heartbeats drops out of the directory with everything it owned (origin
//! claims, carrier entries). Two implementations:
//!
//! - [`InProcessDirectory`]: the embedded default, a cluster of one (or of
//!   several nodes in one process, for tests). Nothing to configure.
//! - [`RedisDirectory`]: Redis is the only shared state; see its module docs
//!   for the key layout. A node that loses Redis keeps serving what it has:
//!   directory calls fail with [`DirectoryError::Unavailable`], the caller
//!   keeps its last view, and the heartbeat re-creates the node's keys when
//!   Redis is back.
//!
//! The directory records; it does not decide. A node that wants a stream
//! asks [`Directory::carriers`] and [`Directory::nodes`], picks a parent
//! with [`placement::choose_parent`], then [`Directory::join`]s, which
//! re-checks the parent's fan-out atomically and may refuse (another child
//! took the last slot): the caller then places again without that parent.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{sync::Arc, time::Duration};
//! use lumen_cascade::{placement, Claim, Directory, InProcessDirectory, NodeId, NodeInfo};
//!
//! let dir: Arc<dyn Directory> = Arc::new(InProcessDirectory::new(Duration::from_secs(10)));
//! let me = NodeInfo::new(NodeId::new("node-a")?, "eu", "http://10.0.0.1:8080");
//! let hb = lumen_cascade::spawn_heartbeat(dir.clone(), move || me.clone(), Duration::from_secs(2));
//! // A WHIP session landed here: become the origin, or learn who is.
//! match dir.claim_origin("show", &NodeId::new("node-a")?).await? {
//!     Claim::Won => {}
//!     Claim::Held(origin) => println!("redirect WHIP to {origin}"),
//! }
//! // Viewers for a stream this node does not carry: pick a parent.
//! let carriers = dir.carriers("show").await?;
//! let nodes = dir.nodes().await?;
//! let child = NodeId::new("node-b")?;
//! let parent = placement::choose_parent(&child, "us", &carriers, &nodes, &Default::default());
//! # hb.abort(); Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod directory;
mod error;
mod heartbeat;
mod memory;
pub mod placement;
pub mod plan;
mod redis;
pub mod relay;
#[doc(hidden)]
pub mod testing;

pub use client::{LinkStatus, Offered, RelayClient};
pub use directory::{Carrier, ChildLink, Claim, DirFuture, Directory, HeartbeatReport};
pub use error::{DirectoryError, JoinError};
pub use heartbeat::spawn_heartbeat;
pub use memory::InProcessDirectory;
pub use redis::{RedisConfig, RedisDirectory};

use std::fmt;

use serde::{Deserialize, Serialize};

/// The fan-out limit of a node when its config says nothing: how many
/// relay links (child node, stream) it feeds at most.
pub const DEFAULT_FANOUT_LIMIT: u32 = 50;

/// The heartbeat interval when the config says nothing.
pub const DEFAULT_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(2);

/// The time-to-live of a node's entries when the config says nothing:
/// three heartbeats and a second of slack for a slow round trip, so a node
/// that misses three heartbeats is gone.
pub const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(7);

/// A node's name in the cluster: 1 to 64 ASCII letters, digits, `-`, `_`
/// or `.`, the rule of stream names, so neither can contain the `:` and
/// ` ` that Redis keys and members use as separators.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    /// Checks the name.
    pub fn new(id: impl Into<String>) -> Result<NodeId, DirectoryError> {
        let id = id.into();
        if is_name(&id) {
            Ok(NodeId(id))
        } else {
            Err(DirectoryError::InvalidName(id))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for NodeId {
    type Error = DirectoryError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NodeId::new(s)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0
    }
}

/// How busy a node is, as it reports itself with each heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// WHIP, WHEP and relay sessions.
    pub sessions: u32,
    /// CPU busy ratio over the last interval, 0.0 to 1.0 (over all cores).
    pub cpu: f32,
    /// Bits per second sent.
    pub egress_bps: u64,
}

/// What the directory knows about a node: the record its heartbeat writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its name.
    pub id: NodeId,
    /// Its region, from its config (`--region`).
    pub region: String,
    /// Its HTTP base URL (`--public-url`): WHIP, WHEP and the internal
    /// relay endpoint hang off it.
    pub public_url: String,
    /// How busy it is.
    pub load: Load,
    /// Relay links it feeds now, by its own count. The directory's own
    /// count is [`Directory::children`]; [`Directory::join`] enforces the
    /// limit on that one.
    pub fanout_used: u32,
    /// Relay links it may feed.
    pub fanout_limit: u32,
    /// The streams whose origin it is (so a cluster view can list every
    /// stream); absent in records of older nodes.
    #[serde(default)]
    pub streams: Vec<String>,
}

impl NodeInfo {
    /// A node with no load and the default fan-out limit.
    pub fn new(id: NodeId, region: impl Into<String>, public_url: impl Into<String>) -> NodeInfo {
        NodeInfo {
            id,
            region: region.into(),
            public_url: public_url.into(),
            load: Load::default(),
            fanout_used: 0,
            fanout_limit: DEFAULT_FANOUT_LIMIT,
            streams: Vec::new(),
        }
    }

    /// Whether it can feed one more relay link, by its own count.
    pub fn has_fanout(&self) -> bool {
        self.fanout_used < self.fanout_limit
    }
}

/// The one naming rule for node ids and stream names (the account store's
/// stream-name rule, repeated here so this crate does not depend on auth).
pub(crate) fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub(crate) fn check_stream(stream: &str) -> Result<(), DirectoryError> {
    if is_name(stream) {
        Ok(())
    } else {
        Err(DirectoryError::InvalidName(stream.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(NodeId::new("eu-1.a_b").is_ok());
        for bad in ["", "a:b", "a b", ".x", &"x".repeat(65)] {
            assert!(NodeId::new(bad).is_err(), "{bad:?}");
        }
        let json = serde_json::to_string(&NodeId::new("n1").unwrap()).unwrap();
        assert_eq!(json, "\"n1\"");
        assert!(serde_json::from_str::<NodeId>("\"a:b\"").is_err());
    }
}
