//! `lumen simulate`: plans the relay tree for an audience with
//! [`lumen_cascade::plan`] and prints it as a table (or JSON). Nothing runs
//! and nothing is measured here: the figures are the model's inputs, whose
//! defaults and their sources are in `docs/scaling.md`.

use std::fmt::Write as _;

use anyhow::Context;
use lumen_cascade::plan::{self, Plan, Scenario};

/// `lumen simulate --viewers N --regions R`.
#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Viewers of the stream, all watching at once.
    #[arg(long, default_value_t = 10_000_000)]
    pub viewers: u64,
    /// Regions the viewers are in; the first holds the origin.
    #[arg(long, default_value_t = 6)]
    pub regions: u32,
    /// Relative share of the viewers in each region, comma-separated, one
    /// per region (e.g. 40,30,10,10,5,5) [default: evenly spread]
    #[arg(long, value_delimiter = ',', value_name = "WEIGHTS")]
    pub region_shares: Vec<f64>,
    /// Viewers one node serves at --bitrate [default: 800, measured on the
    /// 2-core reference machine at 2.5 Mbit/s, see BENCHMARKS.md]
    #[arg(long, default_value_t = plan::MEASURED_NODE_CAPACITY, hide_default_value = true)]
    pub node_capacity: u32,
    /// Relay links one node feeds at most (the nodes' fan-out limit).
    #[arg(long, default_value_t = lumen_cascade::DEFAULT_FANOUT_LIMIT)]
    pub fan_out: u32,
    /// Bits per second a viewer receives.
    #[arg(long, default_value_t = plan::DEFAULT_BITRATE_BPS)]
    pub bitrate: u64,
    /// Bits per second a relay link carries (every simulcast layer and the
    /// audio) [default: 1.42 × --bitrate]
    #[arg(long)]
    pub relay_bitrate: Option<u64>,
    /// Latency budget of one relay hop in milliseconds (an assumption until
    /// relay links are measured).
    #[arg(long, default_value_t = plan::DEFAULT_HOP_LATENCY_MS)]
    pub hop_latency_ms: f64,
    /// Round trip between two regions in milliseconds (an assumption).
    #[arg(long, default_value_t = plan::DEFAULT_INTER_REGION_RTT_MS)]
    pub inter_region_rtt_ms: f64,
    /// Print the scenario and the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Plans and prints.
pub fn run(a: SimulateArgs) -> anyhow::Result<()> {
    let scenario = Scenario {
        viewers: a.viewers,
        regions: a.regions,
        shares: a.region_shares,
        node_capacity: a.node_capacity,
        fan_out: a.fan_out,
        bitrate_bps: a.bitrate,
        relay_bitrate_bps: a.relay_bitrate.unwrap_or(plan::relay_bitrate(a.bitrate)),
        hop_latency_ms: a.hop_latency_ms,
        inter_region_rtt_ms: a.inter_region_rtt_ms,
    };
    let planned = plan::plan(&scenario).context("no plan for this scenario")?;
    if a.json {
        let doc = serde_json::json!({ "scenario": scenario, "plan": planned });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", table(&scenario, &planned));
    }
    Ok(())
}

/// The plan as the text `lumen simulate` prints.
fn table(s: &Scenario, p: &Plan) -> String {
    let mut o = String::new();
    let max_depth = lumen_cascade::placement::Policy::default().max_depth;
    // Writing to a String cannot fail.
    let _ = writeln!(
        o,
        "{} viewers of a {} stream in {} region(s); origin in region 1",
        count(s.viewers),
        mbps(s.bitrate_bps),
        s.regions
    );
    let _ = writeln!(
        o,
        "node capacity {} viewers, fan-out {} (effective {}), relay link {} (all layers + audio)",
        count(u64::from(s.node_capacity)),
        s.fan_out,
        p.relay_fan_out,
        mbps(s.relay_bitrate_bps)
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:>5} {:>10} {:>12} {:>12}",
        "level", "relays", "edges", "nodes"
    );
    for l in &p.levels {
        let _ = writeln!(
            o,
            "{:>5} {:>10} {:>12} {:>12}{}",
            l.depth,
            count(l.relays),
            count(l.edges),
            count(l.relays + l.edges),
            if l.depth == 0 { "  (origin)" } else { "" }
        );
    }
    let _ = writeln!(o);
    let deep = if p.depth > max_depth {
        format!(" (deeper than placement allows: {max_depth})")
    } else {
        String::new()
    };
    let _ = writeln!(
        o,
        "depth:            {} level(s) below the origin{deep}",
        p.depth
    );
    let _ = writeln!(
        o,
        "nodes:            {} ({} edges, {} relays)",
        count(p.nodes),
        count(p.edge_nodes),
        count(p.relay_nodes)
    );
    let _ = writeln!(
        o,
        "relay links:      {} ({} between regions)",
        count(p.relay_links),
        count(p.cross_region_links)
    );
    let _ = writeln!(
        o,
        "origin egress:    {} ({} link(s))",
        mbps(p.origin_egress_bps),
        p.origin_children
    );
    let _ = writeln!(
        o,
        "edge capacity:    {} viewers ({:.1} % used)",
        count(p.edge_capacity),
        100.0 * p.viewers as f64 / p.edge_capacity.max(1) as f64
    );
    let _ = writeln!(
        o,
        "added latency:    {:.1} ms at worst per viewer ({:.1} ms per hop, {:.1} ms one way between regions)",
        p.added_latency_ms,
        s.hop_latency_ms,
        s.inter_region_rtt_ms / 2.0
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:>6} {:>14} {:>10} {:>8} {:>10} {:>16}",
        "region", "viewers", "edges", "relays", "edge depth", "added latency ms"
    );
    for r in &p.regions {
        let _ = writeln!(
            o,
            "{:>6} {:>14} {:>10} {:>8} {:>10} {:>16}",
            r.region + 1,
            count(r.viewers),
            count(r.edges),
            count(r.relays),
            r.edge_depth.map_or("-".into(), |d| d.to_string()),
            r.added_latency_ms
                .map_or("-".into(), |ms| format!("{ms:.1}"))
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "A model, not a measurement: see docs/scaling.md for its assumptions."
    );
    o
}

/// 12345678 as "12,345,678".
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mbps(bps: u64) -> String {
    let m = bps as f64 / 1e6;
    if m >= 1000.0 {
        format!("{:.2} Gbit/s", m / 1000.0)
    } else {
        format!("{m:.2} Mbit/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_have_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(10_000_000), "10,000,000");
    }

    #[test]
    fn the_table_names_every_level() {
        let s = Scenario::new(10_000_000, 6);
        let p = plan::plan(&s).unwrap();
        let t = table(&s, &p);
        assert!(t.contains("depth:            3 level(s)"), "{t}");
        for d in 0..=3 {
            assert!(
                t.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{d} ")))
            );
        }
        assert!(t.contains("12,504 edges"), "{t}");
    }
}
