//! Capacity planning for the relay tree: how many nodes, in how many
//! levels, carry one stream to a given audience. A pure function of a few
//! figures ([`Scenario`] to [`Plan`]), printed by `lumen simulate`; the
//! model and which of its figures are measured or assumed are in
//! `docs/scaling.md`.
//!
//! The model, in short:
//! - viewers are split over regions (evenly, or by given shares) and each
//!   region's viewers are served by **edges** in that region, at most
//!   [`Scenario::node_capacity`] viewers each;
//! - an edge serves viewers only and a **relay** feeds child nodes only (at
//!   most [`Scenario::fan_out`]). A relay with 50 children carries about 70
//!   viewers' worth of packets, where the measured forwarding delay is
//!   milliseconds; a node near its viewer capacity queues for tens of
//!   milliseconds, and every viewer below a relay would pay that. The one
//!   exception is a one-node plan, where the origin serves everyone;
//! - the **origin** (in the first region, where the broadcaster publishes)
//!   is a relay too, and it feeds the top level of every region's tree;
//! - within a region the tree is as shallow as the fan-out allows, counted
//!   from the bottom: `ceil(edges / fan_out)` relays above the edges, and so
//!   on up to a single root. The origin's slots decide how far up each
//!   region's tree must go: first the smallest depth every region can have
//!   at once, then spare slots lift regions one level, the cheapest lift
//!   first. With few slots to spare this is one long-haul link per region;
//!   with many, a region's first level of relays hangs off the origin;
//! - a relay link carries every simulcast layer and the audio, so it costs
//!   its parent [`Scenario::relay_bitrate_bps`] of the egress a node has,
//!   `node_capacity × bitrate_bps` (the default is 1.42 times a viewer: h +
//!   m + l + Opus, 2.5 + 0.8 + 0.2 + 0.05 Mbit/s, against 2.5 for a viewer
//!   of the top layer). A node small enough that fewer than two links fit
//!   cannot relay;
//! - the latency a tree adds to a viewer is, per link between the origin
//!   and its edge, [`Scenario::hop_latency_ms`] (a forwarding budget; links
//!   inside a region are assumed to cost nothing more), plus half of
//!   [`Scenario::inter_region_rtt_ms`] when the viewer's region is not the
//!   origin's.

use serde::Serialize;

/// Viewers of a 2.5 Mbit/s stream that one 2-core node serves:
/// `BENCHMARKS.md`, fan-out runs of 2026-11-29 (800 viewers at 0.03–0.05 %
/// loss with the load generator on the same machine; 1000 held 0.05 % but
/// with a latency p99 of 140 ms, so 800 is the figure planned with).
pub const MEASURED_NODE_CAPACITY: u32 = 800;

/// The bitrate of the layer a viewer gets when nothing else is said: the
/// top simulcast layer of `lumen publish --simulcast` and of the fan-out
/// benchmark (1280×720).
pub const DEFAULT_BITRATE_BPS: u64 = 2_500_000;

/// What a relay link carries against one viewer of the top layer, in
/// thousandths: h + m + l + audio = 2.5 + 0.8 + 0.2 + 0.05 Mbit/s over 2.5.
/// An assumption from the layers' target bitrates, not a measurement.
pub const RELAY_PER_MILLE: u64 = 1_420;

/// The forwarding budget of one relay hop at p99, in milliseconds: the
/// issue's figure. Not yet measured over a real relay link; the closest
/// measurement is the server forwarding delay of a lightly loaded node
/// (`BENCHMARKS.md`: p50 ≤ 1 ms, p99 ≤ 2 ms at 50 viewers, histogram
/// bucket bounds).
pub const DEFAULT_HOP_LATENCY_MS: f64 = 1.0;

/// Round trip between two regions, in milliseconds, when nothing else is
/// said: an assumption (Europe to the US east coast is 70–90 ms, to Asia
/// 150–250 ms; 100 ms stands for "another continent, well connected").
pub const DEFAULT_INTER_REGION_RTT_MS: f64 = 100.0;

/// The figures a plan is made from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scenario {
    /// Viewers of the stream, all at once.
    pub viewers: u64,
    /// Regions; the first holds the origin.
    pub regions: u32,
    /// Relative share of the viewers in each region (one per region, any
    /// scale); empty: evenly spread.
    pub shares: Vec<f64>,
    /// Viewers one node serves at `bitrate_bps`.
    pub node_capacity: u32,
    /// Relay links one node feeds at most (the directory's fan-out limit).
    pub fan_out: u32,
    /// Bits per second a viewer receives.
    pub bitrate_bps: u64,
    /// Bits per second a relay link carries (all layers and the audio).
    pub relay_bitrate_bps: u64,
    /// Latency budget of one relay hop, milliseconds.
    pub hop_latency_ms: f64,
    /// Round trip between two regions, milliseconds.
    pub inter_region_rtt_ms: f64,
}

