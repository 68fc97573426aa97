//! The `lumen load` command line: flags, the live progress, the table and
//! the JSON file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::{ChatLoad, LoadOptions, PublishSpec, run_with_chat};

/// `lumen load`: open many WHEP viewers and measure what they receive.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// WHEP endpoint, e.g. http://127.0.0.1:8080/whep/bench
    #[arg(long)]
    pub whep: String,
    /// Viewers to open.
    #[arg(long, default_value_t = 10)]
    pub viewers: usize,
    /// Viewers opened per second.
    #[arg(long, default_value_t = 10.0)]
    pub ramp: f64,
    /// Hard limit of the run in seconds, from the first viewer.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
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
    let duration = Duration::try_from_secs_f64(a.duration)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--duration must be a positive number of seconds")?;
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
    });
    let report = run_with_chat(opts, chat).await?;
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
