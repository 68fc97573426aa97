//! `/api/v1/openapi.json` against the router it describes: the document
//! parses, every documented operation is routed, every route is documented
//! (by the router, by its methods, and by docs/api.md's table), and the
//! document holds together as OpenAPI 3.1 (references, parameters,
//! security schemes, operation ids).

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use crate::test_app::{App, app, text};

/// The contract for people, whose endpoint table must name the same
/// operations as the document.
const API_MD: &str = include_str!("../../../../docs/api.md");

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn served_document(app: &App) -> Value {
    let res = app.send(Method::GET, "/api/v1/openapi.json", &[], "").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(content_type(&res), "application/json");
    let body = text(res).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn content_type(res: &Response) -> &str {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// `(method, path template)` of every operation in `doc`.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_string(), path.clone()))
        })
        .collect()
}

/// A concrete URL for a path template: every `{param}` filled.
fn concrete(template: &str) -> String {
    template.replace('{', "x-").replace('}', "")
}

/// Whether the router itself refused the request: no route for the path
/// (404 without a problem body: a handler's 404 is a problem) or none for
/// the method (405).
fn refused_by_router(res: &Response) -> bool {
    res.status() == StatusCode::METHOD_NOT_ALLOWED
        || (res.status() == StatusCode::NOT_FOUND
            && content_type(res) != "application/problem+json")
}

#[tokio::test]
async fn the_document_is_served_parses_and_is_what_the_routes_say() {
    let app = app(|st| super::routes().with_state(st)).await;
    let served = served_document(&app).await;
    assert_eq!(served["openapi"], "3.1.0");
    assert!(served["info"]["title"].is_string() && served["info"]["version"].is_string());
    // It reads back as an OpenAPI document, and is the one the routes make.
    let parsed: utoipa::openapi::OpenApi =
        serde_json::from_value(served.clone()).expect("an OpenAPI document");
    assert_eq!(
        parsed.paths.paths.len(),
        served["paths"].as_object().map_or(0, |p| p.len())
    );
    let made = serde_json::to_value(super::openapi()).expect("serializes");
    assert_eq!(served, made);
    app.node.shutdown().await;
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = app(|st| super::routes().with_state(st)).await;
    let doc = serde_json::to_value(super::openapi()).expect("serializes");
    let ops = operations(&doc);
    assert!(ops.len() >= 25, "{ops:?}");
    for (method, path) in &ops {
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let res = app.send(m, &concrete(path), &[], "").await;
        assert!(
            !refused_by_router(&res),
            "{method} {path}: the router answers {}",
            res.status()
        );
    }
    app.node.shutdown().await;
}

#[tokio::test]
async fn every_route_is_documented() {
    let app = app(|st| super::routes().with_state(st)).await;
    let doc = serde_json::to_value(super::openapi()).expect("serializes");
    let ops = operations(&doc);
    // The served paths are the documented ones by construction (`routes!`
    // takes both from one annotation); what remains to check is that no
    // undocumented method is served on them.
    let paths: BTreeSet<&String> = ops.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in METHODS {
            if ops.contains(&(method.to_string(), path.clone())) {
                continue;
            }
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let res = app.send(m, &concrete(path), &[], "").await;
            assert_eq!(
                res.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is served but not documented"
            );
            assert!(res.headers().contains_key(header::ALLOW), "{method} {path}");
        }
    }
    // And docs/api.md's table names exactly the documented operations.
    let table: BTreeSet<(String, String)> = API_MD
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(op, _)| op))
        .filter_map(|op| op.split_once(' '))
        .filter(|(m, _)| METHODS.contains(&m.to_lowercase().as_str()))
        .map(|(m, p)| (m.to_lowercase(), p.to_string()))
        .collect();
    assert!(!table.is_empty(), "no endpoint table in docs/api.md");
    let undocumented: Vec<_> = table.difference(&ops).collect();
    assert!(
        undocumented.is_empty(),
        "in docs/api.md, not in the document: {undocumented:?}"
    );
    let untold: Vec<_> = ops.difference(&table).collect();
    assert!(
        untold.is_empty(),
        "in the document, not in docs/api.md: {untold:?}"
    );
    app.node.shutdown().await;
}

