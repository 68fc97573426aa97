//! Placement: which node feeds a new relay link, and which node should
//! serve a viewer. Pure functions of the directory's view (no I/O, no
//! clock), so the rules are unit-tested here and the caller decides what
//! to do with a stale view (a refused [`Directory::join`](crate::Directory::join)
//! means: place again without that parent).
//!
//! # Parent of a relay link ([`choose_parent`])
//!
//! A candidate is a carrier of the stream that
//! - is not the child itself, and not in the child's subtree (walking up
//!   the candidate's parents never meets the child), so no loop forms when
//!   a node re-parents during healing;
//! - is live (listed in `nodes`) and has a free fan-out slot by its own
//!   count (`fanout_used < fanout_limit`);
//! - would put the child no deeper than [`Policy::max_depth`];
//! - is not busier than [`Policy::max_cpu`] (the origin is exempt when it
//!   is the last resort: it always feeds what it has slots for).
//!
//! Among candidates, in order:
//! 1. one in the child's region: the shallowest, then the least loaded
//!    (fills the tree breadth-first, keeping hops few);
//! 2. else one in the region(s) nearest by the configured latency map: the
//!    least loaded, then the shallowest;
//! 3. else the origin;
//! 4. else the least loaded of the rest (regions without a latency entry).
//!
//! "Load" is the larger of CPU ratio and fan-out ratio. Ties break on the
//! node id so every node computes the same answer from the same view.
//!
//! # Edge for a viewer ([`choose_edge`])
//!
//! Nodes with CPU to spare (≤ [`Policy::max_cpu`]) in the viewer's region;
//! if there is none, in the nearest region by latency that has one. Among
//! them a node already carrying the stream wins (the viewer costs no new
//! relay link), then the least loaded (CPU, then sessions). `None` when no
//! node has room: the node that got the request serves it or answers 503.

use std::collections::HashMap;

use crate::{Carrier, NodeId, NodeInfo};

/// How far up the parent chain a loop check walks; deeper than any tree
/// [`Policy::max_depth`] allows, and a bound on a corrupt (cyclic) view.
pub(crate) const WALK_LIMIT: usize = 64;

/// The knobs of placement.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Deepest a relay may sit (the origin is depth 0). Each hop adds up
    /// to ~1 ms plus the link's latency, and one more node whose death
    /// makes the subtree heal.
    pub max_depth: u32,
    /// A node whose CPU ratio is above this takes no new child or viewer.
    pub max_cpu: f32,
    /// One-way latency between regions.
    pub latency: LatencyMap,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_depth: 6,
            max_cpu: 0.85,
            latency: LatencyMap::default(),
        }
    }
}

/// Configured latency between regions, in milliseconds, symmetric. A
/// region is at 0 ms from itself; an absent pair is unknown (placed last).
#[derive(Clone, Debug, Default)]
pub struct LatencyMap {
    ms: HashMap<(String, String), u32>,
}

impl LatencyMap {
    /// An empty map.
    pub fn new() -> LatencyMap {
        LatencyMap::default()
    }

    /// Sets the latency between `a` and `b` (both ways).
    pub fn set(&mut self, a: &str, b: &str, ms: u32) -> &mut Self {
        self.ms.insert(Self::pair(a, b), ms);
        self
    }

    /// The latency between `a` and `b`, if known.
    pub fn get(&self, a: &str, b: &str) -> Option<u32> {
        if a == b {
            Some(0)
        } else {
            self.ms.get(&Self::pair(a, b)).copied()
        }
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        if a <= b {
            (a.to_string(), b.to_string())
        } else {
            (b.to_string(), a.to_string())
        }
    }
}

