//! `Consumer`: one outgoing track of a viewer. It maps the publisher's
//! payload types to the viewer's, waits for a keyframe before it starts (no
//! grey frames), and rewrites sequence numbers and timestamps.

use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::Ssrc;

use crate::LayerReason;
use crate::layers::LayerSelector;
use crate::munger::RtpMunger;
use crate::router::compatible;

pub(crate) struct Consumer {
    pub kind: MediaKind,
    pub mid: Mid,
    pub tx_ssrc: Ssrc,
    /// The viewer's negotiated primary payload types for this m-line.
    pub viewer_params: Vec<PayloadParams>,
    pub pt_map: Vec<PtMap>,
    pub munger: RtpMunger,
    /// The layer being forwarded: `None` until a keyframe started the stream
    /// (audio starts at once, on its only layer).
    pub current: Option<Option<Rid>>,
    /// The layer to forward next; a switch happens on its next keyframe.
    pub target: Option<Option<Rid>>,
    pub reason: LayerReason,
    /// The target is a step down for bandwidth: stop sending the current
    /// layer at once rather than keep a congested link full until the
    /// target's keyframe arrives (it gets through sooner on a drained link).
    pub abandon_current: bool,
    /// RTP timestamp (as the publisher or sink sent it) of the last video
    /// packet forwarded, to tell a sink's late keyframe from a new one.
    pub last_ts: Option<u32>,
    pub selector: LayerSelector,
    /// What the last `ViewerLayerChanged` said.
    pub reported: Option<Reported>,
}

/// (current, target, reason) as last reported.
pub(crate) type Reported = (Option<Option<Rid>>, Option<Option<Rid>>, LayerReason);

#[derive(Debug, Clone, Copy)]
pub(crate) struct PtMap {
    pub from: Pt,
    pub to: Pt,
}

impl Consumer {
    pub fn new(
        kind: MediaKind,
        mid: Mid,
        tx_ssrc: Ssrc,
        viewer_params: Vec<PayloadParams>,
    ) -> Self {
        let clock = viewer_params
            .first()
            .map(|p| p.spec().clock_rate.get())
            .unwrap_or(90_000);
        Consumer {
            kind,
            mid,
            tx_ssrc,
            viewer_params,
            pt_map: Vec::new(),
            munger: RtpMunger::new(clock),
            current: None,
            target: None,
            reason: LayerReason::Starting,
            abandon_current: false,
            last_ts: None,
            selector: LayerSelector::new(),
            reported: None,
        }
    }

    /// Recomputes the payload type map against a (new) publisher's params.
    /// Returns whether any payload the publisher may send can be forwarded.
    pub fn bind(&mut self, publisher_params: &[PayloadParams]) -> bool {
        self.pt_map.clear();
        for p in publisher_params {
            if let Some(v) = self.viewer_params.iter().find(|v| compatible(p, v)) {
                self.pt_map.push(PtMap {
                    from: p.pt(),
                    to: v.pt(),
                });
            }
        }
        // A new publisher: start again on a keyframe. The target layer
        // stays (the viewer's link did not change; the new publisher's
        // layers are not measured yet, and a choice made now would put
        // every viewer on the top layer until they are): the selector moves
        // it once the new layers' figures are in.
        self.current = None;
        self.last_ts = None;
        !self.pt_map.is_empty()
    }

    /// Whether a packet of layer `rid` goes to this viewer; a keyframe of
    /// the target layer completes a pending switch. `made`: the layer is
    /// made by a sink from the publisher's (a transcoder's rung), sharing
    /// their timestamps but coming later, so a keyframe of it that is not
    /// newer than what the viewer already has would go back in time: the
    /// switch waits for a later one, and the layer being left stops.
    pub fn accepts(&mut self, rid: Option<Rid>, is_key: bool, ts: u32, made: bool) -> bool {
        if self.kind != MediaKind::Video {
            self.current = Some(rid);
            return true;
        }
        if self.target == Some(rid) && self.current != Some(rid) {
            let stale = made
                && self.current.is_some()
                && self
                    .last_ts
                    .is_some_and(|last| ts.wrapping_sub(last) as i32 <= 0);
            if is_key && stale {
                self.abandon_current = true;
                return false;
            }
            if is_key {
                self.current = Some(rid);
                self.abandon_current = false;
                return true;
            }
            return false;
        }
        self.current == Some(rid) && !(self.abandon_current && self.target != self.current)
    }

    /// Whether this viewer waits for a keyframe of layer `rid`.
    pub fn waits_for(&self, rid: Option<Rid>) -> bool {
        self.kind == MediaKind::Video && self.target == Some(rid) && self.current != Some(rid)
    }

    /// Whether the publisher sends something it can forward (see
    /// [`Self::bind`]).
    pub fn is_bound(&self) -> bool {
        !self.pt_map.is_empty()
    }

    pub fn map_pt(&self, pt: Pt) -> Option<PtMap> {
        self.pt_map.iter().find(|m| m.from == pt).copied()
    }
}

/// Names of codecs in a param list, for error messages.
pub(crate) fn codec_names(params: &[PayloadParams]) -> String {
    let mut names: Vec<String> = params
        .iter()
        .map(|p| format!("{:?}", p.spec().codec))
        .collect();
    names.dedup();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switching_to_l() -> Consumer {
        let mut c = Consumer::new(MediaKind::Video, Mid::from("1"), Ssrc::from(1), Vec::new());
        c.current = Some(None);
        c.target = Some(Some(Rid::from("l")));
        c.last_ts = Some(9000);
        c
    }

    #[test]
    fn a_sinks_keyframe_older_than_what_was_sent_does_not_switch() {
        let l = Some(Rid::from("l"));
        let mut c = switching_to_l();
        // The rung's keyframe of a frame the viewer already had from the
        // source: no switch, and the source stops.
        assert!(!c.accepts(l, true, 6000, true));
        assert!(!c.accepts(l, true, 9000, true));
        assert_eq!(c.current, Some(None));
        assert!(c.abandon_current);
        assert!(!c.accepts(None, false, 12_000, false), "the source stopped");
        // The next one, newer: the switch.
        assert!(c.accepts(l, true, 12_000, true));
        assert_eq!(c.current, Some(l));
        assert!(!c.abandon_current);
        // Across the 32-bit wrap, newer is newer.
        let mut c = switching_to_l();
        c.last_ts = Some(u32::MAX - 1000);
        assert!(c.accepts(l, true, 2000, true));
    }

    #[test]
    fn a_publishers_own_layers_switch_on_any_keyframe() {
        // Simulcast layers need not share a timestamp base: no guard.
        let l = Some(Rid::from("l"));
        let mut c = switching_to_l();
        assert!(c.accepts(l, true, 6000, false));
        assert_eq!(c.current, Some(l));
    }
}
