//! A watcher's counters: what arrived, what was lost, frame-number
//! continuity, latency from the timing SEI, and the rates over the last
//! second.

use std::time::{Duration, Instant};

use super::depacketize::SeqTracker;
use super::micros_since_epoch;
use super::sei::FrameTiming;

/// A snapshot of what a watcher has received.
#[derive(Clone, Debug, Default)]
pub struct WatchStats {
    /// Pictures openh264 actually decoded.
    pub frames_decoded: u64,
    /// Frame number (from the SEI) of the first access unit received.
    pub first_frame_number: Option<u64>,
    /// Highest frame number received so far.
    pub last_frame_number: Option<u64>,
    /// Frame numbers skipped between consecutive received access units.
    pub frame_number_gaps: u64,
    /// Access units whose frame number was not above the previous one.
    pub out_of_order: u64,
    /// From the WHEP POST to the first decoded picture.
    pub time_to_first_frame: Option<Duration>,
    /// From the WHEP POST to the peer connection being connected (ICE +
    /// DTLS); the rest of `time_to_first_frame` is waiting for a keyframe.
    pub time_to_connect: Option<Duration>,
    /// Size of the last decoded picture.
    pub width: u32,
    /// Size of the last decoded picture.
    pub height: u32,
    /// RTP bytes (header + payload), audio and video.
    pub bytes_received: u64,
    /// RTP packets, audio and video.
    pub rtp_packets: u64,
    /// Packets missing from the RTP sequence numbers, audio and video.
    pub packets_lost: u64,
    /// Opus packets received.
    pub audio_packets: u64,
    /// Decoded pictures per second over the last second (or the run so far).
    pub fps: f64,
    /// Received bits per second over the last second (or the run so far).
    pub bitrate_bps: f64,
    /// ICE round-trip time to the server, if measured.
    pub rtt: Option<Duration>,
    /// Access units that lost packets (not decoded; a keyframe is requested).
    pub incomplete_frames: u64,
    /// Access units openh264 rejected.
    pub decode_errors: u64,
    /// PLIs sent to the server.
    pub keyframe_requests: u64,
    /// Access units that carried the lumen timing SEI.
    pub timed_frames: u64,
    /// Mean publisher-send to watcher-receive time of complete access units,
    /// from the SEI wall-clock stamp (meaningful when both run on one host).
    pub latency_avg: Option<Duration>,
    /// Largest such time seen.
    pub latency_max: Option<Duration>,
    /// The simulcast layer pinned through the WHEP layer extension, if any.
    pub requested_layer: Option<String>,
}

/// The counters and what they are computed from.
#[derive(Default)]
pub(super) struct WatchState {
    pub stats: WatchStats,
    pub video_seq: SeqTracker,
    pub audio_seq: SeqTracker,
    latency_sum: Duration,
    latency_count: u32,
    /// Start of the current rate window: (when, frames decoded, bytes).
    rate_mark: Option<(Instant, u64, u64)>,
    rates: Option<(f64, f64)>,
}

impl WatchState {
    /// Counts an RTP packet of `bytes` (header and payload); its sequence
    /// number has been recorded in `video_seq` or `audio_seq`.
    pub(super) fn on_packet(&mut self, now: Instant, bytes: usize) {
        self.stats.rtp_packets += 1;
        self.stats.bytes_received += bytes as u64;
        self.stats.packets_lost = self.video_seq.lost() + self.audio_seq.lost();
        self.roll(now);
    }

    /// Checks an access unit's frame number against the previous one, and
    /// when it arrived whole, takes its latency.
    pub(super) fn on_timing(&mut self, timing: FrameTiming, complete: bool) {
        let n = timing.frame_number;
        let s = &mut self.stats;
        s.timed_frames += 1;
        s.first_frame_number.get_or_insert(n);
        match s.last_frame_number {
            Some(prev) if n <= prev => s.out_of_order += 1,
            Some(prev) => {
                s.frame_number_gaps += n - prev - 1;
                s.last_frame_number = Some(n);
            }
            None => s.last_frame_number = Some(n),
        }
        if complete {
            let latency =
                Duration::from_micros(micros_since_epoch().saturating_sub(timing.sent_at_micros));
            self.latency_sum += latency;
            self.latency_count += 1;
            s.latency_avg = Some(self.latency_sum / self.latency_count);
            s.latency_max = Some(s.latency_max.map_or(latency, |m| m.max(latency)));
        }
    }

    /// The counters, with the rates of the last full second (or of the run
    /// so far, before the first second is over).
    pub(super) fn snapshot(&mut self, now: Instant) -> WatchStats {
        self.roll(now);
        let mut s = self.stats.clone();
        match (self.rates, self.rate_mark) {
            (Some((fps, bps)), _) => (s.fps, s.bitrate_bps) = (fps, bps),
            (None, Some((at, f0, b0))) => {
                let dt = now.duration_since(at).as_secs_f64().max(1e-3);
                s.fps = (s.frames_decoded - f0) as f64 / dt;
                s.bitrate_bps = (s.bytes_received - b0) as f64 * 8.0 / dt;
            }
            (None, None) => {}
        }
        s
    }

    /// Closes the rate window once it spans a second.
    fn roll(&mut self, now: Instant) {
        let (frames, bytes) = (self.stats.frames_decoded, self.stats.bytes_received);
        match self.rate_mark {
            None => self.rate_mark = Some((now, frames, bytes)),
            Some((at, f0, b0)) => {
                let dt = now.duration_since(at).as_secs_f64();
                if dt >= 1.0 {
                    self.rates = Some(((frames - f0) as f64 / dt, (bytes - b0) as f64 * 8.0 / dt));
                    self.rate_mark = Some((now, frames, bytes));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(frame_number: u64) -> FrameTiming {
        FrameTiming {
            frame_number,
            sent_at_micros: micros_since_epoch(),
        }
    }

    #[test]
    fn frame_numbers_count_gaps_and_reordering() {
        let mut st = WatchState::default();
        for n in [5, 6, 9, 8, 10] {
            st.on_timing(timing(n), false);
        }
        let s = st.snapshot(Instant::now());
        assert_eq!(s.first_frame_number, Some(5));
        assert_eq!(s.last_frame_number, Some(10));
        assert_eq!(s.frame_number_gaps, 2);
        assert_eq!(s.out_of_order, 1);
        assert_eq!(s.timed_frames, 5);
        // Only complete access units give latency.
        assert_eq!(s.latency_avg, None);
        st.on_timing(timing(11), true);
        assert!(st.snapshot(Instant::now()).latency_max.is_some());
    }

    #[test]
    fn the_bitrate_is_over_the_last_full_second() {
        let mut st = WatchState::default();
        let t0 = Instant::now();
        st.on_packet(t0, 1000);
        st.on_packet(t0 + Duration::from_millis(500), 1000);
        // The window closes at one second with the bytes counted by then.
        st.on_packet(t0 + Duration::from_secs(1), 1000);
        let s = st.snapshot(t0 + Duration::from_millis(1500));
        assert_eq!(s.rtp_packets, 3);
        assert_eq!(s.bytes_received, 3000);
        assert!((s.bitrate_bps - 16_000.0).abs() < 1.0, "{}", s.bitrate_bps);
    }
}
