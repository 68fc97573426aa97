//! The relay tree as operators run it: five `lumen serve` processes in
//! three regions on loopback, one Redis. A stream published to one node is
//! watched on the farthest edge; a relay killed with SIGKILL is routed
//! around without its edge's viewer reconnecting; a node stopped with
//! SIGTERM drains, sending its viewers to a sibling through the WHEP
//! `reconnect` event.
//!
//! The regions are apart: the kernel here has no `netem`, so each node
//! outside the origin's region sits behind lumen's UDP impairment proxy
//! (`lumen_tools::impair`) with a one-way delay (30 ms in `us`, 60 ms in
//! `ap`), announced as its media address (`--public-port`). Every packet
//! to or from such a node's media socket, relay links and its viewers'
//! sessions alike, takes that much longer each way.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lumen_cascade::testing::TempRedis;
use lumen_cascade::{Directory, NodeId, RedisConfig, RedisDirectory};
use lumen_tools::client::Publisher;
use lumen_tools::impair::{ImpairConfig, ImpairProxy};

use crate::cluster::{Events, decoding, install_key, longest_freeze, session_events, small, watch};

/// One `lumen serve` process.
struct NodeProcess {
    name: String,
    url: String,
    dir: PathBuf,
    child: Option<Child>,
    /// In front of its media socket, when its region is far away.
    _far: Option<ImpairProxy>,
}

/// A free loopback port (of the given kind) at the moment of asking.
fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free port")
            .port()
    } else {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    }
}

impl NodeProcess {
    /// Starts `lumen serve` as node `name` in `region`; with `key`, the
    /// cluster's signing key is put in its data dir first.
    fn start(redis: &TempRedis, name: &str, region: &str, key: Option<&[u8]>) -> NodeProcess {
        NodeProcess::start_far(redis, name, region, key, None)
    }

