//! Receive side of RTP for the watcher: a jitter buffer that waits for
//! retransmissions, H.264 depacketization (RFC 6184: single NAL, STAP-A,
//! FU-A) into Annex B access units, and sequence-number loss accounting.
//!
//! Written here rather than taken from `rtc` because its depacketizer indexes
//! network bytes without bounds checks in places; every path here treats the
//! payload as hostile and reports an incomplete access unit instead.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// What the assembler hands back for each access unit (one RTP timestamp).
#[derive(Debug, PartialEq, Eq)]
pub enum AccessUnit {
    /// Every packet arrived: an Annex B access unit.
    Complete(Vec<u8>),
    /// Packets were missing or malformed. `partial` holds the NAL units that
    /// could still be recovered (enough to read an SEI), never for decoding.
    Incomplete { partial: Vec<u8> },
}

enum Head {
    /// `from..=to` can be handed out.
    Ready { from: u64, to: u64, complete: bool },
    /// Packets are still arriving, none missing yet.
    Waiting,
    /// A packet is missing; later ones arrived from `since` on.
    Hole { since: Instant },
}

#[derive(Debug)]
struct Held {
    timestamp: u32,
    marker: bool,
    payload: Vec<u8>,
    arrived: Instant,
}

/// A jitter buffer for one video SSRC: holds RTP packets in sequence order
/// and hands out access units (one RTP timestamp, ending at the marker bit)
/// in order. An access unit with a hole waits up to `hold` for the
/// retransmission that fills it (NACK/RTX), like a browser's buffer, before
/// it is handed out as incomplete and the next one is considered.
#[derive(Debug)]
pub struct JitterBuffer {
    hold: Duration,
    packets: BTreeMap<u64, Held>,
    /// The sequence number the next access unit starts at.
    next: Option<u64>,
    /// Highest extended sequence number seen, to extend the next ones.
    highest: Option<u64>,
}

impl JitterBuffer {
    /// A buffer that waits at most `hold` for a missing packet.
    pub fn new(hold: Duration) -> Self {
        JitterBuffer {
            hold,
            packets: BTreeMap::new(),
            next: None,
            highest: None,
        }
    }

    /// Keeps one RTP packet. Packets of access units already handed out,
    /// and duplicates, are dropped.
    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) {
        let ext = self.extend(seq);
        if self.next.is_some_and(|n| ext < n) {
            return;
        }
        self.packets.entry(ext).or_insert_with(|| Held {
            timestamp,
            marker,
            payload: payload.to_vec(),
            arrived: now,
        });
    }

    /// The next access unit, if one is complete or has waited long enough.
    pub fn pop(&mut self, now: Instant) -> Option<AccessUnit> {
        match self.head()? {
            Head::Ready { from, to, complete } => Some(self.take(from, to, complete)),
            Head::Waiting => None,
            Head::Hole { since } if now.saturating_duration_since(since) < self.hold => None,
            Head::Hole { .. } => {
                // Give up on the access unit at the head.
                let (&first, p) = self.packets.first_key_value()?;
                let ts = p.timestamp;
                let last = self
                    .packets
                    .iter()
                    .take_while(|(_, p)| p.timestamp == ts)
                    .map(|(&s, _)| s)
                    .last()
                    .unwrap_or(first);
                let partial = match self.take(first, last, false) {
                    AccessUnit::Complete(data) | AccessUnit::Incomplete { partial: data } => data,
                };
                Some(AccessUnit::Incomplete { partial })
            }
        }
    }

    /// When [`Self::pop`] may give up on a hole, if one is waiting.
    pub fn deadline(&self) -> Option<Instant> {
        match self.head()? {
            Head::Hole { since } => Some(since + self.hold),
            _ => None,
        }
    }

    /// Where the access unit at the head of the buffer stands.
    fn head(&self) -> Option<Head> {
        let (&first, p) = self.packets.first_key_value()?;
        let start = self.next.unwrap_or(first);
        // Packets after a hole are the evidence of a loss; the wait counts
        // from the first of them, not from a slow access unit's start.
        let since = |after: u64| self.packets.range(after..).map(|(_, p)| p.arrived).min();
        if first != start {
            return since(first).map(|since| Head::Hole { since });
        }
        let ts = p.timestamp;
        let mut seq = start;
        while let Some(p) = self.packets.get(&seq) {
            if p.timestamp != ts {
                // The next access unit began without a marker here.
                return Some(Head::Ready {
                    from: start,
                    to: seq - 1,
                    complete: false,
                });
            }
            if p.marker {
                return Some(Head::Ready {
                    from: start,
                    to: seq,
                    complete: true,
                });
            }
            seq += 1;
        }
        Some(match since(seq + 1) {
            Some(since) => Head::Hole { since },
            None => Head::Waiting,
        })
    }

    /// Removes `from..=to` and depacketizes it; the next access unit starts
    /// after it. `complete` says whether the run was whole and ended at a
    /// marker (the payloads must still be well-formed).
    fn take(&mut self, from: u64, to: u64, complete: bool) -> AccessUnit {
        let rest = self.packets.split_off(&(to + 1));
        let run = std::mem::replace(&mut self.packets, rest);
        self.next = Some(to + 1);
        let contiguous = run.len() as u64 == to - from + 1;
        let (data, clean) = depacketize(run.values().map(|p| p.payload.as_slice()));
        if complete && contiguous && clean && !data.is_empty() {
            AccessUnit::Complete(data)
        } else {
            AccessUnit::Incomplete { partial: data }
        }
    }

    fn extend(&mut self, seq: u16) -> u64 {
        let ext = match self.highest {
            // Start well above zero so a packet from just before the first
            // one still has a place.
            None => u64::from(seq) + (1 << 16),
            Some(h) => {
                let cycle = h & !0xffff;
                [
                    cycle.wrapping_sub(1 << 16) | u64::from(seq),
                    cycle | u64::from(seq),
                    (cycle + (1 << 16)) | u64::from(seq),
                ]
                .into_iter()
                .min_by_key(|c| c.abs_diff(h))
                .unwrap_or(h)
            }
        };
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        ext
    }
}

