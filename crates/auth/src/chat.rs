//! Chat's storage: each stream's messages, moderation log, reports and the
//! bans in force, in SQL that SQLite and PostgreSQL both run, like
//! `store.rs`. The room (`lumen_chat::Room`) stays sans-IO: signaling
//! drains its queues into [`Chat::store_batch`] off the hot path, and
//! restores a room from [`Chat::history`], [`Chat::next_message_id`] and
//! [`Chat::bans`] when it is created again.

use std::collections::{HashMap, HashSet};

use lumen_chat::{AuditAction, AuditEntry, ChatMessage, Report, Role};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use utoipa::ToSchema;

use crate::{Auth, AuthError, Result, model};

/// Entries [`Chat::audit`] and [`Chat::reports`] return at most.
pub const MAX_LOG: usize = 500;

/// One moderation action as stored.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AuditRecord {
    /// When, ms since the epoch.
    pub ts: i64,
    /// The acting user.
    pub actor: String,
    /// The actor's role in the room: `broadcaster`, `moderator` or `admin`.
    pub actor_role: String,
    /// What was done: `{"kind": "delete", "message": 3}`, `{"kind":
    /// "timeout", "seconds": 60}`, `ban`, `unban`, `clear`, `slow_mode`,
    /// `registered_only`.
    #[schema(value_type = Object)]
    pub action: serde_json::Value,
    /// The user acted upon.
    pub target: Option<String>,
    /// The reason given.
    pub reason: Option<String>,
}

/// A report of a message as stored.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReportRecord {
    /// The report's id (`rp_…`), to resolve it.
    pub id: String,
    /// The stream whose chat it is about.
    pub stream: String,
    /// When, ms since the epoch.
    pub ts: i64,
    /// The reporting user.
    pub reporter: String,
    /// The reported message as it was when reported:
    /// `{"id","user","display_name","role","text","ts"}`.
    #[schema(value_type = Object)]
    pub message: serde_json::Value,
    /// Why.
    pub reason: Option<String>,
    /// Whether the message has been deleted since.
    pub deleted: bool,
    /// Who resolved it (acted on it or dismissed it); `null` while it is
    /// in the moderation queue.
    pub resolved_by: Option<String>,
    /// When it was resolved, ms since the epoch.
    pub resolved_at: Option<i64>,
}

/// Where a stored message falls in a broadcast: given to
/// [`Chat::store_batch`] for the messages sent while the stream was live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The message's id in its stream.
    pub message: u64,
    /// The broadcast: the publisher's WHIP session id.
    pub broadcast: String,
    /// Milliseconds since the broadcast went live.
    pub media_ms: u64,
}

/// A message of a broadcast, for replaying its chat beside a recording.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReplayRecord {
    /// Milliseconds since the broadcast went live.
    pub media_ms: i64,
    /// The message as viewers saw it:
    /// `{"id","user","display_name","role","text","ts"}`.
    #[schema(value_type = Object)]
    pub message: serde_json::Value,
}

/// Messages [`Chat::replay`] returns at most per call.
pub const MAX_REPLAY: usize = 1000;

/// The chat tables of an [`Auth`]: `auth.chat()`.
#[derive(Clone, Copy)]
pub struct Chat<'a> {
    pool: &'a AnyPool,
}

impl Auth {
    /// Chat's storage.
    pub fn chat(&self) -> Chat<'_> {
        Chat {
            pool: self.inner.store.pool(),
        }
    }
}

