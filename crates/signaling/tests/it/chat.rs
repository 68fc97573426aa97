//! Chat end to end over a real server: str0m peers (the publisher, sending
//! audio so the stream is live, and two viewers) open `chat` data channels
//! on their WHIP and WHEP sessions. The broadcaster's message reaches every
//! member; a late viewer gets it as history; an anonymous viewer reads but
//! is refused when it sends; a viewer whose token names a user sends under
//! that user's name. A room whose members all left restarts from the store
//! with its history, and moderators read its audit log over the API. A
//! client that opens its channel with the `deflate-raw` subprotocol gets
//! large messages compressed, the same frames as everyone else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lumen_signaling::auth::{Role, Scopes};
use reqwest::Client;
use serde_json::Value;
use str0m::change::SdpAnswer;
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::support::{Server, header, post_sdp_as};

/// Generous: a condition that holds at all holds long before this.
const WAIT: Duration = Duration::from_secs(30);

/// A str0m peer with a `chat` channel on its own task: frames received
/// come out of `rx`, frames put in `tx` are sent once the channel is open.
struct Peer {
    tx: mpsc::UnboundedSender<String>,
    rx: mpsc::UnboundedReceiver<Value>,
    task: tokio::task::JoinHandle<()>,
    /// The session URL (`Location` of the WHIP or WHEP answer).
    location: String,
    /// Compressed (binary) messages received.
    compressed: Arc<AtomicUsize>,
}

/// How a peer opens its `chat` channel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    /// In band (DCEP), no subprotocol.
    Plain,
    /// Negotiated itself on SCTP stream 0 (`negotiated: true, id: 0`).
    OutOfBand,
    /// In band, asking for compressed messages (`protocol: "deflate-raw"`).
    Deflate,
}

impl Peer {
    async fn start(s: &Server, c: &Client, path: &str, token: Option<&str>) -> Peer {
        Peer::start_with(s, c, path, token, Open::Plain).await
    }

    async fn start_with(
        s: &Server,
        c: &Client,
        path: &str,
        token: Option<&str>,
        open: Open,
    ) -> Peer {
        let publisher = path.starts_with("/whip/");
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
        let local = socket.local_addr().expect("addr");
        let mut rtc = RtcConfig::new().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
        let mut sdp = rtc.sdp_api();
        let dir = if publisher {
            Direction::SendOnly
        } else {
            Direction::RecvOnly
        };
        let audio = sdp.add_media(MediaKind::Audio, dir, None, None, None);
        sdp.add_media(MediaKind::Video, dir, None, None, None);
        let channel = sdp.add_channel_with_config(ChannelConfig {
            label: "chat".to_string(),
            negotiated: (open == Open::OutOfBand).then_some(0),
            protocol: match open {
                Open::Deflate => "deflate-raw".to_string(),
                _ => String::new(),
            },
            ..ChannelConfig::default()
        });
        let (offer, pending) = sdp.apply().expect("an offer");
        let r = match token {
            Some(t) => post_sdp_as(c, &s.url(path), t, offer.to_sdp_string()).await,
            None => crate::support::post_sdp(c, &s.url(path), offer.to_sdp_string()).await,
        };
        assert_eq!(r.status(), 201, "{path}");
        let location = header(&r, "location").to_string();
        let answer = SdpAnswer::from_sdp_string(&r.text().await.expect("answer")).expect("SDP");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        let (tx, out_rx) = mpsc::unbounded_channel();
        let (in_tx, rx) = mpsc::unbounded_channel();
        let compressed = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(drive(
            rtc,
            socket,
            local,
            publisher.then_some(audio),
            channel,
            out_rx,
            (in_tx, compressed.clone()),
        ));
        Peer {
            tx,
            rx,
            task,
            location,
            compressed,
        }
    }

    fn send(&self, frame: &str) {
        self.tx.send(frame.to_string()).expect("the peer runs");
    }

