//! What every handler checks of a request, and the answers shared by the
//! routes (`405` with `Allow`, `OPTIONS`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;

use crate::error::ApiError;
use crate::proxy::Origin;

/// Largest SDP offer or trickle fragment accepted.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// A stream name, by the rule the account store and scopes share
/// (`lumen_auth::scope::is_stream_name`).
pub(crate) fn check_stream_name(name: &str) -> Result<(), ApiError> {
    if lumen_auth::scope::is_stream_name(name) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            lumen_auth::scope::STREAM_NAME_RULE.to_string(),
        ))
    }
}

pub(crate) fn require_content_type(headers: &HeaderMap, want: &str) -> Result<(), ApiError> {
    let got = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = got.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(want) {
        Ok(())
    } else if got.is_empty() {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be {want}"
        )))
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be {want}, not {got}"
        )))
    }
}

/// The address of the client that sent the request: the TCP peer's, or
/// the one a trusted proxy forwarded (see `proxy`). `None` when the request
/// did not come through a socket, as in handler tests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ext = &parts.extensions;
        Ok(ClientAddr(ext.get::<Origin>().map(|o| o.addr).or_else(
            || ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()),
        )))
    }
}

/// Whether the client reached the server over HTTPS: this connection is
/// TLS, or a trusted proxy said `proto=https`. What decides, for one, if a
/// cookie may be marked `Secure`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Secure(pub bool);

impl<S: Send + Sync> FromRequestParts<S> for Secure {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Secure(
            parts.extensions.get::<Origin>().is_some_and(|o| o.secure),
        ))
    }
}

/// The body as UTF-8 text: at most [`MAX_BODY`] bytes (`413`), arrived
/// within `timeout` (`408`: a client that trickles its body byte by byte
/// holds a connection no longer than that).
pub(crate) async fn read_text(
    headers: &HeaderMap,
    body: Body,
    timeout: Duration,
) -> Result<String, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::TooLarge(MAX_BODY));
    }
    let bytes = tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY))
        .await
        .map_err(|_| ApiError::RequestTimeout(timeout.as_secs()))?
        .map_err(|_| ApiError::TooLarge(MAX_BODY))?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::BadRequest("the body is not UTF-8 text".to_string()))
}

/// First `a=NAME:value` in an SDP or fragment.
pub(crate) fn sdp_attr(sdp: &str, name: &str) -> Option<String> {
    let prefix = format!("a={name}:");
    sdp.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
}

/// The first video m-line of an SDP: its index among the m-lines, and its
/// `a=mid` if it has one.
pub(crate) fn first_video(sdp: &str) -> Option<(usize, Option<String>)> {
    let mut index: Option<usize> = None;
    let mut video: Option<(usize, Option<String>)> = None;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            if video.is_some() {
                break;
            }
            let i = index.map_or(0, |i| i + 1);
            index = Some(i);
            if m.starts_with("video ") {
                video = Some((i, None));
            }
        } else if let (Some((_, mid @ None)), Some(v)) = (&mut video, line.strip_prefix("a=mid:")) {
            *mid = Some(v.trim().to_string());
        }
    }
    video
}

/// `If-Match` against the session's entity tag, with the strong comparison
/// RFC 9110 requires for it: a weak tag (`W/"…"`) never matches.
pub(crate) fn etag_matches(if_match: &str, etag: &str) -> bool {
    if_match
        .split(',')
        .map(str::trim)
        .filter(|t| !t.starts_with("W/"))
        .filter_map(|t| t.strip_prefix('"')?.strip_suffix('"'))
        .any(|t| t == etag)
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// `405 Method Not Allowed` with the methods that are.
pub(crate) fn not_allowed(allow: &'static str) -> Response {
    let mut res = (
        StatusCode::METHOD_NOT_ALLOWED,
        format!("allowed methods: {allow}\n"),
    )
        .into_response();
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

/// `204` to `OPTIONS` (and CORS preflight) for a resource with these methods
/// and request headers.
pub(crate) fn options(allow: &'static str, headers: &'static str) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(allow));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(allow),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(headers),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_compare_strongly_and_in_lists() {
        assert!(etag_matches("\"abc\"", "abc"));
        assert!(etag_matches("\"x\", \"abc\"", "abc"));
        assert!(!etag_matches("\"abd\"", "abc"));
        // Weak tags never match, nor unquoted ones.
        assert!(!etag_matches("W/\"abc\"", "abc"));
        assert!(!etag_matches("abc", "abc"));
    }

    #[test]
    fn session_ids_have_128_random_bits() {
        let a = random_hex(16);
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_hex(16));
    }

    #[test]
    fn the_first_video_m_line_is_found() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v1\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v2\r\n";
        assert_eq!(first_video(sdp), Some((1, Some("v1".to_string()))));
        assert_eq!(first_video("v=0\r\nm=audio 9 x 0\r\n"), None);
        assert_eq!(first_video("m=video 9 x 0\n"), Some((0, None)));
    }

    #[test]
    fn stream_names_are_checked() {
        assert!(check_stream_name("cam-1_a.b").is_ok());
        assert!(check_stream_name("").is_err());
        assert!(check_stream_name("a/b").is_err());
        assert!(check_stream_name(&"x".repeat(65)).is_err());
        for dots in [".", "..", "...", ".hidden"] {
            assert!(check_stream_name(dots).is_err(), "{dots}");
        }
        assert!(check_stream_name("a..b").is_ok());
    }
}
