//! JWTs: lumen's own (EdDSA, a key pair made on first start and kept in the
//! data dir; HS256 only when a secret is configured) and tokens of external
//! issuers verified against their JWKS. Scopes live in [`crate::scope`].
//!
//! Verifying a token takes two steps. First the header and payload are read
//! *unverified*, only to pick the issuer (`iss`) and its key (`kid`, `alg`);
//! nothing else from that read is trusted. Then the token is verified in full
//! by `jsonwebtoken` against that one key, with only that key's algorithm
//! allowed, which rules out `alg: none` and key confusion (an HS256 token
//! "signed" with a public key). Refusals carry one short reason per kind of
//! failure; the detail goes to the `debug` log, never to the client.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};

use crate::scope::Scopes;

/// The name of lumen's key file in [`TokenConfig::data_dir`]: an Ed25519
/// key pair as a PKCS#8 document, mode 0600.
pub const KEY_FILE: &str = "jwt-ed25519.pk8";

/// How tokens are made and checked.
#[derive(Clone)]
pub struct TokenConfig {
    /// The data dir: lumen's Ed25519 key pair lives in `jwt-ed25519.pk8` there.
    pub data_dir: PathBuf,
    /// `iss` of lumen's tokens, and the one it accepts from itself.
    pub issuer: String,
    /// `aud` of lumen's tokens and the one it requires.
    pub audience: String,
    /// When set, HS256 tokens signed with this secret are also accepted (and
    /// `mint` still signs with EdDSA).
    pub hs256_secret: Option<String>,
    /// Other issuers whose tokens are accepted.
    pub external: Vec<ExternalIssuer>,
    /// Clock leeway for `exp` and `nbf`.
    pub leeway: Duration,
}

// By hand, so that printing a config never prints the HS256 secret.
impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("data_dir", &self.data_dir)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("external", &self.external)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// An external issuer: a site that mints viewer tokens itself.
///
/// Its tokens are picked by their `iss` and must be signed with EdDSA
/// (Ed25519), ES256 or RS256 by a key of its JWKS; `oct` (HMAC) keys and
/// other algorithms in that JWKS are ignored.
#[derive(Debug, Clone)]
pub struct ExternalIssuer {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (default: lumen's own audience).
    pub audience: Option<String>,
    /// Where its public keys are.
    pub jwks: JwksSource,
}

/// Where a JWKS document comes from.
///
/// Either way the keys are cached. They are loaded again when a token names
/// a `kid` that is not among them, at most once every 60 s per issuer (so a
/// flood of made-up `kid`s costs one fetch a minute), and when they are
/// older than 10 minutes (so a key the issuer withdrew stops working).
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// Fetched with a small HTTP/1.1 GET on first use, then as above.
    ///
    /// Only plain `http://` URLs for now: there is no TLS client in lumen
    /// yet, so [`TokenService::open`] refuses `https://`. Point it at the
    /// issuer over a trusted network, or use [`JwksSource::File`].
    Url(String),
    /// Read from a file when the service opens, then as above.
    File(PathBuf),
}

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// `sub`.
    pub subject: String,
    /// `jti` (lumen's tokens always have one; revocation is by jti).
    pub id: Option<String>,
    /// `iss`.
    pub issuer: String,
    /// Parsed `scope`.
    pub scopes: Scopes,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// Why a token was refused. The message is safe to show a client.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Anything wrong with the token.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A key or the JWKS could not be loaded. From [`TokenService::open`]
    /// the message names the file for the operator; from
    /// [`TokenService::verify`] it is generic and the detail is logged.
    #[error("token keys unavailable: {0}")]
    Keys(String),
}

/// Makes and verifies tokens.
pub struct TokenService {
    issuer: String,
    audience: String,
    leeway: u64,
    own: OwnKey,
    hs256: Option<DecodingKey>,
    external: Vec<External>,
}

