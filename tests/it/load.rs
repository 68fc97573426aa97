//! `lumen load` and `lumen bench ceiling` run and their numbers are sane: the
//! generator's str0m viewers connect to a real server, receive the in-process
//! publisher's stream at about its bitrate with no loss left after NACK
//! repair on loopback, and read the publisher's send time from the SEI. No
//! performance thresholds (the figures come from the benchmark commands,
//! not from tests): the bounds are counts and ratios that hold on a busy
//! two-core machine.

use std::time::Duration;

use lumen_tools::bench::{CeilingOptions, run_ceiling};
use lumen_tools::load::{LoadOptions, LoadReport, PublishSpec, run, run_on_threads};

/// The in-process publisher's video bitrate.
const PUBLISH_BPS: u32 = 300_000;

fn publish_spec(base: &str, stream: &str) -> PublishSpec {
    PublishSpec {
        whip_url: format!("{base}/whip/{stream}"),
        width: 320,
        height: 180,
        fps: 30,
        bitrate_bps: PUBLISH_BPS,
        simulcast: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_generator_viewers_receive_the_published_stream() {
    let server = crate::support::start_server().await;
    let base = server.http_url();
    let viewers = 5;
    let report = run(LoadOptions {
        whep_url: format!("{base}/whep/load"),
        // For the publisher's WHIP, and the viewers' WHEP (a public stream).
        token: Some(server.publish_token()),
        viewers,
        ramp_per_sec: 20.0,
        duration: Duration::from_secs(4),
        publish: Some(publish_spec(&base, "load")),
        // The server runs in this process: this checks the /proc sampling.
        server_pid: Some(std::process::id()),
        progress: false,
    })
    .await
    .expect("the load run completes");
    let table = report.table();

    assert_every_viewer_received_the_stream(&report, viewers);

    // Latency: one sample per timing SEI read, none from the future on one
    // host, and none older than the run.
    let latency = report.latency.expect("latency samples");
    let samples: u64 = report.viewers.iter().map(|v| v.latency_samples).sum();
    assert_eq!(latency.count as u64, samples, "{table}");
    assert!(latency.p50_ms > 0.0, "{table}");
    assert!(latency.p50_ms <= latency.p99_ms && latency.p99_ms <= latency.max_ms);
    assert!(latency.max_ms <= report.measured_s * 1000.0, "{table}");
    assert_eq!(report.latency_in_future, 0, "{table}");
    // The first viewer to get a frame is one sample per frame.
    let first = report.latency_first_viewer.expect("first-viewer latency");
    assert!(first.count <= latency.count, "{table}");
    assert!(first.count as u64 <= report.publisher_frames_sent.unwrap_or(0));
    assert!(report.latency_spread.is_some(), "{table}");
    for v in &report.viewers {
        let mean = v.latency_mean_ms.expect("a mean latency per viewer");
        assert!(mean > 0.0 && mean <= latency.max_ms, "{v:?}\n{table}");
    }

    // TTFF: one sample per viewer, each after its own connect, within the run.
    let ttff = report.ttff.expect("TTFF samples");
    let connect = report.connect.expect("connect samples");
    assert_eq!(ttff.count, viewers, "{table}");
    assert_eq!(connect.count, viewers, "{table}");
    assert!(ttff.max_ms <= report.measured_s * 1000.0, "{table}");
    for (i, v) in report.viewers.iter().enumerate() {
        let (c, t) = (v.connect_ms.expect("connect"), v.ttff_ms.expect("TTFF"));
        assert!(0.0 < c && c <= t, "viewer {i}: connect {c} ms, TTFF {t} ms");
    }

    // The server's CPU and memory, sampled from /proc because a pid was given.
    let cpu = report.server_cpu_percent.expect("server CPU sampled");
    assert!(cpu.is_finite() && cpu >= 0.0, "{table}");
    assert!(report.server_rss_mib.is_some_and(|r| r > 0.0), "{table}");
    assert!(report.server_rss_kib_per_viewer.is_some(), "{table}");
    assert!(report.server_socket_drops.is_some(), "{table}");
    assert!(report.generator_cpu_percent.is_some(), "{table}");
    assert!(report.steady.server_cpu_s.is_some(), "{table}");
    assert!(report.steady.window_s > 0.0, "{table}");
    assert!(report.steady.rx_packets_per_s > 0.0, "{table}");
    assert!(report.steady.latency.is_some(), "{table}");

    // The timeline: a point a second, in order, ending with every viewer
    // connected, with the server's samples in it.
    let timeline = &report.timeline;
    assert!(timeline.len() >= 2, "{timeline:?}");
    assert!(
        timeline.windows(2).all(|w| w[0].t_s < w[1].t_s),
        "{timeline:?}"
    );
    assert_eq!(timeline.last().map(|p| p.viewers_connected), Some(viewers));
    assert!(
        timeline
            .iter()
            .any(|p| p.rx_packets_per_s > 0.0 && p.rx_mbps > 0.0)
    );
    assert!(
        timeline
            .iter()
            .any(|p| p.server_cpu_percent.is_some() && p.server_rss_mib.is_some_and(|r| r > 0.0)),
        "{timeline:?}"
    );

    // --plot draws the run's seconds: two charts of two series each.
    let svg = lumen_tools::load::timeline_svg("load", timeline);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 4, "{svg}");
    for series in [
        "server CPU %",
        "generator CPU %",
        "latency p50 ms",
        "latency p99 ms",
    ] {
        assert!(svg.contains(series), "no {series:?} in\n{svg}");
    }

    // --json: the report with one entry per viewer.
    let json = serde_json::to_value(&report).expect("the report serializes");
    assert_eq!(json["viewers_connected"], viewers);
    assert_eq!(json["viewers"].as_array().map(Vec::len), Some(viewers));
    assert!(json["latency"]["p50_ms"].as_f64().is_some_and(|p| p > 0.0));

    server.stop().await;
}

/// Issue 16: the ramp paces (viewer k's POST goes out no earlier than k/ramp
/// seconds in, so 10 viewers at 5/s are not all started in the first half
/// second), and two threads drive the viewers between them, with the
/// generator's CPU reported per viewer. Lower bounds only: a sleep never
/// ends early, but on a busy machine it may end late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_ramp_paces_viewers_over_two_threads() {
    let server = crate::support::start_server().await;
    let base = server.http_url();
    let (viewers, ramp) = (10, 5.0);
    let report = run_on_threads(
        LoadOptions {
            whep_url: format!("{base}/whep/paced"),
            token: Some(server.publish_token()),
            viewers,
            ramp_per_sec: ramp,
            duration: Duration::from_secs(2),
            publish: Some(publish_spec(&base, "paced")),
            server_pid: None,
            progress: false,
        },
        None,
        2,
    )
    .await
    .expect("the load run completes");
    let table = report.table();

    assert_eq!(report.generator_threads, 2, "{table}");
    assert_eq!(report.viewers_started, viewers, "{table}");
    assert_eq!(report.viewers_connected, viewers, "{table}");
    let ids: Vec<usize> = report.viewers.iter().map(|v| v.id).collect();
    assert_eq!(ids, (0..viewers).collect::<Vec<_>>(), "start order");
    let posted: Vec<f64> = report
        .viewers
        .iter()
        .map(|v| v.posted_s.expect("a POST time"))
        .collect();
    for (k, p) in posted.iter().enumerate() {
        // A millisecond of slack for the timer's and the clock's rounding.
        assert!(
            *p >= k as f64 / ramp - 0.001,
            "viewer {k} posted at {p:.3} s, due at {:.3} s: {posted:?}",
            k as f64 / ramp
        );
    }
    assert!(
        posted.iter().filter(|p| **p < 0.5).count() <= 3,
        "not paced: {posted:?}"
    );
    let spread = posted.iter().copied().fold(f64::MIN, f64::max)
        - posted.iter().copied().fold(f64::MAX, f64::min);
    assert!(spread >= 1.7, "POSTs spread over {spread:.2} s: {posted:?}");

    // Both loops' viewers received the stream and count in the timeline.
    assert!(report.viewers.iter().all(|v| v.packets > 0), "{table}");
    assert_eq!(
        report.timeline.last().map(|p| p.viewers_connected),
        Some(viewers),
        "{:?}",
        report.timeline
    );
    assert!(report.timeline.iter().any(|p| p.rx_packets_per_s > 0.0));
    assert!(report.steady.generator_cpu_percent.is_some(), "{table}");
    let per_viewer = report
        .generator_cpu_percent_per_viewer
        .expect("generator CPU per viewer");
    let total = report.generator_cpu_percent.expect("generator CPU");
    assert!(
        (per_viewer * viewers as f64 - total).abs() < 1e-6,
        "{table}"
    );
    assert!(table.contains("per viewer"), "{table}");
    server.stop().await;
}

