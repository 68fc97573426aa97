//! The cluster's HTTP side (see `crate::cluster` for the node's state):
//!
//! - **Parent side.** `POST /internal/v1/relay/{stream}` (a node token:
//!   subject `node:<id>`, scope `subscribe:*`, signed with the cluster's
//!   shared key) attaches a relay sink to the stream here and answers
//!   `201` with an SDP offer and a `Location`; `PATCH` on that location
//!   with the child's SDP answer starts the link, `GET` says whether it
//!   still runs, `DELETE` ends it. See `lumen_cascade::relay`.
//! - **Child side.** A WHEP offer for a stream that is not here, whose
//!   origin the directory knows, first makes this node a carrier
//!   ([`ensure_carried`]): it picks a parent (the origin or a node already
//!   carrying the stream, by region, load and fan-out), takes the parent's
//!   offer, hands it to its own SFU as the stream's publisher (so the
//!   stream's Router, keyframe cache and per-viewer adaptation work as on
//!   the origin), and returns the SFU's answer to the parent. A task then
//!   asks the parent about the link twice a second: a parent that does not
//!   answer is routed around (another carrier or the origin), a link that
//!   ended is made again; the viewers keep their sessions throughout (the
//!   next publisher's packets continue their sequence numbers through the
//!   munger). A few seconds after the last viewer and child left, the node
//!   lets the stream go.
//! - **Redirects.** WHIP for a stream whose origin is another node (one
//!   that answers its readiness probe), and WHEP from a viewer of another
//!   region, get `307` to the right node.
//! - **Origins.** A broadcaster that connects here claims its stream's
//!   origin; one that leaves releases it. While another node holds the
//!   claim the node claims again every second: an origin that died holds
//!   it until its directory entries expire, and then the broadcaster's new
//!   node becomes the origin and the tree forms again from there.
//! - **Readiness.** `GET /readyz`: `503` while draining.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use lumen_auth::{Action, Principal};
use lumen_cascade::relay::PendingRelay;
use lumen_cascade::{JoinError, LinkStatus, NodeId, placement};
use lumen_node::{NodeEvent, SessionRef};
use lumen_sfu::Role;

use crate::authn::authenticate;
use crate::cluster::{Carried, Outbound, lock};
use crate::error::ApiError;
use crate::hub::{Liveness, Observer};
use crate::request::{check_stream_name, read_text, require_content_type};
use crate::sessions::Sessions;
use crate::state::AppState;

/// A carried stream without viewers or children is dropped after this.
const LINGER: Duration = Duration::from_secs(5);

/// How often a child asks its parent whether its relay link still runs:
/// a dead parent is noticed within this (plus a request timeout).
const LINK_CHECK: Duration = Duration::from_millis(500);

/// A parent that does not answer about a link within this is taken for
/// dead.
const LINK_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// Bound on a best-effort call to a parent (ending a link).
const CALL_SHORT: Duration = Duration::from_millis(500);

/// How long a WHIP redirect waits for the stream's origin to say it is
/// ready.
const ORIGIN_PROBE: Duration = Duration::from_millis(500);

/// How often a broadcaster's node claims the stream's origin again while
/// another node holds the claim (one that died holds it until its
/// directory entries expire).
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// How long a node token lives (one is minted per relay request).
const NODE_TOKEN_TTL: Duration = Duration::from_secs(60);

/// `/internal/v1/relay/{stream}`: a child asks for a link.
pub(crate) fn relay_routes() -> MethodRouter<Arc<AppState>> {
    post(
        |State(st): State<Arc<AppState>>, Path(stream): Path<String>, headers: HeaderMap| async move {
            offer_link(st, stream, headers).await
        },
    )
}

/// `/internal/v1/relay/{stream}/{link}`: the child's answer, or the end.
pub(crate) fn link_routes() -> MethodRouter<Arc<AppState>> {
    axum::routing::patch(
        |State(st): State<Arc<AppState>>,
         Path((stream, link)): Path<(String, u64)>,
         headers: HeaderMap,
         body: Body| async move { accept_link(st, stream, link, headers, body).await },
    )
    .get(
        |State(st): State<Arc<AppState>>,
         Path((stream, link)): Path<(String, u64)>,
         headers: HeaderMap| async move { link_status(st, stream, link, headers).await },
    )
    .delete(
        |State(st): State<Arc<AppState>>,
         Path((stream, link)): Path<(String, u64)>,
         headers: HeaderMap| async move { close_link(st, stream, link, headers).await },
    )
}

