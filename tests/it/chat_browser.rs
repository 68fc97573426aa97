//! Chat in the web client, end to end in headless Chromium: the broadcast
//! page goes live with a `publish:*` token (and chats as the stream's
//! broadcaster), a viewer page opened with `?token=` of a token minted for a
//! user chats as that user, and a third, anonymous viewer reads only. Both
//! pages open the `chat` data channel on their WHIP/WHEP session; the
//! messages, a moderator's delete and time-out, and the refused `send` with
//! its countdown are checked in the pages' DOM and in `window.lumen.chat`,
//! while the viewer's video keeps playing.
//!
//! The deadlines bound liveness on a loaded two-core machine; they are not
//! performance assertions.

use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::{Client, Locator};
use serde_json::{Value, json};

use crate::chrome::ChromeDriver;
use crate::support::start_server;

const LIVE_WITHIN: Duration = Duration::from_secs(20);
const CHAT_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_between_broadcaster_and_viewer_while_video_plays() {
    let Some(chrome) = ChromeDriver::start().await else {
        return;
    };
    let server = start_server().await;
    let base = server.http_url();
    let name = format!("chat-{}", std::process::id());

    // A user, and a token minted for them: the viewer page's credential.
    let auth = server.auth();
    let ann = auth
        .create_user(
            "ann",
            "correct horse battery",
            lumen_signaling::auth::Role::Viewer,
        )
        .await
        .expect("create the user ann");
    let scopes = lumen_signaling::auth::Scopes::parse("subscribe:* chat:*").expect("scopes");
    let ann_token = auth
        .mint(&ann.id, &scopes, Duration::from_secs(3600))
        .expect("mint a token for ann");

    // The broadcaster goes live; its chat channel opens with the session.
    let broadcaster = chrome.new_session().await;
    go_live(
        &broadcaster,
        &format!("{base}/broadcast?stream={name}"),
        &server.publish_token(),
    )
    .await;
    until(
        &broadcaster,
        "the broadcaster live",
        "return window.lumen.state === 'live';",
        LIVE_WITHIN,
    )
    .await;
    until(
        &broadcaster,
        "the broadcaster's chat history",
        HAS_HISTORY,
        CHAT_WITHIN,
    )
    .await;

    // Ann watches with her token.
    let viewer = chrome.new_session().await;
    viewer
        .goto(&format!("{base}/watch/{name}?token={ann_token}"))
        .await
        .expect("open the watch page");
    until(
        &viewer,
        "the viewer live",
        "return window.lumen.state === 'live';",
        LIVE_WITHIN,
    )
    .await;
    until(
        &viewer,
        "the viewer's chat history",
        HAS_HISTORY,
        CHAT_WITHIN,
    )
    .await;
    let before = wait_playing(&viewer).await;

    // An anonymous viewer reads: the send box is off, with a link to log in.
    let anon = chrome.new_session().await;
    anon.goto(&format!("{base}/watch/{name}"))
        .await
        .expect("open the anonymous watch page");
    until(
        &anon,
        "the anonymous viewer's chat history",
        HAS_HISTORY,
        LIVE_WITHIN,
    )
    .await;
    let ui = anon
        .execute(
            "return { input: document.getElementById('chat-input').disabled,
                      send: document.getElementById('chat-send').disabled,
                      login: !document.getElementById('chat-login').hidden,
                      href: document.getElementById('chat-login-link').getAttribute('href') };",
            vec![],
        )
        .await
        .expect("read the anonymous chat panel");
    assert_eq!(ui["input"], json!(true), "anonymous send box enabled: {ui}");
    assert_eq!(
        ui["send"],
        json!(true),
        "anonymous send button enabled: {ui}"
    );
    assert_eq!(ui["login"], json!(true), "no 'log in to chat' prompt: {ui}");
    assert!(
        ui["href"]
            .as_str()
            .unwrap_or("")
            .starts_with("/login?next="),
        "the log-in link: {ui}"
    );

    // The broadcaster says hello; ann's page shows it with the role.
    say(&broadcaster, "hello from the broadcaster <b>not bold</b>").await;
    let m = wait_message(
        &viewer,
        "the viewer",
        "hello from the broadcaster <b>not bold</b>",
    )
    .await;
    assert_eq!(m["role"], "broadcaster", "{m}");
    let hello = m["id"].as_u64().expect("a message id");
    let shown = shown_message(&viewer, hello).await;
    assert_eq!(
        shown["name"],
        json!(name),
        "the broadcaster's name: {shown}"
    );
    assert_eq!(
        shown["role"],
        json!("Broadcaster"),
        "the role badge: {shown}"
    );
    // textContent, not markup.
    assert_eq!(shown["bold"], json!(0), "the text became markup: {shown}");
    wait_message(
        &anon,
        "the anonymous viewer",
        "hello from the broadcaster <b>not bold</b>",
    )
    .await;

    // A long message goes compressed to the pages (they ask for it), and
    // reads the same.
    let long = format!("a long one: {}", "la ".repeat(160));
    let long = long.trim_end();
    say(&broadcaster, long).await;
    wait_message(&viewer, "the viewer", long).await;
    wait_message(&anon, "the anonymous viewer", long).await;
    let compressed = viewer
        .execute("return window.lumen.chatCompressed;", vec![])
        .await
        .expect("read the compressed count");
    assert!(
        compressed.as_u64().unwrap_or(0) >= 1,
        "the long message did not come compressed: {compressed}"
    );

    // Ann answers; the broadcaster's page shows her name.
    say(&viewer, "hi, ann here").await;
    let m = wait_message(&broadcaster, "the broadcaster", "hi, ann here").await;
    assert_eq!(m["display_name"], "ann", "{m}");
    assert_eq!(m["user"], json!(ann.id), "{m}");
    assert_eq!(m["role"], "viewer", "{m}");
    let ann_msg = m["id"].as_u64().unwrap();
    let shown = shown_message(&broadcaster, ann_msg).await;
    assert_eq!(shown["name"], "ann", "{shown}");
    assert_eq!(shown["text"], "hi, ann here", "{shown}");
    // The broadcaster moderates: delete, time out and ban on the message.
    let actions = shown["actions"].as_array().cloned().unwrap_or_default();
    for want in ["Delete", "Time out", "Ban"] {
        assert!(
            actions.contains(&json!(want)),
            "no {want} on ann's message: {shown}"
        );
    }
    // Ann gets no moderator controls on the broadcaster's message, but can report it.
    let theirs = shown_message(&viewer, hello).await;
    let actions = theirs["actions"].as_array().cloned().unwrap_or_default();
    assert_eq!(actions, vec![json!("Report")], "ann's controls: {theirs}");

    // She reports it; a moderator finds it on /moderation and dismisses it.
    click_action(&viewer, hello, "Report").await;
    let mo = auth
        .create_user(
            "mo",
            "moderator's password",
            lumen_signaling::auth::Role::Moderator,
        )
        .await
        .expect("a moderator");
    let moderator = chrome.new_session().await;
    moderator
        .goto(&format!("{base}/login?next=/moderation"))
        .await
        .expect("open the log in page");
    for (field, text) in [("name", "mo"), ("password", "moderator's password")] {
        moderator
            .find(Locator::Id(field))
            .await
            .expect("a log in field")
            .send_keys(text)
            .await
            .expect("type");
    }
    moderator
        .find(Locator::Id("submit"))
        .await
        .expect("the log in button")
        .click()
        .await
        .expect("log in");
    let queued = until(
        &moderator,
        "the report on the moderation page",
        &format!(
            "return window.lumen?.state === 'ready' && window.lumen.reports.length > 0
               && document.querySelector('#reports tr[data-report]') !== null
               && window.lumen.reports.find((r) => r.message.id === {hello});"
        ),
        CHAT_WITHIN,
    )
    .await;
    assert_eq!(queued["reporter"], json!(ann.id), "{queued}");
    assert_eq!(queued["stream"], json!(name), "{queued}");
    let id = queued["id"].as_str().expect("report id").to_string();
    moderator
        .find(Locator::Css(&format!(
            "#reports tr[data-report=\"{id}\"] button.dismiss"
        )))
        .await
        .expect("the Dismiss button")
        .click()
        .await
        .expect("dismiss");
    until(
        &moderator,
        "the queue emptied",
        &format!(
            "return window.lumen.state === 'ready'
               && !window.lumen.reports.some((r) => r.id === '{id}')
               && !document.querySelector('#reports tr[data-report=\"{id}\"]');"
        ),
        CHAT_WITHIN,
    )
    .await;
    let stored = auth
        .chat()
        .reports(&name, false, 10)
        .await
        .expect("the reports");
    assert_eq!(stored[0].resolved_by.as_deref(), Some(mo.id.as_str()));
    moderator.close().await.expect("close the moderator");

    // The broadcaster deletes ann's message: gone from both pages.
    click_action(&broadcaster, ann_msg, "Delete").await;
    for (who, c) in [("viewer", &viewer), ("broadcaster", &broadcaster)] {
        until(
            c,
            &format!("the {who} dropping message {ann_msg}"),
            &format!(
                "return window.lumen.chat.some((f) => f.type === 'deleted' && f.id === {ann_msg})
                   && !document.querySelector('#chat-log li[data-id=\"{ann_msg}\"]');"
            ),
            CHAT_WITHIN,
        )
        .await;
    }

    // Ann writes again and is timed out from the broadcaster's page; her
    // next message is refused with a countdown.
    say(&viewer, "second try").await;
    let m = wait_message(&broadcaster, "the broadcaster", "second try").await;
    click_action(&broadcaster, m["id"].as_u64().unwrap(), "Time out").await;
    until(
        &viewer,
        "ann's time-out notice",
        "return window.lumen.chat.some((f) => f.type === 'notice');",
        CHAT_WITHIN,
    )
    .await;
    say(&viewer, "am I muted?").await;
    let err = until(
        &viewer,
        "the timed_out error",
        "return window.lumen.chat.find((f) => f.type === 'error') ?? false;",
        CHAT_WITHIN,
    )
    .await;
    assert_eq!(err["code"], "timed_out", "{err}");
    assert!(err["retry_after"].as_u64().unwrap_or(0) > 500, "{err}");
    let shown = until(
        &viewer,
        "the countdown",
        "const e = document.getElementById('chat-error');
         return !e.hidden && /wait \\d+ s/.test(e.textContent) &&
           { text: e.textContent, send: document.getElementById('chat-send').disabled };",
        CHAT_WITHIN,
    )
    .await;
    assert!(
        shown["text"]
            .as_str()
            .unwrap_or("")
            .contains(err["message"].as_str().unwrap_or("?")),
        "the error's message is not shown: {shown} for {err}"
    );
    assert_eq!(
        shown["send"],
        json!(true),
        "send is enabled during the countdown: {shown}"
    );

    // Video kept playing all along.
    let after = playback(&viewer).await;
    assert!(
        after.1 > before.1 && after.0 > before.0,
        "the viewer's video stalled during the chat: (frames, time) {before:?} then {after:?}"
    );
    let l = lumen(&viewer).await;
    assert_eq!(l["state"], "live", "{l}");

    anon.close().await.expect("close the anonymous viewer");
    viewer.close().await.expect("close the viewer");
    broadcaster.close().await.expect("close the broadcaster");
    drop(chrome);
    drop(server);
}

