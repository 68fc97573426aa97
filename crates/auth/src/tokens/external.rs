//! External issuers: their JWKS (from a file, or fetched over HTTP and
//! cached), and verifying their tokens.

use super::*;

/// How long loaded keys are used before they are loaded again.
pub(super) const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// The least time between two loads of one issuer's keys.
pub(super) const JWKS_MIN_REFETCH: Duration = Duration::from_secs(60);
pub(super) const JWKS_MAX_BYTES: usize = 256 * 1024;
pub(super) const JWKS_MAX_KEYS: usize = 64;
pub(super) const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct External {
    pub(super) issuer: String,
    pub(super) audience: String,
    pub(super) source: JwksSource,
    pub(super) cache: RwLock<Cached>,
    /// When keys were last loaded, successfully or not. Held while loading,
    /// so that concurrent verifications wait for one load instead of each
    /// starting their own.
    pub(super) last_attempt: tokio::sync::Mutex<Option<Instant>>,
}

#[derive(Clone)]
pub(super) struct Cached {
    pub(super) keys: Arc<[ExternalKey]>,
    /// `None`: never loaded.
    pub(super) loaded_at: Option<Instant>,
}

pub(super) struct ExternalKey {
    pub(super) kid: Option<String>,
    /// The one algorithm this key may verify.
    pub(super) alg: Algorithm,
    pub(super) key: DecodingKey,
}

impl External {
    pub(super) fn open(
        config: &ExternalIssuer,
        default_audience: &str,
    ) -> Result<External, TokenError> {
        let (keys, loaded_at) = match &config.jwks {
            JwksSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| file_error(path, &e))?;
                let keys = parse_jwks(&bytes).map_err(|e| {
                    TokenError::Keys(format!(
                        "JWKS of `{}` ({}): {e}",
                        config.issuer,
                        path.display()
                    ))
                })?;
                (keys, Some(Instant::now()))
            }
            JwksSource::Url(url) => {
                HttpTarget::parse(url).map_err(|e| {
                    TokenError::Keys(format!("JWKS URL of `{}`: {e}", config.issuer))
                })?;
                (Vec::new(), None)
            }
        };
        Ok(External {
            issuer: config.issuer.clone(),
            audience: config
                .audience
                .clone()
                .unwrap_or_else(|| default_audience.to_string()),
            source: config.jwks.clone(),
            cache: RwLock::new(Cached {
                keys: keys.into(),
                loaded_at,
            }),
            last_attempt: tokio::sync::Mutex::new(loaded_at),
        })
    }

    pub(super) async fn verify(
        &self,
        token: &str,
        peek: &Peek,
        leeway: u64,
    ) -> Result<VerifyClaims, TokenError> {
        if !matches!(
            peek.alg,
            Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256
        ) {
            return Err(Reason::Algorithm.into());
        }
        let (keys, i) = self.key_for(peek.kid.as_deref(), peek.alg).await?;
        let key = &keys[i];
        // The key decides the algorithm, not the token.
        if key.alg != peek.alg {
            return Err(Reason::Algorithm.into());
        }
        decode(
            token,
            &key.key,
            key.alg,
            &self.issuer,
            &self.audience,
            leeway,
        )
    }

    pub(super) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<(Arc<[ExternalKey]>, usize), TokenError> {
        let cached = self.cached();
        if cached.loaded_at.is_some_and(|t| t.elapsed() < JWKS_MAX_AGE)
            && let Some(i) = find_key(&cached.keys, kid, alg)
        {
            return Ok((cached.keys, i));
        }

        let mut last_attempt = self.last_attempt.lock().await;
        // Another verification may have loaded them while this one waited.
        let mut cached = self.cached();
        let mut found = find_key(&cached.keys, kid, alg);
        let stale = cached.loaded_at.is_none_or(|t| t.elapsed() >= JWKS_MAX_AGE);
        let may_load = last_attempt.is_none_or(|t| t.elapsed() >= JWKS_MIN_REFETCH);
        if (found.is_none() || stale) && may_load {
            *last_attempt = Some(Instant::now());
            match self.load().await {
                Ok(keys) => {
                    cached = Cached {
                        keys: keys.into(),
                        loaded_at: Some(Instant::now()),
                    };
                    *self.cache.write().unwrap_or_else(|p| p.into_inner()) = cached.clone();
                    found = find_key(&cached.keys, kid, alg);
                }
                // Keys loaded before stay in use until a load succeeds.
                Err(e) => tracing::warn!(issuer = %self.issuer, error = %e, "cannot load JWKS"),
            }
        }
        drop(last_attempt);
        if cached.loaded_at.is_none() {
            return Err(TokenError::Keys(
                "the issuer's keys could not be loaded".to_string(),
            ));
        }
        match found {
            Some(i) => Ok((cached.keys, i)),
            None => Err(Reason::UnknownKey.into()),
        }
    }

    pub(super) fn cached(&self) -> Cached {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) async fn load(&self) -> Result<Vec<ExternalKey>, String> {
        let bytes = match &self.source {
            JwksSource::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?,
            JwksSource::Url(url) => tokio::time::timeout(JWKS_FETCH_TIMEOUT, http_get(url))
                .await
                .map_err(|_| format!("GET {url}: timed out"))?
                .map_err(|e| format!("GET {url}: {e}"))?,
        };
        parse_jwks(&bytes)
    }
}

