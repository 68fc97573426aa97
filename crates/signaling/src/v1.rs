//! The account API under `/api/v1` (docs/api.md): setup, log in and out,
//! sign up, my streams and their keys, share links, their chats' moderation
//! logs and reports, and user management for admins. Pages authenticate with the session cookie (and `X-CSRF-Token`
//! on unsafe methods, checked by [`Caller`]); scripts with a Bearer JWT
//! carrying the `admin` scope.
//!
//! Every route is registered with utoipa-axum's `routes!` from the
//! handler's `#[utoipa::path]`: the method and path come from the same
//! annotation as its entry in `/api/v1/openapi.json` (see `openapi`).

mod admin;
mod chat;
mod cluster;
mod keys;
mod openapi;
mod recordings;
mod streams;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lumen_auth::{Principal, Role, User, WebSession};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::authn::{Caller, SESSION_COOKIE, cookie};
use crate::error::ApiError;
use crate::request::{ClientAddr, Secure, read_text, require_content_type};
use crate::state::AppState;
use openapi::{
    BadRequest, Conflict, Forbidden, RequestTimeout, TooLarge, TooManyRequests, Unauthorized,
    Unavailable, Unprocessable, UnsupportedMediaType,
};

type St = State<Arc<AppState>>;

/// The `/api/v1` routes and `/.well-known/jwks.json`.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    api().split_for_parts().0
}

/// The routes with their documentation: one `routes!` per path, naming
/// every handler of that path (utoipa-axum routes all the handlers of one
/// `routes!` on each of its paths).
pub(crate) fn api() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(setup_state, setup))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(signup))
        .routes(routes!(me))
        .routes(routes!(streams::list, streams::create))
        .routes(routes!(streams::one, streams::update, streams::remove))
        .routes(routes!(keys::list, keys::create))
        .routes(routes!(keys::revoke))
        .routes(routes!(keys::rotate))
        .routes(routes!(streams::share))
        .routes(routes!(chat::audit))
        .routes(routes!(chat::reports))
        .routes(routes!(chat::all_reports))
        .routes(routes!(chat::resolve_report))
        .routes(routes!(chat::moderate))
        .routes(routes!(recordings::list))
        .routes(routes!(recordings::one, recordings::remove))
        .routes(routes!(recordings::chat))
        .routes(routes!(recordings::start, recordings::stop))
        .routes(routes!(admin::mint))
        .routes(routes!(admin::revoke_token))
        .routes(routes!(admin::users, admin::create_user))
        .routes(routes!(admin::update_user, admin::delete_user))
        .routes(routes!(admin::invite))
        .routes(routes!(webhooks::list, webhooks::create))
        .routes(routes!(webhooks::one, webhooks::update, webhooks::remove))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(cluster::view))
        .routes(routes!(jwks))
        .routes(routes!(openapi::document))
}

/// The OpenAPI document served at `/api/v1/openapi.json`.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

/// `Path` whose rejection is a problem like every other error of the API
/// (axum's own is plain text).
pub(crate) struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, st).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(e) => Err(rejection(e.status(), e.body_text())),
        }
    }
}

/// `Query` whose rejection is a problem.
pub(crate) struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, st).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(rejection(e.status(), e.body_text())),
        }
    }
}

/// A client's fault is its `400`; anything else is the server's own (a
/// route whose path has no such parameter), logged and not told.
fn rejection(status: StatusCode, text: String) -> ApiError {
    if status.is_client_error() {
        ApiError::BadRequest(text)
    } else {
        tracing::error!(%status, %text, "an extractor failed");
        ApiError::Unavailable
    }
}

/// A JSON request body: `application/json` (`415` otherwise: a form post
/// from another site cannot send it), within the body limits, parsed.
pub(crate) async fn json_body<T: DeserializeOwned>(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    require_content_type(headers, "application/json")?;
    let text = read_text(headers, body, st.body_timeout).await?;
    // serde reads a struct from an array of its fields too (`[null, null]`
    // was a valid PATCH); every body of this API is an object.
    if text.trim_start().starts_with('[') {
        return Err(ApiError::BadRequest(
            "the JSON body must be an object, not an array".to_string(),
        ));
    }
    serde_json::from_str(&text).map_err(|e| ApiError::BadRequest(format!("the JSON body: {e}")))
}

