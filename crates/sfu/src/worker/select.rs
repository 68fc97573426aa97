//! A viewer's video layer: chosen from its bandwidth estimate, its request
//! and the layers being sent; started on the cached group of pictures of
//! its target when there is a fresh one; reported when it changes.

use std::time::Instant;

use str0m::bwe::Bitrate;
use str0m::media::{MediaKind, Pt, Rid};
use str0m::rtp::RtpWrite;

use super::Sfu;
use super::forward::FAN_OUT_CHUNK;
use crate::layers::LayerSelector;
use crate::router::RouterId;
use crate::sink::MediaPacket;
use crate::{LayerReason, PeerId, SfuEvent, ViewerLayer};

/// Cached packets written to a starting viewer's connection before they are
/// sent on (see `start_from_cache`).
const REPLAY_SLICE: usize = FAN_OUT_CHUNK;

impl Sfu {
    /// Chooses a viewer's video layer again, from its estimate, its request
    /// and the layers being sent.
    pub(super) fn reselect(&mut self, router_id: RouterId, viewer: PeerId, now: Instant) {
        let Some(router) = self.routers.get(&router_id) else {
            return;
        };
        let Some(track) = router.video() else {
            return;
        };
        let mut views = track.views();
        let pts: Vec<(Option<Rid>, Option<Pt>)> =
            track.layers.iter().map(|l| (l.rid, l.pt)).collect();
        let Some(v) = self.peers.get_mut(&viewer) else {
            return;
        };
        let request = v.layer_request.clone();
        let Some(c) = v.bound_video_mut() else {
            return;
        };
        // A layer in a codec the viewer did not negotiate (an AV1 rung, a
        // viewer without AV1) is not one it can choose or pin.
        views.retain(|l| {
            pts.iter()
                .find(|(rid, _)| *rid == l.rid)
                .and_then(|(_, pt)| *pt)
                .is_none_or(|pt| c.map_pt(pt).is_some())
        });
        let was_stopped = c
            .target
            .is_some_and(|t| views.iter().any(|l| l.rid == t && !l.active));
        let Some((target, mut reason)) = c.selector.choose(now, &views, &request, c.target) else {
            return;
        };
        if was_stopped && reason == LayerReason::Bandwidth && c.target != Some(target) {
            reason = LayerReason::LayerStopped;
        }
        let changed = c.target != Some(target);
        let starting = c.current.is_none();
        if changed {
            // Only for a step below the layer being sent, taken for bandwidth.
            let rank = |r: Option<Rid>| views.iter().position(|l| l.rid == r);
            let made = |r: Option<Rid>| views.iter().any(|l| l.rid == r && l.made);
            c.abandon_current = (reason == LayerReason::Bandwidth
                && c.current.is_some_and(
                    |cur| matches!((rank(target), rank(cur)), (Some(t), Some(k)) if t > k),
                ))
                // Towards a sink's layer from the publisher's: the sink's
                // keyframe is of a frame the viewer may already have had
                // from the layer it leaves (a repeat: out of order), so
                // that layer stops at once, and the keyframe asked for
                // comes after the last frame sent.
                || (made(target) && c.current.is_some_and(|cur| !made(cur)));
        }
        c.target = Some(target);
        c.reason = reason;
        let probe = c.selector.may_probe(now);
        if let Some((min, desired)) = LayerSelector::bwe_rates(&views, target, probe) {
            v.rtc.bwe().set_bitrate(
                Bitrate::bps(min.max(100_000)),
                Bitrate::bps(desired.max(100_000)),
            );
            // (The pacer's rates: its next drain polls it.)
            v.poll_due = true;
        }
        if self.start_from_cache(router_id, viewer, now) {
            // Started on the layer's last keyframe: nothing to ask for.
        } else if changed && !(starting && self.gop_is_fresh(router_id, target, now)) {
            // (A viewer still connecting will start on the cached keyframe.)
            self.request_layer_keyframe(router_id, target, now);
        }
        self.report_layer(viewer);
    }

    /// Whether the layer `rid` has a keyframe recent enough to start on.
    fn gop_is_fresh(&self, router_id: RouterId, rid: Option<Rid>, now: Instant) -> bool {
        self.fresh_gop(router_id, rid, now).is_some()
    }

