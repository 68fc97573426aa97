//! The account store: every query, written once in SQL that SQLite and
//! PostgreSQL both run (`$n` parameters, text ids, BIGINT times), over the
//! sqlx `Any` driver.

use std::str::FromStr;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::model::{KeyInfo, Role, Stream, User, Visibility};
use crate::{AuthError, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub(crate) struct Store {
    pool: AnyPool,
    backend: &'static str,
}

const USER_COLUMNS: &str = "id, name, role, disabled, created_at";

fn conflict(e: sqlx::Error, what: &str) -> AuthError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            AuthError::Conflict(format!("{what} is taken"))
        }
        _ => AuthError::from(e),
    }
}

fn user_from(row: &AnyRow) -> Result<User> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: Role::from_str(&role).map_err(|e| AuthError::Invalid(format!("stored role: {e}")))?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

fn stream_from(row: &AnyRow) -> Result<Stream> {
    let vis: String = row.try_get("visibility")?;
    Ok(Stream {
        name: row.try_get("name")?,
        owner_id: row.try_get("owner_id")?,
        owner_name: row.try_get("owner_name")?,
        visibility: Visibility::from_str(&vis)
            .map_err(|e| AuthError::Invalid(format!("stored visibility: {e}")))?,
        title: row.try_get("title")?,
        created_at: row.try_get("created_at")?,
    })
}