#[test]
fn the_document_holds_together_as_openapi_3_1() {
    let doc = serde_json::to_value(super::openapi()).expect("serializes");
    assert_eq!(doc["openapi"], "3.1.0");
    let components = &doc["components"];
    let schemes: BTreeSet<&str> = components["securitySchemes"]
        .as_object()
        .expect("security schemes")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(schemes, BTreeSet::from(["bearer", "csrf", "session"]));

    // Every reference names a component that exists.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in &refs {
        let target = r
            .strip_prefix("#/")
            .map(|p| p.split('/').fold(&doc, |v, k| &v[k]))
            .unwrap_or(&Value::Null);
        assert!(target.is_object(), "dangling $ref {r}");
    }

    let mut ids = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        assert!(path.starts_with('/'), "{path}");
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let at = format!("{method} {path}");
            // Unique operation ids.
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: no operationId"));
            if let Some(other) = ids.insert(id.to_string(), at.clone()) {
                panic!("operationId {id} of both {other} and {at}");
            }
            // Path parameters: exactly the template's, required.
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{at}: path parameter not required");
                    p["name"].as_str().expect("name")
                })
                .collect();
            assert_eq!(declared, templated, "{at}: path parameters");
            // Responses: at least one success; every error is a problem.
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{at}: no success response"
            );
            for (status, r) in responses {
                let code: u16 = status
                    .parse()
                    .unwrap_or_else(|_| panic!("{at}: status {status}"));
                if code >= 400 {
                    let r = resolve(&doc, r);
                    assert!(
                        r["content"]["application/problem+json"]["schema"].is_object(),
                        "{at} {status}: not a problem"
                    );
                }
            }
            // Bodies only as JSON.
            if let Some(body) = op.get("requestBody") {
                let content = body["content"].as_object().expect("content");
                assert_eq!(
                    content.keys().collect::<Vec<_>>(),
                    ["application/json"],
                    "{at}"
                );
            }
            // Security names defined schemes.
            for req in op["security"].as_array().into_iter().flatten() {
                for scheme in req.as_object().expect("requirement").keys() {
                    assert!(schemes.contains(scheme.as_str()), "{at}: scheme {scheme}");
                }
            }
        }
    }
}

fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// A response, or the component its `$ref` names.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str().and_then(|r| r.strip_prefix("#/")) {
        Some(p) => p.split('/').fold(doc, |v, k| &v[k]),
        None => v,
    }
}

/// What schemathesis found (crates/signaling/tests/it/schemathesis.rs),
/// kept fixed without it.
#[tokio::test]
async fn answers_schemathesis_caught_off_the_document_stay_fixed() {
    let app = app(|st| super::routes().with_state(st)).await;
    let token = app
        .auth
        .mint(
            "ops",
            &lumen_auth::Scopes::parse("admin").expect("scope"),
            std::time::Duration::from_secs(60),
        )
        .expect("token");
    let bearer = format!("Bearer {token}");
    let send = async |method: Method, uri: &str, body: Option<&str>| {
        let mut h = vec![("authorization", bearer.as_str())];
        if body.is_some() {
            h.push(("content-type", "application/json"));
        }
        app.send(method, uri, &h, body.unwrap_or_default()).await
    };
    // A struct read from an array: `[null, null]` was a valid PATCH.
    let res = send(Method::PATCH, "/api/v1/streams/cam", Some("[null, null]")).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(content_type(&res), "application/problem+json");
    // A query that does not parse is a problem, not axum's plain text.
    let res = send(Method::GET, "/api/v1/streams?all=maybe", None).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(content_type(&res), "application/problem+json");
    // JSON Schema's integers include `1.0`; fractions are still refused.
    let res = send(
        Method::POST,
        "/api/v1/tokens",
        Some(r#"{"scope":"","ttl_secs":1.0}"#),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = send(Method::POST, "/api/v1/invites", Some(r#"{"ttl_secs":1.5}"#)).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // An optional body may be `null`, as the document says.
    let res = send(Method::POST, "/api/v1/streams/cam/keys", Some("null")).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    app.node.shutdown().await;
}
