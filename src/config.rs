//! `lumen.toml`, environment variables and flags, merged into one
//! [`LumenConfig`] with figment.
//!
//! Precedence, lowest first: embedded defaults, the configuration file
//! (`--config` / `LUMEN_CONFIG`, else `./lumen.toml` if it exists), `LUMEN_*`
//! environment variables, command-line flags. Each environment variable and
//! each flag is its own figment layer, so an error or `lumen config print`
//! names the exact variable, flag or file a value came from.
//!
//! To add a setting: a documented field in its section (a new capability
//! adds a section struct), a row in [`ENV`], and if it deserves one a flag in
//! [`ConfigArgs`] with its entry in `ConfigArgs::flag_layers`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::builder::{OsStringValueParser, TypedValueParser as _};
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::{Deserialize, Serialize};

/// The file read when neither `--config` nor `LUMEN_CONFIG` names one.
pub const DEFAULT_FILE: &str = "lumen.toml";

/// lumen's whole configuration, as in `lumen.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LumenConfig {
    /// Where lumen keeps its data, relative to the working directory.
    /// Default `lumen-data`; `LUMEN_DATA_DIR`, `--data-dir`.
    pub data_dir: PathBuf,
    /// `[http]`: the HTTP server (WHIP, WHEP, API, web client, metrics).
    pub http: HttpConfig,
    /// `[media]`: the SFU workers' UDP sockets and how clients reach them.
    pub media: MediaConfig,
    /// `[limits]`: what one client may make the server hold.
    pub limits: LimitsConfig,
    /// `[auth]`: accounts, stream keys and tokens.
    pub auth: AuthSection,
    /// `[chat]`: the rules each stream's chat room starts with.
    pub chat: lumen_signaling::ChatSettings,
    /// `[recording]`: which streams are recorded, where to, sealed with
    /// which keys, kept how long.
    pub recording: lumen_signaling::recorder::RecorderConfig,
    /// `[transcode]`: the ladder made for streams that send one H.264
    /// layer (on/off, its rungs, the CPU budget).
    pub transcode: lumen_signaling::transcoder::TranscodeConfig,
    /// `[cluster]`: the relay tree this node joins (none: a cluster of one).
    pub cluster: ClusterSection,
}

/// `[cluster]` of `lumen.toml`: many `lumen serve` processes as one
/// platform (see docs/scaling.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// `redis://host:port/db` of the cluster's directory. Default none (a
    /// cluster of one); `LUMEN_REDIS_URL`, `--redis-url`.
    pub redis_url: Option<String>,
    /// This node's name in the cluster: letters, digits, `-`, `_`, `.`.
    /// Default `<host name>-<HTTP port>`; `LUMEN_NODE_ID`, `--node-id`.
    pub node_id: Option<String>,
    /// This node's region. Default `default`; `LUMEN_REGION`, `--region`.
    pub region: String,
    /// The URL other nodes (and redirected clients) reach this node at.
    /// Default the HTTP listener's; `LUMEN_PUBLIC_URL`, `--public-url`.
    pub public_url: Option<String>,
    /// Relay links to child nodes this node feeds at most. Default 50;
    /// `LUMEN_FANOUT_LIMIT`, `--fanout-limit`.
    pub fanout_limit: u32,
    /// On SIGTERM, how long the node drains (viewers move to other nodes)
    /// before it stops anyway, in seconds. Default 30;
    /// `LUMEN_DRAIN_TIMEOUT`, `--drain-timeout`.
    pub drain_timeout_secs: u64,
}

/// Default of `cluster.drain_timeout_secs`.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 30;

impl Default for ClusterSection {
    fn default() -> Self {
        LumenConfig::default().cluster
    }
}

/// `[auth]` of `lumen.toml`: where accounts live and which tokens count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// `postgres://user:password@host/db` to keep accounts in PostgreSQL
    /// (several nodes share it) instead of `lumen.db` in the data dir.
    /// Default none; `LUMEN_DATABASE_URL` or `DATABASE_URL`,
    /// `--database-url`.
    pub database_url: Option<String>,
    /// Who may sign up: `off` (admins create accounts), `invite-only`, or
    /// `open`. Default `off`; `LUMEN_SIGNUP`, `--signup`.
    pub signup: lumen_signaling::auth::SignupMode,
    /// Creates the first admin (`admin`) with this password when there is
    /// none, instead of printing a one-time setup URL. Default none;
    /// `LUMEN_ADMIN_PASSWORD`.
    pub admin_password: Option<String>,
    /// Also accept HS256 tokens signed with this shared secret (lumen
    /// itself signs with EdDSA). Default none; `LUMEN_JWT_SECRET`.
    pub jwt_secret: Option<String>,
    /// `iss` of lumen's tokens. Default `lumen`; `LUMEN_JWT_ISSUER`.
    pub issuer: String,
    /// `aud` of lumen's tokens, required of every token. Default `lumen`;
    /// `LUMEN_JWT_AUDIENCE`.
    pub audience: String,
    /// Other issuers whose tokens are accepted (`[[auth.external]]`
    /// tables): a site with its own accounts mints viewer tokens.
    pub external: Vec<ExternalIssuerSection>,
    /// Streams a user may own (admins: no limit; 0: none). Default 20.
    pub streams_per_user: usize,
    /// Live keys a stream may have (0: no limit). Default 10.
    pub keys_per_stream: usize,
    /// Media sessions one user's credentials may hold at once (0: no
    /// limit). Default 50; `LUMEN_SESSIONS_PER_USER`.
    pub sessions_per_user: usize,
    /// Failed log ins for one name or address before each further attempt
    /// waits (doubling from 1 s to 15 min; 0: never). Default 5.
    pub login_failures: u32,
}

