//! `Router`: one per stream. It knows the stream's publisher, its incoming
//! tracks (the Producer, with its simulcast layers) and the viewers whose
//! Consumers read from them: the explicit producer -> consumers map of
//! mediasoup, without callbacks.

use std::time::{Duration, Instant};

use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Rid};

use crate::PeerId;
use crate::codec::VideoCodec;
use crate::layers::{LAYER_TIMEOUT, Layer, LayerView};
use crate::mirror::Origin;
use crate::sink::{Sink, TrackDescription};

/// Handle of a router inside one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RouterId(pub u64);

pub(crate) struct Router {
    pub name: String,
    pub publisher: Option<PeerId>,
    /// The publisher completed ICE and DTLS: the stream is live.
    pub publisher_connected: bool,
    /// Every viewer attached, connected or not.
    pub viewers: Vec<PeerId>,
    /// How many of `viewers` are connected (the ones [`Router::info`]
    /// counts).
    pub connected_viewers: usize,
    /// The publisher's incoming tracks (its Producer), at most one per kind.
    pub tracks: Vec<TrackIn>,
    /// When the last `StreamUpdated` went out.
    pub last_update: Option<Instant>,
    /// Origin: the sinks attached to this stream (mirrors on other workers).
    pub sinks: Vec<Sink>,
    /// Mirror: the worker whose publisher feeds this Router.
    pub origin: Option<Origin>,
}

/// One incoming track of the publisher.
pub(crate) struct TrackIn {
    pub mid: Mid,
    pub kind: MediaKind,
    /// Negotiated primary payload types (no RTX).
    pub params: Vec<PayloadParams>,
    /// Its encodings: one (`rid: None`) without simulcast.
    pub layers: Vec<Layer>,
    /// Indexes into `layers`, best first.
    pub order: Vec<usize>,
    /// The rids the offer announced (empty without simulcast).
    pub rids: Vec<Rid>,
    keyframe_interval: Duration,
}

/// More layers than any browser sends; a peer cannot grow the list past it.
const MAX_LAYERS: usize = 4;

impl Router {
    pub fn new(name: String) -> Self {
        Router {
            name,
            publisher: None,
            publisher_connected: false,
            viewers: Vec::new(),
            connected_viewers: 0,
            tracks: Vec::new(),
            last_update: None,
            sinks: Vec::new(),
            origin: None,
        }
    }

    /// Nothing depends on it any more: it may be forgotten. (A mirror is
    /// forgotten by detaching, never here.)
    pub fn is_empty(&self) -> bool {
        self.publisher.is_none()
            && self.viewers.is_empty()
            && self.sinks.is_empty()
            && self.origin.is_none()
    }

    /// Whether its publisher is attached, here or on its origin worker,
    /// connected or not: viewers may subscribe (and wait for it with the
    /// broadcaster, if they arrived together).
    pub fn has_publisher(&self) -> bool {
        self.publisher.is_some() || self.origin.is_some_and(|o| o.publishing)
    }

    /// Whether its publisher is connected, here or on its origin worker.
    pub fn live(&self) -> bool {
        (self.publisher.is_some() && self.publisher_connected)
            || self.origin.is_some_and(|o| o.publishing && o.live)
    }

    /// Its tracks as its sinks see them (and a mirror rebuilds them).
    pub fn describe(&self) -> Vec<TrackDescription> {
        self.tracks
            .iter()
            .map(|t| TrackDescription {
                mid: t.mid,
                kind: t.kind,
                params: t.params.clone(),
                rids: t.rids.clone(),
            })
            .collect()
    }

    pub fn video(&self) -> Option<&TrackIn> {
        self.tracks.iter().find(|t| t.kind == MediaKind::Video)
    }

    /// What signaling sees: half-open sessions are not counted.
    pub fn info(&self) -> crate::StreamInfo {
        let live = self.live();
        let layers = match self.video() {
            Some(t) if live => t.order.iter().map(|&i| t.layers[i].info()).collect(),
            _ => Vec::new(),
        };
        crate::StreamInfo {
            name: self.name.clone(),
            live,
            viewers: self.connected_viewers,
            layers,
        }
    }
}

impl TrackIn {
    pub fn new(
        mid: Mid,
        kind: MediaKind,
        params: Vec<PayloadParams>,
        rids: &[Rid],
        keyframe_interval: Duration,
    ) -> Self {
        let mut layers: Vec<Layer> = rids
            .iter()
            .take(MAX_LAYERS)
            .map(|r| Layer::new(Some(*r), keyframe_interval))
            .collect();
        if layers.is_empty() {
            layers.push(Layer::new(None, keyframe_interval));
        }
        let order = (0..layers.len()).collect();
        TrackIn {
            mid,
            kind,
            params,
            layers,
            order,
            rids: rids.iter().take(MAX_LAYERS).copied().collect(),
            keyframe_interval,
        }
    }

