//! HTTP routes: WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep) endpoints and
//! sessions, the REST API, metrics and the web client.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lumen_sfu::{PeerId, SessionAnswer, SessionError};
use rand::Rng;
use tokio::sync::{oneshot, watch};

use crate::error::ApiError;
use crate::events::EVENT_NAMES;
use crate::shell::{Command, Hub, SessionEntry, Sessions, Snapshot, WorkerHandle};
use crate::{api, whep_ext};

/// Largest SDP offer or trickle fragment accepted.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// Which protocol a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Whip,
    Whep,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }
}

pub(crate) struct AppState {
    workers: Vec<WorkerHandle>,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) hub: Arc<Hub>,
    /// Turns true when the server shuts down (event streams then say `reconnect`).
    pub(crate) stop: watch::Receiver<bool>,
    ice_servers: Vec<String>,
    worker_spread: usize,
}

impl AppState {
    pub fn new(
        workers: Vec<WorkerHandle>,
        sessions: Arc<Sessions>,
        hub: Arc<Hub>,
        stop: watch::Receiver<bool>,
        ice_servers: Vec<String>,
        worker_spread: usize,
    ) -> Self {
        AppState {
            worker_spread,
            workers,
            sessions,
            hub,
            stop,
            ice_servers,
        }
    }

    /// Streams are pinned to a worker by a stable hash of their name.
    pub(crate) fn worker_for(&self, stream: &str) -> usize {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in stream.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        (h % self.workers.len().max(1) as u64) as usize
    }

    /// Where a new viewer of a stream whose publisher is on `origin` goes:
    /// the origin, unless it has `worker_spread` more peers than the least
    /// busy worker.
    pub(crate) fn viewer_worker(&self, origin: usize) -> usize {
        use std::sync::atomic::Ordering;
        let load = |i: usize| self.workers[i].load.load(Ordering::Relaxed);
        let Some(least) = (0..self.workers.len()).min_by_key(|&i| (load(i), i != origin)) else {
            return origin;
        };
        let chosen = if load(origin) <= load(least) + self.worker_spread {
            origin
        } else {
            least
        };
        // Counted at once, so a burst of offers does not all see the same
        // figures (the worker stores its own count after each command).
        self.workers[chosen].load.fetch_add(1, Ordering::Relaxed);
        chosen
    }

    pub(crate) async fn ask<T>(
        &self,
        worker: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ApiError> {
        let w = self.workers.get(worker).ok_or(ApiError::Unavailable)?;
        let (tx, rx) = oneshot::channel();
        w.tx.send(make(tx))
            .await
            .map_err(|_| ApiError::Unavailable)?;
        rx.await.map_err(|_| ApiError::Unavailable)
    }

    pub(crate) async fn snapshots(&self) -> Vec<Snapshot> {
        let mut out = Vec::new();
        for i in 0..self.workers.len() {
            if let Ok(s) = self.ask(i, |reply| Command::Snapshot { reply }).await {
                out.push(s);
            }
        }
        out
    }

    fn ice_links(&self) -> Vec<HeaderValue> {
        self.ice_servers
            .iter()
            .filter_map(|u| HeaderValue::from_str(&format!("<{u}>; rel=\"ice-server\"")).ok())
            .collect()
    }
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/whip/{stream}",
            axum::routing::post(whip_post)
                .options(endpoint_options)
                .fallback(endpoint_not_allowed),
        )
        .route(
            "/whep/{stream}",
            axum::routing::post(whep_post)
                .options(endpoint_options)
                .fallback(endpoint_not_allowed),
        )
        .route(
            "/whip/{stream}/{session}",
            axum::routing::patch(whip_patch)
                .delete(whip_delete)
                .options(session_options)
                .fallback(session_not_allowed),
        )
        .route(
            "/whep/{stream}/{session}",
            axum::routing::patch(whep_patch)
                .delete(whep_delete)
                .options(session_options)
                .fallback(session_not_allowed),
        )
        .route(
            "/whep/{stream}/{session}/sse",
            axum::routing::post(whep_ext::sse_create)
                .options(whep_ext::sse_options)
                .fallback(whep_ext::sse_not_allowed),
        )
        .route(
            "/whep/{stream}/{session}/sse/{events}",
            get(whep_ext::sse_get)
                .delete(whep_ext::sse_delete)
                .options(whep_ext::event_stream_options)
                .fallback(whep_ext::event_stream_not_allowed),
        )
        .route(
            "/whep/{stream}/{session}/layer",
            axum::routing::post(whep_ext::layer_post)
                .get(whep_ext::layer_get)
                .options(whep_ext::layer_options)
                .fallback(whep_ext::layer_not_allowed),
        )
        .route("/api/streams", get(api::list_streams))
        .route("/api/streams/{stream}", get(api::one_stream))
        .route("/metrics", get(api::metrics))
        .route("/", get(|| api::page("index.html")))
        .route("/broadcast", get(|| api::page("broadcast.html")))
        .route("/watch/{stream}", get(|| api::page("watch.html")))
        .route("/static/{file}", get(api::static_file))
        .layer(axum::middleware::map_response(cors))
        .with_state(state)
}

