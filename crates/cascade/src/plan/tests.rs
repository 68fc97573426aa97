//! The model's cases and the invariants every plan keeps.

use super::*;

#[test]
fn one_viewer_is_one_node() {
    for regions in [1, 6] {
        let p = plan(&Scenario::new(1, regions)).unwrap();
        assert_eq!((p.nodes, p.depth, p.relay_links), (1, 0, 0));
        assert_eq!(p.origin_egress_bps, DEFAULT_BITRATE_BPS);
        assert_eq!(p.added_latency_ms, 0.0);
    }
    let p = plan(&Scenario::new(0, 3)).unwrap();
    assert_eq!((p.nodes, p.depth), (1, 0));
}

#[test]
fn a_full_node_then_a_tree() {
    let p = plan(&Scenario::new(800, 1)).unwrap();
    assert_eq!(p.nodes, 1);
    // One viewer more: the origin relays to two edges.
    let p = plan(&Scenario::new(801, 1)).unwrap();
    assert_eq!(
        (p.nodes, p.edge_nodes, p.relay_nodes, p.depth),
        (3, 2, 1, 1)
    );
    assert_eq!(p.origin_children, 2);
    assert_eq!(p.added_latency_ms, 1.0);
}

#[test]
fn ten_million_viewers_in_six_regions() {
    let p = plan(&Scenario::new(10_000_000, 6)).unwrap();
    // 1,666,667 viewers a region: 2084 edges under 42 relays; the
    // remote regions add their root, the origin's feeds its 42 itself.
    assert_eq!(p.depth, 3);
    assert_eq!(p.edge_nodes, 6 * 2084);
    assert_eq!(p.relay_nodes, 1 + 42 + 5 * 43);
    assert_eq!(p.origin_children, 5 + 42);
    assert_eq!(p.cross_region_links, 5);
    assert_eq!(
        p.levels,
        [(0, 1, 0), (1, 47, 0), (2, 5 * 42, 2084), (3, 0, 5 * 2084)].map(
            |(depth, relays, edges)| Level {
                depth,
                relays,
                edges
            }
        )
    );
    assert_eq!(p.regions[0].added_latency_ms, Some(2.0));
    assert_eq!(p.regions[1].added_latency_ms, Some(53.0));
    assert_eq!(p.added_latency_ms, 53.0);
    conserved(&Scenario::new(10_000_000, 6), &p);
}

#[test]
fn invariants_hold_over_a_range() {
    for viewers in [2, 799, 801, 40_000, 40_001, 2_000_001, 123_456_789] {
        for regions in [1, 2, 6, 20] {
            for fan_out in [2, 3, 50, 500] {
                let mut s = Scenario::new(viewers, regions);
                s.fan_out = fan_out;
                match plan(&s) {
                    Ok(p) => conserved(&s, &p),
                    Err(PlanError::TooManyRegions { .. }) => assert!(regions > fan_out),
                    Err(e) => panic!("{viewers} {regions} {fan_out}: {e}"),
                }
            }
        }
    }
}

/// What every plan must satisfy.
fn conserved(s: &Scenario, p: &Plan) {
    let ctx = format!("{s:?}");
    assert!(p.edge_capacity >= p.viewers, "{ctx}");
    for r in &p.regions {
        assert!(r.edges * u64::from(s.node_capacity) >= r.viewers, "{ctx}");
    }
    assert_eq!(p.regions.iter().map(|r| r.viewers).sum::<u64>(), s.viewers);
    assert_eq!(p.nodes, p.edge_nodes + p.relay_nodes, "{ctx}");
    let by_level: u64 = p.levels.iter().map(|l| l.relays + l.edges).sum();
    assert_eq!(by_level, p.nodes, "{ctx}");
    assert_eq!(p.relay_links + 1, p.nodes, "{ctx}");
    assert_eq!(p.levels.len() as u32, p.depth + 1, "{ctx}");
    assert!(p.origin_children <= u64::from(p.relay_fan_out), "{ctx}");
    if p.nodes > 1 {
        assert!(
            p.origin_egress_bps <= u64::from(s.fan_out) * s.relay_bitrate_bps,
            "{ctx}"
        );
        // Each level is fed by the relays of the one above.
        for w in p.levels.windows(2) {
            let fed = w[1].relays + w[1].edges;
            assert!(fed <= w[0].relays * u64::from(p.relay_fan_out), "{ctx}");
        }
        assert_eq!(p.levels[0].relays, 1, "{ctx}");
    }
}

#[test]
fn a_larger_fan_out_makes_a_shallower_tree() {
    let mut s = Scenario::new(10_000_000, 6);
    s.fan_out = 500;
    let p = plan(&s).unwrap();
    // 2084 edges per region under 5 relays, all 30 fed by the origin.
    assert_eq!(p.depth, 2);
    assert_eq!((p.origin_children, p.cross_region_links), (30, 25));
    assert_eq!(p.relay_nodes, 31);
    assert_eq!(p.added_latency_ms, 52.0);
    conserved(&s, &p);
}

#[test]
fn a_small_node_relays_less_or_not_at_all() {
    // 10 viewers' egress carries 7 links of 1.42 viewers.
    let mut s = Scenario::new(1_000, 1);
    s.node_capacity = 10;
    assert_eq!(plan(&s).unwrap().relay_fan_out, 7);
    s.node_capacity = 2;
    assert!(matches!(plan(&s), Err(PlanError::NodeTooSmall { .. })));
}

#[test]
fn too_many_regions_for_the_origin() {
    let mut s = Scenario::new(1_000_000, 6);
    s.fan_out = 4;
    assert!(matches!(plan(&s), Err(PlanError::TooManyRegions { .. })));
    // With all viewers remote, the origin needs no slot for its own.
    s.fan_out = 5;
    s.shares = vec![0.0, 1.0, 1.0, 1.0, 1.0, 1.0];
    let p = plan(&s).unwrap();
    assert_eq!(p.regions[0].edges, 0);
    assert_eq!(p.origin_children, 5);
}

#[test]
fn shares_split_exactly() {
    assert_eq!(apportion(10, 3, &[]), vec![4, 3, 3]);
    assert_eq!(apportion(10, 3, &[1.0, 1.0, 1.0]), vec![4, 3, 3]);
    assert_eq!(apportion(100, 2, &[3.0, 1.0]), vec![75, 25]);
    let parts = apportion(10_000_001, 4, &[0.4, 0.3, 0.2, 0.1]);
    assert_eq!(parts.iter().sum::<u64>(), 10_000_001);
    let mut s = Scenario::new(100, 2);
    s.shares = vec![1.0];
    assert!(matches!(plan(&s), Err(PlanError::Invalid(_))));
    s.shares = vec![0.0, 0.0];
    assert!(matches!(plan(&s), Err(PlanError::Invalid(_))));
    s.shares = vec![1.0, f64::NAN];
    assert!(matches!(plan(&s), Err(PlanError::Invalid(_))));
}

#[test]
fn invalid_figures() {
    for change in [
        (|s: &mut Scenario| s.regions = 0) as fn(&mut Scenario),
        |s| s.node_capacity = 0,
        |s| s.bitrate_bps = 0,
        |s| s.hop_latency_ms = -1.0,
        |s| s.inter_region_rtt_ms = f64::INFINITY,
    ] {
        let mut s = Scenario::new(100, 1);
        change(&mut s);
        assert!(matches!(plan(&s), Err(PlanError::Invalid(_))), "{s:?}");
    }
}
