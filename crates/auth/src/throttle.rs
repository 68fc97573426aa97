//! Log in throttling: after `free` failures for one name or from one
//! address, each further attempt must wait, doubling from 1 s up to 15
//! minutes, until a success (or an hour without failures) clears it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::AuthError;

const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Entries kept at most; the oldest half is dropped past it (an attacker
/// rotating names cannot grow it without bound).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Name(String),
    Addr(IpAddr),
}

pub(crate) struct Throttle {
    free: u32,
    map: Mutex<HashMap<Subject, Failures>>,
}

impl Throttle {
    pub fn new(free: u32) -> Self {
        Throttle {
            free,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn subjects(name: &str, addr: Option<IpAddr>) -> Vec<Subject> {
        let mut v = vec![Subject::Name(name.to_ascii_lowercase())];
        if let Some(a) = addr {
            v.push(Subject::Addr(a));
        }
        v
    }

    fn wait(&self, f: &Failures) -> Duration {
        if f.count < self.free {
            return Duration::ZERO;
        }
        let doublings = (f.count - self.free).min(20);
        Duration::from_secs(1u64 << doublings).min(MAX_WAIT)
    }

    /// `Throttled` when an attempt now must wait.
    pub fn check(&self, name: &str, addr: Option<IpAddr>, now: Instant) -> Result<(), AuthError> {
        if self.free == 0 {
            return Ok(());
        }
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut longest = Duration::ZERO;
        for s in Self::subjects(name, addr) {
            if let Some(f) = map.get(&s) {
                let until = f.last + self.wait(f);
                longest = longest.max(until.saturating_duration_since(now));
            }
        }
        if longest.is_zero() {
            Ok(())
        } else {
            Err(AuthError::Throttled {
                retry_after: longest.as_secs_f64().ceil().max(1.0) as u64,
            })
        }
    }

    pub fn failure(&self, name: &str, addr: Option<IpAddr>, now: Instant) {
        if self.free == 0 {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        for s in Self::subjects(name, addr) {
            let f = map.entry(s).or_insert(Failures {
                count: 0,
                last: now,
            });
            if now.saturating_duration_since(f.last) > FORGET_AFTER {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last = now;
        }
    }

    /// [`Throttle::check`] of an address alone.
    pub fn check_addr(&self, addr: Option<IpAddr>, now: Instant) -> Result<(), AuthError> {
        let Some(a) = addr else { return Ok(()) };
        if self.free == 0 {
            return Ok(());
        }
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let wait = map
            .get(&Subject::Addr(a))
            .map(|f| (f.last + self.wait(f)).saturating_duration_since(now))
            .unwrap_or_default();
        if wait.is_zero() {
            Ok(())
        } else {
            Err(AuthError::Throttled {
                retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
            })
        }
    }

    /// Counts an attempt against an address alone.
    pub fn failure_addr(&self, addr: Option<IpAddr>, now: Instant) {
        let Some(a) = addr else { return };
        if self.free == 0 {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        let f = map.entry(Subject::Addr(a)).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.saturating_duration_since(f.last) > FORGET_AFTER {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
    }

    pub fn success(&self, name: &str, addr: Option<IpAddr>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for s in Self::subjects(name, addr) {
            map.remove(&s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_failures_then_doubling_waits_per_name_and_address() {
        let t = Throttle::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            t.check("alice", Some(a), t0).unwrap();
            t.failure("alice", Some(a), t0);
        }
        // The fourth attempt waits 1 s, for this name from any address...
        let Err(AuthError::Throttled { retry_after }) = t.check("alice", Some(b), t0) else {
            panic!("not throttled");
        };
        assert_eq!(retry_after, 1);
        // ... and from this address for any name.
        assert!(t.check("bob", Some(a), t0).is_err());
        // Others are not concerned.
        t.check("bob", Some(b), t0).unwrap();
        // After the wait it may try; another failure doubles the wait.
        let t1 = t0 + Duration::from_secs(1);
        t.check("alice", Some(a), t1).unwrap();
        t.failure("alice", Some(a), t1);
        let Err(AuthError::Throttled { retry_after }) = t.check("alice", None, t1) else {
            panic!("not throttled");
        };
        assert_eq!(retry_after, 2);
        // A success clears it.
        t.success("alice", Some(a));
        t.check("alice", Some(a), t1).unwrap();
    }

    #[test]
    fn the_wait_is_capped() {
        let t = Throttle::new(1);
        let t0 = Instant::now();
        for _ in 0..40 {
            t.failure("x", None, t0);
        }
        let Err(AuthError::Throttled { retry_after }) = t.check("x", None, t0) else {
            panic!("not throttled");
        };
        assert_eq!(retry_after, MAX_WAIT.as_secs());
    }
}
