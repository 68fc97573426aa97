//! `/api/v1/webhooks` (admins): the HTTP endpoints lumen POSTs its events
//! to, signed per Standard Webhooks, and each one's delivery log. The
//! queue and the deliverer are `lumen_auth::webhooks`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use lumen_auth::webhooks::{Delivery, Endpoint, EventType, MAX_LOG, NewEndpoint};
use serde::Deserialize;
use utoipa::ToSchema;

use super::openapi::{
    BadRequest, Forbidden, NotFound, RequestTimeout, TooLarge, Unauthorized, Unavailable,
    Unprocessable, UnsupportedMediaType,
};
use super::{ApiPath, ApiQuery, St, json, json_body, require_admin};
use crate::authn::Caller;
use crate::error::ApiError;

/// Deliveries a log answer has unless `limit` says otherwise.
const DEFAULT_LOG: usize = 50;

/// Every webhook endpoint, oldest first (without their secrets).
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    operation_id = "list_webhooks",
    tag = "webhooks",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The endpoints", body = Vec<Endpoint>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn list(State(st): St, caller: Caller) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    Ok(json(StatusCode::OK, &st.auth.webhooks().endpoints().await?))
}

/// An endpoint to register. The patterns are lumen_auth's `URL_PATTERN`
/// and `SECRET_PATTERN` (utoipa takes literals only; a test compares them).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewWebhook {
    /// Where deliveries are POSTed: `http://` or `https://`, a host name
    /// or IPv4 address, an optional port, a path and query (no user info,
    /// no fragment). `https://` is checked against the system's CAs.
    #[schema(
        max_length = 2048,
        pattern = r"^https?://[A-Za-z0-9.-]+(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(/[A-Za-z0-9._~!$&'()*+,;=:@/?%-]*)?$"
    )]
    url: String,
    /// The events it gets; absent or empty: every event but the opt-in
    /// `viewer.joined` and `viewer.left`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<EventType>>)]
    events: Option<Vec<String>>,
    /// The signing secret, `whsec_` + base64 of 24 to 64 bytes; absent: a
    /// new one is made.
    #[serde(default)]
    #[schema(
        pattern = r"^whsec_((([A-Za-z0-9+/]{4}){8,20}([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?)|(([A-Za-z0-9+/]{4}){21}([A-Za-z0-9+/][AQgw]==)?))$"
    )]
    secret: Option<String>,
    /// Free text.
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    description: Option<String>,
}

/// Registers an endpoint. The answer holds its signing secret: the only
/// time it is shown.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    operation_id = "create_webhook",
    tag = "webhooks",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    request_body = NewWebhook,
    responses(
        (status = 201, description = "The endpoint with its `secret`", body = NewEndpoint),
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
pub(super) async fn create(
    State(st): St,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let req: NewWebhook = json_body(&st, &headers, body).await?;
    let events = req
        .events
        .unwrap_or_default()
        .iter()
        .map(|e| e.parse::<EventType>())
        .collect::<Result<Vec<_>, _>>()?;
    let created = st
        .auth
        .webhooks()
        .register(
            &req.url,
            &events,
            req.secret.as_deref(),
            req.description.as_deref().unwrap_or(""),
        )
        .await?;
    Ok(json(StatusCode::CREATED, &created))
}

/// One endpoint.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    operation_id = "get_webhook",
    tag = "webhooks",
    security(("bearer" = []), ("session" = [])),
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint", body = Endpoint),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn one(
    State(st): St,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    Ok(json(
        StatusCode::OK,
        &st.auth.webhooks().endpoint(&id).await?,
    ))
}

/// What to change of an endpoint.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct WebhookChange {
    /// A disabled endpoint gets no new deliveries, and its pending ones
    /// wait until it is enabled again.
    enabled: bool,
}

/// Enables or disables an endpoint.
#[utoipa::path(
    patch,
    path = "/api/v1/webhooks/{id}",
    operation_id = "update_webhook",
    tag = "webhooks",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body = WebhookChange,
    responses(
        (status = 200, description = "The endpoint", body = Endpoint),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn update(
    State(st): St,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let req: WebhookChange = json_body(&st, &headers, body).await?;
    let endpoint = st.auth.webhooks().set_enabled(&id, req.enabled).await?;
    Ok(json(StatusCode::OK, &endpoint))
}

/// Deletes an endpoint with its delivery log; what it had pending is not
/// sent.
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    operation_id = "delete_webhook",
    tag = "webhooks",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn remove(
    State(st): St,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    st.auth.webhooks().delete(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub(super) struct LogQuery {
    #[serde(default)]
    limit: Option<u32>,
}

/// An endpoint's delivery log, newest first: each event with its status
/// (`pending`, `delivered`, `failed`), attempts, and the last attempt's
/// HTTP status or error.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    operation_id = "list_webhook_deliveries",
    tag = "webhooks",
    security(("bearer" = []), ("session" = [])),
    params(
        ("id" = String, Path, description = "The endpoint's id"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "How many, newest first (default 50)"),
    ),
    responses(
        (status = 200, description = "The deliveries", body = Vec<Delivery>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn deliveries(
    State(st): St,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let limit = q.limit.map_or(DEFAULT_LOG, |n| n as usize);
    if !(1..=MAX_LOG).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit is 1 to {MAX_LOG}")));
    }
    Ok(json(
        StatusCode::OK,
        &st.auth.webhooks().deliveries(&id, limit).await?,
    ))
}

#[cfg(test)]
mod tests {
    use lumen_auth::webhooks::{SECRET_PATTERN, URL_PATTERN};

    #[test]
    fn the_documented_patterns_are_the_checked_ones() {
        let doc = serde_json::to_value(super::super::openapi()).expect("serializes");
        let fields = &doc["components"]["schemas"]["NewWebhook"]["properties"];
        assert_eq!(fields["url"]["pattern"], URL_PATTERN, "{fields}");
        assert_eq!(fields["secret"]["pattern"], SECRET_PATTERN, "{fields}");
    }
}