const HAS_HISTORY: &str = "return window.lumen.chatOpen === true && \
     (window.lumen.chat || []).some((f) => f.type === 'history');";

/// Types `text` into the page's chat box and clicks Send, once the button is enabled.
async fn say(c: &Client, text: &str) {
    until(
        c,
        "the Send button enabled",
        "return !document.getElementById('chat-send').disabled;",
        CHAT_WITHIN,
    )
    .await;
    let field = c
        .find(Locator::Id("chat-input"))
        .await
        .expect("find the chat box");
    field.send_keys(text).await.expect("type into the chat box");
    c.find(Locator::Id("chat-send"))
        .await
        .expect("find the Send button")
        .click()
        .await
        .expect("click Send");
}

/// Waits for a `message` frame with `text` in `window.lumen.chat`, and returns it.
async fn wait_message(c: &Client, who: &str, text: &str) -> Value {
    let script = format!(
        "return window.lumen.chat.find((f) => f.type === 'message' && f.text === {}) ?? false;",
        json!(text)
    );
    until(
        c,
        &format!("{who} receiving {text:?}"),
        &script,
        CHAT_WITHIN,
    )
    .await
}

/// What the chat log shows of message `id`.
async fn shown_message(c: &Client, id: u64) -> Value {
    let v = c
        .execute(
            "const li = document.querySelector(`#chat-log li[data-id=\"${arguments[0]}\"]`);
             if (!li) return null;
             return { name: li.querySelector('.chat-name')?.textContent,
                      role: li.querySelector('.chat-role')?.textContent ?? null,
                      text: li.querySelector('.chat-text')?.textContent,
                      bold: li.querySelectorAll('b').length,
                      actions: [...li.querySelectorAll('.chat-actions button')].map((b) => b.textContent) };",
            vec![json!(id)],
        )
        .await
        .expect("read a chat message");
    assert!(!v.is_null(), "message {id} is not in the chat log");
    v
}

