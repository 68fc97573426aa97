//! `Peer`: one peer connection (str0m `Rtc`) and what the worker keeps about
//! it. A publisher's peer is its ingest Transport; a viewer's holds its
//! Consumers.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::Rtc;
use str0m::media::Pt;
use str0m::media::{MediaKind, Mid, Rid};
use str0m::rtp::Ssrc;

use crate::consumer::Consumer;
use crate::router::{RouterId, TrackIn};
use crate::{LayerRequest, Role};

pub(crate) struct Peer {
    pub role: Role,
    pub router: RouterId,
    pub stream: String,
    pub rtc: Rtc,
    pub ufrag: String,
    pub next_timeout: Option<Instant>,
    /// Waits in the worker's queue of peers to drain.
    pub dirty: bool,
    /// Its connection changed since its last `poll_output` (an input, a
    /// timeout, a write, a setting): the drain polls it. A drain for the
    /// fan-out's packets alone does not: they are sealed with
    /// `Rtc::send_rtp_now`, which changes no timer and raises no event,
    /// so the poll would find nothing but the timeout already set.
    pub poll_due: bool,
    pub connected: bool,
    /// Remote addresses this peer's traffic came from (for demultiplexing),
    /// at most `SfuConfig::max_addrs_per_session`.
    pub addrs: Vec<SocketAddr>,
    /// Remote candidates given so far, in the offer and trickled (at most
    /// `SfuConfig::max_remote_candidates`).
    pub remote_candidates: usize,
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
    /// The channel lumen made on SCTP stream 0 for a client that negotiates
    /// it out of band, with its label, until the client first speaks on it:
    /// its opening is reported then, so a client that opened its own
    /// channel in band is not in the room twice.
    pub quiet_channel: Option<(str0m::channel::ChannelId, String)>,
    /// Viewer: the packets the fan-out chose for it, sealed at its next
    /// drain (see `worker::forward::Chunked`).
    pub to_seal: Vec<ToSeal>,
}

/// A packet of the fan-out's chunk as one viewer gets it: the chunk's
/// packet (by index), with this viewer's stream, payload type, sequence
/// number and timestamp.
pub(crate) struct ToSeal {
    pub packet: usize,
    pub ssrc: Ssrc,
    pub pt: Pt,
    pub seq: u64,
    pub timestamp: u32,
}

impl Peer {
    /// Viewer: its Consumer of this kind (a viewer has at most one per kind).
    pub fn consumer(&self, kind: MediaKind) -> Option<&Consumer> {
        self.consumers.iter().find(|c| c.kind == kind)
    }

    /// Viewer: its Consumer of this kind, to change.
    pub fn consumer_mut(&mut self, kind: MediaKind) -> Option<&mut Consumer> {
        self.consumers.iter_mut().find(|c| c.kind == kind)
    }

    /// Viewer: its video Consumer while it is bound to the stream's video
    /// (the one whose layer the SFU chooses).
    pub fn bound_video(&self) -> Option<&Consumer> {
        self.consumer(MediaKind::Video).filter(|c| c.is_bound())
    }

    /// Viewer: [`Self::bound_video`], to change.
    pub fn bound_video_mut(&mut self) -> Option<&mut Consumer> {
        self.consumer_mut(MediaKind::Video).filter(|c| c.is_bound())
    }

    /// Viewer: [`Self::bound_video_mut`] and the connection, to write
    /// packets with both.
    pub fn bound_video_and_rtc(&mut self) -> Option<(&mut Consumer, &mut Rtc)> {
        let c = self
            .consumers
            .iter_mut()
            .find(|c| c.kind == MediaKind::Video)
            .filter(|c| c.is_bound())?;
        Some((c, &mut self.rtc))
    }

    /// Viewer: its first video packet went out. Returns how long after its
    /// offer, in ms, the first time only (for the time-to-first-frame
    /// histogram).
    pub fn first_frame_sent(&mut self, now: Instant) -> Option<u64> {
        let t = self.waiting_since.take()?;
        Some(now.saturating_duration_since(t).as_millis() as u64)
    }

    /// Whether str0m receives this SSRC on this peer: a stream of its own,
    /// or the repair (RTX) stream of one on `tracks` (the publisher's
    /// tracks; none for a viewer, which sends no media). Off the media
    /// path: for RTP that produced no packet.
    pub fn knows_ssrc(&mut self, ssrc: Ssrc, tracks: &[TrackIn]) -> bool {
        let mut api = self.rtc.direct_api();
        if api.stream_rx(&ssrc).is_some() {
            return true;
        }
        tracks.iter().any(|t| {
            t.layers.iter().any(|l| {
                api.stream_rx_by_mid(t.mid, l.rid)
                    .and_then(|s| s.rtx())
                    .is_some_and(|rtx| rtx == ssrc)
            })
        })
    }

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
