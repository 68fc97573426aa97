//! The records and the small rules on their fields.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{AuthError, Result, VerifiedToken};

/// Every stream key starts with this, so a Bearer value is told from a JWT
/// at a glance (and a leaked key is easy to scan for).
pub(crate) const KEY_PREFIX: &str = "lk_";

/// What a user may do across the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including user management.
    Admin,
    /// Watches private streams and moderates every chat.
    Moderator,
    /// Owns streams and their keys.
    Broadcaster,
    /// Watches and chats.
    Viewer,
}

impl Role {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Moderator => "moderator",
            Role::Broadcaster => "broadcaster",
            Role::Viewer => "viewer",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "moderator" => Ok(Role::Moderator),
            "broadcaster" => Ok(Role::Broadcaster),
            "viewer" => Ok(Role::Viewer),
            _ => Err(format!(
                "unknown role {s:?}: admin, moderator, broadcaster or viewer"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may watch a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Anyone, and it is listed.
    Public,
    /// Anyone with the URL; not listed.
    Unlisted,
    /// Only with a `subscribe:` token, the owner, moderators and admins.
    Private,
}

impl Visibility {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Unlisted => "unlisted",
            Visibility::Private => "private",
        }
    }
}

impl FromStr for Visibility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "public" => Ok(Visibility::Public),
            "unlisted" => Ok(Visibility::Unlisted),
            "private" => Ok(Visibility::Private),
            _ => Err(format!(
                "unknown visibility {s:?}: public, unlisted or private"
            )),
        }
    }
}

impl fmt::Display for Visibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignupMode {
    /// Anyone (as a broadcaster).
    Open,
    /// Whoever has an invite code from an admin.
    InviteOnly,
    /// Nobody; admins create accounts.
    Off,
}

impl FromStr for SignupMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(SignupMode::Open),
            "invite-only" => Ok(SignupMode::InviteOnly),
            "off" => Ok(SignupMode::Off),
            _ => Err(format!(
                "unknown sign up mode {s:?}: open, invite-only or off"
            )),
        }
    }
}

impl fmt::Display for SignupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignupMode::Open => "open",
            SignupMode::InviteOnly => "invite-only",
            SignupMode::Off => "off",
        })
    }
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct User {
    /// Opaque id.
    pub id: String,
    /// Unique log in name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Disabled users cannot log in and their credentials stop working.
    pub disabled: bool,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

/// A stream's record: who owns it and who may watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Stream {
    /// The name in `/whip/{name}` and `/whep/{name}`.
    pub name: String,
    /// Owner's id.
    pub owner_id: String,
    /// Owner's name.
    pub owner_name: String,
    /// Who may watch.
    pub visibility: Visibility,
    /// Free text.
    pub title: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

/// A stream key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct KeyInfo {
    /// Opaque id.
    pub id: String,
    /// The stream it publishes to.
    pub stream: String,
    /// The owner's label ("OBS studio", "backup encoder").
    pub label: String,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// When it last opened a session.
    pub last_used_at: Option<i64>,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

/// A key just made: the only time its secret is known.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NewKey {
    /// The record.
    #[serde(flatten)]
    pub info: KeyInfo,
    /// The secret (`lk_…`), the Bearer token of WHIP.
    #[serde(rename = "key")]
    pub secret: String,
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct WebSession {
    /// The cookie's value.
    pub token: String,
    /// The value state-changing requests send in `X-CSRF-Token`.
    pub csrf: String,
    /// Who.
    pub user: User,
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Nobody in particular.
    Anonymous,
    /// A logged-in user (web session).
    User(User),
    /// A stream key.
    Key {
        /// Key id.
        id: String,
        /// The stream it publishes to.
        stream: String,
        /// The stream's owner.
        owner_id: Option<String>,
    },
    /// A JWT.
    Token(VerifiedToken),
}

/// What an allowed request opened a session with: when one of
/// `credentials` is revoked, the session ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// `key:<id>`, `jwt:<jti>`, `user:<id>`.
    pub credentials: Vec<String>,
    /// The user the session counts against, if any.
    pub user_id: Option<String>,
}

/// `bytes` random bytes as lowercase hex.
pub(crate) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a secret, as hex: how keys, codes and session tokens are
/// stored (they are random and long, so a fast hash suffices).
pub(crate) fn digest(secret: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A stream name: what signaling accepts in a URL.
pub(crate) fn check_stream_name(name: &str) -> Result<()> {
    if crate::scope::is_stream_name(name) {
        Ok(())
    } else {
        Err(AuthError::Invalid(
            crate::scope::STREAM_NAME_RULE.to_string(),
        ))
    }
}

pub(crate) fn check_user_name(name: &str) -> Result<()> {
    let ok = (2..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(
            "a user name is 2 to 32 letters, digits, '-', '_' or '.', not starting with '.'"
                .to_string(),
        ))
    }
}

/// Passwords: 8 to 1024 characters (argon2 takes any bytes; the upper bound
/// keeps hashing cost bounded).
pub(crate) fn check_password(pw: &str) -> Result<()> {
    let n = pw.chars().count();
    if !(8..=1024).contains(&n) {
        return Err(AuthError::Invalid(
            "a password is 8 to 1024 characters".to_string(),
        ));
    }
    Ok(())
}

pub(crate) fn check_label(label: &str) -> Result<()> {
    if label.chars().count() > 64 || label.chars().any(char::is_control) {
        return Err(AuthError::Invalid(
            "a key label is at most 64 characters, without control characters".to_string(),
        ));
    }
    Ok(())
}

pub(crate) fn check_title(title: &str) -> Result<()> {
    if title.chars().count() > 200 || title.chars().any(char::is_control) {
        return Err(AuthError::Invalid(
            "a title is at most 200 characters, without control characters".to_string(),
        ));
    }
    Ok(())
}
