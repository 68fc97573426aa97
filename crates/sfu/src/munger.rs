//! `RtpMunger`: rewrites sequence numbers and timestamps of one outgoing track
//! so the viewer's decoder sees a single continuous stream, whatever happens
//! upstream (a late join, a publisher that reconnects with a new SSRC, later a
//! simulcast layer switch).

use std::time::Instant;

/// Sequence number and timestamp rewriting for one outgoing track.
#[derive(Debug, Clone)]
pub struct RtpMunger {
    clock_rate: u32,
    state: Option<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    source_ssrc: u32,
    /// Added to the incoming extended sequence number.
    seq_offset: i64,
    /// Added (wrapping) to the incoming RTP timestamp.
    ts_offset: u32,
    /// The lowest incoming sequence number of the current source that may be sent.
    first_in_seq: u64,
    highest_out_seq: u64,
    last_out_ts: u32,
    last_sent_at: Instant,
}

/// Where an incoming packet goes on the outgoing stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Munged {
    /// Extended outgoing sequence number (starts below 65 536: ROC 0).
    pub seq: u64,
    /// Outgoing RTP timestamp.
    pub timestamp: u32,
}

impl RtpMunger {
    /// A munger for a track whose RTP clock runs at `clock_rate` Hz.
    pub fn new(clock_rate: u32) -> Self {
        RtpMunger {
            clock_rate: clock_rate.max(1),
            state: None,
        }
    }

    /// Whether the munger has started (sent at least one packet).
    pub fn started(&self) -> bool {
        self.state.is_some()
    }

    /// Maps an incoming packet. The caller only calls this for packets it
    /// wants to send; the first one (or the first of a new source SSRC) should
    /// be a decodable start, e.g. a keyframe. Returns `None` for packets from
    /// before the current source's start (they cannot be placed without
    /// reusing sequence numbers the viewer already saw).
    pub fn munge(&mut self, now: Instant, ssrc: u32, seq_in: u64, ts_in: u32) -> Option<Munged> {
        let state = match self.state {
            Some(s) if s.source_ssrc == ssrc => s,
            Some(prev) => {
                // A new source: continue right after what the viewer last saw,
                // and advance the timestamp by the wall time that passed.
                let elapsed = now.saturating_duration_since(prev.last_sent_at);
                let ticks = (elapsed.as_micros() as u64 * self.clock_rate as u64 / 1_000_000)
                    .clamp(1, u32::MAX as u64 / 2) as u32;
                let next_out_seq = prev.highest_out_seq + 1;
                let next_ts = prev.last_out_ts.wrapping_add(ticks);
                let s = State {
                    source_ssrc: ssrc,
                    seq_offset: next_out_seq as i64 - seq_in as i64,
                    ts_offset: next_ts.wrapping_sub(ts_in),
                    first_in_seq: seq_in,
                    highest_out_seq: prev.highest_out_seq,
                    last_out_ts: prev.last_out_ts,
                    last_sent_at: prev.last_sent_at,
                };
                self.state = Some(s);
                s
            }
            None => {
                // Start low so the viewer's SRTP rollover counter is 0, but
                // not at 0 so a later source switch has room below nothing.
                const FIRST_OUT_SEQ: u64 = 1;
                let s = State {
                    source_ssrc: ssrc,
                    seq_offset: FIRST_OUT_SEQ as i64 - seq_in as i64,
                    ts_offset: 0,
                    first_in_seq: seq_in,
                    highest_out_seq: 0,
                    last_out_ts: ts_in,
                    last_sent_at: now,
                };
                self.state = Some(s);
                s
            }
        };
        if seq_in < state.first_in_seq {
            return None;
        }
        let seq = (seq_in as i64 + state.seq_offset) as u64;
        let timestamp = ts_in.wrapping_add(state.ts_offset);
        let st = self.state.as_mut()?;
        if seq > st.highest_out_seq {
            st.highest_out_seq = seq;
            st.last_out_ts = timestamp;
            st.last_sent_at = now;
        }
        Some(Munged { seq, timestamp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rebases_a_late_join_to_a_low_sequence_number() {
        let now = Instant::now();
        let mut m = RtpMunger::new(90_000);
        let a = m.munge(now, 7, 200_000, 1000).unwrap();
        assert_eq!(a.seq, 1);
        assert_eq!(a.timestamp, 1000);
        let b = m.munge(now, 7, 200_001, 4000).unwrap();
        assert_eq!(b.seq, 2);
        // A retransmission of something older than the join is not sent.
        assert_eq!(m.munge(now, 7, 199_999, 0), None);
        // A reordered packet keeps its place.
        let c = m.munge(now, 7, 200_003, 4000).unwrap();
        let d = m.munge(now, 7, 200_002, 4000).unwrap();
        assert_eq!((c.seq, d.seq), (4, 3));
    }

    #[test]
    fn a_new_source_continues_the_sequence_and_the_clock() {
        let t0 = Instant::now();
        let mut m = RtpMunger::new(90_000);
        m.munge(t0, 1, 10, 50_000).unwrap();
        let last = m.munge(t0, 1, 11, 53_000).unwrap();
        let t1 = t0 + Duration::from_millis(100);
        let next = m.munge(t1, 2, 9_000, 7).unwrap();
        assert_eq!(next.seq, last.seq + 1);
        assert_eq!(next.timestamp, 53_000 + 9_000);
        let after = m.munge(t1, 2, 9_001, 3007).unwrap();
        assert_eq!(after.seq, last.seq + 2);
        assert_eq!(after.timestamp, 53_000 + 9_000 + 3000);
    }

    #[test]
    fn timestamps_wrap() {
        let now = Instant::now();
        let mut m = RtpMunger::new(48_000);
        m.munge(now, 1, 5, u32::MAX - 10).unwrap();
        let b = m.munge(now, 1, 6, 950).unwrap();
        assert_eq!(b.timestamp, 950);
    }
}
