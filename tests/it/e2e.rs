//! The live path end to end over real UDP and HTTP: `lumen publish`'s client
//! sends the test pattern, two `lumen watch` clients decode it.

use std::time::Duration;

use lumen_tools::client::{PublishOptions, Publisher, WatchOptions, Watcher};

use crate::support::start_server_with;

async fn get_json(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_two_viewers_decode_every_frame_in_order() {
    two_viewers_decode_every_frame(lumen_signaling::DEFAULT_WORKER_SPREAD).await;
}

/// The same with the viewers spread over both workers: one of them watches
/// through a mirror of the stream on the worker without the publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_both_workers_decode_every_frame_in_order() {
    two_viewers_decode_every_frame(0).await;
}

async fn two_viewers_decode_every_frame(spread: usize) {
    let server = start_server_with(|c| c.worker_spread = spread).await;
    let base = server.http_url();

    let token = server.publish_token();
    let publisher = Publisher::start(PublishOptions {
        url: format!("{base}/whip/e2e"),
        token: Some(token.clone()),
        width: 320,
        height: 180,
        fps: 30,
        bitrate_bps: 500_000,
        ..Default::default()
    })
    .await
    .expect("publish");

    // Wait until the stream is live before the viewers ask for it.
    let mut live = false;
    for _ in 0..100 {
        if get_json(&format!("{base}/api/streams/e2e"))
            .await
            .contains("\"live\":true")
        {
            live = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(live, "the stream never went live");

    let watch = || {
        Watcher::start(WatchOptions {
            url: format!("{base}/whep/e2e"),
            token: None,
            layer: None,
            chat: false,
        })
    };
    let a = watch().await.expect("first viewer");
    let b = watch().await.expect("second viewer");

    // Wait for both to decode a picture (bounded), then watch for 6 s.
    for _ in 0..200 {
        if a.stats().frames_decoded > 0 && b.stats().frames_decoded > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start_a = a.stats();
    let start_b = b.stats();
    assert!(
        start_a.frames_decoded > 0,
        "viewer A decoded nothing: {start_a:?}"
    );
    assert!(
        start_b.frames_decoded > 0,
        "viewer B decoded nothing: {start_b:?}"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;

    let viewers = get_json(&format!("{base}/api/streams/e2e")).await;
    assert!(viewers.contains("\"viewers\":2"), "{viewers}");
    // Both starts are in the server's time-to-first-frame histogram.
    let metrics = get_json(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("lumen_time_to_first_frame_ms_count 2"),
        "{metrics}"
    );
    assert!(metrics.contains("lumen_time_to_first_frame_ms_bucket{le=\"+Inf\"} 2"));
    // Every batch of forwarded packets is timed (6 s at 30 fps: ~180 frames).
    let forwarded: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("lumen_forwarding_delay_us_count ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no forwarding delay histogram:\n{metrics}"));
    assert!(forwarded >= 150, "{forwarded} batches timed\n{metrics}");
    let mirrored: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("lumen_rtp_packets_mirrored_total ")?
                .parse()
                .ok()
        })
        .expect("mirrored packets counter");
    if spread == 0 {
        assert!(mirrored > 500, "the second worker was not fed: {mirrored}");
    } else {
        assert_eq!(mirrored, 0, "two viewers of one stream left its worker");
    }

    let (status_a, end_a) = a.stop().await.expect("stop A");
    let (status_b, end_b) = b.stop().await.expect("stop B");
    assert_eq!(status_a, 200);
    assert_eq!(status_b, 200);
    for (name, s0, s1) in [("A", &start_a, &end_a), ("B", &start_b, &end_b)] {
        let decoded = s1.frames_decoded - s0.frames_decoded;
        // 6 s at 30 fps is 180 frames; a loaded CI machine may stretch it a little.
        assert!(
            decoded >= 150,
            "viewer {name} decoded {decoded} frames in 6 s: {s1:?}"
        );
        assert_eq!(
            s1.frame_number_gaps, 0,
            "viewer {name} missed frames: {s1:?}"
        );
        assert_eq!(
            s1.out_of_order, 0,
            "viewer {name} saw frames out of order: {s1:?}"
        );
        assert_eq!((s1.width, s1.height), (320, 180), "viewer {name}");
        assert!(s1.audio_packets > 100, "viewer {name} got no audio: {s1:?}");
        assert!(s1.time_to_first_frame.is_some());
    }

    // The viewers' DELETEs took them off the stream; the publisher's ends it.
    let after = get_json(&format!("{base}/api/streams/e2e")).await;
    assert!(after.contains("\"viewers\":0"), "{after}");
    let session = publisher.session_url().to_string();
    assert!(publisher.frames_sent() > 200);
    let status = publisher.stop().await.expect("stop publisher");
    assert_eq!(status, 200);
    let after = get_json(&format!("{base}/api/streams/e2e")).await;
    assert!(after.contains("\"live\":false"), "{after}");
    assert_eq!(get_json(&format!("{base}/api/streams")).await, "[]");
    let again = reqwest::Client::new()
        .delete(&session)
        .bearer_auth(&token)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(again.status().as_u16(), 404);
    server.stop().await;
}