fn key_from(row: &AnyRow) -> Result<KeyInfo> {
    Ok(KeyInfo {
        id: row.try_get("id")?,
        stream: row.try_get("stream")?,
        label: row.try_get("label")?,
        prefix: row.try_get("prefix")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

const STREAM_SELECT: &str = "SELECT s.name, s.owner_id, u.name AS owner_name, s.visibility, s.title, s.created_at \
     FROM streams s JOIN users u ON u.id = s.owner_id";
const KEY_COLUMNS: &str = "id, stream, label, prefix, created_at, last_used_at, revoked_at";

impl Store {
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            "postgres"
        } else if url.starts_with("sqlite") {
            "sqlite"
        } else {
            return Err(AuthError::Invalid(format!(
                "unsupported database URL scheme in {:?}: sqlite:// or postgres://",
                url.split(':').next().unwrap_or("")
            )));
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == "sqlite" { 4 } else { 10 })
            .connect(url)
            .await?;
        if backend == "sqlite" {
            // Readers do not wait for the writer, and `lumen key create`
            // writes while a server runs. Persistent in the file.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
        }
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The pool, for the webhook queue's own queries (`webhooks/queue.rs`).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    // ---- setup ----

    pub async fn has_admin(&self) -> Result<bool> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE role = 'admin'")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(n > 0)
    }

    pub async fn count_active_admins(&self) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM users WHERE role = 'admin' AND disabled = 0")
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?,
        )
    }

    pub async fn replace_setup_code(&self, hash: &str, expires_at: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM setup_codes")
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO setup_codes (hash, expires_at) VALUES ($1, $2)")
            .bind(hash)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Consumes the code if it is valid.
    pub async fn take_setup_code(&self, hash: &str, now: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM setup_codes WHERE hash = $1 AND expires_at > $2")
            .bind(hash)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- users ----

    pub async fn insert_user(&self, user: &User, password_hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (id, name, password_hash, role, disabled, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&user.id)
        .bind(&user.name)
        .bind(password_hash)
        .bind(user.role.as_str())
        .bind(user.disabled as i64)
        .bind(user.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, "the user name"))?;
        Ok(())
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from).transpose()
    }

    pub async fn user_with_hash(&self, name: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some((user_from(&r)?, r.try_get("password_hash")?))),
            None => Ok(None),
        }
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY name"
        )))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(user_from)
        .collect()
    }

    pub async fn set_role(&self, id: &str, role: Role) -> Result<()> {
        sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(role.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_disabled(&self, id: &str, disabled: bool) -> Result<()> {
        sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
            .bind(disabled as i64)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_password(&self, id: &str, hash: &str) -> Result<()> {
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(AuthError::NotFound("no such user".to_string()));
        }
        Ok(())
    }

    /// Deletes a user, their streams, keys and web sessions, and records
    /// the revocation of every live key, in one transaction.
    pub async fn delete_user(&self, id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM stream_keys WHERE stream IN (SELECT name FROM streams WHERE owner_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM streams WHERE owner_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM web_sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- web sessions ----

    pub async fn insert_web_session(
        &self,
        hash: &str,
        user_id: &str,
        csrf: &str,
        created_at: i64,
        expires_at: i64,
    ) -> Result<()> {
        // Expired sessions go when new ones come.
        sqlx::query("DELETE FROM web_sessions WHERE expires_at < $1")
            .bind(created_at)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO web_sessions (hash, user_id, csrf, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash)
        .bind(user_id)
        .bind(csrf)
        .bind(created_at)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn web_session(&self, hash: &str, now: i64) -> Result<Option<(User, String)>> {
        let row = sqlx::query(
            "SELECT u.id, u.name, u.role, u.disabled, u.created_at, w.csrf \
             FROM web_sessions w JOIN users u ON u.id = w.user_id \
             WHERE w.hash = $1 AND w.expires_at > $2",
        )
        .bind(hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some((user_from(&r)?, r.try_get("csrf")?))),
            None => Ok(None),
        }
    }

    pub async fn delete_web_session(&self, hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM web_sessions WHERE hash = $1")
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_web_sessions_of(&self, user_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM web_sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- invites ----

    pub async fn insert_invite(
        &self,
        hash: &str,
        role: Role,
        by: &str,
        created_at: i64,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO invites (hash, role, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash)
        .bind(role.as_str())
        .bind(by)
        .bind(created_at)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Consumes an invite: its role, if it was valid.
    pub async fn take_invite(&self, hash: &str, now: i64) -> Result<Option<Role>> {
        let row = sqlx::query(
            "UPDATE invites SET used_by = 'pending' \
             WHERE hash = $1 AND used_by IS NULL AND expires_at > $2 RETURNING role",
        )
        .bind(hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => {
                let role: String = r.try_get("role")?;
                Ok(Some(Role::from_str(&role).map_err(AuthError::Invalid)?))
            }
            None => Ok(None),
        }
    }

    // ---- streams ----

    pub async fn insert_stream(&self, s: &Stream) -> Result<()> {
        sqlx::query(
            "INSERT INTO streams (name, owner_id, visibility, title, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&s.name)
        .bind(&s.owner_id)
        .bind(s.visibility.as_str())
        .bind(&s.title)
        .bind(s.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, "the stream name"))?;
        Ok(())
    }

    pub async fn stream(&self, name: &str) -> Result<Option<Stream>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{STREAM_SELECT} WHERE s.name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(stream_from).transpose()
    }

    pub async fn stream_owner(&self, name: &str) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT u.id, u.name, u.role, u.disabled, u.created_at \
             FROM streams s JOIN users u ON u.id = s.owner_id WHERE s.name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from).transpose()
    }

    pub async fn streams_of(&self, owner: Option<&str>) -> Result<Vec<Stream>> {
        let rows = match owner {
            Some(o) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{STREAM_SELECT} WHERE s.owner_id = $1 ORDER BY s.name"
                )))
                .bind(o)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{STREAM_SELECT} ORDER BY s.name"
                )))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(stream_from).collect()
    }

    pub async fn count_streams_of(&self, owner: &str) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM streams WHERE owner_id = $1")
                .bind(owner)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?,
        )
    }

    pub async fn update_stream(&self, s: &Stream) -> Result<()> {
        sqlx::query("UPDATE streams SET visibility = $1, title = $2 WHERE name = $3")
            .bind(s.visibility.as_str())
            .bind(&s.title)
            .bind(&s.name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_stream(&self, name: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM stream_keys WHERE stream = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM streams WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- keys ----

    pub async fn insert_key(&self, k: &KeyInfo, hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO stream_keys (id, stream, label, hash, prefix, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&k.id)
        .bind(&k.stream)
        .bind(&k.label)
        .bind(hash)
        .bind(&k.prefix)
        .bind(k.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn key(&self, id: &str) -> Result<Option<KeyInfo>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM stream_keys WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from).transpose()
    }

    pub async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyInfo>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM stream_keys WHERE hash = $1"
        )))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from).transpose()
    }

    pub async fn keys(&self, stream: &str) -> Result<Vec<KeyInfo>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM stream_keys WHERE stream = $1 ORDER BY created_at DESC, id"
        )))
        .bind(stream)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(key_from)
        .collect()
    }

    pub async fn count_live_keys(&self, stream: &str) -> Result<i64> {
        Ok(sqlx::query(
            "SELECT COUNT(*) AS n FROM stream_keys WHERE stream = $1 AND revoked_at IS NULL",
        )
        .bind(stream)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?)
    }

    pub async fn touch_key(&self, id: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE stream_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks a live key revoked; false when there is no live key `id`.
    pub async fn mark_key_revoked(&self, id: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE stream_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- revocations ----

    pub async fn revoke(&self, credential: &str, at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO revocations (credential, at) VALUES ($1, $2) \
             ON CONFLICT (credential) DO UPDATE SET at = excluded.at",
        )
        .bind(credential)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn is_revoked(&self, credential: &str) -> Result<bool> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM revocations WHERE credential = $1")
            .bind(credential)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(n > 0)
    }

    pub async fn revocations_since(&self, since: i64) -> Result<Vec<(String, i64)>> {
        sqlx::query("SELECT credential, at FROM revocations WHERE at >= $1 ORDER BY at")
            .bind(since)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("credential")?, r.try_get("at")?)))
            .collect()
    }
}
