//! The HTTP side of WHIP and WHEP (RFC 9725, non-trickle) and of the WHEP
//! layer extension, apart from any WebRTC stack: the webrtc-rs clients
//! (the `client` module) and the load generator's str0m viewers
//! (the `load` module) make their offers their own way and exchange them here.
//!
//! A session starts with a POST of the complete offer (`application/sdp`),
//! answered `201 Created` with the answer and the session's `Location`, and
//! ends with a DELETE on that `Location`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Link relation of the WHEP video layer selection extension
/// (draft-ietf-wish-whep): POST `{"encodingId": rid}` to pin a layer.
pub const LAYER_LINK_REL: &str = "urn:ietf:params:whep:ext:core:layer";

/// Longest a single POST or DELETE may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a successful WHIP/WHEP POST gave back.
pub(crate) struct Answer {
    /// The answer SDP.
    pub sdp: String,
    /// Absolute URL of the session (the resolved `Location`).
    pub session_url: String,
    /// When the POST went out.
    pub posted_at: Instant,
    /// The URL the POST landed on (after redirects): the base for relative
    /// links.
    pub base_url: reqwest::Url,
    /// The raw `Link` header values of the 201.
    pub links: Vec<String>,
}

/// An HTTP client with the timeout every WHIP/WHEP request gets.
pub(crate) fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .context("building the HTTP client")
}

/// POSTs a complete offer to a WHIP or WHEP endpoint and returns the answer
/// if the server created a session. A 409 from a WHEP endpoint means nobody
/// is publishing.
pub(crate) async fn post_offer(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    offer_sdp: String,
) -> anyhow::Result<Answer> {
    let mut req = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/sdp")
        .body(offer_sdp);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let posted_at = Instant::now();
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    // After a 307 to another node, Location is relative to where we landed.
    let base_url = resp.url().clone();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let links: Vec<String> = resp
        .headers()
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let body = resp.text().await;
    if status == reqwest::StatusCode::CONFLICT && url.contains("/whep/") {
        bail!(
            "no live publisher on this stream (409 from {url}): {}",
            clip(body.as_deref().unwrap_or_default())
        );
    }
    if status != reqwest::StatusCode::CREATED {
        bail!(
            "POST {url} answered {status}: {}",
            clip(body.as_deref().unwrap_or_default())
        );
    }
    let sdp = body.context("reading the answer")?;
    let location = location.context("201 without a Location header")?;
    let session_url = base_url
        .join(&location)
        .with_context(|| format!("resolving Location {location:?}"))?
        .to_string();
    Ok(Answer {
        sdp,
        session_url,
        posted_at,
        base_url,
        links,
    })
}

