//! The webhook tables in SQL that SQLite and PostgreSQL both run (`$n`
//! parameters, text ids, BIGINT times and 0/1 flags), like `store.rs`.

use std::str::FromStr;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::{Delivery, DeliveryStatus, Endpoint, EventType};
use crate::{Result, model};

const ENDPOINT_COLUMNS: &str = "id, url, secret, events, description, enabled, created_at";

fn endpoint_from(row: &AnyRow) -> Result<(Endpoint, String)> {
    let events: String = row.try_get("events")?;
    Ok((
        Endpoint {
            id: row.try_get("id")?,
            url: row.try_get("url")?,
            // A name a later version stored and this one does not know is
            // left out rather than failing the whole list.
            events: events
                .split_whitespace()
                .filter_map(|e| EventType::from_str(e).ok())
                .collect(),
            description: row.try_get("description")?,
            enabled: row.try_get::<i64, _>("enabled")? != 0,
            created_at: row.try_get("created_at")?,
        },
        row.try_get("secret")?,
    ))
}

pub(super) async fn count_endpoints(pool: &AnyPool) -> Result<i64> {
    Ok(sqlx::query("SELECT COUNT(*) AS n FROM webhook_endpoints")
        .fetch_one(pool)
        .await?
        .try_get("n")?)
}

pub(super) async fn insert_endpoint(pool: &AnyPool, e: &Endpoint, secret: &str) -> Result<()> {
    let events: Vec<&str> = e.events.iter().map(|t| t.as_str()).collect();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, url, secret, events, description, enabled, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&e.id)
    .bind(&e.url)
    .bind(secret)
    .bind(events.join(" "))
    .bind(&e.description)
    .bind(e.enabled as i64)
    .bind(e.created_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Every endpoint with its secret, oldest first.
pub(super) async fn endpoints(pool: &AnyPool) -> Result<Vec<(Endpoint, String)>> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id"
    )))
    .fetch_all(pool)
    .await?
    .iter()
    .map(endpoint_from)
    .collect()
}

pub(super) async fn endpoint(pool: &AnyPool, id: &str) -> Result<Option<Endpoint>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(endpoint_from).transpose()?.map(|(e, _)| e))
}