async fn cors(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Post, Accept-Patch, Retry-After"),
    );
    res
}

async fn endpoint_options(State(st): State<Arc<AppState>>) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    h.insert(header::ALLOW, HeaderValue::from_static("OPTIONS, POST"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("OPTIONS, POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    for l in st.ice_links() {
        h.append(header::LINK, l);
    }
    res
}

/// RFC 9725: GET, HEAD and PUT on an endpoint are 405, with Allow.
async fn endpoint_not_allowed() -> Response {
    not_allowed("OPTIONS, POST")
}

/// RFC 9725: GET, HEAD, POST and PUT on a session are 405, with Allow.
async fn session_not_allowed() -> Response {
    not_allowed("OPTIONS, PATCH, DELETE")
}

pub(crate) fn not_allowed(allow: &'static str) -> Response {
    let mut res = (
        StatusCode::METHOD_NOT_ALLOWED,
        format!("allowed methods: {allow}\n"),
    )
        .into_response();
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

async fn session_options() -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(
        "accept-patch",
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    h.insert(
        header::ALLOW,
        HeaderValue::from_static("OPTIONS, PATCH, DELETE"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("OPTIONS, PATCH, DELETE"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    res
}

async fn whip_post(
    st: State<Arc<AppState>>,
    stream: Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    create_session(st, Kind::Whip, stream, headers, body).await
}

async fn whep_post(
    st: State<Arc<AppState>>,
    stream: Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    create_session(st, Kind::Whep, stream, headers, body).await
}

async fn whip_patch(
    st: State<Arc<AppState>>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    patch_session(st, Kind::Whip, path, headers, body).await
}

async fn whep_patch(
    st: State<Arc<AppState>>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    patch_session(st, Kind::Whep, path, headers, body).await
}

async fn whip_delete(
    st: State<Arc<AppState>>,
    path: Path<(String, String)>,
) -> Result<Response, ApiError> {
    delete_session(st, Kind::Whip, path).await
}

async fn whep_delete(
    st: State<Arc<AppState>>,
    path: Path<(String, String)>,
) -> Result<Response, ApiError> {
    delete_session(st, Kind::Whep, path).await
}

async fn create_session(
    State(st): State<Arc<AppState>>,
    kind: Kind,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_stream_name(&stream)?;
    require_content_type(&headers, "application/sdp")?;
    let offer = read_text(&headers, body).await?;
    let mut worker = st.worker_for(&stream);
    if kind == Kind::Whep && st.workers.len() > 1 {
        let chosen = st.viewer_worker(worker);
        if chosen != worker {
            let s = stream.clone();
            let attached = st
                .ask(worker, move |reply| Command::AttachMirror {
                    stream: s,
                    worker: chosen,
                    reply,
                })
                .await?;
            // Not live: the origin itself answers why.
            if attached.is_ok() {
                worker = chosen;
            }
        }
    }
    let (s, o) = (stream.clone(), offer.clone());
    let answer: Result<SessionAnswer, SessionError> = st
        .ask(worker, move |reply| match kind {
            Kind::Whip => Command::Publish {
                stream: s,
                offer: o,
                reply,
            },
            Kind::Whep => Command::Subscribe {
                stream: s,
                offer: o,
                reply,
            },
        })
        .await?;
    let answer = answer?;
    let id = random_hex(16);
    let etag = random_hex(8);
    st.sessions.insert(
        id.clone(),
        SessionEntry {
            kind,
            stream: stream.clone(),
            worker,
            peer: answer.peer,
            etag: etag.clone(),
            remote_ufrag: sdp_attr(&offer, "ice-ufrag").unwrap_or_default(),
            video: first_video(&offer),
            event_streams: Vec::new(),
        },
    );
    tracing::info!(?kind, %stream, session = %id, peer = %answer.peer, "session created");
    let location = format!("/{}/{}/{}", kind.path(), stream, id);
    let mut res = (StatusCode::CREATED, answer.answer_sdp).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        h.insert(header::ETAG, v);
    }
    for l in st.ice_links() {
        h.append(header::LINK, l);
    }
    if kind == Kind::Whep {
        // The WHEP extensions: server-sent events and video layer selection.
        let links = [
            format!(
                "<{location}/sse>; rel=\"urn:ietf:params:whep:ext:core:server-sent-events\"; events=\"{}\"",
                EVENT_NAMES.join(",")
            ),
            format!("<{location}/layer>; rel=\"urn:ietf:params:whep:ext:core:layer\""),
        ];
        for l in links {
            if let Ok(v) = HeaderValue::from_str(&l) {
                h.append(header::LINK, v);
            }
        }
    }
    Ok(res)
}

async fn patch_session(
    State(st): State<Arc<AppState>>,
    kind: Kind,
    Path((stream, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let entry = lookup(&st, kind, &stream, &id)?;
    require_content_type(&headers, "application/trickle-ice-sdpfrag")?;
    let if_match = headers
        .get(header::IF_MATCH)
        .ok_or(ApiError::PreconditionRequired)?
        .to_str()
        .map_err(|_| ApiError::BadRequest("If-Match is not text".to_string()))?
        .trim()
        .to_string();
    let wildcard = if_match == "*";
    if !wildcard && !etag_matches(&if_match, &entry.etag) {
        return Err(ApiError::PreconditionFailed);
    }
    let frag = read_text(&headers, body).await?;
    let candidates: Vec<String> = frag
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("a="))
        .filter(|l| l.starts_with("candidate:"))
        .map(str::to_string)
        .collect();
    let ufrag = sdp_attr(&frag, "ice-ufrag");
    let pwd = sdp_attr(&frag, "ice-pwd");
    let restart = matches!((&ufrag, &pwd), (Some(u), Some(_)) if *u != entry.remote_ufrag);

    if restart {
        let (Some(ufrag), Some(pwd)) = (ufrag, pwd) else {
            return Err(ApiError::BadRequest(
                "ICE restart needs ice-ufrag and ice-pwd".into(),
            ));
        };
        let peer = entry.peer;
        let u = ufrag.clone();
        let creds = st
            .ask(entry.worker, move |reply| Command::RestartIce {
                peer,
                ufrag: u,
                pwd,
                reply,
            })
            .await??;
        add_candidates(&st, &entry, candidates).await?;
        let etag = random_hex(8);
        st.sessions.update(&id, |e| {
            e.etag = etag.clone();
            e.remote_ufrag = ufrag;
        });
        let announced = st
            .workers
            .get(entry.worker)
            .map(|w| w.announced)
            .ok_or(ApiError::Unavailable)?;
        let body = format!(
            "a=ice-lite\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\n\
             a=candidate:1 1 udp 2130706431 {} {} typ host\r\na=end-of-candidates\r\n",
            creds.ufrag,
            creds.pwd,
            announced.ip(),
            announced.port()
        );
        let mut res = (StatusCode::OK, body).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/trickle-ice-sdpfrag"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
            h.insert(header::ETAG, v);
        }
        return Ok(res);
    }
    add_candidates(&st, &entry, candidates).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn add_candidates(
    st: &AppState,
    entry: &SessionEntry,
    lines: Vec<String>,
) -> Result<(), ApiError> {
    if lines.is_empty() {
        return Ok(());
    }
    let peer = entry.peer;
    st.ask(entry.worker, move |reply| Command::Candidates {
        peer,
        lines,
        reply,
    })
    .await??;
    Ok(())
}

async fn delete_session(
    State(st): State<Arc<AppState>>,
    kind: Kind,
    Path((stream, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let entry = lookup(&st, kind, &stream, &id)?;
    st.sessions.remove(&id);
    let peer: PeerId = entry.peer;
    st.ask(entry.worker, move |reply| Command::Close { peer, reply })
        .await?;
    tracing::info!(?kind, %stream, session = %id, "session deleted");
    Ok(StatusCode::OK.into_response())
}

pub(crate) fn lookup(
    st: &AppState,
    kind: Kind,
    stream: &str,
    id: &str,
) -> Result<SessionEntry, ApiError> {
    st.sessions
        .get(id)
        .filter(|e| e.kind == kind && e.stream == stream)
        .ok_or_else(|| ApiError::NotFound("no such session".to_string()))
}

pub(crate) fn check_stream_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "a stream name is 1 to 64 letters, digits, '-', '_' or '.'".to_string(),
        ))
    }
}

pub(crate) fn require_content_type(headers: &HeaderMap, want: &str) -> Result<(), ApiError> {
    let got = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = got.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(want) {
        Ok(())
    } else if got.is_empty() {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be {want}"
        )))
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be {want}, not {got}"
        )))
    }
}

