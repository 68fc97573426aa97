//! Per-client limits on what HTTP requests make the server hold: session
//! creations per second (a token bucket per client address), concurrent
//! sessions per client and in total, and readers of WHEP event streams per
//! session and per client. Each refusal is a `429` (or `503` for the total)
//! with `Retry-After`, counted for `/metrics`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::sync::{decrement, lock};

/// The limits, each with its default in [`Limits::new`]; 0 turns a limit
/// off.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Sessions (WHIP or WHEP) one client address may create per second,
    /// on average.
    pub session_rate: f64,
    /// How many it may create at once after a quiet while.
    pub session_burst: u32,
    /// Sessions one client address may hold at once.
    pub sessions_per_client: usize,
    /// Sessions the server holds at once, from everyone.
    pub max_sessions: usize,
    /// Concurrent readers (`GET`s) of one session's event streams.
    pub event_readers_per_session: usize,
    /// Concurrent event-stream readers from one client address.
    pub event_readers_per_client: usize,
}

impl Limits {
    /// Room for a household behind one address watching several streams,
    /// and for a browser that reconnects; far below what a flood needs.
    pub fn new() -> Self {
        Limits {
            session_rate: 10.0,
            session_burst: 50,
            sessions_per_client: 100,
            max_sessions: 20_000,
            event_readers_per_session: 4,
            event_readers_per_client: 64,
        }
    }

    /// Every limit off (load generators on one address).
    pub fn unlimited() -> Self {
        Limits {
            session_rate: 0.0,
            session_burst: 0,
            sessions_per_client: 0,
            max_sessions: 0,
            event_readers_per_session: 0,
            event_readers_per_client: 0,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new()
    }
}

/// Refusals by limit, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    pub session_rate: AtomicU64,
    pub sessions_per_client: AtomicU64,
    pub sessions_per_user: AtomicU64,
    /// Credentials refused (`401`/`403` on WHIP and WHEP).
    pub unauthorized: AtomicU64,
    pub max_sessions: AtomicU64,
    pub event_readers: AtomicU64,
    pub connections: Arc<AtomicU64>,
}

/// Client addresses whose bucket is full are forgotten when the map grows
/// past this, so it cannot grow with every address ever seen.
const BUCKETS_KEPT: usize = 4096;

/// Token buckets of session creations, by client address.
#[derive(Default)]
pub(crate) struct CreationRate {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl CreationRate {
    /// Takes a token for `client` at `now`; a refusal says when to retry.
    pub fn take(&self, limits: &Limits, client: IpAddr, now: Instant) -> Result<(), Duration> {
        if limits.session_rate <= 0.0 {
            return Ok(());
        }
        let burst = f64::from(limits.session_burst.max(1));
        let mut map = lock(&self.buckets);
        if map.len() >= BUCKETS_KEPT && !map.contains_key(&client) {
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * limits.session_rate
                    < burst
            });
        }
        let b = map.entry(client).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * limits.session_rate;
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - b.tokens) / limits.session_rate,
            ))
        }
    }
}

/// Who reads event streams now.
#[derive(Default)]
pub(crate) struct Readers {
    counts: Arc<Mutex<ReaderCounts>>,
}

#[derive(Default)]
struct ReaderCounts {
    by_session: HashMap<String, usize>,
    by_client: HashMap<IpAddr, usize>,
}

/// Held by a reading event stream; lets go of its place when dropped.
pub(crate) struct ReaderGuard {
    counts: Arc<Mutex<ReaderCounts>>,
    session: String,
    client: Option<IpAddr>,
}

impl Readers {
    /// A place for one more reader of `session`'s event streams.
    pub fn acquire(
        &self,
        limits: &Limits,
        session: &str,
        client: Option<IpAddr>,
    ) -> Result<ReaderGuard, ApiError> {
        let mut c = lock(&self.counts);
        let per_session = c.by_session.get(session).copied().unwrap_or(0);
        if limits.event_readers_per_session > 0 && per_session >= limits.event_readers_per_session {
            return Err(ApiError::TooManyRequests {
                reason: format!("this session's event streams already have {per_session} readers"),
                retry_after: 5,
            });
        }
        if let Some(ip) = client {
            let n = c.by_client.get(&ip).copied().unwrap_or(0);
            if limits.event_readers_per_client > 0 && n >= limits.event_readers_per_client {
                return Err(ApiError::TooManyRequests {
                    reason: format!("{n} event streams are already read from this address"),
                    retry_after: 5,
                });
            }
            *c.by_client.entry(ip).or_default() += 1;
        }
        *c.by_session.entry(session.to_string()).or_default() += 1;
        Ok(ReaderGuard {
            counts: self.counts.clone(),
            session: session.to_string(),
            client,
        })
    }

    /// Readers now, all sessions together.
    pub fn len(&self) -> usize {
        lock(&self.counts).by_session.values().sum()
    }
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        decrement(&mut c.by_session, &self.session);
        if let Some(ip) = self.client {
            decrement(&mut c.by_client, &ip);
        }
    }
}

/// Increments a relaxed counter (refusals).
pub(crate) fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn a_burst_then_the_rate() {
        let limits = Limits {
            session_rate: 2.0,
            session_burst: 3,
            ..Limits::new()
        };
        let r = CreationRate::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.take(&limits, ip(1), t0).is_ok());
        }
        let wait = r.take(&limits, ip(1), t0).expect_err("past the burst");
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // Another client is not affected.
        assert!(r.take(&limits, ip(2), t0).is_ok());
        // Half a second later, one more.
        let t1 = t0 + Duration::from_millis(500);
        assert!(r.take(&limits, ip(1), t1).is_ok());
        assert!(r.take(&limits, ip(1), t1).is_err());
        // Off: anything goes.
        let off = Limits::unlimited();
        for _ in 0..1000 {
            assert!(r.take(&off, ip(3), t0).is_ok());
        }
    }

    #[test]
    fn the_bucket_map_is_bounded() {
        let limits = Limits::new();
        let r = CreationRate::default();
        let t0 = Instant::now();
        for i in 0..(BUCKETS_KEPT as u32 + 100) {
            let a = IpAddr::from(i.to_be_bytes());
            assert!(r.take(&limits, a, t0).is_ok());
        }
        // Ten seconds on, every bucket is full again and may go.
        let later = t0 + Duration::from_secs(10);
        assert!(r.take(&limits, ip(200), later).is_ok());
        assert!(lock(&r.buckets).len() < BUCKETS_KEPT);
    }

    #[test]
    fn readers_are_counted_and_let_go() {
        let limits = Limits {
            event_readers_per_session: 2,
            event_readers_per_client: 3,
            ..Limits::new()
        };
        let r = Readers::default();
        let a = r.acquire(&limits, "s1", Some(ip(1))).expect("first");
        let b = r.acquire(&limits, "s1", Some(ip(1))).expect("second");
        assert_eq!(
            r.acquire(&limits, "s1", Some(ip(2)))
                .err()
                .map(|e| e.status().as_u16()),
            Some(429)
        );
        let c = r
            .acquire(&limits, "s2", Some(ip(1)))
            .expect("other session");
        assert!(r.acquire(&limits, "s3", Some(ip(1))).is_err(), "per client");
        assert_eq!(r.len(), 3);
        drop((a, b, c));
        assert_eq!(r.len(), 0);
        assert!(lock(&r.counts).by_client.is_empty());
    }
}
