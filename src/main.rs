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
    /// Data directory.
    #[arg(long, env = "LUMEN_DATA_DIR", default_value = "lumen-data")]
    data_dir: PathBuf,
    /// STUN/TURN server URLs announced to clients (repeatable).
    #[arg(long = "ice-server", env = "LUMEN_ICE_SERVERS", value_delimiter = ',')]
    ice_servers: Vec<String>,
    /// Number of media workers (default: one per core).
    #[arg(long, env = "LUMEN_WORKERS")]
    workers: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,str0m=warn,webrtc=warn,rtc=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async move {
        match cli.command {
            Cmd::Serve(a) => serve(a).await,
        }
    })
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut config = lumen_signaling::Config::new();
    config.http_addr = a.http_addr;
    config.rtc_addr = a.rtc_addr;
    config.public_ip = a.public_ip;
    config.data_dir = a.data_dir;
    config.ice_servers = a.ice_servers;
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
