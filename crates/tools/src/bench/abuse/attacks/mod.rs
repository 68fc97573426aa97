//! The eight attacks of the hardening issue. Each runs from its own loopback
//! source address (Linux lets a client bind any of 127/8), so the server's
//! per-client limits see it apart from the viewers on 127.0.0.1, until it
//! is aborted; each tallies what it sent and what came back.
//!
//! Floods that only cost CPU are paced (the rates are below): on a shared
//! machine an unpaced loop measures which process wins the cores, not
//! whether the server keeps one client's work from the others. What the
//! server lets through — sessions, candidates, connections — is taken as
//! fast as it allows.

mod http;
mod sockets;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::craft::{self, Side};
use http::{create_loop, flood, sse, trickle};
use sockets::{slowloris, stun};

/// Candidates per trickle PATCH, and PATCHes per second.
const TRICKLE_CANDIDATES: usize = 600;
const TRICKLE_PER_SEC: f64 = 50.0;
/// Binding requests per second, each from a new source port, and how long
/// each port listens for the answer.
const STUN_PER_SEC: u32 = 1_500;
const STUN_LISTEN: Duration = Duration::from_millis(300);
/// An attack that needs a session of its own makes a new one this often
/// (before the server's 15 s reaping of sessions that never connect).
const SESSION_LIFE: Duration = Duration::from_secs(10);
/// m-lines of the big offer.
const BIG_M_LINES: usize = 750;
/// Slowloris connections dribbling headers, and ones stalling a body.
const SLOW_HEADERS: usize = 300;
const SLOW_BODIES: usize = 50;
/// Concurrent readers of one session's event stream.
const SSE_READERS: usize = 200;
/// Session-creation flood: POSTs per second, at most this many in flight.
const FLOOD_PER_SEC: f64 = 300.0;
const FLOOD_IN_FLIGHT: usize = 64;
/// Whatever the server answers, a loop that creates sessions does not go
/// faster than one per this (the server's own limit is far below).
const CREATE_FLOOR: Duration = Duration::from_millis(10);
/// Timeout of every attack request but the event streams'.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an attack's idle keep-alive connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// One of the attacks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// PATCHes of 600 trickled candidates on a WHEP session, continuously.
    Trickle,
    /// STUN checks with the session's credentials from thousands of ports.
    Stun,
    /// WHEP POSTs that never start ICE.
    WhepIdle,
    /// WHIP POSTs without candidates on ever new stream names.
    Squat,
    /// 64 KiB offers with 750 m-lines.
    BigOffer,
    /// Headers a byte a second, and stalled bodies.
    Slowloris,
    /// Many concurrent GETs of one session's event stream.
    Sse,
    /// A session-creation flood from one address (garbage SDP).
    Flood,
}

impl Attack {
    /// Every attack, in the order.
    pub const ALL: [Attack; 8] = [
        Attack::Trickle,
        Attack::Stun,
        Attack::WhepIdle,
        Attack::Squat,
        Attack::BigOffer,
        Attack::Slowloris,
        Attack::Sse,
        Attack::Flood,
    ];

    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Attack::Trickle => "trickle",
            Attack::Stun => "stun",
            Attack::WhepIdle => "whep-idle",
            Attack::Squat => "squat",
            Attack::BigOffer => "big-offer",
            Attack::Slowloris => "slowloris",
            Attack::Sse => "sse",
            Attack::Flood => "flood",
        }
    }

    /// Its own source address: 127.0.0.2 and up.
    pub fn source(self) -> Ipv4Addr {
        let i = Attack::ALL.iter().position(|a| *a == self).unwrap_or(0);
        Ipv4Addr::new(127, 0, 0, 2 + i as u8)
    }

    /// What it does, with its pace.
    pub fn what(self) -> String {
        match self {
            Attack::Trickle => format!(
                "a WHEP session, then PATCHes of {TRICKLE_CANDIDATES} distinct candidates, {TRICKLE_PER_SEC}/s; a new session when it is gone"
            ),
            Attack::Stun => format!(
                "a WHEP session every {}s; binding requests with its credentials, {STUN_PER_SEC}/s, each from a new socket",
                SESSION_LIFE.as_secs()
            ),
            Attack::WhepIdle => {
                "WHEP POSTs of real str0m offers that never start ICE, as fast as allowed"
                    .to_owned()
            }
            Attack::Squat => {
                "WHIP POSTs of offers without candidates on new stream names, as fast as allowed"
                    .to_owned()
            }
            Attack::BigOffer => format!(
                "{BIG_M_LINES}-m-line offers of ~64 KiB, WHIP and WHEP by turns, as fast as allowed"
            ),
            Attack::Slowloris => format!(
                "{SLOW_HEADERS} connections sending headers a byte a second, {SLOW_BODIES} stalling a POST body; each reconnects when closed"
            ),
            Attack::Sse => format!(
                "a WHEP session and its event stream every {}s; {SSE_READERS} concurrent GETs of it",
                SESSION_LIFE.as_secs()
            ),
            Attack::Flood => format!(
                "POSTs of garbage SDP to the stream's WHEP endpoint, {FLOOD_PER_SEC}/s, ignoring Retry-After"
            ),
        }
    }
}

/// The server under attack.
pub(super) struct Target {
    pub base: reqwest::Url,
    pub http_addr: SocketAddr,
    pub rtc_addr: SocketAddr,
    pub stream: String,
    /// A `publish:*` token, for the attacks that play a client with a
    /// credential (a stalled publisher's body); the others go without one,
    /// as strangers.
    pub publish_token: String,
}

/// What an attack sent and what came back, by kind ("PATCH 429": count).
#[derive(Default)]
pub(super) struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    pub(super) fn add(&self, key: &str, n: u64) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(key.to_owned()).or_default() += n;
    }

    /// Keeps the largest value seen under `key`.
    fn peak(&self, key: &str, v: u64) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(key.to_owned()).or_default();
        *e = (*e).max(v);
    }

    pub(super) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Runs `attack` until aborted; an error means it could not even start.
pub(super) async fn run(attack: Attack, t: Arc<Target>, tally: Arc<Tally>) -> anyhow::Result<()> {
    let src = IpAddr::V4(attack.source());
    match attack {
        Attack::Trickle => trickle(&t, src, &tally).await,
        Attack::Stun => stun(&t, src, &tally).await,
        Attack::WhepIdle => {
            create_loop(&t, src, &tally, |_| {
                let (sdp, _) = craft::str0m_offer(Side::Watch, Some(SocketAddr::new(src, 9)))?;
                Ok((None, sdp))
            })
            .await
        }
        Attack::Squat => {
            create_loop(&t, src, &tally, |n| {
                let (sdp, _) = craft::str0m_offer(Side::Publish, None)?;
                Ok((Some(format!("squat-{n}")), sdp))
            })
            .await
        }
        Attack::BigOffer => {
            let publish = craft::many_m_lines_offer(Side::Publish, BIG_M_LINES);
            let watch = craft::many_m_lines_offer(Side::Watch, BIG_M_LINES);
            create_loop(&t, src, &tally, move |n| {
                Ok(if n % 2 == 0 {
                    (Some(format!("big-{n}")), publish.clone())
                } else {
                    (None, watch.clone())
                })
            })
            .await
        }
        Attack::Slowloris => slowloris(&t, src, tally).await,
        Attack::Sse => sse(&t, src, tally).await,
        Attack::Flood => flood(&t, src, tally).await,
    }
}
