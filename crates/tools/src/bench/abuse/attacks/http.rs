//! The attacks over HTTP (trickle, the session floods, event-stream
//! readers) and the requests they share.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use reqwest::header::{CONTENT_TYPE, IF_MATCH};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::*;
use crate::whip;

/// Status and the headers the attacks use of an answer.
struct Reply {
    status: u16,
    retry_after: Option<u64>,
    location: Option<String>,
    etag: Option<String>,
    links: Vec<String>,
    body: String,
}

/// A new session: its URL, entity tag, answer and links.
pub(super) struct Session {
    url: reqwest::Url,
    etag: String,
    pub(super) answer: String,
    links: Vec<String>,
}

pub(super) fn client(src: IpAddr) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .local_address(src)
        .timeout(HTTP_TIMEOUT)
        // Below the server's 10 s idle timeout: a request on a connection
        // the server is closing fails, which would count as the server's.
        .pool_idle_timeout(IDLE_TIMEOUT)
        .build()
        .context("building an attack's HTTP client")
}

/// Sends, reads the whole answer, and tallies "`label` status" (or error).
async fn send(tally: &Tally, label: &str, req: reqwest::RequestBuilder) -> Option<Reply> {
    match req.send().await {
        Ok(resp) => {
            let h = resp.headers();
            let header = |name: reqwest::header::HeaderName| {
                h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
            };
            let mut reply = Reply {
                status: resp.status().as_u16(),
                retry_after: header(reqwest::header::RETRY_AFTER).and_then(|v| v.parse().ok()),
                location: header(reqwest::header::LOCATION),
                etag: header(reqwest::header::ETAG),
                links: h
                    .get_all(reqwest::header::LINK)
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_owned))
                    .collect(),
                body: String::new(),
            };
            reply.body = resp.text().await.unwrap_or_default();
            tally.add(&format!("{label} {}", reply.status), 1);
            Some(reply)
        }
        Err(e) => {
            let what = if e.is_timeout() { "timeout" } else { "error" };
            tally.add(&format!("{label} {what}"), 1);
            None
        }
    }
}

fn sdp_post(http: &reqwest::Client, url: &str, sdp: String) -> reqwest::RequestBuilder {
    http.post(url)
        .header(CONTENT_TYPE, "application/sdp")
        .body(sdp)
}

/// The session a 201 created.
fn session_of(base: &reqwest::Url, r: &Option<Reply>) -> Option<Session> {
    let r = r.as_ref().filter(|r| r.status == 201)?;
    Some(Session {
        url: base.join(r.location.as_deref()?).ok()?,
        etag: r.etag.clone().unwrap_or_else(|| "*".to_owned()),
        answer: r.body.clone(),
        links: r.links.clone(),
    })
}

/// After a refusal, what the server asked for (`Retry-After`, 1–10 s); a
/// second after a transport error; nothing otherwise.
async fn back_off(r: &Option<Reply>) {
    let secs = match r {
        Some(r) if matches!(r.status, 429 | 503) => r.retry_after.unwrap_or(1).clamp(1, 10),
        Some(_) => 0,
        None => 1,
    };
    tokio::time::sleep(Duration::from_secs(secs) + CREATE_FLOOR).await;
}

/// POSTs `make(n)`'s offer (to WHIP on the stream it names, else to the
/// target stream's WHEP) as fast as the server allows, never using the
/// sessions.
pub(super) async fn create_loop(
    t: &Target,
    src: IpAddr,
    tally: &Tally,
    make: impl Fn(u64) -> anyhow::Result<(Option<String>, String)>,
) -> anyhow::Result<()> {
    let http = client(src)?;
    for n in 0.. {
        let (whip_stream, sdp) = make(n)?;
        let url = match whip_stream {
            Some(s) => format!("{}whip/{s}", t.base),
            None => format!("{}whep/{}", t.base, t.stream),
        };
        let r = send(tally, "POST", sdp_post(&http, &url, sdp)).await;
        back_off(&r).await;
    }
    Ok(())
}

/// A WHEP session on the target stream (viewer offer without candidates);
/// `None` after a refusal, having waited as asked.
pub(super) async fn new_viewer_session(
    t: &Target,
    http: &reqwest::Client,
    tally: &Tally,
) -> anyhow::Result<Option<(Session, String)>> {
    let (sdp, ufrag) = craft::str0m_offer(Side::Watch, None)?;
    let url = format!("{}whep/{}", t.base, t.stream);
    let r = send(tally, "POST", sdp_post(http, &url, sdp)).await;
    match session_of(&t.base, &r) {
        Some(s) => Ok(Some((s, ufrag))),
        None => {
            back_off(&r).await;
            Ok(None)
        }
    }
}