/// `[[auth.external]]`: an issuer whose tokens lumen accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalIssuerSection {
    /// Its `iss`.
    pub issuer: String,
    /// The `aud` its tokens carry (default: lumen's audience).
    #[serde(default)]
    pub audience: Option<String>,
    /// Its JWKS over HTTP (`http://…/.well-known/jwks.json`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Its JWKS in a file.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
}

/// `[limits]` of `lumen.toml`: the bounds that keep one client from
/// starving the others (`SECURITY.md` lists them). 0 turns a count or rate
/// limit off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Seconds a client may take to send a request's headers; also how
    /// long an idle keep-alive connection stays open. Default 10;
    /// `LUMEN_HEADER_TIMEOUT`.
    pub header_timeout_secs: u64,
    /// Seconds a client may take to send a request's body (then `408`).
    /// Default 10; `LUMEN_BODY_TIMEOUT`.
    pub body_timeout_secs: u64,
    /// Open HTTP connections at most, kept below the file-descriptor limit
    /// (then `503`). Default 4096; `LUMEN_MAX_CONNECTIONS`,
    /// `--max-connections`.
    pub max_connections: usize,
    /// Sessions one client address may create per second on average (then
    /// `429`). Default 10; `LUMEN_SESSION_RATE`, `--session-rate`.
    pub session_rate: f64,
    /// Sessions one client address may create at once after a quiet while.
    /// Default 50; `LUMEN_SESSION_BURST`.
    pub session_burst: u32,
    /// Sessions one client address may hold (then `429`). Default 100;
    /// `LUMEN_SESSIONS_PER_CLIENT`, `--sessions-per-client`.
    pub sessions_per_client: usize,
    /// Sessions the server holds from everyone (then `503`). Default
    /// 20000; `LUMEN_MAX_SESSIONS`, `--max-sessions`.
    pub max_sessions: usize,
    /// Concurrent readers of one WHEP session's event streams (then `429`).
    /// Default 4; `LUMEN_EVENT_READERS_PER_SESSION`.
    pub event_readers_per_session: usize,
    /// Concurrent event-stream readers from one client address (then
    /// `429`). Default 64; `LUMEN_EVENT_READERS_PER_CLIENT`.
    pub event_readers_per_client: usize,
    /// Remote ICE candidates a session may give, in its offer and trickled
    /// (then `429`). Default 64; `LUMEN_MAX_CANDIDATES`.
    pub max_candidates: usize,
    /// m-lines an offer may have (then `413`). Default 16;
    /// `LUMEN_MAX_M_LINES`.
    pub max_m_lines: usize,
    /// Source addresses one session's media may come from (more are
    /// dropped and counted). Default 8; `LUMEN_MAX_ADDRS_PER_SESSION`.
    pub max_addrs_per_session: usize,
    /// Seconds a session may take to complete ICE and DTLS before it is
    /// closed (a publisher's stream name is then free). Default 15;
    /// `LUMEN_CONNECT_TIMEOUT`.
    pub connect_timeout_secs: u64,
}

/// `[http]` of `lumen.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address. Default `127.0.0.1:8080`; `LUMEN_HTTP_ADDR`,
    /// `--http-addr`.
    pub addr: SocketAddr,
    /// PEM certificate chain: with `tls_key`, the listener serves HTTPS
    /// (and redirects plain HTTP). Default none; `LUMEN_TLS_CERT`,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`. Default none; `LUMEN_TLS_KEY`,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// Networks of reverse proxies whose `Forwarded` / `X-Forwarded-For`
    /// and `X-Forwarded-Proto` headers name the client (CIDR, or one
    /// address). Default none; `LUMEN_TRUSTED_PROXIES` (comma-separated),
    /// `--trusted-proxy` (repeatable).
    pub trusted_proxies: Vec<lumen_signaling::Cidr>,
}

