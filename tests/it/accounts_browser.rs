//! The account pages end to end in headless Chromium, on a fresh server: the
//! first admin sets lumen up from the one-time setup URL, logs out and in,
//! creates a stream and a key on the dashboard, and goes live from the
//! broadcast page with the session (no key typed); an anonymous browser
//! watches. The owner makes the stream private: the anonymous viewer's
//! reload is refused with the private-stream message, and a share link
//! minted on the dashboard plays.
//!
//! Every wait is for a condition, bounded generously for a loaded two-core
//! machine; none is a performance assertion.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, Locator};
use serde_json::{Value, json};

use crate::chrome::ChromeDriver;

const WITHIN: Duration = Duration::from_secs(20);
const ADMIN: &str = "first-admin";
const PASSWORD: &str = "a long enough password";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_setup_dashboard_go_live_private_and_share() {
    let Some(chrome) = ChromeDriver::start().await else {
        return;
    };
    let server = FreshServer::start().await;
    let base = server.url();
    let stream = format!("mine-{}", std::process::id());
    let setup_url = server
        .running()
        .setup_url()
        .await
        .expect("read the setup code")
        .expect("a fresh server wants its first admin");

    // First run: the setup page creates the admin and logs them in.
    let owner = chrome.new_session().await;
    owner.goto(&setup_url).await.expect("open the setup URL");
    until(
        &owner,
        "the setup form",
        "return window.lumen?.state === 'ready';",
    )
    .await;
    fill(&owner, "#name", ADMIN).await;
    fill(&owner, "#password", PASSWORD).await;
    fill(&owner, "#password2", PASSWORD).await;
    click(&owner, "#submit").await;
    wait_path(&owner, "/dashboard").await;
    let role = until(
        &owner,
        "the dashboard after setup",
        "return window.lumen?.state === 'ready' && window.lumen.user?.role;",
    )
    .await;
    assert_eq!(role, json!("admin"));
    // Set up once: the page says so.
    owner
        .goto(&format!("{base}/setup"))
        .await
        .expect("open /setup again");
    until(
        &owner,
        "the set-up notice",
        "return window.lumen?.state === 'done';",
    )
    .await;

    // Log out from the nav, then log in: a wrong password shows the
    // server's reason, the right one leads back to the dashboard.
    owner
        .goto(&format!("{base}/dashboard"))
        .await
        .expect("open the dashboard");
    until(
        &owner,
        "the dashboard",
        "return window.lumen?.state === 'ready';",
    )
    .await;
    click(&owner, "#nav-logout").await;
    wait_path(&owner, "/login").await;
    until(
        &owner,
        "the login page, logged out",
        "return !document.getElementById('nav-login').hidden
             && document.getElementById('nav-logout').hidden;",
    )
    .await;
    fill(&owner, "#name", ADMIN).await;
    fill(&owner, "#password", "not the password").await;
    click(&owner, "#submit").await;
    let refused = until(
        &owner,
        "the refusal",
        "const e = document.getElementById('error'); return !e.hidden && e.textContent;",
    )
    .await;
    assert!(
        refused.as_str().is_some_and(|t| t.contains("wrong")),
        "the login page did not show the server's reason: {refused}"
    );
    fill(&owner, "#password", PASSWORD).await;
    click(&owner, "#submit").await;
    wait_path(&owner, "/dashboard").await;
    until(
        &owner,
        "the dashboard",
        "return window.lumen?.state === 'ready';",
    )
    .await;

    // A stream, and a key whose secret shows once, masked until "Show".
    fill(&owner, "#new-name", &stream).await;
    click(&owner, "#create-submit").await;
    let panel = format!("section[data-stream=\"{stream}\"]");
    until(
        &owner,
        "the new stream's panel",
        &format!("return !!document.querySelector('{panel}');"),
    )
    .await;
    let whip = until(
        &owner,
        "the WHIP URL",
        &format!("return document.querySelector('{panel} .whip-url').value;"),
    )
    .await;
    assert_eq!(whip, json!(format!("{base}/whip/{stream}")));
    click(&owner, &format!("{panel} .new-key")).await;
    let masked = until(
        &owner,
        "the new key's secret",
        &format!(
            "const box = document.querySelector('{panel} .key-secret');
             const s = box.querySelector('.secret');
             return !box.hidden && s.value !== '' && s.type;"
        ),
    )
    .await;
    assert_eq!(masked, json!("password"), "the secret shows before Show");
    click(&owner, &format!("{panel} .key-secret .show")).await;
    let secret = until(
        &owner,
        "the shown secret",
        &format!(
            "const s = document.querySelector('{panel} .key-secret .secret');
             return s.type === 'text' && s.value;"
        ),
    )
    .await;
    let secret = secret.as_str().unwrap_or_default().to_owned();
    assert!(secret.starts_with("lk_"), "not a stream key: {secret:?}");
    let listed = until(
        &owner,
        "the key in the list",
        &format!(
            "const td = document.querySelector('{panel} table.keys tr[data-key] td.mono');
             return td && td.textContent;"
        ),
    )
    .await;
    let prefix = listed
        .as_str()
        .unwrap_or_default()
        .trim_end_matches('…')
        .to_owned();
    assert!(
        !prefix.is_empty() && secret.starts_with(&prefix) && prefix.len() < secret.len(),
        "the list shows {listed} for the new key"
    );

    // Go live in a second window of the same browser (the dashboard stays
    // open in the first): the stream is preselected, no key is typed.
    let dashboard = owner.window().await.expect("the dashboard window");
    let live_window = owner.new_window(false).await.expect("open a window").handle;
    owner
        .switch_to_window(live_window.clone())
        .await
        .expect("switch to the new window");
    owner
        .goto(&format!("{base}/broadcast?stream={stream}"))
        .await
        .expect("open the broadcast page");
    until(
        &owner,
        "my streams in the broadcast page",
        &format!(
            "return window.lumen?.account?.streams?.includes('{stream}')
                 && document.getElementById('mine').value === '{stream}'
                 && !document.getElementById('mine-row').hidden
                 && document.getElementById('token').value === '';"
        ),
    )
    .await;
    click(&owner, "#golive").await;
    wait_state(&owner, "broadcaster", "live").await;

    // An anonymous browser (own profile, no cookie) watches the public stream.
    let viewer = chrome.new_session().await;
    viewer
        .goto(&format!("{base}/watch/{stream}"))
        .await
        .expect("open the watch page");
    wait_state(&viewer, "viewer", "live").await;
    assert_plays(&viewer, "the anonymous viewer").await;

    // The owner's dashboard shows it live, then makes it private.
    owner
        .switch_to_window(dashboard)
        .await
        .expect("back to the dashboard window");
    until(
        &owner,
        "the live pill",
        &format!("return document.querySelector('{panel} .pill').textContent === 'Live';"),
    )
    .await;
    owner
        .find(Locator::Css(&format!("{panel} select.visibility")))
        .await
        .expect("the visibility select")
        .select_by_value("private")
        .await
        .expect("choose private");
    until(
        &owner,
        "the stream turned private",
        &format!(
            "const p = document.querySelector('{panel}');
             return p.dataset.visibility === 'private'
                 && p.querySelector('.error').hidden;"
        ),
    )
    .await;

    // The anonymous viewer's reload is refused, and says why.
    viewer.refresh().await.expect("reload the watch page");
    wait_state(&viewer, "viewer", "private").await;
    let overlay = viewer
        .find(Locator::Id("overlay-text"))
        .await
        .expect("the overlay")
        .text()
        .await
        .expect("the overlay's text");
    assert!(
        overlay.contains("This stream is private: ask its owner for a link"),
        "the refused viewer sees {overlay:?}"
    );

    // A share link from the dashboard plays for the same anonymous browser.
    click(&owner, &format!("{panel} .share")).await;
    let link = until(
        &owner,
        "the share link",
        &format!(
            "const box = document.querySelector('{panel} .share-box');
             return !box.hidden && box.querySelector('.share-url').value;"
        ),
    )
    .await;
    let link = link.as_str().unwrap_or_default().to_owned();
    assert!(
        link.starts_with(&format!("{base}/watch/{stream}?")) && link.contains("token="),
        "not a share link: {link}"
    );
    viewer.goto(&link).await.expect("open the share link");
    wait_state(&viewer, "viewer", "live").await;
    assert_plays(&viewer, "the viewer with the share link").await;

    // The key read from the dashboard publishes as a typed Bearer token
    // (OBS-style): Stop (the session's DELETE goes with the CSRF token),
    // type the key, go live again; the share link's viewer comes back.
    owner
        .switch_to_window(live_window)
        .await
        .expect("back to the broadcast window");
    click(&owner, "#stop").await;
    wait_state(&owner, "broadcaster", "idle").await;
    fill(&owner, "#token", &secret).await;
    until(
        &owner,
        "the name field for a typed key",
        &format!(
            "return document.getElementById('mine-row').hidden
                 && !document.getElementById('name-row').hidden
                 && document.getElementById('stream').value === '{stream}';"
        ),
    )
    .await;
    click(&owner, "#golive").await;
    wait_state(&owner, "broadcaster", "live").await;
    until(
        &viewer,
        "the share link's viewer after the new broadcast",
        "return window.lumen?.state === 'live' && window.lumen.stats?.framesDecoded > 0;",
    )
    .await;
    assert_plays(&viewer, "the viewer with the share link, again").await;

    viewer.close().await.expect("close the viewer");
    owner.close().await.expect("close the owner's browser");
    drop(chrome);
    server.stop().await;
}

