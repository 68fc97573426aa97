//! `GopCache`: the packets of one video layer since its last keyframe, so a
//! viewer that joins starts at once on that keyframe instead of waiting for
//! the publisher to answer a keyframe request (a round trip plus an encode,
//! and at most one request per layer per 500 ms however many viewers join).
//!
//! The cache is only used when its keyframe is recent: replaying an old group
//! of pictures would start the viewer that far behind live. A layer whose
//! keyframes are rarer than that (browsers send them on request only) falls
//! back to the keyframe request.

use std::time::{Duration, Instant};

/// A cached keyframe older than this is not replayed.
pub(crate) const GOP_MAX_AGE: Duration = Duration::from_millis(1000);
/// A group of pictures bigger than this is not kept (about 3 s at 2.5 Mbit/s).
const GOP_MAX_BYTES: usize = 1 << 20;
const GOP_MAX_PACKETS: usize = 2048;

/// One forwarded packet, as a viewer's Consumer needs it again (the
/// packet as every Router forwards it).
pub(crate) use crate::sink::MediaPacket as CachedPacket;

/// The current group of pictures of one layer.
#[derive(Debug, Default)]
pub(crate) struct GopCache {
    packets: Vec<CachedPacket>,
    bytes: usize,
    /// When the keyframe that starts `packets` arrived; `None` while there
    /// is nothing usable (no keyframe yet, or the group grew too big).
    keyframe_at: Option<Instant>,
    /// RTP timestamp of that keyframe: its later packets (an H.264 keyframe
    /// is SPS, PPS and the IDR slices) belong to it.
    keyframe_ts: u32,
}

impl GopCache {
    /// Keeps a packet that was just forwarded. `is_key` says it starts a
    /// keyframe (or carries the parameter sets before one).
    pub fn push(&mut self, now: Instant, is_key: bool, pkt: CachedPacket) {
        let same_keyframe = self.keyframe_at.is_some() && pkt.timestamp == self.keyframe_ts;
        if is_key && !same_keyframe {
            self.clear();
            self.keyframe_at = Some(now);
            self.keyframe_ts = pkt.timestamp;
        } else if self.keyframe_at.is_none() {
            return;
        }
        if self.packets.len() >= GOP_MAX_PACKETS || self.bytes + pkt.payload.len() > GOP_MAX_BYTES {
            // Too long a group to replay: wait for the next keyframe.
            self.clear();
            return;
        }
        self.bytes += pkt.payload.len();
        self.packets.push(pkt);
    }

    /// The packets from a keyframe at most [`GOP_MAX_AGE`] old, keyframe first.
    pub fn fresh(&self, now: Instant) -> Option<&[CachedPacket]> {
        let at = self.keyframe_at?;
        (now.saturating_duration_since(at) <= GOP_MAX_AGE && !self.packets.is_empty())
            .then_some(&self.packets[..])
    }

    /// Forgets everything (the publisher changed).
    pub fn clear(&mut self) {
        self.packets.clear();
        self.bytes = 0;
        self.keyframe_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::rtp::ExtensionValues;

    fn pkt(seq: u64, timestamp: u32, len: usize) -> CachedPacket {
        CachedPacket {
            mid: str0m::media::Mid::from("1"),
            rid: None,
            at: Instant::now(),
            ssrc: 1,
            seq,
            pt: 96.into(),
            timestamp,
            marker: false,
            payload: vec![0u8; len].into(),
            ext: ExtensionValues::default(),
        }
    }

    #[test]
    fn starts_on_a_keyframe_and_keeps_its_group() {
        let t0 = Instant::now();
        let mut c = GopCache::default();
        c.push(t0, false, pkt(1, 0, 100));
        assert!(c.fresh(t0).is_none(), "nothing before a keyframe");
        c.push(t0, true, pkt(2, 3000, 100)); // SPS
        c.push(t0, true, pkt(3, 3000, 100)); // IDR start, same frame
        c.push(t0, false, pkt(4, 3000, 100));
        c.push(t0, false, pkt(5, 6000, 100));
        let seqs: Vec<u64> = c.fresh(t0).unwrap().iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [2, 3, 4, 5]);
        // The next keyframe starts a new group.
        c.push(t0, true, pkt(6, 9000, 100));
        let seqs: Vec<u64> = c.fresh(t0).unwrap().iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [6]);
    }

    #[test]
    fn an_old_keyframe_is_not_replayed() {
        let t0 = Instant::now();
        let mut c = GopCache::default();
        c.push(t0, true, pkt(1, 0, 100));
        assert!(c.fresh(t0 + GOP_MAX_AGE).is_some());
        assert!(
            c.fresh(t0 + GOP_MAX_AGE + Duration::from_millis(1))
                .is_none()
        );
    }

    #[test]
    fn a_group_too_big_is_dropped_until_the_next_keyframe() {
        let t0 = Instant::now();
        let mut c = GopCache::default();
        c.push(t0, true, pkt(1, 0, 1200));
        for i in 0..GOP_MAX_BYTES / 1200 + 1 {
            c.push(t0, false, pkt(2 + i as u64, 3000, 1200));
        }
        assert!(c.fresh(t0).is_none());
        c.push(t0, false, pkt(5000, 3000, 1200));
        assert!(c.fresh(t0).is_none(), "no group without its keyframe");
        c.push(t0, true, pkt(5001, 6000, 1200));
        assert_eq!(c.fresh(t0).unwrap().len(), 1);
    }
}