    /// The next frame received of this `type`.
    async fn next(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {kind:?} frame in time"))
                .expect("the peer runs");
            if v["type"] == kind {
                return v;
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn drive(
    mut rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    audio: Option<Mid>,
    channel: ChannelId,
    mut out: mpsc::UnboundedReceiver<String>,
    (received, compressed): (mpsc::UnboundedSender<Value>, Arc<AtomicUsize>),
) {
    let start = Instant::now();
    let mut next_packet = start;
    let mut buf = vec![0u8; 2000];
    let mut open = false;
    let mut queued: Vec<String> = Vec::new();
    loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(Event::ChannelOpen(id, _))) if id == channel => open = true,
                Ok(Output::Event(Event::ChannelData(d))) => {
                    // A binary message is a compressed one (only sent to a
                    // peer that asked).
                    let text = if d.binary {
                        compressed.fetch_add(1, Ordering::Relaxed);
                        lumen_chat::protocol::inflate(&d.data)
                            .expect("a binary message is raw DEFLATE of JSON")
                            .into_bytes()
                    } else {
                        d.data
                    };
                    if let Ok(v) = serde_json::from_slice::<Value>(&text) {
                        // A batch's frames one by one, as a client must.
                        let frames = match v["frames"].as_array() {
                            Some(fs) if v["type"] == "batch" => fs.clone(),
                            _ => vec![v],
                        };
                        for f in frames {
                            let _ = received.send(f);
                        }
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(e) => panic!("the peer failed: {e}"),
            }
        };
        if open && !queued.is_empty() {
            if let Some(mut ch) = rtc.channel(channel) {
                for f in queued.drain(..) {
                    let _ = ch.write(false, f.as_bytes());
                }
            }
            continue;
        }
        let now = Instant::now();
        if let Some(audio) = audio
            && open
            && now >= next_packet
        {
            next_packet = now + Duration::from_millis(20);
            if let Some(w) = rtc.writer(audio) {
                let pt = w
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::Opus)
                    .map(|p| p.pt());
                if let Some(pt) = pt {
                    let t = (now - start).as_millis() as u64 * 48;
                    let time = MediaTime::new(t, Frequency::FORTY_EIGHT_KHZ);
                    let _ = w.write(pt, now, time, vec![0xf8, 0xff, 0xfe]);
                }
            }
            continue;
        }
        let wake = if audio.is_some() && open {
            timeout.min(next_packet)
        } else {
            timeout
        };
        tokio::select! {
            f = out.recv() => match f {
                Some(f) => queued.push(f),
                None => return,
            },
            r = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = r else { return };
                if let Ok(contents) = Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), contents));
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
    }
}

