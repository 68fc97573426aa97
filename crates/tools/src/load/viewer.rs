//! What one load viewer learns from the RTP packets str0m hands it: sequence
//! continuity per SSRC (after NACK repair), bytes, time to first packet and
//! first keyframe, and the publisher's send time from the lumen timing SEI.
//!
//! Everything here reads network bytes and is bounds-checked: a malformed
//! payload is skipped, never a panic.

use std::time::Instant;

use crate::client::{FrameTiming, parse_timing_sei};

const STAP_A: u8 = 24;
const FU_A: u8 = 28;
const NAL_IDR: u8 = 5;
const NAL_SEI: u8 = 6;
const NAL_SPS: u8 = 7;

/// Sequence numbers remembered per SSRC to drop duplicates (a late
/// retransmission of a packet that already arrived).
const DEDUP_WINDOW: usize = 512;

/// Loss accounting for one SSRC on str0m's extended (64-bit) sequence
/// numbers: expected minus unique received, so a retransmission that fills
/// a gap repairs it.
#[derive(Debug)]
pub struct SeqStats {
    ssrc: u32,
    base: u64,
    highest: u64,
    unique: u64,
    /// Once measurement stops, only packets at or below this still count
    /// (late repairs of earlier gaps).
    limit: Option<u64>,
    recent: Box<[u64]>,
}

impl SeqStats {
    fn new(ssrc: u32, seq: u64) -> Self {
        Self {
            ssrc,
            base: seq,
            highest: seq,
            unique: 0,
            limit: None,
            recent: vec![u64::MAX; DEDUP_WINDOW].into_boxed_slice(),
        }
    }

    /// Records `seq`; returns whether it was new (and inside the limit).
    fn record(&mut self, seq: u64) -> bool {
        if seq < self.base {
            // Older than the first packet seen: from before we joined.
            return false;
        }
        if self.limit.is_some_and(|l| seq > l) {
            return false;
        }
        let slot = &mut self.recent[(seq % DEDUP_WINDOW as u64) as usize];
        if *slot == seq {
            return false;
        }
        *slot = seq;
        self.unique += 1;
        self.highest = self.highest.max(seq);
        true
    }

    /// Packets expected between the first and the highest seen.
    pub fn expected(&self) -> u64 {
        self.highest - self.base + 1
    }

    /// Packets still missing.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.unique)
    }
}

/// What one viewer has seen so far.
#[derive(Debug, Default)]
pub struct ViewerStats {
    /// When the WHEP POST went out.
    pub posted_at: Option<Instant>,
    /// When str0m reported ICE + DTLS done.
    pub connected_at: Option<Instant>,
    /// First RTP packet of any kind.
    pub first_packet_at: Option<Instant>,
    /// First video packet that starts a keyframe (IDR or SPS).
    pub first_keyframe_at: Option<Instant>,
    /// When measurement stopped for this viewer.
    pub frozen_at: Option<Instant>,
    /// RTP bytes (header + payload) of unique packets, audio and video.
    pub bytes: u64,
    /// Unique RTP packets, audio and video.
    pub packets: u64,
    /// Unique video packets.
    pub video_packets: u64,
    /// Timing SEIs read.
    pub sei_count: u64,
    /// SEIs whose send time was later than the receive time (clock trouble).
    pub sei_in_future: u64,
    /// Sum and maximum of the forwarding latencies of this viewer, µs.
    pub latency_sum_us: u64,
    /// Highest forwarding latency of this viewer, µs.
    pub latency_max_us: u64,
    /// Wall clock (µs since the epoch) when the viewer connected: frames
    /// sent before it were replayed from the server's cache on join, so
    /// their age is not forwarding latency.
    pub connected_wall_us: Option<u64>,
    /// Timing SEIs of frames sent before the viewer connected.
    pub replayed_frames: u64,
    /// Times ICE reported the connection as disconnected.
    pub ice_disconnects: u64,
    /// Keyframe requests this viewer sent itself.
    pub plis_sent: u64,
    /// Video SSRC, once known.
    pub video_ssrc: Option<u32>,
    /// Per-SSRC loss accounting.
    pub seqs: Vec<SeqStats>,
}

/// One received RTP packet, as far as the counters care.
#[derive(Clone, Copy, Debug)]
pub struct RtpIn<'a> {
    /// SSRC (after RTX unwrapping).
    pub ssrc: u32,
    /// Extended sequence number.
    pub seq: u64,
    /// On the H.264 stream.
    pub video: bool,
    /// Header plus payload bytes.
    pub wire_len: usize,
    /// The RTP payload.
    pub payload: &'a [u8],
}

