//! Webhooks: HTTP endpoints an operator registers for lumen's events
//! (`stream.started`, `stream.ended`, `key.revoked`, and the opt-in
//! `viewer.joined` / `viewer.left`), signed per Standard Webhooks
//! (<https://www.standardwebhooks.com>).
//!
//! Emitting is a database insert and nothing else: one `pending` row per
//! subscribed endpoint in `webhook_deliveries`, which is both the queue and
//! the endpoint's delivery log. The deliverer ([`spawn_deliverer`]) polls
//! the due rows, claims each by moving its `next_attempt_at` forward with a
//! compare-and-set (so nodes sharing PostgreSQL do not both send it), POSTs
//! it, and records the outcome: `delivered` on a 2xx, else another attempt
//! after the next delay of [`WebhookConfig::retry_delays`], and `failed`
//! when they are spent. Delivery is at least once: a node that dies while
//! sending leaves the row to be sent again once its claim lapses, under the
//! same `webhook-id`.

mod deliver;
mod queue;
mod send;
mod sign;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use utoipa::ToSchema;

use crate::{Auth, AuthError, Result, model};

pub use deliver::spawn_deliverer;
pub use sign::{generate_secret, sign, verify};

/// The events an endpoint can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[non_exhaustive]
pub enum EventType {
    /// A stream went live (its publisher connected). `data`: `{"stream"}`.
    #[serde(rename = "stream.started")]
    StreamStarted,
    /// A live stream stopped being live. `data`: `{"stream"}`.
    #[serde(rename = "stream.ended")]
    StreamEnded,
    /// A viewer connected (opt-in). `data`: `{"stream","session"}`.
    #[serde(rename = "viewer.joined")]
    ViewerJoined,
    /// A connected viewer left (opt-in). `data`: `{"stream","session"}`.
    #[serde(rename = "viewer.left")]
    ViewerLeft,
    /// A stream key was revoked (also by rotation or by deleting its
    /// stream). `data`: `{"stream","key_id","label"}`.
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    /// A recording was finalised and can be played. `data`:
    /// `{"stream","recording","broadcast","duration_ms","url"}`.
    #[serde(rename = "recording.ready")]
    RecordingReady,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 6] = [
        EventType::StreamStarted,
        EventType::StreamEnded,
        EventType::ViewerJoined,
        EventType::ViewerLeft,
        EventType::KeyRevoked,
        EventType::RecordingReady,
    ];

    /// Its name on the wire (`stream.started`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::StreamStarted => "stream.started",
            EventType::StreamEnded => "stream.ended",
            EventType::ViewerJoined => "viewer.joined",
            EventType::ViewerLeft => "viewer.left",
            EventType::KeyRevoked => "key.revoked",
            EventType::RecordingReady => "recording.ready",
        }
    }

    /// Whether an endpoint gets it only when it names it: viewer events
    /// come in numbers, so registering without a list leaves them out.
    pub fn opt_in(self) -> bool {
        matches!(self, EventType::ViewerJoined | EventType::ViewerLeft)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl FromStr for EventType {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self> {
        EventType::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| {
                AuthError::Invalid(format!(
                    "unknown webhook event {s:?}: {}",
                    EventType::ALL.map(EventType::as_str).join(", ")
                ))
            })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The wait before each retry of a failed attempt: a delivery gets
    /// `retry_delays.len() + 1` attempts, then it is `failed`.
    pub retry_delays: Vec<Duration>,
    /// Each wait is lengthened by a random share of up to this fraction of
    /// it (0.1: up to 10 %), so that deliveries that failed together (an
    /// endpoint's outage) are not all retried in the same instant.
    pub jitter: f64,
    /// How long one attempt may take: connecting, TLS, sending and the
    /// answer's status line and headers.
    pub timeout: Duration,
    /// How often the queue is scanned for due deliveries. Events emitted
    /// by this process wake the deliverer at once; this bounds the wait
    /// for retries and for events another node enqueued.
    pub poll_interval: Duration,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// How long delivered and failed deliveries stay in the log.
    pub retention: Duration,
    /// More trusted CA certificates (PEM) for `https://` endpoints, besides
    /// the system's bundle (`SSL_CERT_FILE`, or the usual paths).
    pub ca_file: Option<PathBuf>,
}

/// Default of [`WebhookConfig::retry_delays`]: 5 s, 30 s, 2 min, 10 min,
/// 1 h, 4 h, 12 h (8 attempts over about 17 hours).
pub const DEFAULT_RETRY_DELAYS: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(3600),
    Duration::from_secs(4 * 3600),
    Duration::from_secs(12 * 3600),
];

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            retry_delays: DEFAULT_RETRY_DELAYS.to_vec(),
            jitter: 0.1,
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(2),
            concurrency: 16,
            retention: Duration::from_secs(7 * 24 * 3600),
            ca_file: None,
        }
    }
}

