//! The errors of directory operations: a fault of the directory itself
//! (the caller keeps its last view and retries later) apart from a refused
//! relay-link join (the caller places again).

use crate::NodeId;

/// A directory operation that could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The shared store cannot be reached or did not answer in time. The
    /// caller keeps serving from its last view; the heartbeat re-registers
    /// the node when the store is back.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
    /// The store holds a record this version cannot read (another version
    /// of lumen, or a hand edit).
    #[error("directory record unreadable: {0}")]
    Corrupt(String),
    /// A node id or stream name outside the naming rule (API misuse).
    #[error("invalid name {0:?}: 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'")]
    InvalidName(String),
    /// The node has no live registration: send a heartbeat first (or it
    /// expired; the next heartbeat restores it).
    #[error("node {0} is not registered")]
    NotRegistered(NodeId),
    /// A configuration the directory cannot work with (API misuse).
    #[error("invalid directory config: {0}")]
    Config(String),
}

/// Why [`Directory::join`](crate::Directory::join) refused a relay link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The directory failed; nothing changed.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// The parent feeds as many links as its fan-out limit allows (another
    /// child may have taken the last slot since placement): place again
    /// without it.
    #[error("parent {0} has no free fan-out")]
    FanoutFull(NodeId),
    /// The parent is gone or does not carry the stream (any more).
    #[error("parent {0} does not carry the stream")]
    ParentNotCarrying(NodeId),
    /// The parent sits in the joining node's own subtree, or is the node.
    #[error("parent {0} is in the subtree of the joining node")]
    WouldLoop(NodeId),
    /// The joining node is the stream's origin: it has no parent.
    #[error("node is the origin of the stream")]
    IsOrigin,
}