/// `[media]` of `lumen.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// UDP address of the first worker; worker `i` uses port + `i`.
    /// Default `127.0.0.1:8000`; `LUMEN_RTC_ADDR`, `--rtc-addr`.
    pub addr: SocketAddr,
    /// IP announced in ICE candidates instead of the bound one. Default
    /// none; `LUMEN_PUBLIC_IP`, `--public-ip`.
    pub public_ip: Option<IpAddr>,
    /// UDP port announced for the first worker (worker `i`: + `i`) when a
    /// NAT or proxy forwards another port to it. Default none (the bound
    /// port); `LUMEN_PUBLIC_PORT`, `--public-port`.
    pub public_port: Option<u16>,
    /// STUN/TURN URLs announced to clients in `Link: rel="ice-server"`
    /// headers. They live here rather than in `[http]` because they are
    /// about reaching the media sockets. Default none;
    /// `LUMEN_ICE_SERVERS` (comma-separated), `--ice-server` (repeatable).
    pub ice_servers: Vec<String>,
    /// Number of SFU workers (0 counts as 1). Default one per core;
    /// `LUMEN_WORKERS`, `--workers`.
    pub workers: usize,
    /// How many more peers a stream's worker may have than the least busy
    /// one before its new viewers go to another worker (0: spread every
    /// stream over all workers). Default 32; `LUMEN_WORKER_SPREAD`,
    /// `--worker-spread`.
    pub worker_spread: usize,
}

/// The embedded defaults are the server's own, so the two cannot drift.
impl Default for LumenConfig {
    fn default() -> Self {
        lumen_signaling::Config::new().into()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        LumenConfig::default().http
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        LumenConfig::default().media
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LumenConfig::default().limits
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        LumenConfig::default().auth
    }
}

impl From<lumen_signaling::Config> for LumenConfig {
    fn from(c: lumen_signaling::Config) -> Self {
        LumenConfig {
            data_dir: c.data_dir,
            http: HttpConfig {
                addr: c.http_addr,
                tls_cert: c.tls.as_ref().map(|t| t.cert.clone()),
                tls_key: c.tls.as_ref().map(|t| t.key.clone()),
                trusted_proxies: c.trusted_proxies,
            },
            media: MediaConfig {
                addr: c.rtc_addr,
                public_ip: c.public_ip,
                public_port: c.public_port,
                ice_servers: c.ice_servers,
                workers: c.workers,
                worker_spread: c.worker_spread,
            },
            limits: LimitsConfig {
                header_timeout_secs: c.header_timeout.as_secs(),
                body_timeout_secs: c.body_timeout.as_secs(),
                max_connections: c.max_connections,
                session_rate: c.limits.session_rate,
                session_burst: c.limits.session_burst,
                sessions_per_client: c.limits.sessions_per_client,
                max_sessions: c.limits.max_sessions,
                event_readers_per_session: c.limits.event_readers_per_session,
                event_readers_per_client: c.limits.event_readers_per_client,
                max_candidates: c.max_remote_candidates,
                max_m_lines: c.max_m_lines,
                max_addrs_per_session: c.max_addrs_per_session,
                connect_timeout_secs: c.connect_timeout.as_secs(),
            },
            auth: AuthSection {
                database_url: c.auth.database_url,
                signup: c.auth.signup,
                admin_password: c.auth.admin_password,
                jwt_secret: c.auth.hs256_secret,
                issuer: c.auth.issuer,
                audience: c.auth.audience,
                external: c
                    .auth
                    .external_issuers
                    .into_iter()
                    .map(|e| {
                        let (jwks_url, jwks_file) = match e.jwks {
                            lumen_signaling::auth::JwksSource::Url(u) => (Some(u), None),
                            lumen_signaling::auth::JwksSource::File(f) => (None, Some(f)),
                        };
                        ExternalIssuerSection {
                            issuer: e.issuer,
                            audience: e.audience,
                            jwks_url,
                            jwks_file,
                        }
                    })
                    .collect(),
                streams_per_user: c.auth.limits.streams_per_user,
                keys_per_stream: c.auth.limits.keys_per_stream,
                sessions_per_user: c.auth.limits.sessions_per_user,
                login_failures: c.auth.limits.login_failures,
            },
            chat: c.chat,
            recording: c.recording,
            transcode: c.transcode,
            cluster: ClusterSection {
                redis_url: c.cluster.redis_url,
                node_id: c.cluster.node_id,
                region: c
                    .cluster
                    .region
                    .unwrap_or_else(|| lumen_signaling::DEFAULT_REGION.to_string()),
                public_url: c.cluster.public_url,
                fanout_limit: c
                    .cluster
                    .fanout_limit
                    .unwrap_or(lumen_signaling::DEFAULT_FANOUT_LIMIT),
                drain_timeout_secs: c
                    .cluster
                    .drain_timeout
                    .map_or(DEFAULT_DRAIN_TIMEOUT_SECS, |d| d.as_secs()),
            },
        }
    }
}

impl AuthSection {
    /// The external issuers, each with exactly one JWKS source.
    fn external_issuers(&self) -> anyhow::Result<Vec<lumen_signaling::auth::ExternalIssuer>> {
        use lumen_signaling::auth::{ExternalIssuer, JwksSource};
        self.external
            .iter()
            .map(|e| {
                let jwks = match (&e.jwks_url, &e.jwks_file) {
                    (Some(u), None) => JwksSource::Url(u.clone()),
                    (None, Some(f)) => JwksSource::File(f.clone()),
                    _ => anyhow::bail!(
                        "[[auth.external]] issuer {:?} needs exactly one of jwks_url and jwks_file",
                        e.issuer
                    ),
                };
                Ok(ExternalIssuer {
                    issuer: e.issuer.clone(),
                    audience: e.audience.clone(),
                    jwks,
                })
            })
            .collect()
    }
}

