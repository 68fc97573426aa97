//! Streams and their keys.

use crate::model::{self, KeyInfo, NewKey, Role, Stream, User, Visibility};
use crate::policy::public_credential;
use crate::{Auth, AuthError, Result, webhooks};

impl Auth {
    /// Creates a stream owned by `owner`.
    pub async fn create_stream(
        &self,
        owner: &User,
        name: &str,
        visibility: Visibility,
        title: &str,
    ) -> Result<Stream> {
        model::check_stream_name(name)?;
        model::check_title(title)?;
        if !matches!(owner.role, Role::Admin | Role::Broadcaster) {
            return Err(AuthError::Forbidden(
                "only broadcasters and admins own streams".to_string(),
            ));
        }
        let limit = self.inner.config.limits.streams_per_user;
        if owner.role != Role::Admin
            && limit > 0
            && self.inner.store.count_streams_of(&owner.id).await? >= limit as i64
        {
            return Err(AuthError::Forbidden(format!(
                "a user may own {limit} streams"
            )));
        }
        let stream = Stream {
            name: name.to_string(),
            owner_id: owner.id.clone(),
            owner_name: owner.name.clone(),
            visibility,
            title: title.to_string(),
            created_at: model::now_ms(),
        };
        self.inner.store.insert_stream(&stream).await?;
        Ok(stream)
    }

    /// A stream's record, if it has one (a stream without one is public).
    pub async fn stream(&self, name: &str) -> Result<Option<Stream>> {
        self.inner.store.stream(name).await
    }

    /// Streams owned by a user.
    pub async fn streams_of(&self, owner_id: &str) -> Result<Vec<Stream>> {
        self.inner.store.streams_of(Some(owner_id)).await
    }

    /// Every stream with a record.
    pub async fn all_streams(&self) -> Result<Vec<Stream>> {
        self.inner.store.streams_of(None).await
    }

    /// Changes a stream's visibility and title.
    pub async fn update_stream(
        &self,
        name: &str,
        visibility: Option<Visibility>,
        title: Option<&str>,
    ) -> Result<Stream> {
        if let Some(t) = title {
            model::check_title(t)?;
        }
        let mut s = self
            .stream(name)
            .await?
            .ok_or_else(|| AuthError::NotFound("no such stream".to_string()))?;
        if let Some(v) = visibility {
            s.visibility = v;
        }
        if let Some(t) = title {
            s.title = t.to_string();
        }
        let was = self
            .stream(name)
            .await?
            .map(|old| old.visibility)
            .unwrap_or(Visibility::Public);
        self.inner.store.update_stream(&s).await?;
        if s.visibility == Visibility::Private && was != Visibility::Private {
            // Whoever watches only because it was public stops now.
            self.inner
                .store
                .revoke(&public_credential(name), model::now_ms())
                .await?;
        }
        Ok(s)
    }

    /// Deletes a stream and its keys; sessions opened with them end.
    pub async fn delete_stream(&self, name: &str) -> Result<()> {
        let keys = self.keys(name).await?;
        if !self.inner.store.delete_stream(name).await? {
            return Err(AuthError::NotFound("no such stream".to_string()));
        }
        let now = model::now_ms();
        for k in keys.iter().filter(|k| k.revoked_at.is_none()) {
            self.inner
                .store
                .revoke(&format!("key:{}", k.id), now)
                .await?;
            self.key_revoked(k).await;
        }
        Ok(())
    }

    // ---- keys ----

    /// A new key for `stream` (the secret is in the answer, and nowhere
    /// else ever again).
    pub async fn create_key(&self, stream: &str, label: &str) -> Result<NewKey> {
        model::check_label(label)?;
        if self.stream(stream).await?.is_none() {
            return Err(AuthError::NotFound("no such stream".to_string()));
        }
        let limit = self.inner.config.limits.keys_per_stream;
        if limit > 0 && self.inner.store.count_live_keys(stream).await? >= limit as i64 {
            return Err(AuthError::Forbidden(format!(
                "a stream may have {limit} live keys; revoke one first"
            )));
        }
        let secret = format!("{}{}", model::KEY_PREFIX, model::random_token(20));
        let info = KeyInfo {
            id: model::random_token(8),
            stream: stream.to_string(),
            label: label.to_string(),
            prefix: secret[..model::KEY_PREFIX.len() + 6].to_string(),
            created_at: model::now_ms(),
            last_used_at: None,
            revoked_at: None,
        };
        self.inner
            .store
            .insert_key(&info, &model::digest(&secret))
            .await?;
        Ok(NewKey { info, secret })
    }

    /// A key by id.
    pub async fn key(&self, id: &str) -> Result<KeyInfo> {
        self.inner
            .store
            .key(id)
            .await?
            .ok_or_else(|| AuthError::NotFound("no such key".to_string()))
    }

    /// The keys of a stream, newest first, revoked ones included.
    pub async fn keys(&self, stream: &str) -> Result<Vec<KeyInfo>> {
        self.inner.store.keys(stream).await
    }

    /// Replaces a key with a new one of the same label: the old one is
    /// revoked (its live sessions end).
    pub async fn rotate_key(&self, id: &str) -> Result<NewKey> {
        let old = self.key(id).await?;
        if old.revoked_at.is_some() {
            return Err(AuthError::Conflict(
                "the key is already revoked".to_string(),
            ));
        }
        self.revoke_key(id).await?;
        self.create_key(&old.stream, &old.label).await
    }

    /// Revokes a key: refused from now on, and its live sessions end.
    pub async fn revoke_key(&self, id: &str) -> Result<KeyInfo> {
        let now = model::now_ms();
        if !self.inner.store.mark_key_revoked(id, now).await? {
            let k = self.key(id).await?;
            return Err(AuthError::Conflict(format!(
                "key {} is already revoked",
                k.id
            )));
        }
        self.inner.store.revoke(&format!("key:{id}"), now).await?;
        let key = self.key(id).await?;
        self.key_revoked(&key).await;
        Ok(key)
    }

    /// Queues `key.revoked`. The revocation stands whether or not that
    /// works, so a failure is only logged.
    async fn key_revoked(&self, key: &KeyInfo) {
        let data = serde_json::json!({
            "stream": key.stream,
            "key_id": key.id,
            "label": key.label,
        });
        if let Err(e) = self
            .webhooks()
            .emit(webhooks::EventType::KeyRevoked, data)
            .await
        {
            tracing::warn!(key = %key.id, error = %e, "key.revoked webhook not queued");
        }
    }
}