impl TokenService {
    /// Loads (or, on first start, creates with mode 0600) the key pair.
    ///
    /// Several processes may open the same data dir at once (the server and
    /// `lumen token mint`): whichever creates the key file first wins and the
    /// others use its key. Also reads the JWKS files of external issuers,
    /// and checks their URLs.
    pub fn open(config: TokenConfig) -> Result<TokenService, TokenError> {
        let own = OwnKey::load_or_create(&config.data_dir)?;
        let hs256 = match config.hs256_secret.as_deref() {
            None => None,
            Some("") => return Err(TokenError::Keys("hs256_secret is empty".to_string())),
            Some(secret) => {
                if secret.len() < 32 {
                    tracing::warn!("hs256_secret is shorter than 32 bytes; it can be guessed");
                }
                Some(
                    DecodingKey::from_secret(secret.as_bytes())
                        .map_err(|_| TokenError::Keys("hs256_secret is unusable".to_string()))?,
                )
            }
        };
        let mut external: Vec<External> = Vec::with_capacity(config.external.len());
        for ext in &config.external {
            if ext.issuer == config.issuer || external.iter().any(|e| e.issuer == ext.issuer) {
                return Err(TokenError::Keys(format!(
                    "issuer `{}` is configured twice (or is lumen's own issuer)",
                    ext.issuer
                )));
            }
            external.push(External::open(ext, &config.audience)?);
        }
        Ok(TokenService {
            issuer: config.issuer,
            audience: config.audience,
            leeway: config.leeway.as_secs(),
            own,
            hs256,
            external,
        })
    }

    /// A token for `subject` with these scopes, valid for `ttl`, with a
    /// fresh random `jti`.
    pub fn mint(
        &self,
        subject: &str,
        scopes: &Scopes,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        let jti = random_id().ok_or_else(|| TokenError::Keys("no randomness".to_string()))?;
        self.sign(&MintClaims {
            iss: &self.issuer,
            aud: &self.audience,
            sub: subject,
            exp: now.saturating_add(ttl.as_secs()),
            nbf: now,
            iat: now,
            jti: &jti,
            scope: scopes.to_string(),
        })
    }

    /// Checks signature (allow-listed algorithms only), `iss`, `aud`, `exp`,
    /// `nbf`.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let peek = Peek::read(token)?;
        let (claims, own) = if peek.iss == self.issuer {
            (self.verify_own(token, &peek)?, true)
        } else if let Some(ext) = self.external.iter().find(|e| e.issuer == peek.iss) {
            (ext.verify(token, &peek, self.leeway).await?, false)
        } else {
            return Err(Reason::Issuer.into());
        };
        let scope = claims.scope.as_deref().unwrap_or_default();
        let scopes = if own {
            Scopes::parse(scope).map_err(|e| {
                tracing::debug!(error = %e, "token refused: bad scope");
                TokenError::from(Reason::Scope)
            })?
        } else {
            // Another site's tokens carry its own scopes too (`openid`);
            // only lumen's stream scopes count, and never `admin`.
            Scopes::parse_external(scope)
        };
        Ok(VerifiedToken {
            subject: claims.sub.ok_or(Reason::MissingClaim)?,
            id: claims.jti,
            issuer: peek.iss,
            scopes,
            expires_at: claims.exp.ok_or(Reason::MissingClaim)?.0,
        })
    }

    /// lumen's public key(s) as a JWKS document (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": self.own.x,
                "kid": self.own.kid,
                "alg": "EdDSA",
                "use": "sig",
            }]
        })
    }

    /// The `kid` of lumen's key (its RFC 7638 SHA-256 thumbprint), which
    /// minted tokens carry in their header.
    pub fn key_id(&self) -> &str {
        &self.own.kid
    }

    fn verify_own(&self, token: &str, peek: &Peek) -> Result<VerifyClaims, TokenError> {
        let key = match peek.alg {
            Algorithm::EdDSA => {
                if peek.kid.as_ref().is_some_and(|kid| *kid != self.own.kid) {
                    return Err(Reason::UnknownKey.into());
                }
                &self.own.verifying
            }
            Algorithm::HS256 => self.hs256.as_ref().ok_or(Reason::Algorithm)?,
            _ => return Err(Reason::Algorithm.into()),
        };
        decode(
            token,
            key,
            peek.alg,
            &self.issuer,
            &self.audience,
            self.leeway,
        )
    }

    /// Signs `claims` with lumen's key, with its `kid` in the header.
    fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.own.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.own.signing).map_err(|e| {
            tracing::error!(error = %e, "cannot sign a token");
            TokenError::Keys("cannot sign the token".to_string())
        })
    }
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("kid", &self.own.kid)
            .field("hs256", &self.hs256.is_some())
            .field(
                "external",
                &self.external.iter().map(|e| &e.issuer).collect::<Vec<_>>(),
            )
            .finish()
    }
}

// ---- refusals ----

/// One reason per kind of failure: what a client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Malformed,
    Algorithm,
    Issuer,
    UnknownKey,
    Signature,
    Expired,
    NotYetValid,
    Audience,
    MissingClaim,
    Scope,
}

