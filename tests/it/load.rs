//! `lumen load` and `lumen bench ceiling` run and their numbers are sane: the
//! generator's str0m viewers connect to a real server, receive the in-process
//! publisher's frames without unrepaired loss on loopback, and read the
//! publisher's send time from the SEI. No performance thresholds: the
//! figures come from the benchmark commands, not from tests.

use std::time::Duration;

use lumen::bench::{CeilingOptions, run_ceiling};
use lumen::load::{LoadOptions, PublishSpec, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_generator_viewers_receive_the_published_stream() {
    let server = crate::support::start_server().await;
    let base = server.http_url();
    let viewers = 5;
    let report = run(LoadOptions {
        whep_url: format!("{base}/whep/load"),
        token: None,
        viewers,
        ramp_per_sec: 20.0,
        duration: Duration::from_secs(4),
        publish: Some(PublishSpec {
            whip_url: format!("{base}/whip/load"),
            width: 320,
            height: 180,
            fps: 30,
            bitrate_bps: 300_000,
            simulcast: false,
        }),
        // The server runs in this process: this checks the /proc sampling.
        server_pid: Some(std::process::id()),
        progress: false,
    })
    .await
    .expect("the load run completes");
    let table = report.table();

    assert_eq!(report.viewers_started, viewers, "{table}");
    assert_eq!(report.viewers_connected, viewers, "{table}");
    assert_eq!(report.viewers_failed, 0, "{table}");
    assert_eq!(report.viewers_with_keyframe, viewers, "{table}");
    assert!(
        report.publisher_frames_sent.is_some_and(|f| f > 0),
        "{table}"
    );
    for (i, v) in report.viewers.iter().enumerate() {
        assert!(v.connected, "viewer {i}: {v:?}");
        assert!(v.packets > 0, "viewer {i} received nothing: {v:?}");
        assert!(v.bitrate_kbps > 0.0, "viewer {i}: {v:?}");
        assert!(v.latency_samples > 0, "viewer {i} read no SEI: {v:?}");
    }
    assert_eq!(
        report.packets_lost, 0,
        "unrepaired loss on loopback\n{table}"
    );
    assert_eq!(report.latency_in_future, 0, "{table}");
    let latency = report.latency.expect("latency samples");
    assert!(latency.count > 0);
    assert!(latency.p50_ms > 0.0, "{table}");
    assert!(latency.max_ms < 1000.0, "{table}");
    // --plot draws the run's seconds.
    let svg = lumen::load::timeline_svg("load", &report.timeline);
    assert!(!report.timeline.is_empty());
    assert_eq!(svg.matches("<polyline").count(), 4, "{svg}");
    let ttff = report.ttff.expect("TTFF samples");
    assert!(ttff.max_ms < 4000.0, "{table}");
    assert!(report.server_rss_mib.is_some_and(|r| r > 0.0), "{table}");
    assert!(report.server_cpu_percent.is_some(), "{table}");
    assert!(!report.timeline.is_empty());
    assert!(report.steady.rx_packets_per_s > 0.0, "{table}");
    // The JSON report serializes.
    let json = serde_json::to_value(&report).expect("the report serializes");
    assert_eq!(json["viewers_connected"], viewers);

    server.stop().await;
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
        token: None,
        viewers,
        ramp_per_sec: 20.0,
        duration: Duration::from_secs(4),
        publish: Some(PublishSpec {
            whip_url: format!("{base}/whip/spread"),
            width: 320,
            height: 180,
            fps: 30,
            bitrate_bps: 300_000,
            simulcast: false,
        }),
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
    let table = report.table();
    assert_eq!(report.viewers_connected, viewers, "{table}");
    assert_eq!(report.viewers_with_keyframe, viewers, "{table}");
    for (i, v) in report.viewers.iter().enumerate() {
        assert!(v.packets > 0, "viewer {i} received nothing: {v:?}");
        assert!(v.latency_samples > 0, "viewer {i} read no SEI: {v:?}");
    }
    assert_eq!(report.packets_lost, 0, "{table}");
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
        value("lumen_rtp_packets_relayed_total") > 0,
        "nothing went through another worker"
    );
    assert_eq!(value("lumen_relay_batches_dropped_total"), 0);
    server.stop().await;
}