/// Only another node of the cluster may open, answer or close a link.
async fn authorize_node(
    st: &AppState,
    method: &Method,
    headers: &HeaderMap,
    stream: &str,
) -> Result<(), ApiError> {
    let caller = authenticate(st, method, headers).await?;
    let is_node =
        matches!(&caller.principal, Principal::Token(t) if t.subject.starts_with("node:"));
    if !is_node {
        return Err(ApiError::Forbidden(
            "relay links are for the nodes of the cluster".to_string(),
        ));
    }
    st.auth
        .authorize(&caller.principal, Action::Subscribe, stream)
        .await?;
    Ok(())
}

async fn offer_link(
    st: Arc<AppState>,
    stream: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_stream_name(&stream)?;
    authorize_node(&st, &Method::POST, &headers, &stream).await?;
    let cluster = &st.cluster;
    cluster.sweep();
    if cluster.draining.load(Ordering::Relaxed) {
        return Err(ApiError::Overloaded("this node is draining".to_string()));
    }
    if cluster.links_running() >= cluster.fanout_limit as usize {
        return Err(ApiError::Overloaded(
            "this node feeds as many child nodes as it may".to_string(),
        ));
    }
    let relay = PendingRelay::offer(&st.node, &stream, cluster.media_ip)
        .await
        .map_err(|e| match e {
            lumen_cascade::relay::RelayError::NotLive(s) => ApiError::NotLive(s),
            other => {
                tracing::warn!(%stream, "relay offer: {other}");
                ApiError::Unavailable
            }
        })?;
    let offer = relay.offer_sdp().to_string();
    let id = cluster.next_link.fetch_add(1, Ordering::Relaxed);
    lock(&cluster.out).insert(
        id,
        Outbound::Offered {
            relay: Box::new(relay),
            since: Instant::now(),
        },
    );
    let mut res = (StatusCode::CREATED, offer).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("/internal/v1/relay/{stream}/{id}")) {
        h.insert(header::LOCATION, v);
    }
    Ok(res)
}

