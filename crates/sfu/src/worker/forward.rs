//! The media path: RTP packets from a publisher fanned out to the Consumers
//! of its viewers (each on the simulcast layer it chose) and copied to the
//! stream's sinks, keyframe requests sent the other way, coalesced per
//! layer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{KeyframeRequestKind, MediaKind, Rid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};

use super::mirror::copy_to_sink;
use super::{Pending, Sfu};
use crate::codec::{is_keyframe_start, picture_size};
use crate::peer::ToSeal;
use crate::router::{RouterId, video_codec};
use crate::sink::{MediaPacket, SinkBody, SinkMessage};
use crate::{PeerId, SfuEvent};

/// Packets fanned out to every viewer before the viewers' connections are
/// drained: up to this many leave for one viewer in one train (one GSO
/// send), and a packet waits behind at most this many per viewer ahead of
/// it, not behind whole keyframes.
pub(super) const FAN_OUT_CHUNK: usize = 16;

/// How long the packets of a video frame wait for the frame's last one
/// (the marker) before they are fanned out anyway. A browser sends a
/// frame's packets a fraction of a millisecond apart, paced, so they
/// arrive in separate reads: fanned out as they come, each went to every
/// viewer as a datagram of its own. Held until the frame is whole, they
/// leave as one train per viewer, and the viewer, who can show the frame
/// only once its last packet is there, waits no longer for it.
pub(super) const FRAME_HOLD: Duration = Duration::from_millis(5);

/// A video packet of `router`'s publisher arrived at `at`: the stream
/// holds its packets while a frame is incomplete, and lets them go with
/// the frame's last packet.
pub(super) fn hold_for_frame(
    holding: &mut Vec<(RouterId, Instant)>,
    router: RouterId,
    marker: bool,
    at: Instant,
) {
    let held = holding.iter().position(|(r, _)| *r == router);
    match (marker, held) {
        (true, Some(i)) => {
            holding.swap_remove(i);
        }
        (false, None) => holding.push((router, at + FRAME_HOLD)),
        _ => {}
    }
}

/// The most RTP padding added to a packet so that a frame's packets are
/// all one size. A browser splits a frame into packets of about equal
/// size, the later ones a byte larger than the earlier (libwebrtc's
/// `SplitAboutEqually`), and a GSO train takes segments of one size only
/// (the last may be shorter): unpadded, such a frame left as two trains.
pub(super) const MAX_PAD: usize = 8;

/// The largest payload of each frame (SSRC, RTP timestamp) with two or
/// more packets among `pending`.
pub(super) fn frame_sizes(pending: &VecDeque<Pending>) -> Vec<(u32, u32, usize)> {
    let mut sizes: Vec<(u32, u32, usize, usize)> = Vec::new();
    for p in pending {
        let (ssrc, ts, len) = match p {
            Pending::Local(_, _, pkt) => {
                (*pkt.header.ssrc, pkt.header.timestamp, pkt.payload.len())
            }
            Pending::Mirrored(_, m) | Pending::Injected(_, m) => {
                (m.ssrc, m.timestamp, m.payload.len())
            }
        };
        match sizes.iter_mut().find(|(s, t, _, _)| *s == ssrc && *t == ts) {
            Some(e) => {
                e.2 = e.2.max(len);
                e.3 += 1;
            }
            None => sizes.push((ssrc, ts, len, 1)),
        }
    }
    sizes
        .into_iter()
        .filter(|e| e.3 > 1)
        .map(|(s, t, max, _)| (s, t, max))
        .collect()
}

/// The padding that brings a payload of `len` bytes of frame (`ssrc`,
/// `ts`) to the frame's largest packet, if that is at most [`MAX_PAD`]
/// bytes; else none.
pub(super) fn pad_for(sizes: &[(u32, u32, usize)], ssrc: u32, ts: u32, len: usize) -> usize {
    sizes
        .iter()
        .find(|(s, t, _)| *s == ssrc && *t == ts)
        .map(|(_, _, max)| max - len.min(*max))
        .filter(|&pad| pad <= MAX_PAD)
        .unwrap_or(0)
}