/// The parent for `child` (in `child_region`) to feed it a stream, from
/// the stream's `carriers` and the live `nodes` (see the module docs).
/// `None`: no carrier can take it (no origin, or everyone is full).
pub fn choose_parent(
    child: &NodeId,
    child_region: &str,
    carriers: &[Carrier],
    nodes: &[NodeInfo],
    policy: &Policy,
) -> Option<NodeId> {
    let infos: HashMap<&NodeId, &NodeInfo> = nodes.iter().map(|n| (&n.id, n)).collect();
    let parents: HashMap<&NodeId, Option<&NodeId>> = carriers
        .iter()
        .map(|c| (&c.node, c.parent.as_ref()))
        .collect();
    // Live, slot free, depth allowed, no loop; CPU checked per tier.
    let usable: Vec<(&Carrier, &NodeInfo)> = carriers
        .iter()
        .filter(|c| &c.node != child)
        .filter(|c| c.depth < policy.max_depth)
        .filter(|c| !in_subtree(&c.node, child, &parents))
        .filter_map(|c| infos.get(&c.node).map(|i| (c, *i)))
        .filter(|(_, i)| i.has_fanout())
        .collect();
    let cool: Vec<&(&Carrier, &NodeInfo)> = usable
        .iter()
        .filter(|(_, i)| i.load.cpu <= policy.max_cpu)
        .collect();

    let same_region = cool
        .iter()
        .filter(|(_, i)| i.region == child_region)
        .min_by(|a, b| {
            (a.0.depth)
                .cmp(&b.0.depth)
                .then(load(a.1).total_cmp(&load(b.1)))
                .then(a.0.node.cmp(&b.0.node))
        });
    if let Some((c, _)) = same_region {
        return Some(c.node.clone());
    }

    let nearest = cool
        .iter()
        .filter_map(|ci| {
            policy
                .latency
                .get(child_region, &ci.1.region)
                .map(|ms| (ms, ci))
        })
        .min_by(|(ma, a), (mb, b)| {
            ma.cmp(mb)
                .then(load(a.1).total_cmp(&load(b.1)))
                .then(a.0.depth.cmp(&b.0.depth))
                .then(a.0.node.cmp(&b.0.node))
        });
    if let Some((_, (c, _))) = nearest {
        return Some(c.node.clone());
    }

    if let Some((c, _)) = usable.iter().find(|(c, _)| c.parent.is_none()) {
        return Some(c.node.clone());
    }

    cool.iter()
        .min_by(|a, b| {
            load(a.1)
                .total_cmp(&load(b.1))
                .then(a.0.node.cmp(&b.0.node))
        })
        .map(|(c, _)| c.node.clone())
}

/// The node that should serve a viewer of a stream in `viewer_region`
/// (see the module docs); the caller redirects there unless it is itself.
pub fn choose_edge(
    viewer_region: &str,
    nodes: &[NodeInfo],
    carriers: &[Carrier],
    policy: &Policy,
) -> Option<NodeId> {
    let roomy: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| n.load.cpu <= policy.max_cpu)
        .collect();
    let distance = |n: &NodeInfo| policy.latency.get(viewer_region, &n.region);
    let best = roomy.iter().filter_map(|n| distance(n)).min()?;
    let carrying = |n: &NodeInfo| carriers.iter().any(|c| c.node == n.id);
    roomy
        .iter()
        .filter(|n| distance(n) == Some(best))
        .min_by(|a, b| {
            // `true` sorts after `false`: carrying nodes first.
            (!carrying(a))
                .cmp(&!carrying(b))
                .then(a.load.cpu.total_cmp(&b.load.cpu))
                .then(a.load.sessions.cmp(&b.load.sessions))
                .then(a.id.cmp(&b.id))
        })
        .map(|n| n.id.clone())
}

fn load(n: &NodeInfo) -> f32 {
    let fanout = if n.fanout_limit == 0 {
        1.0
    } else {
        n.fanout_used as f32 / n.fanout_limit as f32
    };
    n.load.cpu.max(fanout)
}

