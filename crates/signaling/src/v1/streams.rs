//! `/api/v1/streams`: my streams and their share links (their keys are
//! in `keys`), and the body helpers the other modules share.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lumen_auth::{Role, Scopes, Stream, User, Visibility};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, RequestTimeout, TooLarge, Unauthorized, Unavailable,
    Unprocessable, UnsupportedMediaType,
};
use super::{ApiPath, ApiQuery, St, acting_user, json, json_body};
use crate::authn::Caller;
use crate::error::ApiError;
use crate::request::Secure;
use crate::state::AppState;

/// Longest share link.
const MAX_SHARE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_SHARE_TTL: Duration = Duration::from_secs(24 * 3600);

/// A stream with the URLs its owner copies, and whether it is live now.
#[derive(Serialize, ToSchema)]
#[schema(as = StreamInfo)]
pub(super) struct StreamJson {
    #[serde(flatten)]
    stream: Stream,
    /// Where an encoder publishes (WHIP), with one of the stream's keys.
    whip_url: String,
    /// Where a player subscribes (WHEP).
    whep_url: String,
    /// The watch page.
    watch_url: String,
    /// Whether a publisher is sending now.
    live: bool,
    /// Viewers now.
    viewers: usize,
}

/// `http(s)://host` of the request, for the URLs a user copies.
pub(super) fn origin(headers: &HeaderMap, secure: bool) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        })
        .unwrap_or("localhost");
    format!("{}://{host}", if secure { "https" } else { "http" })
}

async fn with_urls(st: &AppState, streams: Vec<Stream>, origin: &str) -> Vec<StreamJson> {
    let live: HashMap<String, (bool, usize)> = st
        .node
        .streams()
        .await
        .into_iter()
        .map(|s| (s.name, (s.live, s.viewers)))
        .collect();
    streams
        .into_iter()
        .map(|s| {
            let (live, viewers) = live.get(&s.name).copied().unwrap_or_default();
            StreamJson {
                whip_url: format!("{origin}/whip/{}", s.name),
                whep_url: format!("{origin}/whep/{}", s.name),
                watch_url: format!("{origin}/watch/{}", s.name),
                live,
                viewers,
                stream: s,
            }
        })
        .collect()
}

/// The stream `name` if `user` owns it or is an admin (`404` for streams
/// others own: their existence is not told).
pub(super) async fn owned(st: &AppState, user: &User, name: &str) -> Result<Stream, ApiError> {
    match st.auth.stream(name).await? {
        Some(s) if s.owner_id == user.id || user.role == Role::Admin => Ok(s),
        _ => Err(ApiError::NotFound("no such stream of yours".to_string())),
    }
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    all: bool,
}

/// My streams; with `?all=true`, every stream (admins).
#[utoipa::path(
    get,
    path = "/api/v1/streams",
    operation_id = "list_streams",
    tag = "streams",
    security(("bearer" = []), ("session" = [])),
    params(("all" = Option<bool>, Query, description = "Every stream, not only mine (admins)")),
    responses(
        (status = 200, description = "The streams, by name", body = Vec<StreamJson>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn list(
    State(st): St,
    caller: Caller,
    Secure(secure): Secure,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller)?;
    let streams = if q.all {
        if user.role != Role::Admin {
            return Err(ApiError::Forbidden(
                "only admins list every stream".to_string(),
            ));
        }
        st.auth.all_streams().await?
    } else {
        st.auth.streams_of(&user.id).await?
    };
    let out = with_urls(&st, streams, &origin(&headers, secure)).await;
    Ok(json(StatusCode::OK, &out))
}

/// A new stream (`visibility` is `public` unless said).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewStream {
    /// 1 to 64 letters, digits, `-`, `_` or `.`, not starting with `.`.
    #[schema(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")]
    name: String,
    #[serde(default)]
    visibility: Option<Visibility>,
    /// At most 200 characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    title: Option<String>,
}

