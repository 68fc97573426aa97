//! `/api/v1/openapi.json`: the account API described from its own handlers.
//!
//! Every route of [`super::api`] is registered through utoipa-axum's
//! `routes!`, which takes the method and path from the handler's
//! `#[utoipa::path]`, so a route cannot be served without its entry in the
//! document. This module holds the document's frame: the security schemes,
//! the problem answers the operations share, and the handler serving it.

use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

use crate::error::{ApiError, Problem};

/// The document's frame; [`super::api`] adds the paths.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "lumen account API",
        description = "Accounts, streams, stream keys, share links and tokens of a lumen \
            server (docs/api.md). Every error is an RFC 9457 problem \
            (`application/problem+json`). Pages authenticate with the `lumen_session` \
            cookie and send the session's CSRF token in `X-CSRF-Token` on POST, PATCH \
            and DELETE; scripts send `Authorization: Bearer <JWT>` with the `admin` scope."
    ),
    modifiers(&SecuritySchemes),
    components(
        schemas(Problem),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            RequestTimeout,
            Conflict,
            TooLarge,
            UnsupportedMediaType,
            Unprocessable,
            TooManyRequests,
            Unavailable
        )
    ),
    tags(
        (name = "session", description = "First-run setup, log in and out, sign up"),
        (name = "streams", description = "My streams, their keys and share links"),
        (name = "admin", description = "Users, invites and tokens (admins)"),
        (name = "webhooks", description = "Webhook endpoints and their delivery logs (admins)"),
        (name = "meta", description = "Documents about the server itself")
    )
)]
pub(crate) struct ApiDoc;

/// The schemes the operations name in their `security`: `bearer` (a JWT
/// with the `admin` scope), and `session` with `csrf` (a logged-in page).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A token minted by this server (`lumen token mint --scope admin`, or \
                         `POST /api/v1/tokens`) whose scopes include `admin`. Stream keys \
                         are for WHIP only.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "lumen_session",
                "The web session cookie set by log in, sign up and setup.",
            ))),
        );
        components.add_security_scheme(
            "csrf",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRF-Token",
                "The session's CSRF token (`csrf` in the answer of log in, sign up, setup \
                 and `GET /api/v1/me`): required with the cookie on POST, PATCH and DELETE.",
            ))),
        );
    }
}

/// The OpenAPI 3.1 document of the account API.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    responses(
        (status = 200, description = "This document", body = Object, content_type = "application/json"),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn document() -> Result<Response, ApiError> {
    // Made once: the routes do not change while the server runs.
    static DOC: OnceLock<Option<String>> = OnceLock::new();
    let doc = DOC.get_or_init(|| {
        super::openapi()
            .to_pretty_json()
            .map_err(|e| tracing::error!(error = %e, "the OpenAPI document does not serialize"))
            .ok()
    });
    let Some(doc) = doc else {
        return Err(ApiError::Unavailable);
    };
    let mut res = (StatusCode::OK, doc.clone()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(res)
}

// The types below only describe answers in the document: the problems are
// made by `ApiError`, the JWKS by lumen_auth. Nothing constructs them.

/// The request is malformed: the body is not JSON of the documented shape
/// (an unknown field, a wrong type), or a parameter does not parse.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
pub(crate) struct BadRequest(Problem);

/// No credential, or one that is not valid (unknown, expired, revoked).
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"lumen\"`"))
)]
#[allow(dead_code)]
pub(crate) struct Unauthorized(Problem);

/// A valid credential that does not allow this: not an admin, a stream key,
/// the cookie without its `X-CSRF-Token`, or what the detail says.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
pub(crate) struct Forbidden(Problem);

/// No such thing (or one of another user's, whose existence is not told).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
pub(crate) struct NotFound(Problem);

/// The body did not arrive within the server's body timeout.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
pub(crate) struct RequestTimeout(Problem);

/// The name is taken, the key is already revoked, or it is the last
/// active admin.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
pub(crate) struct Conflict(Problem);

/// The body is larger than 64 KiB.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
pub(crate) struct TooLarge(Problem);

/// The body is not `application/json`.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
pub(crate) struct UnsupportedMediaType(Problem);

/// Well-formed, but a value is not acceptable (a name, a password, a
/// lifetime, a scope): the detail says which.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
pub(crate) struct Unprocessable(Problem);

/// Too many attempts from this address or for this name.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds until a retry may succeed"))
)]
#[allow(dead_code)]
pub(crate) struct TooManyRequests(Problem);

/// The account store is not available.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds until a retry may succeed"))
)]
#[allow(dead_code)]
pub(crate) struct Unavailable(Problem);

/// lumen's public signing keys (RFC 7517).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct Jwks {
    /// One key today: lumen's Ed25519 key.
    keys: Vec<Jwk>,
}

/// A public key (RFC 8037 for Ed25519).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct Jwk {
    /// `OKP`.
    kty: String,
    /// `Ed25519`.
    crv: String,
    /// The public key, base64url.
    x: String,
    /// The key id tokens carry in their header (RFC 7638 thumbprint).
    kid: String,
    /// `EdDSA`.
    alg: String,
    /// `sig`.
    r#use: String,
}