/// Hovers message `id` and clicks its `label` action.
async fn click_action(c: &Client, id: u64, label: &str) {
    let li = c
        .find(Locator::Css(&format!("#chat-log li[data-id=\"{id}\"]")))
        .await
        .expect("find the message");
    // Hover (the actions show on hover) then click the button.
    c.execute(
        "arguments[0].scrollIntoView({block: 'center'});",
        vec![serde_json::to_value(&li).expect("element as JSON")],
    )
    .await
    .expect("scroll to the message");
    let hover = MouseActions::new("mouse".to_string()).then(PointerAction::MoveToElement {
        element: li.clone(),
        duration: None,
        x: 0.0,
        y: 0.0,
    });
    c.perform_actions(hover).await.expect("hover the message");
    let buttons = li
        .find_all(Locator::Css(".chat-actions button"))
        .await
        .expect("the message's buttons");
    for b in buttons {
        if b.text().await.expect("button text") == label {
            b.click().await.expect("click the action");
            return;
        }
    }
    panic!("message {id} has no {label:?} button");
}

/// (decoded frames, currentTime) once the viewer plays.
async fn wait_playing(c: &Client) -> (u64, f64) {
    let deadline = Instant::now() + LIVE_WITHIN;
    loop {
        let p = playback(c).await;
        if p.0 > 0 && p.1 > 0.0 {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "the viewer decoded no frame within {LIVE_WITHIN:?}: {p:?}; {}",
            lumen(c).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn playback(c: &Client) -> (u64, f64) {
    let v = c
        .execute(
            "const v = document.getElementById('video');
             return { frames: v.getVideoPlaybackQuality().totalVideoFrames, time: v.currentTime };",
            vec![],
        )
        .await
        .expect("read the video element");
    (
        v["frames"].as_u64().unwrap_or(0),
        v["time"].as_f64().unwrap_or(0.0),
    )
}

async fn lumen(c: &Client) -> Value {
    c.execute("return window.lumen ?? null;", vec![])
        .await
        .expect("read window.lumen")
}

/// Polls `script` until it returns something truthy, and returns that.
async fn until(c: &Client, what: &str, script: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = c.execute(script, vec![]).await.expect("run a script");
        let truthy = match &v {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: not within {within:?}; window.lumen = {}",
                lumen(c).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Opens the broadcast page at `url`, types `token` into its stream key
/// field and clicks Go Live (as browser.rs does).
async fn go_live(c: &Client, url: &str, token: &str) {
    c.goto(url).await.expect("open the broadcast page");
    let field = c
        .find(Locator::Id("token"))
        .await
        .expect("find the stream key field");
    field.clear().await.expect("clear the stream key field");
    field.send_keys(token).await.expect("type the token");
    c.find(Locator::Id("golive"))
        .await
        .expect("find the Go Live button")
        .click()
        .await
        .expect("click Go Live");
}
