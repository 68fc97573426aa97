//! `/api/v1/streams/{name}/chat/…`: a stream's chat moderation log and
//! reports, for its moderators (admins, moderators, and the stream's
//! owner). The rooms themselves are `crate::chat`; the records are
//! `lumen_auth::chat`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use lumen_auth::chat::{AuditRecord, MAX_LOG, ReportRecord};
use lumen_auth::{Role, User};
use serde::Deserialize;

use super::openapi::{BadRequest, Forbidden, NotFound, Unauthorized, Unavailable};
use super::{ApiPath, ApiQuery, St, acting_user, json};
use crate::authn::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Entries an answer has unless `limit` says otherwise.
const DEFAULT_LOG: usize = 50;

#[derive(Deserialize)]
pub(super) struct LogQuery {
    #[serde(default)]
    limit: Option<u32>,
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
        &st.auth.chat().reports(&name, limit).await?,
    ))
}

/// Whether `user` moderates the chat of stream `name`: admins and
/// moderators every stream's (a room exists for any stream a publisher
/// uses, with or without an account's stream), the owner its own. Anyone
/// else gets `404`, as for another's stream elsewhere in this API.
async fn moderates(st: &AppState, user: &User, name: &str) -> Result<(), ApiError> {
    if matches!(user.role, Role::Admin | Role::Moderator) {
        return Ok(());
    }
    match st.auth.stream(name).await? {
        Some(s) if s.owner_id == user.id => Ok(()),
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
    }
}