pub(crate) async fn read_text(headers: &HeaderMap, body: Body) -> Result<String, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::TooLarge(MAX_BODY));
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::TooLarge(MAX_BODY))?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::BadRequest("the body is not UTF-8 text".to_string()))
}

/// First `a=NAME:value` in an SDP or fragment.
fn sdp_attr(sdp: &str, name: &str) -> Option<String> {
    let prefix = format!("a={name}:");
    sdp.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
}

/// The first video m-line of an SDP: its index among the m-lines, and its
/// `a=mid` if it has one.
fn first_video(sdp: &str) -> Option<(usize, Option<String>)> {
    let mut index: Option<usize> = None;
    let mut video: Option<(usize, Option<String>)> = None;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            if video.is_some() {
                break;
            }
            let i = index.map_or(0, |i| i + 1);
            index = Some(i);
            if m.starts_with("video ") {
                video = Some((i, None));
            }
        } else if let (Some((_, mid @ None)), Some(v)) = (&mut video, line.strip_prefix("a=mid:")) {
            *mid = Some(v.trim().to_string());
        }
    }
    video
}

fn etag_matches(if_match: &str, etag: &str) -> bool {
    if_match
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == etag)
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_compare_strongly_and_in_lists() {
        assert!(etag_matches("\"abc\"", "abc"));
        assert!(etag_matches("\"x\", \"abc\"", "abc"));
        assert!(!etag_matches("\"abd\"", "abc"));
    }

    #[test]
    fn session_ids_have_128_random_bits() {
        let a = random_hex(16);
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_hex(16));
    }

    #[test]
    fn the_first_video_m_line_is_found() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v1\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v2\r\n";
        assert_eq!(first_video(sdp), Some((1, Some("v1".to_string()))));
        assert_eq!(first_video("v=0\r\nm=audio 9 x 0\r\n"), None);
        assert_eq!(first_video("m=video 9 x 0\n"), Some((0, None)));
    }

    #[test]
    fn stream_names_are_checked() {
        assert!(check_stream_name("cam-1_a.b").is_ok());
        assert!(check_stream_name("").is_err());
        assert!(check_stream_name("a/b").is_err());
        assert!(check_stream_name(&"x".repeat(65)).is_err());
    }
}
