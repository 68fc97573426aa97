//! The media path: RTP packets from a publisher fanned out to the Consumers
//! of its viewers (each on the simulcast layer it chose), keyframe requests
//! sent the other way, coalesced per layer.

use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::media::{KeyframeRequestKind, MediaKind, Rid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};

use super::{Pending, Sfu};
use crate::codec::{is_keyframe_start, picture_size};
use crate::layers::{LAYER_TIMEOUT, LayerSelector};
use crate::relay::{RelayBody, RelayMessage, RelayPacket};
use crate::router::{RouterId, video_codec};
use crate::{LayerReason, PeerId, SfuEvent, ViewerLayer};

/// Cached packets written to a starting viewer's connection before they are
/// sent on (see `start_from_cache`).
const REPLAY_SLICE: usize = FAN_OUT_CHUNK;

/// Packets fanned out to every viewer before the viewers' connections are
/// drained: up to this many leave for one viewer in one train (one GSO
/// send), and a packet waits behind at most this many per viewer ahead of
/// it, not behind whole keyframes.
pub(super) const FAN_OUT_CHUNK: usize = 16;

/// How often a live stream's figures go out as `StreamUpdated`.
const UPDATE_EVERY: Duration = Duration::from_secs(2);

impl Sfu {
    /// Forwards the RTP packets collected while draining publishers (and
    /// those relayed by an origin worker), and hands each mirroring worker
    /// its batch. At most [`FAN_OUT_CHUNK`] packets at a time: the caller
    /// drains the connections written to before the next chunk.
    pub(super) fn fan_out(&mut self) {
        self.fan_out_upto(FAN_OUT_CHUNK);
    }

    /// Fans out every waiting packet: before a relay message that changes
    /// the stream applies.
    pub(super) fn fan_out_all(&mut self) {
        self.fan_out_upto(usize::MAX);
    }

    fn fan_out_upto(&mut self, limit: usize) {
        for (router_id, kind) in std::mem::take(&mut self.pending_keyframe) {
            if kind == MediaKind::Video {
                self.viewer_wants_keyframe(router_id);
            }
        }
        for _ in 0..limit {
            match self.pending_rtp.pop_front() {
                Some(Pending::Local(pub_id, router_id, pkt)) => {
                    self.forward(pub_id, router_id, pkt)
                }
                Some(Pending::Relayed(router_id, pkt)) => {
                    self.forward_packet(router_id, pkt, false)
                }
                None => break,
            }
        }
        self.flush_relay();
    }

    fn forward(&mut self, pub_id: PeerId, router_id: RouterId, pkt: RtpPacket) {
        let Some(publisher) = self.peers.get_mut(&pub_id) else {
            return;
        };
        let Some((mid, rid)) = publisher.midrid_of(pkt.header.ssrc) else {
            return;
        };
        let p = RelayPacket {
            mid,
            rid,
            ssrc: *pkt.header.ssrc,
            seq: *pkt.seq_no,
            pt: pkt.header.payload_type,
            timestamp: pkt.header.timestamp,
            marker: pkt.header.marker,
            ext: ExtensionValues {
                audio_level: pkt.header.ext_vals.audio_level,
                voice_activity: pkt.header.ext_vals.voice_activity,
                video_orientation: pkt.header.ext_vals.video_orientation,
                ..Default::default()
            },
            payload: pkt.payload,
            at: pkt.timestamp,
        };
        self.forward_packet(router_id, p, true);
    }

