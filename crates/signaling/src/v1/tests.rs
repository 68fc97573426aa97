//! The account API through `Router::oneshot`, as the pages and scripts use
//! it: first-run setup, log in, streams, keys, share links, CSRF, admin.

use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::test_app::{App, app, header, text};

async fn body(r: Response) -> Value {
    let t = text(r).await;
    serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}"))
}

/// A logged-in page: its cookie and CSRF token.
struct Page {
    cookie: String,
    csrf: String,
}

impl Page {
    fn from(res: &Response, v: &Value) -> Page {
        let set = header(res, header::SET_COOKIE);
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        Page {
            cookie: set.split(';').next().unwrap_or_default().to_string(),
            csrf: v["csrf"].as_str().expect("csrf").to_string(),
        }
    }

    async fn call(&self, app: &App, method: Method, uri: &str, v: Option<Value>) -> Response {
        let body = v.map(|v| v.to_string()).unwrap_or_default();
        let mut h = vec![
            ("cookie", self.cookie.as_str()),
            ("x-csrf-token", self.csrf.as_str()),
        ];
        if !body.is_empty() {
            h.push(("content-type", "application/json"));
        }
        app.send(method, uri, &h, &body).await
    }
}

async fn post_json(app: &App, uri: &str, v: Value) -> Response {
    app.send(
        Method::POST,
        uri,
        &[("content-type", "application/json")],
        &v.to_string(),
    )
    .await
}

