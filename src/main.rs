//! `lumen`: the whole platform in one binary.
//!
//! `lumen serve` runs the server on embedded defaults; `lumen publish` and
//! `lumen watch` are WHIP and WHEP clients built on an independent WebRTC
//! stack (webrtc-rs), for testing and for scripts.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

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
    Serve(ServeArgs),
    /// Publish a test pattern (H.264 + Opus) to a WHIP URL.
    Publish(PublishArgs),
    /// Watch a WHEP URL headlessly and print frames, fps, bitrate, loss and TTFF.
    Watch(WatchArgs),
    /// Open many str0m WHEP viewers and report TTFF, bitrate, loss, latency and server CPU.
    Load(lumen::load::LoadArgs),
    /// Measure this machine: `lumen bench ceiling`.
    Bench(lumen::bench::BenchArgs),
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
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    duration: Option<f64>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// HTTP listen address.
    #[arg(long, env = "LUMEN_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// UDP address of the first media worker (worker i uses port + i).
    #[arg(long, env = "LUMEN_RTC_ADDR", default_value = "127.0.0.1:8000")]
    rtc_addr: SocketAddr,
    /// IP announced in ICE candidates when clients reach this host by another address.
    #[arg(long, env = "LUMEN_PUBLIC_IP")]
    public_ip: Option<IpAddr>,
    /// UDP port announced for the first worker when a NAT or proxy forwards another port to it (worker i: port + i).
    #[arg(long, env = "LUMEN_PUBLIC_PORT")]
    public_port: Option<u16>,
    /// Data directory.
    #[arg(long, env = "LUMEN_DATA_DIR", default_value = "lumen-data")]
    data_dir: PathBuf,
    /// STUN/TURN server URLs announced to clients (repeatable).
    #[arg(long = "ice-server", env = "LUMEN_ICE_SERVERS", value_delimiter = ',')]
    ice_servers: Vec<String>,
    /// Number of media workers (default: one per core).
    #[arg(long, env = "LUMEN_WORKERS")]
    workers: Option<usize>,
    /// How many more peers a stream's worker may have than the least busy
    /// one before its new viewers go to another worker (0: spread every
    /// stream over all workers).
    #[arg(long, env = "LUMEN_WORKER_SPREAD")]
    worker_spread: Option<usize>,
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
            Cmd::Publish(a) => {
                let opts = lumen::client::PublishOptions {
                    url: a.url,
                    token: a.token,
                    width: a.width,
                    height: a.height,
                    fps: a.fps,
                    bitrate_bps: a.bitrate,
                    simulcast: a.simulcast,
                    loop_pattern: false,
                };
                lumen::client::run_publish_cli(opts, seconds(a.duration)?).await
            }
            Cmd::Watch(a) => {
                let opts = lumen::client::WatchOptions {
                    url: a.url,
                    token: a.token,
                    layer: a.layer,
                };
                lumen::client::run_watch_cli(opts, seconds(a.duration)?).await
            }
            Cmd::Load(a) => lumen::load::run_load_cli(a).await,
            Cmd::Bench(a) => lumen::bench::run_bench_cli(a).await,
        }
    })
}

fn seconds(d: Option<f64>) -> anyhow::Result<Option<std::time::Duration>> {
    d.map(|s| {
        std::time::Duration::try_from_secs_f64(s)
            .map_err(|_| anyhow::anyhow!("--duration must be a positive number of seconds"))
    })
    .transpose()
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut config = lumen_signaling::Config::new();
    config.http_addr = a.http_addr;
    config.rtc_addr = a.rtc_addr;
    config.public_ip = a.public_ip;
    config.public_port = a.public_port;
    config.data_dir = a.data_dir;
    config.ice_servers = a.ice_servers;
    if let Some(s) = a.worker_spread {
        config.worker_spread = s;
    }
    if let Some(w) = a.workers {
        config.workers = w.max(1);
    }
    let running = lumen_signaling::start(config)
        .await
        .context("starting lumen")?;
    let url = running.http_url();
    println!("lumen is live");
    println!("  web client:  {url}/");
    println!("  broadcast:   {url}/broadcast");
    println!("  WHIP (OBS):  {url}/whip/<stream>   (Bearer token: any, until accounts land)");
    println!("  WHEP:        {url}/whep/<stream>");
    println!("  media UDP:   {:?}", running.rtc_addrs());
    tokio::signal::ctrl_c().await.ok();
    println!("shutting down");
    running.shutdown().await;
    Ok(())
}
