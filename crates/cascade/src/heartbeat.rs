//! The heartbeat task: keeps a node registered, and re-registers it (with
//! its origin claims and relay entries) after the directory lost it.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::{Directory, NodeInfo};

/// Spawns a task that sends `info()` to `directory` every `interval`,
/// starting at once. Stop it with [`JoinHandle::abort`] (then
/// [`Directory::deregister`] to leave at once rather than after the TTL).
///
/// A failing directory does not stop it: the node keeps serving, the task
/// logs the outage once and retries each interval; the first heartbeat
/// that gets through re-creates the node's keys. Each attempt is bounded
/// by `interval`, so a hung store cannot delay the next one. Origins lost
/// meanwhile (another node claimed them) are logged; a caller that must
/// react to them calls [`Directory::heartbeat`] itself.
pub fn spawn_heartbeat<F>(
    directory: Arc<dyn Directory>,
    mut info: F,
    interval: Duration,
) -> JoinHandle<()>
where
    F: FnMut() -> NodeInfo + Send + 'static,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        // After a stall, one heartbeat is enough; a burst would not help.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let me = info();
            match tokio::time::timeout(interval, directory.heartbeat(&me)).await {
                Ok(Ok(report)) => {
                    if failing {
                        tracing::info!(node = %me.id, "directory reachable again; node re-registered");
                    } else if report.registered {
                        tracing::info!(node = %me.id, "node registered in the directory");
                    }
                    failing = false;
                    if !report.lost_origins.is_empty() {
                        tracing::warn!(
                            node = %me.id,
                            streams = ?report.lost_origins,
                            "another node became the origin of streams this node had claimed"
                        );
                    }
                }
                Ok(Err(e)) => {
                    if !failing {
                        tracing::warn!(node = %me.id, error = %e, "heartbeat failed; serving on with the last view");
                    }
                    failing = true;
                }
                Err(_) => {
                    if !failing {
                        tracing::warn!(node = %me.id, "heartbeat timed out; serving on with the last view");
                    }
                    failing = true;
                }
            }
        }
    })
}
