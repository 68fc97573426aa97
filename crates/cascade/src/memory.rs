//! The in-process directory: the embedded default, a cluster of one.
//!
//! One lock over plain maps; every operation is synchronous under it, so
//! the returned futures are ready at once and never hold the lock across
//! an await. Entries of a node that stopped heartbeating are hidden, not
//! deleted, and show again when it heartbeats: the same outcome as the
//! Redis directory, whose heartbeat re-creates a node's expired keys. The
//! price is that entries of a node id that never comes back stay in memory;
//! in one process that is a handful of ids.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::directory::{Carrier, ChildLink, Claim, DirFuture, Directory, HeartbeatReport};
use crate::{DirectoryError, JoinError, NodeId, NodeInfo, check_stream};

/// The cluster of one (see the module docs).
#[derive(Debug)]
pub struct InProcessDirectory {
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    nodes: HashMap<NodeId, (NodeInfo, Instant)>,
    origins: HashMap<String, NodeId>,
    /// stream -> node -> entry.
    carriers: HashMap<String, BTreeMap<NodeId, Entry>>,
    /// Origins taken from a node while it was expired, for its next heartbeat.
    lost: HashMap<NodeId, Vec<String>>,
}

#[derive(Clone, Debug)]
struct Entry {
    parent: Option<NodeId>,
    depth: u32,
}

impl InProcessDirectory {
    /// A directory whose nodes expire `ttl` after their last heartbeat.
    pub fn new(ttl: Duration) -> InProcessDirectory {
        InProcessDirectory {
            ttl,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock cannot leave the maps half-updated in a
        // way later calls trip over, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for InProcessDirectory {
    fn default() -> Self {
        InProcessDirectory::new(crate::DEFAULT_TTL)
    }
}

impl State {
    fn alive(&self, node: &NodeId, now: Instant) -> bool {
        self.nodes.get(node).is_some_and(|(_, exp)| *exp > now)
    }

    fn live_origin(&self, stream: &str, now: Instant) -> Option<&NodeId> {
        self.origins.get(stream).filter(|n| self.alive(n, now))
    }

    fn live_children(&self, parent: &NodeId, now: Instant) -> Vec<ChildLink> {
        let mut out = Vec::new();
        for (stream, entries) in &self.carriers {
            for (node, e) in entries {
                if e.parent.as_ref() == Some(parent) && self.alive(node, now) {
                    out.push(ChildLink {
                        stream: stream.clone(),
                        child: node.clone(),
                    });
                }
            }
        }
        out.sort();
        out
    }

    fn remove_carrier(&mut self, stream: &str, node: &NodeId) -> Option<Entry> {
        let entries = self.carriers.get_mut(stream)?;
        let e = entries.remove(node);
        if entries.is_empty() {
            self.carriers.remove(stream);
        }
        e
    }

    fn join(
        &mut self,
        stream: &str,
        node: &NodeId,
        parent: &NodeId,
        now: Instant,
    ) -> Result<u32, JoinError> {
        if parent == node {
            return Err(JoinError::WouldLoop(parent.clone()));
        }
        if !self.alive(node, now) {
            return Err(DirectoryError::NotRegistered(node.clone()).into());
        }
        if self.live_origin(stream, now) == Some(node) {
            return Err(JoinError::IsOrigin);
        }
        let entries = self.carriers.get(stream);
        let parent_entry = entries
            .and_then(|m| m.get(parent))
            .filter(|_| self.alive(parent, now))
            .ok_or_else(|| JoinError::ParentNotCarrying(parent.clone()))?;
        // Walk up from the parent: meeting `node` means a loop.
        let mut up = parent_entry.parent.as_ref();
        for _ in 0..crate::placement::WALK_LIMIT {
            let Some(p) = up else { break };
            if p == node {
                return Err(JoinError::WouldLoop(parent.clone()));
            }
            up = entries
                .and_then(|m| m.get(p))
                .and_then(|e| e.parent.as_ref());
        }
        let limit = self.nodes.get(parent).map_or(0, |(i, _)| i.fanout_limit);
        let used = self
            .live_children(parent, now)
            .iter()
            .filter(|l| !(l.stream == stream && &l.child == node))
            .count();
        if used >= limit as usize {
            return Err(JoinError::FanoutFull(parent.clone()));
        }
        let depth = parent_entry.depth + 1;
        self.carriers.entry(stream.to_string()).or_default().insert(
            node.clone(),
            Entry {
                parent: Some(parent.clone()),
                depth,
            },
        );
        Ok(depth)
    }
}

impl Directory for InProcessDirectory {
    fn heartbeat<'a>(&'a self, info: &'a NodeInfo) -> DirFuture<'a, HeartbeatReport> {
        let now = Instant::now();
        let mut st = self.lock();
        let registered = !st.alive(&info.id, now);
        st.nodes
            .insert(info.id.clone(), (info.clone(), now + self.ttl));
        let lost_origins = st.lost.remove(&info.id).unwrap_or_default();
        Box::pin(std::future::ready(Ok(HeartbeatReport {
            registered,
            lost_origins,
        })))
    }

    fn deregister<'a>(&'a self, node: &'a NodeId) -> DirFuture<'a, ()> {
        let mut st = self.lock();
        st.nodes.remove(node);
        st.lost.remove(node);
        st.origins.retain(|_, n| n != node);
        st.carriers.retain(|_, m| {
            m.remove(node);
            !m.is_empty()
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn nodes(&self) -> DirFuture<'_, Vec<NodeInfo>> {
        let now = Instant::now();
        let st = self.lock();
        let out = st
            .nodes
            .values()
            .filter(|(_, exp)| *exp > now)
            .map(|(i, _)| i.clone())
            .collect();
        Box::pin(std::future::ready(Ok(out)))
    }

    fn claim_origin<'a>(&'a self, stream: &'a str, node: &'a NodeId) -> DirFuture<'a, Claim> {
        let r = (|| {
            check_stream(stream)?;
            let now = Instant::now();
            let mut st = self.lock();
            if !st.alive(node, now) {
                return Err(DirectoryError::NotRegistered(node.clone()));
            }
            if let Some(cur) = st.live_origin(stream, now)
                && cur != node
            {
                return Ok(Claim::Held(cur.clone()));
            }
            if let Some(old) = st.origins.insert(stream.to_string(), node.clone())
                && &old != node
            {
                // A dead holder: its depth-0 entry goes, and it hears of
                // the loss when (if) it heartbeats again.
                st.remove_carrier(stream, &old);
                st.lost.entry(old).or_default().push(stream.to_string());
            }
            st.carriers.entry(stream.to_string()).or_default().insert(
                node.clone(),
                Entry {
                    parent: None,
                    depth: 0,
                },
            );
            Ok(Claim::Won)
        })();
        Box::pin(std::future::ready(r))
    }

    fn origin<'a>(&'a self, stream: &'a str) -> DirFuture<'a, Option<NodeId>> {
        let r =
            check_stream(stream).map(|()| self.lock().live_origin(stream, Instant::now()).cloned());
        Box::pin(std::future::ready(r))
    }

    fn release_origin<'a>(&'a self, stream: &'a str, node: &'a NodeId) -> DirFuture<'a, bool> {
        let r = check_stream(stream).map(|()| {
            let mut st = self.lock();
            if st.origins.get(stream) != Some(node) {
                return false;
            }
            st.origins.remove(stream);
            st.remove_carrier(stream, node);
            true
        });
        Box::pin(std::future::ready(r))
    }

