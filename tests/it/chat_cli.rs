//! `lumen publish --chat` and `lumen watch --chat` through the library
//! clients (webrtc-rs) and a real server: the publisher chats as the
//! broadcaster, a viewer whose token names a user chats under the account's
//! name, an anonymous viewer reads only; all while video flows.

use std::time::{Duration, Instant};

use lumen_signaling::auth::{Role, Scopes};
use lumen_tools::client::{PublishOptions, Publisher, WatchOptions, Watcher};

/// Generous: a condition that holds at all holds long before this.
const WAIT: Duration = Duration::from_secs(30);

/// Waits (bounded) until the viewer has decoded more than `after` frames.
async fn decodes(viewer: &Watcher, after: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = viewer.stats().frames_decoded;
        if n > after {
            return n;
        }
        assert!(Instant::now() < deadline, "no video decoded beyond {after}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_clients_chat_through_the_server_while_video_flows() {
    let server = crate::support::start_server().await;
    let base = server.http_url();
    let mut publisher = Publisher::start(PublishOptions {
        url: format!("{base}/whip/chatcli"),
        token: Some(server.publish_token()),
        width: 320,
        height: 180,
        fps: 15,
        bitrate_bps: 300_000,
        chat: true,
        ..Default::default()
    })
    .await
    .expect("publish with chat");
    let broadcaster = publisher.chat_sender().expect("a chat sender");
    let mut from_server = publisher.chat_frames().expect("chat frames");
    assert!(publisher.chat_frames().is_none(), "frames are taken once");
    let joined = from_server
        .next_of("history", WAIT)
        .await
        .expect("the publisher joins its room");
    assert_eq!(joined["messages"], serde_json::json!([]), "{joined}");

    let user = server
        .auth()
        .create_user("vera", "vera's password", Role::Viewer)
        .await
        .expect("a user");
    let token = server
        .auth()
        .mint(
            &user.id,
            &Scopes::parse("chat:chatcli").expect("scope"),
            Duration::from_secs(600),
        )
        .expect("a token for vera");
    let mut vera = Watcher::start(WatchOptions {
        url: format!("{base}/whep/chatcli"),
        token: Some(token),
        chat: true,
        ..Default::default()
    })
    .await
    .expect("watch with chat");
    let to_vera = vera.chat_sender().expect("a chat sender");
    let mut at_vera = vera.chat_frames().expect("chat frames");
    at_vera
        .next_of("history", WAIT)
        .await
        .expect("vera joins the room");
    let before = decodes(&vera, 0).await;

    // Viewer to broadcaster, through the server.
    to_vera
        .send_text("hello from \"vera\"")
        .expect("the channel is up");
    let m = from_server
        .next_message("hello from \"vera\"", WAIT)
        .await
        .expect("the message");
    assert_eq!(m["display_name"], "vera", "{m}");
    assert_eq!(m["user"], user.id.as_str(), "{m}");
    assert_eq!(m["role"], "viewer", "{m}");
    let own = at_vera
        .next_message("hello from \"vera\"", WAIT)
        .await
        .expect("the message");
    assert_eq!(own["id"], m["id"], "everyone sees the same message");

    // Broadcaster to viewer.
    broadcaster
        .send_text("welcome, vera")
        .expect("the channel is up");
    let m = at_vera
        .next_message("welcome, vera", WAIT)
        .await
        .expect("the message");
    assert_eq!(m["role"], "broadcaster", "{m}");
    assert!(m["ts"].as_u64().is_some_and(|ts| ts > 0), "{m}");

    // An anonymous viewer with chat gets the history and reads only.
    let mut anon = Watcher::start(WatchOptions {
        url: format!("{base}/whep/chatcli"),
        chat: true,
        ..Default::default()
    })
    .await
    .expect("anonymous watch with chat");
    let mut at_anon = anon.chat_frames().expect("chat frames");
    let history = at_anon.next_of("history", WAIT).await.expect("history");
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["hello from \"vera\"", "welcome, vera"]);
    anon.chat_sender()
        .expect("a chat sender")
        .send_text("may I?")
        .expect("the channel is up");
    let refused = at_anon.next_of("error", WAIT).await.expect("an error");
    assert_eq!(refused["code"], "read_only", "{refused}");

    // Video kept flowing to the chatting viewer.
    decodes(&vera, before).await;
    let stats = vera.stats();
    assert_eq!(stats.frame_number_gaps, 0, "{stats:?}");

    // Without chat there is nothing to chat on.
    let plain = Watcher::start(WatchOptions {
        url: format!("{base}/whep/chatcli"),
        ..Default::default()
    })
    .await
    .expect("watch without chat");
    assert!(plain.chat_sender().is_none());

    for w in [plain, anon, vera] {
        let (status, _) = w.stop().await.expect("watcher stops");
        assert!((200..300).contains(&status), "DELETE answered {status}");
    }
    let status = publisher.stop().await.expect("publisher stops");
    assert!((200..300).contains(&status), "DELETE answered {status}");
    server.stop().await;
}
