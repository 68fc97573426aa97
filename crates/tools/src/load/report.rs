//! The load run's results: percentiles, the timeline, and the end-of-run
//! table and JSON.

use std::time::Duration;

use serde::Serialize;

use super::chat::ChatReport;

/// p50, p99 and max of some samples, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Percentiles {
    /// From samples in microseconds (sorted in place); `None` when empty.
    pub fn from_micros(samples: &mut [u64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i.min(samples.len() - 1)] as f64 / 1000.0
        };
        Some(Self {
            count: samples.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        })
    }
}

/// One line of the live progress, kept for the JSON (and a plot later).
#[derive(Clone, Debug, Default, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the first viewer was started.
    pub t_s: f64,
    /// Viewers connected (ICE + DTLS done) so far.
    pub viewers_connected: usize,
    /// Unique RTP packets received per second, all viewers.
    pub rx_packets_per_s: f64,
    /// Received bitrate, all viewers, Mbit/s.
    pub rx_mbps: f64,
    /// Forwarding latency over the last second.
    pub latency: Option<Percentiles>,
    /// Server CPU over the last second, percent of one core.
    pub server_cpu_percent: Option<f64>,
    /// Server resident memory, MiB.
    pub server_rss_mib: Option<f64>,
    /// This process's CPU over the last second, percent of one core.
    pub generator_cpu_percent: Option<f64>,
    /// Chat send-to-receipt latency over the last second (`--chat-rate`).
    pub chat_latency: Option<Percentiles>,
}

/// One viewer's summary in the JSON.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ViewerReport {
    /// Index in start order: due `id / ramp` seconds into the run.
    pub id: usize,
    /// When its WHEP POST went out, seconds since the run started.
    pub posted_s: Option<f64>,
    /// Whether ICE and DTLS completed.
    pub connected: bool,
    /// POST to connected.
    pub connect_ms: Option<f64>,
    /// POST to the first keyframe packet.
    pub ttff_ms: Option<f64>,
    /// Unique RTP packets received during the measurement.
    pub packets: u64,
    /// Packets missing after NACK repair.
    pub lost: u64,
    /// Mean received bitrate from the first packet to the end, kbit/s.
    pub bitrate_kbps: f64,
    /// Timing SEIs read.
    pub latency_samples: u64,
    /// Mean forwarding latency, ms.
    pub latency_mean_ms: Option<f64>,
    /// Chat messages this viewer sent (`--chat-rate`).
    pub chat_sent: u64,
    /// Send to receipt of the chat messages it received.
    pub chat_latency: Option<Percentiles>,
}

/// Steady-state figures: the window after the ramp ended and the last
/// viewer connected, until measurement stopped.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Steady {
    /// Length of the window.
    pub window_s: f64,
    /// Unique RTP packets received per second, all viewers.
    pub rx_packets_per_s: f64,
    /// Forwarding latency of the SEIs that arrived in the window.
    pub latency: Option<Percentiles>,
    /// Their delay behind the first viewer to get the same frame.
    pub latency_spread: Option<Percentiles>,
    /// Server CPU seconds in the window (when `--server-pid` was given).
    pub server_cpu_s: Option<f64>,
    /// Server CPU, percent of one core.
    pub server_cpu_percent: Option<f64>,
    /// Packets the viewers received per CPU-second of the server: the
    /// forwarding efficiency compared with the ceiling.
    pub packets_per_server_cpu_s: Option<f64>,
    /// This process's CPU (all its threads, user + system), percent of
    /// one core.
    pub generator_cpu_percent: Option<f64>,
}

