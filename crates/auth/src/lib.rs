//! lumen's accounts and access control: users (argon2id), roles, streams
//! with a visibility, stream keys (stored hashed), JWT scopes, web sessions,
//! the first-run setup code, and the revocation feed that ends the live
//! sessions of a revoked credential; also the stored side of chat
//! ([`chat`]: messages, moderation log, reports, bans).
//!
//! One sqlx code path for the embedded SQLite file and PostgreSQL at scale
//! (the `Any` driver, portable SQL, one set of migrations). No HTTP here:
//! signaling calls [`Auth`] from its extractors and handlers.
#![deny(missing_docs)]

pub mod chat;
mod model;
mod password;
mod policy;
pub mod recordings;
pub mod scope;
mod store;
mod streams;
#[doc(hidden)]
pub mod testing;
mod throttle;
pub mod tokens;
mod users;
pub mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use model::{
    Grant, KeyInfo, NewKey, Principal, Role, SignupMode, Stream, User, Visibility, WebSession,
};
pub use scope::{Action, Scopes};
pub use tokens::{
    ExternalIssuer, JwksSource, KEY_FILE, TokenConfig, TokenError, TokenService, VerifiedToken,
};

use store::Store;
use throttle::Throttle;

/// How accounts are kept and checked.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Where the SQLite file (`lumen.db`) and the token key pair live.
    pub data_dir: PathBuf,
    /// `postgres://…` (or `sqlite://…`) instead of the data dir's SQLite file.
    pub database_url: Option<String>,
    /// `iss` of lumen's tokens.
    pub issuer: String,
    /// `aud` of lumen's tokens.
    pub audience: String,
    /// Also accept HS256 tokens signed with this secret.
    pub hs256_secret: Option<String>,
    /// Issuers whose tokens are accepted besides lumen's own.
    pub external_issuers: Vec<ExternalIssuer>,
    /// Who may sign up.
    pub signup: SignupMode,
    /// Creates the first admin with this password when there is none
    /// (`LUMEN_ADMIN_PASSWORD`), instead of the one-time setup code.
    pub admin_password: Option<String>,
    /// Per-user limits.
    pub limits: AccountLimits,
    /// How webhooks are delivered.
    pub webhooks: webhooks::WebhookConfig,
}

/// Per-user limits (0: none).
#[derive(Debug, Clone)]
pub struct AccountLimits {
    /// Streams a user may own (admins: no limit).
    pub streams_per_user: usize,
    /// Live (not revoked) keys a stream may have.
    pub keys_per_stream: usize,
    /// Media sessions a user's credentials may hold at once.
    pub sessions_per_user: usize,
    /// Failed log ins for one name or address before each further attempt
    /// waits (doubling, up to 15 minutes).
    pub login_failures: u32,
}

impl Default for AccountLimits {
    fn default() -> Self {
        AccountLimits {
            streams_per_user: 20,
            keys_per_stream: 10,
            sessions_per_user: 50,
            login_failures: 5,
        }
    }
}

impl AuthConfig {
    /// Defaults over `data_dir`: SQLite there, issuer and audience `lumen`,
    /// sign up off.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        AuthConfig {
            data_dir: data_dir.into(),
            database_url: None,
            issuer: "lumen".to_string(),
            audience: "lumen".to_string(),
            hs256_secret: None,
            external_issuers: Vec::new(),
            signup: SignupMode::Off,
            admin_password: None,
            limits: AccountLimits::default(),
            webhooks: webhooks::WebhookConfig::default(),
        }
    }

    fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("lumen.db").display()
            ),
        }
    }
}

/// What went wrong. The messages are safe to show a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credential, or one that is not valid (`401`).
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid credential that does not allow this (`403`).
    #[error("{0}")]
    Forbidden(String),
    /// No such user, stream or key (`404`).
    #[error("{0}")]
    NotFound(String),
    /// The name is taken (`409`).
    #[error("{0}")]
    Conflict(String),
    /// The input is not acceptable (`422`).
    #[error("{0}")]
    Invalid(String),
    /// Too many attempts; retry after this many seconds (`429`).
    #[error("too many attempts; retry in {retry_after} s")]
    Throttled {
        /// Seconds.
        retry_after: u64,
    },
    /// The database failed (`503`); details are logged, not shown.
    #[error("the account store is unavailable")]
    Store(#[source] sqlx::Error),
    /// The token keys could not be loaded or used.
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl From<sqlx::Error> for AuthError {
    fn from(e: sqlx::Error) -> Self {
        tracing::warn!(error = %e, "account store error");
        AuthError::Store(e)
    }
}

impl From<sqlx::migrate::MigrateError> for AuthError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        AuthError::Store(sqlx::Error::Migrate(Box::new(e)))
    }
}

