//! `lumen`: the whole platform in one binary.
//!
//! `lumen serve` runs the server, configured by flags, `LUMEN_*` variables
//! and `lumen.toml` (see `config`); `lumen publish` and
//! `lumen watch` are WHIP and WHEP clients built on an independent WebRTC
//! stack (webrtc-rs), for testing and for scripts.

mod accounts;
mod config;
mod simulate;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lumen",
    version,
    about = "WebRTC-first live streaming: WHIP in, WHEP out"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server: WHIP, WHEP, web client, API and metrics.
    ///
    /// Settings come from flags, then LUMEN_* environment variables, then
    /// the configuration file (--config, LUMEN_CONFIG or ./lumen.toml),
    /// then defaults; `lumen config print` shows the result.
    Serve(config::ConfigArgs),
    /// Inspect the configuration: `lumen config print`.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Users: `lumen admin create-user NAME --role ROLE` (password on stdin).
    #[command(subcommand)]
    Admin(accounts::AdminCmd),
    /// Stream keys: `lumen key create STREAM`, `lumen key revoke ID`.
    #[command(subcommand)]
    Key(accounts::KeyCmd),
    /// Tokens: `lumen token mint --scope 'subscribe:STREAM' --ttl 1h`.
    #[command(subcommand)]
    Token(accounts::TokenCmd),
    /// Publish a test pattern (H.264 + Opus) to a WHIP URL.
    Publish(PublishArgs),
    /// Watch a WHEP URL headlessly and print frames, fps, bitrate, loss and TTFF.
    Watch(WatchArgs),
    /// Open many str0m WHEP viewers and report TTFF, bitrate, loss, latency and server CPU.
    Load(lumen_tools::load::LoadArgs),
    /// Measure this machine: `lumen bench ceiling`.
    Bench(lumen_tools::bench::BenchArgs),
    /// Plan the relay tree for an audience: `lumen simulate --viewers 10000000 --regions 6`.
    Simulate(simulate::SimulateArgs),
}

#[derive(clap::Args)]
struct PublishArgs {
    /// WHIP endpoint, e.g. http://127.0.0.1:8080/whip/mystream
    url: String,
    /// Send the moving test pattern (the only source for now).
    #[arg(long, required = true)]
    test_pattern: bool,
    /// Bearer token.
    #[arg(long, env = "LUMEN_TOKEN")]
    token: Option<String>,
    #[arg(long, default_value_t = 640)]
    width: u32,
    #[arg(long, default_value_t = 360)]
    height: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Video bitrate in bits per second.
    #[arg(long, default_value_t = 1_000_000)]
    bitrate: u32,
    /// Send three H.264 simulcast layers (rids h, m, l: 1280x720 ~2.5 Mbit/s,
    /// 640x360 ~800 kbit/s, 320x180 ~200 kbit/s) instead of one picture;
    /// --width, --height and --bitrate are then ignored.
    #[arg(long)]
    simulcast: bool,
    /// Chat as the stream's broadcaster on the session's `chat` data
    /// channel: messages received print on stdout as
    /// `[HH:MM:SS] name (role): text` (UTC), each line typed on stdin is
    /// sent; the status lines then go to stderr.
    #[arg(long)]
    chat: bool,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    duration: Option<f64>,
}