/// `payload` with `pad` bytes of RTP padding after it (the last counts
/// them), or `payload` itself when `pad` is 0.
pub(super) fn padded(payload: &Arc<[u8]>, pad: usize) -> Arc<[u8]> {
    if pad == 0 {
        return payload.clone();
    }
    let mut v = Vec::with_capacity(payload.len() + pad);
    v.extend_from_slice(payload);
    v.resize(payload.len() + pad - 1, 0);
    // (pad ≤ MAX_PAD.)
    v.push(pad as u8);
    v.into()
}

/// A packet of the fan-out's chunk that viewers took, kept until each has
/// had it sealed (`Sfu::seal`): what every viewer's copy shares.
pub(super) struct Chunked {
    /// The payload, padded (see [`padded`]).
    payload: Arc<[u8]>,
    padded: bool,
    marker: bool,
    nackable: bool,
    /// When it came in.
    at: Instant,
    /// Its header extension values; `None`: none (most video packets),
    /// so that sealing it for each viewer neither copies nor drops them.
    ext: Option<ExtensionValues>,
}

/// How often a live stream's figures go out as `StreamUpdated`.
const UPDATE_EVERY: Duration = Duration::from_secs(2);

/// The largest RTP payload forwarded; a bigger one is dropped as bad input.
/// str0m 0.25 builds an outgoing packet in a 2000-byte buffer and panics
/// (instead of refusing the write) when the header, a retransmission's
/// original sequence number and the payload do not fit: a publisher that
/// sends bare 12-byte headers gets a 1984-byte payload through its own
/// str0m, and the extensions of a viewer's header then overflow it (found
/// by `fuzz/`, reproducer in `fuzz/regressions/datagrams/`). Browsers
/// packetize to about 1200 bytes; a 1500-byte payload would not cross an
/// Ethernet path unfragmented anyway.
pub(super) const MAX_FORWARDED_PAYLOAD: usize = 1500;

/// What measuring a packet's layer found.
struct Measured {
    kind: MediaKind,
    /// The packet's layer, as an index into its track's `layers`.
    layer: usize,
    /// The sink that makes the layer, if a sink does.
    made_by: Option<crate::SinkId>,
    /// A sink makes the layer here, or (on a mirror) it is a rid its
    /// publisher never announced, past its first layer: what only a sink
    /// adds.
    made: bool,
    /// It starts a keyframe (or carries the parameter sets before one).
    is_key: bool,
    /// A layer started or stopped, or the order of the layers changed.
    layers_changed: bool,
    /// The layer's rate meter closed a window: fresh figures.
    window_closed: bool,
}

impl Sfu {
    /// Forwards the RTP packets collected while draining publishers (and
    /// those an origin worker sent this worker's mirrors), and hands each
    /// sink its batch. At most [`FAN_OUT_CHUNK`] packets at a time: the
    /// caller drains the connections written to before the next chunk.
    pub(super) fn fan_out(&mut self) {
        self.fan_out_upto(FAN_OUT_CHUNK);
    }

    /// Fans out every waiting packet: before a message from an origin or a
    /// sink that changes the stream applies.
    pub(super) fn fan_out_all(&mut self) {
        self.holding.clear();
        self.fan_out_upto(usize::MAX);
    }

