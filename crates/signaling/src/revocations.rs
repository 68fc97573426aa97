//! Ends the live sessions of revoked credentials: follows the account
//! store's revocation feed (written by this server's API, by `lumen key
//! revoke` in another process, or by another node sharing the database)
//! and closes every session opened with a revoked key, token or user.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lumen_auth::Auth;
use lumen_node::NodeHandle;
use tokio::sync::watch;

use crate::sessions::Sessions;

/// How often the feed is read: a revoked credential's sessions end within
/// this and the time to close them (well under the 2 s promised).
pub(crate) const POLL: Duration = Duration::from_millis(500);
/// How far behind the newest revocation seen the feed is read again, for
/// rows committed late or stamped by another node's clock.
const LOOKBACK_MS: i64 = 5_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) async fn follow(
    auth: Auth,
    sessions: Arc<Sessions>,
    node: NodeHandle,
    mut stop: watch::Receiver<bool>,
) {
    let mut cursor = now_ms();
    let mut seen: HashSet<(String, i64)> = HashSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let rows = match auth.revocations_since(cursor - LOOKBACK_MS).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the revocation feed");
                continue;
            }
        };
        for (credential, at) in rows {
            cursor = cursor.max(at);
            if !seen.insert((credential.clone(), at)) {
                continue;
            }
            for (id, session) in sessions.with_credential(&credential) {
                if sessions.remove(&id).is_some() {
                    let _ = node.close(session).await;
                    tracing::info!(%credential, session = %id, "session ended: credential revoked");
                }
            }
        }
        seen.retain(|(_, at)| *at >= cursor - LOOKBACK_MS);
    }
}
