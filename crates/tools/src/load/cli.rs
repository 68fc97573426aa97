//! The `lumen load` command line: flags, the live progress, the table and
//! the JSON file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::{ChatLoad, LoadOptions, PublishSpec, run_on_threads};

/// `lumen load`: open many WHEP viewers and measure what they receive.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// WHEP endpoint, e.g. http://127.0.0.1:8080/whep/bench
    #[arg(long)]
    pub whep: String,
    /// Viewers to open. All of them start, however long the ramp takes.
    #[arg(long, default_value_t = 10)]
    pub viewers: usize,
    /// Viewers opened per second: viewer k starts k/RAMP seconds after the
    /// first, so the ramp lasts (VIEWERS - 1)/RAMP seconds.
    #[arg(long, default_value_t = 10.0)]
    pub ramp: f64,
    /// Seconds the run goes on after the ramp (after the last viewer
    /// started): the whole run lasts (VIEWERS - 1)/RAMP + DURATION seconds,
    /// and the steady window is the part after the last viewer connected.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Threads driving the viewers (viewer k on thread k mod THREADS). The
    /// report gives the generator's CPU next to the server's: near
    /// THREADS × 100 % the generator, not the server, is the limit.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Publish the test pattern to this WHIP URL first, in this process.
    #[arg(long, value_name = "WHIP_URL")]
    pub publish: Option<String>,
    /// Publisher picture width.
    #[arg(long, default_value_t = 1280)]
    pub width: u32,
    /// Publisher picture height.
    #[arg(long, default_value_t = 720)]
    pub height: u32,
    /// Publisher frames per second.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Publisher video bitrate, bits per second.
    #[arg(long, default_value_t = 2_500_000)]
    pub bitrate: u32,
    /// Publish three simulcast layers (h 1280×720, m 640×360, l 320×180)
    /// instead of one picture of --width × --height at --bitrate.
    #[arg(long)]
    pub simulcast: bool,
    /// Bearer token for WHEP and WHIP.
    #[arg(long, env = "LUMEN_TOKEN")]
    pub token: Option<String>,
    /// Write the full report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw server CPU and forwarding latency against connected viewers
    /// into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Read the server's CPU and RSS from /proc/PID.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// No progress line every second.
    #[arg(long)]
    pub quiet: bool,
    /// Chat too: every viewer opens the `chat` data channel, and the
    /// chatters send this many messages per second in total, evenly paced;
    /// every viewer times what it receives.
    #[arg(long, value_name = "MSGS_PER_S")]
    pub chat_rate: Option<f64>,
    /// How many of the viewers chat (the first ones started) [default: all].
    #[arg(long, requires = "chat_rate")]
    pub chatters: Option<usize>,
    /// WHEP Bearer of the chatters (repeatable; chatter i uses token
    /// i mod count). Each needs `chat:STREAM` and its own subject: the rate
    /// limit is per user. Without it, one token per chatter is minted with
    /// the server's key from --data-dir / --config (subject `load-I`,
    /// scopes `subscribe:STREAM chat:STREAM`).
    #[arg(long = "chat-token", value_name = "TOKEN", requires = "chat_rate")]
    pub chat_tokens: Vec<String>,
    /// Open the chat channels without asking for compressed messages
    /// (the `deflate-raw` subprotocol the web client asks for).
    #[arg(long, requires = "chat_rate")]
    pub chat_plain: bool,
    /// The server's configuration file, to find its key for minting the
    /// chatters' tokens (as `lumen token mint --config`).
    #[arg(long, env = "LUMEN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The server's data dir, to find its key for minting the chatters'
    /// tokens (as `lumen token mint --data-dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl LoadArgs {
    /// Viewers that chat with `--chat-rate` (0 without).
    pub fn chatters(&self) -> usize {
        match self.chat_rate {
            Some(_) => self.chatters.unwrap_or(self.viewers),
            None => 0,
        }
    }

    /// The stream named by `--whep`: its last path segment.
    pub fn stream(&self) -> Option<&str> {
        let path = self.whep.split(['?', '#']).next()?;
        path.trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty() && !s.contains(':'))
    }
}

/// Runs `lumen load` and prints the table (and writes the JSON).
pub async fn run_load_cli(a: LoadArgs) -> anyhow::Result<()> {
    let duration = duration(a.duration)?;
    let opts = LoadOptions {
        whep_url: a.whep,
        token: a.token,
        viewers: a.viewers,
        ramp_per_sec: a.ramp,
        duration,
        publish: a.publish.map(|whip_url| PublishSpec {
            whip_url,
            width: a.width,
            height: a.height,
            fps: a.fps,
            bitrate_bps: a.bitrate,
            simulcast: a.simulcast,
        }),
        server_pid: a.server_pid,
        progress: !a.quiet,
    };
    let chat = a.chat_rate.map(|rate_per_sec| ChatLoad {
        rate_per_sec,
        chatters: a.chatters.unwrap_or(a.viewers),
        tokens: a.chat_tokens.clone(),
        deflate: !a.chat_plain,
    });
    let report = run_on_threads(opts, chat, a.threads).await?;
    print!("{}", report.table());
    if let Some(path) = a.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
        println!("JSON report: {}", path.display());
    }
    if let Some(path) = a.plot {
        let title = format!(
            "lumen load: {} of {} viewers connected, {}",
            report.viewers_connected, report.viewers_requested, report.whep_url
        );
        std::fs::write(&path, super::timeline_svg(&title, &report.timeline))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("plot: {}", path.display());
    }
    Ok(())
}

/// `--duration`, checked.
fn duration(secs: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--duration must be a positive number of seconds")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::load::Plan;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn plan(args: &[&str]) -> anyhow::Result<Plan> {
        let mut argv = vec!["lumen-load", "--whep", "http://127.0.0.1:1/whep/s"];
        argv.extend_from_slice(args);
        let a = Cli::try_parse_from(argv)?.load;
        Plan::new(a.viewers, a.ramp, duration(a.duration)?, a.threads)
    }

    #[test]
    fn the_issue_16_command_starts_every_viewer() {
        let p = plan(&["--viewers", "800", "--ramp", "20", "--duration", "20"]).expect("valid");
        assert_eq!(p.viewers(), 800);
        assert_eq!(p.ramp(), Duration::from_secs_f64(39.95));
        assert_eq!(p.deadline(), Duration::from_secs_f64(59.95));
        assert_eq!(p.threads(), 1, "one thread unless asked");
        let p = plan(&["--viewers", "800", "--threads", "4"]).expect("valid");
        assert_eq!((p.threads(), p.loop_of(5)), (4, 1));
    }

    #[test]
    fn bad_flags_are_refused() {
        for (args, flag) in [
            (&["--duration", "0"][..], "--duration"),
            (&["--duration=-1"], "--duration"),
            (&["--threads", "0"], "--threads"),
            (&["--ramp", "0"], "--ramp"),
            (&["--viewers", "0"], "--viewers"),
        ] {
            let e = plan(args).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }
}