/// Depacketizes RTP payloads (in order) into an Annex B byte stream. The flag
/// says whether every payload was well-formed and every FU-A complete.
pub fn depacketize<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut clean = true;
    let mut fu: Option<Vec<u8>> = None;
    for payload in payloads {
        let Some(&header) = payload.first() else {
            clean = false;
            continue;
        };
        match header & 0x1f {
            1..=23 => {
                clean &= fu.take().is_none();
                push_nal(&mut out, payload);
            }
            STAP_A => {
                clean &= fu.take().is_none();
                let mut rest = &payload[1..];
                // An aggregation packet that aggregates nothing is malformed.
                clean &= !rest.is_empty();
                while !rest.is_empty() {
                    let Some((len, tail)) = rest.split_first_chunk::<2>() else {
                        clean = false;
                        break;
                    };
                    let len = usize::from(u16::from_be_bytes(*len));
                    let Some(nal) = tail.get(..len) else {
                        clean = false;
                        break;
                    };
                    if !nal.is_empty() {
                        push_nal(&mut out, nal);
                    }
                    rest = &tail[len..];
                }
            }
            FU_A => {
                let Some(&fu_header) = payload.get(1) else {
                    clean = false;
                    continue;
                };
                let start = fu_header & 0x80 != 0;
                let end = fu_header & 0x40 != 0;
                if start {
                    clean &= fu.is_none();
                    let mut nal = Vec::with_capacity(payload.len() * 4);
                    nal.push((header & 0xe0) | (fu_header & 0x1f));
                    fu = Some(nal);
                }
                match fu.as_mut() {
                    Some(nal) => nal.extend_from_slice(&payload[2..]),
                    None => {
                        // A middle or end fragment without its start.
                        clean = false;
                        continue;
                    }
                }
                if end && let Some(nal) = fu.take() {
                    push_nal(&mut out, &nal);
                }
            }
            _ => clean = false,
        }
    }
    if fu.is_some() {
        clean = false;
    }
    (out, clean)
}

fn push_nal(out: &mut Vec<u8>, nal: &[u8]) {
    out.extend_from_slice(&[0, 0, 0, 1]);
    out.extend_from_slice(nal);
}

