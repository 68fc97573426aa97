//! The relay tree with real servers, real sockets and a real Redis: three
//! lumen servers share a directory; a stream published on one reaches
//! viewers on the others through relay links (str0m to str0m, DTLS-SRTP),
//! and a relay that stops is routed around without its viewers
//! reconnecting.

use std::time::{Duration, Instant};

use lumen_cascade::testing::TempRedis;
use lumen_cascade::{Directory, NodeId, RedisConfig, RedisDirectory};
use lumen_tools::client::{PublishOptions, Publisher, WatchOptions, Watcher};

use crate::revocation::{base64_url_decode, wait_live};
use crate::support::{TestServer, start_server_with};

/// A cluster node on loopback: its own data dir, the cluster's signing
/// key (so node tokens verify on every node), this region and name.
pub(crate) async fn node(
    redis: &TempRedis,
    key: Option<&[u8]>,
    name: &str,
    region: &str,
) -> TestServer {
    let (url, name, region) = (redis.url(), name.to_string(), region.to_string());
    start_server_with(move |c| {
        c.cluster.redis_url = Some(url);
        c.cluster.node_id = Some(name);
        c.cluster.region = Some(region);
        if let Some(key) = key {
            install_key(&c.data_dir, key);
        }
    })
    .await
}

/// Three nodes sharing the origin's signing key: `origin` in eu, `relay`
/// and `edge` in us (so the edge feeds from the relay once the relay
/// carries the stream).
pub(crate) async fn tree(redis: &TempRedis) -> (TestServer, TestServer, TestServer) {
    let origin = node(redis, None, "origin", "eu").await;
    let key = std::fs::read(origin.data_dir().join(lumen_signaling::auth::KEY_FILE))
        .expect("the origin's signing key");
    let relay = node(redis, Some(&key), "relay", "us").await;
    let edge = node(redis, Some(&key), "edge", "us").await;
    (origin, relay, edge)
}

/// Puts the cluster's signing key in a node's data dir (mode 600), so the
/// node tokens and stream tokens of one node verify on every node.
pub(crate) fn install_key(data_dir: &std::path::Path, key: &[u8]) {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let path = data_dir.join(lumen_signaling::auth::KEY_FILE);
    std::fs::write(&path, key).expect("the shared key is written");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("key mode");
}

/// Starts a viewer of `stream` on `base`, retrying while the stream is not
/// known there yet (the origin's claim reaches the directory a moment
/// after the publisher connects).
pub(crate) async fn watch(base: &str, stream: &str) -> Watcher {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match Watcher::start(WatchOptions {
            url: format!("{base}/whep/{stream}"),
            token: None,
            layer: None,
            chat: false,
        })
        .await
        {
            Ok(w) => return w,
            Err(e) if Instant::now() < deadline => {
                eprintln!("viewer not admitted yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no viewer on {base}: {e}"),
        }
    }
}

