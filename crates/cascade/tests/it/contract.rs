//! The directory contract: scenarios every implementation passes. Each
//! takes a fresh directory; `memory.rs` and `redis.rs` run them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lumen_cascade::{
    Carrier, ChildLink, Claim, Directory, DirectoryError, JoinError, NodeId, spawn_heartbeat,
};

use crate::{id, info};

/// Polls `check` every 50 ms until it holds, for at most 10 s (of tokio
/// time: instant under a paused clock).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sorted(mut c: Vec<Carrier>) -> Vec<Carrier> {
    c.sort_by(|a, b| a.node.cmp(&b.node));
    c
}

fn carrier(node: &str, parent: Option<&str>, depth: u32) -> Carrier {
    Carrier {
        node: id(node),
        parent: parent.map(id),
        depth,
    }
}

fn link(stream: &str, child: &str) -> ChildLink {
    ChildLink {
        stream: stream.to_string(),
        child: id(child),
    }
}

/// Registration, origins, joins, loops, re-parenting, leaving.
pub async fn tree(dir: &dyn Directory) {
    let (a, b, c) = (info("a", "eu"), info("b", "us"), info("c", "us"));
    let report = dir.heartbeat(&a).await.unwrap();
    assert!(report.registered, "first heartbeat registers");
    assert!(!dir.heartbeat(&a).await.unwrap().registered);
    dir.heartbeat(&b).await.unwrap();
    let mut c_loaded = c.clone();
    c_loaded.load.sessions = 7;
    c_loaded.load.cpu = 0.25;
    c_loaded.load.egress_bps = 2_500_000_000;
    dir.heartbeat(&c_loaded).await.unwrap();
    let mut nodes = dir.nodes().await.unwrap();
    nodes.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(nodes, vec![a.clone(), b.clone(), c_loaded]);

    assert!(matches!(
        dir.claim_origin("show", &id("nobody")).await,
        Err(DirectoryError::NotRegistered(_))
    ));
    assert!(matches!(
        dir.claim_origin("bad:name", &a.id).await,
        Err(DirectoryError::InvalidName(_))
    ));
    assert_eq!(dir.origin("show").await.unwrap(), None);
    assert_eq!(dir.claim_origin("show", &a.id).await.unwrap(), Claim::Won);
    assert_eq!(
        dir.claim_origin("show", &b.id).await.unwrap(),
        Claim::Held(a.id.clone())
    );
    assert_eq!(dir.claim_origin("show", &a.id).await.unwrap(), Claim::Won);
    assert_eq!(dir.origin("show").await.unwrap(), Some(a.id.clone()));
    assert_eq!(
        dir.carriers("show").await.unwrap(),
        vec![carrier("a", None, 0)]
    );

    assert_eq!(dir.join("show", &b.id, &a.id).await.unwrap(), 1);
    assert_eq!(dir.join("show", &c.id, &b.id).await.unwrap(), 2);
    assert_eq!(
        sorted(dir.carriers("show").await.unwrap()),
        vec![
            carrier("a", None, 0),
            carrier("b", Some("a"), 1),
            carrier("c", Some("b"), 2)
        ]
    );
    assert!(matches!(
        dir.join("show", &a.id, &c.id).await,
        Err(JoinError::IsOrigin)
    ));
    assert!(matches!(
        dir.join("show", &b.id, &c.id).await,
        Err(JoinError::WouldLoop(_))
    ));
    assert!(matches!(
        dir.join("show", &b.id, &b.id).await,
        Err(JoinError::WouldLoop(_))
    ));
    assert!(matches!(
        dir.join("other", &b.id, &a.id).await,
        Err(JoinError::ParentNotCarrying(_))
    ));
    assert!(matches!(
        dir.join("show", &id("nobody"), &a.id).await,
        Err(JoinError::Directory(DirectoryError::NotRegistered(_)))
    ));
    assert_eq!(dir.children(&a.id).await.unwrap(), vec![link("show", "b")]);
    assert_eq!(dir.children(&b.id).await.unwrap(), vec![link("show", "c")]);

    // Re-parenting (healing): the old parent's slot is freed.
    assert_eq!(dir.join("show", &c.id, &a.id).await.unwrap(), 1);
    assert_eq!(dir.children(&b.id).await.unwrap(), vec![]);
    assert_eq!(
        dir.children(&a.id).await.unwrap(),
        vec![link("show", "b"), link("show", "c")]
    );

    assert!(dir.leave("show", &c.id).await.unwrap());
    assert!(!dir.leave("show", &c.id).await.unwrap());
    assert!(
        !dir.leave("show", &a.id).await.unwrap(),
        "the origin releases instead"
    );
    assert!(!dir.release_origin("show", &b.id).await.unwrap());
    assert!(dir.release_origin("show", &a.id).await.unwrap());
    assert_eq!(dir.origin("show").await.unwrap(), None);
    assert_eq!(
        dir.carriers("show").await.unwrap(),
        vec![carrier("b", Some("a"), 1)]
    );

    // A relay that becomes the origin (the broadcaster re-published there).
    assert_eq!(dir.claim_origin("show", &b.id).await.unwrap(), Claim::Won);
    assert_eq!(
        dir.carriers("show").await.unwrap(),
        vec![carrier("b", None, 0)]
    );
    assert_eq!(dir.children(&a.id).await.unwrap(), vec![]);

    dir.deregister(&b.id).await.unwrap();
    assert_eq!(dir.origin("show").await.unwrap(), None);
    assert_eq!(dir.carriers("show").await.unwrap(), vec![]);
    let mut ids: Vec<NodeId> = dir
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    ids.sort();
    assert_eq!(ids, vec![id("a"), id("c")]);
}