/// What every `lumen load` run against a live publisher must show: all
/// viewers connected and got a keyframe, each received the stream at about
/// the published bitrate and about as many frames as the others, and NACK
/// repaired nearly every loss.
fn assert_every_viewer_received_the_stream(report: &LoadReport, viewers: usize) {
    let table = report.table();
    assert_eq!(report.viewers_requested, viewers, "{table}");
    assert_eq!(report.viewers_started, viewers, "{table}");
    assert_eq!(report.viewers_connected, viewers, "{table}");
    assert_eq!(report.viewers_failed, 0, "{table}");
    assert!(report.failures.is_empty(), "{table}");
    assert_eq!(report.viewers_with_keyframe, viewers, "{table}");
    assert_eq!(report.viewers.len(), viewers, "{table}");
    let frames_sent = report
        .publisher_frames_sent
        .expect("an in-process publisher");
    assert!(frames_sent > 0, "{table}");

    // Received bitrate (RTP headers and audio included) against the
    // encoder's target: wide bounds, as openh264 meets its target loosely
    // over a few seconds, but a viewer that gets a fraction of the stream,
    // or counts packets it should not (duplicates, another stream), falls
    // outside them.
    let target_kbps = f64::from(PUBLISH_BPS) / 1000.0;
    for (i, v) in report.viewers.iter().enumerate() {
        assert!(v.connected, "viewer {i}: {v:?}");
        assert!(
            (target_kbps / 3.0..=target_kbps * 3.0).contains(&v.bitrate_kbps),
            "viewer {i} received {:.0} kbit/s of a {target_kbps:.0} kbit/s stream\n{table}",
            v.bitrate_kbps
        );
        // Frames read (timing SEIs): never more than were sent.
        assert!(
            0 < v.latency_samples && v.latency_samples <= frames_sent,
            "viewer {i} read {} SEIs of {frames_sent} frames sent\n{table}",
            v.latency_samples
        );
        assert_eq!(
            v.lost, 0,
            "viewer {i}: unrepaired loss on loopback {v:?}\n{table}"
        );
    }
    // The viewers started within a fraction of a second of each other and
    // watched the same stream: none got less than half of what the best got.
    let most = report.viewers.iter().map(|v| v.latency_samples).max();
    let least = report.viewers.iter().map(|v| v.latency_samples).min();
    assert!(
        least.unwrap_or(0) * 2 >= most.unwrap_or(0),
        "frames read per viewer from {least:?} to {most:?}\n{table}"
    );
    let mean = report.viewers.iter().map(|v| v.bitrate_kbps).sum::<f64>() / viewers as f64;
    assert!((report.bitrate_kbps_mean - mean).abs() < 1e-6, "{table}");

    // Loss after NACK repair: none on loopback.
    let packets: u64 = report.viewers.iter().map(|v| v.packets).sum();
    assert_eq!(report.packets_received, packets, "{table}");
    assert_eq!(
        report.packets_lost,
        report.viewers.iter().map(|v| v.lost).sum::<u64>(),
        "{table}"
    );
    assert_eq!(
        report.packets_lost, 0,
        "unrepaired loss on loopback\n{table}"
    );
    assert_eq!(report.loss_percent, 0.0, "{table}");
    assert_eq!(report.send_errors, 0, "{table}");
}