    /// [`NodeProcess::start`] with `delay` added each way to every packet
    /// of its media socket (by an impairment proxy it announces).
    fn start_far(
        redis: &TempRedis,
        name: &str,
        region: &str,
        key: Option<&[u8]>,
        delay: Option<Duration>,
    ) -> NodeProcess {
        let dir = std::env::temp_dir().join(format!(
            "lumen-cluster-{}-{name}-{:x}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("data dir");
        if let Some(key) = key {
            install_key(&dir, key);
        }
        let port = free_port(false);
        let url = format!("http://127.0.0.1:{port}");
        let mut far = None;
        let mut media = vec!["--rtc-addr".to_string(), "127.0.0.1:0".to_string()];
        if let Some(delay) = delay {
            let rtc = free_port(true);
            let listen = std::net::UdpSocket::bind("127.0.0.1:0").expect("the proxy's socket");
            let public = listen.local_addr().expect("addr").port();
            let proxy = ImpairProxy::start(
                listen,
                format!("127.0.0.1:{rtc}").parse().expect("addr"),
                ImpairConfig {
                    delay,
                    ..ImpairConfig::default()
                },
            )
            .expect("the proxy starts");
            media = [
                "--rtc-addr",
                &format!("127.0.0.1:{rtc}"),
                "--public-ip",
                "127.0.0.1",
                "--public-port",
                &public.to_string(),
            ]
            .map(String::from)
            .to_vec();
            far = Some(proxy);
        }
        let child = Command::new(env!("CARGO_BIN_EXE_lumen"))
            .arg("serve")
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .args(&media)
            .args(["--workers", "1"])
            .args(["--redis-url", &redis.url()])
            .args(["--node-id", name, "--region", region])
            .args(["--public-url", &url])
            .args(["--drain-timeout", "10"])
            .arg("--data-dir")
            .arg(&dir)
            .env("LUMEN_RECORDING", "off")
            .env("LUMEN_SESSIONS_PER_CLIENT", "0")
            .env("LUMEN_SESSION_RATE", "0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.with_extension("log")).expect("log file"),
            ))
            .spawn()
            .expect("lumen serve starts");
        NodeProcess {
            name: name.to_string(),
            url,
            dir,
            child: Some(child),
            _far: far,
        }
    }

    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.url)).await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} never became ready; its log: {}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Waits (bounded) for the process to exit; answers whether it did.
    async fn exited_within(&mut self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && c.try_wait().ok().flatten().is_some()
            {
                self.child = None;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(self.dir.with_extension("log"));
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

fn key_of(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(lumen_signaling::auth::KEY_FILE)).expect("the first node's signing key")
}

/// `lumen token mint` against the first node's data dir.
fn publish_token(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lumen"))
        .args(["token", "mint", "--scope", "publish:*", "--ttl", "1h"])
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("lumen token mint runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(str::trim)
        .find(|l| l.matches('.').count() == 2)
        .expect("a JWT on stdout")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_in_three_regions_carry_heal_and_drain() {
    let Some(redis) = TempRedis::start("five_nodes_in_three_regions") else {
        return;
    };
    let origin = NodeProcess::start(&redis, "origin", "eu", None);
    origin.ready().await;
    let key = key_of(&origin.dir);
    let (us, ap) = (Duration::from_millis(30), Duration::from_millis(60));
    let far = |name: &str, region: &str, delay: Duration| {
        NodeProcess::start_far(&redis, name, region, Some(&key), Some(delay))
    };
    let relay_us = far("relay-us", "us", us);
    let edge_us = far("edge-us", "us", us);
    let relay_ap = far("relay-ap", "ap", ap);
    let mut edge_ap = far("edge-ap", "ap", ap);
    for n in [&relay_us, &edge_us, &relay_ap, &edge_ap] {
        n.ready().await;
    }

    let publisher = Publisher::start(small(
        format!("{}/whip/show", origin.url),
        publish_token(&origin.dir),
        400_000,
    ))
    .await
    .expect("publish on the origin");

    // Each region's relay first, then its edge, which feeds from it.
    let on_relay_us = watch(&relay_us.url, "show").await;
    decoding(&on_relay_us, "relay-us's viewer", Duration::from_secs(15)).await;
    let on_edge_us = watch(&edge_us.url, "show").await;
    decoding(&on_edge_us, "edge-us's viewer", Duration::from_secs(15)).await;
    let on_relay_ap = watch(&relay_ap.url, "show").await;
    decoding(&on_relay_ap, "relay-ap's viewer", Duration::from_secs(15)).await;
    let on_edge_ap = watch(&edge_ap.url, "show").await;
    decoding(&on_edge_ap, "edge-ap's viewer", Duration::from_secs(15)).await;
    // The regions' distance shows in each viewer's latency (publisher's
    // stamp to picture, same host): relay-us's viewer is one delayed hop
    // and its own delayed path from the origin, edge-ap's two hops and
    // its path. A lower bound only; a loaded machine adds more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let latency = |w: &lumen_tools::client::Watcher| w.stats().latency_avg.unwrap_or_default();
    let (near, farthest) = (latency(&on_relay_us), latency(&on_edge_ap));
    eprintln!(
        "latency from the origin: relay-us's viewer {near:?}, edge-us's {:?}, relay-ap's {:?}, edge-ap's {farthest:?}",
        latency(&on_edge_us),
        latency(&on_relay_ap)
    );
    assert!(near >= 2 * us, "relay-us's viewer: {near:?}");
    assert!(farthest >= 3 * ap, "edge-ap's viewer: {farthest:?}");

    // A publisher sent to another node is redirected to the origin (by
    // now the origin's claim is in the directory: viewers are watching).
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("{}/whip/show", edge_us.url))
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .expect("WHIP POST");
    assert_eq!(res.status(), 307);
    assert_eq!(
        res.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(format!("{}/whip/show", origin.url).as_str())
    );
    // A viewer the load balancer says is in Asia is sent to a node there.
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("{}/whep/show", origin.url))
        .header("content-type", "application/sdp")
        .header("x-lumen-region", "ap")
        .body("v=0\r\n")
        .send()
        .await
        .expect("WHEP POST");
    assert_eq!(res.status(), 307);
    let to = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        [&relay_ap.url, &edge_ap.url]
            .iter()
            .any(|u| to == format!("{u}/whep/show")),
        "{to}"
    );

    let dir = RedisDirectory::new(RedisConfig::new(redis.url())).expect("directory");
    let id = |n: &str| NodeId::new(n).expect("name");
    let carriers = dir.carriers("show").await.expect("carriers");
    let parent_of = |n: &str| {
        carriers
            .iter()
            .find(|c| c.node.as_str() == n)
            .and_then(|c| c.parent.clone())
    };
    assert_eq!(parent_of("relay-us"), Some(id("origin")), "{carriers:?}");
    assert_eq!(parent_of("edge-us"), Some(id("relay-us")), "{carriers:?}");
    assert_eq!(parent_of("edge-ap"), Some(id("relay-ap")), "{carriers:?}");

    // SIGKILL the US relay: its edge re-parents, the viewer there keeps
    // its session and freezes for under 3 s.
    let session_before = on_edge_us.session_url().to_string();
    relay_us.signal("-KILL");
    let freeze = longest_freeze(&on_edge_us, Duration::from_secs(8)).await;
    assert!(
        freeze < Duration::from_secs(3),
        "edge-us's viewer froze {freeze:?}: {:?}\nedge-us log:\n{}",
        on_edge_us.stats(),
        edge_us.log()
    );
    assert_eq!(on_edge_us.session_url(), session_before);
    let carriers = dir.carriers("show").await.expect("carriers");
    assert!(
        carriers
            .iter()
            .any(|c| c.node.as_str() == "edge-us" && c.parent.is_some()),
        "{carriers:?}"
    );
    drop(on_relay_us);

    // SIGTERM the AP edge: its viewer is told to reconnect to the other AP
    // node, and the process exits once the viewer has gone.
    let mut events = session_events(on_edge_ap.session_url(), &["reconnect"]).await;
    edge_ap.signal("-TERM");
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("event: reconnect") || !text.contains("\n\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.chunk()).await {
            Ok(Ok(Some(c))) => text.push_str(&String::from_utf8_lossy(&c)),
            _ => break,
        }
    }
    assert!(
        text.contains("event: reconnect"),
        "no reconnect event: {text:?}"
    );
    assert!(
        text.contains(&format!("{}/whep/show", relay_ap.url)),
        "the viewer was not sent to relay-ap: {text:?}"
    );
    // The viewer goes (as a player following the event would).
    let _ = on_edge_ap.stop().await;
    assert!(
        edge_ap.exited_within(Duration::from_secs(15)).await,
        "the drained node did not exit; its log:\n{}",
        edge_ap.log()
    );

    let _ = on_edge_us.stop().await;
    let _ = on_relay_ap.stop().await;
    let _ = publisher.stop().await;
    drop(redis);
}