/// The parent's fan-out limit counts links over all its streams.
pub async fn fanout(dir: &dyn Directory) {
    let mut p = info("p", "eu");
    p.fanout_limit = 2;
    dir.heartbeat(&p).await.unwrap();
    for s in ["s1", "s2"] {
        assert_eq!(dir.claim_origin(s, &p.id).await.unwrap(), Claim::Won);
    }
    for c in ["c1", "c2", "c3"] {
        dir.heartbeat(&info(c, "eu")).await.unwrap();
    }
    assert_eq!(dir.join("s1", &id("c1"), &p.id).await.unwrap(), 1);
    assert_eq!(dir.join("s2", &id("c1"), &p.id).await.unwrap(), 1);
    assert!(matches!(
        dir.join("s1", &id("c2"), &p.id).await,
        Err(JoinError::FanoutFull(n)) if n == p.id
    ));
    // Joining again where it already is takes no second slot.
    assert_eq!(dir.join("s1", &id("c1"), &p.id).await.unwrap(), 1);
    assert!(dir.leave("s2", &id("c1")).await.unwrap());
    assert_eq!(dir.join("s1", &id("c2"), &p.id).await.unwrap(), 1);
    assert!(matches!(
        dir.join("s2", &id("c3"), &p.id).await,
        Err(JoinError::FanoutFull(_))
    ));
    // A full parent's child feeds the next one.
    assert_eq!(dir.join("s1", &id("c3"), &id("c2")).await.unwrap(), 2);
    assert_eq!(dir.children(&p.id).await.unwrap().len(), 2);
}

/// Expiry and re-registration, with a node TTL of `ttl` (the directory's).
/// `a` stops heartbeating and disappears with its entries while `b` lives;
/// `b` takes the origin over; `a` comes back, hears it lost the origin,
/// and its relay entry is restored.
pub async fn expiry(dir: Arc<dyn Directory>, ttl: Duration) {
    let (a, b) = (info("a", "eu"), info("b", "us"));
    let beat = ttl / 5;
    let b_info = b.clone();
    let b_task = spawn_heartbeat(dir.clone(), move || b_info.clone(), beat);
    dir.heartbeat(&a).await.unwrap();
    eventually("b is registered", || async {
        dir.nodes().await.unwrap().len() == 2
    })
    .await;
    assert_eq!(dir.claim_origin("show", &a.id).await.unwrap(), Claim::Won);
    assert_eq!(dir.claim_origin("talk", &b.id).await.unwrap(), Claim::Won);
    assert_eq!(dir.join("talk", &a.id, &b.id).await.unwrap(), 1);
    assert_eq!(
        dir.claim_origin("show", &b.id).await.unwrap(),
        Claim::Held(a.id.clone())
    );

    // `a` falls silent.
    eventually("a expires", || async {
        let nodes = dir.nodes().await.unwrap();
        nodes.len() == 1 && nodes[0].id == b.id
    })
    .await;
    assert_eq!(dir.origin("show").await.unwrap(), None);
    assert_eq!(dir.carriers("show").await.unwrap(), vec![]);
    assert_eq!(
        dir.carriers("talk").await.unwrap(),
        vec![carrier("b", None, 0)]
    );
    assert_eq!(dir.children(&b.id).await.unwrap(), vec![]);
    assert_eq!(dir.claim_origin("show", &b.id).await.unwrap(), Claim::Won);

    // `a` is back: re-registered, told it lost "show", relay entry restored.
    let report = dir.heartbeat(&a).await.unwrap();
    assert!(report.registered);
    assert_eq!(report.lost_origins, vec!["show".to_string()]);
    assert_eq!(dir.origin("show").await.unwrap(), Some(b.id.clone()));
    assert_eq!(
        sorted(dir.carriers("talk").await.unwrap()),
        vec![carrier("a", Some("b"), 1), carrier("b", None, 0)]
    );
    assert_eq!(dir.children(&b.id).await.unwrap(), vec![link("talk", "a")]);
    assert_eq!(
        dir.carriers("show").await.unwrap(),
        vec![carrier("b", None, 0)]
    );
    b_task.abort();
}
