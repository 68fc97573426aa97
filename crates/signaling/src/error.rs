//! `ApiError`: every client fault maps to a precise status with a reason in
//! the body, as RFC 9457 problem details (`application/problem+json`);
//! internal faults to a generic status with the detail only logged.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lumen_node::NodeError;
use lumen_sfu::SessionError;

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: the request is malformed (bad SDP, bad candidate, bad name).
    #[error("{0}")]
    BadRequest(String),
    /// 401 with `WWW-Authenticate: Bearer`: no credential, or one that is
    /// not valid.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid credential that does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such session or stream.
    #[error("{0}")]
    NotFound(String),
    /// 409: the stream already has a publisher.
    #[error("{0}")]
    Conflict(String),
    /// 409 with Retry-After: the stream has no live publisher yet.
    #[error("{0}")]
    NotLive(String),
    /// 412: the If-Match entity tag is stale.
    #[error("the session has changed since that entity tag (If-Match is stale)")]
    PreconditionFailed,
    /// 413: the body is too large.
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// 413: the body holds more than the server takes (an SDP offer with
    /// too many m-lines or candidates).
    #[error("{0}")]
    ContentTooLarge(String),
    /// 415: wrong content type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed but cannot be served.
    #[error("{0}")]
    Unprocessable(String),
    /// 428: If-Match is required.
    #[error("PATCH needs an If-Match header (the session's ETag, or \"*\" for an ICE restart)")]
    PreconditionRequired,
    /// 503 with Retry-After: a worker is gone or overloaded.
    #[error("the media server is not available; retry shortly")]
    Unavailable,
    /// 408: the body did not arrive in time.
    #[error("the request body did not arrive within {0} s")]
    RequestTimeout(u64),
    /// 429 without Retry-After: a per-session limit, which waiting does
    /// not lift (the session's trickled candidates).
    #[error("{0}")]
    SessionLimit(String),
    /// 429 with Retry-After: a per-client limit.
    #[error("{reason}; retry in {retry_after} s")]
    TooManyRequests {
        /// Which limit, in words.
        reason: String,
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// 503 with Retry-After: the server holds as much as it is allowed to.
    #[error("{0}; retry shortly")]
    Overloaded(String),
    /// 500: a stored object cannot be opened (sealed with a key this server
    /// does not have, or damaged): said plainly rather than served as
    /// garbage.
    #[error("{0}")]
    CannotOpen(String),
}

impl ApiError {
    /// The status code of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::NotLive(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::TooLarge(_) | ApiError::ContentTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            ApiError::Unavailable | ApiError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::CannotOpen(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyRequests { .. } | ApiError::SessionLimit(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::MalformedSdp(_)
            | SessionError::BadCandidate(_)
            | SessionError::BadIceCredentials(_) => ApiError::BadRequest(e.to_string()),
            SessionError::OfferTooLarge(_) => ApiError::ContentTooLarge(e.to_string()),
            SessionError::TooManyCandidates(_) => ApiError::SessionLimit(e.to_string()),
            SessionError::Unsupported(_) => ApiError::Unprocessable(e.to_string()),
            SessionError::StreamBusy(_) => ApiError::Conflict(e.to_string()),
            SessionError::NotLive(_) => ApiError::NotLive(e.to_string()),
            SessionError::UnknownPeer => ApiError::NotFound("no such session".to_string()),
            _ => ApiError::Unprocessable(e.to_string()),
        }
    }
}

impl From<lumen_auth::AuthError> for ApiError {
    fn from(e: lumen_auth::AuthError) -> Self {
        use lumen_auth::AuthError as A;
        match e {
            A::Unauthenticated(m) => ApiError::Unauthorized(m),
            A::Forbidden(m) => ApiError::Forbidden(m),
            A::NotFound(m) => ApiError::NotFound(m),
            A::Conflict(m) => ApiError::Conflict(m),
            A::Invalid(m) => ApiError::Unprocessable(m),
            A::Throttled { retry_after } => ApiError::TooManyRequests {
                reason: "too many attempts".to_string(),
                retry_after,
            },
            A::Token(lumen_auth::TokenError::Invalid(m)) => ApiError::Unauthorized(m),
            e => {
                tracing::warn!(error = %e, "account service failed");
                ApiError::Unavailable
            }
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Session(e) => ApiError::from(e),
            e @ NodeError::UnknownRid { .. } => ApiError::Unprocessable(e.to_string()),
            _ => ApiError::Unavailable,
        }
    }
}

/// An error answer: RFC 9457 problem details (also the schema of every
/// error in `/api/v1/openapi.json`).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "about:blank",
    "title": "Not Found",
    "status": 404,
    "detail": "no such stream of yours"
}))]
pub(crate) struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[schema(value_type = String)]
    pub r#type: &'static str,
    /// The status's reason phrase.
    #[schema(value_type = String)]
    pub title: &'static str,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong, for a person to read.
    pub detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = Problem {
            r#type: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.to_string(),
        };
        let body = serde_json::to_string(&body).unwrap_or_default();
        let mut res = (status, format!("{body}\n")).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            ApiError::Unauthorized(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"lumen\""),
                );
            }
            ApiError::NotLive(_) | ApiError::Unavailable | ApiError::Overloaded(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            ApiError::TooManyRequests { retry_after, .. } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        res
    }
}