impl Scenario {
    /// `viewers` spread evenly over `regions`, with the defaults above.
    pub fn new(viewers: u64, regions: u32) -> Scenario {
        Scenario {
            viewers,
            regions,
            shares: Vec::new(),
            node_capacity: MEASURED_NODE_CAPACITY,
            fan_out: crate::DEFAULT_FANOUT_LIMIT,
            bitrate_bps: DEFAULT_BITRATE_BPS,
            relay_bitrate_bps: relay_bitrate(DEFAULT_BITRATE_BPS),
            hop_latency_ms: DEFAULT_HOP_LATENCY_MS,
            inter_region_rtt_ms: DEFAULT_INTER_REGION_RTT_MS,
        }
    }
}

/// The default relay link bitrate for viewers of `bitrate_bps`
/// ([`RELAY_PER_MILLE`]).
pub fn relay_bitrate(bitrate_bps: u64) -> u64 {
    bitrate_bps.saturating_mul(RELAY_PER_MILLE) / 1000
}

/// The tree that serves a [`Scenario`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// Viewers planned for.
    pub viewers: u64,
    /// All nodes carrying the stream, the origin included.
    pub nodes: u64,
    /// Nodes that serve viewers.
    pub edge_nodes: u64,
    /// Nodes that only feed other nodes, the origin included (0 in a
    /// one-node plan).
    pub relay_nodes: u64,
    /// Links from the origin to the deepest edge.
    pub depth: u32,
    /// Nodes at each depth, from the origin (depth 0) down.
    pub levels: Vec<Level>,
    /// Node-to-node links (`nodes - 1`: a tree).
    pub relay_links: u64,
    /// Of those, links that cross from one region to another.
    pub cross_region_links: u64,
    /// Links the origin feeds.
    pub origin_children: u64,
    /// What the origin sends, bits per second: its links, or its viewers
    /// in a one-node plan.
    pub origin_egress_bps: u64,
    /// Children a relay may have: the fan-out limit, or fewer when the
    /// node's egress cannot carry that many links.
    pub relay_fan_out: u32,
    /// Viewers the edges can serve (`edge_nodes × node_capacity`).
    pub edge_capacity: u64,
    /// The latency the tree adds for its worst-placed viewer, milliseconds.
    pub added_latency_ms: f64,
    /// Each region's part, the origin's first.
    pub regions: Vec<RegionPlan>,
}

/// The nodes at one depth of the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Level {
    /// Links from the origin.
    pub depth: u32,
    /// Nodes that feed others.
    pub relays: u64,
    /// Nodes that serve viewers.
    pub edges: u64,
}

/// One region's part of a [`Plan`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegionPlan {
    /// 0 for the origin's region, then in the order given.
    pub region: u32,
    /// Its viewers.
    pub viewers: u64,
    /// Its edges.
    pub edges: u64,
    /// Its relays (the origin counts in region 0).
    pub relays: u64,
    /// Depth of its edges; `None` when it has no viewers.
    pub edge_depth: Option<u32>,
    /// The latency the tree adds for its viewers, milliseconds.
    pub added_latency_ms: Option<f64>,
}

/// Why a scenario has no plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A figure is out of range (zero regions, zero capacity, a bitrate of
    /// zero, a negative latency, shares that do not match the regions).
    #[error("invalid scenario: {0}")]
    Invalid(String),
    /// A node cannot feed two relay links: no tree can be built.
    #[error(
        "a node serving {capacity} viewers at {bitrate_bps} bit/s cannot feed two relay links of {relay_bps} bit/s"
    )]
    NodeTooSmall {
        /// Viewers per node.
        capacity: u32,
        /// Viewer bitrate.
        bitrate_bps: u64,
        /// Relay link bitrate.
        relay_bps: u64,
    },
    /// More regions have viewers than the origin has relay links: each
    /// region's tree hangs off the origin by at least one.
    #[error(
        "{regions} regions with viewers need more links than the origin's fan-out of {fan_out}"
    )]
    TooManyRegions {
        /// Regions with viewers.
        regions: u32,
        /// The relay fan-out.
        fan_out: u32,
    },
}