/// `status` with a JSON body.
pub(crate) fn json(status: StatusCode, v: &impl Serialize) -> Response {
    (status, axum::Json(v)).into_response()
}

/// The user a request acts as: the logged-in one, or for a Bearer JWT with
/// the `admin` scope, an admin named after the token's subject.
pub(crate) fn acting_user(caller: &Caller) -> Result<User, ApiError> {
    if caller.csrf_refused {
        return Err(ApiError::Forbidden(format!(
            "a request made with the session cookie needs its CSRF token in {}",
            crate::authn::CSRF_HEADER
        )));
    }
    match &caller.principal {
        Principal::User(u) => Ok(u.clone()),
        Principal::Token(t) if t.scopes.is_admin() => Ok(User {
            id: format!("token:{}", t.subject),
            name: t.subject.clone(),
            role: Role::Admin,
            disabled: false,
            created_at: 0,
        }),
        Principal::Anonymous => Err(ApiError::Unauthorized(
            "log in, or send a Bearer token with the admin scope".to_string(),
        )),
        _ => Err(ApiError::Forbidden(
            "this credential does not open the account API (stream keys are for WHIP)".to_string(),
        )),
    }
}

pub(crate) fn require_admin(caller: &Caller) -> Result<User, ApiError> {
    let u = acting_user(caller)?;
    if u.role != Role::Admin {
        return Err(ApiError::Forbidden("admins only".to_string()));
    }
    Ok(u)
}

/// A logged-in page's user and CSRF token (its cookie is in `Set-Cookie`).
#[derive(Serialize, ToSchema)]
#[schema(as = Session)]
struct SessionJson<'a> {
    user: &'a User,
    /// Send it in `X-CSRF-Token` with the cookie on POST, PATCH and DELETE.
    csrf: &'a str,
}

/// The answer to a log in: the user and CSRF token, and the cookie.
fn logged_in(status: StatusCode, s: &WebSession, secure: bool) -> Response {
    let mut res = json(
        status,
        &SessionJson {
            user: &s.user,
            csrf: &s.csrf,
        },
    );
    let max_age = lumen_auth::WEB_SESSION_TTL.as_secs();
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        s.token,
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The first admin: the one-time code lumen printed at start, and the
/// admin's name and password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SetupRequest {
    /// The setup code (from the log, or `lumen setup-url`).
    code: String,
    /// 2 to 32 letters, digits, `-`, `_` or `.`, not starting with `.`.
    #[schema(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{1,31}$")]
    name: String,
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
}

/// A log in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    name: String,
    password: String,
}

/// A sign up; `invite` when sign up is `invite-only`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SignupRequest {
    /// 2 to 32 letters, digits, `-`, `_` or `.`, not starting with `.`.
    #[schema(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{1,31}$")]
    name: String,
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
    /// An invite code from an admin (`POST /api/v1/invites`).
    #[serde(default)]
    invite: Option<String>,
}

/// Whether the first admin is still to be made (`POST /api/v1/setup`).
#[derive(Serialize, ToSchema)]
struct SetupState {
    needed: bool,
    /// Who may sign up: `off`, `invite-only` or `open`.
    signup: String,
}

/// Who is calling: the user (for a token with the `admin` scope, an admin
/// named after its subject) and, for a page, the CSRF token.
#[derive(Serialize, ToSchema)]
#[schema(as = Me)]
struct MeJson {
    user: User,
    /// The session's CSRF token; `null` for a Bearer token.
    csrf: Option<String>,
}

/// Whether lumen still needs its first admin.
#[utoipa::path(
    get,
    path = "/api/v1/setup",
    operation_id = "setup_state",
    tag = "session",
    responses(
        (status = 200, description = "Whether setup is needed", body = SetupState),
        (status = 503, response = Unavailable),
    )
)]
async fn setup_state(State(st): St) -> Result<Response, ApiError> {
    let needed = !st.auth.is_set_up().await?;
    let signup = st.auth.config().signup.to_string();
    Ok(json(StatusCode::OK, &SetupState { needed, signup }))
}