async fn accept_link(
    st: Arc<AppState>,
    stream: String,
    id: u64,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize_node(&st, &Method::PATCH, &headers, &stream).await?;
    require_content_type(&headers, "application/sdp")?;
    let answer = read_text(&headers, body, st.body_timeout).await?;
    let relay = {
        let mut out = lock(&st.cluster.out);
        match out.remove(&id) {
            Some(Outbound::Offered { relay, .. }) if relay.stream() == stream => *relay,
            Some(other) => {
                out.insert(id, other);
                return Err(ApiError::Conflict(
                    "the link is not waiting for an answer".to_string(),
                ));
            }
            None => return Err(ApiError::NotFound("no such relay link".to_string())),
        }
    };
    let mut link = relay
        .accept(&answer)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if let Some(chat) = link.take_chat() {
        st.chat.child_link(id, &stream, chat);
    }
    tracing::info!(%stream, link = id, "relay link started");
    lock(&st.cluster.out).insert(id, Outbound::Running { stream, link });
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `200` while the link runs (`404` once it ended; `503` while this node
/// drains): a child whose stream stalled asks before it re-parents.
async fn link_status(
    st: Arc<AppState>,
    stream: String,
    id: u64,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_node(&st, &Method::GET, &headers, &stream).await?;
    if st.cluster.draining.load(Ordering::Relaxed) {
        return Err(ApiError::Overloaded("this node is draining".to_string()));
    }
    let running = matches!(
        lock(&st.cluster.out).get(&id),
        Some(Outbound::Running { stream: s, link }) if *s == stream && !link.is_finished()
    );
    if running {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(ApiError::NotFound("no such relay link".to_string()))
    }
}

async fn close_link(
    st: Arc<AppState>,
    stream: String,
    id: u64,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_node(&st, &Method::DELETE, &headers, &stream).await?;
    let gone = lock(&st.cluster.out).remove(&id);
    match gone {
        Some(Outbound::Running { link, .. }) => link.close().await,
        Some(Outbound::Offered { relay, .. }) => relay.abandon().await,
        None => return Err(ApiError::NotFound("no such relay link".to_string())),
    }
    Ok(StatusCode::OK.into_response())
}

/// The node a WHIP or WHEP `POST` for `stream` belongs on instead of
/// this one, as the `307 Temporary Redirect` RFC 9725 allows:
///
/// - WHIP goes to the stream's origin when another live node holds it (a
///   broadcaster that reconnects lands where its viewers' tree is); with
///   no origin, this node becomes it.
/// - WHEP goes to the best edge for the viewer's region (the
///   `X-Lumen-Region` header a load balancer sets, else this node's) when
///   that region is not this node's: a node there, carrying the stream if
///   one does, else the least busy (see [`placement::choose_edge`]).
///
/// `None`: serve it here (also whenever the directory cannot answer).
pub(crate) async fn redirect(
    st: &AppState,
    whip: bool,
    stream: &str,
    headers: &HeaderMap,
) -> Option<String> {
    let c = &st.cluster;
    if whip {
        let origin = c.dir.origin(stream).await.ok()??;
        if origin == c.me {
            return None;
        }
        let nodes = c.dir.nodes().await.ok()?;
        let url = &nodes.iter().find(|n| n.id == origin)?.public_url;
        // An origin that died keeps its entries until they expire: a
        // broadcaster publishing again is not sent to it (this node takes
        // the stream, and its claim wins once those entries are gone).
        if !c.client.ready(url, ORIGIN_PROBE).await {
            tracing::warn!(%stream, %origin, "the stream's origin does not answer: taking the publisher here");
            return None;
        }
        return Some(format!("{}/whip/{stream}", url.trim_end_matches('/')));
    }
    let region = headers
        .get(REGION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|r| !r.is_empty())?;
    if region == c.region {
        return None;
    }
    let nodes = c.dir.nodes().await.ok()?;
    let carriers = c.dir.carriers(stream).await.ok()?;
    // Without a latency map, a region is only near itself.
    let edge = placement::choose_edge(region, &nodes, &carriers, &placement::Policy::default())?;
    if edge == c.me {
        return None;
    }
    let url = &nodes.iter().find(|n| n.id == edge)?.public_url;
    Some(format!("{}/whep/{stream}", url.trim_end_matches('/')))
}

/// The header a load balancer sets to the viewer's region.
pub const REGION_HEADER: &str = "x-lumen-region";

/// Child side: before a WHEP offer for `stream` is given to the node, make
/// sure the stream is here: live locally, or carried from a parent. Does
/// nothing for a stream the directory knows no origin of (the node then
/// answers as it always has).
pub(crate) async fn ensure_carried(st: &Arc<AppState>, stream: &str) -> Result<(), ApiError> {
    let carried_here =
        |c: &HashMap<String, Carried>| c.get(stream).is_some_and(|c| !c.task.is_finished());
    if carried_here(&*st.cluster.carried.lock().await) {
        return Ok(());
    }
    let origin = match st.cluster.dir.origin(stream).await {
        Ok(Some(o)) => o,
        Ok(None) => return Ok(()),
        Err(e) => {
            tracing::warn!(%stream, "directory unavailable: {e}");
            return Ok(());
        }
    };
    if origin == st.cluster.me || is_local(st, stream) {
        return Ok(());
    }
    // Held while attaching: the viewers that come meanwhile wait for this
    // one link instead of opening their own.
    let mut carried = st.cluster.carried.lock().await;
    if carried_here(&carried) {
        return Ok(());
    }
    let parent = Arc::new(Mutex::new(None));
    let session = attach(st, stream, &[]).await?;
    *lock(&parent) = Some(session.parent.clone());
    let task = tokio::spawn(carry(
        st.clone(),
        stream.to_string(),
        session,
        parent.clone(),
    ));
    carried.insert(stream.to_string(), Carried { parent, task });
    Ok(())
}

/// Whether the stream's publisher is a broadcaster on this node.
fn is_local(st: &AppState, stream: &str) -> bool {
    st.sessions.publisher_of(stream).is_some()
}

/// One attachment to a parent.
struct Attached {
    parent: NodeId,
    /// The link's URL on the parent, for its `DELETE`.
    link_url: String,
    session: SessionRef,
}

/// Picks a parent (never one of `avoid`), takes its offer, answers it
/// through this node's SFU, and joins the directory's tree under it.
async fn attach(st: &Arc<AppState>, stream: &str, avoid: &[NodeId]) -> Result<Attached, ApiError> {
    let cluster = &st.cluster;
    let unavailable = |what: String| {
        tracing::warn!(%stream, "relay: {what}");
        ApiError::NotLive(stream.to_string())
    };
    let mut tried: Vec<NodeId> = avoid.to_vec();
    for _ in 0..4 {
        let carriers = cluster
            .dir
            .carriers(stream)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let carriers: Vec<_> = carriers
            .into_iter()
            .filter(|c| !tried.contains(&c.node) && c.node != cluster.me)
            .collect();
        let nodes = cluster
            .dir
            .nodes()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let Some(parent) = placement::choose_parent(
            &cluster.me,
            &cluster.region,
            &carriers,
            &nodes,
            &placement::Policy::default(),
        ) else {
            return Err(unavailable("no node can feed it".to_string()));
        };
        tried.push(parent.clone());
        let Some(url) = nodes
            .iter()
            .find(|n| n.id == parent)
            .map(|n| n.public_url.trim_end_matches('/').to_string())
        else {
            continue;
        };
        match join_parent(st, stream, &parent, &url).await {
            Ok(a) => return Ok(a),
            Err(e) => tracing::warn!(%stream, %parent, "relay from {url}: {e}"),
        }
    }
    Err(unavailable("every parent refused".to_string()))
}

/// The exchange with one parent.
async fn join_parent(
    st: &Arc<AppState>,
    stream: &str,
    parent: &NodeId,
    url: &str,
) -> Result<Attached, String> {
    let cluster = &st.cluster;
    match cluster.dir.join(stream, &cluster.me, parent).await {
        Ok(_depth) => {}
        Err(JoinError::Directory(e)) => return Err(e.to_string()),
        Err(e) => return Err(e.to_string()),
    }
    let token = node_token(st).map_err(|e| e.to_string())?;
    let offered = match cluster.client.request(url, stream, &token).await {
        Ok(o) => o,
        Err(e) => {
            let _ = cluster.dir.leave(stream, &cluster.me).await;
            return Err(e);
        }
    };
    let location = offered.link_url;
    let answer = match st.node.publish(stream, offered.offer).await {
        Ok(a) => a,
        Err(e) => {
            cluster.client.close(&location, &token, CALL_SHORT).await;
            let _ = cluster.dir.leave(stream, &cluster.me).await;
            return Err(format!("this node refused the parent's offer: {e}"));
        }
    };
    if let Err(e) = cluster
        .client
        .answer(&location, &token, answer.answer_sdp)
        .await
    {
        let _ = st.node.close(answer.session).await;
        let _ = cluster.dir.leave(stream, &cluster.me).await;
        return Err(e);
    }
    // The stream's chat goes up this link from now on.
    st.chat.carry(stream, Some(answer.session)).await;
    tracing::info!(%stream, %parent, "carrying the stream from {url}");
    Ok(Attached {
        parent: parent.clone(),
        link_url: location,
        session: answer.session,
    })
}

fn node_token(st: &AppState) -> Result<String, lumen_auth::AuthError> {
    let scopes =
        lumen_auth::Scopes::parse("subscribe:*").map_err(lumen_auth::AuthError::Invalid)?;
    st.auth
        .mint(&format!("node:{}", st.cluster.me), &scopes, NODE_TOKEN_TTL)
}

/// Watches a carried stream: re-parents when its parent dies, lets go when
/// nobody here needs it.
async fn carry(
    st: Arc<AppState>,
    stream: String,
    mut attached: Attached,
    parent: Arc<Mutex<Option<NodeId>>>,
) {
    let mut info = st.hub.watch_stream(&stream);
    let mut stopped = st.stop.clone();
    let mut unused_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(LINK_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => break,
        }
        let now = Instant::now();
        let viewers = info.borrow_and_update().as_ref().map_or(0, |i| i.viewers);
        if viewers == 0 && st.cluster.children_of(&stream) == 0 {
            let since = *unused_since.get_or_insert(now);
            if now.duration_since(since) >= LINGER {
                tracing::info!(%stream, "nobody here needs the stream: dropping its relay link");
                break;
            }
        } else {
            unused_since = None;
        }
        // Asked of the parent, not read off the media: a stream may pause
        // upstream, and a dead parent sends nothing to tell.
        let avoid = match link_state(&st, &attached).await {
            LinkStatus::Running => continue,
            LinkStatus::Gone => {
                tracing::warn!(%stream, parent = %attached.parent, "the relay link ended: attaching again");
                Vec::new()
            }
            LinkStatus::ParentDown => {
                tracing::warn!(%stream, parent = %attached.parent, "the parent stopped: re-parenting");
                vec![attached.parent.clone()]
            }
        };
        detach(&st, &stream, &attached).await;
        *lock(&parent) = None;
        let mut avoid = avoid;
        let next = loop {
            match attach(&st, &stream, &avoid).await {
                Ok(a) => break Some(a),
                Err(_) if !*stopped.borrow() => {
                    // The stream may be between publishers: wait for its
                    // origin (a re-published stream forms the tree again).
                    avoid.clear();
                    tokio::time::sleep(LINK_CHECK).await;
                    if info.borrow().as_ref().is_none_or(|i| i.viewers == 0) {
                        break None;
                    }
                }
                Err(_) => break None,
            }
        };
        match next {
            Some(a) => {
                *lock(&parent) = Some(a.parent.clone());
                attached = a;
            }
            None => {
                let _ = st.cluster.dir.leave(&stream, &st.cluster.me).await;
                forget(&st, &stream, &parent).await;
                return;
            }
        }
    }
    detach(&st, &stream, &attached).await;
    forget(&st, &stream, &parent).await;
}

/// Removes this carry task's entry (not a newer one for the same stream).
async fn forget(st: &AppState, stream: &str, parent: &Arc<Mutex<Option<NodeId>>>) {
    let mut carried = st.cluster.carried.lock().await;
    if carried
        .get(stream)
        .is_some_and(|c| Arc::ptr_eq(&c.parent, parent))
    {
        carried.remove(stream);
        st.chat.carry(stream, None).await;
    }
}

async fn link_state(st: &AppState, attached: &Attached) -> LinkStatus {
    let Ok(token) = node_token(st) else {
        return LinkStatus::ParentDown;
    };
    st.cluster
        .client
        .status(&attached.link_url, &token, LINK_CHECK_TIMEOUT)
        .await
}

/// Ends one attachment: the relay session here, the link on the parent
/// (best effort), the directory entry.
async fn detach(st: &AppState, stream: &str, attached: &Attached) {
    let _ = st.node.close(attached.session).await;
    if let Ok(token) = node_token(st) {
        st.cluster
            .client
            .close(&attached.link_url, &token, CALL_SHORT)
            .await;
    }
    let _ = st.cluster.dir.leave(stream, &st.cluster.me).await;
}

/// `GET /readyz`: `200` while the node takes sessions, `503` while it
/// drains (a load balancer's readiness probe).
pub(crate) async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    if st.cluster.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

/// Follows the node's events for the directory: a broadcaster that
/// connects claims its stream's origin, one that leaves releases it.
pub(crate) struct Tap {
    cluster: Arc<AppState>,
}

impl Tap {
    pub(crate) fn new(st: Arc<AppState>) -> Tap {
        Tap { cluster: st }
    }
}

impl Observer for Tap {
    fn event(&mut self, sessions: &Sessions, e: &NodeEvent) {
        match e {
            NodeEvent::Connected {
                session,
                role: Role::Publisher,
                stream,
            } if sessions.id_of(*session).is_some() => {
                let st = self.cluster.clone();
                let stream = stream.clone();
                tokio::spawn(async move {
                    let c = &st.cluster;
                    let mut warned = false;
                    loop {
                        match c.dir.claim_origin(&stream, &c.me).await {
                            Ok(lumen_cascade::Claim::Won) => {
                                if warned {
                                    tracing::info!(%stream, "this node is the stream's origin now");
                                }
                                return;
                            }
                            Ok(lumen_cascade::Claim::Held(other)) => {
                                if !std::mem::replace(&mut warned, true) {
                                    tracing::warn!(%stream, origin = %other, "another node is the stream's origin")
                                }
                            }
                            Err(e) => {
                                tracing::warn!(%stream, "claiming the origin: {e}");
                                return;
                            }
                        }
                        // Claimed again while the broadcaster is here: a
                        // holder that died loses the claim when its
                        // entries expire, and the tree forms from here.
                        tokio::time::sleep(CLAIM_RETRY).await;
                        if st.sessions.publisher_of(&stream).is_none() {
                            return;
                        }
                    }
                });
            }
            NodeEvent::Closed {
                session,
                role: Role::Publisher,
                stream,
                ..
            } if sessions.id_of(*session).is_some() => {
                let st = self.cluster.clone();
                let stream = stream.clone();
                tokio::spawn(async move {
                    let c = &st.cluster;
                    if let Err(e) = c.dir.release_origin(&stream, &c.me).await {
                        tracing::warn!(%stream, "releasing the origin: {e}");
                    }
                });
            }
            _ => {}
        }
    }

    fn liveness(&mut self, _: Liveness) {}
}
