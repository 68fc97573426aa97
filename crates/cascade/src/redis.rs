//! The Redis directory: Redis is the cluster's only shared state.
//!
//! Key layout, under a configurable prefix (`lumen:` by default); node ids
//! and stream names cannot contain `:` or ` `, so keys and members parse
//! back unambiguously:
//!
//! | key | type | value | TTL |
//! |---|---|---|---|
//! | `{prefix}node:{node}` | string | the node's `NodeInfo` as JSON | the node TTL, refreshed by each heartbeat |
//! | `{prefix}nodes` | set | node ids (an index; expired ids are pruned on read) | refreshed by any heartbeat |
//! | `{prefix}origin:{stream}` | string | the origin's node id | refreshed by the origin's heartbeat |
//! | `{prefix}carrier:{stream}:{node}` | string | `{"p": parent or "", "d": depth}` | refreshed by the carrier's heartbeat |
//! | `{prefix}carriers:{stream}` | set | node ids carrying the stream (index) | refreshed by any member's heartbeat |
//! | `{prefix}children:{node}` | set | `"{stream} {child}"`: links the node feeds (index) | refreshed by any child's heartbeat |
//!
//! Every operation is one Lua script (`src/lua/`), so it is atomic: two
//! publishers claiming an origin, or two children taking a parent's last
//! fan-out slot, are serialised by Redis. Reads treat an entry whose node
//! key is gone as absent, so a dead node disappears at once with its node
//! key, and its other keys follow within one TTL.
//!
//! A node's process remembers what it holds (a ledger per node id: origin
//! claims and relay entries made through this `RedisDirectory`), and each
//! heartbeat sends all of it: the script refreshes the TTLs and re-creates
//! whatever expired or was lost with a Redis restart. An origin another
//! node claimed meanwhile is not taken back: the heartbeat reports it lost.
//! The ledger's lock is held across the script call, so a heartbeat cannot
//! resurrect an entry that a concurrent `release_origin` or `leave` of the
//! same node just removed.
//!
//! Connection: a `redis` connection manager, created lazily (a node starts
//! even while Redis is down) and reconnecting by itself; every call is
//! bounded by the configured timeout and fails with
//! [`DirectoryError::Unavailable`] meanwhile. Scripts are sent by hash and
//! re-loaded after a restart flushed Redis's script cache.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script};

use crate::directory::{Carrier, ChildLink, Claim, DirFuture, Directory, HeartbeatReport};
use crate::{DirectoryError, JoinError, NodeId, NodeInfo, check_stream};

/// How to reach Redis and how long entries live.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://host:port/db` (`--redis-url`).
    pub url: String,
    /// Prefix of every key, so several clusters (or tests) share a Redis.
    pub prefix: String,
    /// How long a node's entries outlive its last heartbeat.
    pub ttl: Duration,
    /// Bound on each directory call, connecting included.
    pub timeout: Duration,
}

impl RedisConfig {
    /// The defaults: prefix `lumen:`, [`DEFAULT_TTL`](crate::DEFAULT_TTL),
    /// a 1 s timeout.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            prefix: "lumen:".to_string(),
            ttl: crate::DEFAULT_TTL,
            timeout: Duration::from_secs(1),
        }
    }
}

/// The Redis-backed directory (see the module docs).
pub struct RedisDirectory {
    conn: ConnectionManager,
    prefix: String,
    ttl_ms: u64,
    timeout: Duration,
    scripts: Scripts,
    ledgers: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Ledger>>>>,
}

impl std::fmt::Debug for RedisDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDirectory")
            .field("prefix", &self.prefix)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

/// What one node holds, to be refreshed and re-created by its heartbeat.
#[derive(Debug, Default)]
struct Ledger {
    origins: BTreeSet<String>,
    /// stream -> (parent, depth).
    relays: BTreeMap<String, (NodeId, u32)>,
}

struct Scripts {
    heartbeat: Script,
    deregister: Script,
    nodes: Script,
    claim: Script,
    origin: Script,
    release: Script,
    carriers: Script,
    join: Script,
    leave: Script,
    children: Script,
}

impl Scripts {
    fn new() -> Scripts {
        const PRELUDE: &str = include_str!("lua/prelude.lua");
        const CHILDREN: &str = include_str!("lua/children.lua");
        let s = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        let c = |body: &str| Script::new(&format!("{PRELUDE}\n{CHILDREN}\n{body}"));
        Scripts {
            heartbeat: s(include_str!("lua/heartbeat.lua")),
            deregister: s(include_str!("lua/deregister.lua")),
            nodes: s(include_str!("lua/nodes.lua")),
            claim: s(include_str!("lua/claim.lua")),
            origin: s(include_str!("lua/origin.lua")),
            release: s(include_str!("lua/release.lua")),
            carriers: s(include_str!("lua/carriers.lua")),
            join: c(include_str!("lua/join.lua")),
            leave: s(include_str!("lua/leave.lua")),
            children: c(include_str!("lua/list_children.lua")),
        }
    }
}