    fn carriers<'a>(&'a self, stream: &'a str) -> DirFuture<'a, Vec<Carrier>> {
        let r = check_stream(stream).map(|()| {
            let now = Instant::now();
            let st = self.lock();
            st.carriers
                .get(stream)
                .into_iter()
                .flatten()
                .filter(|(n, _)| st.alive(n, now))
                .map(|(n, e)| Carrier {
                    node: n.clone(),
                    parent: e.parent.clone(),
                    depth: e.depth,
                })
                .collect()
        });
        Box::pin(std::future::ready(r))
    }

    fn join<'a>(
        &'a self,
        stream: &'a str,
        node: &'a NodeId,
        parent: &'a NodeId,
    ) -> DirFuture<'a, u32, JoinError> {
        let r = check_stream(stream)
            .map_err(JoinError::from)
            .and_then(|()| self.lock().join(stream, node, parent, Instant::now()));
        Box::pin(std::future::ready(r))
    }

    fn leave<'a>(&'a self, stream: &'a str, node: &'a NodeId) -> DirFuture<'a, bool> {
        let r = check_stream(stream).map(|()| {
            let mut st = self.lock();
            let is_relay = st
                .carriers
                .get(stream)
                .and_then(|m| m.get(node))
                .is_some_and(|e| e.parent.is_some());
            if is_relay {
                st.remove_carrier(stream, node);
            }
            is_relay
        });
        Box::pin(std::future::ready(r))
    }

    fn children<'a>(&'a self, node: &'a NodeId) -> DirFuture<'a, Vec<ChildLink>> {
        let out = self.lock().live_children(node, Instant::now());
        Box::pin(std::future::ready(Ok(out)))
    }
}