pub(super) async fn set_enabled(pool: &AnyPool, id: &str, enabled: bool) -> Result<bool> {
    let done = sqlx::query("UPDATE webhook_endpoints SET enabled = $1 WHERE id = $2")
        .bind(enabled as i64)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes an endpoint and its deliveries (explicitly: SQLite enforces
/// the foreign key only with a pragma).
pub(super) async fn delete_endpoint(pool: &AnyPool, id: &str) -> Result<bool> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// One pending delivery per enabled endpoint that wants `event`, due now,
/// in one transaction. The number queued.
pub(super) async fn enqueue(
    pool: &AnyPool,
    event: EventType,
    payload: &str,
    now: i64,
) -> Result<usize> {
    let rows = sqlx::query("SELECT id, events FROM webhook_endpoints WHERE enabled = 1")
        .fetch_all(pool)
        .await?;
    let mut targets = Vec::new();
    for r in &rows {
        let events: String = r.try_get("events")?;
        if events.split_whitespace().any(|e| e == event.as_str()) {
            targets.push(r.try_get::<String, _>("id")?);
        }
    }
    if targets.is_empty() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    for endpoint in &targets {
        sqlx::query(
            "INSERT INTO webhook_deliveries \
             (id, endpoint_id, event_type, payload, status, attempts, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6)",
        )
        .bind(format!("msg_{}", model::random_token(16)))
        .bind(endpoint)
        .bind(event.as_str())
        .bind(payload)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(targets.len())
}

pub(super) async fn deliveries(
    pool: &AnyPool,
    endpoint_id: &str,
    limit: i64,
) -> Result<Vec<Delivery>> {
    sqlx::query(
        "SELECT id, endpoint_id, event_type, payload, status, attempts, next_attempt_at, \
         last_status_code, last_error, created_at, delivered_at \
         FROM webhook_deliveries WHERE endpoint_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(endpoint_id)
    .bind(limit)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        let status = DeliveryStatus::from_str(&r.try_get::<String, _>("status")?)?;
        let payload: String = r.try_get("payload")?;
        Ok(Delivery {
            id: r.try_get("id")?,
            endpoint_id: r.try_get("endpoint_id")?,
            event_type: r.try_get("event_type")?,
            payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
            status,
            attempts: r.try_get::<i64, _>("attempts")?.clamp(0, u32::MAX.into()) as u32,
            next_attempt_at: (status == DeliveryStatus::Pending)
                .then(|| r.try_get("next_attempt_at"))
                .transpose()?,
            last_status_code: r
                .try_get::<Option<i64>, _>("last_status_code")?
                .and_then(|c| u16::try_from(c).ok()),
            last_error: r.try_get("last_error")?,
            created_at: r.try_get("created_at")?,
            delivered_at: r.try_get("delivered_at")?,
        })
    })
    .collect()
}

// ---- the deliverer's side ----

/// A pending delivery that is due, with what sending it takes.
#[derive(Debug, Clone)]
pub(super) struct Due {
    pub id: String,
    pub endpoint_id: String,
    pub url: String,
    pub secret: String,
    pub payload: String,
    pub attempts: u32,
    /// The value it was due at: the claim compares against it.
    pub next_attempt_at: i64,
}

/// Up to `limit` pending deliveries of enabled endpoints due at `now`,
/// the longest due first.
pub(super) async fn due(pool: &AnyPool, now: i64, limit: i64) -> Result<Vec<Due>> {
    sqlx::query(
        "SELECT d.id, d.endpoint_id, e.url, e.secret, d.payload, d.attempts, d.next_attempt_at \
         FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
         WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND e.enabled = 1 \
         ORDER BY d.next_attempt_at, d.id LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(Due {
            id: r.try_get("id")?,
            endpoint_id: r.try_get("endpoint_id")?,
            url: r.try_get("url")?,
            secret: r.try_get("secret")?,
            payload: r.try_get("payload")?,
            attempts: r.try_get::<i64, _>("attempts")?.clamp(0, u32::MAX.into()) as u32,
            next_attempt_at: r.try_get("next_attempt_at")?,
        })
    })
    .collect()
}

/// Takes a due delivery until `until` (ms): true for the one caller whose
/// compare-and-set on `next_attempt_at` succeeds.
pub(super) async fn claim(pool: &AnyPool, due: &Due, until: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET next_attempt_at = $1 \
         WHERE id = $2 AND status = 'pending' AND next_attempt_at = $3",
    )
    .bind(until)
    .bind(&due.id)
    .bind(due.next_attempt_at)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Attempt {
    /// `Delivered`, `Pending` (another attempt at `next_attempt_at`) or
    /// `Failed`.
    pub status: DeliveryStatus,
    pub next_attempt_at: i64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub at: i64,
}

/// Records an attempt on a delivery claimed until `claimed_until`. A
/// success is recorded even if the claim lapsed meanwhile (the receiver
/// has it); a failure only while the claim holds, so it does not undo the
/// outcome of a node that took the delivery over. False when nothing was
/// recorded.
pub(super) async fn record(
    pool: &AnyPool,
    id: &str,
    claimed_until: i64,
    attempt: &Attempt,
) -> Result<bool> {
    const SET: &str = "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, \
         next_attempt_at = $2, last_status_code = $3, last_error = $4, delivered_at = $5 \
         WHERE id = $6 AND status = 'pending'";
    let delivered = attempt.status == DeliveryStatus::Delivered;
    let sql = if delivered {
        SET.to_string()
    } else {
        format!("{SET} AND next_attempt_at = $7")
    };
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(attempt.status.as_str())
        .bind(attempt.next_attempt_at)
        .bind(attempt.status_code.map(i64::from))
        .bind(attempt.error.as_deref())
        .bind(delivered.then_some(attempt.at))
        .bind(id);
    if !delivered {
        q = q.bind(claimed_until);
    }
    let done = q.execute(pool).await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes delivered and failed deliveries created before `before` (ms).
pub(super) async fn prune(pool: &AnyPool, before: i64) -> Result<u64> {
    let done =
        sqlx::query("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1")
            .bind(before)
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}