impl RedisDirectory {
    /// A directory on the Redis at `config.url`. Does not connect yet (a
    /// node starts while Redis is down); must be called inside a tokio
    /// runtime. Fails only on a malformed URL or config.
    pub fn new(config: RedisConfig) -> Result<RedisDirectory, DirectoryError> {
        let ttl_ms = u64::try_from(config.ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Err(DirectoryError::Config("ttl must be at least 1 ms".into()));
        }
        if config.prefix.contains(char::is_whitespace) {
            return Err(DirectoryError::Config(
                "prefix must not contain whitespace".into(),
            ));
        }
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| DirectoryError::Config(format!("redis url: {e}")))?;
        // Few, quick retries: a call fails fast while Redis is down (the
        // caller keeps its view), and the next call tries again.
        let mgr = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(config.timeout)
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout));
        let conn = ConnectionManager::new_lazy_with_config(client, mgr)
            .map_err(|e| DirectoryError::Config(format!("redis: {e}")))?;
        Ok(RedisDirectory {
            conn,
            prefix: config.prefix,
            ttl_ms,
            timeout: config.timeout,
            scripts: Scripts::new(),
            ledgers: Mutex::new(HashMap::new()),
        })
    }

    fn ledger(&self, node: &NodeId) -> Arc<tokio::sync::Mutex<Ledger>> {
        let mut map = self.ledgers.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(node.clone()).or_default().clone()
    }

    /// Runs `script` with the prefix and TTL first, then `args`.
    async fn run<T: FromRedisValue>(
        &self,
        script: &Script,
        args: &[&str],
    ) -> Result<T, DirectoryError> {
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix).arg(self.ttl_ms);
        for a in args {
            inv.arg(*a);
        }
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, inv.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_err(e)),
            Err(_) => Err(DirectoryError::Unavailable(format!(
                "no answer from redis within {:?}",
                self.timeout
            ))),
        }
    }
}

fn map_err(e: redis::RedisError) -> DirectoryError {
    match e.kind() {
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => {
            DirectoryError::Corrupt(e.to_string())
        }
        _ => DirectoryError::Unavailable(e.to_string()),
    }
}

fn node_id(s: String) -> Result<NodeId, DirectoryError> {
    NodeId::new(s).map_err(|e| DirectoryError::Corrupt(e.to_string()))
}

impl Directory for RedisDirectory {
    fn heartbeat<'a>(&'a self, info: &'a NodeInfo) -> DirFuture<'a, HeartbeatReport> {
        Box::pin(async move {
            let json =
                serde_json::to_string(info).map_err(|e| DirectoryError::Corrupt(e.to_string()))?;
            let ledger = self.ledger(&info.id);
            let mut ledger = ledger.lock().await;
            let n = ledger.origins.len().to_string();
            let depths: Vec<String> = ledger.relays.values().map(|(_, d)| d.to_string()).collect();
            let mut args: Vec<&str> = vec![info.id.as_str(), &json, &n];
            args.extend(ledger.origins.iter().map(String::as_str));
            for ((stream, (parent, _)), depth) in ledger.relays.iter().zip(&depths) {
                args.extend([stream.as_str(), parent.as_str(), depth.as_str()]);
            }
            let (fresh, lost): (i64, Vec<String>) =
                self.run(&self.scripts.heartbeat, &args).await?;
            for s in &lost {
                ledger.origins.remove(s);
            }
            Ok(HeartbeatReport {
                registered: fresh == 1,
                lost_origins: lost,
            })
        })
    }

    fn deregister<'a>(&'a self, node: &'a NodeId) -> DirFuture<'a, ()> {
        Box::pin(async move {
            let ledger = self.ledger(node);
            let mut ledger = ledger.lock().await;
            let n = ledger.origins.len().to_string();
            let mut args: Vec<&str> = vec![node.as_str(), &n];
            args.extend(ledger.origins.iter().map(String::as_str));
            args.extend(ledger.relays.keys().map(String::as_str));
            let _: i64 = self.run(&self.scripts.deregister, &args).await?;
            *ledger = Ledger::default();
            Ok(())
        })
    }