pub(super) async fn trickle(t: &Target, src: IpAddr, tally: &Tally) -> anyhow::Result<()> {
    let http = client(src)?;
    let every = Duration::from_secs_f64(1.0 / TRICKLE_PER_SEC);
    let mut port = 0u32;
    loop {
        let Some((session, _)) = new_viewer_session(t, &http, tally).await? else {
            continue;
        };
        loop {
            let frag = craft::candidate_fragment(src, port, TRICKLE_CANDIDATES);
            port = (port + TRICKLE_CANDIDATES as u32) % 65536;
            let req = http
                .patch(session.url.clone())
                .header(CONTENT_TYPE, "application/trickle-ice-sdpfrag")
                .header(IF_MATCH, session.etag.as_str())
                .body(frag);
            let r = send(tally, "PATCH", req).await;
            match r.as_ref().map(|r| r.status) {
                // Reaped: a new session.
                Some(404) => break,
                None => tokio::time::sleep(Duration::from_secs(1)).await,
                _ => {}
            }
            tokio::time::sleep(every).await;
        }
    }
}

pub(super) async fn sse(t: &Target, src: IpAddr, tally: Arc<Tally>) -> anyhow::Result<()> {
    let http = client(src)?;
    // The readers' GETs last as long as the server keeps the stream open.
    let readers_http = reqwest::Client::builder()
        .local_address(src)
        .connect_timeout(HTTP_TIMEOUT)
        .pool_idle_timeout(IDLE_TIMEOUT)
        .build()
        .context("building the event-stream client")?;
    let (tx, rx) = tokio::sync::watch::channel::<Option<reqwest::Url>>(None);
    let held = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut readers = JoinSet::new();
    for _ in 0..SSE_READERS {
        readers.spawn(sse_reader(
            readers_http.clone(),
            rx.clone(),
            tally.clone(),
            held.clone(),
        ));
    }
    loop {
        let Some((session, _)) = new_viewer_session(t, &http, &tally).await? else {
            continue;
        };
        let Some(sse) = whip::find_link(
            &session.links,
            "urn:ietf:params:whep:ext:core:server-sent-events",
            &session.url,
        ) else {
            tally.add("answer without an event-stream link", 1);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let r = send(&tally, "POST sse", http.post(sse.clone())).await;
        match r
            .as_ref()
            .filter(|r| r.status == 201)
            .and_then(|r| sse.join(r.location.as_deref()?).ok())
        {
            Some(url) => {
                tx.send_replace(Some(url));
                tokio::time::sleep(SESSION_LIFE).await;
            }
            None => back_off(&r).await,
        }
    }
}

async fn sse_reader(
    http: reqwest::Client,
    rx: tokio::sync::watch::Receiver<Option<reqwest::Url>>,
    tally: Arc<Tally>,
    held: Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    loop {
        let url = rx.borrow().clone();
        let Some(url) = url else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(mut resp) = http.get(url).send().await else {
            tally.add("GET error", 1);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let status = resp.status().as_u16();
        tally.add(&format!("GET {status}"), 1);
        if status == 200 {
            tally.peak("event streams held at once", held.fetch_add(1, Relaxed) + 1);
            while let Ok(Some(_)) = resp.chunk().await {}
            held.fetch_sub(1, Relaxed);
            tally.add("event stream ended by the server", 1);
        } else {
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(1u64)
                .clamp(1, 10);
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
    }
}

pub(super) async fn flood(t: &Target, src: IpAddr, tally: Arc<Tally>) -> anyhow::Result<()> {
    let http = client(src)?;
    let url = format!("{}whep/{}", t.base, t.stream);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / FLOOD_PER_SEC));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut in_flight = JoinSet::new();
    loop {
        tick.tick().await;
        while in_flight.try_join_next().is_some() {}
        if in_flight.len() >= FLOOD_IN_FLIGHT {
            tally.add("not sent (all in flight)", 1);
            continue;
        }
        let req = sdp_post(&http, &url, "v=0\r\nthis is not an offer\r\n".to_owned());
        let tally = tally.clone();
        in_flight.spawn(async move { send(&tally, "POST", req).await.map(|_| ()) });
    }
}