impl LumenConfig {
    /// The server's configuration, checked.
    pub fn server(self) -> anyhow::Result<lumen_signaling::Config> {
        let external = self.auth.external_issuers()?;
        self.chat.check().map_err(anyhow::Error::msg)?;
        self.transcode.check().map_err(anyhow::Error::msg)?;
        let mut s: lumen_signaling::Config = self.into();
        s.auth.external_issuers = external;
        Ok(s)
    }

    /// The accounts' configuration (for `lumen admin`, `key`, `token`).
    pub fn auth(self) -> anyhow::Result<lumen_signaling::auth::AuthConfig> {
        Ok(self.server()?.auth())
    }
}

impl From<LumenConfig> for lumen_signaling::Config {
    fn from(c: LumenConfig) -> Self {
        // Field by field on top of `new()`, so settings the server gains
        // before this file knows them keep their defaults.
        let mut s = lumen_signaling::Config::new();
        s.data_dir = c.data_dir;
        s.http_addr = c.http.addr;
        // `load_with` refuses one without the other.
        s.tls = match (c.http.tls_cert, c.http.tls_key) {
            (Some(cert), Some(key)) => Some(lumen_signaling::TlsFiles { cert, key }),
            _ => None,
        };
        s.trusted_proxies = c.http.trusted_proxies;
        s.rtc_addr = c.media.addr;
        s.public_ip = c.media.public_ip;
        s.public_port = c.media.public_port;
        s.ice_servers = c.media.ice_servers;
        s.workers = c.media.workers.max(1);
        s.worker_spread = c.media.worker_spread;
        let l = c.limits;
        // A zero timeout would close every connection at once.
        s.header_timeout = std::time::Duration::from_secs(l.header_timeout_secs.max(1));
        s.body_timeout = std::time::Duration::from_secs(l.body_timeout_secs.max(1));
        s.max_connections = l.max_connections.max(1);
        s.limits = lumen_signaling::Limits {
            session_rate: l.session_rate.max(0.0),
            session_burst: l.session_burst,
            sessions_per_client: l.sessions_per_client,
            max_sessions: l.max_sessions,
            event_readers_per_session: l.event_readers_per_session,
            event_readers_per_client: l.event_readers_per_client,
        };
        s.max_remote_candidates = l.max_candidates.max(1);
        s.max_m_lines = l.max_m_lines.max(1);
        s.max_addrs_per_session = l.max_addrs_per_session.max(1);
        s.connect_timeout = std::time::Duration::from_secs(l.connect_timeout_secs.max(1));
        let a = c.auth;
        s.auth.database_url = a.database_url.filter(|u| !u.trim().is_empty());
        s.auth.signup = a.signup;
        s.auth.admin_password = a.admin_password.filter(|p| !p.is_empty());
        s.auth.hs256_secret = a.jwt_secret.filter(|p| !p.is_empty());
        s.auth.issuer = a.issuer;
        s.auth.audience = a.audience;
        // External issuers need a check: see `LumenConfig::server`.
        s.auth.limits = lumen_signaling::auth::AccountLimits {
            streams_per_user: a.streams_per_user,
            keys_per_stream: a.keys_per_stream,
            sessions_per_user: a.sessions_per_user,
            login_failures: a.login_failures,
        };
        s.chat = c.chat;
        s.recording = c.recording;
        s.transcode = c.transcode;
        let k = c.cluster;
        let given = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        s.cluster = lumen_signaling::ClusterConfig {
            redis_url: given(k.redis_url),
            node_id: given(k.node_id),
            region: given(Some(k.region)),
            public_url: given(k.public_url).map(|u| u.trim_end_matches('/').to_string()),
            fanout_limit: Some(k.fanout_limit),
            drain_timeout: Some(std::time::Duration::from_secs(k.drain_timeout_secs)),
        };
        s
    }
}

