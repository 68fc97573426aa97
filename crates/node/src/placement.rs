//! Which worker takes a session: a stream's publisher goes to the worker its
//! name hashes to (its origin), its viewers to the origin until that is
//! `spread` peers busier than the least busy worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The origin worker of a stream, by a stable hash (FNV-1a) of its name:
/// the same on every start, so a publisher that reconnects lands where its
/// viewers' mirrors expect it.
pub(crate) fn origin_of(stream: &str, workers: usize) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in stream.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % workers.max(1) as u64) as usize
}

/// Where a new viewer of a stream whose publisher is on `origin` goes, from
/// each worker's peer count: the origin, unless it has more than `spread`
/// peers more than the least busy worker. The chosen worker's count goes
/// up at once, so a burst of offers does not all see the same figures (the
/// worker stores its own count after each command).
pub(crate) fn viewer_worker(loads: &[Arc<AtomicUsize>], origin: usize, spread: usize) -> usize {
    let load = |i: usize| loads[i].load(Ordering::Relaxed);
    let Some(least) = (0..loads.len()).min_by_key(|&i| (load(i), i != origin)) else {
        return origin;
    };
    let chosen = if origin >= loads.len() || load(origin) <= load(least) + spread {
        origin
    } else {
        least
    };
    if let Some(l) = loads.get(chosen) {
        l.fetch_add(1, Ordering::Relaxed);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads(v: &[usize]) -> Vec<Arc<AtomicUsize>> {
        v.iter().map(|&n| Arc::new(AtomicUsize::new(n))).collect()
    }

    #[test]
    fn origins_are_stable_and_spread() {
        assert_eq!(origin_of("cam", 2), origin_of("cam", 2));
        assert_eq!(origin_of("anything", 1), 0);
        let hits: Vec<usize> = (0..100).map(|i| origin_of(&format!("s{i}"), 4)).collect();
        for w in 0..4 {
            assert!(hits.contains(&w), "no stream hashes to worker {w}");
        }
    }

    #[test]
    fn viewers_stay_on_the_origin_until_it_is_spread_busier() {
        let l = loads(&[10, 0]);
        // 10 <= 0 + 32: stays.
        assert_eq!(viewer_worker(&l, 0, 32), 0);
        assert_eq!(l[0].load(Ordering::Relaxed), 11);
        let l = loads(&[40, 5]);
        assert_eq!(viewer_worker(&l, 0, 32), 1);
        assert_eq!(l[1].load(Ordering::Relaxed), 6);
        // Spread 0: every viewer to the least busy, the origin on a tie.
        let l = loads(&[3, 3]);
        assert_eq!(viewer_worker(&l, 1, 0), 1);
        assert_eq!(viewer_worker(&l, 1, 0), 0);
    }
}