/// DELETEs a WHIP/WHEP session and returns the status code.
pub(crate) async fn delete_session(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<u16> {
    let mut req = http.delete(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.with_context(|| format!("DELETE {url}"))?;
    Ok(resp.status().as_u16())
}

/// POSTs `{"encodingId": rid}` to a WHEP layer endpoint.
pub(crate) async fn post_layer(
    http: &reqwest::Client,
    url: &reqwest::Url,
    token: Option<&str>,
    rid: Option<&str>,
) -> anyhow::Result<()> {
    // No rid: back to automatic choice (`{}`).
    let body = match rid {
        Some(rid) => serde_json::json!({ "encodingId": rid }).to_string(),
        None => "{}".to_owned(),
    };
    let mut req = http
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        bail!(
            "selecting layer {}: POST {url} answered {status}: {}",
            rid.map_or_else(|| "automatic".to_owned(), |r| format!("{r:?}")),
            clip(&body)
        );
    }
    Ok(())
}

/// Finds the target of the link with relation `rel` among `Link` header
/// values (RFC 8288: `<uri>; rel="..."`, several per header separated by
/// commas) and resolves it against `base`.
pub(crate) fn find_link(links: &[String], rel: &str, base: &reqwest::Url) -> Option<reqwest::Url> {
    links
        .iter()
        .flat_map(|header| parse_link_header(header))
        .find(|(_, rels)| rels.split_ascii_whitespace().any(|r| r == rel))
        .and_then(|(target, _)| base.join(&target).ok())
}

/// Splits one `Link` header value into (target, rel) pairs.
fn parse_link_header(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else { break };
        let target = after[..close].trim().to_owned();
        let params_and_more = &after[close + 1..];
        // The parameters run to the next comma outside quotes.
        let mut in_quotes = false;
        let mut end = params_and_more.len();
        for (i, c) in params_and_more.char_indices() {
            match c {
                '"' => in_quotes = !in_quotes,
                ',' if !in_quotes => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let params = &params_and_more[..end];
        let rel = params
            .split(';')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("rel"))
            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
            .unwrap_or_default();
        out.push((target, rel));
        rest = &params_and_more[end..];
    }
    out
}

/// The start of an error body, for a message.
fn clip(body: &str) -> &str {
    let end = body.char_indices().nth(300).map_or(body.len(), |(i, _)| i);
    body[..end].trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::task::JoinHandle;

    #[test]
    fn finds_the_layer_link_among_several() {
        let base = reqwest::Url::parse("http://127.0.0.1:8080/whep/s").expect("url");
        let links = vec![
            r#"<stun:stun.example.net>; rel="ice-server""#.to_owned(),
            concat!(
                r#"</whep/s/sessions/ab/sse>; rel="urn:ietf:params:whep:ext:core:server-sent-events"; events="active,layers", "#,
                r#"<sessions/ab/layer>; rel="urn:ietf:params:whep:ext:core:layer""#
            )
            .to_owned(),
        ];
        let url = find_link(&links, LAYER_LINK_REL, &base);
        assert_eq!(
            url.map(|u| u.to_string()).as_deref(),
            Some("http://127.0.0.1:8080/whep/sessions/ab/layer")
        );
        let sse = find_link(
            &links,
            "urn:ietf:params:whep:ext:core:server-sent-events",
            &base,
        );
        assert_eq!(
            sse.map(|u| u.to_string()).as_deref(),
            Some("http://127.0.0.1:8080/whep/s/sessions/ab/sse")
        );
        assert!(find_link(&links, "nope", &base).is_none());
        assert!(find_link(&[], "ice-server", &base).is_none());
    }

    #[test]
    fn link_parsing_survives_garbage() {
        for junk in [
            "",
            "<",
            ">",
            "<a",
            "<a>;rel",
            "<a>; rel=\"x, <b>; rel=y",
            ",,,<>",
        ] {
            let _ = parse_link_header(junk);
        }
        assert_eq!(
            parse_link_header("<a>;REL=x"),
            vec![("a".to_owned(), "x".to_owned())]
        );
    }

    /// Answers one HTTP request on `path` with `head` (status line and
    /// headers, without the blank line) and `body`; returns the URL and
    /// what it read.
    async fn one_shot_server(
        path: &str,
        head: &'static str,
        body: &'static str,
    ) -> (reqwest::Url, JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers, then the body by Content-Length.
            loop {
                let n = sock.read(&mut chunk).await.expect("read");
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())
                                .flatten()
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len || n == 0 {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let resp = format!("{head}\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            sock.write_all(resp.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&buf).to_string()
        });
        let url = reqwest::Url::parse(&format!("http://{addr}{path}")).expect("url");
        (url, task)
    }

    #[tokio::test]
    async fn an_offer_is_posted_as_sdp_and_the_location_resolved() {
        let (url, server) = one_shot_server(
            "/whip/s",
            "HTTP/1.1 201 Created\r\nlocation: s/sessions/7\r\nlink: <layer>; rel=\"x\"",
            "v=0 answer",
        )
        .await;
        let http = http_client().expect("client");
        let answer = post_offer(&http, url.as_str(), Some("key"), "v=0 offer".to_owned())
            .await
            .expect("a session");
        let request = server.await.expect("server");
        let lower = request.to_ascii_lowercase();
        assert!(request.starts_with("POST /whip/s "), "{request}");
        assert!(lower.contains("content-type: application/sdp"), "{request}");
        assert!(lower.contains("authorization: bearer key"), "{request}");
        assert!(request.ends_with("v=0 offer"), "{request}");
        assert_eq!(answer.sdp, "v=0 answer");
        assert_eq!(
            answer.session_url,
            url.join("s/sessions/7").expect("join").as_str()
        );
        assert_eq!(answer.links, ["<layer>; rel=\"x\""]);
    }

    #[tokio::test]
    async fn a_whep_409_says_nobody_publishes() {
        let (url, server) = one_shot_server("/whep/s", "HTTP/1.1 409 Conflict", "none").await;
        let http = http_client().expect("client");
        let err = post_offer(&http, url.as_str(), None, "v=0".to_owned())
            .await
            .err()
            .expect("409 is an error");
        let _ = server.await;
        let msg = format!("{err:#}");
        assert!(msg.contains("no live publisher"), "{msg}");
    }

    #[tokio::test]
    async fn a_201_without_location_is_an_error() {
        let (url, server) = one_shot_server("/whip/s", "HTTP/1.1 201 Created", "v=0").await;
        let http = http_client().expect("client");
        let err = post_offer(&http, url.as_str(), None, "v=0".to_owned())
            .await
            .err()
            .expect("no Location is an error");
        let _ = server.await;
        assert!(format!("{err:#}").contains("Location"), "{err:#}");
    }

    #[tokio::test]
    async fn layer_request_is_json_with_the_encoding_id() {
        let (url, server) = one_shot_server("/whep/s/layer", "HTTP/1.1 204 No Content", "").await;
        let http = http_client().expect("client");
        post_layer(&http, &url, Some("secret"), Some("l"))
            .await
            .expect("layer selected");
        let request = server.await.expect("server");
        let lower = request.to_ascii_lowercase();
        assert!(request.starts_with("POST /whep/s/layer "), "{request}");
        assert!(
            lower.contains("content-type: application/json"),
            "{request}"
        );
        assert!(lower.contains("authorization: bearer secret"), "{request}");
        assert!(request.ends_with(r#"{"encodingId":"l"}"#), "{request}");
    }

    #[tokio::test]
    async fn refused_layer_request_is_an_error_with_the_status() {
        let (url, server) =
            one_shot_server("/whep/s/layer", "HTTP/1.1 400 Bad Request", "nope").await;
        let http = http_client().expect("client");
        let err = post_layer(&http, &url, None, Some("x"))
            .await
            .expect_err("400 is an error");
        let _ = server.await;
        let msg = format!("{err:#}");
        assert!(msg.contains("400") && msg.contains("\"x\""), "{msg}");
    }
}
