//! `Peer`: one peer connection (str0m `Rtc`) and what the worker keeps about
//! it. A publisher's peer is its ingest Transport; a viewer's holds its
//! Consumers.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::Rtc;
use str0m::media::{Mid, Rid};
use str0m::rtp::Ssrc;

use crate::consumer::Consumer;
use crate::router::RouterId;
use crate::{LayerRequest, Role};

pub(crate) struct Peer {
    pub role: Role,
    pub router: RouterId,
    pub stream: String,
    pub rtc: Rtc,
    pub ufrag: String,
    pub next_timeout: Option<Instant>,
    pub dirty: bool,
    pub connected: bool,
    /// Remote addresses this peer's traffic came from (for demultiplexing).
    pub addrs: Vec<SocketAddr>,
    /// Viewer: one Consumer per outgoing m-line.
    pub consumers: Vec<Consumer>,
    /// Viewer: the layer it asked for.
    pub layer_request: LayerRequest,
    /// Viewer: when the offer arrived, until its first video packet went out
    /// (for the time-to-first-frame histogram).
    pub waiting_since: Option<Instant>,
    /// Publisher: which m-line and layer each incoming SSRC belongs to.
    pub ssrc_cache: Vec<(Ssrc, Mid, Option<Rid>)>,
}

impl Peer {
    /// The (mid, rid) of an incoming SSRC; asks str0m once per SSRC.
    pub fn midrid_of(&mut self, ssrc: Ssrc) -> Option<(Mid, Option<Rid>)> {
        if let Some((_, mid, rid)) = self.ssrc_cache.iter().find(|(s, _, _)| *s == ssrc) {
            return Some((*mid, *rid));
        }
        let mut api = self.rtc.direct_api();
        let rx = api.stream_rx(&ssrc)?;
        let (mid, rid) = (rx.mid(), rx.rid());
        self.ssrc_cache.push((ssrc, mid, rid));
        Some((mid, rid))
    }
}
