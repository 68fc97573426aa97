//! Who a Bearer value is, and what it may do to a stream: `Auth::principal`
//! and `Auth::authorize`, tokens and the revocation feed.

use std::time::Duration;

use crate::model::{self, Grant, Principal, Role, Visibility};
use crate::{Action, Auth, AuthError, Result, Scopes};

impl Auth {
    /// Who a `Bearer` value is: a stream key or a JWT.
    pub async fn principal(&self, bearer: &str) -> Result<Principal> {
        let bearer = bearer.trim();
        if bearer.starts_with(model::KEY_PREFIX) {
            let Some(key) = self.inner.store.key_by_hash(&model::digest(bearer)).await? else {
                return Err(AuthError::Unauthenticated(
                    "unknown or revoked stream key".to_string(),
                ));
            };
            if key.revoked_at.is_some() {
                return Err(AuthError::Unauthenticated(
                    "unknown or revoked stream key".to_string(),
                ));
            }
            let owner = self.inner.store.stream_owner(&key.stream).await?;
            if let Some(owner) = &owner
                && owner.disabled
            {
                return Err(AuthError::Forbidden(
                    "the stream's owner is disabled".to_string(),
                ));
            }
            self.inner.store.touch_key(&key.id, model::now_ms()).await?;
            return Ok(Principal::Key {
                id: key.id,
                stream: key.stream,
                owner_id: owner.map(|o| o.id),
            });
        }
        let token = self.inner.tokens.verify(bearer).await?;
        if let Some(jti) = &token.id
            && self.inner.store.is_revoked(&format!("jwt:{jti}")).await?
        {
            return Err(AuthError::Unauthenticated(
                "the token was revoked".to_string(),
            ));
        }
        if let Some(user) = self.inner.store.user(&token.subject).await?
            && user.disabled
        {
            return Err(AuthError::Forbidden(
                "the token's user is disabled".to_string(),
            ));
        }
        Ok(Principal::Token(token))
    }

    /// Whether `principal` may do `action` on `stream`, and what the
    /// session it opens must be ended with.
    pub async fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        stream: &str,
    ) -> Result<Grant> {
        let record = self.inner.store.stream(stream).await?;
        let visibility = record
            .as_ref()
            .map(|s| s.visibility)
            .unwrap_or(Visibility::Public);
        let owner_id = record.as_ref().map(|s| s.owner_id.clone());
        match principal {
            Principal::Anonymous => {
                if action == Action::Subscribe && visibility != Visibility::Private {
                    return Ok(public_grant(stream, None));
                }
                Err(AuthError::Unauthenticated(match action {
                    Action::Publish => {
                        "publishing needs a stream key or a token with publish:{stream} as Bearer"
                            .to_string()
                    }
                    _ => "this stream needs a credential".to_string(),
                }))
            }
            Principal::Key {
                id,
                stream: own,
                owner_id: key_owner,
            } => {
                if action == Action::Publish && own == stream {
                    Ok(Grant {
                        credentials: [
                            Some(format!("key:{id}")),
                            key_owner.as_ref().map(|o| format!("user:{o}")),
                        ]
                        .into_iter()
                        .flatten()
                        .collect(),
                        user_id: key_owner.clone(),
                    })
                } else if action == Action::Subscribe && visibility != Visibility::Private {
                    Ok(public_grant(stream, None))
                } else {
                    Err(AuthError::Forbidden(format!(
                        "this stream key does not allow that on {stream}"
                    )))
                }
            }
            Principal::Token(t) => {
                let scoped = t.scopes.allows(action, stream);
                if scoped || (action == Action::Subscribe && visibility != Visibility::Private) {
                    let user = self.inner.store.user(&t.subject).await?.map(|u| u.id);
                    let mut grant = Grant {
                        credentials: [
                            t.id.as_ref().map(|j| format!("jwt:{j}")),
                            user.as_ref().map(|u| format!("user:{u}")),
                        ]
                        .into_iter()
                        .flatten()
                        .collect(),
                        user_id: user,
                    };
                    if !scoped {
                        grant.credentials.push(public_credential(stream));
                    }
                    Ok(grant)
                } else {
                    Err(AuthError::Forbidden(format!(
                        "the token's scopes do not allow that on {stream}"
                    )))
                }
            }
            Principal::User(u) => {
                // Allowed whatever the visibility.
                let privileged = u.role == Role::Admin
                    || owner_id.as_deref() == Some(u.id.as_str())
                    || (matches!(action, Action::Subscribe | Action::Chat | Action::Moderate)
                        && u.role == Role::Moderator);
                let public = matches!(action, Action::Subscribe | Action::Chat)
                    && visibility != Visibility::Private;
                if privileged || public {
                    let mut grant = Grant {
                        credentials: vec![format!("user:{}", u.id)],
                        user_id: Some(u.id.clone()),
                    };
                    if !privileged {
                        grant.credentials.push(public_credential(stream));
                    }
                    Ok(grant)
                } else {
                    Err(AuthError::Forbidden(format!(
                        "{} may not do that on {stream}",
                        u.name
                    )))
                }
            }
        }
    }

    /// Mints a token for `subject` with `scopes`, valid for `ttl`.
    pub fn mint(&self, subject: &str, scopes: &Scopes, ttl: Duration) -> Result<String> {
        Ok(self.inner.tokens.mint(subject, scopes, ttl)?)
    }

    /// lumen's public keys as a JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        self.inner.tokens.jwks()
    }

    /// Ends a token by its `jti`: refused from now on, and its live
    /// sessions end.
    pub async fn revoke_token(&self, jti: &str) -> Result<()> {
        self.inner
            .store
            .revoke(&format!("jwt:{jti}"), model::now_ms())
            .await
    }

    /// Credentials revoked at or after `since` (ms since the epoch), with
    /// the time of each: the feed a node follows to end live sessions.
    pub async fn revocations_since(&self, since: i64) -> Result<Vec<(String, i64)>> {
        self.inner.store.revocations_since(since).await
    }
}

/// The credential of a session allowed only because its stream is public
/// or unlisted: revoked when the stream turns private.
pub(crate) fn public_credential(stream: &str) -> String {
    format!("public:{stream}")
}

fn public_grant(stream: &str, user_id: Option<String>) -> Grant {
    Grant {
        credentials: vec![public_credential(stream)],
        user_id,
    }
}