/// The origin is killed (SIGKILL: its directory entries stay until they
/// expire) and the broadcaster publishes again at once to another node:
/// that node is not redirected to the dead origin, becomes the origin
/// once the old entries expire, and the edge's viewer, told `inactive`
/// meanwhile, gets `active` and pictures on the session it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_origin_is_replaced_by_a_publish_elsewhere_and_the_edge_viewer_stays() {
    let Some(redis) = TempRedis::start("a_killed_origin_is_replaced") else {
        return;
    };
    let origin = NodeProcess::start(&redis, "origin", "eu", None);
    origin.ready().await;
    let key = key_of(&origin.dir);
    let backup = NodeProcess::start(&redis, "backup", "eu", Some(&key));
    let edge = NodeProcess::start(&redis, "edge", "us", Some(&key));
    backup.ready().await;
    edge.ready().await;
    let token = publish_token(&origin.dir);
    let options = |base: &str| small(format!("{base}/whip/relive"), token.clone(), 400_000);
    let first = Publisher::start(options(&origin.url))
        .await
        .expect("publish on the origin");
    let viewer = watch(&edge.url, "relive").await;
    decoding(&viewer, "the edge's viewer", Duration::from_secs(15)).await;
    let session = viewer.session_url().to_string();
    let mut events = Events::open(&session, &["active", "inactive"]).await;
    assert!(events.until("active", Duration::from_secs(5)).await);

    origin.signal("-KILL");
    let killed = Instant::now();
    let _ = first.stop().await;
    assert!(
        events.until("inactive", Duration::from_secs(10)).await,
        "the edge's viewer was not told the stream went inactive; edge log:\n{}",
        edge.log()
    );
    let stalled = viewer.stats();

    let second = Publisher::start(options(&backup.url))
        .await
        .expect("a publish to another node is taken there, not sent to the dead origin");
    assert!(
        events.until("active", Duration::from_secs(20)).await,
        "the edge's viewer was not told the stream is active again; backup log:\n{}\nedge log:\n{}",
        backup.log(),
        edge.log()
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
    eprintln!(
        "pictures again {:?} after the origin was killed",
        killed.elapsed()
    );
    assert_eq!(viewer.session_url(), session, "the viewer reconnected");
    let dir = RedisDirectory::new(RedisConfig::new(redis.url())).expect("directory");
    let id = |n: &str| NodeId::new(n).expect("name");
    assert_eq!(
        dir.origin("relive").await.expect("origin"),
        Some(id("backup"))
    );
    let carriers = dir.carriers("relive").await.expect("carriers");
    assert!(
        carriers
            .iter()
            .any(|c| c.node.as_str() == "edge" && c.parent == Some(id("backup"))),
        "the edge does not carry the stream from the new origin: {carriers:?}"
    );
    let (status, _) = viewer.stop().await.expect("stop the viewer");
    assert_eq!(status, 200, "not the session it was given at the start");
    let _ = second.stop().await;
    drop(redis);
}
