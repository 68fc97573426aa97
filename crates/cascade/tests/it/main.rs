//! lumen-cascade's integration tests, one binary: the directory contract
//! run against both implementations (the in-process one on tokio's paused
//! clock, the Redis one against a real `redis-server`), then Redis-only
//! scenarios: contention and outages; and the relay tree on a virtual
//! clock (`tree`: sans-IO nodes and relay links).

// lumen-sfu's scenario browser (a str0m peer that publishes numbered
// frames or records what it receives), shared rather than copied; this
// binary uses only part of it.
#[path = "../../../sfu/tests/it/harness/browser.rs"]
#[allow(dead_code)]
mod browser;
mod contract;
mod harness;
mod link_chat;
mod memory;
mod redis;
mod tree;

use lumen_cascade::{NodeId, NodeInfo};

pub fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("a valid node id")
}

pub fn info(name: &str, region: &str) -> NodeInfo {
    NodeInfo::new(id(name), region, format!("http://{name}.test:8080"))
}