    /// Whether there is something to fan out now: a keyframe request, or a
    /// packet of a stream that is not holding a frame. A stream stops
    /// holding once its frame's last packet came, its deadline passed, or
    /// it holds a chunk's worth.
    pub(super) fn ready_to_fan_out(&mut self) -> bool {
        if !self.pending_keyframe.is_empty() {
            return true;
        }
        if self.pending_rtp.is_empty() {
            // (A hold always has a packet waiting; none left, none holds.)
            self.holding.clear();
            // The ring to the front of its buffer (see `Sfu::poll_output`).
            self.pending_rtp.clear();
            return false;
        }
        if !self.holding.is_empty() {
            let now = self.last_now;
            let pending = &self.pending_rtp;
            self.holding.retain(|&(r, deadline)| {
                deadline > now && pending.iter().filter(|p| p.router() == r).count() < FAN_OUT_CHUNK
            });
        }
        let holding = &self.holding;
        holding.is_empty()
            || self
                .pending_rtp
                .iter()
                .any(|p| !holding.iter().any(|(r, _)| *r == p.router()))
    }

    fn fan_out_upto(&mut self, limit: usize) {
        // The last chunk's packets are all sealed (each viewer's drain
        // seals its own; a drain comes before the next fan-out), unless a
        // fan-out ran without one between.
        for id in std::mem::take(&mut self.sealing) {
            self.seal(id);
        }
        self.chunk.clear();
        for (router_id, kind) in std::mem::take(&mut self.pending_keyframe) {
            if kind == MediaKind::Video {
                self.viewer_wants_keyframe(router_id);
            }
        }
        // Padding that makes each frame's packets one size.
        self.frame_sizes = frame_sizes(&self.pending_rtp);
        // The packets of streams that hold a frame stay, in their order.
        let mut held = VecDeque::new();
        let mut sent = 0;
        while sent < limit {
            let Some(p) = self.pending_rtp.pop_front() else {
                break;
            };
            if self.holding.iter().any(|(r, _)| *r == p.router()) {
                held.push_back(p);
                continue;
            }
            sent += 1;
            match p {
                Pending::Local(pub_id, router_id, pkt) => self.forward(pub_id, router_id, pkt),
                Pending::Mirrored(router_id, pkt) | Pending::Injected(router_id, pkt) => {
                    self.forward_packet(router_id, pkt, false)
                }
            }
        }
        if !held.is_empty() {
            held.append(&mut self.pending_rtp);
            self.pending_rtp = held;
        }
        self.frame_sizes.clear();
        self.flush_sinks();
    }