/// Creates a stream owned by the logged-in user (broadcasters and admins;
/// a token owns nothing: `403`).
#[utoipa::path(
    post,
    path = "/api/v1/streams",
    operation_id = "create_stream",
    tag = "streams",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    request_body = NewStream,
    responses(
        (status = 201, description = "The new stream", body = StreamJson),
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
pub(super) async fn create(
    State(st): St,
    caller: Caller,
    Secure(secure): Secure,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller)?;
    let req: NewStream = json_body(&st, &headers, body).await?;
    // A token admin owns nothing: streams need a user.
    let owner = if user.id.starts_with("token:") {
        return Err(ApiError::Forbidden(
            "a stream is owned by a user: create it logged in, or with `lumen key create --owner`"
                .to_string(),
        ));
    } else {
        user
    };
    let s = st
        .auth
        .create_stream(
            &owner,
            &req.name,
            req.visibility.unwrap_or(Visibility::Public),
            req.title.as_deref().unwrap_or(""),
        )
        .await?;
    let mut out = with_urls(&st, vec![s], &origin(&headers, secure)).await;
    Ok(json(StatusCode::CREATED, &out.remove(0)))
}

/// One of my streams (any, for an admin).
#[utoipa::path(
    get,
    path = "/api/v1/streams/{name}",
    operation_id = "get_stream",
    tag = "streams",
    security(("bearer" = []), ("session" = [])),
    params(("name" = String, Path, description = "The stream's name")),
    responses(
        (status = 200, description = "The stream", body = StreamJson),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn one(
    State(st): St,
    caller: Caller,
    Secure(secure): Secure,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller)?;
    let s = owned(&st, &user, &name).await?;
    let mut out = with_urls(&st, vec![s], &origin(&headers, secure)).await;
    Ok(json(StatusCode::OK, &out.remove(0)))
}

/// What to change of a stream; absent fields stay.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamChange {
    #[serde(default)]
    visibility: Option<Visibility>,
    /// At most 200 characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    title: Option<String>,
}

/// Changes a stream's visibility or title.
#[utoipa::path(
    patch,
    path = "/api/v1/streams/{name}",
    operation_id = "update_stream",
    tag = "streams",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("name" = String, Path, description = "The stream's name")),
    request_body = StreamChange,
    responses(
        (status = 200, description = "The stream as changed", body = StreamJson),
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
pub(super) async fn update(
    State(st): St,
    caller: Caller,
    Secure(secure): Secure,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller)?;
    owned(&st, &user, &name).await?;
    let req: StreamChange = json_body(&st, &headers, body).await?;
    let s = st
        .auth
        .update_stream(&name, req.visibility, req.title.as_deref())
        .await?;
    let mut out = with_urls(&st, vec![s], &origin(&headers, secure)).await;
    Ok(json(StatusCode::OK, &out.remove(0)))
}

/// Deletes a stream and its keys; sessions opened with them end.
#[utoipa::path(
    delete,
    path = "/api/v1/streams/{name}",
    operation_id = "delete_stream",
    tag = "streams",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("name" = String, Path, description = "The stream's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn remove(
    State(st): St,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller)?;
    owned(&st, &user, &name).await?;
    st.auth.delete_stream(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A share link's lifetime; the body may be left out.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ShareRequest {
    /// Seconds: 1 day unless said, at most 30 days.
    #[serde(default, deserialize_with = "whole_seconds")]
    #[schema(minimum = 1, maximum = 2592000)]
    ttl_secs: Option<u64>,
}

/// A token just minted.
#[derive(Serialize, ToSchema)]
#[schema(as = MintedToken)]
pub(super) struct MintedJson {
    /// The JWT.
    pub token: String,
    /// Its id, for `DELETE /api/v1/tokens/{jti}`.
    pub jti: Option<String>,
    /// Milliseconds since the epoch, like every time in this API.
    pub expires_at: u64,
    /// A share link's watch page, with the token in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_url: Option<String>,
}

