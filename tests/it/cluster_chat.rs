//! Chat over the relay tree with real nodes (in-process servers sharing a
//! real Redis directory): the origin's room is the one room of the stream.
//! A viewer on an edge two hops down and a viewer on the origin see each
//! other's messages with the same ids in the same order, a late joiner on
//! the edge gets the origin's history, a moderator's ban at the origin
//! reaches the banned user on the edge (measured against the issue's 1 s)
//! and refuses their next message, when the middle relay stops the edge's
//! members join again through the new link, and only the origin stores.

use std::time::{Duration, Instant};

use lumen_cascade::testing::TempRedis;
use lumen_signaling::auth::Scopes;
use lumen_tools::client::{ChatFrames, ChatSender, Publisher, WatchOptions, Watcher};
use serde_json::Value;

use crate::cluster::{small, tree};

/// Generous: a condition that holds at all holds long before this.
const WAIT: Duration = Duration::from_secs(30);

/// A viewer of `stream` on `base` with a chat channel, retrying while the
/// stream is not known there yet.
async fn chatter(
    base: &str,
    stream: &str,
    token: Option<String>,
) -> (Watcher, ChatSender, ChatFrames) {
    let deadline = Instant::now() + WAIT;
    let mut w = loop {
        match Watcher::start(WatchOptions {
            url: format!("{base}/whep/{stream}"),
            token: token.clone(),
            chat: true,
            ..Default::default()
        })
        .await
        {
            Ok(w) => break w,
            Err(e) if Instant::now() < deadline => {
                eprintln!("viewer not admitted yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no viewer on {base}: {e}"),
        }
    };
    let sender = w.chat_sender().expect("a chat sender");
    let frames = w.chat_frames().expect("chat frames");
    (w, sender, frames)
}

/// The texts of a `history` frame, oldest first.
fn texts(history: &Value) -> Vec<String> {
    history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["text"].as_str().map(str::to_string))
        .collect()
}

