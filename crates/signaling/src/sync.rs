//! Small helpers for the maps the HTTP side shares between tasks.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Counts down; a count at zero is removed, so the maps hold only what is
/// in use.
pub(crate) fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// A panic elsewhere while holding a lock leaves a usable map.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
