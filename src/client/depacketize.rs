//! Receive side of RTP for the watcher: H.264 depacketization (RFC 6184:
//! single NAL, STAP-A, FU-A) into Annex B access units, and sequence-number
//! loss accounting.
//!
//! Written here rather than taken from `rtc` because its depacketizer indexes
//! network bytes without bounds checks in places; every path here treats the
//! payload as hostile and reports an incomplete access unit instead.

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

#[derive(Debug)]
struct Pending {
    timestamp: u32,
    packets: Vec<(u16, Vec<u8>)>,
    saw_marker: bool,
}

/// Groups RTP packets of one video SSRC into access units by timestamp and
/// marker bit.
#[derive(Debug, Default)]
pub struct AccessUnitAssembler {
    pending: Option<Pending>,
    /// Highest sequence number of the last access unit emitted, to tell whether the next one starts where the previous ended.
    last_end_seq: Option<u16>,
    last_timestamp: Option<u32>,
}

impl AccessUnitAssembler {
    /// Creates an empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one RTP packet; returns the access units it completed (0, 1 or
    /// 2: a timestamp change flushes an unfinished one). Packets of an access
    /// unit that was already emitted are dropped.
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Vec<AccessUnit> {
        let mut out = Vec::new();
        if let Some(last) = self.last_timestamp
            && self.pending.is_none()
            && !is_newer(timestamp, last)
        {
            return out; // late packet of a finished access unit
        }
        if let Some(p) = &self.pending
            && p.timestamp != timestamp
        {
            if !is_newer(timestamp, p.timestamp) {
                return out; // late packet of an earlier access unit
            }
            if let Some(au) = self.flush() {
                out.push(au);
            }
        }
        let pending = self.pending.get_or_insert_with(|| Pending {
            timestamp,
            packets: Vec::new(),
            saw_marker: false,
        });
        pending.packets.push((seq, payload.to_vec()));
        pending.saw_marker |= marker;
        if marker && let Some(au) = self.flush() {
            out.push(au);
        }
        out
    }

    fn flush(&mut self) -> Option<AccessUnit> {
        let mut p = self.pending.take()?;
        self.last_timestamp = Some(p.timestamp);
        let base = p.packets.first().map(|(s, _)| *s)?;
        // Order by distance from the first packet seen, which copes with
        // wrap-around and with mild reordering.
        p.packets
            .sort_by_key(|(s, _)| s.wrapping_sub(base).wrapping_add(0x8000));
        p.packets.dedup_by_key(|(s, _)| *s);
        let first = p.packets.first().map(|(s, _)| *s)?;
        let last = p.packets.last().map(|(s, _)| *s)?;
        let contiguous = usize::from(last.wrapping_sub(first)) + 1 == p.packets.len();
        let starts_right = match self.last_end_seq {
            Some(end) => first == end.wrapping_add(1),
            None => true,
        };
        // Even without the marker, the next access unit must start right
        // after the last packet seen here, or something between was lost.
        self.last_end_seq = Some(last);
        let (data, clean) = depacketize(p.packets.iter().map(|(_, b)| b.as_slice()));
        if p.saw_marker && contiguous && starts_right && clean && !data.is_empty() {
            Some(AccessUnit::Complete(data))
        } else {
            Some(AccessUnit::Incomplete { partial: data })
        }
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

fn is_newer(ts: u32, than: u32) -> bool {
    ts != than && ts.wrapping_sub(than) < 0x8000_0000
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
        let mut asm = AccessUnitAssembler::new();
        let n = packets.len();
        let mut out = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            out.extend(asm.push(65530u16.wrapping_add(i as u16), 1000, i == n - 1, p));
        }
        let mut expected = Vec::new();
        for nal in [&sps[..], &pps, &sei, &idr] {
            expected.extend_from_slice(&[0, 0, 0, 1]);
            expected.extend_from_slice(nal);
        }
        assert_eq!(out, vec![AccessUnit::Complete(expected)]);
    }

    #[test]
    fn missing_fragment_makes_the_access_unit_incomplete() {
        let slice: Vec<u8> = std::iter::once(0x41).chain(1..=60).collect();
        let mut asm = AccessUnitAssembler::new();
        let packets = fu(&slice, 20);
        assert_eq!(packets.len(), 3);
        assert!(asm.push(10, 0, false, &[0x06, 1, 2]).is_empty());
        assert!(asm.push(11, 0, false, &packets[0]).is_empty());
        let out = asm.push(13, 0, true, &packets[2]);
        assert!(
            matches!(&out[..], [AccessUnit::Incomplete { partial }] if partial.starts_with(&[0, 0, 0, 1, 6]))
        );
        // The next access unit starts where the previous one ended: complete.
        let out = asm.push(14, 3000, true, &[0x41, 9, 9]);
        assert_eq!(
            out,
            vec![AccessUnit::Complete(vec![0, 0, 0, 1, 0x41, 9, 9])]
        );
        // A gap before the next one (seq 15 lost) is noticed.
        let out = asm.push(16, 6000, true, &[0x41, 9, 9]);
        assert!(matches!(&out[..], [AccessUnit::Incomplete { .. }]));
    }

    #[test]
    fn lost_marker_is_flushed_by_the_next_timestamp() {
        let mut asm = AccessUnitAssembler::new();
        assert!(asm.push(1, 0, false, &[0x41, 1]).is_empty());
        let out = asm.push(3, 3000, true, &[0x41, 2]);
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0], AccessUnit::Incomplete { .. }));
        assert!(matches!(out[1], AccessUnit::Incomplete { .. }));
        // A late packet of an emitted access unit is ignored.
        assert!(asm.push(2, 0, true, &[0x41, 1]).is_empty());
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
