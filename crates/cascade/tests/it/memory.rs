//! The contract on the in-process directory, on tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use lumen_cascade::{Claim, Directory, InProcessDirectory};

use crate::{contract, id, info};

#[tokio::test]
async fn tree() {
    contract::tree(&InProcessDirectory::default()).await;
}

#[tokio::test]
async fn fanout() {
    contract::fanout(&InProcessDirectory::default()).await;
}

#[tokio::test(start_paused = true)]
async fn expiry() {
    let ttl = Duration::from_secs(7);
    contract::expiry(Arc::new(InProcessDirectory::new(ttl)), ttl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_one_winner() {
    let dir = Arc::new(InProcessDirectory::default());
    for i in 0..16 {
        dir.heartbeat(&info(&format!("n{i}"), "eu")).await.unwrap();
    }
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let dir = dir.clone();
            tokio::spawn(async move { dir.claim_origin("show", &id(&format!("n{i}"))).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() == Claim::Won {
            won += 1;
        }
    }
    assert_eq!(won, 1);
}
