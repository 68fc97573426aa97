//! The soak's results: per run (baseline, then under attack) the viewers'
//! figures, the server's resources over the attack window, what each attack
//! got and whether its state was gone afterwards; the verdict; the table.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::attacks::Attack;
use super::server::{CheckItem, Holdings};
use crate::load::{LoadReport, Percentiles};

/// Worse than this over the baseline fails the bench: loss by more than
/// `LOSS_SLACK_PP` percentage points, latency p99 by more than
/// `P99_FACTOR` times plus `P99_SLACK_MS`. Generous on purpose: two runs
/// on a shared machine differ by that much without any attack.
pub const LOSS_SLACK_PP: f64 = 1.0;
/// See [`LOSS_SLACK_PP`].
pub const P99_FACTOR: f64 = 2.0;
/// See [`LOSS_SLACK_PP`].
pub const P99_SLACK_MS: f64 = 5.0;

/// Both runs and the verdict.
#[derive(Clone, Debug, Serialize)]
pub struct AbuseReport {
    /// Legitimate viewers asked for.
    pub viewers: usize,
    /// Length of the attack window (the baseline has the same, quiet).
    pub window_s: f64,
    /// The publisher's picture and bitrate.
    pub stream: String,
    /// Without attacks.
    pub baseline: RunReport,
    /// With every chosen attack during the window.
    pub attack: RunReport,
    /// Whether the attack run stayed within the bounds, and why not.
    pub verdict: Verdict,
}

/// One run: a fresh server, the publisher and viewers, the window, the
/// wait for the server to let go of the attacks' state.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Whether the attacks ran in the window.
    pub attacked: bool,
    /// The publisher and the viewers, over the whole run (same phases in
    /// both runs: ramp, window, the wait after it).
    pub load: LoadReport,
    /// Viewers that joined in the middle of the window (their TTFF).
    pub late_joiners: Option<LoadReport>,
    /// Why the late joiners have no report.
    pub late_joiners_error: Option<String>,
    /// The server over the window.
    pub window: Window,
    /// What the server held just before the window.
    pub before: Holdings,
    /// What it held when the state check passed or gave up.
    pub after: Holdings,
    /// The state check, item by item.
    pub checks: Vec<CheckItem>,
    /// Seconds from the end of the window until every check passed; `None`
    /// when they did not within the wait.
    pub clean_after_s: Option<f64>,
    /// What each attack sent and got.
    pub attacks: Vec<AttackReport>,
}

/// The server and the viewers over the attack window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Window {
    /// Its length.
    pub seconds: f64,
    /// Server CPU over it, percent of one core.
    pub server_cpu_percent: Option<f64>,
    /// Largest resident memory sampled in it, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Most open file descriptors sampled in it.
    pub peak_fds: Option<usize>,
    /// Of the viewers' per-second latency p99 in it: the worst second.
    pub worst_second_p99_ms: Option<f64>,
    /// The fewest packets per second all viewers received in one second.
    pub lowest_second_rx_pps: Option<f64>,
}

/// One attack's tally.
#[derive(Clone, Debug, Serialize)]
pub struct AttackReport {
    /// Which.
    pub attack: Attack,
    /// Its source address.
    pub source: String,
    /// What it does.
    pub what: String,
    /// What it sent and got, by kind.
    pub counts: BTreeMap<String, u64>,
    /// Why it stopped before the end of the window, if it did.
    pub error: Option<String>,
}

/// Pass or fail, with the reasons.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// No reason to fail.
    pub passed: bool,
    /// The reasons.
    pub failures: Vec<String>,
}

impl RunReport {
    /// The viewers' latency over the steady part of the run.
    pub fn latency(&self) -> Option<Percentiles> {
        self.load.steady.latency.or(self.load.latency)
    }
}

impl Verdict {
    /// Judges the attack run against the baseline.
    pub fn judge(viewers: usize, base: &RunReport, att: &RunReport) -> Verdict {
        let mut failures = Vec::new();
        let (bl, al) = (base.load.loss_percent, att.load.loss_percent);
        if al > bl + LOSS_SLACK_PP {
            failures.push(format!(
                "loss {al:.3} % under attack, {bl:.3} % without (more than +{LOSS_SLACK_PP} pp)"
            ));
        }
        match (base.latency(), att.latency()) {
            (Some(b), Some(a)) if a.p99_ms > P99_FACTOR * b.p99_ms + P99_SLACK_MS => {
                failures.push(format!(
                    "latency p99 {:.1} ms under attack, {:.1} ms without (more than {P99_FACTOR}x + {P99_SLACK_MS} ms)",
                    a.p99_ms, b.p99_ms
                ))
            }
            (Some(_), None) => failures.push("no latency sample under attack".to_owned()),
            _ => {}
        }
        for (run, r) in [("baseline", base), ("attack", att)] {
            if r.load.viewers_connected < viewers {
                failures.push(format!(
                    "{run} run: {} of {viewers} viewers connected",
                    r.load.viewers_connected
                ));
            }
            if r.clean_after_s.is_none() {
                let left: Vec<String> = r
                    .checks
                    .iter()
                    .filter(|c| !c.ok)
                    .map(|c| format!("{} {} (before: {})", c.what, c.after, c.before))
                    .collect();
                failures.push(format!("{run} run: state left: {}", left.join("; ")));
            }
        }
        Verdict {
            passed: failures.is_empty(),
            failures,
        }
    }
}