fn token(server: &crate::support::TestServer, subject: &str, scope: &str) -> String {
    server
        .auth()
        .mint(
            subject,
            &Scopes::parse(scope).expect("scope"),
            Duration::from_secs(600),
        )
        .expect("a token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_crosses_the_relay_tree_with_the_origin_as_its_authority() {
    let Some(redis) = TempRedis::start("chat_crosses_the_relay_tree") else {
        return;
    };
    let (origin, relay, edge) = tree(&redis).await;
    let publisher = Publisher::start(small(
        format!("{}/whip/talk", origin.http_url()),
        origin.publish_token(),
        300_000,
    ))
    .await
    .expect("publish on the origin");

    // A moderator on the origin; a chatting viewer on the relay (the tree's
    // middle), then one on the edge, which feeds from the relay.
    let (mo_w, mo, mut at_mo) = chatter(
        &origin.http_url(),
        "talk",
        Some(token(&origin, "mo", "moderate:talk")),
    )
    .await;
    at_mo.next_of("history", WAIT).await.expect("mo joins");
    let (rita_w, _rita, mut at_rita) = chatter(
        &relay.http_url(),
        "talk",
        Some(token(&origin, "rita", "chat:talk")),
    )
    .await;
    at_rita
        .next_of("history", WAIT)
        .await
        .expect("rita joins the origin's room from the relay");
    let (eve_w, eve, mut at_eve) = chatter(
        &edge.http_url(),
        "talk",
        Some(token(&origin, "eve", "chat:talk")),
    )
    .await;
    let history = at_eve
        .next_of("history", WAIT)
        .await
        .expect("eve joins the origin's room from the edge");
    assert_eq!(texts(&history), Vec::<String>::new());

    // Edge to origin, and back: one message, one id, everywhere.
    eve.send_text("hello from the edge").expect("eve's channel");
    let m1 = at_mo
        .next_message("hello from the edge", WAIT)
        .await
        .unwrap_or_else(|e| panic!("mo: {e:#}"));
    assert_eq!(m1["user"], "token:eve", "{m1}");
    let own = at_eve
        .next_message("hello from the edge", WAIT)
        .await
        .unwrap_or_else(|e| panic!("eve: {e:#}"));
    assert_eq!(own, m1, "the edge sees the origin's frame unchanged");
    mo.send_text("hello from the origin").expect("mo's channel");
    let m2 = at_eve
        .next_message("hello from the origin", WAIT)
        .await
        .unwrap_or_else(|e| panic!("eve: {e:#}"));
    assert_eq!(m2["role"], "moderator", "{m2}");
    let at_origin = at_mo
        .next_message("hello from the origin", WAIT)
        .await
        .unwrap_or_else(|e| panic!("mo: {e:#}"));
    assert_eq!(at_origin["id"], m2["id"]);
    assert!(
        m1["id"].as_u64() < m2["id"].as_u64(),
        "ids follow the origin's order: {m1} {m2}"
    );
    for m in [&m1, &m2] {
        let text = m["text"].as_str().expect("text");
        assert_eq!(
            &at_rita
                .next_message(text, WAIT)
                .await
                .unwrap_or_else(|e| panic!("rita: {e:#}")),
            m
        );
    }

    // A late joiner on the edge gets the origin's history.
    let (late_w, _late, mut at_late) = chatter(&edge.http_url(), "talk", None).await;
    let history = at_late.next_of("history", WAIT).await.expect("history");
    assert_eq!(
        texts(&history),
        ["hello from the edge", "hello from the origin"]
    );

    // The moderator bans eve at the origin: the ban reaches her on the
    // edge, and her next message is refused there.
    let banned = Instant::now();
    mo.send_frame(r#"{"type":"ban","user":"token:eve","reason":"spam"}"#.to_string())
        .expect("mo's channel");
    let notice = at_eve.next_of("notice", WAIT).await.expect("eve is told");
    let took = banned.elapsed();
    eprintln!("ban at the origin reached the banned user on the edge (2 hops) in {took:?}");
    assert!(
        notice["text"]
            .as_str()
            .is_some_and(|t| t.contains("banned")),
        "{notice}"
    );
    assert!(
        took <= Duration::from_secs(1),
        "the issue's bound: a ban applies on every node within 1 s; took {took:?}"
    );
    eve.send_text("am I still here?").expect("eve's channel");
    let refused = at_eve.next_of("error", WAIT).await.expect("eve is refused");
    assert_eq!(refused["code"], "banned", "{refused}");

    // The relay stops: the edge re-attaches to the origin, and its members
    // join the room again through the new link (a fresh history), where
    // the ban still holds and messages flow.
    let _ = rita_w.stop().await;
    let stopped = tokio::spawn(relay.stop());
    let history = at_eve
        .next_of("history", WAIT)
        .await
        .expect("eve joins again through the new link");
    stopped.await.expect("the relay stopped");
    assert_eq!(
        texts(&history),
        ["hello from the edge", "hello from the origin"]
    );
    mo.send_text("after the relay left").expect("mo's channel");
    let m3 = at_eve
        .next_message("after the relay left", WAIT)
        .await
        .unwrap_or_else(|e| panic!("eve: {e:#}"));
    let late_m3 = at_late
        .next_message("after the relay left", WAIT)
        .await
        .unwrap_or_else(|e| panic!("late: {e:#}"));
    assert_eq!(m3, late_m3);
    assert!(m3["id"].as_u64() > m2["id"].as_u64(), "{m3}");
    eve.send_text("and now?").expect("eve's channel");
    let refused = at_eve.next_of("error", WAIT).await.expect("eve is refused");
    assert_eq!(refused["code"], "banned", "{refused}");

    // Only the origin stores: its history has every message, the edge's
    // store none.
    let deadline = Instant::now() + WAIT;
    loop {
        let stored = origin
            .auth()
            .chat()
            .history("talk", 50)
            .await
            .expect("the origin's store");
        if stored.len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the origin stored {stored:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let on_edge = edge
        .auth()
        .chat()
        .history("talk", 50)
        .await
        .expect("the edge's store");
    assert!(on_edge.is_empty(), "the edge stored {on_edge:?}");

    for w in [late_w, eve_w, mo_w] {
        let _ = w.stop().await;
    }
    let _ = publisher.stop().await;
    edge.stop().await;
    origin.stop().await;
}
