//! `/api/v1/streams/{name}/chat/…` and `/api/v1/chat/reports`: a stream's
//! chat moderation log, its reports (the moderation queue) and moderation
//! commands, for its moderators (admins, moderators, and the stream's
//! owner). The rooms themselves are `crate::chat`; the records are
//! `lumen_auth::chat`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use lumen_auth::chat::{AuditRecord, MAX_LOG, ReportRecord};
use lumen_auth::{Role, User};
use lumen_chat::{MemberInfo, Role as ChatRole};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::{
    BadRequest, Forbidden, NotFound, RequestTimeout, TooLarge, Unauthorized, Unavailable,
    Unprocessable, UnsupportedMediaType,
};
use super::{ApiPath, ApiQuery, St, acting_user, json, json_body};
use crate::authn::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Entries an answer has unless `limit` says otherwise.
const DEFAULT_LOG: usize = 50;

#[derive(Deserialize)]
pub(super) struct LogQuery {
    #[serde(default)]
    limit: Option<u32>,
    /// Reports: only those still in the moderation queue.
    #[serde(default)]
    open: bool,
}

impl LogQuery {
    fn limit(&self) -> Result<usize, ApiError> {
        let limit = self.limit.map_or(DEFAULT_LOG, |n| n as usize);
        if !(1..=MAX_LOG).contains(&limit) {
            return Err(ApiError::BadRequest(format!("limit is 1 to {MAX_LOG}")));
        }
        Ok(limit)
    }
}