    fn nodes(&self) -> DirFuture<'_, Vec<NodeInfo>> {
        Box::pin(async move {
            let raw: Vec<String> = self.run(&self.scripts.nodes, &[]).await?;
            raw.iter()
                .map(|j| {
                    serde_json::from_str(j)
                        .map_err(|e| DirectoryError::Corrupt(format!("node record: {e}")))
                })
                .collect()
        })
    }

    fn claim_origin<'a>(&'a self, stream: &'a str, node: &'a NodeId) -> DirFuture<'a, Claim> {
        Box::pin(async move {
            check_stream(stream)?;
            let ledger = self.ledger(node);
            let mut ledger = ledger.lock().await;
            let (code, holder): (i64, String) = self
                .run(&self.scripts.claim, &[stream, node.as_str()])
                .await?;
            match code {
                1 => {
                    ledger.relays.remove(stream);
                    ledger.origins.insert(stream.to_string());
                    Ok(Claim::Won)
                }
                0 => Ok(Claim::Held(node_id(holder)?)),
                _ => Err(DirectoryError::NotRegistered(node.clone())),
            }
        })
    }

    fn origin<'a>(&'a self, stream: &'a str) -> DirFuture<'a, Option<NodeId>> {
        Box::pin(async move {
            check_stream(stream)?;
            let holder: Option<String> = self.run(&self.scripts.origin, &[stream]).await?;
            holder.map(node_id).transpose()
        })
    }

    fn release_origin<'a>(&'a self, stream: &'a str, node: &'a NodeId) -> DirFuture<'a, bool> {
        Box::pin(async move {
            check_stream(stream)?;
            let ledger = self.ledger(node);
            let mut ledger = ledger.lock().await;
            let done: i64 = self
                .run(&self.scripts.release, &[stream, node.as_str()])
                .await?;
            ledger.origins.remove(stream);
            Ok(done == 1)
        })
    }

    fn carriers<'a>(&'a self, stream: &'a str) -> DirFuture<'a, Vec<Carrier>> {
        Box::pin(async move {
            check_stream(stream)?;
            let flat: Vec<(String, String, i64)> =
                self.run(&self.scripts.carriers, &[stream]).await?;
            flat.into_iter()
                .map(|(node, parent, depth)| {
                    Ok(Carrier {
                        node: node_id(node)?,
                        parent: if parent.is_empty() {
                            None
                        } else {
                            Some(node_id(parent)?)
                        },
                        depth: u32::try_from(depth)
                            .map_err(|_| DirectoryError::Corrupt(format!("depth {depth}")))?,
                    })
                })
                .collect()
        })
    }

    fn join<'a>(
        &'a self,
        stream: &'a str,
        node: &'a NodeId,
        parent: &'a NodeId,
    ) -> DirFuture<'a, u32, JoinError> {
        Box::pin(async move {
            check_stream(stream)?;
            let ledger = self.ledger(node);
            let mut ledger = ledger.lock().await;
            let limit = crate::placement::WALK_LIMIT.to_string();
            let answer: Vec<i64> = self
                .run(
                    &self.scripts.join,
                    &[stream, node.as_str(), parent.as_str(), &limit],
                )
                .await?;
            match answer.as_slice() {
                [1, depth] => {
                    let depth = u32::try_from(*depth)
                        .map_err(|_| DirectoryError::Corrupt(format!("depth {depth}")))?;
                    ledger
                        .relays
                        .insert(stream.to_string(), (parent.clone(), depth));
                    Ok(depth)
                }
                [-1] => Err(DirectoryError::NotRegistered(node.clone()).into()),
                [-2] => Err(JoinError::WouldLoop(parent.clone())),
                [-3] => Err(JoinError::IsOrigin),
                [-4] => Err(JoinError::ParentNotCarrying(parent.clone())),
                [-5] => Err(JoinError::FanoutFull(parent.clone())),
                other => Err(DirectoryError::Corrupt(format!("join answered {other:?}")).into()),
            }
        })
    }

    fn leave<'a>(&'a self, stream: &'a str, node: &'a NodeId) -> DirFuture<'a, bool> {
        Box::pin(async move {
            check_stream(stream)?;
            let ledger = self.ledger(node);
            let mut ledger = ledger.lock().await;
            let done: i64 = self
                .run(&self.scripts.leave, &[stream, node.as_str()])
                .await?;
            ledger.relays.remove(stream);
            Ok(done == 1)
        })
    }

    fn children<'a>(&'a self, node: &'a NodeId) -> DirFuture<'a, Vec<ChildLink>> {
        Box::pin(async move {
            let raw: Vec<String> = self.run(&self.scripts.children, &[node.as_str()]).await?;
            let mut out = raw
                .into_iter()
                .map(|m| {
                    let (stream, child) = m
                        .split_once(' ')
                        .ok_or_else(|| DirectoryError::Corrupt(format!("child link {m:?}")))?;
                    Ok(ChildLink {
                        stream: stream.to_string(),
                        child: node_id(child.to_string())?,
                    })
                })
                .collect::<Result<Vec<_>, DirectoryError>>()?;
            out.sort();
            Ok(out)
        })
    }
}
