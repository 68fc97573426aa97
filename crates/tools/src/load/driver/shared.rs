//! Several media loops, one run (`--threads`): what the loops add up
//! between them while it runs, and how their results become one.
//!
//! Each loop keeps its own viewers and counters and, once per poll
//! iteration, moves what it counted since into [`Shared`]. The first loop
//! (the one that samples `/proc` and draws the timeline) reads the sums
//! once a second; the others never wait on it. Chat's room size is the one
//! figure a loop needs from the others as it goes: a message sent expects a
//! receipt from every viewer in the room, whichever loop drives it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use super::DriverResult;
use crate::load::chat::{ChatTotals, Receipts};

/// The sums of every loop.
#[derive(Debug, Default)]
pub struct Shared {
    packets: AtomicU64,
    bytes: AtomicU64,
    connected: AtomicUsize,
    added: AtomicUsize,
    chat_members: AtomicU64,
    window_latencies_us: Mutex<Vec<u64>>,
    chat_window: Mutex<Receipts>,
}

/// What one loop counted since its last flush.
#[derive(Debug, Default)]
pub struct Pending {
    /// Unique RTP packets received.
    pub packets: u64,
    /// Their bytes on the wire.
    pub bytes: u64,
    /// Viewers that connected.
    pub connected: usize,
    /// Viewers handed to the loop.
    pub added: usize,
    /// This loop's viewers in the chat room, as last told to [`Shared`].
    pub members_told: u64,
    /// Forwarding latencies read.
    pub latencies_us: Vec<u64>,
}

impl Shared {
    /// Adds a loop's counts (and its chat window) and clears them.
    pub fn flush(&self, p: &mut Pending, chat: &mut ChatTotals) {
        if p.packets > 0 {
            self.packets.fetch_add(p.packets, Ordering::Relaxed);
            self.bytes.fetch_add(p.bytes, Ordering::Relaxed);
            (p.packets, p.bytes) = (0, 0);
        }
        if p.connected > 0 {
            self.connected.fetch_add(p.connected, Ordering::Relaxed);
            p.connected = 0;
        }
        if p.added > 0 {
            self.added.fetch_add(p.added, Ordering::Relaxed);
            p.added = 0;
        }
        self.tell_members(p, chat.members);
        if !p.latencies_us.is_empty() {
            lock(&self.window_latencies_us).append(&mut p.latencies_us);
        }
        if chat.window.count() > 0 {
            lock(&self.chat_window).merge(&chat.window);
            chat.window = Receipts::default();
        }
    }

    /// Brings the room size up to date with this loop's `members`.
    pub fn tell_members(&self, p: &mut Pending, members: u64) {
        if members > p.members_told {
            self.chat_members
                .fetch_add(members - p.members_told, Ordering::Relaxed);
        } else if members < p.members_told {
            self.chat_members
                .fetch_sub(p.members_told - members, Ordering::Relaxed);
        }
        p.members_told = members;
    }

    /// Viewers in the chat room, all loops.
    pub fn chat_members(&self) -> u64 {
        self.chat_members.load(Ordering::Relaxed)
    }

    /// Unique packets and bytes received so far, all loops.
    pub fn packets_and_bytes(&self) -> (u64, u64) {
        (
            self.packets.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// Viewers connected so far and viewers handed to a loop, all loops.
    pub fn connected_and_added(&self) -> (usize, usize) {
        (
            self.connected.load(Ordering::Relaxed),
            self.added.load(Ordering::Relaxed),
        )
    }

    /// Takes the latencies of every loop since the last call.
    pub fn take_latencies(&self) -> Vec<u64> {
        std::mem::take(&mut *lock(&self.window_latencies_us))
    }

    /// Takes the chat receipts of every loop since the last call.
    pub fn take_chat_window(&self) -> Receipts {
        std::mem::take(&mut *lock(&self.chat_window))
    }
}

/// A poisoned lock only means another loop panicked; its numbers are still
/// numbers, and the join reports the panic.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One result from the loops' results, the first loop's first: its
/// timeline, `/proc` samples and clock stand for the run; counts add up;
/// viewers come back in start order.
pub fn merge(results: Vec<DriverResult>) -> Option<DriverResult> {
    let mut results = results.into_iter();
    let mut all = results.next()?;
    for r in results {
        all.viewers.extend(r.viewers);
        all.latencies.extend(r.latencies);
        all.socket_drops = match (all.socket_drops, r.socket_drops) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        all.send_errors += r.send_errors;
        all.frozen_at = match (all.frozen_at, r.frozen_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        absorb_chat(&mut all.chat, r.chat);
    }
    all.viewers.sort_by_key(|v| v.id);
    all.latencies.sort_by_key(|l| l.at);
    Some(all)
}

/// Adds another loop's chat counters. Its seconds are empty (only the first
/// loop closes seconds, with every loop's receipts) and its room size was
/// shared all along.
fn absorb_chat(all: &mut ChatTotals, other: ChatTotals) {
    all.sent += other.sent;
    all.skipped += other.skipped;
    all.buffer_full += other.buffer_full;
    all.expected += other.expected;
    all.received += other.received;
    all.joined += other.joined;
    all.closed += other.closed;
    all.unparsed += other.unparsed;
    all.compressed += other.compressed;
    all.bytes += other.bytes;
    for (code, n) in other.errors {
        *all.errors.entry(code).or_default() += n;
    }
    all.latency.merge(&other.latency);
    all.window.merge(&other.window);
    all.seconds.extend(other.seconds);
    all.seconds.sort_by_key(|(t, _): &(Instant, Receipts)| *t);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_add_up_and_the_room_is_one() {
        let shared = Shared::default();
        let (mut a, mut b) = (Pending::default(), Pending::default());
        let (mut chat_a, mut chat_b) = (ChatTotals::default(), ChatTotals::default());
        a.packets = 10;
        a.bytes = 1_000;
        a.connected = 2;
        a.latencies_us = vec![5, 7];
        chat_a.members = 2;
        chat_a.window.record(1_000, None, 1_040);
        b.packets = 3;
        b.bytes = 300;
        b.added = 1;
        chat_b.members = 1;
        shared.flush(&mut a, &mut chat_a);
        shared.flush(&mut b, &mut chat_b);
        assert_eq!(shared.packets_and_bytes(), (13, 1_300));
        assert_eq!(shared.connected_and_added(), (2, 1));
        assert_eq!(shared.chat_members(), 3);
        assert_eq!(shared.take_latencies(), vec![5, 7]);
        assert!(shared.take_latencies().is_empty());
        assert_eq!(shared.take_chat_window().count(), 1);
        assert_eq!(chat_a.window.count(), 0, "flushed");
        // A viewer of loop a leaves the room: the room shrinks by one.
        chat_a.members = 1;
        shared.flush(&mut a, &mut chat_a);
        assert_eq!(shared.chat_members(), 2);
        assert_eq!(shared.packets_and_bytes(), (13, 1_300), "nothing new");
    }
}