/// What a packet told the caller beyond the counters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PacketInfo {
    /// The packet was new (not a duplicate, inside the window).
    pub new: bool,
    /// It carried the lumen timing SEI.
    pub timing: Option<FrameTiming>,
}

impl ViewerStats {
    /// Accounts one RTP packet. `video` says whether it is on the H.264
    /// stream; `wallclock_us` is only read when the packet has a timing SEI.
    pub fn on_rtp(
        &mut self,
        now: Instant,
        rtp: &RtpIn<'_>,
        wallclock_us: impl FnOnce() -> u64,
    ) -> PacketInfo {
        let RtpIn {
            ssrc,
            seq,
            video,
            wire_len,
            payload,
        } = *rtp;
        let frozen = self.frozen_at.is_some();
        let idx = match self.seqs.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => i,
            None if frozen => return PacketInfo::default(),
            None => {
                self.seqs.push(SeqStats::new(ssrc, seq));
                self.seqs.len() - 1
            }
        };
        if !self.seqs[idx].record(seq) {
            return PacketInfo::default();
        }
        if frozen {
            // A late repair: it counts for loss, not for rates.
            return PacketInfo {
                new: true,
                timing: None,
            };
        }
        self.first_packet_at.get_or_insert(now);
        self.bytes += wire_len as u64;
        self.packets += 1;
        if !video {
            return PacketInfo {
                new: true,
                timing: None,
            };
        }
        self.video_packets += 1;
        self.video_ssrc.get_or_insert(ssrc);
        let h = inspect_h264(payload);
        if h.keyframe {
            self.first_keyframe_at.get_or_insert(now);
        }
        let mut timing = h.timing;
        if let Some(t) = timing
            && self.connected_wall_us.is_some_and(|c| t.sent_at_micros < c)
        {
            self.replayed_frames += 1;
            timing = None;
        }
        if let Some(t) = timing {
            let wall = wallclock_us();
            self.sei_count += 1;
            if t.sent_at_micros > wall {
                self.sei_in_future += 1;
            }
            let lat = wall.saturating_sub(t.sent_at_micros);
            self.latency_sum_us += lat;
            self.latency_max_us = self.latency_max_us.max(lat);
        }
        PacketInfo { new: true, timing }
    }

    /// Stops counting rates; from now on only repairs of gaps at or below
    /// the highest sequence number seen still count.
    pub fn freeze(&mut self, now: Instant) {
        self.frozen_at.get_or_insert(now);
        for s in &mut self.seqs {
            s.limit = Some(s.highest);
        }
    }

    /// Packets expected and lost over all SSRCs.
    pub fn expected_and_lost(&self) -> (u64, u64) {
        self.seqs
            .iter()
            .fold((0, 0), |(e, l), s| (e + s.expected(), l + s.lost()))
    }
}

/// What an H.264 RTP payload (RFC 6184) holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct H264Info {
    /// It starts a keyframe: an IDR slice or an SPS, whole or as the first
    /// FU-A fragment.
    pub keyframe: bool,
    /// The lumen timing SEI, if a whole SEI NAL is in this packet.
    pub timing: Option<FrameTiming>,
}

/// Looks into a single-NAL, STAP-A or FU-A payload. The SEI is small and
/// sits before the slice, so it always arrives whole (alone or aggregated);
/// a fragmented SEI would be missed, which only costs a latency sample.
pub fn inspect_h264(payload: &[u8]) -> H264Info {
    let mut info = H264Info::default();
    let Some(&header) = payload.first() else {
        return info;
    };
    match header & 0x1f {
        t @ 1..=23 => inspect_nal(t, payload, &mut info),
        STAP_A => {
            let mut rest = &payload[1..];
            while let Some((len, tail)) = rest.split_first_chunk::<2>() {
                let len = usize::from(u16::from_be_bytes(*len));
                let Some(nal) = tail.get(..len) else {
                    break;
                };
                if let Some(&h) = nal.first() {
                    inspect_nal(h & 0x1f, nal, &mut info);
                }
                rest = &tail[len..];
            }
        }
        FU_A => {
            if let Some(&fu) = payload.get(1) {
                let start = fu & 0x80 != 0;
                let t = fu & 0x1f;
                info.keyframe = start && (t == NAL_IDR || t == NAL_SPS);
            }
        }
        _ => {}
    }
    info
}