#[derive(clap::Args)]
struct WatchArgs {
    /// WHEP endpoint, e.g. http://127.0.0.1:8080/whep/mystream
    url: String,
    /// Bearer token.
    #[arg(long, env = "LUMEN_TOKEN")]
    token: Option<String>,
    /// Pin a simulcast layer by rid (h, m, l) through the WHEP layer
    /// extension (default: the server chooses).
    #[arg(long, value_name = "RID")]
    layer: Option<String>,
    /// Join the stream's chat on the session's `chat` data channel:
    /// messages received print on stdout as `[HH:MM:SS] name (role): text`
    /// (UTC), each line typed on stdin is sent (which needs a token minted
    /// for a user; anonymous viewers read only); the status lines then go
    /// to stderr.
    #[arg(long)]
    chat: bool,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    duration: Option<f64>,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the effective configuration as TOML (defaults < file <
    /// environment < flags), secrets masked, with the source of every value
    /// that is not a default.
    Print(config::ConfigArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,str0m=warn,webrtc=warn,rtc=warn,rtc_dtls=error,webrtc_ice=warn".into()
            }),
        )
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async move {
        match cli.command {
            Cmd::Serve(a) => serve(a).await,
            Cmd::Config(ConfigCmd::Print(a)) => {
                print!("{}", a.load()?.to_masked_toml()?);
                Ok(())
            }
            Cmd::Admin(c) => accounts::admin(c).await,
            Cmd::Key(c) => accounts::key(c).await,
            Cmd::Token(c) => accounts::token(c).await,
            Cmd::Publish(a) => {
                let opts = lumen_tools::client::PublishOptions {
                    url: a.url,
                    token: a.token,
                    width: a.width,
                    height: a.height,
                    fps: a.fps,
                    bitrate_bps: a.bitrate,
                    simulcast: a.simulcast,
                    loop_pattern: false,
                    chat: a.chat,
                };
                lumen_tools::client::run_publish_cli(opts, seconds(a.duration)?).await
            }
            Cmd::Watch(a) => {
                let opts = lumen_tools::client::WatchOptions {
                    url: a.url,
                    token: a.token,
                    layer: a.layer,
                    chat: a.chat,
                };
                lumen_tools::client::run_watch_cli(opts, seconds(a.duration)?).await
            }
            Cmd::Load(mut a) => {
                if a.chat_rate.is_some() && a.chat_tokens.is_empty() {
                    a.chat_tokens = mint_chat_tokens(&a).await?;
                }
                lumen_tools::load::run_load_cli(a).await
            }
            Cmd::Bench(a) => lumen_tools::bench::run_bench_cli(a).await,
            Cmd::Simulate(a) => simulate::run(a),
        }
    })
}

/// One token per chatter of `lumen load --chat-rate`, each its own user
/// for the chat rate limit: signed with the key of the server's data dir as
/// `lumen token mint` does, subject `load-I`, scopes `subscribe:STREAM
/// chat:STREAM`, valid for the run and ten minutes more.
async fn mint_chat_tokens(a: &lumen_tools::load::LoadArgs) -> anyhow::Result<Vec<String>> {
    let stream = a
        .stream()
        .with_context(|| format!("--whep {:?} names no stream", a.whep))?;
    let scopes = lumen_signaling::auth::Scopes::parse(&format!("subscribe:{stream} chat:{stream}"))
        .map_err(anyhow::Error::msg)?;
    let ttl = std::time::Duration::try_from_secs_f64(a.duration).unwrap_or_default()
        + std::time::Duration::from_secs(600);
    let config = config::ConfigArgs {
        config: a.config.clone(),
        data_dir: a.data_dir.clone(),
        ..Default::default()
    };
    let auth = accounts::open(&config).await?;
    (0..a.chatters())
        .map(|i| {
            auth.mint(&format!("load-{i}"), &scopes, ttl)
                .context("minting a chatter's token")
        })
        .collect()
}

fn seconds(d: Option<f64>) -> anyhow::Result<Option<std::time::Duration>> {
    d.map(|s| {
        std::time::Duration::try_from_secs_f64(s)
            .map_err(|_| anyhow::anyhow!("--duration must be a positive number of seconds"))
    })
    .transpose()
}

async fn serve(a: config::ConfigArgs) -> anyhow::Result<()> {
    let loaded = a.load()?;
    let file = loaded.file.clone();
    let drain = std::time::Duration::from_secs(loaded.config.cluster.drain_timeout_secs);
    let running = lumen_signaling::start(loaded.config.server()?)
        .await
        .context("starting lumen")?;
    let url = running.http_url();
    println!("lumen is live");
    if let Some(f) = file {
        println!("  config:      {}", f.display());
    }
    println!("  web client:  {url}/");
    println!("  broadcast:   {url}/broadcast");
    println!("  WHIP (OBS):  {url}/whip/<stream>   (Bearer token: the stream key)");
    println!("  WHEP:        {url}/whep/<stream>");
    println!("  media UDP:   {:?}", running.rtc_addrs());
    match running.setup_url().await {
        Ok(Some(setup)) => {
            println!();
            println!("  No admin yet. Choose the admin's password here (valid 1 hour, once):");
            println!("  setup:       {setup}");
        }
        Ok(None) => {}
        Err(e) => eprintln!("cannot make a setup code: {e}"),
    }
    // Ctrl-C stops at once; SIGTERM (an orchestrator's stop) drains first.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            println!("shutting down");
            running.shutdown().await;
        }
        _ = term.recv() => {
            println!("draining (up to {} s), then shutting down", drain.as_secs());
            running.drain(drain).await;
        }
    }
    Ok(())
}
