//! WHIP (RFC 9725) and WHEP endpoints and sessions: `POST` an offer to
//! `/{whip,whep}/{stream}`, then `PATCH` (trickle, ICE restart) and `DELETE`
//! the session URL it answers with. Both protocols share every step but the
//! command given to the node.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lumen_auth::{Action, Grant, Principal};
use lumen_sfu::TrickleFragment;

use crate::authn::{Caller, authenticate, may_touch};
use crate::error::ApiError;
use crate::events::EVENT_NAMES;
use crate::limits::count;
use crate::request::{
    check_stream_name, etag_matches, first_video, random_hex, read_text, require_content_type,
    sdp_attr,
};
use crate::sessions::{ChatRights, Kind, SessionEntry};
use crate::state::AppState;

/// `POST /{whip,whep}/{stream}`: a new session from an SDP offer.
pub(crate) async fn create(
    st: Arc<AppState>,
    kind: Kind,
    stream: String,
    client: Option<IpAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_stream_name(&stream)?;
    require_content_type(&headers, "application/sdp")?;
    if st
        .cluster
        .draining
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return Err(ApiError::Overloaded("this node is draining".to_string()));
    }
    admit(&st, client)?;
    if let Some(to) = crate::relays::redirect(&st, kind == Kind::Whip, &stream, &headers).await {
        // Before the credentials: the other node checks them itself.
        let mut res = StatusCode::TEMPORARY_REDIRECT.into_response();
        if let Ok(v) = HeaderValue::from_str(&to) {
            res.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(res);
    }
    // Before the body is read: a refused client costs no more than this.
    let caller = authenticate(&st, &Method::POST, &headers)
        .await
        .inspect_err(|_| count(&st.refusals.unauthorized))?;
    let action = match kind {
        Kind::Whip => Action::Publish,
        Kind::Whep => Action::Subscribe,
    };
    let grant = st
        .auth
        .authorize(&caller.principal, action, &stream)
        .await
        .inspect_err(|_| count(&st.refusals.unauthorized))?;
    admit_user(&st, &grant)?;
    let offer = read_text(&headers, body, st.body_timeout).await?;
    // Only an offer with a data channel can chat: its rights are looked up
    // then, not for every viewer.
    let chat = if offer.contains("m=application") {
        chat_rights(&st, kind, &caller.principal, &stream).await
    } else {
        ChatRights::default()
    };
    let remote_ufrag = sdp_attr(&offer, "ice-ufrag").unwrap_or_default();
    let video = first_video(&offer);
    let answer = match kind {
        Kind::Whip => st.node.publish(&stream, offer).await?,
        Kind::Whep => {
            // A stream published on another node of the cluster is carried
            // here first.
            crate::relays::ensure_carried(&st, &stream).await?;
            st.node.subscribe(&stream, offer).await?
        }
    };
    let session = answer.session;
    if kind == Kind::Whep {
        // Before the session can be found: its event feeds need it.
        st.hub.viewer_added(session);
    }
    let id = random_hex(16);
    let etag = random_hex(8);
    let registered = st.sessions.insert(
        id.clone(),
        SessionEntry {
            kind,
            stream: stream.clone(),
            session,
            etag: etag.clone(),
            remote_ufrag,
            video,
            event_streams: Vec::new(),
            client,
            grant,
            holder: caller.holder,
            chat,
        },
    );
    if !registered {
        // The node closed it already: its URL would be a 404 at once.
        st.hub.viewer_closed(session);
        return Err(ApiError::Unavailable);
    }
    tracing::info!(?kind, %stream, session = %id, node_session = %session, "session created");
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
    for l in &st.ice_links {
        h.append(header::LINK, l.clone());
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

/// `PATCH` on a session: trickled candidates (`204`), or an ICE restart when
/// the fragment carries new ICE credentials (`200` with the server's).
pub(crate) async fn patch(
    st: Arc<AppState>,
    kind: Kind,
    (stream, id): (String, String),
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let entry = st.lookup(kind, &stream, &id)?;
    let caller = authenticate(&st, &Method::PATCH, &headers).await?;
    may_touch(&caller, &entry.holder)?;
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
    let frag = TrickleFragment::parse(&read_text(&headers, body, st.body_timeout).await?);
    let restart = match (&frag.ufrag, &frag.pwd) {
        (Some(u), Some(p)) if *u != entry.remote_ufrag => Some((u.clone(), p.clone())),
        _ => None,
    };
    let Some((ufrag, pwd)) = restart else {
        add_candidates(&st, &entry, frag.candidates).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let creds = st
        .node
        .restart_ice(entry.session, ufrag.clone(), pwd)
        .await?;
    add_candidates(&st, &entry, frag.candidates).await?;
    let etag = random_hex(8);
    st.sessions.update(&id, |e| {
        e.etag = etag.clone();
        e.remote_ufrag = ufrag;
    });
    let announced = st
        .node
        .announced(entry.session.worker)
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
    Ok(res)
}

/// `DELETE` on a session: it ends (`200`), and its URL is `404` after.
pub(crate) async fn delete(
    st: Arc<AppState>,
    kind: Kind,
    (stream, id): (String, String),
    caller: Caller,
) -> Result<Response, ApiError> {
    let entry = st.lookup(kind, &stream, &id)?;
    may_touch(&caller, &entry.holder)?;
    st.sessions.remove(&id);
    st.node.close(entry.session).await?;
    tracing::info!(?kind, %stream, session = %id, "session deleted");
    Ok(StatusCode::OK.into_response())
}

/// Whether one more session may be created now, by the total and the
/// per-client limits (each refusal counted).
fn admit(st: &AppState, client: Option<IpAddr>) -> Result<(), ApiError> {
    let limits = &st.limits;
    if limits.max_sessions > 0 && st.sessions.len() >= limits.max_sessions {
        count(&st.refusals.max_sessions);
        return Err(ApiError::Overloaded(format!(
            "the server holds its maximum of {} sessions",
            limits.max_sessions
        )));
    }
    let Some(ip) = client else {
        return Ok(());
    };
    let held = st.sessions.of_client(ip);
    if limits.sessions_per_client > 0 && held >= limits.sessions_per_client {
        count(&st.refusals.sessions_per_client);
        return Err(ApiError::TooManyRequests {
            reason: format!("this address holds {held} sessions, the most it may"),
            retry_after: 10,
        });
    }
    if let Err(wait) = st.creation_rate.take(limits, ip, Instant::now()) {
        count(&st.refusals.session_rate);
        return Err(ApiError::TooManyRequests {
            reason: format!(
                "this address creates sessions faster than {} a second",
                limits.session_rate
            ),
            retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
        });
    }
    Ok(())
}

/// What a session may do in the stream's chat: the publisher and
/// moderators moderate; a logged-in user or a token with `chat:{stream}`
/// speaks (as the user, or as the token's subject); anyone else reads.
async fn chat_rights(st: &AppState, kind: Kind, principal: &Principal, stream: &str) -> ChatRights {
    let speaker = match principal {
        Principal::User(u) => Some(u.id.clone()),
        Principal::Token(t) => Some(t.subject.clone()),
        Principal::Key { owner_id, .. } => owner_id.clone(),
        Principal::Anonymous => None,
    };
    if kind == Kind::Whip {
        return ChatRights {
            speaker,
            moderates: true,
        };
    }
    let allowed =
        |action| async move { st.auth.authorize(principal, action, stream).await.is_ok() };
    if speaker.is_some() && allowed(Action::Moderate).await {
        return ChatRights {
            speaker,
            moderates: true,
        };
    }
    if speaker.is_some() && allowed(Action::Chat).await {
        return ChatRights {
            speaker,
            moderates: false,
        };
    }
    ChatRights::default()
}

/// Whether the user a grant counts against may open one more session.
fn admit_user(st: &AppState, grant: &Grant) -> Result<(), ApiError> {
    let limit = st.auth.config().limits.sessions_per_user;
    let Some(user) = &grant.user_id else {
        return Ok(());
    };
    let held = st.sessions.of_user(user);
    if limit > 0 && held >= limit {
        count(&st.refusals.sessions_per_user);
        return Err(ApiError::TooManyRequests {
            reason: format!("this user's credentials hold {held} sessions, the most they may"),
            retry_after: 10,
        });
    }
    Ok(())
}

async fn add_candidates(
    st: &AppState,
    entry: &SessionEntry,
    lines: Vec<String>,
) -> Result<(), ApiError> {
    if lines.is_empty() {
        return Ok(());
    }
    st.node.candidates(entry.session, lines).await?;
    Ok(())
}

/// The methods of the two endpoint URLs and of the two session URLs.
pub(crate) const ENDPOINT_METHODS: &str = "OPTIONS, POST";
pub(crate) const SESSION_METHODS: &str = "OPTIONS, PATCH, DELETE";

/// `OPTIONS` on an endpoint: what it accepts, and the ICE servers.
pub(crate) fn endpoint_options(st: &AppState) -> Response {
    let mut res =
        crate::request::options(ENDPOINT_METHODS, "Authorization, Content-Type, If-Match");
    let h = res.headers_mut();
    h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    for l in &st.ice_links {
        h.append(header::LINK, l.clone());
    }
    res
}

/// `OPTIONS` on a session.
pub(crate) fn session_options() -> Response {
    let mut res = crate::request::options(SESSION_METHODS, "Authorization, Content-Type, If-Match");
    res.headers_mut().insert(
        "accept-patch",
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    res
}