/// RFC 3550-style loss accounting for one SSRC: expected minus received,
/// so a late retransmission that fills a gap is not counted as lost.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    base: Option<u64>,
    highest: u64,
    received: u64,
}

impl SeqTracker {
    /// Records one received sequence number.
    pub fn record(&mut self, seq: u16) {
        self.received += 1;
        let Some(_) = self.base else {
            self.base = Some(u64::from(seq) + (1 << 16));
            self.highest = u64::from(seq) + (1 << 16);
            return;
        };
        // Extend to 64 bits relative to the highest seen so far.
        let cycle = self.highest & !0xffff;
        let candidates = [
            cycle.wrapping_sub(1 << 16) | u64::from(seq),
            cycle | u64::from(seq),
            (cycle + (1 << 16)) | u64::from(seq),
        ];
        let ext = candidates
            .into_iter()
            .min_by_key(|c| c.abs_diff(self.highest))
            .unwrap_or(self.highest);
        if ext > self.highest {
            self.highest = ext;
        }
    }

    /// Packets lost so far (never negative; duplicates can hide losses).
    pub fn lost(&self) -> u64 {
        match self.base {
            Some(base) => (self.highest + 1 - base).saturating_sub(self.received),
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fu(nal: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let header = nal[0];
        let body = &nal[1..];
        let chunks: Vec<_> = body.chunks(chunk).collect();
        chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut p = vec![(header & 0xe0) | FU_A, header & 0x1f];
                if i == 0 {
                    p[1] |= 0x80;
                }
                if i == chunks.len() - 1 {
                    p[1] |= 0x40;
                }
                p.extend_from_slice(c);
                p
            })
            .collect()
    }

    fn stap(nals: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![0x78];
        for n in nals {
            p.extend_from_slice(&(n.len() as u16).to_be_bytes());
            p.extend_from_slice(n);
        }
        p
    }

    const HOLD: Duration = Duration::from_millis(100);

    fn drain(jb: &mut JitterBuffer, now: Instant) -> Vec<AccessUnit> {
        std::iter::from_fn(|| jb.pop(now)).collect()
    }