impl WebhookConfig {
    /// The wait after `attempts` failed attempts, before jitter: `None`
    /// when no attempt is left.
    pub fn retry_delay(&self, attempts: u32) -> Option<Duration> {
        self.retry_delays
            .get((attempts as usize).checked_sub(1)?)
            .copied()
    }

    /// How long a claim holds a delivery: longer than an attempt can take,
    /// so only a node that died while sending loses it.
    fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(30)
    }
}

/// A registered endpoint (without its secret, which is shown once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Endpoint {
    /// Opaque id.
    pub id: String,
    /// Where deliveries are POSTed: `http://` or `https://`.
    pub url: String,
    /// The events it gets.
    pub events: Vec<EventType>,
    /// Free text.
    pub description: String,
    /// A disabled endpoint gets no new deliveries, and its pending ones wait.
    pub enabled: bool,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

/// An endpoint just registered: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NewEndpoint {
    /// The record.
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_` + base64 of the signing key.
    pub secret: String,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not delivered yet; attempts remain.
    Pending,
    /// An attempt got a 2xx answer.
    Delivered,
    /// Every attempt failed.
    Failed,
}

impl DeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl FromStr for DeliveryStatus {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "pending" => Ok(DeliveryStatus::Pending),
            "delivered" => Ok(DeliveryStatus::Delivered),
            "failed" => Ok(DeliveryStatus::Failed),
            _ => Err(AuthError::Invalid(format!("stored delivery status {s:?}"))),
        }
    }
}

/// One event for one endpoint: an entry of its delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Delivery {
    /// The `webhook-id`, the same on every attempt.
    pub id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The event type (`stream.started`).
    pub event_type: String,
    /// The body sent: `{"type","timestamp","data"}`.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (ms), while pending.
    pub next_attempt_at: Option<i64>,
    /// The HTTP status of the last attempt, if it got an answer.
    pub last_status_code: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the event was emitted (ms).
    pub created_at: i64,
    /// When it was delivered (ms).
    pub delivered_at: Option<i64>,
}

/// What an endpoint URL is (an ECMA-262 regular expression, for the API's
/// schema): `http://` or `https://`, a host name or IPv4 address (letters,
/// digits, `.`, `-`), an optional port, and a path and query of RFC 3986's
/// unreserved and sub-delimiter characters, `:`, `@`, `/`, `?` and `%`. No
/// user info, no fragment, no IPv6 literal (an IPv6 endpoint is reached by
/// a name). At most 2048 bytes.
pub const URL_PATTERN: &str = r"^https?://[A-Za-z0-9.-]+(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(/[A-Za-z0-9._~!$&'()*+,;=:@/?%-]*)?$";

/// What a signing secret is: `whsec_` and the canonical base64 (padded, no
/// stray bits) of 24 to 64 bytes.
pub const SECRET_PATTERN: &str = r"^whsec_((([A-Za-z0-9+/]{4}){8,20}([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?)|(([A-Za-z0-9+/]{4}){21}([A-Za-z0-9+/][AQgw]==)?))$";

/// Endpoints a server may have.
pub const MAX_ENDPOINTS: i64 = 100;
/// Entries [`Webhooks::deliveries`] returns at most.
pub const MAX_LOG: usize = 500;

/// The webhooks of an [`Auth`]: `auth.webhooks()`.
#[derive(Clone, Copy)]
pub struct Webhooks<'a> {
    auth: &'a Auth,
}

/// What the handles of one `Auth` share: which events some enabled
/// endpoint wants (so that callers skip building events nobody gets), and
/// the deliverer's wake-up.
pub(crate) struct Shared {
    wanted: AtomicU32,
    wake: Notify,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            // Until the first refresh, every event is assumed wanted: the
            // database decides then.
            wanted: AtomicU32::new(u32::MAX),
            wake: Notify::new(),
        }
    }
}

impl Auth {
    /// The webhooks: endpoints, emitting events, the delivery log.
    pub fn webhooks(&self) -> Webhooks<'_> {
        Webhooks { auth: self }
    }
}