impl Reason {
    fn message(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed token",
            Reason::Algorithm => "unsupported algorithm",
            Reason::Issuer => "unknown issuer",
            Reason::UnknownKey => "unknown signing key",
            Reason::Signature => "bad signature",
            Reason::Expired => "token expired",
            Reason::NotYetValid => "token not yet valid",
            Reason::Audience => "wrong audience",
            Reason::MissingClaim => "missing required claim",
            Reason::Scope => "invalid scope",
        }
    }
}

impl From<Reason> for TokenError {
    fn from(r: Reason) -> Self {
        TokenError::Invalid(r.message().to_string())
    }
}

fn refusal(e: jsonwebtoken::errors::Error) -> TokenError {
    let reason = match e.kind() {
        ErrorKind::ExpiredSignature => Reason::Expired,
        ErrorKind::ImmatureSignature => Reason::NotYetValid,
        ErrorKind::InvalidAudience => Reason::Audience,
        ErrorKind::InvalidIssuer => Reason::Issuer,
        ErrorKind::MissingRequiredClaim(_) => Reason::MissingClaim,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => Reason::Algorithm,
        // A key that cannot check this token is as good as a wrong signature.
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => Reason::Signature,
        _ => Reason::Malformed,
    };
    tracing::debug!(error = %e, reason = reason.message(), "token refused");
    reason.into()
}

// ---- verifying ----

/// Longer tokens are refused before any parsing.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// What the unverified header and payload say: enough to pick the key.
#[derive(Debug)]
struct Peek {
    alg: Algorithm,
    kid: Option<String>,
    iss: String,
}

impl Peek {
    fn read(token: &str) -> Result<Peek, TokenError> {
        #[derive(Deserialize)]
        struct RawHeader {
            alg: String,
            kid: Option<String>,
        }
        #[derive(Deserialize)]
        struct RawPayload {
            iss: Option<String>,
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(Reason::Malformed.into());
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Reason::Malformed.into());
        };
        let header: RawHeader = json_part(header)?;
        // The allow-list: anything else (`none`, HS384, PS256, …) stops here.
        let alg = match header.alg.as_str() {
            "EdDSA" => Algorithm::EdDSA,
            "ES256" => Algorithm::ES256,
            "RS256" => Algorithm::RS256,
            "HS256" => Algorithm::HS256,
            _ => return Err(Reason::Algorithm.into()),
        };
        let payload: RawPayload = json_part(payload)?;
        Ok(Peek {
            alg,
            kid: header.kid,
            iss: payload.iss.ok_or(Reason::MissingClaim)?,
        })
    }
}

fn json_part<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Reason::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| Reason::Malformed.into())
}

/// The claims read after verification; `iss`, `aud` and `nbf` are checked
/// by `jsonwebtoken` itself. Optional here so that a missing claim is
/// reported as missing rather than as malformed.
#[derive(Deserialize)]
struct VerifyClaims {
    sub: Option<String>,
    exp: Option<NumericDate>,
    jti: Option<String>,
    scope: Option<String>,
}

/// Seconds since the epoch; RFC 7519 allows fractions.
struct NumericDate(u64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        match (n.as_u64(), n.as_f64()) {
            (Some(s), _) => Ok(NumericDate(s)),
            (None, Some(f)) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                Ok(NumericDate(f as u64))
            }
            _ => Err(serde::de::Error::custom("not a NumericDate")),
        }
    }
}

#[derive(Serialize)]
struct MintClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: &'a str,
    #[serde(skip_serializing_if = "String::is_empty")]
    scope: String,
}

/// Full verification against one key, with only `alg` allowed.
fn decode(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    issuer: &str,
    audience: &str,
    leeway: u64,
) -> Result<VerifyClaims, TokenError> {
    let mut v = Validation::new(alg);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.validate_exp = true;
    v.validate_nbf = true;
    v.leeway = leeway;
    jsonwebtoken::decode::<VerifyClaims>(token, key, &v)
        .map(|data| data.claims)
        .map_err(refusal)
}

fn random_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

mod external;
mod keyfile;

use external::*;
use keyfile::*;

#[cfg(test)]
impl TokenService {
    /// Lets the next unknown `kid` load the keys again, as if 60 s had
    /// passed since the last load.
    async fn forget_jwks_loads(&self) {
        for ext in &self.external {
            *ext.last_attempt.lock().await = None;
        }
    }
}

#[cfg(test)]
mod tests;