/// Everything a load run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// The WHEP URL the viewers used.
    pub whep_url: String,
    /// Viewers asked for.
    pub viewers_requested: usize,
    /// Viewers started (all that were asked for: the run lasts until the
    /// last one is due).
    pub viewers_started: usize,
    /// Viewers whose ICE and DTLS completed.
    pub viewers_connected: usize,
    /// Viewers whose POST failed or that did not connect.
    pub viewers_failed: usize,
    /// The first few failure reasons.
    pub failures: Vec<String>,
    /// Viewers that received a keyframe.
    pub viewers_with_keyframe: usize,
    /// POST to connected.
    pub connect: Option<Percentiles>,
    /// POST to the first keyframe packet.
    pub ttff: Option<Percentiles>,
    /// Mean over viewers of the received bitrate, kbit/s.
    pub bitrate_kbps_mean: f64,
    /// Unique RTP packets received, all viewers.
    pub packets_received: u64,
    /// Packets missing after NACK repair, all viewers.
    pub packets_lost: u64,
    /// `packets_lost` over packets expected, percent.
    pub loss_percent: f64,
    /// Publisher send time (SEI, stamped after encoding) to arrival at the
    /// viewer's socket (the kernel's receive time, `SO_TIMESTAMPNS`; the
    /// generator's own queueing is not in it).
    pub latency: Option<Percentiles>,
    /// Of `latency`, the first viewer to receive each frame: the
    /// publisher's send path plus one pass through the server.
    pub latency_first_viewer: Option<Percentiles>,
    /// How far each arrival trails the first viewer's arrival of the same
    /// frame: the delay that fan-out adds, without the encoder's time.
    pub latency_spread: Option<Percentiles>,
    /// SEIs whose send time was later than arrival (0 on one host).
    pub latency_in_future: u64,
    /// Keyframe requests the viewers sent.
    pub plis_sent: u64,
    /// ICE disconnections the viewers saw (consent checks that went
    /// unanswered for a while; they may have recovered).
    pub ice_disconnects: u64,
    /// Datagrams the kernel refused to send.
    pub send_errors: u64,
    /// Datagrams the kernel dropped on the server's sockets during the run
    /// (its receive buffers were full), with `--server-pid`.
    pub server_socket_drops: Option<u64>,
    /// Datagrams the kernel dropped on the viewers' own sockets because
    /// this generator fell behind (NACK may have repaired them); loss with
    /// none here happened on the server's side.
    pub generator_socket_drops: Option<u64>,
    /// Seconds from the first viewer to the end of measurement.
    pub measured_s: f64,
    /// Server CPU over the whole measurement, percent of one core.
    pub server_cpu_percent: Option<f64>,
    /// Server resident memory at the end, MiB.
    pub server_rss_mib: Option<f64>,
    /// Growth of the server's RSS from before the first viewer to the end,
    /// per connected viewer, KiB.
    pub server_rss_kib_per_viewer: Option<f64>,
    /// This process's CPU over the measurement (all its threads, user +
    /// system, from `/proc/self/stat`), percent of one core.
    pub generator_cpu_percent: Option<f64>,
    /// `generator_cpu_percent` per connected viewer.
    pub generator_cpu_percent_per_viewer: Option<f64>,
    /// Media loops (threads) the viewers were spread over.
    pub generator_threads: usize,
    /// The steady window.
    pub steady: Steady,
    /// The chat section, with `--chat-rate`.
    pub chat: Option<ChatReport>,
    /// Frames the in-process publisher sent, if there was one.
    pub publisher_frames_sent: Option<u64>,
    /// One point per second.
    pub timeline: Vec<TimelinePoint>,
    /// Per viewer, in start order.
    pub viewers: Vec<ViewerReport>,
}

