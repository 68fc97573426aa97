//! `/api/v1/streams/{name}/keys`: a stream's keys (the Bearer of WHIP),
//! made, listed, rotated and revoked by the stream's owner or an admin.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use lumen_auth::KeyInfo;
use serde::Deserialize;
use utoipa::ToSchema;

use super::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, RequestTimeout, TooLarge, Unauthorized, Unavailable,
    Unprocessable, UnsupportedMediaType,
};
use super::streams::{no_store, optional_body, owned};
use super::{ApiPath, St, acting_user, json};
use crate::authn::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// A stream's keys, newest first, revoked ones included; no secrets.
#[utoipa::path(
    get,
    path = "/api/v1/streams/{name}/keys",
    operation_id = "list_keys",
    tag = "streams",
    security(("bearer" = []), ("session" = [])),
    params(("name" = String, Path, description = "The stream's name")),
    responses(
        (status = 200, description = "The keys", body = Vec<KeyInfo>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn list(
    State(st): St,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller)?;
    owned(&st, &user, &name).await?;
    Ok(json(StatusCode::OK, &st.auth.keys(&name).await?))
}

/// A new key's label; the body may be left out.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyRequest {
    /// What the key is for ("OBS studio"): at most 64 characters, no
    /// control characters.
    #[serde(default)]
    #[schema(max_length = 64, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    label: Option<String>,
}

/// A new key for the stream: its secret is in this answer only.
#[utoipa::path(
    post,
    path = "/api/v1/streams/{name}/keys",
    operation_id = "create_key",
    tag = "streams",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("name" = String, Path, description = "The stream's name")),
    request_body(content = Option<KeyRequest>, description = "May be left out", content_type = "application/json"),
    responses(
        (status = 201, description = "The key with its secret (`key`)", body = lumen_auth::NewKey, headers(
            ("Cache-Control" = String, description = "`no-store`"),
        ), links(
            ("RotateKey" = (operation_id = "rotate_key", parameters(("name" = "$request.path.name"), ("id" = "$response.body#/id")))),
            ("RevokeKey" = (operation_id = "revoke_key", parameters(("name" = "$request.path.name"), ("id" = "$response.body#/id")))),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn create(
    State(st): St,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller)?;
    owned(&st, &user, &name).await?;
    let req: KeyRequest = optional_body(&st, &headers, body).await?;
    let k = st
        .auth
        .create_key(&name, req.label.as_deref().unwrap_or(""))
        .await?;
    let mut res = json(StatusCode::CREATED, &k);
    no_store(&mut res);
    Ok(res)
}

/// A key of the stream `name` (`404` for a key of another stream).
async fn key_of(st: &AppState, name: &str, id: &str) -> Result<(), ApiError> {
    match st.auth.key(id).await {
        Ok(k) if k.stream == name => Ok(()),
        _ => Err(ApiError::NotFound("no such key of this stream".to_string())),
    }
}

/// Replaces a key with a new one of the same label; the old one is revoked
/// and its live sessions end.
#[utoipa::path(
    post,
    path = "/api/v1/streams/{name}/keys/{id}/rotate",
    operation_id = "rotate_key",
    tag = "streams",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(
        ("name" = String, Path, description = "The stream's name"),
        ("id" = String, Path, description = "The key's id"),
    ),
    responses(
        (status = 201, description = "The new key with its secret (`key`)", body = lumen_auth::NewKey, headers(
            ("Cache-Control" = String, description = "`no-store`"),
        ), links(
            ("RotateKey" = (operation_id = "rotate_key", parameters(("name" = "$request.path.name"), ("id" = "$response.body#/id")))),
            ("RevokeKey" = (operation_id = "revoke_key", parameters(("name" = "$request.path.name"), ("id" = "$response.body#/id")))),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn rotate(
    State(st): St,
    caller: Caller,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller)?;
    owned(&st, &user, &name).await?;
    key_of(&st, &name, &id).await?;
    let k = st.auth.rotate_key(&id).await?;
    let mut res = json(StatusCode::CREATED, &k);
    no_store(&mut res);
    Ok(res)
}

/// Revokes a key: refused from now on, its live sessions end within 2 s.
#[utoipa::path(
    delete,
    path = "/api/v1/streams/{name}/keys/{id}",
    operation_id = "revoke_key",
    tag = "streams",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(
        ("name" = String, Path, description = "The stream's name"),
        ("id" = String, Path, description = "The key's id"),
    ),
    responses(
        (status = 200, description = "The revoked key", body = KeyInfo),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn revoke(
    State(st): St,
    caller: Caller,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller)?;
    owned(&st, &user, &name).await?;
    key_of(&st, &name, &id).await?;
    Ok(json(StatusCode::OK, &st.auth.revoke_key(&id).await?))
}
