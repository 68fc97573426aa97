//! Benchmarks that measure this machine rather than lumen: the figures lumen's
//! own numbers are divided by.
//!
//! [`ceiling`] is the raw per-packet cost an SFU cannot avoid (AES-128-GCM
//! plus a batched UDP send); `benches/fanout.rs` relates the server's
//! forwarding rate to it.

pub mod ceiling;

pub use ceiling::{CeilingOptions, CeilingReport, Rate, run_ceiling};

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
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
    }
}