/// The environment variables read, the key each sets, and how its text
/// becomes a value. These names predate the file and stay as documented.
pub const ENV: &[(&str, &str, EnvShape)] = &[
    ("LUMEN_DATA_DIR", "data_dir", EnvShape::Text),
    ("LUMEN_HTTP_ADDR", "http.addr", EnvShape::Text),
    ("LUMEN_TLS_CERT", "http.tls_cert", EnvShape::Text),
    ("LUMEN_TLS_KEY", "http.tls_key", EnvShape::Text),
    (
        "LUMEN_TRUSTED_PROXIES",
        "http.trusted_proxies",
        EnvShape::List,
    ),
    ("LUMEN_RTC_ADDR", "media.addr", EnvShape::Text),
    ("LUMEN_PUBLIC_IP", "media.public_ip", EnvShape::Text),
    ("LUMEN_PUBLIC_PORT", "media.public_port", EnvShape::Number),
    ("LUMEN_ICE_SERVERS", "media.ice_servers", EnvShape::List),
    ("LUMEN_WORKERS", "media.workers", EnvShape::Number),
    (
        "LUMEN_WORKER_SPREAD",
        "media.worker_spread",
        EnvShape::Number,
    ),
    (
        "LUMEN_HEADER_TIMEOUT",
        "limits.header_timeout_secs",
        EnvShape::Number,
    ),
    (
        "LUMEN_BODY_TIMEOUT",
        "limits.body_timeout_secs",
        EnvShape::Number,
    ),
    (
        "LUMEN_MAX_CONNECTIONS",
        "limits.max_connections",
        EnvShape::Number,
    ),
    (
        "LUMEN_SESSION_RATE",
        "limits.session_rate",
        EnvShape::Number,
    ),
    (
        "LUMEN_SESSION_BURST",
        "limits.session_burst",
        EnvShape::Number,
    ),
    (
        "LUMEN_SESSIONS_PER_CLIENT",
        "limits.sessions_per_client",
        EnvShape::Number,
    ),
    (
        "LUMEN_MAX_SESSIONS",
        "limits.max_sessions",
        EnvShape::Number,
    ),
    (
        "LUMEN_EVENT_READERS_PER_SESSION",
        "limits.event_readers_per_session",
        EnvShape::Number,
    ),
    (
        "LUMEN_EVENT_READERS_PER_CLIENT",
        "limits.event_readers_per_client",
        EnvShape::Number,
    ),
    (
        "LUMEN_MAX_CANDIDATES",
        "limits.max_candidates",
        EnvShape::Number,
    ),
    ("LUMEN_MAX_M_LINES", "limits.max_m_lines", EnvShape::Number),
    (
        "LUMEN_CHAT_RATE_LIMIT_MESSAGES",
        "chat.rate_limit_messages",
        EnvShape::Number,
    ),
    (
        "LUMEN_CHAT_RATE_LIMIT_SECONDS",
        "chat.rate_limit_seconds",
        EnvShape::Number,
    ),
    (
        "LUMEN_CHAT_FILTER_WORDS",
        "chat.filter_words",
        EnvShape::List,
    ),
    ("LUMEN_RECORDING", "recording.policy", EnvShape::Text),
    // (`true` / `false` parse as booleans the way numbers do.)
    ("LUMEN_TRANSCODE", "transcode.enabled", EnvShape::Number),
    (
        "LUMEN_TRANSCODE_MAX_STREAMS",
        "transcode.max_streams",
        EnvShape::Number,
    ),
    ("LUMEN_REDIS_URL", "cluster.redis_url", EnvShape::Text),
    ("LUMEN_NODE_ID", "cluster.node_id", EnvShape::Text),
    ("LUMEN_REGION", "cluster.region", EnvShape::Text),
    ("LUMEN_PUBLIC_URL", "cluster.public_url", EnvShape::Text),
    (
        "LUMEN_FANOUT_LIMIT",
        "cluster.fanout_limit",
        EnvShape::Number,
    ),
    (
        "LUMEN_DRAIN_TIMEOUT",
        "cluster.drain_timeout_secs",
        EnvShape::Number,
    ),
    (
        "LUMEN_RECORDING_RETENTION_DAYS",
        "recording.retention_days",
        EnvShape::Number,
    ),
    (
        "LUMEN_MAX_ADDRS_PER_SESSION",
        "limits.max_addrs_per_session",
        EnvShape::Number,
    ),
    (
        "LUMEN_CONNECT_TIMEOUT",
        "limits.connect_timeout_secs",
        EnvShape::Number,
    ),
    // The conventional name first, so that lumen's own one wins.
    ("DATABASE_URL", "auth.database_url", EnvShape::Text),
    ("LUMEN_DATABASE_URL", "auth.database_url", EnvShape::Text),
    ("LUMEN_SIGNUP", "auth.signup", EnvShape::Text),
    (
        "LUMEN_ADMIN_PASSWORD",
        "auth.admin_password",
        EnvShape::Text,
    ),
    ("LUMEN_JWT_SECRET", "auth.jwt_secret", EnvShape::Text),
    ("LUMEN_JWT_ISSUER", "auth.issuer", EnvShape::Text),
    ("LUMEN_JWT_AUDIENCE", "auth.audience", EnvShape::Text),
    (
        "LUMEN_SESSIONS_PER_USER",
        "auth.sessions_per_user",
        EnvShape::Number,
    ),
];

/// How an environment variable's text becomes a configuration value.
#[derive(Debug, Clone, Copy)]
pub enum EnvShape {
    /// Taken as it is (a path named `123` stays a path).
    Text,
    /// Parsed as a number; anything else is kept as text and then fails
    /// with an error naming the key and the variable.
    Number,
    /// Comma-separated strings.
    List,
}