#[tokio::test]
async fn first_run_setup_then_streams_keys_and_share_links() {
    let app = app(|st| super::routes().with_state(st)).await;
    // The test app made a broadcaster, but no admin yet.
    let res = app.send(Method::GET, "/api/v1/setup", &[], "").await;
    assert_eq!(body(res).await["needed"], true);
    let code = app.auth.setup_code().await.expect("store").expect("code");
    let res = post_json(
        &app,
        "/api/v1/setup",
        json!({"code": "0000", "name": "root", "password": "root's password"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        header(&res, header::CONTENT_TYPE),
        "application/problem+json"
    );
    let res = post_json(
        &app,
        "/api/v1/setup",
        json!({"code": code, "name": "root", "password": "root's password"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res_headers = res.headers().clone();
    let v = body(res).await;
    assert_eq!(v["user"]["role"], "admin");
    let mut fake = Response::new(axum::body::Body::empty());
    *fake.headers_mut() = res_headers;
    let admin = Page::from(&fake, &v);
    let res = app.send(Method::GET, "/api/v1/setup", &[], "").await;
    assert_eq!(body(res).await["needed"], false);

    // Me.
    let res = admin.call(&app, Method::GET, "/api/v1/me", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await["user"]["name"], "root");
    let res = app.send(Method::GET, "/api/v1/me", &[], "").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // The admin makes a broadcaster, who logs in.
    let res = admin
        .call(
            &app,
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "bea", "password": "bea's password", "role": "broadcaster"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = post_json(
        &app,
        "/api/v1/login",
        json!({"name": "bea", "password": "bea's password"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers().clone();
    let v = body(res).await;
    let mut fake = Response::new(axum::body::Body::empty());
    *fake.headers_mut() = h;
    let bea = Page::from(&fake, &v);

    // Her stream, with its URLs.
    let res = bea
        .call(
            &app,
            Method::POST,
            "/api/v1/streams",
            Some(json!({"name": "bea-live", "visibility": "private", "title": "Bea"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let s = body(res).await;
    assert_eq!(s["owner_name"], "bea");
    assert!(
        s["whip_url"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/whip/bea-live")
    );
    // Taken names, other people's streams.
    let res = bea
        .call(
            &app,
            Method::POST,
            "/api/v1/streams",
            Some(json!({"name": "cam"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let res = bea
        .call(&app, Method::GET, "/api/v1/streams/cam", None)
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = bea.call(&app, Method::GET, "/api/v1/streams", None).await;
    let mine = body(res).await;
    assert_eq!(mine.as_array().map(Vec::len), Some(1));
    let res = bea
        .call(&app, Method::GET, "/api/v1/streams?all=true", None)
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // A key: shown once, listed without its secret.
    let res = bea
        .call(
            &app,
            Method::POST,
            "/api/v1/streams/bea-live/keys",
            Some(json!({"label": "OBS"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let k = body(res).await;
    let secret = k["key"].as_str().expect("secret").to_string();
    let id = k["id"].as_str().expect("id").to_string();
    let res = bea
        .call(&app, Method::GET, "/api/v1/streams/bea-live/keys", None)
        .await;
    let listed = text(res).await;
    assert!(
        listed.contains(&id) && !listed.contains(&secret),
        "{listed}"
    );
    // Rotation gives a new secret; revocation of the new one.
    let res = bea
        .call(
            &app,
            Method::POST,
            &format!("/api/v1/streams/bea-live/keys/{id}/rotate"),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let rotated = body(res).await;
    assert_ne!(rotated["key"], k["key"]);
    let new_id = rotated["id"].as_str().expect("id").to_string();
    // Not through another stream's URL.
    let res = admin
        .call(
            &app,
            Method::DELETE,
            &format!("/api/v1/streams/cam/keys/{new_id}"),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = bea
        .call(
            &app,
            Method::DELETE,
            &format!("/api/v1/streams/bea-live/keys/{new_id}"),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(body(res).await["revoked_at"].is_i64());

    // A share link for the private stream.
    let res = bea
        .call(&app, Method::POST, "/api/v1/streams/bea-live/tokens", None)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let share = body(res).await;
    let url = share["watch_url"].as_str().expect("url");
    assert!(url.contains("/watch/bea-live?token="), "{url}");
    let token = share["token"].as_str().expect("token");
    let p = app.auth.principal(token).await.expect("valid");
    let g = app
        .auth
        .authorize(&p, lumen_auth::Action::Subscribe, "bea-live")
        .await;
    assert!(g.is_ok(), "{g:?}");

    // CSRF: the cookie without its token changes nothing.
    let res = app
        .send(
            Method::PATCH,
            "/api/v1/streams/bea-live",
            &[
                ("cookie", bea.cookie.as_str()),
                ("content-type", "application/json"),
            ],
            r#"{"visibility":"public"}"#,
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = bea
        .call(
            &app,
            Method::PATCH,
            "/api/v1/streams/bea-live",
            Some(json!({"visibility": "unlisted"})),
        )
        .await;
    assert_eq!(body(res).await["visibility"], "unlisted");
    // Unknown fields and wrong types are refused precisely.
    let res = bea
        .call(
            &app,
            Method::PATCH,
            "/api/v1/streams/bea-live",
            Some(json!({"visibility": "secret"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    // A broadcaster is not an admin.
    let res = bea.call(&app, Method::GET, "/api/v1/users", None).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Log out ends the cookie.
    let res = bea.call(&app, Method::POST, "/api/v1/logout", None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = bea.call(&app, Method::GET, "/api/v1/me", None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    app.node.shutdown().await;
}

#[tokio::test]
async fn admin_tokens_drive_the_api_and_other_credentials_do_not() {
    let app = app(|st| super::routes().with_state(st)).await;
    let t = |scope: &str| {
        app.auth
            .mint(
                "ops",
                &lumen_auth::Scopes::parse(scope).expect("scope"),
                std::time::Duration::from_secs(60),
            )
            .expect("token")
    };
    let admin = format!("Bearer {}", t("admin"));
    let res = app
        .send(
            Method::GET,
            "/api/v1/users",
            &[("authorization", &admin)],
            "",
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await[0]["name"], "owner");
    for bad in [
        format!("Bearer {}", t("publish:*")),
        format!("Bearer {}", app_key(&app)),
    ] {
        let res = app
            .send(Method::GET, "/api/v1/users", &[("authorization", &bad)], "")
            .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{bad}");
    }
    // Mint and revoke a token through the API.
    let res = app
        .send(
            Method::POST,
            "/api/v1/tokens",
            &[
                ("authorization", admin.as_str()),
                ("content-type", "application/json"),
            ],
            r#"{"scope":"subscribe:cam","ttl_secs":60}"#,
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let v = body(res).await;
    let jti = v["jti"].as_str().expect("jti");
    let token = v["token"].as_str().expect("token");
    app.auth.principal(token).await.expect("valid");
    let res = app
        .send(
            Method::DELETE,
            &format!("/api/v1/tokens/{jti}"),
            &[("authorization", &admin)],
            "",
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(app.auth.principal(token).await.is_err());
    // The JWKS is public.
    let res = app
        .send(Method::GET, "/.well-known/jwks.json", &[], "")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await["keys"][0]["crv"], "Ed25519");
    app.node.shutdown().await;
}

fn app_key(app: &App) -> String {
    app.key.clone()
}

#[tokio::test]
async fn failed_log_ins_are_throttled_and_say_nothing_of_who_exists() {
    let app = app(|st| super::routes().with_state(st)).await;
    let wrong = post_json(
        &app,
        "/api/v1/login",
        json!({"name": "owner", "password": "wrong password"}),
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let unknown = post_json(
        &app,
        "/api/v1/login",
        json!({"name": "nobody-here", "password": "wrong password"}),
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body(wrong).await["detail"], body(unknown).await["detail"]);
    let mut last = StatusCode::OK;
    for _ in 0..10 {
        let res = post_json(
            &app,
            "/api/v1/login",
            json!({"name": "owner", "password": "guess"}),
        )
        .await;
        last = res.status();
        if last == StatusCode::TOO_MANY_REQUESTS {
            let after: u64 = header(&res, header::RETRY_AFTER).parse().expect("seconds");
            assert!(after >= 1);
            break;
        }
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    // Sign up is off by default.
    let res = post_json(
        &app,
        "/api/v1/signup",
        json!({"name": "newbie", "password": "newbie password"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    app.node.shutdown().await;
}