/// Result of this crate.
pub type Result<T, E = AuthError> = std::result::Result<T, E>;

/// The account service: cheap to clone, shared by every handler.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    tokens: TokenService,
    config: AuthConfig,
    throttle: Throttle,
    /// An argon2 hash verified when a log in names no user, so that log in
    /// takes as long for unknown users as for known ones.
    dummy_hash: String,
    webhooks: webhooks::Shared,
}

/// How long a setup code is valid.
pub const SETUP_CODE_TTL: Duration = Duration::from_secs(3600);
/// How long a web session lasts.
pub const WEB_SESSION_TTL: Duration = Duration::from_secs(14 * 24 * 3600);

impl Auth {
    /// Connects to the database (creating the SQLite file), runs the
    /// migrations, loads or creates the token keys, and creates the first
    /// admin when `admin_password` is set and there is none.
    pub async fn open(config: AuthConfig) -> Result<Auth> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            AuthError::Invalid(format!(
                "cannot create data directory {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let store = Store::connect(&config.database_url()).await?;
        let tokens = TokenService::open(TokenConfig {
            data_dir: config.data_dir.clone(),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            hs256_secret: config.hs256_secret.clone(),
            external: config.external_issuers.clone(),
            leeway: Duration::from_secs(30),
        })?;
        let dummy_hash = password::hash("not a password of anyone".to_string()).await?;
        let auth = Auth {
            inner: Arc::new(Inner {
                store,
                tokens,
                throttle: Throttle::new(config.limits.login_failures),
                config,
                dummy_hash,
                webhooks: webhooks::Shared::default(),
            }),
        };
        if let Some(pw) = auth.inner.config.admin_password.clone()
            && !auth.inner.store.has_admin().await?
        {
            let user = auth.create_user("admin", &pw, Role::Admin).await?;
            tracing::info!(user = %user.name, "created the first admin from LUMEN_ADMIN_PASSWORD");
        }
        Ok(auth)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// Which database it uses: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.inner.store.backend()
    }

    // ---- first run ----

    /// When no admin exists: a fresh one-time setup code (valid
    /// [`SETUP_CODE_TTL`]; earlier ones stop working). `None` once set up.
    pub async fn setup_code(&self) -> Result<Option<String>> {
        if self.inner.store.has_admin().await? {
            return Ok(None);
        }
        let code = model::random_token(16);
        self.inner
            .store
            .replace_setup_code(&model::digest(&code), model::now_ms() + ms(SETUP_CODE_TTL))
            .await?;
        Ok(Some(code))
    }

    /// Whether the first admin exists.
    pub async fn is_set_up(&self) -> Result<bool> {
        self.inner.store.has_admin().await
    }

    /// Creates the first admin with a valid setup code.
    pub async fn complete_setup(&self, code: &str, name: &str, password: &str) -> Result<User> {
        if self.inner.store.has_admin().await? {
            return Err(AuthError::Forbidden("lumen is already set up".to_string()));
        }
        // Checked before the code is spent.
        model::check_user_name(name)?;
        model::check_password(password)?;
        if !self
            .inner
            .store
            .take_setup_code(&model::digest(code), model::now_ms())
            .await?
        {
            return Err(AuthError::Forbidden(
                "the setup code is wrong or expired; restart lumen for a new one".to_string(),
            ));
        }
        self.create_user(name, password, Role::Admin).await
    }
}

/// SHA-256 of a secret as hex: how keys and session tokens are stored, and
/// how a session remembers the Bearer value that created it.
pub fn fingerprint(secret: &str) -> String {
    model::digest(secret)
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

#[cfg(test)]
mod tests;
