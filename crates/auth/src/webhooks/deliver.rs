//! The deliverer: a task that claims due deliveries, sends them (several
//! at once, each on its own task so a slow endpoint holds only its own
//! slot), and records each attempt.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::queue::{self, Attempt, Due};
use super::send::{Client, Failure};
use super::{DeliveryStatus, WebhookConfig, Webhooks, sign};
use crate::{Auth, Result, model};

/// How often the deliverer reloads which events are wanted, for endpoints
/// that other nodes sharing the database changed.
const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// How often old delivered and failed deliveries are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Longest `last_error` kept.
const MAX_ERROR: usize = 300;

/// Starts the deliverer of `auth`'s webhooks; it runs until `stop` turns
/// true (or its sender is dropped). Attempts in flight then are abandoned:
/// their claims lapse and they are sent again later, under the same id.
pub fn spawn_deliverer(auth: Auth, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(run(auth, stop))
}

async fn run(auth: Auth, mut stop: watch::Receiver<bool>) {
    let config = auth.config().webhooks.clone();
    let client = Client::new(&config);
    let hooks = auth.webhooks();
    let mut inflight: JoinSet<()> = JoinSet::new();
    let mut refreshed: Option<Instant> = None;
    let mut pruned: Option<Instant> = None;
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        if refreshed.is_none_or(|t| t.elapsed() >= REFRESH_EVERY) {
            refreshed = Some(Instant::now());
            if let Err(e) = hooks.refresh().await {
                tracing::warn!(error = %e, "webhooks: cannot load the endpoints");
            }
        }
        if pruned.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            pruned = Some(Instant::now());
            let before = model::now_ms() - config.retention.as_millis() as i64;
            match queue::prune(hooks.pool(), before).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "webhooks: old deliveries deleted"),
                Err(e) => tracing::warn!(error = %e, "webhooks: cannot delete old deliveries"),
            }
        }
        let room = config.concurrency.max(1).saturating_sub(inflight.len());
        if room > 0 {
            match hooks.claim_due(model::now_ms(), room).await {
                Ok(claimed) => {
                    for (due, until) in claimed {
                        let auth = auth.clone();
                        let client = client.clone();
                        inflight.spawn(async move {
                            auth.webhooks().attempt(&client, due, until).await;
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "webhooks: cannot read the queue"),
            }
        }
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = hooks.shared().wake.notified() => {}
            _ = tokio::time::sleep(config.poll_interval) => {}
            Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
        }
    }
    inflight.shutdown().await;
}

impl Webhooks<'_> {
    /// Claims up to `limit` deliveries due at `now`: each with the time its
    /// claim holds until.
    pub(super) async fn claim_due(&self, now: i64, limit: usize) -> Result<Vec<(Due, i64)>> {
        let until = now + self.config().lease().as_millis() as i64;
        let mut claimed = Vec::new();
        for due in queue::due(self.pool(), now, limit as i64).await? {
            if queue::claim(self.pool(), &due, until).await? {
                claimed.push((due, until));
            }
        }
        Ok(claimed)
    }

    /// Sends a claimed delivery once and records how it went.
    pub(super) async fn attempt(&self, client: &Client, due: Due, claimed_until: i64) {
        let timestamp = model::now_ms() / 1000;
        let result = match sign(&due.secret, &due.id, timestamp, &due.payload) {
            Ok(signature) => {
                let headers = [
                    ("webhook-id", due.id.clone()),
                    ("webhook-timestamp", timestamp.to_string()),
                    ("webhook-signature", signature),
                ];
                client.post(&due.url, &headers, due.payload.clone()).await
            }
            Err(e) => Err(Failure::Transport(format!("cannot sign: {e}"))),
        };
        let gone = result == Err(Failure::Status(410));
        let roll = rand::random::<f64>();
        let attempt = outcome(
            self.config(),
            due.attempts + 1,
            model::now_ms(),
            result,
            roll,
        );
        match attempt.status {
            DeliveryStatus::Delivered => {
                tracing::debug!(id = %due.id, url = %due.url, "webhook delivered")
            }
            DeliveryStatus::Pending => tracing::info!(
                id = %due.id, url = %due.url, error = ?attempt.error, attempts = due.attempts + 1,
                "webhook attempt failed; will retry"
            ),
            DeliveryStatus::Failed => tracing::warn!(
                id = %due.id, url = %due.url, error = ?attempt.error, attempts = due.attempts + 1,
                "webhook delivery failed for good"
            ),
        }
        if gone {
            // Standard Webhooks: `410 Gone` asks the sender to stop.
            tracing::warn!(endpoint = %due.endpoint_id, url = %due.url, "webhook endpoint answered 410 Gone: disabled");
            if let Err(e) = self.set_enabled(&due.endpoint_id, false).await {
                tracing::warn!(endpoint = %due.endpoint_id, error = %e, "cannot disable the endpoint");
            }
        }
        match queue::record(self.pool(), &due.id, claimed_until, &attempt).await {
            Ok(true) => {}
            Ok(false) => tracing::info!(
                id = %due.id,
                "webhook attempt not recorded: its claim lapsed and another attempt took over"
            ),
            Err(e) => tracing::warn!(id = %due.id, error = %e, "webhook attempt not recorded"),
        }
    }
}

/// What attempt number `attempts` (1 for the first) came to at `at` (ms);
/// `roll` in [0, 1) picks the jitter of a retry.
pub(super) fn outcome(
    config: &WebhookConfig,
    attempts: u32,
    at: i64,
    result: Result<u16, Failure>,
    roll: f64,
) -> Attempt {
    match result {
        Ok(code) => Attempt {
            status: DeliveryStatus::Delivered,
            next_attempt_at: at,
            status_code: Some(code),
            error: None,
            at,
        },
        Err(failure) => {
            let gone = failure == Failure::Status(410);
            let (status_code, error) = match failure {
                Failure::Status(410) => (
                    Some(410),
                    "HTTP status 410 Gone: the endpoint is disabled".to_string(),
                ),
                Failure::Status(c) => (Some(c), format!("HTTP status {c}")),
                Failure::Transport(e) => (None, truncate(e)),
            };
            let (status, next_attempt_at) = match config.retry_delay(attempts) {
                Some(delay) if !gone => {
                    let jitter = delay.as_millis() as f64 * config.jitter.clamp(0.0, 1.0) * roll;
                    let delay = delay.as_millis() as i64 + jitter as i64;
                    (DeliveryStatus::Pending, at.saturating_add(delay))
                }
                _ => (DeliveryStatus::Failed, at),
            };
            Attempt {
                status,
                next_attempt_at,
                status_code,
                error: Some(error),
                at,
            }
        }
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_ERROR {
        let mut end = MAX_ERROR;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}
