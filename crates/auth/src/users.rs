//! Users, log in and web sessions, sign up and invites.

use std::net::IpAddr;
use std::time::Duration;

use crate::model::{self, Role, SignupMode, User, WebSession};
use crate::{Auth, AuthError, Result, WEB_SESSION_TTL, ms, password};

impl Auth {
    /// Logs in: a new web session, or `Unauthenticated` without saying
    /// whether the user exists; `Throttled` after repeated failures from
    /// this address or for this name.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<WebSession> {
        let now = std::time::Instant::now();
        self.inner.throttle.check(name, client, now)?;
        let found = self.inner.store.user_with_hash(name).await?;
        let hash = found
            .as_ref()
            .map(|(_, h)| h.clone())
            .unwrap_or_else(|| self.inner.dummy_hash.clone());
        let ok = password::verify(password.to_string(), hash).await?;
        match found {
            Some((user, _)) if ok && !user.disabled => {
                self.inner.throttle.success(name, client);
                self.open_web_session(user).await
            }
            _ => {
                self.inner.throttle.failure(name, client, now);
                Err(AuthError::Unauthenticated(
                    "wrong name or password".to_string(),
                ))
            }
        }
    }

    /// A new web session for `user` (after setup or sign up).
    pub async fn open_web_session(&self, user: User) -> Result<WebSession> {
        let token = model::random_token(32);
        let csrf = model::random_token(16);
        self.inner
            .store
            .insert_web_session(
                &model::digest(&token),
                &user.id,
                &csrf,
                model::now_ms(),
                model::now_ms() + ms(WEB_SESSION_TTL),
            )
            .await?;
        Ok(WebSession { token, csrf, user })
    }

    /// Counts a sign up attempt from `client`: like failed log ins, more
    /// than the free number of them from one address must wait
    /// (`Throttled`), so accounts cannot be made in a loop.
    pub fn count_signup(&self, client: Option<std::net::IpAddr>) -> Result<()> {
        let now = std::time::Instant::now();
        self.inner.throttle.check_addr(client, now)?;
        self.inner.throttle.failure_addr(client, now);
        Ok(())
    }

    /// The user and CSRF token of a web session cookie, if it is valid.
    pub async fn web_session(&self, token: &str) -> Result<Option<(User, String)>> {
        let found = self
            .inner
            .store
            .web_session(&model::digest(token), model::now_ms())
            .await?;
        Ok(found.filter(|(u, _)| !u.disabled))
    }

    /// Ends a web session.
    pub async fn logout(&self, token: &str) -> Result<()> {
        self.inner
            .store
            .delete_web_session(&model::digest(token))
            .await
    }

    /// Signs up by the configured [`SignupMode`].
    pub async fn signup(&self, name: &str, password: &str, invite: Option<&str>) -> Result<User> {
        match self.inner.config.signup {
            SignupMode::Off => Err(AuthError::Forbidden(
                "sign up is off on this server; ask an admin for an account".to_string(),
            )),
            SignupMode::Open => self.create_user(name, password, Role::Broadcaster).await,
            SignupMode::InviteOnly => {
                let Some(code) = invite else {
                    return Err(AuthError::Forbidden(
                        "sign up needs an invite code".to_string(),
                    ));
                };
                let Some(role) = self
                    .inner
                    .store
                    .take_invite(&model::digest(code), model::now_ms())
                    .await?
                else {
                    return Err(AuthError::Forbidden(
                        "the invite code is wrong, used or expired".to_string(),
                    ));
                };
                self.create_user(name, password, role).await
            }
        }
    }

    /// A one-time invite code for a user of `role`, valid for `ttl`.
    pub async fn create_invite(&self, by: &User, role: Role, ttl: Duration) -> Result<String> {
        let code = model::random_token(16);
        self.inner
            .store
            .insert_invite(
                &model::digest(&code),
                role,
                &by.id,
                model::now_ms(),
                model::now_ms() + ms(ttl),
            )
            .await?;
        Ok(code)
    }

    /// Creates a user.
    pub async fn create_user(&self, name: &str, password: &str, role: Role) -> Result<User> {
        model::check_user_name(name)?;
        model::check_password(password)?;
        let hash = password::hash(password.to_string()).await?;
        let user = User {
            id: model::random_token(12),
            name: name.to_string(),
            role,
            disabled: false,
            created_at: model::now_ms(),
        };
        self.inner.store.insert_user(&user, &hash).await?;
        Ok(user)
    }

    /// A user by id.
    pub async fn user(&self, id: &str) -> Result<User> {
        self.inner
            .store
            .user(id)
            .await?
            .ok_or_else(|| AuthError::NotFound("no such user".to_string()))
    }

    /// A user by name.
    pub async fn user_by_name(&self, name: &str) -> Result<User> {
        self.inner
            .store
            .user_with_hash(name)
            .await?
            .map(|(u, _)| u)
            .ok_or_else(|| AuthError::NotFound("no such user".to_string()))
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<User>> {
        self.inner.store.users().await
    }

    /// Changes a user's role.
    pub async fn set_role(&self, id: &str, role: Role) -> Result<User> {
        let user = self.user(id).await?;
        if user.role == Role::Admin && role != Role::Admin {
            self.keep_an_admin(&user).await?;
        }
        self.inner.store.set_role(id, role).await?;
        self.user(id).await
    }

    /// Disables (or enables) a user: a disabled user cannot log in, their
    /// keys and tokens stop working, and their live sessions end.
    pub async fn set_disabled(&self, id: &str, disabled: bool) -> Result<User> {
        let user = self.user(id).await?;
        if disabled && user.role == Role::Admin {
            self.keep_an_admin(&user).await?;
        }
        self.inner.store.set_disabled(id, disabled).await?;
        if disabled {
            self.inner.store.delete_web_sessions_of(id).await?;
            self.inner
                .store
                .revoke(&format!("user:{id}"), model::now_ms())
                .await?;
        }
        self.user(id).await
    }

    /// Deletes a user with their streams and keys; their live sessions end.
    pub async fn delete_user(&self, id: &str) -> Result<()> {
        let user = self.user(id).await?;
        if user.role == Role::Admin {
            self.keep_an_admin(&user).await?;
        }
        self.inner.store.delete_user(id).await?;
        self.inner
            .store
            .revoke(&format!("user:{id}"), model::now_ms())
            .await
    }

    /// Changes a user's password; their other web sessions end.
    pub async fn set_password(&self, id: &str, password: &str) -> Result<()> {
        model::check_password(password)?;
        let hash = password::hash(password.to_string()).await?;
        self.inner.store.set_password(id, &hash).await?;
        self.inner.store.delete_web_sessions_of(id).await
    }

    async fn keep_an_admin(&self, user: &User) -> Result<()> {
        let admins = self.inner.store.count_active_admins().await?;
        if admins <= 1 && !user.disabled {
            return Err(AuthError::Conflict(
                "this is the last active admin".to_string(),
            ));
        }
        Ok(())
    }
}
