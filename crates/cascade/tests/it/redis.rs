//! The contract and the races on a real `redis-server` (started per test,
//! see `lumen_cascade::testing::TempRedis`), then outages: Redis killed
//! and restarted empty under running heartbeats.

use std::sync::Arc;
use std::time::Duration;

use lumen_cascade::testing::TempRedis;
use lumen_cascade::{
    Claim, Directory, DirectoryError, JoinError, RedisConfig, RedisDirectory, spawn_heartbeat,
};
use tokio::sync::Barrier;

use crate::contract::{self, eventually};
use crate::{id, info};

fn directory(redis: &TempRedis, ttl: Duration) -> RedisDirectory {
    let mut config = RedisConfig::new(redis.url());
    config.ttl = ttl;
    RedisDirectory::new(config).expect("a valid config")
}

#[tokio::test]
async fn tree() {
    let Some(redis) = TempRedis::start("redis::tree") else {
        return;
    };
    contract::tree(&directory(&redis, Duration::from_secs(30))).await;
}

#[tokio::test]
async fn fanout() {
    let Some(redis) = TempRedis::start("redis::fanout") else {
        return;
    };
    contract::fanout(&directory(&redis, Duration::from_secs(30))).await;
}

#[tokio::test]
async fn expiry() {
    let Some(redis) = TempRedis::start("redis::expiry") else {
        return;
    };
    let ttl = Duration::from_secs(1);
    contract::expiry(Arc::new(directory(&redis, ttl)), ttl).await;
}

/// Two clusters on one Redis do not see each other.
#[tokio::test]
async fn prefixes_isolate() {
    let Some(redis) = TempRedis::start("redis::prefixes_isolate") else {
        return;
    };
    let one = directory(&redis, Duration::from_secs(30));
    let mut config = RedisConfig::new(redis.url());
    config.prefix = "other:".into();
    let two = RedisDirectory::new(config).unwrap();
    one.heartbeat(&info("a", "eu")).await.unwrap();
    assert_eq!(one.nodes().await.unwrap().len(), 1);
    assert_eq!(two.nodes().await.unwrap(), vec![]);
}

/// Many publishers of one stream on many nodes, each with its own
/// connection, released together: exactly one becomes the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_one_winner() {
    let Some(redis) = TempRedis::start("redis::concurrent_claims_one_winner") else {
        return;
    };
    const NODES: usize = 24;
    const STREAMS: usize = 10;
    let mut dirs = Vec::new();
    for i in 0..NODES {
        let dir = directory(&redis, Duration::from_secs(30));
        dir.heartbeat(&info(&format!("n{i}"), "eu")).await.unwrap();
        dirs.push(Arc::new(dir));
    }
    let barrier = Arc::new(Barrier::new(NODES));
    let tasks: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let (dir, barrier) = (dir.clone(), barrier.clone());
            tokio::spawn(async move {
                let me = id(&format!("n{i}"));
                let mut answers = Vec::new();
                for s in 0..STREAMS {
                    barrier.wait().await;
                    answers.push(dir.claim_origin(&format!("s{s}"), &me).await.unwrap());
                }
                (me, answers)
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    for s in 0..STREAMS {
        let winners: Vec<_> = results
            .iter()
            .filter(|(_, a)| a[s] == Claim::Won)
            .map(|(me, _)| me.clone())
            .collect();
        assert_eq!(winners.len(), 1, "stream s{s}: winners {winners:?}");
        let winner = &winners[0];
        for (me, answers) in &results {
            if me != winner {
                assert_eq!(answers[s], Claim::Held(winner.clone()), "s{s} for {me}");
            }
        }
        assert_eq!(
            dirs[0].origin(&format!("s{s}")).await.unwrap().as_ref(),
            Some(winner)
        );
    }
}

/// Many children race for a parent's last fan-out slots: exactly the
/// limit get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_slots_under_contention() {
    let Some(redis) = TempRedis::start("redis::fanout_slots_under_contention") else {
        return;
    };
    const CHILDREN: usize = 30;
    const LIMIT: u32 = 5;
    let origin = directory(&redis, Duration::from_secs(30));
    let mut p = info("p", "eu");
    p.fanout_limit = LIMIT + 1;
    origin.heartbeat(&p).await.unwrap();
    assert_eq!(origin.claim_origin("a", &p.id).await.unwrap(), Claim::Won);
    assert_eq!(origin.claim_origin("b", &p.id).await.unwrap(), Claim::Won);
    // One slot already taken on another stream.
    origin.heartbeat(&info("early", "eu")).await.unwrap();
    assert_eq!(origin.join("b", &id("early"), &p.id).await.unwrap(), 1);

    let barrier = Arc::new(Barrier::new(CHILDREN));
    let mut tasks = Vec::new();
    for i in 0..CHILDREN {
        let dir = directory(&redis, Duration::from_secs(30));
        let me = info(&format!("c{i}"), "us");
        dir.heartbeat(&me).await.unwrap();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            dir.join("a", &me.id, &id("p")).await
        }));
    }
    let (mut ok, mut full) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(1) => ok += 1,
            Err(JoinError::FanoutFull(_)) => full += 1,
            other => panic!("unexpected join answer {other:?}"),
        }
    }
    assert_eq!((ok, full), (LIMIT as usize, CHILDREN - LIMIT as usize));
    assert_eq!(
        origin.children(&p.id).await.unwrap().len(),
        LIMIT as usize + 1
    );
    assert_eq!(
        origin.carriers("a").await.unwrap().len(),
        LIMIT as usize + 1
    );
}