/// A lifetime from a request: at least a second, at most `max`.
pub(super) fn ttl(
    secs: Option<u64>,
    default: Duration,
    max: Duration,
) -> Result<Duration, ApiError> {
    let d = secs.map(Duration::from_secs).unwrap_or(default);
    if d.is_zero() || d > max {
        return Err(ApiError::Unprocessable(format!(
            "ttl_secs is 1 to {}",
            max.as_secs()
        )));
    }
    Ok(d)
}

/// A share link: a `subscribe:{name} chat:{name}` token (who has the link
/// watches and, under the owner's name, chats) and the watch page with it.
#[utoipa::path(
    post,
    path = "/api/v1/streams/{name}/tokens",
    operation_id = "share_stream",
    tag = "streams",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("name" = String, Path, description = "The stream's name")),
    request_body(content = Option<ShareRequest>, description = "May be left out", content_type = "application/json"),
    responses(
        (status = 201, description = "The token and its `watch_url`", body = MintedJson, headers(
            ("Cache-Control" = String, description = "`no-store`"),
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
pub(super) async fn share(
    State(st): St,
    caller: Caller,
    Secure(secure): Secure,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller)?;
    owned(&st, &user, &name).await?;
    let req: ShareRequest = optional_body(&st, &headers, body).await?;
    let ttl = ttl(req.ttl_secs, DEFAULT_SHARE_TTL, MAX_SHARE_TTL)?;
    let scopes =
        Scopes::parse(&format!("subscribe:{name} chat:{name}")).map_err(ApiError::BadRequest)?;
    let minted = mint(&st, &user.id, &scopes, ttl).await?;
    let watch_url = format!(
        "{}/watch/{name}?token={}",
        origin(&headers, secure),
        minted.token
    );
    let mut res = json(
        StatusCode::CREATED,
        &MintedJson {
            watch_url: Some(watch_url),
            ..minted
        },
    );
    no_store(&mut res);
    Ok(res)
}

/// Mints and reads back the token's id and expiry.
pub(super) async fn mint(
    st: &AppState,
    subject: &str,
    scopes: &Scopes,
    ttl: Duration,
) -> Result<MintedJson, ApiError> {
    let token = st.auth.mint(subject, scopes, ttl)?;
    let v = st.auth.principal(&token).await?;
    let (jti, expires_at) = match v {
        lumen_auth::Principal::Token(t) => (t.id, t.expires_at.saturating_mul(1000)),
        _ => (None, 0),
    };
    Ok(MintedJson {
        token,
        jti,
        expires_at,
        watch_url: None,
    })
}

/// A JSON body that may be absent (no body, or no Content-Type and an
/// empty body): the defaults then.
pub(super) async fn optional_body<T: serde::de::DeserializeOwned + Default>(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let empty = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0")
        || (headers.get(header::CONTENT_TYPE).is_none()
            && headers.get(header::TRANSFER_ENCODING).is_none());
    if empty {
        return Ok(T::default());
    }
    // `null` is no body too: the document's `Option<…>` body says so.
    let body: Option<T> = json_body(st, headers, body).await?;
    Ok(body.unwrap_or_default())
}

/// Seconds in a JSON body: a whole number, `2.0` included (JSON Schema's
/// `integer`, which the document promises, is any number without a
/// fraction); `null` or absent is `None`.
pub(super) fn whole_seconds<'de, D>(d: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(n) = n.as_u64() {
        return Ok(Some(n));
    }
    match n.as_f64() {
        // Below 2^64, so the cast is exact.
        Some(f) if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) => {
            Ok(Some(f as u64))
        }
        _ => Err(serde::de::Error::custom(format!(
            "{n} is not a whole, non-negative number of seconds"
        ))),
    }
}

pub(super) fn no_store(res: &mut Response) {
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
}