impl LoadReport {
    /// The end-of-run table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let mut row = |k: &str, v: String| s.push_str(&format!("{k:<28} {v}\n"));
        let pct = |p: &Option<Percentiles>| match p {
            Some(p) => format!(
                "p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n={})",
                p.p50_ms, p.p99_ms, p.max_ms, p.count
            ),
            None => "-".to_owned(),
        };
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.1}{unit}"));
        row("WHEP", self.whep_url.clone());
        row(
            "viewers",
            format!(
                "{} connected / {} started / {} requested, {} failed, {} got a keyframe",
                self.viewers_connected,
                self.viewers_started,
                self.viewers_requested,
                self.viewers_failed,
                self.viewers_with_keyframe
            ),
        );
        row("connect (POST→DTLS)", pct(&self.connect));
        row("TTFF (POST→keyframe)", pct(&self.ttff));
        row(
            "bitrate per viewer (mean)",
            format!("{:.0} kbit/s", self.bitrate_kbps_mean),
        );
        row(
            "packets",
            format!(
                "{} received, {} lost after NACK ({:.3} %)",
                self.packets_received, self.packets_lost, self.loss_percent
            ),
        );
        row(
            "drops on viewer sockets",
            self.generator_socket_drops.map_or("-".to_owned(), |d| {
                format!("{d} (the generator fell behind)")
            }),
        );
        row(
            "drops on server sockets",
            self.server_socket_drops
                .map_or("-".to_owned(), |d| format!("{d} (receive buffers full)")),
        );
        row("forwarding latency", pct(&self.latency));
        row("  first viewer per frame", pct(&self.latency_first_viewer));
        row("  behind the first viewer", pct(&self.latency_spread));
        row("measured", format!("{:.1} s", self.measured_s));
        row(
            "server CPU (of one core)",
            opt(self.server_cpu_percent, " %"),
        );
        row("server RSS", opt(self.server_rss_mib, " MiB"));
        row(
            "server RSS per viewer",
            opt(self.server_rss_kib_per_viewer, " KiB"),
        );
        row("generator CPU (of one core)", self.generator_cpu());
        row(
            "steady window",
            format!(
                "{:.1} s, {:.0} pkt/s received, server {} → {} pkt per server CPU-second; generator {}",
                self.steady.window_s,
                self.steady.rx_packets_per_s,
                opt(self.steady.server_cpu_percent, " %"),
                self.steady
                    .packets_per_server_cpu_s
                    .map_or("-".to_owned(), |v| format!("{v:.0}")),
                opt(self.steady.generator_cpu_percent, " %"),
            ),
        );
        row("steady latency", pct(&self.steady.latency));
        row(
            "  behind the first viewer",
            pct(&self.steady.latency_spread),
        );
        if let Some(chat) = &self.chat {
            chat.rows(&mut row);
        }
        if self.ice_disconnects > 0 || self.send_errors > 0 {
            row(
                "trouble",
                format!(
                    "{} ICE disconnects, {} send errors",
                    self.ice_disconnects, self.send_errors
                ),
            );
        }
        if !self.failures.is_empty() {
            row("failures", self.failures.join("; "));
        }
        s
    }
}

impl LoadReport {
    /// Whether the generator used nearly all its threads could give (over
    /// the steady window, else the whole run): then its figures say more
    /// about the generator than about the server.
    pub fn generator_saturated(&self) -> bool {
        let cpu = self
            .steady
            .generator_cpu_percent
            .or(self.generator_cpu_percent);
        cpu.is_some_and(|c| c >= GENERATOR_BUSY_PERCENT * self.generator_threads.max(1) as f64)
    }

    /// The generator's CPU row: total, per viewer, threads, and a warning
    /// when it was the limit.
    fn generator_cpu(&self) -> String {
        let Some(cpu) = self.generator_cpu_percent else {
            return "-".to_owned();
        };
        let mut s = format!("{cpu:.1} %");
        if let Some(v) = self.generator_cpu_percent_per_viewer {
            s.push_str(&format!(", {v:.2} % per viewer"));
        }
        s.push_str(&format!(", {} thread(s)", self.generator_threads));
        if self.generator_saturated() {
            s.push_str(
                " — near its threads' capacity: the generator may be the limit (try --threads)",
            );
        }
        s
    }
}

/// Percent of one core per thread above which the generator counts as
/// saturated: its loops are busy, so late reads and drops are its own.
const GENERATOR_BUSY_PERCENT: f64 = 85.0;

/// Formats a duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_few_samples() {
        let mut v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        let p = Percentiles::from_micros(&mut v).expect("samples");
        assert_eq!(p.count, 100);
        assert_eq!(p.max_ms, 100.0);
        assert!((p.p50_ms - 50.0).abs() <= 1.0);
        assert!((p.p99_ms - 99.0).abs() <= 1.0);
        assert_eq!(Percentiles::from_micros(&mut []), None);
    }
}