/// Waits until `w` decodes pictures; panics after `limit`.
pub(crate) async fn decoding(w: &Watcher, what: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while w.stats().frames_decoded == 0 {
        assert!(
            Instant::now() < deadline,
            "{what} decoded nothing: {:?}",
            w.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Samples a viewer's decoded pictures for `d`; answers the longest time
/// in which none was decoded.
pub(crate) async fn longest_freeze(w: &Watcher, d: Duration) -> Duration {
    let end = Instant::now() + d;
    let mut last = w.stats().frames_decoded;
    let mut last_change = Instant::now();
    let mut longest = Duration::ZERO;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let n = w.stats().frames_decoded;
        if n != last {
            longest = longest.max(last_change.elapsed());
            last = n;
            last_change = Instant::now();
        }
    }
    longest.max(last_change.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_travels_down_the_tree_and_heals_around_a_stopped_relay() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let Some(redis) = TempRedis::start("a_stream_travels_down_the_tree") else {
        return;
    };
    let (origin, relay, edge) = tree(&redis).await;

    let publisher = Publisher::start(small(
        format!("{}/whip/tree", origin.http_url()),
        origin.publish_token(),
        500_000,
    ))
    .await
    .expect("publish on the origin");

    // The first node with a viewer feeds from the origin; the edge, in the
    // relay's region, from the relay.
    let on_relay = watch(&relay.http_url(), "tree").await;
    decoding(&on_relay, "the relay's viewer", Duration::from_secs(10)).await;
    let on_edge = watch(&edge.http_url(), "tree").await;
    decoding(&on_edge, "the edge's viewer", Duration::from_secs(10)).await;

    let dir = RedisDirectory::new(RedisConfig::new(redis.url())).expect("directory");
    let carriers = dir.carriers("tree").await.expect("carriers");
    let of = |n: &str| {
        carriers
            .iter()
            .find(|c| c.node.as_str() == n)
            .unwrap_or_else(|| panic!("{n} does not carry the stream: {carriers:?}"))
    };
    let id = |n: &str| NodeId::new(n).expect("name");
    assert_eq!(of("origin").depth, 0, "{carriers:?}");
    assert_eq!(of("relay").parent, Some(id("origin")), "{carriers:?}");
    assert_eq!(of("edge").parent, Some(id("relay")), "{carriers:?}");
    assert_eq!(of("edge").depth, 2, "{carriers:?}");

    // Two hops lose nothing: every frame arrives, in order.
    let before = on_edge.stats();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = on_edge.stats();
    assert!(
        after.frames_decoded - before.frames_decoded >= 60,
        "the edge's viewer decoded {} frames in 3 s: {after:?}",
        after.frames_decoded - before.frames_decoded
    );
    assert_eq!(
        after.frame_number_gaps, 0,
        "frames lost on the way: {after:?}"
    );
    assert_eq!(after.out_of_order, 0, "{after:?}");

    // The relay stops: the edge re-attaches to the origin, its viewer keeps
    // its session and sees a freeze of under 3 s.
    let _ = on_relay.stop().await;
    let stopped = tokio::spawn(relay.stop());
    let freeze = longest_freeze(&on_edge, Duration::from_secs(6)).await;
    stopped.await.expect("the relay stopped");
    let healed = on_edge.stats();
    assert!(
        freeze < Duration::from_secs(3),
        "the edge's viewer froze {freeze:?}: {healed:?}"
    );
    let carriers = dir.carriers("tree").await.expect("carriers");
    assert!(
        carriers
            .iter()
            .any(|c| c.node.as_str() == "edge" && c.parent == Some(id("origin"))),
        "the edge did not re-attach to the origin: {carriers:?}"
    );
    // Media flows on from the new parent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = on_edge.stats();
    assert!(
        later.frames_decoded >= healed.frames_decoded + 30,
        "the edge's viewer decodes no more after healing: {later:?}"
    );
    let (status, end) = on_edge.stop().await.expect("stop the edge's viewer");
    // Its one session: the DELETE of the URL it was given at the start.
    assert_eq!(status, 200, "{end:?}");

    let _ = publisher.stop().await;
    edge.stop().await;
    origin.stop().await;
}

/// A 320×180, 30 fps test-pattern publisher of `url` at `bitrate_bps`:
/// light enough for several nodes on one machine.
pub(crate) fn small(url: String, token: String, bitrate_bps: u32) -> PublishOptions {
    PublishOptions {
        url,
        token: Some(token),
        width: 320,
        height: 180,
        fps: 30,
        bitrate_bps,
        ..Default::default()
    }
}

/// Opens a viewer session's WHEP event stream for the `names` events and
/// answers the response to read it from.
pub(crate) async fn session_events(session_url: &str, names: &[&str]) -> reqwest::Response {
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{session_url}/sse"))
        .header("content-type", "application/json")
        .body(serde_json::to_string(names).expect("json"))
        .send()
        .await
        .expect("event stream request");
    assert_eq!(res.status(), 201, "event stream not created");
    let loc = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_string();
    let url = reqwest::Url::parse(session_url)
        .and_then(|u| u.join(&loc))
        .expect("event stream URL");
    client.get(url).send().await.expect("event stream")
}

/// A WHEP event stream read event by event.
pub(crate) struct Events {
    res: reqwest::Response,
    buf: String,
}

impl Events {
    pub(crate) async fn open(session_url: &str, names: &[&str]) -> Events {
        Events {
            res: session_events(session_url, names).await,
            buf: String::new(),
        }
    }

    /// Skips to the next `name` event and consumes it; `false` when none
    /// came within `limit`.
    pub(crate) async fn until(&mut self, name: &str, limit: Duration) -> bool {
        self.next(name, limit).await.is_some()
    }

    /// Skips to the next `name` event and gives its `data`; `None` when
    /// none came within `limit`.
    pub(crate) async fn next(&mut self, name: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                if event.lines().any(|l| l == format!("event: {name}")) {
                    let data = event.lines().filter_map(|l| l.strip_prefix("data:"));
                    return Some(data.map(str::trim).collect::<Vec<_>>().join("\n"));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.res.chunk()).await {
                Ok(Ok(Some(c))) => self.buf.push_str(&String::from_utf8_lossy(&c)),
                _ => return None,
            }
        }
    }
}

/// The origin dies with its broadcaster: viewers on an edge are told the
/// stream went `inactive` and keep their sessions; the broadcaster
/// publishes again to another node, which becomes the origin; the edge
/// attaches to it and the same viewer sessions get `active` and pictures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_origin_dies_a_publish_to_another_node_reforms_the_tree_for_the_same_viewers() {
    let Some(redis) = TempRedis::start("a_publish_to_another_node_reforms_the_tree") else {
        return;
    };
    let origin = node(&redis, None, "origin", "eu").await;
    let key = std::fs::read(origin.data_dir().join(lumen_signaling::auth::KEY_FILE))
        .expect("the origin's signing key");
    let edge = node(&redis, Some(&key), "edge", "us").await;
    let backup = node(&redis, Some(&key), "backup", "eu").await;
    let options = |base: &str, token: String| small(format!("{base}/whip/phoenix"), token, 400_000);
    let first = Publisher::start(options(&origin.http_url(), origin.publish_token()))
        .await
        .expect("publish on the origin");
    let viewer = watch(&edge.http_url(), "phoenix").await;
    decoding(&viewer, "the edge's viewer", Duration::from_secs(10)).await;
    let session = viewer.session_url().to_string();
    let mut events = Events::open(&session, &["active", "inactive"]).await;
    // A stream that is live when the event stream opens says so first.
    assert!(events.until("active", Duration::from_secs(5)).await);

    // The origin node goes, and its broadcaster with it.
    origin.stop().await;
    let _ = first.stop().await;
    assert!(
        events.until("inactive", Duration::from_secs(10)).await,
        "the edge's viewer was not told the stream went inactive"
    );
    let stalled = viewer.stats();

    // The broadcaster comes back on another node: it is the origin now,
    // and the edge's viewer gets the stream from it on the same session.
    let second = Publisher::start(options(&backup.http_url(), backup.publish_token()))
        .await
        .expect("publish on another node");
    assert!(
        events.until("active", Duration::from_secs(15)).await,
        "the edge's viewer was not told the stream is active again"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while viewer.stats().frames_decoded < stalled.frames_decoded + 30 {
        assert!(
            Instant::now() < deadline,
            "no pictures after the publish elsewhere: {:?}",
            viewer.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(viewer.session_url(), session, "the viewer reconnected");
    let dir = RedisDirectory::new(RedisConfig::new(redis.url())).expect("directory");
    assert_eq!(
        dir.origin("phoenix").await.expect("origin"),
        Some(NodeId::new("backup").expect("name"))
    );
    let carriers = dir.carriers("phoenix").await.expect("carriers");
    assert!(
        carriers.iter().any(|c| c.node.as_str() == "edge"
            && c.parent.as_ref().map(NodeId::as_str) == Some("backup")),
        "the edge does not carry the stream from the new origin: {carriers:?}"
    );
    let (status, _) = viewer.stop().await.expect("stop the viewer");
    // Still the session it was given at the start.
    assert_eq!(status, 200);
    let _ = second.stop().await;
    edge.stop().await;
    backup.stop().await;
}

/// The nodes of a cluster share the accounts store and the signing key: a
/// token minted on one node opens a session on another, and revoking it
/// on either ends that session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_node_ends_its_session_on_another() {
    let Some(pg) = lumen_signaling::auth::testing::TempPostgres::start(
        "a_token_revoked_on_one_node_ends_its_session_on_another",
    ) else {
        return;
    };
    let url = pg.url();
    let a = start_server_with({
        let url = url.clone();
        move |c| c.auth.database_url = Some(url)
    })
    .await;
    let key = std::fs::read(a.data_dir().join(lumen_signaling::auth::KEY_FILE)).expect("key");
    let b = start_server_with(move |c| {
        c.auth.database_url = Some(url);
        install_key(&c.data_dir, &key);
    })
    .await;

    let scopes = lumen_signaling::auth::Scopes::parse("publish:shared").expect("scopes");
    let token = b
        .auth()
        .mint("broadcaster", &scopes, Duration::from_secs(600))
        .expect("minted on b");
    let publisher = Publisher::start(small(
        format!("{}/whip/shared", a.http_url()),
        token.clone(),
        300_000,
    ))
    .await
    .expect("a token minted on b publishes on a");
    assert!(
        wait_live(&a.http_url(), "shared", true, Duration::from_secs(10))
            .await
            .is_some(),
        "the stream never went live on a"
    );

    // Revoked through b: a's follower of the shared revocation feed ends
    // the session.
    let payload = token.split('.').nth(1).expect("payload");
    let claims: serde_json::Value =
        serde_json::from_slice(&base64_url_decode(payload).expect("base64url")).expect("json");
    let jti = claims["jti"].as_str().expect("jti");
    b.auth().revoke_token(jti).await.expect("revoked on b");
    let took = wait_live(&a.http_url(), "shared", false, Duration::from_secs(10))
        .await
        .expect("the revoked token's session on a never ended");
    eprintln!("revoked on b: the session on a ended {took:?} later");
    let _ = publisher.stop().await;
    a.stop().await;
    b.stop().await;
}
