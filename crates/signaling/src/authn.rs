//! Who sent a request: a `Bearer` stream key or JWT, or the web session
//! cookie of a logged-in page (whose unsafe requests must also carry the
//! session's CSRF token in `X-CSRF-Token`), or nobody.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use lumen_auth::Principal;

use crate::error::ApiError;
pub(crate) use crate::sessions::Holder;
use crate::state::AppState;

/// The web session cookie.
pub(crate) const SESSION_COOKIE: &str = "lumen_session";
/// The header carrying the CSRF token of a cookie-authenticated request.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub principal: Principal,
    pub holder: Holder,
    /// The web session's CSRF token, when authenticated by cookie.
    pub csrf: Option<String>,
    /// A valid session cookie came without its CSRF token on an unsafe
    /// request (and was not used).
    pub csrf_refused: bool,
}

impl Caller {
    /// Nobody in particular.
    pub fn anonymous() -> Caller {
        Caller {
            principal: Principal::Anonymous,
            holder: Holder::Anyone,
            csrf: None,
            csrf_refused: false,
        }
    }

    /// The logged-in user (by cookie) or the user a JWT was minted for.
    pub fn user(&self) -> Option<&lumen_auth::User> {
        match &self.principal {
            Principal::User(u) => Some(u),
            _ => None,
        }
    }
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::Unauthorized("Authorization is not text".to_string()))?;
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
        return Err(ApiError::Unauthorized(
            "Authorization must be `Bearer <stream key or token>`".to_string(),
        ));
    }
    Ok(Some(rest.trim()))
}

/// The value of cookie `name`.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// What a session remembers of a Bearer value.
fn digest(s: &str) -> String {
    lumen_auth::fingerprint(s)
}

/// Authenticates a request from its method and headers.
pub(crate) async fn authenticate(
    st: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    if let Some(b) = bearer(headers)? {
        let principal = st.auth.principal(b).await?;
        return Ok(Caller {
            principal,
            holder: Holder::Bearer(digest(b)),
            csrf: None,
            csrf_refused: false,
        });
    }
    if let Some(token) = cookie(headers, SESSION_COOKIE)
        && let Some((user, csrf)) = st.auth.web_session(token).await?
    {
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if safe || sent.is_some_and(|s| constant_time_eq(s.as_bytes(), csrf.as_bytes())) {
            return Ok(Caller {
                holder: Holder::User(user.id.clone()),
                principal: Principal::User(user),
                csrf: Some(csrf),
                csrf_refused: false,
            });
        }
        // The cookie alone does not authenticate an unsafe request (another
        // site may have made the browser send it): the request goes on as
        // anonymous, so a public stream still plays, and the account API
        // says why it refuses.
        return Ok(Caller {
            csrf_refused: true,
            ..Caller::anonymous()
        });
    }
    Ok(Caller::anonymous())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        authenticate(st, &parts.method, &parts.headers).await
    }
}

/// Whether `caller` may change or end a session `holder` created.
pub(crate) fn may_touch(caller: &Caller, holder: &Holder) -> Result<(), ApiError> {
    match holder {
        Holder::Anyone => Ok(()),
        h if *h == caller.holder => Ok(()),
        _ if caller.holder == Holder::Anyone => Err(ApiError::Unauthorized(
            "this session can only be changed with the credential that created it".to_string(),
        )),
        _ => Err(ApiError::Forbidden(
            "this session can only be changed with the credential that created it".to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn cookies_and_bearers_parse() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; lumen_session=abc ; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  lk_x "),
        );
        assert_eq!(bearer(&h).unwrap(), Some("lk_x"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Zm9v"),
        );
        assert!(matches!(bearer(&h), Err(ApiError::Unauthorized(_))));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert!(matches!(bearer(&h), Err(ApiError::Unauthorized(_))));
    }

    #[test]
    fn only_the_creator_touches_a_session() {
        let anon = Caller::anonymous();
        let key = Caller {
            holder: Holder::Bearer(digest("lk_1")),
            ..Caller::anonymous()
        };
        let other = Caller {
            holder: Holder::Bearer(digest("lk_2")),
            ..Caller::anonymous()
        };
        assert!(may_touch(&anon, &Holder::Anyone).is_ok());
        assert!(may_touch(&key, &Holder::Anyone).is_ok());
        assert!(may_touch(&key, &key.holder).is_ok());
        assert!(matches!(
            may_touch(&other, &key.holder),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            may_touch(&anon, &key.holder),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