impl<'a> Webhooks<'a> {
    /// Registers an endpoint for `events` (empty: every event that is not
    /// opt-in). `secret` is the caller's own `whsec_…` (24 to 64 bytes),
    /// else a new one is made.
    pub async fn register(
        &self,
        url: &str,
        events: &[EventType],
        secret: Option<&str>,
        description: &str,
    ) -> Result<NewEndpoint> {
        send::check_url(url)?;
        check_description(description)?;
        let secret = match secret {
            Some(s) => {
                sign::check_secret(s)?;
                s.to_string()
            }
            None => generate_secret(),
        };
        let mut events: Vec<EventType> = if events.is_empty() {
            EventType::ALL.into_iter().filter(|e| !e.opt_in()).collect()
        } else {
            events.to_vec()
        };
        events.sort_by_key(|e| *e as u32);
        events.dedup();
        if queue::count_endpoints(self.pool()).await? >= MAX_ENDPOINTS {
            return Err(AuthError::Forbidden(format!(
                "a server may have {MAX_ENDPOINTS} webhook endpoints"
            )));
        }
        let endpoint = Endpoint {
            id: format!("ep_{}", model::random_token(8)),
            url: url.to_string(),
            events,
            description: description.to_string(),
            enabled: true,
            created_at: model::now_ms(),
        };
        queue::insert_endpoint(self.pool(), &endpoint, &secret).await?;
        self.refresh().await?;
        Ok(NewEndpoint { endpoint, secret })
    }

    /// Every endpoint, oldest first.
    pub async fn endpoints(&self) -> Result<Vec<Endpoint>> {
        Ok(queue::endpoints(self.pool())
            .await?
            .into_iter()
            .map(|(e, _)| e)
            .collect())
    }

    /// One endpoint.
    pub async fn endpoint(&self, id: &str) -> Result<Endpoint> {
        queue::endpoint(self.pool(), id)
            .await?
            .ok_or_else(|| AuthError::NotFound("no such webhook endpoint".to_string()))
    }

    /// Enables or disables an endpoint.
    pub async fn set_enabled(&self, id: &str, enabled: bool) -> Result<Endpoint> {
        if !queue::set_enabled(self.pool(), id, enabled).await? {
            return Err(AuthError::NotFound("no such webhook endpoint".to_string()));
        }
        self.refresh().await?;
        if enabled {
            self.shared().wake.notify_one();
        }
        self.endpoint(id).await
    }

    /// Deletes an endpoint with its delivery log; what it had pending is
    /// not sent.
    pub async fn delete(&self, id: &str) -> Result<()> {
        if !queue::delete_endpoint(self.pool(), id).await? {
            return Err(AuthError::NotFound("no such webhook endpoint".to_string()));
        }
        self.refresh().await
    }

    /// Queues `event` with `data` for every enabled endpoint that wants it:
    /// inserts only, never HTTP. The number of deliveries queued.
    pub async fn emit(&self, event: EventType, data: serde_json::Value) -> Result<usize> {
        let now = model::now_ms();
        let payload = sign::payload(event, now, &data);
        let n = queue::enqueue(self.pool(), event, &payload, now).await?;
        if n > 0 {
            self.shared().wake.notify_one();
        }
        Ok(n)
    }

    /// Whether some enabled endpoint wants `event`, as of the last refresh
    /// (after each change made here, and every few seconds while the
    /// deliverer runs, for changes made by other nodes). No I/O: for
    /// callers that should not even build an event nobody gets.
    pub fn wants(&self, event: EventType) -> bool {
        self.shared().wanted.load(Ordering::Relaxed) & event.bit() != 0
    }

    /// Reloads which events are wanted.
    pub async fn refresh(&self) -> Result<()> {
        let mut mask = 0;
        for (e, _) in queue::endpoints(self.pool()).await? {
            if e.enabled {
                mask |= e.events.iter().fold(0, |m, t| m | t.bit());
            }
        }
        self.shared().wanted.store(mask, Ordering::Relaxed);
        Ok(())
    }

    /// The latest `limit` deliveries of an endpoint (at most [`MAX_LOG`]),
    /// newest first.
    pub async fn deliveries(&self, endpoint_id: &str, limit: usize) -> Result<Vec<Delivery>> {
        self.endpoint(endpoint_id).await?;
        queue::deliveries(self.pool(), endpoint_id, limit.clamp(1, MAX_LOG) as i64).await
    }

    fn pool(&self) -> &'a sqlx::AnyPool {
        self.auth.inner.store.pool()
    }

    fn shared(&self) -> &'a Shared {
        &self.auth.inner.webhooks
    }

    fn config(&self) -> &'a WebhookConfig {
        &self.auth.inner.config.webhooks
    }
}

fn check_description(d: &str) -> Result<()> {
    if d.chars().count() > 200 || d.chars().any(char::is_control) {
        return Err(AuthError::Invalid(
            "a webhook description is at most 200 characters, without control characters"
                .to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
