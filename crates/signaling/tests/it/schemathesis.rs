//! The account API fuzzed from its own OpenAPI document with schemathesis
//! (PyPI: `pip install schemathesis`): every check (`--checks all`), so no
//! answer is a 5xx, every status, header and body is the document's, invalid
//! input is refused and valid input accepted, and the security the document
//! declares is enforced. Bounded in time (`--max-time`); skipped loudly
//! without schemathesis, a failure under `LUMEN_REQUIRE_ALL=1`.
//!
//! `LUMEN_SCHEMATHESIS_SEED=N` replays a run (schemathesis prints its seed).

use std::process::Stdio;
use std::time::Duration;

use lumen_signaling::auth::testing::require_all;
use lumen_signaling::auth::{Role, Scopes, Visibility};
use tokio::process::Command;

use crate::support::Server;

/// Seconds schemathesis may fuzz; with the server's start and the schema
/// checks around it the test stays under two minutes.
const MAX_TIME_SECS: u64 = 75;
/// Test cases per operation and phase.
const MAX_EXAMPLES: u32 = 40;

#[tokio::test]
async fn the_account_api_answers_as_its_openapi_document_says() {
    let Some(version) = schemathesis_version().await else {
        let msg = "schemathesis is not installed (pip install schemathesis); \
                   the OpenAPI fuzzing test is SKIPPED";
        if require_all() {
            panic!("{msg} (LUMEN_REQUIRE_ALL=1)");
        }
        eprintln!("\n!!!!! {msg}\n");
        return;
    };
    eprintln!("fuzzing with {version}");
    let server = Server::start().await;
    // Something for the stream operations besides 404s: the admin token
    // acts on any stream but cannot own one (`POST /api/v1/streams` is
    // `403` for it), so a broadcaster's stream `cam` with a key, which the
    // fuzzer finds in `GET /api/v1/streams?all=true`.
    let owner = server
        .auth()
        .create_user("owner", "owner's password", Role::Broadcaster)
        .await
        .expect("user");
    server
        .auth()
        .create_stream(&owner, "cam", Visibility::Public, "a camera")
        .await
        .expect("stream");
    server
        .auth()
        .create_key("cam", "encoder")
        .await
        .expect("key");
    let token = server
        .auth()
        .mint(
            "schemathesis",
            &Scopes::parse("admin").expect("scope"),
            Duration::from_secs(3600),
        )
        .expect("token");

    // Its own directory: schemathesis and hypothesis write files in the
    // working directory.
    let work = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new("schemathesis");
    cmd.current_dir(work.path())
        .env("NO_COLOR", "1")
        .arg("run")
        .arg(server.url("/api/v1/openapi.json"))
        .args(["--checks", "all"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", &MAX_EXAMPLES.to_string()])
        .args(["--max-time", &MAX_TIME_SECS.to_string()])
        .args(["--request-timeout", "10"])
        .args(["--workers", "1"])
        .args(["--generation-database", "none"])
        .arg("--no-color")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Ok(seed) = std::env::var("LUMEN_SCHEMATHESIS_SEED") {
        cmd.args(["--seed", &seed]);
    }
    let out = tokio::time::timeout(Duration::from_secs(MAX_TIME_SECS + 60), cmd.output())
        .await
        .expect("schemathesis finishes within its time budget")
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    server.stop().await;
    assert!(
        out.status.success(),
        "schemathesis found failures ({}):\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!("{stdout}");
}

/// `schemathesis --version`, or `None` when it is not on the PATH.
async fn schemathesis_version() -> Option<String> {
    let out = Command::new("schemathesis")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