/// A stream's chat moderation log, newest first: deletions, timeouts,
/// bans, unbans, clears and mode changes, with who did them.
#[utoipa::path(
    get,
    path = "/api/v1/streams/{name}/chat/audit",
    operation_id = "list_chat_audit",
    tag = "streams",
    security(("bearer" = []), ("session" = [])),
    params(
        ("name" = String, Path, description = "The stream"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "How many, newest first (default 50)"),
    ),
    responses(
        (status = 200, description = "The moderation actions", body = Vec<AuditRecord>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn audit(
    State(st): St,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit()?;
    moderates(&st, &acting_user(&caller)?, &name).await?;
    Ok(json(
        StatusCode::OK,
        &st.auth.chat().audit(&name, limit).await?,
    ))
}

/// A stream's chat reports, newest first: the reported message as it was,
/// who reported it and why, and whether it has been deleted since.
#[utoipa::path(
    get,
    path = "/api/v1/streams/{name}/chat/reports",
    operation_id = "list_chat_reports",
    tag = "streams",
    security(("bearer" = []), ("session" = [])),
    params(
        ("name" = String, Path, description = "The stream"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "How many, newest first (default 50)"),
        ("open" = Option<bool>, Query, description = "Only those still in the moderation queue (default false: all)"),
    ),
    responses(
        (status = 200, description = "The reports", body = Vec<ReportRecord>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn reports(
    State(st): St,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit()?;
    moderates(&st, &acting_user(&caller)?, &name).await?;
    Ok(json(
        StatusCode::OK,
        &st.auth.chat().reports(&name, q.open, limit).await?,
    ))
}

/// The moderation queue over every stream the caller moderates (admins and
/// moderators: all; anyone else: the streams they own), newest first.
#[utoipa::path(
    get,
    path = "/api/v1/chat/reports",
    operation_id = "list_all_chat_reports",
    tag = "streams",
    security(("bearer" = []), ("session" = [])),
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "How many, newest first (default 50)"),
        ("open" = Option<bool>, Query, description = "Only those still in the moderation queue (default false: all)"),
    ),
    responses(
        (status = 200, description = "The reports", body = Vec<ReportRecord>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn all_reports(
    State(st): St,
    caller: Caller,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit()?;
    let user = acting_user(&caller)?;
    let owner = (!matches!(user.role, Role::Admin | Role::Moderator)).then_some(user.id.as_str());
    Ok(json(
        StatusCode::OK,
        &st.auth.chat().all_reports(owner, q.open, limit).await?,
    ))
}

/// Takes a report out of the moderation queue (after acting on it with a
/// moderation command, or to dismiss it). `404` when there is no such open
/// report on the stream.
#[utoipa::path(
    post,
    path = "/api/v1/streams/{name}/chat/reports/{id}/resolve",
    operation_id = "resolve_chat_report",
    tag = "streams",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(
        ("name" = String, Path, description = "The stream"),
        ("id" = String, Path, description = "The report (`rp_…`)"),
    ),
    responses(
        (status = 204, description = "Resolved"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn resolve_report(
    State(st): St,
    caller: Caller,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller)?;
    moderates(&st, &user, &name).await?;
    if !st.auth.chat().resolve_report(&name, &id, &user.id).await? {
        return Err(ApiError::NotFound(format!(
            "no open report {id:?} on {name:?}"
        )));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A moderation command: the chat frame a moderator would send on the data
/// channel (docs/chat.md), with the same fields and limits. Other fields
/// are ignored, as the room ignores them.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ModerationCommand {
    /// Delete a message.
    Delete {
        /// The message id.
        #[serde(deserialize_with = "whole")]
        #[schema(minimum = 0)]
        id: u64,
    },
    /// Refuse a user's messages for a while.
    Timeout {
        /// The user id.
        #[serde(deserialize_with = "user_id")]
        #[schema(pattern = r"^[!-~]{1,128}$")]
        user: String,
        /// 1 to 1209600 (14 days).
        #[serde(deserialize_with = "whole")]
        #[schema(minimum = 1, maximum = 1209600)]
        seconds: u64,
        /// Shown to the user and kept in the audit log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(max_length = 200)]
        reason: Option<String>,
    },
    /// Refuse a user's messages until unbanned.
    Ban {
        /// The user id.
        #[serde(deserialize_with = "user_id")]
        #[schema(pattern = r"^[!-~]{1,128}$")]
        user: String,
        /// Shown to the user and kept in the audit log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(max_length = 200)]
        reason: Option<String>,
    },
    /// Lift a user's ban or timeout.
    Unban {
        /// The user id.
        #[serde(deserialize_with = "user_id")]
        #[schema(pattern = r"^[!-~]{1,128}$")]
        user: String,
    },
    /// Clear the history for everyone.
    Clear,
    /// Slow mode: seconds between a viewer's messages (0: off).
    Slow {
        /// 0 to 3600.
        #[serde(deserialize_with = "whole")]
        #[schema(minimum = 0, maximum = 3600)]
        seconds: u64,
    },
    /// Registered-only mode on or off.
    Mode {
        /// On or off.
        registered_only: bool,
    },
}

/// A user id as this API takes it, the schema's pattern: 1 to 128
/// printable ASCII characters, no spaces (the chat channel's commands take
/// any 1 to 128 bytes).
fn user_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let user = String::deserialize(d)?;
    if (1..=128).contains(&user.len()) && user.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(user)
    } else {
        Err(serde::de::Error::custom(
            "`user` must be 1 to 128 printable ASCII characters, no spaces",
        ))
    }
}

/// A whole number, `2.0` included (JSON Schema's `integer`).
fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    super::streams::whole_seconds(d)?
        .ok_or_else(|| serde::de::Error::custom("a whole, non-negative number is needed"))
}

/// Runs a moderation command in the stream's chat room, as the caller (an
/// admin, a moderator or the stream's owner), exactly as if it had been
/// sent on a chat channel: it applies at once to every member on this
/// node, and goes into the audit log. The room's refusal comes back as the
/// error (`404` for an unknown message, `422` for a field the room refuses).
#[utoipa::path(
    post,
    path = "/api/v1/streams/{name}/chat/moderate",
    operation_id = "moderate_chat",
    tag = "streams",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("name" = String, Path, description = "The stream")),
    request_body = ModerationCommand,
    responses(
        (status = 204, description = "Done"),
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
pub(super) async fn moderate(
    State(st): St,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller)?;
    let role = moderates(&st, &user, &name).await?;
    let command: ModerationCommand = json_body(&st, &headers, body).await?;
    let frame = serde_json::to_string(&command)
        .map_err(|e| ApiError::BadRequest(format!("the command: {e}")))?;
    let info = MemberInfo::registered(&user.id, &user.name, role);
    let answer = st
        .chat
        .moderate(&name, info, frame)
        .await
        .ok_or(ApiError::Unavailable)?;
    for frame in answer {
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap_or_default();
        if v["type"] != "error" {
            continue;
        }
        let message = v["message"].as_str().unwrap_or("refused").to_string();
        return Err(match v["code"].as_str() {
            Some("not_found") => ApiError::NotFound(message),
            Some("forbidden") => ApiError::Forbidden(message),
            _ => ApiError::Unprocessable(message),
        });
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Whether `user` moderates the chat of stream `name`: admins and
/// moderators every stream's (a room exists for any stream a publisher
/// uses, with or without an account's stream), the owner its own. Anyone
/// else gets `404`, as for another's stream elsewhere in this API.
/// The role the user acts with in the room.
async fn moderates(st: &AppState, user: &User, name: &str) -> Result<ChatRole, ApiError> {
    match user.role {
        Role::Admin => return Ok(ChatRole::Admin),
        Role::Moderator => return Ok(ChatRole::Moderator),
        _ => {}
    }
    match st.auth.stream(name).await? {
        Some(s) if s.owner_id == user.id => Ok(ChatRole::Broadcaster),
        _ => Err(ApiError::NotFound("no such stream of yours".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use lumen_auth::{Role, Scopes};
    use lumen_chat::{AuditAction, AuditEntry, ChatMessage, Report};
    use serde_json::Value;

    use crate::test_app::{App, app, text};

    async fn get(app: &App, uri: &str, token: &str) -> (StatusCode, Value) {
        let auth = format!("Bearer {token}");
        let res = app
            .send(Method::GET, uri, &[("authorization", auth.as_str())], "")
            .await;
        let status = res.status();
        let body = text(res).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn token(app: &App, user: &str) -> String {
        app.auth
            .mint(
                user,
                &Scopes::parse("admin").expect("scope"),
                std::time::Duration::from_secs(600),
            )
            .expect("token")
    }

    #[tokio::test]
    async fn moderators_read_a_streams_audit_log_and_reports() {
        let app = app(|st| super::super::routes().with_state(st)).await;
        let m = |id: u64, text: &str| ChatMessage {
            id,
            user: "ann".into(),
            display_name: "Ann".into(),
            role: lumen_chat::Role::Viewer,
            text: text.into(),
            ts: 1_000 + id,
        };
        let audit: Vec<AuditEntry> = (1..=3)
            .map(|i| AuditEntry {
                ts: 2_000 + i,
                actor: "owner".into(),
                actor_role: lumen_chat::Role::Broadcaster,
                action: AuditAction::Delete { message: i },
                target: Some("ann".into()),
                reason: None,
            })
            .collect();
        let report = Report {
            ts: 3_000,
            reporter: "bob".into(),
            message: m(3, "rude"),
            reason: Some("rude".into()),
        };
        app.auth
            .chat()
            .store_batch(
                "cam",
                &[m(1, "a"), m(2, "b"), m(3, "rude")],
                &[],
                &audit,
                &[report],
            )
            .await
            .expect("stored");

        // A token with the admin scope acts as an admin.
        let admin = token(&app, "root");
        let (status, v) = get(&app, "/api/v1/streams/cam/chat/audit", &admin).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let kinds: Vec<&Value> = v
            .as_array()
            .expect("array")
            .iter()
            .map(|a| &a["action"]["message"])
            .collect();
        assert_eq!(kinds, [3, 2, 1], "newest first: {v}");
        assert_eq!(v[0]["action"]["kind"], "delete");
        assert_eq!(v[0]["actor"], "owner");
        let (_, v) = get(&app, "/api/v1/streams/cam/chat/audit?limit=1", &admin).await;
        assert_eq!(v.as_array().map(Vec::len), Some(1));
        let (status, _) = get(&app, "/api/v1/streams/cam/chat/audit?limit=0", &admin).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = get(&app, "/api/v1/streams/cam/chat/audit?limit=x", &admin).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let (status, v) = get(&app, "/api/v1/streams/cam/chat/reports", &admin).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v[0]["reporter"], "bob");
        assert_eq!(v[0]["message"]["text"], "rude");
        assert_eq!(v[0]["deleted"], true);

        // The stream's owner reads its own; a viewer reads nothing.
        let owner = app.auth.user_by_name("owner").await.expect("owner");
        let page = app.auth.open_web_session(owner).await.expect("session");
        let cookie = format!("lumen_session={}", page.token);
        let res = app
            .send(
                Method::GET,
                "/api/v1/streams/cam/chat/reports",
                &[("cookie", cookie.as_str())],
                "",
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let viewer = app
            .auth
            .create_user("vic", "vic's password", Role::Viewer)
            .await
            .expect("user");
        let page = app.auth.open_web_session(viewer).await.expect("session");
        let cookie = format!("lumen_session={}", page.token);
        let res = app
            .send(
                Method::GET,
                "/api/v1/streams/cam/chat/audit",
                &[("cookie", cookie.as_str())],
                "",
            )
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let res = app
            .send(Method::GET, "/api/v1/streams/cam/chat/audit", &[], "")
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

        // The moderation queue: open reports over every stream for an
        // admin, none for a viewer who owns no stream; resolved once.
        let (status, v) = get(&app, "/api/v1/chat/reports?open=true", &admin).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
        assert_eq!(v[0]["stream"], "cam");
        let id = v[0]["id"].as_str().expect("id").to_string();
        let res = app
            .send(
                Method::GET,
                "/api/v1/chat/reports",
                &[("cookie", cookie.as_str())],
                "",
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(text(res).await, "[]");
        let bearer = format!("Bearer {admin}");
        let resolve = format!("/api/v1/streams/cam/chat/reports/{id}/resolve");
        let res = app
            .send(
                Method::POST,
                &resolve,
                &[("cookie", cookie.as_str()), ("x-csrf-token", "x")],
                "",
            )
            .await;
        assert_ne!(
            res.status(),
            StatusCode::NO_CONTENT,
            "not the viewer's to resolve"
        );
        let res = app
            .send(
                Method::POST,
                &resolve,
                &[("authorization", bearer.as_str())],
                "",
            )
            .await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = app
            .send(
                Method::POST,
                &resolve,
                &[("authorization", bearer.as_str())],
                "",
            )
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "resolved already");
        let (_, v) = get(&app, "/api/v1/chat/reports?open=true", &admin).await;
        assert_eq!(v, serde_json::json!([]));
        let (_, v) = get(&app, "/api/v1/streams/cam/chat/reports", &admin).await;
        assert_eq!(v[0]["resolved_by"], "token:root", "{v}");

        // Without chat running here, a command is answered 503, after its
        // body was checked.
        let res = app
            .send(
                Method::POST,
                "/api/v1/streams/cam/chat/moderate",
                &[
                    ("authorization", bearer.as_str()),
                    ("content-type", "application/json"),
                ],
                r#"{"type":"send","text":"hi"}"#,
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::BAD_REQUEST,
            "not a moderation command"
        );
        // A user id outside the schema's pattern (schemathesis found one
        // accepted).
        for body in [
            r#"{"type":"ban","user":"a b"}"#,
            r#"{"type":"unban","user":"X"}"#,
            r#"{"type":"timeout","user":"","seconds":5}"#,
        ] {
            let res = app
                .send(
                    Method::POST,
                    "/api/v1/streams/cam/chat/moderate",
                    &[
                        ("authorization", bearer.as_str()),
                        ("content-type", "application/json"),
                    ],
                    body,
                )
                .await;
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        }
        let res = app
            .send(
                Method::POST,
                "/api/v1/streams/cam/chat/moderate",
                &[
                    ("authorization", bearer.as_str()),
                    ("content-type", "application/json"),
                ],
                r#"{"type":"clear"}"#,
            )
            .await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