fn inspect_nal(nal_type: u8, nal: &[u8], info: &mut H264Info) {
    match nal_type {
        NAL_IDR | NAL_SPS => info.keyframe = true,
        NAL_SEI if info.timing.is_none() => info.timing = parse_timing_sei(nal),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::LUMEN_SEI_UUID;

    /// The timing SEI as the publisher writes it (no emulation prevention
    /// needed for these values).
    fn sei(frame: u64, sent: u64) -> Vec<u8> {
        let mut nal = vec![NAL_SEI, 5, 32];
        nal.extend_from_slice(&LUMEN_SEI_UUID);
        nal.extend_from_slice(&frame.to_be_bytes());
        nal.extend_from_slice(&sent.to_be_bytes());
        nal.push(0x80);
        nal
    }

    fn stap_a(nals: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![STAP_A];
        for n in nals {
            p.extend_from_slice(&(n.len() as u16).to_be_bytes());
            p.extend_from_slice(n);
        }
        p
    }

    #[test]
    fn finds_sei_and_keyframe_in_stap_a() {
        let s = sei(7, 0x0101_0101_0101_0101);
        let p = stap_a(&[&[0x67, 0x42, 0xe0], &[0x68, 0xce], &s]);
        let info = inspect_h264(&p);
        assert!(info.keyframe);
        assert_eq!(
            info.timing,
            Some(FrameTiming {
                frame_number: 7,
                sent_at_micros: 0x0101_0101_0101_0101
            })
        );
    }

    #[test]
    fn single_nal_sei_and_fu_a_start() {
        let s = sei(1, 0x0202_0202_0202_0202);
        assert_eq!(inspect_h264(&s).timing.map(|t| t.frame_number), Some(1));
        assert!(!inspect_h264(&s).keyframe);
        assert!(inspect_h264(&[0x7c, 0x85, 1, 2]).keyframe);
        assert!(!inspect_h264(&[0x7c, 0x05, 1, 2]).keyframe, "not the start");
        assert!(!inspect_h264(&[0x7c, 0x81, 1, 2]).keyframe, "non-IDR slice");
    }

    #[test]
    fn malformed_payloads_do_not_panic() {
        let s = sei(3, 0x0303_0303_0303_0303);
        let good = stap_a(&[&s, &[0x65, 1, 2, 3]]);
        for cut in 0..good.len() {
            let _ = inspect_h264(&good[..cut]);
        }
        for p in [
            &[][..],
            &[STAP_A, 0xff][..],
            &[STAP_A, 0, 9, 1][..],
            &[FU_A][..],
        ] {
            let _ = inspect_h264(p);
        }
    }

    fn audio(seq: u64) -> RtpIn<'static> {
        RtpIn {
            ssrc: 1,
            seq,
            video: false,
            wire_len: 100,
            payload: &[],
        }
    }

    #[test]
    fn loss_counts_gaps_and_repairs_and_ignores_duplicates() {
        let now = Instant::now();
        let mut v = ViewerStats::default();
        for seq in [10u64, 11, 13, 14, 14] {
            v.on_rtp(now, &audio(seq), || 0);
        }
        assert_eq!(v.expected_and_lost(), (5, 1));
        assert_eq!(v.packets, 4);
        v.freeze(now);
        v.on_rtp(now, &audio(12), || 0); // a late repair
        v.on_rtp(now, &audio(15), || 0); // after the window
        assert_eq!(v.expected_and_lost(), (5, 0));
        assert_eq!(v.packets, 4, "rates stop at the freeze");
    }

    #[test]
    fn latency_from_sei_send_time() {
        let now = Instant::now();
        let mut v = ViewerStats::default();
        let payload = sei(5, 0x0101_0101_0101_0101);
        let rtp = RtpIn {
            ssrc: 2,
            seq: 1,
            video: true,
            wire_len: 60,
            payload: &payload,
        };
        let info = v.on_rtp(now, &rtp, || 0x0101_0101_0101_0101 + 2_500);
        assert!(info.new);
        assert_eq!(v.latency_max_us, 2_500);
        assert_eq!(v.sei_count, 1);
    }

    #[test]
    fn frames_sent_before_the_viewer_connected_are_not_latency() {
        let now = Instant::now();
        let mut v = ViewerStats {
            connected_wall_us: Some(1_000_000),
            ..Default::default()
        };
        fn rtp(seq: u64, payload: &[u8]) -> RtpIn<'_> {
            RtpIn {
                ssrc: 2,
                seq,
                video: true,
                wire_len: 60,
                payload,
            }
        }
        let (old, live) = (sei(5, 900_000), sei(6, 1_000_100));
        let info = v.on_rtp(now, &rtp(1, &old), || 1_000_500);
        assert!(info.new && info.timing.is_none());
        let info = v.on_rtp(now, &rtp(2, &live), || 1_000_500);
        assert_eq!(info.timing.map(|t| t.frame_number), Some(6));
        assert_eq!((v.sei_count, v.replayed_frames), (1, 1));
        assert_eq!(v.latency_max_us, 400);
    }
}
