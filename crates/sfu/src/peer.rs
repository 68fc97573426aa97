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
    /// NACK counts str0m reported per stream, to count new ones.
    pub nacks: NackCounts,
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

/// str0m's cumulative NACK count per (mid, rid), turned into increments.
#[derive(Debug, Default)]
pub(crate) struct NackCounts(Vec<(Mid, Option<Rid>, u64)>);

impl NackCounts {
    /// The NACKs since the last report for this stream.
    pub fn delta(&mut self, mid: Mid, rid: Option<Rid>, total: u64) -> u64 {
        match self.0.iter_mut().find(|(m, r, _)| *m == mid && *r == rid) {
            Some((_, _, seen)) => {
                let d = total.saturating_sub(*seen);
                *seen = total.max(*seen);
                d
            }
            None => {
                self.0.push((mid, rid, total));
                total
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nack_counts_become_increments_per_stream() {
        let mut n = NackCounts::default();
        let (v, a) = (Mid::from("0"), Mid::from("1"));
        assert_eq!(n.delta(v, None, 3), 3);
        assert_eq!(n.delta(v, None, 5), 2);
        assert_eq!(n.delta(a, None, 1), 1, "another stream counts apart");
        assert_eq!(n.delta(v, Some(Rid::from("h")), 4), 4, "so does a layer");
        assert_eq!(n.delta(v, None, 5), 0);
        assert_eq!(n.delta(v, None, 2), 0, "a count never goes back");
    }
}
