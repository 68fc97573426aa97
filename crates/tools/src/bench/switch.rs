//! Layer-switch latency: how fast an automatic viewer moves to a lower
//! simulcast layer when its downlink narrows.
//!
//! The whole scene runs on loopback: a `lumen serve` child process (one
//! worker) that announces the port of a UDP impairment proxy
//! ([`crate::impair`]), and in this process the `lumen publish --simulcast`
//! client and, per run, a fresh automatic `lumen watch` viewer (webrtc-rs,
//! decoding with openh264). Once the viewer decodes a layer above the lowest, the proxy
//! narrows every client's downlink to `narrow_bps` and the run measures:
//! - *decided*: until the server's WHEP layer endpoint names the lowest layer
//!   as the viewer's target (polled every 10 ms);
//! - *switched*: until the viewer decodes its first picture of the lowest
//!   layer's size;
//! - frames lost from just before the drop to two seconds after the switch.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::serve::ChildServer;
use crate::client::{PublishOptions, Publisher, SIMULCAST_LAYERS, WatchOptions, Watcher};
use crate::impair::{ImpairConfig, ImpairProxy};

/// What to run.
#[derive(Debug, Clone)]
pub struct SwitchOptions {
    /// Drops to measure, each with a new viewer.
    pub runs: usize,
    /// Frames per second of every layer.
    pub fps: u32,
    /// The downlink after the drop, bits per second.
    pub narrow_bps: u64,
    /// Longest wait for any one step.
    pub timeout: Duration,
    /// The `lumen` binary to run the server with; `None`: this executable
    /// (`lumen bench switch`).
    pub server_exe: Option<PathBuf>,
}

impl Default for SwitchOptions {
    fn default() -> Self {
        SwitchOptions {
            runs: 5,
            fps: 30,
            narrow_bps: 300_000,
            timeout: Duration::from_secs(15),
            server_exe: None,
        }
    }
}

/// One drop.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchRun {
    /// Picture height the viewer decoded before the drop.
    pub from_height: u32,
    /// Drop → the server targets the lowest layer, ms.
    pub decided_ms: Option<f64>,
    /// Drop → first decoded picture of the lowest layer, ms.
    pub switched_ms: Option<f64>,
    /// Frames sent from just before the drop to 2 s after the switch.
    pub frames_expected: u64,
    /// Of those, frames the viewer did not decode.
    pub frames_lost: u64,
}

/// All runs.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchReport {
    /// The downlink after each drop, bits per second.
    pub narrow_bps: u64,
    /// Frames per second of every layer.
    pub fps: u32,
    /// The measured drops, in order.
    pub runs: Vec<SwitchRun>,
    /// Runs whose viewer never got above the lowest layer before the drop.
    pub skipped: usize,
}

impl SwitchReport {
    fn pct(v: &[f64], p: f64) -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        Some(v[i])
    }

    /// p50 and max of the switch times that completed.
    pub fn switched_p50_max(&self) -> Option<(f64, f64)> {
        let v: Vec<f64> = self.runs.iter().filter_map(|r| r.switched_ms).collect();
        Some((Self::pct(&v, 0.5)?, Self::pct(&v, 1.0)?))
    }

    /// A plain-text table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "layer switch after the downlink drops to {} kbit/s ({} fps, {} runs, {} skipped)\n",
            self.narrow_bps / 1000,
            self.fps,
            self.runs.len(),
            self.skipped
        );
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0} ms"));
        for (i, r) in self.runs.iter().enumerate() {
            out += &format!(
                "  run {}: from {}p  decided {:>7}  switched {:>7}  lost {}/{} frames\n",
                i + 1,
                r.from_height,
                ms(r.decided_ms),
                ms(r.switched_ms),
                r.frames_lost,
                r.frames_expected
            );
        }
        let decided: Vec<f64> = self.runs.iter().filter_map(|r| r.decided_ms).collect();
        let switched: Vec<f64> = self.runs.iter().filter_map(|r| r.switched_ms).collect();
        out += &format!(
            "  decided  p50 {}  max {}\n  switched p50 {}  max {}\n",
            ms(Self::pct(&decided, 0.5)),
            ms(Self::pct(&decided, 1.0)),
            ms(Self::pct(&switched, 0.5)),
            ms(Self::pct(&switched, 1.0)),
        );
        out
    }
}

/// Runs the scene; see the module documentation.
pub async fn run_switch(opts: &SwitchOptions) -> anyhow::Result<SwitchReport> {
    let low = SIMULCAST_LAYERS[SIMULCAST_LAYERS.len() - 1];
    let listen =
        std::net::UdpSocket::bind("127.0.0.1:0").context("binding the impairment proxy")?;
    let exe = match &opts.server_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().context("finding the lumen binary")?,
    };
    let server = ChildServer::start(&exe, Some(listen.local_addr()?.port()), "switch")
        .await
        .context("starting lumen")?;
    let base = server.http_url();
    let proxy = ImpairProxy::start(listen, server.rtc_addr(), ImpairConfig::default())?;
    let publisher = Publisher::start(PublishOptions {
        url: format!("{base}/whip/switch"),
        token: Some(server.mint("publish:switch")?),
        fps: opts.fps,
        simulcast: true,
        ..Default::default()
    })
    .await
    .context("publishing simulcast")?;
    let http = reqwest::Client::new();

    let mut runs = Vec::new();
    let mut skipped = 0;
    for _ in 0..opts.runs {
        proxy.set_down_rate(None);
        let viewer = Watcher::start(WatchOptions {
            url: format!("{base}/whep/switch"),
            token: None,
            layer: None,
            chat: false,
        })
        .await
        .context("starting a viewer")?;
        // Wait for the best layer (a viewer watching HD whose bandwidth then
        // drops), or at least one above the lowest, then a second more.
        let best = SIMULCAST_LAYERS[0].height;
        let start = Instant::now();
        while viewer.stats().height < best && start.elapsed() < opts.timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = viewer.stats();
        if before.height <= low.height {
            skipped += 1;
            viewer.stop().await?;
            continue;
        }
        let layer_url = viewer.layer_url().map(str::to_owned);
        proxy.set_down_rate(Some(opts.narrow_bps));
        let dropped = Instant::now();
        let (mut decided, mut switched) = (None, None);
        let target = format!("\"target\":\"{}\"", low.rid);
        while (decided.is_none() || switched.is_none()) && dropped.elapsed() < opts.timeout {
            if decided.is_none()
                && let Some(url) = &layer_url
                && let Ok(resp) = http.get(url).send().await
                && resp.text().await.is_ok_and(|b| b.contains(&target))
            {
                decided = Some(dropped.elapsed());
            }
            if switched.is_none() && viewer.stats().height == low.height {
                switched = Some(dropped.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = viewer.stats();
        viewer.stop().await?;
        let expected = after
            .last_frame_number
            .unwrap_or(0)
            .saturating_sub(before.last_frame_number.unwrap_or(0));
        let decoded = after.frames_decoded - before.frames_decoded;
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        runs.push(SwitchRun {
            from_height: before.height,
            decided_ms: ms(decided),
            switched_ms: ms(switched),
            frames_expected: expected,
            frames_lost: expected.saturating_sub(decoded),
        });
    }
    publisher.stop().await?;
    drop(proxy);
    drop(server);
    Ok(SwitchReport {
        narrow_bps: opts.narrow_bps,
        fps: opts.fps,
        runs,
        skipped,
    })
}