/// A server of its own, on [`lumen_signaling::Config::ephemeral`], so the
/// test holds the [`lumen_signaling::Running`] that knows the setup code.
struct FreshServer {
    running: Option<lumen_signaling::Running>,
    dir: PathBuf,
}

impl FreshServer {
    async fn start() -> FreshServer {
        let config = lumen_signaling::Config::ephemeral();
        let dir = config.data_dir.clone();
        let running = lumen_signaling::start(config)
            .await
            .expect("the lumen server starts");
        FreshServer {
            running: Some(running),
            dir,
        }
    }

    fn running(&self) -> &lumen_signaling::Running {
        self.running.as_ref().expect("the server runs")
    }

    fn url(&self) -> String {
        self.running().http_url()
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

impl Drop for FreshServer {
    // After a failed assertion: no runtime to wait on, so signal and clean up.
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.signal_shutdown();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `script` until it returns something truthy, and returns that.
async fn until(c: &Client, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + WITHIN;
    loop {
        let v = c.execute(script, vec![]).await.unwrap_or(Value::Null);
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            _ => true,
        };
        if truthy {
            return v;
        }
        if Instant::now() >= deadline {
            let url = c.current_url().await.map(|u| u.to_string());
            panic!(
                "{what}: not within {WITHIN:?} at {url:?}; window.lumen = {}",
                lumen(c).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `window.lumen.state` is `want`; a broadcaster in `error`
/// fails at once (it does not retry by itself).
async fn wait_state(c: &Client, who: &str, want: &str) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let l = lumen(c).await;
        let state = l["state"].as_str().unwrap_or_default();
        if state == want {
            return;
        }
        if who == "broadcaster" && state == "error" {
            panic!("the broadcaster failed while waiting for {want:?}: {l}");
        }
        assert!(
            Instant::now() < deadline,
            "the {who} did not reach {want:?} within {WITHIN:?}; window.lumen = {l}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_path(c: &Client, path: &str) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let url = c.current_url().await.expect("the current URL");
        if url.path() == path {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still at {url} instead of {path} after {WITHIN:?}; window.lumen = {}",
            lumen(c).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The <video> has a picture, and its frames and clock advance.
async fn assert_plays(c: &Client, who: &str) {
    const READ: &str = "const v = document.getElementById('video');
        return { frames: v.getVideoPlaybackQuality().totalVideoFrames,
                 time: v.currentTime, width: v.videoWidth };";
    let read = || async {
        let v = c
            .execute(READ, vec![])
            .await
            .expect("read the video element");
        (
            v["frames"].as_u64().unwrap_or(0),
            v["time"].as_f64().unwrap_or(0.0),
            v["width"].as_u64().unwrap_or(0),
        )
    };
    let deadline = Instant::now() + WITHIN;
    let first = loop {
        let (frames, time, width) = read().await;
        if frames > 0 && width > 0 {
            break (frames, time);
        }
        assert!(
            Instant::now() < deadline,
            "{who} decoded no picture within {WITHIN:?}; window.lumen = {}",
            lumen(c).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let deadline = Instant::now() + WITHIN;
    loop {
        let (frames, time, width) = read().await;
        if frames > first.0 && time > first.1 && width > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{who}: playback did not advance from {first:?} within {WITHIN:?}: now {:?}",
            (frames, time, width)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn lumen(c: &Client) -> Value {
    c.execute("return window.lumen ?? null;", vec![])
        .await
        .unwrap_or(Value::Null)
}

async fn find(c: &Client, css: &str) -> Element {
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {css} within {WITHIN:?}; window.lumen = {}",
            lumen(c).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn fill(c: &Client, css: &str, text: &str) {
    let e = find(c, css).await;
    e.clear()
        .await
        .unwrap_or_else(|err| panic!("clear {css}: {err}"));
    e.send_keys(text)
        .await
        .unwrap_or_else(|err| panic!("type into {css}: {err}"));
}

/// Clicks `css` once it is shown and enabled (the nav's buttons appear
/// when /me answers; a page's buttons are disabled while it works).
async fn click(c: &Client, css: &str) {
    let deadline = Instant::now() + WITHIN;
    let e = loop {
        let e = find(c, css).await;
        if e.is_displayed().await.unwrap_or(false) && e.is_enabled().await.unwrap_or(false) {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "{css} was not shown and enabled within {WITHIN:?}; window.lumen = {}",
            lumen(c).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    e.click()
        .await
        .unwrap_or_else(|err| panic!("click {css}: {err}"));
}