/// Redis dies under running nodes: calls fail (the caller keeps its view),
/// and when Redis is back, empty, the heartbeats re-create every node with
/// its origin claim and relay entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reregisters() {
    let Some(mut redis) = TempRedis::start("redis::restart_reregisters") else {
        return;
    };
    let ttl = Duration::from_secs(1);
    let beat = Duration::from_millis(200);
    let a: Arc<dyn Directory> = Arc::new(directory(&redis, ttl));
    let b: Arc<dyn Directory> = Arc::new(directory(&redis, ttl));
    let (a_info, b_info) = (info("a", "eu"), info("b", "us"));
    let a_task = {
        let i = a_info.clone();
        spawn_heartbeat(a.clone(), move || i.clone(), beat)
    };
    let b_task = {
        let i = b_info.clone();
        spawn_heartbeat(b.clone(), move || i.clone(), beat)
    };
    eventually("both registered", || async {
        a.nodes().await.is_ok_and(|n| n.len() == 2)
    })
    .await;
    assert_eq!(
        a.claim_origin("show", &a_info.id).await.unwrap(),
        Claim::Won
    );
    assert_eq!(b.join("show", &b_info.id, &a_info.id).await.unwrap(), 1);

    redis.stop();
    assert!(matches!(
        a.nodes().await,
        Err(DirectoryError::Unavailable(_))
    ));
    assert!(matches!(
        b.origin("show").await,
        Err(DirectoryError::Unavailable(_))
    ));
    // Longer than the TTL: everything would have expired anyway.
    tokio::time::sleep(ttl * 2).await;
    redis.restart();

    eventually("the tree is back", || async {
        let Ok(carriers) = b.carriers("show").await else {
            return false;
        };
        carriers.len() == 2
            && carriers
                .iter()
                .any(|c| c.node == b_info.id && c.parent.as_ref() == Some(&a_info.id))
    })
    .await;
    assert_eq!(b.origin("show").await.unwrap(), Some(a_info.id.clone()));
    assert_eq!(b.nodes().await.unwrap().len(), 2);
    assert_eq!(a.children(&a_info.id).await.unwrap().len(), 1);
    // And it keeps living past the TTL: the heartbeats refresh it.
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(b.origin("show").await.unwrap(), Some(a_info.id.clone()));
    a_task.abort();
    b_task.abort();
}

/// A node that starts while Redis is down gets errors, then registers.
#[tokio::test]
async fn starts_while_redis_is_down() {
    let Some(mut redis) = TempRedis::start("redis::starts_while_redis_is_down") else {
        return;
    };
    redis.stop();
    let dir: Arc<dyn Directory> = Arc::new(directory(&redis, Duration::from_secs(1)));
    let me = info("a", "eu");
    assert!(matches!(
        dir.heartbeat(&me).await,
        Err(DirectoryError::Unavailable(_))
    ));
    let task = {
        let me = me.clone();
        spawn_heartbeat(dir.clone(), move || me.clone(), Duration::from_millis(200))
    };
    redis.restart();
    eventually("registered", || async {
        dir.nodes().await.is_ok_and(|n| n.len() == 1)
    })
    .await;
    task.abort();
}