impl AbuseReport {
    /// The table a human reads.
    pub fn table(&self) -> String {
        let (b, a) = (&self.baseline, &self.attack);
        let mut s = format!(
            "lumen bench abuse: {} viewers of one stream ({}) on one worker, {:.0} s window, {} attacks\n\n",
            self.viewers,
            self.stream,
            self.window_s,
            a.attacks.len()
        );
        let _ = writeln!(
            s,
            "{:<38} {:>14} {:>14} {:>10}",
            "", "baseline", "attack", "ratio"
        );
        let mut row = |k: &str, bv: String, av: String, ratio: String| {
            let _ = writeln!(s, "{k:<38} {bv:>14} {av:>14} {ratio:>10}");
        };
        let f1 = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let ratio = |bv: Option<f64>, av: Option<f64>| match (bv, av) {
            (Some(b), Some(a)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".to_owned(),
        };
        let p = |r: &RunReport, f: fn(&Percentiles) -> f64| r.latency().map(|l| f(&l));
        row(
            "viewers connected",
            format!("{}/{}", b.load.viewers_connected, self.viewers),
            format!("{}/{}", a.load.viewers_connected, self.viewers),
            String::new(),
        );
        row(
            "loss after NACK, %",
            format!("{:.3}", b.load.loss_percent),
            format!("{:.3}", a.load.loss_percent),
            format!("{:+.3} pp", a.load.loss_percent - b.load.loss_percent),
        );
        for (k, f) in [
            (
                "latency p50, ms",
                (|l: &Percentiles| l.p50_ms) as fn(&Percentiles) -> f64,
            ),
            ("latency p99, ms", |l: &Percentiles| l.p99_ms),
        ] {
            row(k, f1(p(b, f)), f1(p(a, f)), ratio(p(b, f), p(a, f)));
        }
        let w = |r: &RunReport| r.window.worst_second_p99_ms;
        row(
            "  worst second's p99 in the window, ms",
            f1(w(b)),
            f1(w(a)),
            ratio(w(b), w(a)),
        );
        let rx = |r: &RunReport| r.window.lowest_second_rx_pps;
        row(
            "  lowest second's received pkt/s",
            f1(rx(b)),
            f1(rx(a)),
            ratio(rx(b), rx(a)),
        );
        let ttff = |r: &RunReport, f: fn(&Percentiles) -> f64| {
            r.late_joiners.as_ref().and_then(|l| l.ttff).map(|t| f(&t))
        };
        for (k, f) in [
            (
                "TTFF p50 of late joiners, ms",
                (|l: &Percentiles| l.p50_ms) as fn(&Percentiles) -> f64,
            ),
            ("TTFF p99 of late joiners, ms", |l: &Percentiles| l.p99_ms),
        ] {
            row(
                k,
                f1(ttff(b, f)),
                f1(ttff(a, f)),
                ratio(ttff(b, f), ttff(a, f)),
            );
        }
        let cpu = |r: &RunReport| r.window.server_cpu_percent;
        row(
            "server CPU in the window, % of a core",
            f1(cpu(b)),
            f1(cpu(a)),
            ratio(cpu(b), cpu(a)),
        );
        let rss = |r: &RunReport| r.window.peak_rss_mib;
        row(
            "server peak RSS, MiB",
            f1(rss(b)),
            f1(rss(a)),
            ratio(rss(b), rss(a)),
        );
        let fds = |r: &RunReport| r.window.peak_fds.map(|f| f as f64);
        row(
            "server peak open fds",
            fds(b).map_or("-".into(), |v| format!("{v:.0}")),
            fds(a).map_or("-".into(), |v| format!("{v:.0}")),
            ratio(fds(b), fds(a)),
        );
        let drops = |r: &RunReport| {
            r.load
                .generator_socket_drops
                .map_or("-".to_owned(), |d| d.to_string())
        };
        row(
            "drops on the viewers' sockets",
            drops(b),
            drops(a),
            String::new(),
        );
        let clean = |r: &RunReport| match r.clean_after_s {
            Some(t) if t < 1.0 => "at once".to_owned(),
            Some(t) => format!("after {t:.1} s"),
            None => "NO".to_owned(),
        };
        row(
            "state back to before the window",
            clean(b),
            clean(a),
            String::new(),
        );

        if !a.attacks.is_empty() {
            s.push_str("\nattacks (source: what it did; what it sent and got)\n");
        }
        for r in &a.attacks {
            let _ = writeln!(s, "  {:<10} {:<10} {}", r.attack.name(), r.source, r.what);
            let counts: Vec<String> = r.counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = writeln!(s, "  {:<21} {}", "", counts.join(", "));
            if let Some(e) = &r.error {
                let _ = writeln!(s, "  {:<21} stopped early: {e}", "");
            }
        }
        for r in [b, a] {
            if let Some(e) = &r.late_joiners_error {
                let _ = writeln!(s, "late joiners ({}): {e}", run_name(r));
            }
        }
        let _ = writeln!(
            s,
            "\nstate, before the window → after it (attack run; checked every second for up to the reaping wait)"
        );
        for c in &a.checks {
            let _ = writeln!(
                s,
                "  {:<34} {:>20} → {:<20} {}",
                c.what,
                c.before,
                c.after,
                if c.ok { "ok" } else { "LEFT" }
            );
        }
        let _ = writeln!(
            s,
            "\n{}",
            if self.verdict.passed {
                "PASS: loss and latency p99 within the bounds of the baseline, and the attacks' state gone".to_owned()
            } else {
                format!("FAIL: {}", self.verdict.failures.join("\n      "))
            }
        );
        s
    }
}

fn run_name(r: &RunReport) -> &'static str {
    if r.attacked { "attack" } else { "baseline" }
}