/// Whether `node` is `root` or below it, following parent pointers.
fn in_subtree(node: &NodeId, root: &NodeId, parents: &HashMap<&NodeId, Option<&NodeId>>) -> bool {
    let mut cur = Some(node);
    for _ in 0..WALK_LIMIT {
        match cur {
            Some(n) if n == root => return true,
            Some(n) => cur = parents.get(n).copied().flatten(),
            None => return false,
        }
    }
    // A chain longer than any allowed tree is a cycle in a stale view:
    // do not build on it.
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn node(name: &str, region: &str, cpu: f32, fanout_used: u32) -> NodeInfo {
        let mut n = NodeInfo::new(id(name), region, format!("http://{name}"));
        n.load.cpu = cpu;
        n.fanout_used = fanout_used;
        n
    }

    fn carrier(name: &str, parent: Option<&str>, depth: u32) -> Carrier {
        Carrier {
            node: id(name),
            parent: parent.map(id),
            depth,
        }
    }

    fn latency() -> Policy {
        let mut p = Policy::default();
        p.latency
            .set("eu", "us", 80)
            .set("eu", "asia", 150)
            .set("us", "asia", 120);
        p
    }

    #[test]
    fn same_region_carrier_beats_the_remote_origin() {
        let nodes = [node("o", "eu", 0.1, 1), node("r", "us", 0.5, 3)];
        let carriers = [carrier("o", None, 0), carrier("r", Some("o"), 1)];
        let got = choose_parent(&id("e"), "us", &carriers, &nodes, &latency());
        assert_eq!(got, Some(id("r")));
    }

    #[test]
    fn in_region_the_shallowest_then_the_least_loaded() {
        let nodes = [
            node("o", "eu", 0.1, 2),
            node("a", "us", 0.5, 0),
            node("b", "us", 0.2, 0),
            node("c", "us", 0.1, 0),
        ];
        let carriers = [
            carrier("o", None, 0),
            carrier("a", Some("o"), 1),
            carrier("b", Some("o"), 1),
            carrier("c", Some("a"), 2),
        ];
        let got = choose_parent(&id("e"), "us", &carriers, &nodes, &latency());
        assert_eq!(got, Some(id("b")));
    }

    #[test]
    fn full_or_hot_or_dead_carriers_are_skipped() {
        let mut full = node("full", "us", 0.1, 50);
        full.fanout_limit = 50;
        let nodes = [node("o", "eu", 0.1, 2), full, node("hot", "us", 0.95, 0)];
        let carriers = [
            carrier("o", None, 0),
            carrier("full", Some("o"), 1),
            carrier("hot", Some("o"), 1),
            carrier("dead", Some("o"), 1),
        ];
        let got = choose_parent(&id("e"), "us", &carriers, &nodes, &latency());
        assert_eq!(got, Some(id("o")));
    }

    #[test]
    fn nearest_region_by_latency_then_least_loaded() {
        let nodes = [
            node("o", "asia", 0.1, 0),
            node("eu1", "eu", 0.6, 0),
            node("eu2", "eu", 0.3, 0),
            node("asia1", "asia", 0.0, 0),
        ];
        let carriers = [
            carrier("o", None, 0),
            carrier("eu1", Some("o"), 1),
            carrier("eu2", Some("o"), 1),
            carrier("asia1", Some("o"), 1),
        ];
        // From us: eu is 80 ms, asia 120 ms.
        let got = choose_parent(&id("us1"), "us", &carriers, &nodes, &latency());
        assert_eq!(got, Some(id("eu2")));
    }

    #[test]
    fn without_latency_the_origin_then_the_rest() {
        let nodes = [node("o", "eu", 0.99, 0), node("r", "asia", 0.1, 0)];
        let carriers = [carrier("o", None, 0), carrier("r", Some("o"), 1)];
        let p = Policy::default();
        // The origin is the fallback even when hot.
        assert_eq!(
            choose_parent(&id("x"), "us", &carriers, &nodes, &p),
            Some(id("o"))
        );
        // A full origin: the rest.
        let mut full = node("o", "eu", 0.1, 50);
        full.fanout_limit = 50;
        let nodes = [full, node("r", "asia", 0.1, 0)];
        assert_eq!(
            choose_parent(&id("x"), "us", &carriers, &nodes, &p),
            Some(id("r"))
        );
    }

    #[test]
    fn never_itself_nor_its_own_subtree() {
        // x re-parents (its parent died): y and z hang below it in its region.
        let nodes = [
            node("o", "eu", 0.1, 1),
            node("x", "us", 0.1, 1),
            node("y", "us", 0.1, 1),
            node("z", "us", 0.1, 0),
        ];
        let carriers = [
            carrier("o", None, 0),
            carrier("x", Some("gone"), 2),
            carrier("y", Some("x"), 3),
            carrier("z", Some("y"), 4),
        ];
        let got = choose_parent(&id("x"), "us", &carriers, &nodes, &latency());
        assert_eq!(got, Some(id("o")));
        // A cyclic (stale) view offers nothing from the cycle.
        let carriers = [carrier("a", Some("b"), 1), carrier("b", Some("a"), 1)];
        let nodes = [node("a", "us", 0.0, 0), node("b", "us", 0.0, 0)];
        assert_eq!(
            choose_parent(&id("x"), "us", &carriers, &nodes, &latency()),
            None
        );
    }

    #[test]
    fn depth_is_bounded() {
        let nodes = [node("o", "eu", 0.1, 1), node("d", "us", 0.1, 0)];
        let carriers = [carrier("o", None, 0), carrier("d", Some("o"), 6)];
        let got = choose_parent(&id("e"), "us", &carriers, &nodes, &latency());
        assert_eq!(got, Some(id("o")));
    }

    #[test]
    fn no_origin_no_parent() {
        let nodes = [node("a", "us", 0.1, 0)];
        assert_eq!(choose_parent(&id("e"), "us", &[], &nodes, &latency()), None);
    }

    #[test]
    fn edge_prefers_a_carrier_in_the_viewers_region() {
        let nodes = [
            node("o", "eu", 0.1, 0),
            node("us1", "us", 0.1, 0),
            node("us2", "us", 0.4, 0),
            node("us3", "us", 0.9, 0),
        ];
        let carriers = [carrier("o", None, 0), carrier("us2", Some("o"), 1)];
        let p = latency();
        assert_eq!(choose_edge("us", &nodes, &carriers, &p), Some(id("us2")));
        // Nobody carries it there: the least loaded.
        assert_eq!(
            choose_edge("us", &nodes, &carriers[..1], &p),
            Some(id("us1"))
        );
        // No room in asia: the nearest region with room.
        assert_eq!(choose_edge("asia", &nodes, &carriers, &p), Some(id("us2")));
        // Unknown region and no latency: nobody to redirect to.
        assert_eq!(choose_edge("mars", &nodes, &carriers, &p), None);
        let hot = [node("us3", "us", 0.9, 0)];
        assert_eq!(choose_edge("us", &hot, &carriers, &p), None);
    }
}
