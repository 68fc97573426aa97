//! The shape of a run, decided before it starts: when each viewer is due,
//! when measurement stops, and which media loop drives which viewer.
//!
//! Pure arithmetic on the options, so the schedule is tested without a
//! clock: a run paces by sleeping until [`Plan::due`], never by counting.

use std::time::Duration;

use anyhow::bail;

/// A validated schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    viewers: usize,
    ramp_per_sec: f64,
    steady: Duration,
    threads: usize,
}

impl Plan {
    /// Checks the options. `steady` counts from the last viewer's start, so
    /// every one of `viewers` starts whatever the ramp; `threads` beyond
    /// `viewers` would only spin empty loops and are cut to `viewers`.
    pub fn new(
        viewers: usize,
        ramp_per_sec: f64,
        steady: Duration,
        threads: usize,
    ) -> anyhow::Result<Plan> {
        if viewers == 0 {
            bail!("--viewers must be at least 1");
        }
        if !(ramp_per_sec.is_finite() && ramp_per_sec > 0.0) {
            bail!("--ramp must be a positive number of viewers per second");
        }
        if steady.is_zero() {
            bail!("--duration must be positive");
        }
        if threads == 0 {
            bail!("--threads must be at least 1");
        }
        Ok(Plan {
            viewers,
            ramp_per_sec,
            steady,
            threads: threads.min(viewers),
        })
    }

    /// Viewers to start: all that were asked for.
    pub fn viewers(&self) -> usize {
        self.viewers
    }

    /// Media loops (threads) to run.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// When viewer `id` is due, from the start of the run: `id / ramp`.
    pub fn due(&self, id: usize) -> Duration {
        Duration::from_secs_f64(id as f64 / self.ramp_per_sec)
    }

    /// The ramp: when the last viewer is due.
    pub fn ramp(&self) -> Duration {
        self.due(self.viewers - 1)
    }

    /// When measurement stops, from the start: the ramp, then the steady
    /// duration.
    pub fn deadline(&self) -> Duration {
        self.ramp() + self.steady
    }

    /// The media loop that drives viewer `id`: round the loops in start
    /// order, so each gets every `threads`-th join and an even share.
    pub fn loop_of(&self, id: usize) -> usize {
        id % self.threads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn viewer_k_is_due_k_over_ramp_seconds_in() {
        let p = Plan::new(10, 5.0, secs(3.0), 1).expect("valid");
        let due: Vec<Duration> = (0..10).map(|k| p.due(k)).collect();
        assert_eq!(due[0], Duration::ZERO);
        assert_eq!(due[1], secs(0.2));
        assert_eq!(due[9], secs(1.8));
        assert!(due.windows(2).all(|w| w[1] - w[0] == secs(0.2)));
        // The bug of issue 16 opened everyone at once: here no more than
        // three are due in the first half second.
        assert_eq!(due.iter().filter(|d| **d < secs(0.5)).count(), 3);
        assert_eq!(p.ramp(), secs(1.8));
        assert_eq!(p.deadline(), secs(4.8));
    }

    #[test]
    fn every_viewer_starts_and_the_duration_follows_the_ramp() {
        // `--viewers 800 --ramp 20 --duration 20` used to stop at 400.
        let p = Plan::new(800, 20.0, secs(20.0), 1).expect("valid");
        assert_eq!(p.viewers(), 800);
        assert!((0..800).all(|k| p.due(k) <= p.ramp()));
        assert_eq!(p.ramp(), secs(39.95));
        assert_eq!(p.deadline(), secs(59.95));
        // One viewer: no ramp at all.
        let one = Plan::new(1, 20.0, secs(4.0), 1).expect("valid");
        assert_eq!((one.ramp(), one.deadline()), (Duration::ZERO, secs(4.0)));
    }

    #[test]
    fn viewers_go_round_the_loops() {
        let p = Plan::new(7, 10.0, secs(1.0), 3).expect("valid");
        let loops: Vec<usize> = (0..7).map(|k| p.loop_of(k)).collect();
        assert_eq!(loops, vec![0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(
            Plan::new(2, 10.0, secs(1.0), 8).map(|p| p.threads()).ok(),
            Some(2)
        );
        assert!((0..5).all(|k| Plan::new(5, 1.0, secs(1.0), 1).is_ok_and(|p| p.loop_of(k) == 0)));
    }

    #[test]
    fn bad_options_are_refused_with_the_flag_named() {
        let err = |v, r, d, t| {
            Plan::new(v, r, secs(d), t)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(0, 1.0, 1.0, 1).contains("--viewers"));
        assert!(err(1, 0.0, 1.0, 1).contains("--ramp"));
        assert!(err(1, f64::NAN, 1.0, 1).contains("--ramp"));
        assert!(err(1, f64::INFINITY, 1.0, 1).contains("--ramp"));
        assert!(err(1, 1.0, 0.0, 1).contains("--duration"));
        assert!(err(1, 1.0, 1.0, 0).contains("--threads"));
    }
}