/// `--config` and every setting's flag, for `lumen serve` and
/// `lumen config print`. Flags carry no clap defaults: a clap default would
/// beat the file and the environment.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ConfigArgs {
    /// Configuration file [default: ./lumen.toml if it exists]
    // Not clap's PathBuf parser: it rejects `LUMEN_CONFIG=` (empty), which
    // here means "no file named", like any other empty variable.
    #[arg(
        long,
        env = "LUMEN_CONFIG",
        value_name = "FILE",
        value_parser = OsStringValueParser::new().map(PathBuf::from)
    )]
    pub config: Option<PathBuf>,
    /// HTTP listen address [file: http.addr] [env: LUMEN_HTTP_ADDR]
    /// [default: 127.0.0.1:8080]
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
    /// PEM certificate chain; with --tls-key, serve HTTPS (plain HTTP to
    /// the port is redirected) [file: http.tls_cert] [env: LUMEN_TLS_CERT]
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [file: http.tls_key]
    /// [env: LUMEN_TLS_KEY]
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Reverse proxy network (CIDR or address) whose Forwarded or
    /// X-Forwarded-For / X-Forwarded-Proto headers are believed (repeatable
    /// or comma-separated) [file: http.trusted_proxies]
    /// [env: LUMEN_TRUSTED_PROXIES]
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_delimiter = ',')]
    pub trusted_proxies: Vec<lumen_signaling::Cidr>,
    /// UDP address of the first media worker (worker i uses port + i)
    /// [file: media.addr] [env: LUMEN_RTC_ADDR] [default: 127.0.0.1:8000]
    #[arg(long)]
    pub rtc_addr: Option<SocketAddr>,
    /// IP announced in ICE candidates when clients reach this host by
    /// another address [file: media.public_ip] [env: LUMEN_PUBLIC_IP]
    #[arg(long)]
    pub public_ip: Option<IpAddr>,
    /// UDP port announced for the first worker when a NAT or proxy forwards
    /// another port to it (worker i: port + i) [file: media.public_port]
    /// [env: LUMEN_PUBLIC_PORT]
    #[arg(long)]
    pub public_port: Option<u16>,
    /// Data directory [file: data_dir] [env: LUMEN_DATA_DIR]
    /// [default: lumen-data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// STUN/TURN server URL announced to clients (repeatable or
    /// comma-separated) [file: media.ice_servers] [env: LUMEN_ICE_SERVERS]
    #[arg(long = "ice-server", value_name = "URL", value_delimiter = ',')]
    pub ice_servers: Vec<String>,
    /// Number of media workers [file: media.workers] [env: LUMEN_WORKERS]
    /// [default: one per core]
    #[arg(long)]
    pub workers: Option<usize>,
    /// How many more peers a stream's worker may have than the least busy
    /// one before its new viewers go to another worker (0: spread every
    /// stream over all workers) [file: media.worker_spread]
    /// [env: LUMEN_WORKER_SPREAD] [default: 32]
    #[arg(long)]
    pub worker_spread: Option<usize>,
    /// Open HTTP connections at most [file: limits.max_connections]
    /// [env: LUMEN_MAX_CONNECTIONS] [default: 4096]
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Sessions one client address may create per second, 0 for no limit
    /// [file: limits.session_rate] [env: LUMEN_SESSION_RATE] [default: 10]
    #[arg(long)]
    pub session_rate: Option<f64>,
    /// Sessions one client address may hold, 0 for no limit (a load test
    /// from one machine needs it) [file: limits.sessions_per_client]
    /// [env: LUMEN_SESSIONS_PER_CLIENT] [default: 100]
    #[arg(long)]
    pub sessions_per_client: Option<usize>,
    /// Sessions the server holds from everyone, 0 for no limit
    /// [file: limits.max_sessions] [env: LUMEN_MAX_SESSIONS] [default: 20000]
    #[arg(long)]
    pub max_sessions: Option<usize>,
    /// PostgreSQL URL for accounts instead of the data dir's SQLite file
    /// [file: auth.database_url] [env: LUMEN_DATABASE_URL, DATABASE_URL]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Who may sign up: off, invite-only or open [file: auth.signup]
    /// [env: LUMEN_SIGNUP] [default: off]
    #[arg(long, value_name = "MODE")]
    pub signup: Option<String>,
    /// Join the cluster whose directory is this Redis
    /// [file: cluster.redis_url] [env: LUMEN_REDIS_URL]
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// This node's name in the cluster [file: cluster.node_id]
    /// [env: LUMEN_NODE_ID] [default: <host name>-<HTTP port>]
    #[arg(long, value_name = "NAME")]
    pub node_id: Option<String>,
    /// This node's region [file: cluster.region] [env: LUMEN_REGION]
    /// [default: default]
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// The URL other nodes reach this node at [file: cluster.public_url]
    /// [env: LUMEN_PUBLIC_URL] [default: the HTTP listener's]
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Relay links to child nodes this node feeds at most
    /// [file: cluster.fanout_limit] [env: LUMEN_FANOUT_LIMIT] [default: 50]
    #[arg(long, value_name = "N")]
    pub fanout_limit: Option<u32>,
    /// On SIGTERM, seconds to drain before stopping anyway
    /// [file: cluster.drain_timeout_secs] [env: LUMEN_DRAIN_TIMEOUT]
    /// [default: 30]
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<u64>,
}