/// Plans the tree for `s` (see the module docs).
pub fn plan(s: &Scenario) -> Result<Plan, PlanError> {
    validate(s)?;
    let capacity = u64::from(s.node_capacity);
    let per_region = apportion(s.viewers, s.regions, &s.shares);
    let edges: Vec<u64> = per_region.iter().map(|v| v.div_ceil(capacity)).collect();
    let egress = capacity.saturating_mul(s.bitrate_bps);
    let by_egress = egress / s.relay_bitrate_bps.max(1);
    let fan_out = u64::from(s.fan_out).min(by_egress);

    let remote = (1..per_region.len()).filter(|&r| per_region[r] > 0).count() as u64;
    if remote == 0 && edges[0] <= 1 {
        return Ok(one_node(s, fan_out));
    }
    if fan_out < 2 {
        return Err(PlanError::NodeTooSmall {
            capacity: s.node_capacity,
            bitrate_bps: s.bitrate_bps,
            relay_bps: s.relay_bitrate_bps,
        });
    }
    let chains: Vec<Vec<u64>> = edges
        .iter()
        .map(|&e| {
            if e == 0 {
                Vec::new()
            } else {
                chain(e, fan_out)
            }
        })
        .collect();
    let active: Vec<usize> = (0..chains.len())
        .filter(|&r| !chains[r].is_empty())
        .collect();
    if active.len() as u64 > fan_out {
        return Err(PlanError::TooManyRegions {
            regions: active.len() as u32,
            fan_out: fan_out as u32,
        });
    }
    let depths = region_depths(&chains, &active, fan_out);

    let depth = depths.iter().copied().max().unwrap_or(0);
    let mut levels: Vec<Level> = (0..=depth)
        .map(|d| Level {
            depth: d,
            relays: u64::from(d == 0),
            edges: 0,
        })
        .collect();
    let mut regions = Vec::with_capacity(chains.len());
    let (mut origin_children, mut cross_region_links) = (0, 0);
    for (r, c) in chains.iter().enumerate() {
        let d = depths[r] as usize;
        // Levels k = d - 1 (fed by the origin, depth 1) down to 0 (edges).
        for k in 0..d {
            let level = &mut levels[d - k];
            if k == 0 {
                level.edges += c[0];
            } else {
                level.relays += c[k];
            }
        }
        if d > 0 {
            origin_children += c[d - 1];
            if r > 0 {
                cross_region_links += c[d - 1];
            }
        }
        let relays = c.iter().take(d).skip(1).sum::<u64>() + u64::from(r == 0);
        let edge_depth = (d > 0).then_some(d as u32);
        regions.push(RegionPlan {
            region: r as u32,
            viewers: per_region[r],
            edges: edges[r],
            relays,
            edge_depth,
            added_latency_ms: edge_depth.map(|d| latency(s, r, d)),
        });
    }

    let edge_nodes: u64 = edges.iter().sum();
    let relay_nodes: u64 = regions.iter().map(|r| r.relays).sum();
    let nodes = edge_nodes + relay_nodes;
    Ok(Plan {
        viewers: s.viewers,
        nodes,
        edge_nodes,
        relay_nodes,
        depth,
        levels,
        relay_links: nodes - 1,
        cross_region_links,
        origin_children,
        origin_egress_bps: origin_children.saturating_mul(s.relay_bitrate_bps),
        relay_fan_out: fan_out as u32,
        edge_capacity: edge_nodes.saturating_mul(capacity),
        added_latency_ms: worst_latency(&regions),
        regions,
    })
}

/// Splits `viewers` over `regions` by `shares` (evenly when empty), the
/// parts adding up to `viewers` exactly (largest remainders get the rest).
pub fn apportion(viewers: u64, regions: u32, shares: &[f64]) -> Vec<u64> {
    let n = regions as usize;
    if shares.is_empty() {
        let (base, rest) = (viewers / u64::from(regions), viewers % u64::from(regions));
        return (0..n)
            .map(|r| base + u64::from((r as u64) < rest))
            .collect();
    }
    let total: f64 = shares.iter().sum();
    let exact: Vec<f64> = shares.iter().map(|w| viewers as f64 * w / total).collect();
    let mut parts: Vec<u64> = exact.iter().map(|x| x.floor() as u64).collect();
    let given: u64 = parts.iter().sum();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    // Float rounding may leave the floors a little off `viewers` either
    // way on huge counts; the largest parts absorb it.
    if given <= viewers {
        for i in order.iter().cycle().take((viewers - given) as usize) {
            parts[*i] += 1;
        }
    } else {
        let mut excess = given - viewers;
        let mut big: Vec<usize> = (0..n).collect();
        big.sort_by(|&a, &b| parts[b].cmp(&parts[a]));
        for i in big {
            let cut = excess.min(parts[i]);
            parts[i] -= cut;
            excess -= cut;
        }
    }
    parts
}