impl Chat<'_> {
    /// Stores what a room's queues held, in one transaction: the messages
    /// first (a deletion may name one of them), then the audit entries,
    /// which mark deleted messages and keep the bans table current, then
    /// the reports. A message stored already is left as it is, so that a
    /// batch written twice changes nothing. `placements` say which of the
    /// messages were sent during a broadcast, and when in it.
    pub async fn store_batch(
        &self,
        stream: &str,
        messages: &[ChatMessage],
        placements: &[Placement],
        audit: &[AuditEntry],
        reports: &[Report],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // One statement per [`INSERT_ROWS`] messages, each with its place
        // in the broadcast when it has one: at a thousand messages a second
        // a statement per message (and another per placement) kept the
        // store's connections busy long enough to starve sign-ins.
        let placed: HashMap<u64, &Placement> = placements.iter().map(|p| (p.message, p)).collect();
        for rows in messages.chunks(INSERT_ROWS) {
            let mut sql = String::from(
                "INSERT INTO chat_messages \
                 (stream, id, user_id, display_name, role, text, ts, deleted, broadcast, media_ms) VALUES ",
            );
            for i in 0..rows.len() {
                let b = i * 9;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, 0, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8,
                    b + 9
                ));
            }
            // A message stored before (a room restored twice) keeps its
            // row; it gains a placement it lacked.
            sql.push_str(
                " ON CONFLICT (stream, id) DO UPDATE SET \
                 broadcast = COALESCE(excluded.broadcast, chat_messages.broadcast), \
                 media_ms = COALESCE(excluded.media_ms, chat_messages.media_ms)",
            );
            // Built from placeholders only: every value is bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for m in rows {
                let place = placed.get(&m.id);
                q = q
                    .bind(stream)
                    .bind(int(m.id))
                    .bind(&m.user)
                    .bind(&m.display_name)
                    .bind(role_str(m.role))
                    .bind(&m.text)
                    .bind(int(m.ts))
                    .bind(place.map(|p| p.broadcast.clone()))
                    .bind(place.map(|p| int(p.media_ms)));
            }
            q.execute(&mut *tx).await?;
        }
        // Placements of messages stored by an earlier batch.
        let inserted: HashSet<u64> = messages.iter().map(|m| m.id).collect();
        for p in placements.iter().filter(|p| !inserted.contains(&p.message)) {
            sqlx::query(
                "UPDATE chat_messages SET broadcast = $1, media_ms = $2 WHERE stream = $3 AND id = $4",
            )
            .bind(&p.broadcast)
            .bind(int(p.media_ms))
            .bind(stream)
            .bind(int(p.message))
            .execute(&mut *tx)
            .await?;
        }
        for (seq, a) in audit.iter().enumerate() {
            let ts = int(a.ts);
            sqlx::query(
                "INSERT INTO chat_audit (id, stream, ts, seq, actor, actor_role, action, target, reason) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(format!("au_{}", model::random_token(8)))
            .bind(stream)
            .bind(ts)
            .bind(seq as i64)
            .bind(&a.actor)
            .bind(role_str(a.actor_role))
            .bind(json(&a.action)?)
            .bind(&a.target)
            .bind(&a.reason)
            .execute(&mut *tx)
            .await?;
            match &a.action {
                AuditAction::Delete { message } => {
                    sqlx::query(
                        "UPDATE chat_messages SET deleted = 1 WHERE stream = $1 AND id = $2",
                    )
                    .bind(stream)
                    .bind(int(*message))
                    .execute(&mut *tx)
                    .await?;
                }
                // The room forgets its history; so does the store. (A
                // message sent in the same millisecond after the clear
                // goes too: the queues do not say which came first.)
                AuditAction::Clear => {
                    sqlx::query(
                        "UPDATE chat_messages SET deleted = 1 WHERE stream = $1 AND ts <= $2",
                    )
                    .bind(stream)
                    .bind(ts)
                    .execute(&mut *tx)
                    .await?;
                }
                AuditAction::Ban | AuditAction::Timeout { .. } => {
                    let Some(user) = &a.target else { continue };
                    let until = match a.action {
                        AuditAction::Timeout { seconds } => {
                            Some(ts.saturating_add(int(seconds.saturating_mul(1000))))
                        }
                        _ => None,
                    };
                    sqlx::query(
                        "INSERT INTO chat_bans (stream, user_id, until) VALUES ($1, $2, $3) \
                         ON CONFLICT (stream, user_id) DO UPDATE SET until = excluded.until",
                    )
                    .bind(stream)
                    .bind(user)
                    .bind(until)
                    .execute(&mut *tx)
                    .await?;
                }
                AuditAction::Unban => {
                    let Some(user) = &a.target else { continue };
                    sqlx::query("DELETE FROM chat_bans WHERE stream = $1 AND user_id = $2")
                        .bind(stream)
                        .bind(user)
                        .execute(&mut *tx)
                        .await?;
                }
                _ => {}
            }
        }
        for (seq, r) in reports.iter().enumerate() {
            sqlx::query(
                "INSERT INTO chat_reports (id, stream, ts, seq, reporter, message_id, message, reason) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(format!("rp_{}", model::random_token(8)))
            .bind(stream)
            .bind(int(r.ts))
            .bind(seq as i64)
            .bind(&r.reporter)
            .bind(int(r.message.id))
            .bind(json(&r.message)?)
            .bind(&r.reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The last `n` messages of a stream that are not deleted, oldest first.
    pub async fn history(&self, stream: &str, n: usize) -> Result<Vec<ChatMessage>> {
        let rows = sqlx::query(
            "SELECT id, user_id, display_name, role, text, ts FROM chat_messages \
             WHERE stream = $1 AND deleted = 0 ORDER BY id DESC LIMIT $2",
        )
        .bind(stream)
        .bind(n.min(i64::MAX as usize) as i64)
        .fetch_all(self.pool)
        .await?;
        let mut messages = rows.iter().map(message_from).collect::<Result<Vec<_>>>()?;
        messages.reverse();
        Ok(messages)
    }

    /// The messages of a broadcast that are not deleted, from `from_ms`
    /// into it, in the order they were sent; at most `limit` (capped at
    /// [`MAX_REPLAY`]): page on with the last one's `media_ms` + 1.
    pub async fn replay(
        &self,
        broadcast: &str,
        from_ms: u64,
        limit: usize,
    ) -> Result<Vec<ReplayRecord>> {
        let rows = sqlx::query(
            "SELECT id, user_id, display_name, role, text, ts, media_ms FROM chat_messages \
             WHERE broadcast = $1 AND media_ms >= $2 AND deleted = 0 \
             ORDER BY media_ms, id LIMIT $3",
        )
        .bind(broadcast)
        .bind(int(from_ms))
        .bind(limit.min(MAX_REPLAY) as i64)
        .fetch_all(self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplayRecord {
                    media_ms: r.try_get("media_ms")?,
                    message: serde_json::to_value(message_from(r)?)
                        .map_err(|e| AuthError::Invalid(e.to_string()))?,
                })
            })
            .collect()
    }

    /// The id a restarted room gives its first message: one past the
    /// largest stored, deleted ones included (1 for a new stream).
    pub async fn next_message_id(&self, stream: &str) -> Result<u64> {
        let max: Option<i64> =
            sqlx::query("SELECT MAX(id) AS m FROM chat_messages WHERE stream = $1")
                .bind(stream)
                .fetch_one(self.pool)
                .await?
                .try_get("m")?;
        Ok(max.map_or(1, |m| m.max(0) as u64 + 1))
    }

    /// The bans and timeouts in force now: each user with the end of their
    /// timeout (ms), `None` for a ban.
    pub async fn bans(&self, stream: &str) -> Result<Vec<(String, Option<u64>)>> {
        let rows = sqlx::query(
            "SELECT user_id, until FROM chat_bans \
             WHERE stream = $1 AND (until IS NULL OR until > $2) ORDER BY user_id",
        )
        .bind(stream)
        .bind(model::now_ms())
        .fetch_all(self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let until: Option<i64> = r.try_get("until")?;
                Ok((r.try_get("user_id")?, until.map(|u| u.max(0) as u64)))
            })
            .collect()
    }

    /// The latest `limit` moderation actions of a stream (at most
    /// [`MAX_LOG`]), newest first.
    pub async fn audit(&self, stream: &str, limit: usize) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT ts, actor, actor_role, action, target, reason FROM chat_audit \
             WHERE stream = $1 ORDER BY ts DESC, seq DESC LIMIT $2",
        )
        .bind(stream)
        .bind(limit.clamp(1, MAX_LOG) as i64)
        .fetch_all(self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let action: String = r.try_get("action")?;
                Ok(AuditRecord {
                    ts: r.try_get("ts")?,
                    actor: r.try_get("actor")?,
                    actor_role: r.try_get("actor_role")?,
                    action: parse(&action)?,
                    target: r.try_get("target")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    /// The latest `limit` reports of a stream (at most [`MAX_LOG`]), newest
    /// first, each saying whether its message has been deleted since;
    /// `open`: only those not resolved yet.
    pub async fn reports(
        &self,
        stream: &str,
        open: bool,
        limit: usize,
    ) -> Result<Vec<ReportRecord>> {
        self.reports_where(Some(stream), None, open, limit).await
    }

    /// The moderation queue over streams: the latest `limit` reports of
    /// every stream (`owner: None`) or of the streams `owner` owns, newest
    /// first; `open`: only those not resolved yet.
    pub async fn all_reports(
        &self,
        owner: Option<&str>,
        open: bool,
        limit: usize,
    ) -> Result<Vec<ReportRecord>> {
        self.reports_where(None, owner, open, limit).await
    }

    async fn reports_where(
        &self,
        stream: Option<&str>,
        owner: Option<&str>,
        open: bool,
        limit: usize,
    ) -> Result<Vec<ReportRecord>> {
        let rows = sqlx::query(
            "SELECT r.id, r.stream, r.ts, r.reporter, r.message, r.reason, r.resolved_by, \
             r.resolved_at, m.deleted FROM chat_reports r \
             LEFT JOIN chat_messages m ON m.stream = r.stream AND m.id = r.message_id \
             WHERE ($1 IS NULL OR r.stream = $1) \
             AND ($2 IS NULL OR r.stream IN (SELECT name FROM streams WHERE owner_id = $2)) \
             AND ($3 = 0 OR r.resolved_at IS NULL) \
             ORDER BY r.ts DESC, r.seq DESC LIMIT $4",
        )
        .bind(stream)
        .bind(owner)
        .bind(i64::from(open))
        .bind(limit.clamp(1, MAX_LOG) as i64)
        .fetch_all(self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let message: String = r.try_get("message")?;
                let deleted: Option<i64> = r.try_get("deleted")?;
                Ok(ReportRecord {
                    id: r.try_get("id")?,
                    stream: r.try_get("stream")?,
                    ts: r.try_get("ts")?,
                    reporter: r.try_get("reporter")?,
                    message: parse(&message)?,
                    reason: r.try_get("reason")?,
                    deleted: deleted.unwrap_or(0) != 0,
                    resolved_by: r.try_get("resolved_by")?,
                    resolved_at: r.try_get("resolved_at")?,
                })
            })
            .collect()
    }

    /// Takes report `id` of `stream` out of the moderation queue, as
    /// resolved by `by`. `Ok(false)`: no such report (or already resolved).
    pub async fn resolve_report(&self, stream: &str, id: &str, by: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE chat_reports SET resolved_by = $1, resolved_at = $2 \
             WHERE stream = $3 AND id = $4 AND resolved_at IS NULL",
        )
        .bind(by)
        .bind(model::now_ms())
        .bind(stream)
        .bind(id)
        .execute(self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Messages per `INSERT` statement in [`Chat::store_batch`], 9 parameters
/// each. SQLite finds a numbered parameter (`$N`) by walking the
/// statement's list of names, and sqlx asks it for every parameter it
/// binds, so binding a statement costs the square of its parameters. User
/// CPU per message stored (20,000 messages in batches of 500, SQLite): 100
/// rows (900 parameters) ~20 µs, 25 rows ~11 µs, 10 rows ~10 µs.
const INSERT_ROWS: usize = 25;

/// A room's ids and times fit an i64 for some 292 million years; a value
/// that does not is clamped rather than wrapped.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn role_str(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Broadcaster => "broadcaster",
        Role::Moderator => "moderator",
        Role::Admin => "admin",
    }
}

fn json(v: &impl Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|e| AuthError::Invalid(format!("chat record: {e}")))
}

fn parse(s: &str) -> Result<serde_json::Value> {
    serde_json::from_str(s).map_err(|e| AuthError::Invalid(format!("stored chat record: {e}")))
}

fn message_from(row: &AnyRow) -> Result<ChatMessage> {
    let role: String = row.try_get("role")?;
    let id: i64 = row.try_get("id")?;
    let ts: i64 = row.try_get("ts")?;
    Ok(ChatMessage {
        id: id.max(0) as u64,
        user: row.try_get("user_id")?,
        display_name: row.try_get("display_name")?,
        role: serde_json::from_value(serde_json::Value::String(role.clone()))
            .map_err(|_| AuthError::Invalid(format!("stored chat role {role:?}")))?,
        text: row.try_get("text")?,
        ts: ts.max(0) as u64,
    })
}