impl ConfigArgs {
    /// Reads the file, the process environment and these flags.
    pub fn load(&self) -> anyhow::Result<Loaded> {
        // Lossy: a non-UTF-8 value then fails to parse, naming its variable.
        let env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        self.load_with(env, Path::new(DEFAULT_FILE))
    }

    /// [`ConfigArgs::load`] with the environment as a function, so tests
    /// need not touch the process's, and `default_file` in place of
    /// `./lumen.toml`.
    pub fn load_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
        default_file: &Path,
    ) -> anyhow::Result<Loaded> {
        let defaults = Value::serialize(LumenConfig::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .into_dict()
            .context("the default configuration does not serialize to a table")?;
        let mut figment = Figment::from(Layer {
            name: "default",
            source: None,
            dict: defaults,
        });

        let named = self.config.as_ref().filter(|p| !p.as_os_str().is_empty());
        let file = match named {
            Some(path) => {
                // Named on purpose, so its absence is a mistake to report.
                std::fs::metadata(path).with_context(|| {
                    format!(
                        "cannot read configuration file {} (named by --config or LUMEN_CONFIG)",
                        path.display()
                    )
                })?;
                Some(path.clone())
            }
            None => default_file.exists().then(|| default_file.to_path_buf()),
        };
        if let Some(path) = &file {
            figment = figment.merge(PlainKeys(Toml::file_exact(path)));
        }

        for &(name, key, shape) in ENV {
            // An empty variable counts as unset: compose files and init
            // scripts often pass `VAR=${VAR:-}`.
            let Some(text) = env(name).filter(|t| !t.trim().is_empty()) else {
                continue;
            };
            let text = text.trim();
            let value = match shape {
                EnvShape::Text => Value::from(text.to_string()),
                EnvShape::Number => text.parse().unwrap_or_else(|e| match e {}),
                EnvShape::List => Value::from(
                    text.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect::<Vec<_>>(),
                ),
            };
            figment = figment.merge(Layer::setting("environment variable", name, key, value));
        }

        for layer in self.flag_layers()? {
            figment = figment.merge(layer);
        }

        let config: LumenConfig = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("invalid configuration")?;
        if config.http.tls_cert.is_some() != config.http.tls_key.is_some() {
            return Err(anyhow::anyhow!(
                "http.tls_cert and http.tls_key (--tls-cert and --tls-key, LUMEN_TLS_CERT \
                 and LUMEN_TLS_KEY) are set together or not at all"
            ))
            .context("invalid configuration");
        }
        Ok(Loaded {
            config,
            file,
            figment,
        })
    }

    fn flag_layers(&self) -> anyhow::Result<Vec<Layer>> {
        fn flag<T: Serialize>(
            out: &mut Vec<Layer>,
            flag: &str,
            key: &str,
            value: Option<T>,
        ) -> anyhow::Result<()> {
            if let Some(v) = value {
                let v = Value::serialize(v).with_context(|| format!("reading {flag}"))?;
                out.push(Layer::setting("flag", flag, key, v));
            }
            Ok(())
        }
        let mut out = Vec::new();
        let ice = (!self.ice_servers.is_empty()).then_some(&self.ice_servers);
        flag(&mut out, "--data-dir", "data_dir", self.data_dir.as_ref())?;
        flag(&mut out, "--http-addr", "http.addr", self.http_addr)?;
        flag(
            &mut out,
            "--tls-cert",
            "http.tls_cert",
            self.tls_cert.as_ref(),
        )?;
        flag(&mut out, "--tls-key", "http.tls_key", self.tls_key.as_ref())?;
        let proxies = (!self.trusted_proxies.is_empty()).then_some(&self.trusted_proxies);
        flag(&mut out, "--trusted-proxy", "http.trusted_proxies", proxies)?;
        flag(&mut out, "--rtc-addr", "media.addr", self.rtc_addr)?;
        flag(&mut out, "--public-ip", "media.public_ip", self.public_ip)?;
        flag(
            &mut out,
            "--public-port",
            "media.public_port",
            self.public_port,
        )?;
        flag(&mut out, "--ice-server", "media.ice_servers", ice)?;
        flag(&mut out, "--workers", "media.workers", self.workers)?;
        flag(
            &mut out,
            "--worker-spread",
            "media.worker_spread",
            self.worker_spread,
        )?;
        flag(
            &mut out,
            "--max-connections",
            "limits.max_connections",
            self.max_connections,
        )?;
        flag(
            &mut out,
            "--session-rate",
            "limits.session_rate",
            self.session_rate,
        )?;
        flag(
            &mut out,
            "--sessions-per-client",
            "limits.sessions_per_client",
            self.sessions_per_client,
        )?;
        flag(
            &mut out,
            "--max-sessions",
            "limits.max_sessions",
            self.max_sessions,
        )?;
        flag(
            &mut out,
            "--database-url",
            "auth.database_url",
            self.database_url.as_ref(),
        )?;
        flag(&mut out, "--signup", "auth.signup", self.signup.as_ref())?;
        flag(
            &mut out,
            "--redis-url",
            "cluster.redis_url",
            self.redis_url.as_ref(),
        )?;
        flag(
            &mut out,
            "--node-id",
            "cluster.node_id",
            self.node_id.as_ref(),
        )?;
        flag(&mut out, "--region", "cluster.region", self.region.as_ref())?;
        flag(
            &mut out,
            "--public-url",
            "cluster.public_url",
            self.public_url.as_ref(),
        )?;
        flag(
            &mut out,
            "--fanout-limit",
            "cluster.fanout_limit",
            self.fanout_limit,
        )?;
        flag(
            &mut out,
            "--drain-timeout",
            "cluster.drain_timeout_secs",
            self.drain_timeout,
        )?;
        Ok(out)
    }
}

