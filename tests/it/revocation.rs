//! Keys and tokens from the CLI, end to end: `lumen key create` against a
//! running server's data directory makes a key the server honours at once,
//! `lumen publish` goes live with it, and `lumen key revoke` (another
//! process, the same database) ends the live session — the server follows
//! the revocation feed every 500 ms. The same for a token from
//! `lumen token mint` and `lumen token revoke`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lumen_tools::client::{PublishOptions, Publisher};

use crate::support::start_server;

fn lumen(data_dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_lumen"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("LUMEN_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("the lumen binary runs");
    assert!(
        out.status.success(),
        "lumen {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn last_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub(crate) async fn live(base: &str, stream: &str) -> bool {
    reqwest::get(format!("{base}/api/streams/{stream}"))
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
        .contains("\"live\":true")
}

/// Waits up to `limit` for the stream to be live (`want`) or not; the time
/// it took.
pub(crate) async fn wait_live(
    base: &str,
    stream: &str,
    want: bool,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if live(base, stream).await == want {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn publish(base: &str, stream: &str, token: String) -> Publisher {
    Publisher::start(PublishOptions {
        url: format!("{base}/whip/{stream}"),
        token: Some(token),
        width: 320,
        height: 180,
        fps: 15,
        bitrate_bps: 300_000,
        ..Default::default()
    })
    .await
    .expect("publish")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_ends_its_live_publish() {
    let server = start_server().await;
    let base = server.http_url();
    let dir = server.data_dir().to_path_buf();
    // No admin exists yet: the stream needs a named owner.
    let err = Command::new(env!("CARGO_BIN_EXE_lumen"))
        .args(["key", "create", "show", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("runs");
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("no admin"),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );
    let mut admin = Command::new(env!("CARGO_BIN_EXE_lumen"))
        .args([
            "admin",
            "create-user",
            "ada",
            "--role",
            "admin",
            "--data-dir",
        ])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("runs");
    {
        use std::io::Write;
        let mut stdin = admin.stdin.take().expect("stdin");
        writeln!(stdin, "ada's long password").expect("password");
    }
    assert!(admin.wait().expect("exits").success());

    let key = last_line(&lumen(&dir, &["key", "create", "show", "--label", "OBS"]));
    assert!(key.starts_with("lk_"), "{key}");
    let listed = String::from_utf8_lossy(&lumen(&dir, &["key", "list", "show"]).stdout).to_string();
    let id = listed
        .lines()
        .find(|l| l.contains("OBS"))
        .and_then(|l| l.split('\t').next())
        .expect("the key is listed")
        .to_string();

    // The server honours the key made by another process at once.
    let publisher = publish(&base, "show", key.clone()).await;
    assert!(
        wait_live(&base, "show", true, Duration::from_secs(10))
            .await
            .is_some(),
        "the stream never went live"
    );

    lumen(&dir, &["key", "revoke", &id]);
    let took = wait_live(&base, "show", false, Duration::from_secs(10)).await;
    let took = took.expect("the revoked key's session never ended");
    eprintln!("revoked key: session ended {took:?} after `lumen key revoke` returned");
    // The key is refused from now on.
    let res = reqwest::Client::new()
        .post(format!("{base}/whip/show"))
        .header("content-type", "application/sdp")
        .bearer_auth(&key)
        .body("v=0\r\n")
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), reqwest::StatusCode::UNAUTHORIZED);
    let _ = publisher.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_ends_its_live_publish() {
    let server = start_server().await;
    let base = server.http_url();
    let dir = server.data_dir().to_path_buf();
    let token = last_line(&lumen(
        &dir,
        &["token", "mint", "--scope", "publish:tok", "--ttl", "10m"],
    ));
    assert_eq!(token.matches('.').count(), 2, "{token}");
    let publisher = publish(&base, "tok", token.clone()).await;
    assert!(
        wait_live(&base, "tok", true, Duration::from_secs(10))
            .await
            .is_some(),
        "the stream never went live"
    );
    // Its jti, as an operator reads it from the token's payload.
    let payload = token.split('.').nth(1).expect("payload");
    let claims: serde_json::Value =
        serde_json::from_slice(&base64_url_decode(payload).expect("base64url")).expect("json");
    let jti = claims["jti"].as_str().expect("jti");
    lumen(&dir, &["token", "revoke", jti]);
    let took = wait_live(&base, "tok", false, Duration::from_secs(10))
        .await
        .expect("the revoked token's session never ended");
    eprintln!("revoked token: session ended {took:?} after `lumen token revoke` returned");
    let _ = publisher.stop().await;
    server.stop().await;
}

/// Unpadded base64url, as in JWTs.
pub(crate) fn base64_url_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for &c in s.as_bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