    /// The layer of `rid`, created on first sight if there is room.
    pub fn layer_index(&mut self, rid: Option<Rid>) -> Option<usize> {
        if let Some(i) = self.layers.iter().position(|l| l.rid == rid) {
            return Some(i);
        }
        // A track announced without simulcast takes the first rid it sees.
        if self.layers.len() == 1 && self.layers[0].rid.is_none() && self.layers[0].ssrc.is_none() {
            self.layers[0].rid = rid;
            return Some(0);
        }
        if self.layers.len() >= MAX_LAYERS {
            return None;
        }
        self.layers.push(Layer::new(rid, self.keyframe_interval));
        self.order.push(self.layers.len() - 1);
        Some(self.layers.len() - 1)
    }

    /// Marks the layers without a packet for [`LAYER_TIMEOUT`] stopped
    /// (str0m's pause event is slower); returns whether one stopped.
    pub fn sleep_quiet_layers(&mut self, now: Instant) -> bool {
        let mut slept = false;
        for l in &mut self.layers {
            if l.active
                && l.last_packet
                    .is_some_and(|t| now.saturating_duration_since(t) > LAYER_TIMEOUT)
            {
                l.active = false;
                slept = true;
            }
        }
        slept
    }

    /// Re-sorts the layers best first; returns whether the order changed.
    pub fn reorder(&mut self) -> bool {
        let ranks: Vec<(u64, u64)> = self.layers.iter_mut().map(|l| l.rank()).collect();
        let mut order: Vec<usize> = (0..self.layers.len()).collect();
        // Stable: layers measured alike keep the order the offer gave.
        order.sort_by_key(|&i| std::cmp::Reverse(ranks[i]));
        let changed = order != self.order;
        self.order = order;
        changed
    }

    /// The layers as a selector sees them, best first.
    pub fn views(&self) -> Vec<LayerView> {
        self.order
            .iter()
            .map(|&i| {
                let l = &self.layers[i];
                // Made by a sink here; on a mirror, which cannot know, a
                // rid the publisher never announced past its first layer
                // (only a sink adds those).
                let made = l.made_by.is_some()
                    || (i > 0 && l.rid.is_some_and(|r| !self.rids.contains(&r)));
                LayerView {
                    rid: l.rid,
                    active: l.active,
                    started: l.last_packet.is_some(),
                    bitrate_bps: l.meter.rate(),
                    width: l.width,
                    height: l.height,
                    made,
                }
            })
            .collect()
    }

    /// The layer forwarded for `rid`.
    pub fn layer_mut(&mut self, rid: Option<Rid>) -> Option<&mut Layer> {
        self.layers.iter_mut().find(|l| l.rid == rid)
    }
}

/// The video codec of a payload, if the SFU knows where its keyframes are.
pub(crate) fn video_codec(p: &PayloadParams) -> Option<VideoCodec> {
    use str0m::format::Codec;
    match p.spec().codec {
        Codec::H264 => Some(VideoCodec::H264),
        Codec::Vp8 => Some(VideoCodec::Vp8),
        Codec::Vp9 => Some(VideoCodec::Vp9),
        Codec::Av1 => Some(VideoCodec::Av1),
        _ => None,
    }
}

/// Whether a viewer that negotiated `b` can decode what a publisher sends as `a`.
pub(crate) fn compatible(a: &PayloadParams, b: &PayloadParams) -> bool {
    use str0m::format::Codec;
    let (a, b) = (a.spec(), b.spec());
    if a.codec != b.codec || a.clock_rate != b.clock_rate {
        return false;
    }
    match a.codec {
        Codec::H264 => {
            let mode = |p: &str0m::format::CodecSpec| p.format.packetization_mode.unwrap_or(0);
            // profile_idc is the top byte; the level only bounds resolution and
            // rate, which browsers decode beyond what they announce.
            let profile =
                |p: &str0m::format::CodecSpec| p.format.profile_level_id.unwrap_or(0x42001f) >> 16;
            mode(&a) == mode(&b) && profile(&a) == profile(&b)
        }
        Codec::Vp9 => a.format.profile_id.unwrap_or(0) == b.format.profile_id.unwrap_or(0),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_layer_keeps_its_place_in_the_order() {
        let t0 = Instant::now();
        let rids: Vec<Rid> = ["h", "m", "l"].into_iter().map(Rid::from).collect();
        let mut t = TrackIn::new(
            Mid::from("0"),
            MediaKind::Video,
            Vec::new(),
            &rids,
            Duration::from_millis(500),
        );
        // Pictures of unknown size (no parameter sets parsed): bitrate ranks.
        for (i, bytes) in [(0, 3000), (1, 1000), (2, 300)] {
            let l = &mut t.layers[i];
            l.active = true;
            l.meter.add(t0, bytes, true);
            l.meter.add(t0 + Duration::from_secs(1), bytes, true);
        }
        t.reorder();
        let names = |t: &TrackIn| -> Vec<String> {
            t.views()
                .iter()
                .map(|v| v.rid.unwrap().to_string())
                .collect()
        };
        assert_eq!(names(&t), ["h", "m", "l"]);
        // h stops; its measured rate falls to nothing in the next window.
        t.layers[0].active = false;
        t.layers[0].meter.bitrate_bps = 0;
        t.reorder();
        assert_eq!(names(&t), ["h", "m", "l"]);
    }
}