fn validate(s: &Scenario) -> Result<(), PlanError> {
    let bad = |m: &str| Err(PlanError::Invalid(m.to_string()));
    if s.regions == 0 {
        return bad("at least one region");
    }
    if s.node_capacity == 0 {
        return bad("a node serves at least one viewer");
    }
    if s.bitrate_bps == 0 || s.relay_bitrate_bps == 0 {
        return bad("bitrates must be above zero");
    }
    let ms = |x: f64| x.is_finite() && x >= 0.0;
    if !(ms(s.hop_latency_ms) && ms(s.inter_region_rtt_ms)) {
        return bad("latencies must be finite and not negative");
    }
    if !s.shares.is_empty() {
        if s.shares.len() != s.regions as usize {
            return Err(PlanError::Invalid(format!(
                "{} shares for {} regions",
                s.shares.len(),
                s.regions
            )));
        }
        if s.shares.iter().any(|w| !(w.is_finite() && *w >= 0.0))
            || s.shares.iter().sum::<f64>() <= 0.0
        {
            return bad("shares must be finite, not negative, and not all zero");
        }
    }
    Ok(())
}

/// The whole audience fits on the origin.
fn one_node(s: &Scenario, fan_out: u64) -> Plan {
    let capacity = u64::from(s.node_capacity);
    let per_region = apportion(s.viewers, s.regions, &s.shares);
    let regions = per_region
        .iter()
        .enumerate()
        .map(|(r, &v)| RegionPlan {
            region: r as u32,
            viewers: v,
            edges: u64::from(r == 0),
            relays: 0,
            edge_depth: (r == 0).then_some(0),
            added_latency_ms: (r == 0).then_some(0.0),
        })
        .collect();
    Plan {
        viewers: s.viewers,
        nodes: 1,
        edge_nodes: 1,
        relay_nodes: 0,
        depth: 0,
        levels: vec![Level {
            depth: 0,
            relays: 0,
            edges: 1,
        }],
        relay_links: 0,
        cross_region_links: 0,
        origin_children: 0,
        origin_egress_bps: s.viewers.saturating_mul(s.bitrate_bps),
        relay_fan_out: fan_out.min(u64::from(u32::MAX)) as u32,
        edge_capacity: capacity,
        added_latency_ms: 0.0,
        regions,
    }
}

/// A region's level sizes from its edges up: `chain[k]` nodes `k` levels
/// above the edges (`chain[0]` are the edges), each `ceil(below /
/// fan_out)`, up to a single node.
fn chain(edges: u64, fan_out: u64) -> Vec<u64> {
    let mut up = vec![edges];
    let mut n = edges;
    while n > 1 {
        n = n.div_ceil(fan_out);
        up.push(n);
    }
    up
}

/// The depth of each region's edges (0 for a region without viewers).
/// Region `r` with its edges at depth `d` takes `chain[d - 1]` of the
/// origin's slots. First the smallest depth every region can have at once;
/// then the spare slots lift regions one level, the cheapest lift first
/// (ties: the origin's region, then in order).
fn region_depths(chains: &[Vec<u64>], active: &[usize], fan_out: u64) -> Vec<u32> {
    let top = |r: usize, d: usize| chains[r][d.min(chains[r].len()) - 1];
    let longest = active.iter().map(|&r| chains[r].len()).max().unwrap_or(1);
    // At `longest` every region takes one slot, and the caller checked
    // that there are enough.
    let all = (1..=longest)
        .find(|&d| active.iter().map(|&r| top(r, d)).sum::<u64>() <= fan_out)
        .unwrap_or(longest);
    let mut depth = vec![0usize; chains.len()];
    for &r in active {
        depth[r] = all.min(chains[r].len());
    }
    let mut spare = fan_out - active.iter().map(|&r| top(r, depth[r])).sum::<u64>();
    loop {
        let lift = active
            .iter()
            .filter(|&&r| depth[r] > 1)
            .map(|&r| (chains[r][depth[r] - 2] - chains[r][depth[r] - 1], r))
            .min();
        match lift {
            Some((cost, r)) if cost <= spare => {
                spare -= cost;
                depth[r] -= 1;
            }
            _ => break,
        }
    }
    depth.into_iter().map(|d| d as u32).collect()
}

fn latency(s: &Scenario, region: usize, edge_depth: u32) -> f64 {
    let long_haul = if region == 0 {
        0.0
    } else {
        s.inter_region_rtt_ms / 2.0
    };
    f64::from(edge_depth) * s.hop_latency_ms + long_haul
}

fn worst_latency(regions: &[RegionPlan]) -> f64 {
    regions
        .iter()
        .filter_map(|r| r.added_latency_ms)
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests;