#[test]
fn ceiling_bench_gives_positive_rates() {
    let report = run_ceiling(&CeilingOptions {
        payload_len: 1200,
        phase: Duration::from_millis(50),
    })
    .expect("the ceiling runs");
    assert!(report.encrypt.packets_per_sec() > 0.0);
    assert!(report.send.packets_per_sec() > 0.0);
    assert!(report.encrypt_and_send.packets_per_sec() > 0.0);
    assert!(report.encrypt_and_send.ns_per_packet() > 0.0);
    assert!(
        report.received > 0,
        "no datagram reached the draining socket"
    );
}

/// With `worker_spread` 0 a stream's viewers go to every worker: those on
/// the worker without the publisher are fed through a mirror, and receive
/// the same stream as the others, without loss. The API counts the viewers
/// of every worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_spread_over_workers_receive_the_stream() {
    let server = crate::support::start_server_with(|c| c.worker_spread = 0).await;
    let base = server.http_url();
    let viewers = 6;
    let options = LoadOptions {
        whep_url: format!("{base}/whep/spread"),
        token: Some(server.publish_token()),
        viewers,
        ramp_per_sec: 20.0,
        duration: Duration::from_secs(4),
        publish: Some(publish_spec(&base, "spread")),
        server_pid: None,
        progress: false,
    };
    let run = tokio::spawn(run(options));
    // While they watch: one stream, all of its viewers.
    let mut seen = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = reqwest::get(format!("{base}/api/streams/spread"))
            .await
            .expect("GET stream")
            .text()
            .await
            .expect("body");
        if seen.contains(&format!("\"viewers\":{viewers}")) {
            break;
        }
    }
    assert!(
        seen.contains(&format!("\"viewers\":{viewers}")),
        "the API does not count every worker's viewers: {seen}"
    );
    let report = run.await.expect("the task").expect("the load run");
    assert_every_viewer_received_the_stream(&report, viewers);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert!(
        value("lumen_rtp_packets_mirrored_total") > 0,
        "nothing went through another worker"
    );
    assert_eq!(value("lumen_mirror_batches_dropped_total"), 0);
    server.stop().await;
}
