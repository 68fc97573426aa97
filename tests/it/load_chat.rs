//! `lumen load --chat-rate`: every viewer opens the chat channel, the
//! chatters (each with a token of its own, as `lumen load` mints them) speak
//! at the paced rate, and every viewer's receipts are timed. Few messages, so
//! the default rate limit (20 per 30 s per user) is not reached. No
//! performance thresholds: counts and orderings only.

use std::time::Duration;

use lumen_signaling::auth::Scopes;
use lumen_tools::load::{ChatLoad, LoadOptions, PublishSpec, run_with_chat};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_load_times_every_viewers_receipts() {
    let server = crate::support::start_server().await;
    let base = server.http_url();
    let (viewers, chatters) = (5, 4);
    let scopes = Scopes::parse("subscribe:chatload chat:chatload").expect("scopes");
    let tokens: Vec<String> = (0..chatters)
        .map(|i| {
            server
                .auth()
                .mint(&format!("load-{i}"), &scopes, Duration::from_secs(600))
                .expect("a chatter's token")
        })
        .collect();
    let report = run_with_chat(
        LoadOptions {
            whep_url: format!("{base}/whep/chatload"),
            // The publisher's WHIP, and the WHEP of the one viewer that
            // only reads.
            token: Some(server.publish_token()),
            viewers,
            ramp_per_sec: 20.0,
            // After the 0.2 s ramp: 4 s in all, 80 pacer slots, so each
            // chatter stays within the rate limit's 20 messages.
            duration: Duration::from_millis(3_800),
            publish: Some(PublishSpec {
                whip_url: format!("{base}/whip/chatload"),
                width: 320,
                height: 180,
                fps: 30,
                bitrate_bps: 300_000,
                simulcast: false,
            }),
            server_pid: None,
            progress: false,
        },
        Some(ChatLoad {
            rate_per_sec: 20.0,
            chatters,
            tokens,
            deflate: true,
        }),
    )
    .await
    .expect("the load run completes");
    let table = report.table();
    let chat = report.chat.as_ref().expect("a chat section");

    // The video part is unchanged: everyone connected and received it.
    assert_eq!(report.viewers_connected, viewers, "{table}");
    assert!(report.viewers.iter().all(|v| v.packets > 0), "{table}");

    // Everyone joined the room; the chatters spoke, the reader did not.
    assert_eq!(chat.viewers_joined, viewers, "{table}");
    assert!(chat.sent > 0, "{table}");
    assert!(chat.errors.is_empty(), "errors: {:?}\n{table}", chat.errors);
    assert_eq!(chat.channels_closed, 0, "{table}");
    assert_eq!(chat.unparsed, 0, "{table}");
    let spoke: Vec<u64> = report.viewers.iter().map(|v| v.chat_sent).collect();
    assert_eq!(spoke.iter().sum::<u64>(), chat.sent, "{table}");
    assert_eq!(
        spoke.iter().filter(|&&n| n > 0).count(),
        chatters,
        "{spoke:?}"
    );
    assert_eq!(
        spoke[chatters], 0,
        "viewer {chatters} only reads: {spoke:?}"
    );

    // Receipts: each message reached the viewers in the room (the sender's
    // echo included), every viewer timed some, and none were lost on
    // loopback beyond the ones still in flight at the very end.
    assert!(chat.expected >= chat.sent, "{table}");
    assert!(chat.received > chat.sent, "others received them\n{table}");
    assert!(chat.received <= chat.sent * viewers as u64, "{table}");
    assert!(chat.received_percent > 50.0, "{table}");
    let latency = chat.latency.expect("latency samples");
    assert_eq!(latency.count as u64, chat.received, "{table}");
    assert!(latency.p50_ms <= latency.p99_ms && latency.p99_ms <= latency.max_ms);
    assert!(
        latency.max_ms <= report.measured_s * 1000.0 + 1000.0,
        "{table}"
    );
    for (i, v) in report.viewers.iter().enumerate() {
        let l = v.chat_latency.expect("every viewer timed receipts");
        assert!(l.count > 0, "viewer {i}\n{table}");
    }
    assert_eq!(
        chat.per_viewer_p99.map(|p| p.count),
        Some(viewers),
        "{table}"
    );
    assert!(report.timeline.iter().any(|p| p.chat_latency.is_some()));

    // The table and the JSON carry the section.
    assert!(table.contains("send→receipt latency"), "{table}");
    let json = serde_json::to_value(&report).expect("the report serializes");
    assert_eq!(json["chat"]["sent"], chat.sent);
    assert!(json["chat"]["latency"]["p99_ms"].as_f64().is_some());

    server.stop().await;
}
