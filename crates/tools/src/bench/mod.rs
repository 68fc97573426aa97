//! Benchmarks that measure this machine rather than lumen: the figures lumen's
//! own numbers are divided by.
//!
//! [`ceiling`] is the raw per-packet cost an SFU cannot avoid (AES-128-GCM
//! plus a batched UDP send); `benches/fanout.rs` relates the server's
//! forwarding rate to it. [`switch`] measures how fast a viewer moves down a
//! simulcast layer when its downlink narrows. [`abuse`] is the hardening
//! soak: a live stream's viewers with and without the attacks.

pub mod abuse;
pub mod ceiling;
mod serve;
pub mod switch;

pub use abuse::{AbuseOptions, AbuseReport, Attack, run_abuse};
pub use ceiling::{CeilingOptions, CeilingReport, Rate, cpu_model, run_ceiling};
pub use switch::{SwitchOptions, SwitchReport, run_switch};

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// `lumen bench`: measurements of this machine.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    /// Which benchmark.
    pub which: BenchCmd,
}

/// The benchmarks.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// Packets per second of AES-128-GCM plus sendmmsg on one thread: the
    /// most an SFU core could forward.
    Ceiling {
        /// Seconds per phase (encrypt, send, both).
        #[arg(long, default_value_t = 2.0)]
        phase: f64,
        /// Encrypted payload bytes per packet.
        #[arg(long, default_value_t = 1200)]
        payload: usize,
        /// Write the report as JSON here.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Layer-switch latency: a simulcast publisher and an automatic viewer
    /// behind the UDP impairment proxy, whose downlink then narrows.
    Switch {
        /// Drops to measure, each with a new viewer.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Frames per second of every layer.
        #[arg(long, default_value_t = 30)]
        fps: u32,
        /// The downlink after the drop, bits per second.
        #[arg(long, default_value_t = 300_000)]
        narrow: u64,
        /// Write the report as JSON here.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Soak under abuse: a live stream's viewers, first alone, then while
    /// the hardening issue's attacks run together from other loopback
    /// addresses; their loss and latency against the baseline, the server's
    /// peak RSS and fds, and whether the attacks' state is gone afterwards.
    /// Fails when the attacks hurt the viewers or leave state.
    Abuse {
        /// Seconds of the attack window (and of the baseline's quiet one).
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        /// Legitimate viewers.
        #[arg(long, default_value_t = 50)]
        viewers: usize,
        /// Only these attacks, comma-separated (all by default).
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<Attack>,
        /// Write the report as JSON here.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
}

/// Runs `lumen bench …` and prints the result.
pub async fn run_bench_cli(a: BenchArgs) -> anyhow::Result<()> {
    match a.which {
        BenchCmd::Ceiling {
            phase,
            payload,
            json,
        } => {
            let phase = Duration::try_from_secs_f64(phase)
                .ok()
                .filter(|d| !d.is_zero())
                .context("--phase must be a positive number of seconds")?;
            let opts = CeilingOptions {
                payload_len: payload,
                phase,
            };
            let report = tokio::task::spawn_blocking(move || run_ceiling(&opts))
                .await
                .context("the ceiling thread")??;
            print!("{}", report.table());
            write_json(json, &report)
        }
        BenchCmd::Switch {
            runs,
            fps,
            narrow,
            json,
        } => {
            anyhow::ensure!(runs > 0 && fps > 0, "--runs and --fps must be positive");
            let opts = SwitchOptions {
                runs,
                fps,
                narrow_bps: narrow,
                ..SwitchOptions::default()
            };
            let report = run_switch(&opts).await?;
            print!("{}", report.table());
            write_json(json, &report)
        }
        BenchCmd::Abuse {
            duration,
            viewers,
            only,
            json,
        } => {
            let duration = Duration::try_from_secs_f64(duration)
                .ok()
                .filter(|d| !d.is_zero())
                .context("--duration must be a positive number of seconds")?;
            let opts = AbuseOptions {
                duration,
                viewers,
                attacks: if only.is_empty() {
                    Attack::ALL.to_vec()
                } else {
                    only
                },
                ..AbuseOptions::default()
            };
            let report = run_abuse(&opts).await?;
            print!("{}", report.table());
            write_json(json, &report)?;
            anyhow::ensure!(
                report.verdict.passed,
                "the attacks hurt the viewers or left state: {}",
                report.verdict.failures.join("; ")
            );
            Ok(())
        }
    }
}

fn write_json(path: Option<PathBuf>, report: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(&path, serde_json::to_string_pretty(report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
