//! The server on PostgreSQL (`--database-url`) instead of the embedded
//! SQLite file: the same code path end to end. A stream key made through
//! the account service opens a WHIP session, a second node's view of the
//! same database (another `Auth` on the URL, as `lumen key revoke` on
//! another machine) revokes it, and the server ends the session. Skipped
//! loudly without PostgreSQL; a failure under `LUMEN_REQUIRE_ALL=1`.

use std::time::{Duration, Instant};

use lumen_signaling::auth::testing::TempPostgres;
use lumen_signaling::auth::{Auth, AuthConfig, Role, Visibility};
use reqwest::{Client, StatusCode};
use str0m::media::Direction;

use crate::support::{Server, header, offer, post_sdp_as};

#[tokio::test]
async fn accounts_on_postgres_open_and_end_sessions() {
    let Some(pg) = TempPostgres::start("accounts_on_postgres_open_and_end_sessions") else {
        return;
    };
    let url = pg.url();
    let s = Server::start_with(|c| c.auth.database_url = Some(url.clone())).await;
    assert_eq!(s.auth().backend(), "postgres");

    // Another process on the same database: what an operator's CLI is.
    let dir = tempfile::tempdir().expect("dir");
    let mut cfg = AuthConfig::new(dir.path());
    cfg.database_url = Some(url);
    let ops = Auth::open(cfg).await.expect("second connection");
    let owner = ops
        .create_user("pat", "pat's password", Role::Broadcaster)
        .await
        .expect("user");
    ops.create_stream(&owner, "pg", Visibility::Public, "")
        .await
        .expect("stream");
    let key = ops.create_key("pg", "").await.expect("key");

    let c = Client::new();
    let (_p, poffer) = offer(Direction::SendOnly);
    let r = post_sdp_as(&c, &s.url("/whip/pg"), &key.secret, poffer.to_sdp_string()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = header(&r, "location").to_string();

    ops.revoke_key(&key.info.id).await.expect("revoke");
    // The session URL goes away once the server has followed the feed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c
            .delete(s.url(&location))
            .bearer_auth(&key.secret)
            .send()
            .await
            .expect("DELETE");
        // The revoked key cannot authenticate; once the session is gone,
        // an anonymous DELETE finds nothing either.
        let anon = c.delete(s.url(&location)).send().await.expect("DELETE");
        if r.status() == StatusCode::UNAUTHORIZED && anon.status() == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revoked key's session stayed: {} / {}",
            r.status(),
            anon.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}
