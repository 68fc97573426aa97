//! Admin endpoints: users, invites, tokens.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use lumen_auth::{Role, Scopes, User};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, RequestTimeout, TooLarge, Unauthorized, Unavailable,
    Unprocessable, UnsupportedMediaType,
};
use super::streams::{MintedJson, mint as mint_token, origin, ttl};
use super::{ApiPath, St, json, json_body, require_admin};
use crate::authn::Caller;
use crate::error::ApiError;
use crate::request::Secure;

const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_INVITE_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// Every user, by name.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    operation_id = "list_users",
    tag = "admin",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The users", body = Vec<User>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn users(State(st): St, caller: Caller) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    Ok(json(StatusCode::OK, &st.auth.users().await?))
}

/// A new user (`broadcaster` unless said).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    /// 2 to 32 letters, digits, `-`, `_` or `.`, not starting with `.`.
    #[schema(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{1,31}$")]
    name: String,
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
    #[serde(default)]
    role: Option<Role>,
}

/// Creates a user.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    operation_id = "create_user",
    tag = "admin",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    request_body = NewUser,
    responses(
        (status = 201, description = "The new user", body = User, links(
            ("UpdateUser" = (operation_id = "update_user", parameters(("id" = "$response.body#/id")))),
            ("DeleteUser" = (operation_id = "delete_user", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 408, response = RequestTimeout),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn create_user(
    State(st): St,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let req: NewUser = json_body(&st, &headers, body).await?;
    let user = st
        .auth
        .create_user(
            &req.name,
            &req.password,
            req.role.unwrap_or(Role::Broadcaster),
        )
        .await?;
    Ok(json(StatusCode::CREATED, &user))
}

/// What to change of a user; absent fields stay.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UserChange {
    #[serde(default)]
    role: Option<Role>,
    /// Disabling ends the user's sessions and stops their keys and tokens.
    #[serde(default)]
    disabled: Option<bool>,
    /// A new password; the user's other web sessions end.
    #[serde(default)]
    #[schema(min_length = 8, max_length = 1024)]
    password: Option<String>,
}

/// Changes a user's role, password, or disables them.
#[utoipa::path(
    patch,
    path = "/api/v1/users/{id}",
    operation_id = "update_user",
    tag = "admin",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("id" = String, Path, description = "The user's id")),
    request_body = UserChange,
    responses(
        (status = 200, description = "The user as changed", body = User),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn update_user(
    State(st): St,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let req: UserChange = json_body(&st, &headers, body).await?;
    st.auth.user(&id).await?;
    if let Some(p) = &req.password {
        st.auth.set_password(&id, p).await?;
    }
    if let Some(r) = req.role {
        st.auth.set_role(&id, r).await?;
    }
    if let Some(d) = req.disabled {
        st.auth.set_disabled(&id, d).await?;
    }
    Ok(json(StatusCode::OK, &st.auth.user(&id).await?))
}

/// Deletes a user with their streams and keys; their live sessions end.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}",
    operation_id = "delete_user",
    tag = "admin",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn delete_user(
    State(st): St,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    st.auth.delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// An invite's role (`broadcaster` unless said) and lifetime.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InviteRequest {
    #[serde(default)]
    role: Option<Role>,
    /// Seconds: 7 days unless said, at most 90 days.
    #[serde(default, deserialize_with = "super::streams::whole_seconds")]
    #[schema(minimum = 1, maximum = 7776000)]
    ttl_secs: Option<u64>,
}

/// A one-time invite code.
#[derive(Serialize, ToSchema)]
#[schema(as = Invite)]
pub(super) struct InviteJson {
    /// The code, for `invite` in `POST /api/v1/signup`.
    code: String,
    /// The sign up page with the code in it.
    signup_url: String,
}

/// A one-time invite code for a new user of a role.
#[utoipa::path(
    post,
    path = "/api/v1/invites",
    operation_id = "create_invite",
    tag = "admin",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    request_body = InviteRequest,
    responses(
        (status = 201, description = "The invite", body = InviteJson),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 408, response = RequestTimeout),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn invite(
    State(st): St,
    caller: Caller,
    Secure(secure): Secure,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let admin = require_admin(&caller)?;
    let req: InviteRequest = json_body(&st, &headers, body).await?;
    let ttl = ttl(req.ttl_secs, DEFAULT_INVITE_TTL, MAX_INVITE_TTL)?;
    let code = st
        .auth
        .create_invite(&admin, req.role.unwrap_or(Role::Broadcaster), ttl)
        .await?;
    let signup_url = format!("{}/signup?invite={code}", origin(&headers, secure));
    Ok(json(StatusCode::CREATED, &InviteJson { code, signup_url }))
}

/// A token to mint.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MintRequest {
    /// Space-separated scopes: `admin`, `publish:{stream}`,
    /// `subscribe:{stream}`, `chat:{stream}`, `moderate:{stream}`, where
    /// `{stream}` is a stream name or `*`.
    #[schema(
        pattern = r"^ *((admin|(publish|subscribe|chat|moderate):(\*|[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}))( +(admin|(publish|subscribe|chat|moderate):(\*|[A-Za-z0-9_-][A-Za-z0-9._-]{0,63})))*)? *$"
    )]
    scope: String,
    /// Seconds: 1 hour unless said, at most 365 days.
    #[serde(default, deserialize_with = "super::streams::whole_seconds")]
    #[schema(minimum = 1, maximum = 31536000)]
    ttl_secs: Option<u64>,
    /// `sub` of the token: the calling admin's id unless said.
    #[serde(default)]
    subject: Option<String>,
}

/// Mints a token.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    operation_id = "mint_token",
    tag = "admin",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    request_body = MintRequest,
    responses(
        (status = 201, description = "The token", body = MintedJson, links(
            ("RevokeToken" = (operation_id = "revoke_token", parameters(("jti" = "$response.body#/jti")))),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 408, response = RequestTimeout),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn mint(
    State(st): St,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let admin = require_admin(&caller)?;
    let req: MintRequest = json_body(&st, &headers, body).await?;
    let scopes = Scopes::parse(&req.scope).map_err(ApiError::Unprocessable)?;
    let ttl = ttl(req.ttl_secs, DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL)?;
    let subject = req.subject.unwrap_or(admin.id);
    let minted = mint_token(&st, &subject, &scopes, ttl).await?;
    Ok(json(StatusCode::CREATED, &minted))
}

/// Revokes a token by its `jti`: refused from now on, its live sessions
/// end.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{jti}",
    operation_id = "revoke_token",
    tag = "admin",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("jti" = String, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn revoke_token(
    State(st): St,
    caller: Caller,
    ApiPath(jti): ApiPath<String>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    st.auth.revoke_token(&jti).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