/// Makes the first admin with the one-time setup code, logged in.
#[utoipa::path(
    post,
    path = "/api/v1/setup",
    operation_id = "setup",
    tag = "session",
    request_body = SetupRequest,
    responses(
        (status = 201, description = "The first admin, logged in", body = SessionJson, headers(
            ("Set-Cookie" = String, description = "`lumen_session=…; Path=/; HttpOnly; SameSite=Strict`"),
            ("Cache-Control" = String, description = "`no-store`"),
        )),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 408, response = RequestTimeout),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    )
)]
async fn setup(
    State(st): St,
    Secure(secure): Secure,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let c: SetupRequest = json_body(&st, &headers, body).await?;
    let user = st
        .auth
        .complete_setup(&c.code, &c.name, &c.password)
        .await?;
    let s = st.auth.open_web_session(user).await?;
    Ok(logged_in(StatusCode::CREATED, &s, secure))
}

/// Logs in: the session cookie and its CSRF token. Repeated failures from
/// one address or for one name wait (`429`).
#[utoipa::path(
    post,
    path = "/api/v1/login",
    operation_id = "login",
    tag = "session",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = SessionJson, headers(
            ("Set-Cookie" = String, description = "`lumen_session=…; Path=/; HttpOnly; SameSite=Strict`"),
            ("Cache-Control" = String, description = "`no-store`"),
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 408, response = RequestTimeout),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    )
)]
async fn login(
    State(st): St,
    ClientAddr(client): ClientAddr,
    Secure(secure): Secure,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let c: LoginRequest = json_body(&st, &headers, body).await?;
    let s = st.auth.login(&c.name, &c.password, client).await?;
    Ok(logged_in(StatusCode::OK, &s, secure))
}

/// Makes an account and logs it in, when sign up is `open` or
/// `invite-only` (`403` when it is off).
#[utoipa::path(
    post,
    path = "/api/v1/signup",
    operation_id = "signup",
    tag = "session",
    request_body = SignupRequest,
    responses(
        (status = 201, description = "Signed up and logged in", body = SessionJson, headers(
            ("Set-Cookie" = String, description = "`lumen_session=…; Path=/; HttpOnly; SameSite=Strict`"),
            ("Cache-Control" = String, description = "`no-store`"),
        )),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 408, response = RequestTimeout),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    )
)]
async fn signup(
    State(st): St,
    ClientAddr(client): ClientAddr,
    Secure(secure): Secure,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let c: SignupRequest = json_body(&st, &headers, body).await?;
    // Sign ups count like failed log ins of their address: a script that
    // makes accounts in a loop is slowed like a password guesser.
    st.auth.count_signup(client)?;
    let user = st
        .auth
        .signup(&c.name, &c.password, c.invite.as_deref())
        .await?;
    let s = st.auth.open_web_session(user).await?;
    Ok(logged_in(StatusCode::CREATED, &s, secure))
}

/// Ends the page's session and clears its cookie (anyone may call it).
#[utoipa::path(
    post,
    path = "/api/v1/logout",
    operation_id = "logout",
    tag = "session",
    security((), ("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 204, description = "Logged out", headers(
            ("Set-Cookie" = String, description = "`lumen_session=; …; Max-Age=0`"),
        )),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    )
)]
async fn logout(State(st): St, caller: Caller, headers: HeaderMap) -> Result<Response, ApiError> {
    if caller.user().is_some()
        && let Some(token) = cookie(&headers, SESSION_COOKIE)
    {
        st.auth.logout(token).await?;
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("lumen_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(res)
}

/// Who is calling, and the page's CSRF token.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    operation_id = "me",
    tag = "session",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The caller", body = MeJson, headers(
            ("Cache-Control" = String, description = "`no-store`"),
        )),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    )
)]
async fn me(caller: Caller) -> Result<Response, ApiError> {
    let user = acting_user(&caller)?;
    let mut res = json(
        StatusCode::OK,
        &MeJson {
            user,
            csrf: caller.csrf,
        },
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// lumen's public signing keys, to verify the tokens it mints.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    operation_id = "jwks",
    tag = "meta",
    responses(
        (status = 200, description = "The JWKS", body = openapi::Jwks, headers(
            ("Cache-Control" = String, description = "`public, max-age=300`"),
        )),
    )
)]
async fn jwks(State(st): St) -> Response {
    let mut res = json(StatusCode::OK, &st.auth.jwks());
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}

#[cfg(test)]
mod openapi_tests;
#[cfg(test)]
mod tests;
