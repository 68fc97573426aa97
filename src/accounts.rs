//! `lumen admin`, `lumen key` and `lumen token`: account chores from a
//! shell, against the same database as the server (the data dir's SQLite
//! file or `--database-url`), while a server runs or not. A key or token
//! made here is honoured by a running server at once, and a revocation
//! ends the sessions it opened within a second.

use std::io::Read as _;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use lumen_signaling::auth::{Auth, Role, Scopes, Visibility};

use crate::config::ConfigArgs;

#[derive(Subcommand)]
pub enum AdminCmd {
    /// Create a user; the password is read from stdin (one line).
    CreateUser {
        /// Log in name.
        name: String,
        /// admin, moderator, broadcaster or viewer.
        #[arg(long, default_value = "broadcaster")]
        role: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List users.
    Users {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Create a stream key (and the stream, owned by NAME or the first
    /// admin, if it does not exist); the key is the last line printed.
    Create {
        /// The stream it publishes to.
        stream: String,
        /// The stream's owner when the stream is created.
        #[arg(long, value_name = "NAME")]
        owner: Option<String>,
        /// A label for the key ("OBS", "backup encoder").
        #[arg(long, default_value = "")]
        label: String,
        /// Visibility of a stream created now: public, unlisted or private.
        #[arg(long, default_value = "public")]
        visibility: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Revoke a key by its id: it stops working and its live sessions end.
    Revoke {
        /// The key id (`lumen key list STREAM` shows them).
        id: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List a stream's keys (without their secrets).
    List {
        stream: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Mint a JWT signed with this server's key; it is the last line printed.
    Mint {
        /// Space-separated scopes: publish:STREAM, subscribe:STREAM,
        /// chat:STREAM, moderate:STREAM, admin; STREAM may be `*`.
        #[arg(long)]
        scope: String,
        /// Lifetime: 90s, 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// `sub` of the token (a user id, or a service's name).
        #[arg(long, default_value = "cli")]
        subject: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Revoke a token by its `jti`: refused from now on, its sessions end.
    Revoke {
        /// The token's `jti`. Base64url, so it may start with `-`: taken
        /// as the value, not as an option.
        #[arg(allow_hyphen_values = true)]
        jti: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

pub(crate) async fn open(config: &ConfigArgs) -> anyhow::Result<Auth> {
    let auth = config.load()?.config.auth()?;
    Auth::open(auth).await.context("opening the account store")
}

/// `90s`, `15m`, `1h`, `7d`, or bare seconds.
pub fn parse_ttl(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("--ttl {s:?}: a number with s, m, h or d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => anyhow::bail!("--ttl {s:?}: the unit is s, m, h or d"),
    };
    anyhow::ensure!(secs > 0, "--ttl must be more than 0");
    Ok(Duration::from_secs(secs))
}

pub async fn admin(cmd: AdminCmd) -> anyhow::Result<()> {
    match cmd {
        AdminCmd::CreateUser { name, role, config } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("reading the password from stdin")?;
            let password = password.lines().next().unwrap_or("").to_string();
            let auth = open(&config).await?;
            let user = auth.create_user(&name, &password, role).await?;
            println!("created {} ({}), id {}", user.name, user.role, user.id);
        }
        AdminCmd::Users { config } => {
            let auth = open(&config).await?;
            for u in auth.users().await? {
                println!(
                    "{}\t{}\t{}{}",
                    u.id,
                    u.name,
                    u.role,
                    if u.disabled { "\tdisabled" } else { "" }
                );
            }
        }
    }
    Ok(())
}

pub async fn key(cmd: KeyCmd) -> anyhow::Result<()> {
    match cmd {
        KeyCmd::Create {
            stream,
            owner,
            label,
            visibility,
            config,
        } => {
            let auth = open(&config).await?;
            if auth.stream(&stream).await?.is_none() {
                let owner = match owner {
                    Some(name) => auth
                        .user_by_name(&name)
                        .await
                        .with_context(|| format!("no user {name:?}"))?,
                    None => auth
                        .users()
                        .await?
                        .into_iter()
                        .find(|u| u.role == Role::Admin && !u.disabled)
                        .context(
                            "no admin exists yet to own the stream: finish the setup, \
                             set LUMEN_ADMIN_PASSWORD, or name --owner",
                        )?,
                };
                let visibility: Visibility = visibility.parse().map_err(anyhow::Error::msg)?;
                auth.create_stream(&owner, &stream, visibility, "").await?;
                eprintln!("created stream {stream} owned by {}", owner.name);
            }
            let k = auth.create_key(&stream, &label).await?;
            eprintln!("key {} for stream {stream} (shown once):", k.info.id);
            println!("{}", k.secret);
        }
        KeyCmd::Revoke { id, config } => {
            let auth = open(&config).await?;
            let k = auth.revoke_key(&id).await?;
            println!("revoked key {} of stream {}", k.id, k.stream);
        }
        KeyCmd::List { stream, config } => {
            let auth = open(&config).await?;
            for k in auth.keys(&stream).await? {
                println!(
                    "{}\t{}…\t{}\t{}",
                    k.id,
                    k.prefix,
                    if k.label.is_empty() { "-" } else { &k.label },
                    if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "live"
                    }
                );
            }
        }
    }
    Ok(())
}

pub async fn token(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Mint {
            scope,
            ttl,
            subject,
            config,
        } => {
            let scopes = Scopes::parse(&scope).map_err(anyhow::Error::msg)?;
            let ttl = parse_ttl(&ttl)?;
            let auth = open(&config).await?;
            let t = auth.mint(&subject, &scopes, ttl)?;
            println!("{t}");
        }
        TokenCmd::Revoke { jti, config } => {
            let auth = open(&config).await?;
            auth.revoke_token(&jti).await?;
            println!("revoked token {jti}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        token: super::TokenCmd,
    }

    /// One `jti` in 64 starts with `-` (base64url): `lumen token revoke`
    /// takes it as the value, with the options before or after it.
    #[test]
    fn a_jti_may_start_with_a_hyphen() {
        for args in [
            ["t", "revoke", "-1FR-Xj4o_g", "--data-dir", "d"],
            ["t", "revoke", "--data-dir", "d", "-1FR-Xj4o_g"],
        ] {
            let cli = Cli::try_parse_from(args).expect("parses");
            match cli.token {
                super::TokenCmd::Revoke { jti, .. } => assert_eq!(jti, "-1FR-Xj4o_g"),
                _ => panic!("not revoke"),
            }
        }
    }

    #[test]
    fn ttls_parse() {
        assert_eq!(super::parse_ttl("90").unwrap().as_secs(), 90);
        assert_eq!(super::parse_ttl("15m").unwrap().as_secs(), 900);
        assert_eq!(super::parse_ttl("1h").unwrap().as_secs(), 3600);
        assert_eq!(super::parse_ttl("7d").unwrap().as_secs(), 604800);
        for bad in ["", "h", "1y", "0", "-1h"] {
            assert!(super::parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