    #[test]
    fn reassembles_stap_single_and_fu() {
        let sps = [0x67, 1, 2, 3];
        let pps = [0x68, 4];
        let sei = [0x06, 5, 6];
        let idr: Vec<u8> = std::iter::once(0x65)
            .chain((0..50).map(|i| i as u8 + 1))
            .collect();
        let mut packets = vec![stap(&[&sps, &pps]), sei.to_vec()];
        packets.extend(fu(&idr, 16));
        let now = Instant::now();
        let mut jb = JitterBuffer::new(HOLD);
        let n = packets.len();
        let mut out = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            jb.push(now, 65530u16.wrapping_add(i as u16), 1000, i == n - 1, p);
            out.extend(drain(&mut jb, now));
        }
        let mut expected = Vec::new();
        for nal in [&sps[..], &pps, &sei, &idr] {
            expected.extend_from_slice(&[0, 0, 0, 1]);
            expected.extend_from_slice(nal);
        }
        assert_eq!(out, vec![AccessUnit::Complete(expected)]);
    }

    #[test]
    fn a_retransmission_in_time_completes_the_access_unit() {
        let slice: Vec<u8> = std::iter::once(0x41).chain(1..=60).collect();
        let packets = fu(&slice, 20);
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(HOLD);
        jb.push(t0, 10, 0, false, &[0x06, 1, 2]);
        jb.push(t0, 11, 0, false, &packets[0]);
        jb.push(t0, 13, 0, true, &packets[2]);
        // Seq 12 is missing: nothing yet, and a deadline to give up at.
        assert!(drain(&mut jb, t0 + HOLD / 2).is_empty());
        assert_eq!(jb.deadline(), Some(t0 + HOLD));
        // Its repair arrives: whole.
        jb.push(t0 + HOLD / 2, 12, 0, false, &packets[1]);
        let out = drain(&mut jb, t0 + HOLD / 2);
        assert!(matches!(&out[..], [AccessUnit::Complete(d)] if d.ends_with(&slice[40..])));
        // A late duplicate changes nothing.
        jb.push(t0 + HOLD, 12, 0, false, &packets[1]);
        assert!(drain(&mut jb, t0 + HOLD * 3).is_empty());
    }

    #[test]
    fn a_hole_not_repaired_in_time_is_given_up() {
        let slice: Vec<u8> = std::iter::once(0x41).chain(1..=60).collect();
        let packets = fu(&slice, 20);
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(HOLD);
        jb.push(t0, 10, 0, false, &[0x06, 1, 2]);
        jb.push(t0, 11, 0, false, &packets[0]);
        jb.push(t0, 13, 0, true, &packets[2]);
        // The next access unit is whole but waits behind the hole.
        jb.push(t0, 14, 3000, true, &[0x41, 9, 9]);
        assert!(drain(&mut jb, t0 + HOLD - Duration::from_millis(1)).is_empty());
        let out = drain(&mut jb, t0 + HOLD);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            matches!(&out[0], AccessUnit::Incomplete { partial } if partial.starts_with(&[0, 0, 0, 1, 6]))
        );
        assert_eq!(out[1], AccessUnit::Complete(vec![0, 0, 0, 1, 0x41, 9, 9]));
        // The repair comes too late: dropped.
        jb.push(t0 + HOLD, 12, 0, false, &packets[1]);
        assert!(drain(&mut jb, t0 + HOLD * 3).is_empty());
        // A hole before the next access unit (seq 15 lost) makes it incomplete.
        let t1 = t0 + HOLD * 3;
        jb.push(t1, 16, 6000, true, &[0x41, 9, 9]);
        assert!(drain(&mut jb, t1).is_empty());
        let out = drain(&mut jb, t1 + HOLD);
        assert!(matches!(&out[..], [AccessUnit::Incomplete { .. }]));
    }

    #[test]
    fn a_slow_access_unit_without_a_hole_is_not_given_up() {
        let slice: Vec<u8> = std::iter::once(0x65).chain(1..=60).collect();
        let packets = fu(&slice, 20);
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(HOLD);
        // A keyframe paced out over ten times the hold.
        jb.push(t0, 1, 0, false, &packets[0]);
        jb.push(t0 + HOLD * 5, 2, 0, false, &packets[1]);
        assert_eq!(jb.deadline(), None);
        assert!(drain(&mut jb, t0 + HOLD * 9).is_empty());
        jb.push(t0 + HOLD * 10, 3, 0, true, &packets[2]);
        let out = drain(&mut jb, t0 + HOLD * 10);
        assert!(matches!(&out[..], [AccessUnit::Complete(_)]));
    }

    #[test]
    fn a_missing_marker_ends_at_the_next_timestamp() {
        let now = Instant::now();
        let mut jb = JitterBuffer::new(HOLD);
        jb.push(now, 1, 0, false, &[0x41, 1]);
        jb.push(now, 2, 3000, true, &[0x41, 2]);
        let out = drain(&mut jb, now);
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0], AccessUnit::Incomplete { .. }));
        assert_eq!(out[1], AccessUnit::Complete(vec![0, 0, 0, 1, 0x41, 2]));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let now = Instant::now();
        let mut jb = JitterBuffer::new(HOLD);
        for (i, seq) in [65534u16, 65535, 0, 1].into_iter().enumerate() {
            jb.push(now, seq, i as u32 * 3000, true, &[0x41, i as u8]);
        }
        let out = drain(&mut jb, now);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|a| matches!(a, AccessUnit::Complete(_))));
    }

    #[test]
    fn garbage_payloads_never_panic() {
        let cases: [&[u8]; 8] = [
            &[],
            &[0x78],
            &[0x78, 0x00],
            &[0x78, 0x00, 0x09, 0x65],
            &[0x7c],
            &[0x7c, 0x45],
            &[0x1d, 0x80, 1],
            &[0x00, 1, 2],
        ];
        for c in cases {
            let (_, clean) = depacketize([c]);
            assert!(!clean, "{c:02x?}");
        }
    }

    #[test]
    fn seq_tracker_counts_gaps_across_wrap() {
        let mut t = SeqTracker::default();
        for s in [65534u16, 65535, 0, 2, 3] {
            t.record(s);
        }
        assert_eq!(t.lost(), 1);
        t.record(1); // late retransmission fills the gap
        assert_eq!(t.lost(), 0);
    }
}
