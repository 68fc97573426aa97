//! The WHEP extensions of draft-ietf-wish-whep: server-sent events and video
//! layer selection, every endpoint and status code, against a real server
//! on loopback. The publisher and viewers are str0m offers that never
//! connect: everything here is signaling. (So the stream is never live and
//! its viewers are never counted: a half-open session does not count.)

use std::time::Duration;

use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};
use str0m::media::Direction;

use crate::support::{Server, header, offer, post_sdp, post_sdp_as};

const SSE_REL: &str = "urn:ietf:params:whep:ext:core:server-sent-events";
const LAYER_REL: &str = "urn:ietf:params:whep:ext:core:layer";
const WITHIN: Duration = Duration::from_secs(10);
/// How long a stream that should stay quiet is watched.
const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn whep_answers_link_the_extensions() {
    let s = Server::start().await;
    let c = Client::new();
    let token = s.publish_token();
    let (_p, poffer) = offer(Direction::SendOnly);
    let r = post_sdp_as(&c, &s.url("/whip/cam"), &token, poffer.to_sdp_string()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(
        links(&r)
            .iter()
            .all(|l| !l.contains("urn:ietf:params:whep")),
        "a WHIP answer links no WHEP extension: {:?}",
        links(&r)
    );

    let v = Viewer::join(&s, &c).await;
    assert_eq!(
        v.links.iter().find(|l| l.contains(SSE_REL)).map(String::as_str),
        Some(
            format!(
                "<{}/sse>; rel=\"{SSE_REL}\"; events=\"active,inactive,layers,viewercount,reconnect,layer\"",
                v.location
            )
            .as_str()
        ),
        "{:?}",
        v.links
    );
    assert_eq!(
        v.links
            .iter()
            .find(|l| l.contains(LAYER_REL))
            .map(String::as_str),
        Some(format!("<{}/layer>; rel=\"{LAYER_REL}\"", v.location).as_str()),
        "{:?}",
        v.links
    );
    // Browsers may read Link from a cross-origin answer.
    let r = c
        .request(Method::OPTIONS, s.url("/whep/cam"))
        .send()
        .await
        .expect("options");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    s.stop().await;
}

#[tokio::test]
async fn event_streams_are_created_read_and_deleted() {
    let s = Server::start().await;
    let c = Client::new();
    let token = s.publish_token();
    let (_p, poffer) = offer(Direction::SendOnly);
    let r = post_sdp_as(&c, &s.url("/whip/cam"), &token, poffer.to_sdp_string()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let publisher = s.url(header(&r, "location"));
    let v = Viewer::join(&s, &c).await;
    let sse = s.url(&format!("{}/sse", v.location));

    // The creation URL: OPTIONS, 405s, 415, 400, 404.
    let r = c.request(Method::OPTIONS, &sse).send().await.expect("req");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "allow"), "OPTIONS, POST");
    for m in [Method::GET, Method::PUT, Method::DELETE] {
        let r = c.request(m.clone(), &sse).send().await.expect("req");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{m}");
        assert_eq!(header(&r, "allow"), "OPTIONS, POST");
    }
    let r = c
        .post(&sse)
        .header("content-type", "text/plain")
        .body("[\"active\"]")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for bad in ["[\"active\"", "{\"events\": []}", "[1, 2]"] {
        let r = post_json(&c, &sse, bad).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            !r.text().await.expect("body").is_empty(),
            "400 without a reason"
        );
    }
    let unknown = s.url("/whep/cam/00000000000000000000000000000000/sse");
    let r = post_json(&c, &unknown, "[]").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A WHIP session has no event stream, even for its own credential.
    let r = post_json_as(&c, &format!("{publisher}/sse"), &token, "[]").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // 201 with the event stream's Location; unknown names are ignored.
    let r = post_json(
        &c,
        &sse,
        r#"["active","inactive","layers","viewercount","layer","vad"]"#,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let es = header(&r, "location").to_string();
    assert!(es.starts_with(&format!("{}/sse/", v.location)), "{es}");
    let granted: Value = json_body(r).await;
    assert_eq!(
        granted,
        json!(["active", "inactive", "layers", "viewercount", "layer"])
    );
    let es = s.url(&es);
    let r = c.request(Method::OPTIONS, &es).send().await.expect("req");
    assert_eq!(header(&r, "allow"), "OPTIONS, GET, DELETE");
    let r = c.post(&es).send().await.expect("req");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);

    // The stream: the current state first, one JSON object per data line.
    // Not live (no `active`), and no viewer counted: nobody connected.
    let mut events = Sse::open(&c, &es).await;
    assert_eq!(
        events.next().await,
        Some(("viewercount".into(), json!({"viewercount": 0})))
    );
    let layer = events.until("layer").await;
    assert_eq!(layer["mediaId"], "1", "video is the offer's second m-line");
    assert_eq!(layer["requested"], Value::Null);
    assert!(layer["reason"].is_string(), "{layer}");

    // A second stream with only `viewercount`; a second viewer that does
    // not connect either is not counted.
    let r = post_json(&c, &sse, r#"["viewercount"]"#).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let counts_url = s.url(header(&r, "location"));
    let mut counts = Sse::open(&c, &counts_url).await;
    assert_eq!(
        counts.next().await,
        Some(("viewercount".into(), json!({"viewercount": 0})))
    );
    let second = Viewer::join(&s, &c).await;
    assert_eq!(
        counts.quiet(QUIET).await,
        None,
        "a half-open viewer counted"
    );

    // Pinning a layer shows in the `layer` event.
    let r = post_json(
        &c,
        &s.url(&format!("{}/layer", v.location)),
        r#"{"encodingId":"l"}"#,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let pinned = events.until("layer").await;
    assert_eq!(pinned["requested"], "l", "{pinned}");

    // The publisher leaves: no `inactive`, as the stream was never live.
    let r = c
        .delete(&publisher)
        .bearer_auth(&token)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::OK);
    let after = events.quiet(QUIET).await;
    assert!(
        after
            .as_ref()
            .is_none_or(|(e, _)| e != "inactive" && e != "active"),
        "{after:?}"
    );

    // DELETE of an event stream: 200, then 404 for GET and DELETE, and an
    // open GET of it ends.
    let r = c.delete(&counts_url).send().await.expect("req");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(&counts_url).send().await.expect("req");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c.delete(&counts_url).send().await.expect("req");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    second.leave(&c, &s).await;
    counts.end().await;

    // DELETE of the session ends its event streams, and they are gone.
    v.leave(&c, &s).await;
    events.end().await;
    let r = c.get(&es).send().await.expect("req");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = post_json(&c, &sse, "[]").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn an_empty_body_subscribes_to_everything_and_shutdown_says_reconnect() {
    let s = Server::start().await;
    let c = Client::new();
    let token = s.publish_token();
    let (_p, poffer) = offer(Direction::SendOnly);
    let r = post_sdp_as(&c, &s.url("/whip/cam"), &token, poffer.to_sdp_string()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v = Viewer::join(&s, &c).await;
    // No body, no content type: every event.
    let r = c
        .post(s.url(&format!("{}/sse", v.location)))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::CREATED);
    let es = s.url(header(&r, "location"));
    let granted: Value = json_body(r).await;
    assert_eq!(
        granted,
        json!([
            "active",
            "inactive",
            "layers",
            "viewercount",
            "reconnect",
            "layer"
        ])
    );
    // An event stream id that was never given out: 404.
    let r = c.get(format!("{es}x")).send().await.expect("req");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let mut events = Sse::open(&c, &es).await;
    // The current state: not live (nobody connects here), no viewers.
    assert_eq!(events.until("viewercount").await, json!({"viewercount": 0}));

    let stopping = tokio::spawn(s.stop());
    assert_eq!(events.until("reconnect").await, json!({}));
    events.end().await;
    tokio::time::timeout(WITHIN, stopping)
        .await
        .expect("the server stops while an event stream was open")
        .expect("stop task");
}

#[tokio::test]
async fn layer_selection_walks_every_status_code() {
    let s = Server::start().await;
    let c = Client::new();
    let token = s.publish_token();
    let (_p, poffer) = offer(Direction::SendOnly);
    let r = post_sdp_as(&c, &s.url("/whip/cam"), &token, poffer.to_sdp_string()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let publisher = header(&r, "location").to_string();
    let v = Viewer::join(&s, &c).await;
    let layer = s.url(&format!("{}/layer", v.location));

    let r = c
        .request(Method::OPTIONS, &layer)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "allow"), "OPTIONS, GET, POST");
    assert!(header(&r, "access-control-allow-headers").contains("Content-Type"));
    for m in [Method::PUT, Method::DELETE, Method::PATCH] {
        let r = c.request(m.clone(), &layer).send().await.expect("req");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{m}");
        assert_eq!(header(&r, "allow"), "OPTIONS, GET, POST");
    }

    // GET: the viewer's state, automatic at first.
    let r = c.get(&layer).send().await.expect("req");
    assert_eq!(r.status(), StatusCode::OK);
    let state: Value = json_body(r).await;
    assert_eq!(state["mediaId"], "1");
    assert_eq!(state["requested"], Value::Null);

    // 415 without JSON, 400 for what is not a layer selection.
    let r = c.post(&layer).body("{}").send().await.expect("req");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for bad in [
        "",
        "{",
        "[]",
        "\"h\"",
        r#"{"encodingId": 1}"#,
        r#"{"encodingId": "h h"}"#,
        r#"{"encodingId": ""}"#,
        r#"{"mediaId": {}}"#,
    ] {
        let r = post_json(&c, &layer, bad).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            !r.text().await.expect("body").is_empty(),
            "400 without a reason: {bad}"
        );
    }
    // 422 for what is well-formed but not applicable.
    for unfit in [
        r#"{"mediaId": "0", "encodingId": "h"}"#,
        r#"{"mediaId": "7"}"#,
        r#"{"encodingId": "h", "spatialLayerId": 1}"#,
        r#"{"temporalLayerId": 2}"#,
    ] {
        let r = post_json(&c, &layer, unfit).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{unfit}");
    }
    // 404 for sessions that do not exist or are not WHEP ones.
    let r = post_json(
        &c,
        &s.url("/whep/cam/00000000000000000000000000000000/layer"),
        "{}",
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = post_json_as(&c, &s.url(&format!("{publisher}/layer")), &token, "{}").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = post_json(
        &c,
        &s.url(&format!(
            "{}/layer",
            v.location.replacen("/whep/cam/", "/whep/other/", 1)
        )),
        "{}",
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Pin (by index, by number, by mid-less default), then back to automatic.
    for (body, want) in [
        (r#"{"mediaId": "1", "encodingId": "l"}"#, json!("l")),
        (r#"{"encodingId": "m"}"#, json!("m")),
        (
            r#"{"mediaId": 1, "encodingId": "h", "maxSpatialLayerId": 0}"#,
            json!("h"),
        ),
        ("{}", Value::Null),
        (r#"{"encodingId": "l"}"#, json!("l")),
        (r#"{"encodingId": null}"#, Value::Null),
    ] {
        let r = post_json(&c, &layer, body).await;
        assert_eq!(r.status(), StatusCode::OK, "{body}");
        let state: Value = json_body(r).await;
        assert_eq!(state["requested"], want, "{body}: {state}");
        assert_eq!(state["mediaId"], "1");
        let r = c.get(&layer).send().await.expect("req");
        let now: Value = json_body(r).await;
        assert_eq!(now["requested"], want, "GET after {body}");
    }

    // After DELETE the session's layer URL is gone.
    v.leave(&c, &s).await;
    let r = post_json(&c, &layer, "{}").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c.get(&layer).send().await.expect("req");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}

/// A WHEP session on stream `cam`.
struct Viewer {
    location: String,
    links: Vec<String>,
    _rtc: str0m::Rtc,
}

impl Viewer {
    async fn join(s: &Server, c: &Client) -> Viewer {
        let (rtc, voffer) = offer(Direction::RecvOnly);
        let r = post_sdp(c, &s.url("/whep/cam"), voffer.to_sdp_string()).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        Viewer {
            location: header(&r, "location").to_string(),
            links: links(&r),
            _rtc: rtc,
        }
    }

    async fn leave(&self, c: &Client, s: &Server) {
        let r = c.delete(s.url(&self.location)).send().await.expect("req");
        assert_eq!(r.status(), StatusCode::OK);
    }
}

fn links(r: &Response) -> Vec<String> {
    r.headers()
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

async fn json_body(r: Response) -> Value {
    let text = r.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

async fn post_json(c: &Client, url: &str, body: &str) -> Response {
    c.post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request")
}

/// [`post_json`] with `token` as the Bearer credential.
async fn post_json_as(c: &Client, url: &str, token: &str, body: &str) -> Response {
    c.post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request")
}

/// A reader of one `text/event-stream` answer.
struct Sse {
    res: Response,
    buf: String,
}

impl Sse {
    async fn open(c: &Client, url: &str) -> Sse {
        let res = c.get(url).send().await.expect("GET the event stream");
        assert_eq!(res.status(), StatusCode::OK, "GET {url}");
        assert_eq!(header(&res, "content-type"), "text/event-stream");
        assert_eq!(header(&res, "cache-control"), "no-cache");
        Sse {
            res,
            buf: String::new(),
        }
    }

    /// The next event and its data, `None` at the end of the stream.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = None;
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = Some(e.trim().to_string());
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push(d.trim().to_string());
                    }
                }
                let Some(event) = event else { continue };
                assert_eq!(data.len(), 1, "one data line per event: {block:?}");
                let value = serde_json::from_str(&data[0])
                    .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {block:?}"));
                return Some((event, value));
            }
            let chunk = tokio::time::timeout(WITHIN, self.res.chunk())
                .await
                .expect("no event stream data within the deadline")
                .expect("read the event stream")?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event if one comes within `wait`.
    async fn quiet(&mut self, wait: Duration) -> Option<(String, Value)> {
        tokio::time::timeout(wait, self.next()).await.ok().flatten()
    }

    /// Skips to the next `event` and returns its data.
    async fn until(&mut self, event: &str) -> Value {
        loop {
            match self.next().await {
                Some((e, data)) if e == event => return data,
                Some(_) => {}
                None => panic!("the event stream ended before an {event:?} event"),
            }
        }
    }

    /// Waits for the end of the stream.
    async fn end(mut self) {
        while let Some((e, data)) = self.next().await {
            // Events still in flight are fine; the stream must end.
            let _ = (e, data);
        }
    }
}
