//! The media path: RTP packets from a publisher fanned out to the Consumers
//! of its viewers, and keyframe requests sent the other way, coalesced.

use std::time::Instant;

use str0m::media::{KeyframeRequestKind, MediaKind};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};

use super::Sfu;
use crate::PeerId;
use crate::codec::is_keyframe_start;
use crate::router::{RouterId, video_codec};

impl Sfu {
    /// Forwards the RTP packets collected while draining publishers.
    pub(super) fn fan_out(&mut self) {
        for (router_id, kind) in std::mem::take(&mut self.pending_keyframe) {
            let now = self.last_now;
            self.request_keyframe(router_id, kind, now);
        }
        let pending = std::mem::take(&mut self.pending_rtp);
        for (pub_id, router_id, pkt) in pending {
            self.forward(pub_id, router_id, pkt);
        }
    }

    fn forward(&mut self, pub_id: PeerId, router_id: RouterId, pkt: RtpPacket) {
        let now = pkt.timestamp;
        let Some(publisher) = self.peers.get_mut(&pub_id) else {
            return;
        };
        let ssrc = pkt.header.ssrc;
        let Some((mid, rid)) = publisher.midrid_of(ssrc) else {
            return;
        };
        let Some(router) = self.routers.get_mut(&router_id) else {
            return;
        };
        let Some(track) = router.tracks.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        if !track.rid_chosen {
            track.rid = rid;
            track.rid_chosen = true;
        } else if track.rid != rid {
            return;
        }
        self.metrics.rtp_in += 1;
        let kind = track.kind;
        let pt = pkt.header.payload_type;
        let codec = track
            .params
            .iter()
            .find(|p| p.pt() == pt)
            .and_then(video_codec);
        let is_key = codec.is_some_and(|c| is_keyframe_start(c, &pkt.payload));
        if is_key {
            track.keyframes.keyframe_received();
        }
        let ext = ExtensionValues {
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            video_orientation: pkt.header.ext_vals.video_orientation,
            ..Default::default()
        };
        let mut waiting = false;
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
            if c.waiting_keyframe {
                if !is_key {
                    waiting = true;
                    continue;
                }
                c.waiting_keyframe = false;
            }
            let Some(m) = c
                .munger
                .munge(now, *ssrc, *pkt.seq_no, pkt.header.timestamp)
            else {
                continue;
            };
            let tx_ssrc = c.tx_ssrc;
            let mut api = v.rtc.direct_api();
            let Some(tx) = api.stream_tx(&tx_ssrc) else {
                continue;
            };
            tx.write_rtp(
                RtpWrite::new(map.to, m.seq.into(), m.timestamp, now, pkt.payload.clone())
                    .marker(pkt.header.marker)
                    .nackable(kind == MediaKind::Video)
                    .ext_vals(ext.clone()),
            );
            self.metrics.rtp_forwarded += 1;
            if !v.dirty {
                v.dirty = true;
                self.dirty.push_back(*vid);
            }
        }
        if waiting {
            self.request_keyframe(router_id, kind, now);
        } else if let Some(t) = self
            .routers
            .get_mut(&router_id)
            .and_then(|r| r.tracks.iter_mut().find(|t| t.mid == mid))
            && t.keyframes.poll(now)
        {
            // A request that was held back by the throttle goes out now.
            self.send_pli(router_id, kind);
        }
    }

    /// Someone needs a keyframe on this router's track of `kind`.
    fn request_keyframe(&mut self, router_id: RouterId, kind: MediaKind, now: Instant) {
        let Some(router) = self.routers.get_mut(&router_id) else {
            return;
        };
        let Some(track) = router.tracks.iter_mut().find(|t| t.kind == kind) else {
            return;
        };
        if kind != MediaKind::Video {
            return;
        }
        if track.keyframes.request(now) {
            self.send_pli(router_id, kind);
        }
    }

    fn send_pli(&mut self, router_id: RouterId, kind: MediaKind) {
        let Some(router) = self.routers.get(&router_id) else {
            return;
        };
        let Some(track) = router.tracks.iter().find(|t| t.kind == kind) else {
            return;
        };
        let (mid, rid) = (track.mid, track.rid);
        let Some(pub_id) = router.publisher else {
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