/// A loaded configuration and where its values came from.
#[derive(Debug)]
pub struct Loaded {
    /// The effective configuration.
    pub config: LumenConfig,
    /// The configuration file read, if any.
    pub file: Option<PathBuf>,
    figment: Figment,
}

impl Loaded {
    /// The effective configuration as TOML with secrets masked (see
    /// [`mask_secrets`]), after comment lines naming the file read and the
    /// source of every value that is not a default.
    pub fn to_masked_toml(&self) -> anyhow::Result<String> {
        let mut value =
            toml::Value::try_from(&self.config).context("serializing the configuration")?;
        mask_secrets(&mut value);

        let mut out = String::from(
            "# lumen's effective configuration (defaults < file < environment < flags)\n",
        );
        match &self.file {
            Some(f) => out.push_str(&format!("# file: {}\n", f.display())),
            None => out.push_str("# file: none\n"),
        }
        let mut keys = Vec::new();
        leaf_keys(&value, String::new(), &mut keys);
        for key in keys {
            let Some(md) = self.figment.find_metadata(&key) else {
                continue;
            };
            match &md.source {
                _ if md.name == "default" => {}
                Some(s) => out.push_str(&format!("# {key}: {s} {}\n", md.name)),
                None => out.push_str(&format!("# {key}: {}\n", md.name)),
            }
        }
        out.push('\n');
        out.push_str(&toml::to_string(&value).context("writing the configuration as TOML")?);
        Ok(out)
    }
}

/// Replaces by `"***"` the text value of every key, at any depth, whose
/// name contains `secret`, `password`, `token`, `key`, `database_url` or
/// `redis_url` (any case: such a URL may carry a password); numbers and
/// booleans stay.
/// Under a matching key every text inside is masked, at any depth, and the
/// tables and arrays keep their shape (`[[recording.encryption.keys]]`), so
/// the printout loads again. Deliberately broad: a `keyframe_*` text
/// setting would be masked too, which is harmless in a printout, whereas a
/// missed `apikey` would leak.
pub fn mask_secrets(value: &mut toml::Value) {
    const WORDS: [&str; 6] = [
        "secret",
        "password",
        "token",
        "key",
        "database_url",
        "redis_url",
    ];
    match value {
        toml::Value::Table(table) => {
            for (name, v) in table.iter_mut() {
                let name = name.to_ascii_lowercase();
                // Numbers and switches are settings, not secrets
                // (`keys_per_stream`).
                let plain = matches!(
                    v,
                    toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_)
                );
                if !WORDS.iter().any(|w| name.contains(w)) || plain {
                    mask_secrets(v);
                    continue;
                }
                mask_all_text(v);
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

/// Masks every text in `value`, keeping its shape.
fn mask_all_text(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => table.iter_mut().for_each(|(_, v)| mask_all_text(v)),
        toml::Value::Array(items) => items.iter_mut().for_each(mask_all_text),
        toml::Value::String(_) | toml::Value::Datetime(_) => {
            *value = toml::Value::String("***".into());
        }
        _ => {}
    }
}

/// One figment layer with its own name and source: the defaults, one
/// environment variable or one flag.
struct Layer {
    name: &'static str,
    source: Option<String>,
    dict: Dict,
}

impl Layer {
    fn setting(name: &'static str, source: &str, key: &str, value: Value) -> Layer {
        Layer {
            name,
            source: Some(source.to_string()),
            // `key` is a non-empty dotted path, so `nest` gives a table.
            dict: figment::util::nest(key, value)
                .into_dict()
                .unwrap_or_default(),
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let md = Metadata::named(self.name).interpolater(plain_key);
        match &self.source {
            Some(s) => md.source(Source::Custom(s.clone())),
            None => md,
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// A provider whose errors name keys as `http.addr`, without figment's
/// profile prefix (`default.http.addr`): lumen has no profiles.
struct PlainKeys<P>(P);

impl<P: Provider> Provider for PlainKeys<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata().interpolater(plain_key)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.0.data()
    }
}

fn plain_key(_: &Profile, keys: &[&str]) -> String {
    keys.join(".")
}

/// Dotted paths of every non-table value under `value`.
fn leaf_keys(value: &toml::Value, prefix: String, out: &mut Vec<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_keys(v, path, out);
            }
        }
        _ => out.push(prefix),
    }
}

#[cfg(test)]
mod tests;