    /// The cached packets of layer `rid` from a keyframe recent enough to
    /// start on.
    fn fresh_gop(
        &self,
        router_id: RouterId,
        rid: Option<Rid>,
        now: Instant,
    ) -> Option<&[MediaPacket]> {
        self.routers
            .get(&router_id)
            .and_then(|r| r.video())
            .and_then(|t| t.layers.iter().find(|l| l.rid == rid))
            .and_then(|l| l.gop.fresh(now))
    }

    /// Starts a connected viewer that waits for its first keyframe on the
    /// cached group of pictures of its target layer: the keyframe and what
    /// followed, at once, then live packets continue the same sequence.
    /// Returns whether it started.
    ///
    /// The group goes to the viewer's connection in slices, each sent on
    /// before the next is written: str0m's send queue keeps the capacity it
    /// ever reached, so writing a whole second of video at once would cost
    /// every viewer that much memory for as long as it watches.
    fn start_from_cache(&mut self, router_id: RouterId, viewer: PeerId, now: Instant) -> bool {
        let Some(v) = self.peers.get(&viewer) else {
            return false;
        };
        if !v.connected {
            return false;
        }
        let Some(c) = v.bound_video() else {
            return false;
        };
        let (None, Some(target)) = (c.current, c.target) else {
            return false;
        };
        let Some(total) = self.fresh_gop(router_id, target, now).map(<[_]>::len) else {
            return false;
        };
        let mut sent = 0;
        let mut at = 0;
        while at < total {
            let Some(slice) = self
                .fresh_gop(router_id, target, now)
                .and_then(|g| g.get(at..(at + REPLAY_SLICE).min(total)))
                .map(<[_]>::to_vec)
            else {
                break;
            };
            at += slice.len();
            let Some(v) = self.peers.get_mut(&viewer) else {
                return false;
            };
            let Some((c, rtc)) = v.bound_video_and_rtc() else {
                return false;
            };
            let mut api = rtc.direct_api();
            let Some(tx) = api.stream_tx(&c.tx_ssrc) else {
                return false;
            };
            for p in slice {
                let Some(map) = c.map_pt(p.pt) else {
                    continue;
                };
                let Some(m) = c.munger.munge(now, p.ssrc, p.seq, p.timestamp) else {
                    continue;
                };
                c.last_ts = Some(p.timestamp);
                tx.write_rtp(
                    RtpWrite::new(map.to, m.seq.into(), m.timestamp, now, p.payload)
                        .marker(p.marker)
                        .nackable(true)
                        .ext_vals(p.ext),
                );
                sent += 1;
            }
            // Written: the drain polls them out.
            v.poll_due = true;
            if at < total {
                // (The drain ticks str0m's clock, which sends the slice.)
                self.drain_peer(viewer);
            }
        }
        if sent == 0 {
            return false;
        }
        let Some(v) = self.peers.get_mut(&viewer) else {
            return false;
        };
        if let Some(c) = v.bound_video_mut() {
            c.current = Some(target);
        }
        if let Some(ms) = v.first_frame_sent(now) {
            self.metrics.ttff_ms.observe(ms);
        }
        self.metrics.rtp_forwarded += sent;
        self.metrics.starts_from_cache += 1;
        self.mark_dirty(viewer);
        true
    }

    /// Emits `ViewerLayerChanged` when a viewer's layer state changed.
    pub(super) fn report_layer(&mut self, viewer: PeerId) {
        let Some(v) = self.peers.get_mut(&viewer) else {
            return;
        };
        let stream = v.stream.clone();
        let request = v.layer_request.clone();
        let Some(c) = v.consumer_mut(MediaKind::Video) else {
            return;
        };
        let now = (c.current, c.target, c.reason);
        if c.reported == Some(now) {
            return;
        }
        c.reported = Some(now);
        let layer = viewer_layer(c, request);
        self.out
            .push_back(crate::Output::Event(SfuEvent::ViewerLayerChanged {
                peer: viewer,
                stream,
                layer,
            }));
    }
}

/// A consumer's layer state as the API shows it.
pub(super) fn viewer_layer(
    c: &crate::consumer::Consumer,
    requested: crate::LayerRequest,
) -> ViewerLayer {
    let name = |r: Option<Option<Rid>>| r.flatten().map(|r| r.to_string());
    ViewerLayer {
        current: name(c.current),
        target: name(c.target),
        reason: if c.current.is_none() {
            LayerReason::Starting
        } else {
            c.reason
        },
        estimate_bps: c.selector.estimate_bps,
        requested,
    }
}