    fn forward(&mut self, pub_id: PeerId, router_id: RouterId, pkt: Box<RtpPacket>) {
        if pkt.payload.len() > MAX_FORWARDED_PAYLOAD {
            self.metrics.dropped_malformed += 1;
            return;
        }
        let Some(publisher) = self.peers.get_mut(&pub_id) else {
            return;
        };
        let Some((mid, rid)) = publisher.midrid_of(pkt.header.ssrc) else {
            return;
        };
        let p = MediaPacket {
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
    /// on this worker and (on its origin) queues it for the sinks.
    /// `local`: it came from a publisher on this worker.
    ///
    /// The steps run in this order, each seeing the effects of the last:
    /// the layer's figures first (viewers choose on them), the packet to
    /// the viewers before the cache (a viewer started from the cache must
    /// not get it twice), the keyframe requests last (the fan-out finds who
    /// waits for one).
    pub(super) fn forward_packet(&mut self, router_id: RouterId, pkt: MediaPacket, local: bool) {
        let now = pkt.at;
        let mid = pkt.mid;
        let Some(m) = self.measure_layer(router_id, &pkt, local) else {
            return;
        };
        if m.kind == MediaKind::Video && (m.layers_changed || m.window_closed) {
            // New figures: every viewer may choose again.
            self.reselect_viewers(router_id, now);
        }
        self.report_stream(router_id, now, m.layers_changed, m.window_closed);
        let needs_keyframe = self.fan_out_to_viewers(router_id, &pkt, &m);
        self.cache_and_copy_to_sinks(router_id, &m, pkt);
        for r in needs_keyframe {
            self.request_layer_keyframe(router_id, r, now);
        }
        self.request_due_keyframes(router_id, mid, now);
        if m.is_key && m.kind == MediaKind::Video {
            // A keyframe may have completed switches: tell whom it concerns.
            self.report_viewer_layers(router_id);
        }
    }

    /// Counts a packet into its layer's figures: rate, activity, keyframes,
    /// picture size; puts layers that went quiet to sleep. `None`: the
    /// stream has no track or no room for the packet's layer.
    fn measure_layer(
        &mut self,
        router_id: RouterId,
        pkt: &MediaPacket,
        local: bool,
    ) -> Option<Measured> {
        let now = pkt.at;
        let track = self
            .routers
            .get_mut(&router_id)?
            .tracks
            .iter_mut()
            .find(|t| t.mid == pkt.mid)?;
        let li = track.layer_index(pkt.rid)?;
        if local {
            self.metrics.rtp_in += 1;
        }
        let kind = track.kind;
        let codec = track
            .params
            .iter()
            .find(|p| p.pt() == pkt.pt)
            .and_then(video_codec);
        let is_key = codec.is_some_and(|c| is_keyframe_start(c, &pkt.payload));

        let layer = &mut track.layers[li];
        layer.ssrc = Some(pkt.ssrc.into());
        layer.pt = Some(pkt.pt);
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
        let made_by = layer.made_by;
        let made =
            made_by.is_some() || (li > 0 && layer.rid.is_some_and(|r| !track.rids.contains(&r)));
        let slept = track.sleep_quiet_layers(now);
        let reordered = (window_closed || woke || slept) && track.reorder();
        Some(Measured {
            kind,
            layer: li,
            made_by,
            made,
            is_key,
            layers_changed: woke || slept || reordered,
            window_closed,
        })
    }

    /// Lets every viewer of the stream choose its layer again.
    fn reselect_viewers(&mut self, router_id: RouterId, now: Instant) {
        let Some(viewers) = self.routers.get(&router_id).map(|r| r.viewers.clone()) else {
            return;
        };
        for v in viewers {
            self.reselect(router_id, v, now);
        }
    }

    /// Emits `StreamUpdated` when the layers changed, or with fresh figures
    /// every [`UPDATE_EVERY`].
    fn report_stream(
        &mut self,
        router_id: RouterId,
        now: Instant,
        layers_changed: bool,
        window_closed: bool,
    ) {
        if !(layers_changed || window_closed) {
            // Most packets: no lookup.
            return;
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
    }

    /// Writes the packet to every connected viewer whose Consumer takes it
    /// (its kind, a payload type it can decode, its current layer, or the
    /// keyframe of its target). Returns the layers whose keyframe a viewer
    /// waits for.
    fn fan_out_to_viewers(
        &mut self,
        router_id: RouterId,
        pkt: &MediaPacket,
        m: &Measured,
    ) -> Vec<Option<Rid>> {
        let (kind, is_key) = (m.kind, m.is_key);
        let now = pkt.at;
        let mut needs_keyframe: Vec<Option<Rid>> = Vec::new();
        let Some(router) = self.routers.get(&router_id) else {
            return needs_keyframe;
        };
        let mut copies = 0;
        let pad = pad_for(
            &self.frame_sizes,
            pkt.ssrc,
            pkt.timestamp,
            pkt.payload.len(),
        );
        let payload = padded(&pkt.payload, pad);
        // Its index in the chunk, once a viewer takes it.
        let mut chunked = None;
        for vid in &router.viewers {
            let Some(v) = self.peers.get_mut(vid) else {
                continue;
            };
            if !v.connected {
                continue;
            }
            let Some(c) = v.consumer_mut(kind) else {
                continue;
            };
            let Some(map) = c.map_pt(pkt.pt) else {
                continue;
            };
            let before = c.current;
            if !c.accepts(pkt.rid, is_key, pkt.timestamp, m.made) {
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
            if kind == MediaKind::Video {
                c.last_ts = Some(pkt.timestamp);
            }
            let munged = c.munger.munge(now, pkt.ssrc, pkt.seq, pkt.timestamp);
            let tx_ssrc = c.tx_ssrc;
            if before.is_none()
                && kind == MediaKind::Video
                && let Some(ms) = v.first_frame_sent(now)
            {
                self.metrics.ttff_ms.observe(ms);
            }
            let Some(m) = munged else {
                continue;
            };
            let packet = *chunked.get_or_insert_with(|| {
                self.chunk.push(Chunked {
                    payload: payload.clone(),
                    padded: pad > 0,
                    marker: pkt.marker,
                    nackable: kind == MediaKind::Video,
                    at: now,
                    ext: (!pkt.ext.is_empty()).then(|| pkt.ext.clone()),
                });
                self.chunk.len() - 1
            });
            if v.to_seal.is_empty() {
                self.sealing.push(*vid);
            }
            v.to_seal.push(ToSeal {
                packet,
                ssrc: tx_ssrc,
                pt: map.to,
                seq: m.seq,
                timestamp: m.timestamp,
            });
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
        needs_keyframe
    }

    /// Seals the packets the fan-out chose for a viewer, in their order:
    /// each at once where str0m can (`Rtc::send_rtp_now`: an unpaced
    /// viewer with nothing queued on the stream), else written to its
    /// send queue, which the drain then polls.
    ///
    /// Viewer by viewer rather than packet by packet: a viewer's
    /// connection (its streams, SRTP keys, retransmission record) is
    /// brought into the cache once per chunk, not once per packet.
    pub(super) fn seal(&mut self, id: PeerId) {
        let Some(v) = self.peers.get_mut(&id) else {
            return;
        };
        let now = self.last_now;
        for t in v.to_seal.drain(..) {
            let Some(p) = self.chunk.get(t.packet) else {
                continue;
            };
            let mut write = RtpWrite::new(t.pt, t.seq.into(), t.timestamp, p.at, p.payload.clone())
                .padded(p.padded)
                .marker(p.marker)
                .nackable(p.nackable);
            if let Some(ext) = &p.ext {
                write = write.ext_vals(ext.clone());
            }
            match v.rtc.send_rtp_now(now, t.ssrc, write) {
                Ok(Some(transmit)) => self.out.push_back(crate::Output::Transmit(transmit)),
                Ok(None) => {}
                Err(write) => {
                    if let Some(tx) = v.rtc.direct_api().stream_tx(&t.ssrc) {
                        tx.write_rtp(write);
                    }
                    // Queued: the drain polls it out.
                    v.poll_due = true;
                }
            }
        }
    }

    /// Keeps a video packet in its layer's group-of-pictures cache and
    /// queues a copy for each sink of the stream.
    fn cache_and_copy_to_sinks(&mut self, router_id: RouterId, m: &Measured, pkt: MediaPacket) {
        let Some(router) = self.routers.get_mut(&router_id) else {
            return;
        };
        if m.kind == MediaKind::Video
            && !pkt.payload.is_empty()
            && let Some(layer) = router
                .tracks
                .iter_mut()
                .find(|t| t.mid == pkt.mid)
                .and_then(|t| t.layers.get_mut(m.layer))
        {
            // Kept after the fan-out: a viewer started from the cache must
            // not get this packet twice.
            layer.gop.push(pkt.at, m.is_key, pkt.clone());
        }
        for s in &router.sinks {
            if m.made_by == Some(s.id) {
                // Its own packets do not go back to it.
                continue;
            }
            copy_to_sink(
                &mut self.sink_batches,
                &mut self.metrics,
                s.id,
                &router.name,
                pkt.clone(),
            );
        }
    }

    /// Sends the keyframe requests of the track's layers that the throttle
    /// held back and now allows.
    fn request_due_keyframes(&mut self, router_id: RouterId, mid: str0m::media::Mid, now: Instant) {
        let Some(t) = self
            .routers
            .get_mut(&router_id)
            .and_then(|r| r.tracks.iter_mut().find(|t| t.mid == mid))
        else {
            return;
        };
        let due: Vec<Option<Rid>> = t
            .layers
            .iter_mut()
            .filter_map(|l| l.keyframes.poll(now).then_some(l.rid))
            .collect();
        for r in due {
            self.send_pli(router_id, r);
        }
    }

    /// Reports the layer state of every viewer of the stream that changed.
    fn report_viewer_layers(&mut self, router_id: RouterId) {
        let Some(viewers) = self.routers.get(&router_id).map(|r| r.viewers.clone()) else {
            return;
        };
        for v in viewers {
            self.report_layer(v);
        }
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
                .and_then(|v| v.consumer(MediaKind::Video))
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
        if let Some(maker) = track
            .layers
            .iter()
            .find(|l| l.rid == rid)
            .and_then(|l| l.made_by)
        {
            // A sink makes this layer: it answers, not the publisher.
            if router.sinks.iter().any(|s| s.id == maker) {
                let message = SinkMessage::keyframe(&router.name, rid);
                self.out
                    .push_back(crate::Output::Sink { to: maker, message });
                self.metrics.keyframe_requests_sent += 1;
            }
            return;
        }
        let Some(pub_id) = router.publisher else {
            // A mirror asks its origin, which asks the publisher.
            if let Some(o) = router.origin.filter(|o| o.publishing) {
                let message = SinkMessage {
                    stream: router.name.clone(),
                    body: SinkBody::Keyframe(rid),
                };
                self.out.push_back(crate::Output::Sink {
                    to: o.from,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mirrored(ssrc: u32, timestamp: u32, len: usize) -> Pending {
        Pending::Mirrored(
            RouterId(1),
            MediaPacket {
                mid: "0".into(),
                rid: None,
                ssrc,
                seq: 0,
                pt: 96.into(),
                timestamp,
                marker: false,
                payload: vec![7; len].into(),
                ext: ExtensionValues::default(),
                at: Instant::now(),
            },
        )
    }

    /// A browser's frame of 1100, 1100, 1101, 1101 bytes becomes four of
    /// 1101; a frame's short first packet (parameter sets) and its short
    /// last one stay as they are, and so does a packet alone in its frame.
    #[test]
    fn a_frame_s_packets_are_padded_to_one_size() {
        let pending: VecDeque<Pending> = [
            mirrored(1, 10, 64),
            mirrored(1, 10, 1100),
            mirrored(1, 10, 1100),
            mirrored(2, 10, 120),
            mirrored(1, 10, 1101),
            mirrored(1, 10, 1101),
            mirrored(1, 20, 1200),
            mirrored(1, 20, 300),
        ]
        .into();
        let sizes = frame_sizes(&pending);
        let pads: Vec<usize> = pending
            .iter()
            .map(|p| match p {
                Pending::Mirrored(_, m) => pad_for(&sizes, m.ssrc, m.timestamp, m.payload.len()),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(pads, [0, 1, 1, 0, 0, 0, 0, 0]);
        assert_eq!(pad_for(&sizes, 1, 10, 1101 - MAX_PAD), MAX_PAD);
        assert_eq!(pad_for(&sizes, 1, 10, 1101 - MAX_PAD - 1), 0);
    }

    /// RTP padding follows the payload, and its last byte counts it.
    #[test]
    fn padding_ends_in_its_length() {
        let payload: Arc<[u8]> = vec![9, 9, 9].into();
        assert_eq!(&padded(&payload, 0)[..], [9, 9, 9]);
        assert_eq!(&padded(&payload, 1)[..], [9, 9, 9, 1]);
        assert_eq!(&padded(&payload, 4)[..], [9, 9, 9, 0, 0, 0, 4]);
    }
}