    /// Forwards one packet of a stream's publisher to the stream's viewers
    /// on this worker (and, on its origin, queues it for the mirrors).
    /// `local`: it came from a publisher on this worker.
    pub(super) fn forward_packet(&mut self, router_id: RouterId, pkt: RelayPacket, local: bool) {
        let now = pkt.at;
        let (mid, rid, ssrc, pt) = (pkt.mid, pkt.rid, pkt.ssrc, pkt.pt);
        let Some(router) = self.routers.get_mut(&router_id) else {
            return;
        };
        let Some(track) = router.tracks.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        let Some(li) = track.layer_index(rid) else {
            return;
        };
        if local {
            self.metrics.rtp_in += 1;
        }
        let kind = track.kind;
        let codec = track
            .params
            .iter()
            .find(|p| p.pt() == pt)
            .and_then(video_codec);
        let is_key = codec.is_some_and(|c| is_keyframe_start(c, &pkt.payload));

        // Measure the layer.
        let layer = &mut track.layers[li];
        layer.ssrc = Some(ssrc.into());
        layer.last_packet = Some(now);
        let woke = !layer.active;
        layer.active = true;
        let window_closed = layer.meter.add(
            now,
            pkt.payload.len() + 12,
            pkt.marker || kind != MediaKind::Video,
        );
        if is_key {
            layer.keyframes.keyframe_received();
        }
        if let Some((w, h)) = codec.and_then(|c| picture_size(c, &pkt.payload)) {
            layer.width = w;
            layer.height = h;
        }
        // Layers that went quiet stop counting (str0m's pause event is slower).
        let mut slept = false;
        for l in &mut track.layers {
            if l.active
                && l.last_packet
                    .is_some_and(|t| now.saturating_duration_since(t) > LAYER_TIMEOUT)
            {
                l.active = false;
                slept = true;
            }
        }
        let reordered = (window_closed || woke || slept) && track.reorder();
        let layers_changed = woke || slept || reordered;

        if kind == MediaKind::Video && (layers_changed || window_closed) {
            // New figures: every viewer may choose again.
            let viewers = router.viewers.clone();
            for v in viewers {
                self.reselect(router_id, v, now);
            }
        }
        let Some(router) = self.routers.get_mut(&router_id) else {
            return;
        };
        if layers_changed
            || (window_closed
                && router
                    .last_update
                    .is_none_or(|t| now.saturating_duration_since(t) >= UPDATE_EVERY))
        {
            router.last_update = Some(now);
            self.out
                .push_back(crate::Output::Event(SfuEvent::StreamUpdated(router.info())));
        }

        let mut needs_keyframe: Vec<Option<Rid>> = Vec::new();
        let mut copies = 0;
        for vid in &router.viewers {
            let Some(v) = self.peers.get_mut(vid) else {
                continue;
            };
            if !v.connected {
                continue;
            }
            let Some(c) = v.consumers.iter_mut().find(|c| c.kind == kind) else {
                continue;
            };
            let Some(map) = c.map_pt(pt) else {
                continue;
            };
            let before = c.current;
            if !c.accepts(rid, is_key) {
                if let Some(t) = c.target
                    && c.waits_for(t)
                    && !needs_keyframe.contains(&t)
                {
                    needs_keyframe.push(t);
                }
                continue;
            }
            if before.is_some() && before != c.current {
                self.metrics.layer_switches += 1;
            }
            if before.is_none()
                && kind == MediaKind::Video
                && let Some(t) = v.waiting_since.take()
            {
                let ms = now.saturating_duration_since(t).as_millis();
                self.metrics.ttff_ms.observe(ms as u64);
            }
            let Some(m) = c.munger.munge(now, ssrc, pkt.seq, pkt.timestamp) else {
                continue;
            };
            let tx_ssrc = c.tx_ssrc;
            let mut api = v.rtc.direct_api();
            let Some(tx) = api.stream_tx(&tx_ssrc) else {
                continue;
            };
            tx.write_rtp(
                RtpWrite::new(map.to, m.seq.into(), m.timestamp, now, pkt.payload.clone())
                    .marker(pkt.marker)
                    .nackable(kind == MediaKind::Video)
                    .ext_vals(pkt.ext.clone()),
            );
            self.metrics.rtp_forwarded += 1;
            copies += 1;
            if !v.dirty {
                v.dirty = true;
                self.dirty.push_back(*vid);
            }
        }
        if copies > 0 {
            self.unsent.push((pkt.at, copies));
        }
        if kind == MediaKind::Video
            && !pkt.payload.is_empty()
            && let Some(track) = router.tracks.iter_mut().find(|t| t.mid == mid)
        {
            // Kept after the fan-out: a viewer started from the cache must
            // not get this packet twice.
            track.layers[li].gop.push(now, is_key, pkt.clone());
        }
        if !router.mirrors.is_empty() {
            let mirrors: Vec<usize> = router.mirrors.iter().map(|m| m.worker).collect();
            let stream = router.name.clone();
            for w in mirrors {
                self.relay_packet(w, &stream, pkt.clone());
            }
        }
        for r in needs_keyframe {
            self.request_layer_keyframe(router_id, r, now);
        }
        // Requests held back by the throttle go out when allowed.
        if let Some(t) = self
            .routers
            .get_mut(&router_id)
            .and_then(|r| r.tracks.iter_mut().find(|t| t.mid == mid))
        {
            let due: Vec<Option<Rid>> = t
                .layers
                .iter_mut()
                .filter_map(|l| l.keyframes.poll(now).then_some(l.rid))
                .collect();
            for r in due {
                self.send_pli(router_id, r);
            }
        }
        if is_key && kind == MediaKind::Video {
            // A keyframe may have completed switches: tell whom it concerns.
            let viewers = self
                .routers
                .get(&router_id)
                .map(|r| r.viewers.clone())
                .unwrap_or_default();
            for v in viewers {
                self.report_layer(v);
            }
        }
    }

