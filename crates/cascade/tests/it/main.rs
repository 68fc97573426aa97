//! lumen-cascade's integration tests, one binary: the directory contract
//! run against both implementations (the in-process one on tokio's paused
//! clock, the Redis one against a real `redis-server`), then Redis-only
//! scenarios: contention and outages.

mod contract;
mod memory;
mod redis;

use lumen_cascade::{NodeId, NodeInfo};

pub fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("a valid node id")
}

pub fn info(name: &str, region: &str) -> NodeInfo {
    NodeInfo::new(id(name), region, format!("http://{name}.test:8080"))
}