/// Waits until the stream is live (its publisher connected and sending).
async fn live(s: &Server, c: &Client, stream: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = c
            .get(s.url(&format!("/api/streams/{stream}")))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body");
        let v: Value = serde_json::from_str(&text).expect("json");
        if v["live"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "{stream} never went live: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcaster_and_viewers_chat_over_their_sessions() {
    let s = Server::start().await;
    let c = Client::new();
    let token = s.publish_token();
    let mut publisher = Peer::start(&s, &c, "/whip/talk", Some(&token)).await;
    // On joining: history (empty), then the room's state.
    let history = publisher.next("history").await;
    assert_eq!(history["messages"], Value::Array(vec![]));
    publisher.next("state").await;
    live(&s, &c, "talk").await;

    let mut anon = Peer::start(&s, &c, "/whep/talk", None).await;
    anon.next("state").await;
    publisher.send(r#"{"type":"send","text":"welcome, everyone"}"#);
    let got = publisher.next("message").await;
    assert_eq!(got["text"], "welcome, everyone");
    assert_eq!(got["role"], "broadcaster");
    let seen = anon.next("message").await;
    assert_eq!(seen["id"], got["id"]);

    // Anonymous viewers read only: an error to that viewer alone.
    anon.send(r#"{"type":"send","text":"can I talk?"}"#);
    let err = anon.next("error").await;
    assert!(err["code"].is_string(), "{err}");

    // A viewer whose token names a user speaks under the account's name,
    // and joined late, it got the broadcaster's message as history.
    let user = s
        .auth()
        .create_user("vera", "vera's password", Role::Viewer)
        .await
        .expect("user");
    let vt = s
        .auth()
        .mint(
            &user.id,
            &Scopes::parse("chat:talk").expect("scope"),
            Duration::from_secs(600),
        )
        .expect("token");
    // A token for the same user without `chat:` watches and reads only.
    let watch_only = s
        .auth()
        .mint(
            &user.id,
            &Scopes::parse("subscribe:talk").expect("scope"),
            Duration::from_secs(600),
        )
        .expect("token");
    let mut reader = Peer::start(&s, &c, "/whep/talk", Some(&watch_only)).await;
    reader.next("state").await;
    reader.send(r#"{"type":"send","text":"may I?"}"#);
    let refused = reader.next("error").await;
    assert_eq!(refused["code"], "read_only", "{refused}");
    drop(reader);
    let mut vera = Peer::start(&s, &c, "/whep/talk", Some(&vt)).await;
    let history = vera.next("history").await;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["welcome, everyone"]);
    vera.send(r#"{"type":"send","text":"hello from vera"}"#);
    for p in [&mut publisher, &mut anon, &mut vera] {
        let m = p.next("message").await;
        assert_eq!(m["text"], "hello from vera");
        assert_eq!(m["display_name"], "vera");
        assert_eq!(m["role"], "viewer");
    }
    drop((publisher, anon, vera));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_asks_gets_large_messages_compressed_and_the_same_frames() {
    let s = Server::start().await;
    let c = Client::new();
    let token = s.publish_token();
    let mut publisher = Peer::start(&s, &c, "/whip/zip", Some(&token)).await;
    publisher.next("state").await;
    live(&s, &c, "zip").await;
    let sent: Vec<String> = (0..20)
        .map(|i| format!("message number {i} of the broadcast, long enough to matter"))
        .collect();
    for text in &sent {
        publisher.send(&serde_json::json!({"type": "send", "text": text}).to_string());
    }
    for _ in &sent {
        publisher.next("message").await;
    }
    // Late joiners: their history (twenty messages) is one large frame.
    let mut zipped = Peer::start_with(&s, &c, "/whep/zip", None, Open::Deflate).await;
    let mut plain = Peer::start(&s, &c, "/whep/zip", None).await;
    let zh = zipped.next("history").await;
    let ph = plain.next("history").await;
    assert_eq!(zh, ph, "the same history either way");
    let texts: Vec<&str> = zh["messages"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, sent);
    zipped.next("state").await;
    plain.next("state").await;
    assert!(
        zipped.compressed.load(Ordering::Relaxed) >= 1,
        "the history came uncompressed to the client that asked"
    );
    assert_eq!(plain.compressed.load(Ordering::Relaxed), 0);
    // And a short live message still arrives (as text).
    publisher.send(r#"{"type":"send","text":"one more"}"#);
    assert_eq!(zipped.next("message").await["text"], "one more");
    assert_eq!(plain.next("message").await["text"], "one more");
    drop((publisher, zipped, plain));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_may_negotiate_chat_out_of_band_on_stream_zero() {
    let s = Server::start_with(|c| c.chat.out_of_band = true).await;
    let c = Client::new();
    let token = s.publish_token();
    let mut publisher = Peer::start(&s, &c, "/whip/oob", Some(&token)).await;
    publisher.next("state").await;
    live(&s, &c, "oob").await;
    publisher.send(r#"{"type":"send","text":"before"}"#);
    publisher.next("message").await;

    let user = s
        .auth()
        .create_user("olga", "olga's password", Role::Viewer)
        .await
        .expect("user");
    let vt = s
        .auth()
        .mint(
            &user.id,
            &Scopes::parse("chat:oob").expect("scope"),
            Duration::from_secs(600),
        )
        .expect("token");
    let mut olga = Peer::start_with(&s, &c, "/whep/oob", Some(&vt), Open::OutOfBand).await;
    // Joined when the server first hears from the channel.
    olga.send(r#"{"type":"join"}"#);
    let history = olga.next("history").await;
    assert_eq!(texts(&history), ["before"]);
    olga.next("state").await;
    olga.send(r#"{"type":"send","text":"hi from stream 0"}"#);
    for p in [&mut publisher, &mut olga] {
        let m = p.next("message").await;
        assert_eq!(m["text"], "hi from stream 0");
        assert_eq!(m["display_name"], "olga");
    }
    // The in-band publisher is in the room once (lumen's unused stream-0
    // channel on its session never joined): each message arrives once.
    publisher.send(r#"{"type":"send","text":"one"}"#);
    publisher.send(r#"{"type":"send","text":"two"}"#);
    assert_eq!(publisher.next("message").await["text"], "one");
    assert_eq!(publisher.next("message").await["text"], "two");
    for text in ["one", "two"] {
        assert_eq!(olga.next("message").await["text"], text);
    }
    drop((publisher, olga));
    s.stop().await;
}

/// A moderation command through the API, as `token`.
async fn moderate(s: &Server, c: &Client, stream: &str, token: &str, command: &str) -> u16 {
    c.post(s.url(&format!("/api/v1/streams/{stream}/chat/moderate")))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(command.to_string())
        .send()
        .await
        .expect("POST")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderators_act_through_the_api_and_work_the_report_queue() {
    let s = Server::start().await;
    let c = Client::new();
    let token = s.publish_token();
    let mut publisher = Peer::start(&s, &c, "/whip/mod", Some(&token)).await;
    publisher.next("state").await;
    live(&s, &c, "mod").await;
    let user = s
        .auth()
        .create_user("sam", "sam's password", Role::Viewer)
        .await
        .expect("user");
    let chat = |who: &str| {
        s.auth()
            .mint(
                who,
                &Scopes::parse("chat:mod").expect("scope"),
                Duration::from_secs(600),
            )
            .expect("token")
    };
    let mut sam = Peer::start(&s, &c, "/whep/mod", Some(&chat(&user.id))).await;
    sam.next("state").await;
    let mut rex = Peer::start(&s, &c, "/whep/mod", Some(&chat("rex"))).await;
    rex.next("state").await;
    sam.send(r#"{"type":"send","text":"buy cheap stuff"}"#);
    let spam = sam.next("message").await;
    rex.next("message").await;
    rex.send(&format!(
        r#"{{"type":"report","id":{},"reason":"spam"}}"#,
        spam["id"]
    ));

    // The report reaches the queue once the writer stored it.
    let admin = s.token("admin");
    let deadline = Instant::now() + WAIT;
    let queue = loop {
        let r = c
            .get(s.url("/api/v1/chat/reports?open=true"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("GET");
        let v: Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
        if v.as_array().is_some_and(|a| !a.is_empty()) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the report never reached the queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(queue[0]["stream"], "mod");
    assert_eq!(queue[0]["message"]["id"], spam["id"]);

    // Acting on it through the API works on the live room at once.
    let delete = format!(r#"{{"type":"delete","id":{}}}"#, spam["id"]);
    assert_eq!(moderate(&s, &c, "mod", &admin, &delete).await, 204);
    for p in [&mut publisher, &mut sam, &mut rex] {
        assert_eq!(p.next("deleted").await["id"], spam["id"]);
    }
    let ban = format!(r#"{{"type":"ban","user":"{}","reason":"spam"}}"#, user.id);
    assert_eq!(moderate(&s, &c, "mod", &admin, &ban).await, 204);
    sam.send(r#"{"type":"send","text":"again"}"#);
    assert_eq!(sam.next("error").await["code"], "banned");
    // The room's refusals come back as the API's errors.
    let unknown = r#"{"type":"delete","id":999999}"#;
    assert_eq!(moderate(&s, &c, "mod", &admin, unknown).await, 404);
    // A command without its fields is refused before it reaches the room.
    assert_eq!(
        moderate(&s, &c, "mod", &admin, r#"{"type":"slow"}"#).await,
        400
    );
    // A viewer's token is no moderator's.
    assert_eq!(
        moderate(&s, &c, "mod", &chat("rex"), r#"{"type":"clear"}"#).await,
        403
    );

    let id = queue[0]["id"].as_str().expect("report id");
    let r = c
        .post(s.url(&format!("/api/v1/streams/mod/chat/reports/{id}/resolve")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 204);
    drop((publisher, sam, rex));
    s.stop().await;
}

/// Waits until `stream` is not live any more (its publisher left).
async fn gone(s: &Server, c: &Client, stream: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = c
            .get(s.url(&format!("/api/streams/{stream}")))
            .send()
            .await
            .expect("GET");
        let v: Value = serde_json::from_str(&r.text().await.expect("body")).unwrap_or_default();
        if v["live"] != true {
            return;
        }
        assert!(Instant::now() < deadline, "{stream} stayed live: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn texts(history: &Value) -> Vec<&str> {
    history["messages"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_room_restarts_from_the_store() {
    let s = Server::start().await;
    let c = Client::new();
    let token = s.publish_token();
    let mut publisher = Peer::start(&s, &c, "/whip/again", Some(&token)).await;
    publisher.next("state").await;
    live(&s, &c, "again").await;
    publisher.send(r#"{"type":"send","text":"kept"}"#);
    let kept = publisher.next("message").await;
    publisher.send(r#"{"type":"send","text":"oops"}"#);
    let oops = publisher.next("message").await;
    publisher.send(&format!(r#"{{"type":"delete","id":{}}}"#, oops["id"]));
    publisher.next("deleted").await;

    // The moderators' log lists the deletion once the writer stored it.
    let admin = s.token("admin");
    let deadline = Instant::now() + WAIT;
    let audit = loop {
        let r = c
            .get(s.url("/api/v1/streams/again/chat/audit"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200);
        let v: Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
        if v.as_array().is_some_and(|a| !a.is_empty()) {
            break v;
        }
        assert!(Instant::now() < deadline, "the deletion was never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(audit[0]["action"]["kind"], "delete", "{audit}");
    assert_eq!(audit[0]["action"]["message"], oops["id"], "{audit}");
    assert_eq!(audit[0]["actor_role"], "broadcaster", "{audit}");

    // Both were sent during the broadcast (the publisher's session): its
    // replay has the kept one, at its place in the broadcast, and never
    // the deleted one.
    let broadcast = publisher.location.rsplit('/').next().expect("session id");
    let replay = s
        .auth()
        .chat()
        .replay(broadcast, 0, 100)
        .await
        .expect("replay");
    assert_eq!(replay.len(), 1, "{replay:?}");
    assert_eq!(replay[0].message["id"], kept["id"]);
    let (ts, started) = (kept["ts"].as_i64().expect("ts"), replay[0].media_ms);
    assert!(started >= 0 && started <= ts, "{replay:?}");

    // Every member leaves: the room is gone from memory.
    let r = c
        .delete(s.url(&publisher.location))
        .bearer_auth(&token)
        .send()
        .await
        .expect("DELETE");
    assert!(r.status().is_success(), "{}", r.status());
    drop(publisher);
    gone(&s, &c, "again").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The next members get the stored history, without the deleted
    // message, and ids go on after the stored ones.
    let stored = s.auth().chat().history("again", 50).await.expect("store");
    assert_eq!(stored.len(), 1);
    let mut publisher = Peer::start(&s, &c, "/whip/again", Some(&token)).await;
    assert_eq!(texts(&publisher.next("history").await), ["kept"]);
    live(&s, &c, "again").await;
    let mut viewer = Peer::start(&s, &c, "/whep/again", None).await;
    let history = viewer.next("history").await;
    assert_eq!(texts(&history), ["kept"]);
    assert_eq!(history["messages"][0]["id"], kept["id"]);
    publisher.send(r#"{"type":"send","text":"back again"}"#);
    let m = viewer.next("message").await;
    assert_eq!(m["text"], "back again");
    assert!(m["id"].as_u64() > oops["id"].as_u64(), "{m}");
    drop((publisher, viewer));
    s.stop().await;
}