/// With a `kid`: the key of that id. Without: the only key for `alg`.
pub(super) fn find_key(keys: &[ExternalKey], kid: Option<&str>, alg: Algorithm) -> Option<usize> {
    match kid {
        Some(kid) => keys.iter().position(|k| k.kid.as_deref() == Some(kid)),
        None => {
            let mut candidates = keys.iter().enumerate().filter(|(_, k)| k.alg == alg);
            match (candidates.next(), candidates.next()) {
                (Some((i, _)), None) => Some(i),
                _ => None,
            }
        }
    }
}

/// The usable keys of a JWKS document; keys of other kinds, curves or
/// uses, and entries that do not parse, are skipped.
pub(super) fn parse_jwks(bytes: &[u8]) -> Result<Vec<ExternalKey>, String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    if bytes.len() > JWKS_MAX_BYTES {
        return Err(format!("larger than {JWKS_MAX_BYTES} bytes"));
    }
    let set: Set = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS: {e}"))?;
    let keys: Vec<ExternalKey> = set
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter_map(|jwk| external_key(&jwk))
        .take(JWKS_MAX_KEYS)
        .collect();
    if keys.is_empty() {
        return Err("no usable key (Ed25519, P-256 or RSA, for signing)".to_string());
    }
    Ok(keys)
}

pub(super) fn external_key(jwk: &Jwk) -> Option<ExternalKey> {
    let decoded_len = |s: &str| URL_SAFE_NO_PAD.decode(s).ok().map(|b| b.len());
    let (alg, key) = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            (decoded_len(&p.x) == Some(32)).then_some(())?;
            (
                Algorithm::EdDSA,
                DecodingKey::from_ed_components(&p.x).ok()?,
            )
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (decoded_len(&p.x) == Some(32) && decoded_len(&p.y) == Some(32)).then_some(())?;
            (
                Algorithm::ES256,
                DecodingKey::from_ec_components(&p.x, &p.y).ok()?,
            )
        }
        AlgorithmParameters::RSA(p) => {
            // Below 2048 bits is too weak (and refused by aws-lc anyway).
            (decoded_len(&p.n)? >= 256).then_some(())?;
            (
                Algorithm::RS256,
                DecodingKey::from_rsa_components(&p.n, &p.e).ok()?,
            )
        }
        _ => return None,
    };
    if jwk
        .common
        .key_algorithm
        .is_some_and(|a| a != KeyAlgorithm::from(alg))
    {
        return None;
    }
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    Some(ExternalKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

// ---- the JWKS fetch ----

/// A parsed `http://` URL.
pub(super) struct HttpTarget {
    /// For connecting: a name or an address, without IPv6 brackets.
    pub(super) host: String,
    pub(super) port: u16,
    /// For the `Host` header.
    pub(super) authority: String,
    pub(super) path: String,
}

impl HttpTarget {
    pub(super) fn parse(url: &str) -> Result<HttpTarget, String> {
        let uri: hyper::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "`{url}`: https is not supported yet; use http:// or a JWKS file"
                ));
            }
            _ => return Err(format!("`{url}` is not an http:// URL")),
        }
        let Some(authority) = uri.authority() else {
            return Err(format!("`{url}` has no host"));
        };
        if authority.as_str().contains('@') {
            return Err(format!("`{url}`: credentials in the URL are not supported"));
        }
        Ok(HttpTarget {
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_string(),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        })
    }
}

/// One HTTP/1.1 GET with hyper's connection API; a 200 answer's body, at
/// most [`JWKS_MAX_BYTES`].
pub(super) async fn http_get(url: &str) -> Result<Vec<u8>, String> {
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper::body::Bytes;
    use hyper::header;

    let target = HttpTarget::parse(url)?;
    let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let _connection = AbortOnDrop(tokio::spawn(connection));
    let request = hyper::Request::get(target.path.as_str())
        .header(header::HOST, target.authority.as_str())
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "lumen")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != hyper::StatusCode::OK {
        return Err(format!("HTTP status {}", response.status()));
    }
    let body = Limited::new(response.into_body(), JWKS_MAX_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(body.to_bytes().to_vec())
}

/// Ends the connection task however the fetch ends (timeout included).
pub(super) struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