    /// Chooses a viewer's video layer again, from its estimate, its request
    /// and the layers being sent.
    pub(super) fn reselect(&mut self, router_id: RouterId, viewer: PeerId, now: Instant) {
        let Some(router) = self.routers.get(&router_id) else {
            return;
        };
        let Some(track) = router.video() else {
            return;
        };
        let views = track.views();
        let Some(v) = self.peers.get_mut(&viewer) else {
            return;
        };
        let request = v.layer_request.clone();
        let Some(c) = v
            .consumers
            .iter_mut()
            .find(|c| c.kind == MediaKind::Video && !c.pt_map.is_empty())
        else {
            return;
        };
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
            c.abandon_current = reason == LayerReason::Bandwidth
                && c.current.is_some_and(
                    |cur| matches!((rank(target), rank(cur)), (Some(t), Some(k)) if t > k),
                );
        }
        c.target = Some(target);
        c.reason = reason;
        let probe = c.selector.may_probe(now);
        if let Some((min, desired)) = LayerSelector::bwe_rates(&views, target, probe) {
            v.rtc.bwe().set_bitrate(
                Bitrate::bps(min.max(100_000)),
                Bitrate::bps(desired.max(100_000)),
            );
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
    ) -> Option<&[RelayPacket]> {
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
        let Some(c) = v
            .consumers
            .iter()
            .find(|c| c.kind == MediaKind::Video && !c.pt_map.is_empty())
        else {
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
            let Some(c) = v
                .consumers
                .iter_mut()
                .find(|c| c.kind == MediaKind::Video && !c.pt_map.is_empty())
            else {
                return false;
            };
            let mut api = v.rtc.direct_api();
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
                tx.write_rtp(
                    RtpWrite::new(map.to, m.seq.into(), m.timestamp, now, p.payload)
                        .marker(p.marker)
                        .nackable(true)
                        .ext_vals(p.ext),
                );
                sent += 1;
            }
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
        if let Some(c) = v
            .consumers
            .iter_mut()
            .find(|c| c.kind == MediaKind::Video && !c.pt_map.is_empty())
        {
            c.current = Some(target);
        }
        if let Some(t) = v.waiting_since.take() {
            let ms = now.saturating_duration_since(t).as_millis();
            self.metrics.ttff_ms.observe(ms as u64);
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
        let Some(c) = v.consumers.iter_mut().find(|c| c.kind == MediaKind::Video) else {
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

    /// A viewer lost a picture (PLI/FIR): ask for a keyframe on every layer
    /// someone receives.
    fn viewer_wants_keyframe(&mut self, router_id: RouterId) {
        let now = self.last_now;
        let Some(router) = self.routers.get(&router_id) else {
            return;
        };
        let mut layers: Vec<Option<Rid>> = Vec::new();
        for vid in &router.viewers {
            if let Some(c) = self
                .peers
                .get(vid)
                .and_then(|v| v.consumers.iter().find(|c| c.kind == MediaKind::Video))
                && let Some(cur) = c.current.or(c.target)
                && !layers.contains(&cur)
            {
                layers.push(cur);
            }
        }
        for r in layers {
            self.request_layer_keyframe(router_id, r, now);
        }
    }

    /// Someone needs a keyframe of the video layer `rid`.
    pub(super) fn request_layer_keyframe(
        &mut self,
        router_id: RouterId,
        rid: Option<Rid>,
        now: Instant,
    ) {
        let Some(layer) = self
            .routers
            .get_mut(&router_id)
            .and_then(|r| r.tracks.iter_mut().find(|t| t.kind == MediaKind::Video))
            .and_then(|t| t.layer_mut(rid))
        else {
            return;
        };
        if layer.keyframes.request(now) {
            self.send_pli(router_id, rid);
        }
    }

    fn send_pli(&mut self, router_id: RouterId, rid: Option<Rid>) {
        let Some(router) = self.routers.get(&router_id) else {
            return;
        };
        let Some(track) = router.video() else {
            return;
        };
        let mid = track.mid;
        let Some(pub_id) = router.publisher else {
            // A mirror asks its origin, which asks the publisher.
            if let Some(o) = router.origin.filter(|o| o.live) {
                let message = RelayMessage {
                    stream: router.name.clone(),
                    body: RelayBody::Keyframe(rid),
                };
                self.out.push_back(crate::Output::Relay {
                    to: o.worker,
                    message,
                });
            }
            return;
        };
        let Some(p) = self.peers.get_mut(&pub_id) else {
            return;
        };
        if let Some(rx) = p.rtc.direct_api().stream_rx_by_mid(mid, rid) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            self.metrics.keyframe_requests_sent += 1;
            self.mark_dirty(pub_id);
        }
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
