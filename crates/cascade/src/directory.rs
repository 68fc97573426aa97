//! The `Directory` trait: the cluster's shared view of nodes, stream
//! origins and the relay tree, behind one object-safe interface so
//! signaling and the node runtime hold an `Arc<dyn Directory>` whichever
//! implementation the config chose.

use std::future::Future;
use std::pin::Pin;

use crate::{DirectoryError, JoinError, NodeId, NodeInfo};

/// The future of a directory operation. Boxed so that `Directory` stays
/// object-safe (`async fn` in traits is not, yet).
pub type DirFuture<'a, T, E = DirectoryError> =
    Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'a>>;

/// The answer to [`Directory::claim_origin`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The caller is the stream's origin now (or was already).
    Won,
    /// Another live node is; WHIP goes there.
    Held(NodeId),
}

/// A node carrying a stream, a vertex of the stream's relay tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carrier {
    /// The node.
    pub node: NodeId,
    /// The node that feeds it; `None` for the origin. The parent may have
    /// died since: healing looks it up in [`Directory::nodes`].
    pub parent: Option<NodeId>,
    /// Hops from the origin (0 for the origin), as of its last join; a
    /// re-parented ancestor does not update its descendants' depths.
    pub depth: u32,
}

/// One relay link a node feeds: a (stream, child) pair, a unit of fan-out.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChildLink {
    /// The stream.
    pub stream: String,
    /// The child node.
    pub child: NodeId,
}

/// What a heartbeat found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatReport {
    /// The node had no live registration before this heartbeat: its first
    /// one, or it had expired, or the store lost its data (a Redis
    /// restart). Its origin claims and carrier entries were re-created.
    pub registered: bool,
    /// Streams this node had claimed whose origin another node took while
    /// this one was expired. The node is no longer their origin.
    pub lost_origins: Vec<String>,
}

/// The cluster directory. Every operation is one atomic step in the store
/// (a Lua script for Redis, one lock for the in-process one), so racing
/// nodes see a consistent tree.
///
/// Entries owned by a node (its registration, origin claims and carrier
/// entries) live as long as the node heartbeats: about the TTL after its
/// last heartbeat they are gone, and a heartbeat after an outage restores
/// the ones this process made.
pub trait Directory: Send + Sync + 'static {
    /// Registers the node or refreshes its record and all its entries.
    /// Call it every heartbeat interval ([`spawn_heartbeat`](crate::spawn_heartbeat)).
    fn heartbeat<'a>(&'a self, info: &'a NodeInfo) -> DirFuture<'a, HeartbeatReport>;

    /// Removes the node with its origin claims and carrier entries at
    /// once (a drained node leaving), instead of waiting for the TTL.
    fn deregister<'a>(&'a self, node: &'a NodeId) -> DirFuture<'a, ()>;

    /// The live nodes, in no particular order.
    fn nodes(&self) -> DirFuture<'_, Vec<NodeInfo>>;

    /// Makes `node` the origin of `stream` unless another live node is:
    /// of racing publishers exactly one wins. The winner becomes the
    /// stream's carrier at depth 0 (if it was a relay of the stream, that
    /// link is dropped). `node` must be registered.
    fn claim_origin<'a>(&'a self, stream: &'a str, node: &'a NodeId) -> DirFuture<'a, Claim>;

    /// The live origin of `stream`, if any.
    fn origin<'a>(&'a self, stream: &'a str) -> DirFuture<'a, Option<NodeId>>;

    /// Ends `node`'s origin claim on `stream` (and its depth-0 entry).
    /// `false` when `node` did not hold it: nothing changed.
    fn release_origin<'a>(&'a self, stream: &'a str, node: &'a NodeId) -> DirFuture<'a, bool>;

    /// The live nodes carrying `stream`, the origin among them at depth 0.
    fn carriers<'a>(&'a self, stream: &'a str) -> DirFuture<'a, Vec<Carrier>>;

    /// Records that `node` carries `stream` fed by `parent`, and returns
    /// its depth (the parent's plus one). Atomically checks that the
    /// parent is live and carries the stream, that it has a free fan-out
    /// slot (links of a child already under it do not count twice), and
    /// that it is not in `node`'s subtree. Joining again under another
    /// parent re-parents (healing): the old parent's slot is freed.
    fn join<'a>(
        &'a self,
        stream: &'a str,
        node: &'a NodeId,
        parent: &'a NodeId,
    ) -> DirFuture<'a, u32, JoinError>;

    /// Removes `node`'s relay entry for `stream`. `false` when it had
    /// none (the origin leaves with [`Directory::release_origin`]).
    fn leave<'a>(&'a self, stream: &'a str, node: &'a NodeId) -> DirFuture<'a, bool>;

    /// The live relay links `node` feeds: its fan-out used.
    fn children<'a>(&'a self, node: &'a NodeId) -> DirFuture<'a, Vec<ChildLink>>;
}
