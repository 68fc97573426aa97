//! Simulcast: the publisher's layers as measured (`Layer`, `RateMeter`), and
//! each viewer's choice among them (`LayerSelector`): down fast when the
//! bandwidth estimate falls, up only after the estimate has held for a while,
//! so a viewer does not oscillate.

use std::time::{Duration, Instant};

use str0m::media::{Pt, Rid};
use str0m::rtp::Ssrc;

use crate::gop::GopCache;
use crate::keyframe::KeyframeRequester;
use crate::{LayerInfo, LayerReason, LayerRequest};

/// A layer is considered stopped after this long without a packet.
pub(crate) const LAYER_TIMEOUT: Duration = Duration::from_millis(1000);

/// One simulcast encoding of the publisher's video.
pub(crate) struct Layer {
    pub rid: Option<Rid>,
    pub ssrc: Option<Ssrc>,
    pub keyframes: KeyframeRequester,
    pub meter: RateMeter,
    pub last_packet: Option<Instant>,
    pub active: bool,
    pub width: u32,
    pub height: u32,
    /// Its packets since the last keyframe, for viewers that join.
    pub gop: GopCache,
    /// The sink that makes this layer (a transcoder's rung), `None` for
    /// the publisher's own: keyframe requests go to whoever makes it.
    pub made_by: Option<crate::SinkId>,
    /// The payload type of its latest packet: a viewer that cannot decode
    /// it (an AV1 rung, a viewer without AV1) never chooses the layer.
    pub pt: Option<Pt>,
    /// The rank it had when last active.
    ranked: (u64, u64),
}

impl Layer {
    pub fn new(rid: Option<Rid>, keyframe_interval: Duration) -> Self {
        Layer {
            rid,
            ssrc: None,
            keyframes: KeyframeRequester::new(keyframe_interval),
            meter: RateMeter::default(),
            last_packet: None,
            active: false,
            width: 0,
            height: 0,
            gop: GopCache::default(),
            made_by: None,
            pt: None,
            ranked: (0, 0),
        }
    }

    /// Ordering key: bigger pictures first, then higher bitrate. A layer
    /// that stopped keeps the rank it had while it was sending (its rate
    /// falls to nothing, but it is still the layer it was).
    pub fn rank(&mut self) -> (u64, u64) {
        if self.active {
            self.ranked = (self.width as u64 * self.height as u64, self.meter.rate());
        }
        self.ranked
    }

    pub fn info(&self) -> LayerInfo {
        LayerInfo {
            rid: self.rid.map(|r| r.to_string()),
            active: self.active,
            bitrate_bps: self.meter.bitrate_bps,
            width: self.width,
            height: self.height,
            fps: self.meter.fps,
        }
    }
}

/// Bytes and frames per one-second window.
#[derive(Debug, Default)]
pub(crate) struct RateMeter {
    window_start: Option<Instant>,
    last_at: Option<Instant>,
    bytes: u64,
    frames: u64,
    pub bitrate_bps: u64,
    pub fps: f64,
}

impl RateMeter {
    /// The last window's bitrate, or the open window's before the first one closed.
    pub fn rate(&self) -> u64 {
        if self.bitrate_bps > 0 {
            return self.bitrate_bps;
        }
        match (self.window_start, self.last_at) {
            (Some(start), Some(last)) => {
                let secs = last.saturating_duration_since(start).as_secs_f64();
                if secs >= 0.1 {
                    (self.bytes as f64 * 8.0 / secs) as u64
                } else {
                    0
                }
            }
            _ => 0,
        }
    }

    /// Counts a packet; returns true when a window closed (new figures).
    pub fn add(&mut self, now: Instant, bytes: usize, end_of_frame: bool) -> bool {
        let start = *self.window_start.get_or_insert(now);
        self.last_at = Some(now);
        self.bytes += bytes as u64;
        if end_of_frame {
            self.frames += 1;
        }
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= Duration::from_millis(1000) {
            let secs = elapsed.as_secs_f64();
            self.bitrate_bps = (self.bytes as f64 * 8.0 / secs) as u64;
            self.fps = self.frames as f64 / secs;
            self.window_start = Some(now);
            self.bytes = 0;
            self.frames = 0;
            return true;
        }
        false
    }
}

/// What a selector sees of one layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerView {
    pub rid: Option<Rid>,
    pub active: bool,
    /// Whether a packet of it came from this publisher yet.
    pub started: bool,
    pub bitrate_bps: u64,
    /// Picture size, 0 × 0 while unknown.
    pub width: u32,
    pub height: u32,
    /// Made from another layer by a sink (a transcoder's rung): its
    /// frames come some milliseconds after the same frames of the
    /// publisher's layers.
    pub made: bool,
}

/// Per-viewer layer choice.
#[derive(Debug, Clone)]
pub(crate) struct LayerSelector {
    pub estimate_bps: Option<u64>,
    /// Since when the estimate has allowed a better layer than the target.
    up_since: Option<Instant>,
    /// When the target last went down (no way up for a while after).
    last_down: Option<Instant>,
    /// str0m's estimate as it stands (`estimate_bps` is the one str0m
    /// smooths over 3 s, which hides a sharp drop for seconds).
    pub raw_estimate_bps: Option<u64>,
    /// The last egress stats: when, and video bytes sent so far.
    last_egress: Option<(Instant, u64)>,
    /// While receiver reports show heavy loss: the rate that got through,
    /// which caps the estimate until the given time.
    loss_cap: Option<(u64, Instant)>,
    /// The player's size in device pixels, if it said.
    pub render_size: Option<(u32, u32)>,
}

/// How often str0m reports a viewer's stats (current estimate, bytes sent,
/// receiver-report loss).
pub(crate) const EGRESS_STATS_INTERVAL: Duration = Duration::from_millis(250);
/// Receiver-reported loss above which the estimate is not trusted.
const HEAVY_LOSS: f32 = 0.1;
/// How long a loss cap holds after the report that set it.
const LOSS_CAP_FOR: Duration = Duration::from_secs(3);

/// How long a better layer must fit before the viewer moves up.
const UP_AFTER: Duration = Duration::from_millis(2500);
/// After a step down, how long before any step up.
const HOLD_AFTER_DOWN: Duration = Duration::from_secs(4);
/// The estimate str0m's BWE starts from (see the viewer's `RtcConfig`).
pub(crate) const INITIAL_ESTIMATE_BPS: u64 = 1_000_000;
/// Share of the estimate media may use (the rest is headroom for RTX, audio, jitter).
const USABLE: f64 = 0.85;

impl LayerSelector {
    pub fn new() -> Self {
        LayerSelector {
            estimate_bps: None,
            up_since: None,
            last_down: None,
            raw_estimate_bps: None,
            last_egress: None,
            loss_cap: None,
            render_size: None,
        }
    }

    /// The viewer's receiver reports, through str0m's egress stats: `bytes`
    /// of video sent so far, `loss` the fraction lost in the reports since
    /// the last call. The delay-based estimate reacts late to a link that
    /// drops far below it into a short buffer (the queue fills at once and
    /// then stops growing); heavy loss caps it at what got through.
    /// Returns whether the cap changed.
    pub fn on_egress_stats(&mut self, now: Instant, bytes: u64, loss: Option<f32>) -> bool {
        let prev = self.last_egress.replace((now, bytes));
        let (Some((t0, b0)), Some(loss)) = (prev, loss) else {
            return false;
        };
        let secs = now.saturating_duration_since(t0).as_secs_f64();
        if loss < HEAVY_LOSS || secs < 0.05 {
            return false;
        }
        let sent_bps = bytes.saturating_sub(b0) as f64 * 8.0 / secs;
        let through = (sent_bps * f64::from(1.0 - loss.min(1.0))) as u64;
        let cap = match self.loss_cap {
            Some((c, until)) if now < until => c.min(through),
            _ => through,
        };
        self.loss_cap = Some((cap, now + LOSS_CAP_FOR));
        true
    }

    /// The estimate the choice is made from: str0m's smoothed one, or its
    /// current one when lower (down fast, up slowly), capped while receiver
    /// reports show heavy loss.
    pub fn effective_estimate(&self, now: Instant) -> u64 {
        let smoothed = self.estimate_bps.unwrap_or(INITIAL_ESTIMATE_BPS);
        let estimate = self.raw_estimate_bps.map_or(smoothed, |r| r.min(smoothed));
        match self.loss_cap {
            Some((cap, until)) if now < until => estimate.min(cap),
            _ => estimate,
        }
    }

    /// Picks the target layer. `layers` is best first; `current_target` is
    /// the rid targeted so far (`None` if none yet).
    pub fn choose(
        &mut self,
        now: Instant,
        layers: &[LayerView],
        request: &LayerRequest,
        current_target: Option<Option<Rid>>,
    ) -> Option<(Option<Rid>, LayerReason)> {
        let all_active: Vec<&LayerView> = layers.iter().filter(|l| l.active).collect();
        // Automatic choice never goes above the smallest layer that covers
        // the player's size.
        let covering = self.render_size.and_then(|(w, h)| {
            all_active
                .iter()
                .rposition(|l| l.width > 0 && (l.width >= w || l.height >= h))
        });
        let skip = match request {
            LayerRequest::Auto => covering.unwrap_or(0),
            LayerRequest::Rid(_) => 0,
        };
        let size_limited = skip > 0;
        let active: Vec<&LayerView> = all_active[skip.min(all_active.len())..].to_vec();
        if active.is_empty() {
            return None;
        }
        if layers.len() == 1 {
            return Some((active[0].rid, LayerReason::SingleLayer));
        }
        if let LayerRequest::Rid(want) = request {
            let pos = layers
                .iter()
                .position(|l| l.rid.is_some_and(|r| r.to_string() == *want));
            if let Some(pos) = pos {
                if layers[pos].active {
                    return Some((layers[pos].rid, LayerReason::Requested));
                }
                if let Some(l) = layers[pos..].iter().find(|l| l.active) {
                    return Some((l.rid, LayerReason::LayerStopped));
                }
                return Some((active[active.len() - 1].rid, LayerReason::LayerStopped));
            }
            // An unknown rid is treated as automatic choice.
        }
        let bandwidth = |rid: Option<Rid>| {
            if size_limited && active.first().is_some_and(|l| l.rid == rid) {
                LayerReason::Size
            } else {
                LayerReason::Bandwidth
            }
        };
        // A new publisher's layers start one by one (a relay link that
        // re-parented replays each layer's cached pictures in turn): until
        // any is measured, a viewer's target that has not started yet is
        // waited for, not left for whichever layer came first.
        if let Some(t) = current_target
            && layers.iter().any(|l| l.rid == t && !l.active && !l.started)
            && all_active.iter().all(|l| l.bitrate_bps == 0)
        {
            return Some((t, bandwidth(t)));
        }
        // Before the first estimate, assume what str0m's BWE starts from.
        let estimate = self.effective_estimate(now);
        let budget = (estimate as f64 * USABLE) as u64;
        // The best active layer that fits, or the lowest active one.
        let fit = active
            .iter()
            .position(|l| l.bitrate_bps <= budget)
            .unwrap_or(active.len() - 1);
        let cur = current_target.and_then(|t| active.iter().position(|l| l.rid == t));
        let Some(cur) = cur else {
            self.up_since = None;
            return Some((active[fit].rid, bandwidth(active[fit].rid)));
        };
        if fit > cur {
            // Down: at once.
            self.up_since = None;
            self.last_down = Some(now);
            return Some((active[fit].rid, bandwidth(active[fit].rid)));
        }
        if fit < cur {
            // Up: once the (probed) estimate has held, and not right after a
            // drop, to the best layer it carries.
            let held_down = self
                .last_down
                .is_some_and(|t| now.saturating_duration_since(t) < HOLD_AFTER_DOWN);
            let since = *self.up_since.get_or_insert(now);
            if !held_down && now.saturating_duration_since(since) >= UP_AFTER {
                self.up_since = None;
                return Some((active[fit].rid, bandwidth(active[fit].rid)));
            }
        } else {
            self.up_since = None;
        }
        Some((active[cur].rid, bandwidth(active[cur].rid)))
    }

    /// Whether the viewer may pad towards the next layer up: not while it is
    /// held down after a drop, when padding towards the layer it just left
    /// would keep the congested link full and slow the rest of the way down.
    pub fn may_probe(&self, now: Instant) -> bool {
        self.last_down
            .is_none_or(|t| now.saturating_duration_since(t) >= HOLD_AFTER_DOWN)
    }

    /// The rates str0m's BWE should reach with padding if need be (minimum:
    /// what the next layer up needs when `probe`, else what the target
    /// needs) and probe for (desired: what the best layer needs), so the
    /// estimate can grow past what is sent now.
    pub fn bwe_rates(layers: &[LayerView], target: Option<Rid>, probe: bool) -> Option<(u64, u64)> {
        let active: Vec<&LayerView> = layers.iter().filter(|l| l.active).collect();
        let i = active.iter().position(|l| l.rid == target)?;
        let need = |l: &LayerView| (l.bitrate_bps as f64 / USABLE) as u64;
        let min = if probe {
            need(active[i.saturating_sub(1)])
        } else {
            need(active[i])
        };
        let desired = need(active[0]).max(min);
        Some((min, desired))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(active: [bool; 3]) -> Vec<LayerView> {
        [
            ("h", 2_500_000, 1280),
            ("m", 800_000, 640),
            ("l", 200_000, 320),
        ]
        .iter()
        .zip(active)
        .map(|((r, b, w), a)| LayerView {
            rid: Some(Rid::from(*r)),
            active: a,
            started: true,
            bitrate_bps: *b,
            width: *w,
            height: *w * 9 / 16,
            made: false,
        })
        .collect()
    }

    fn rid(s: &str) -> Option<Rid> {
        Some(Rid::from(s))
    }

    #[test]
    fn a_new_publishers_layer_that_has_not_started_is_waited_for_until_one_is_measured() {
        let t0 = Instant::now();
        let mut s = LayerSelector::new();
        s.estimate_bps = Some(400_000);
        // A new publisher: only h has started, nothing is measured yet.
        let mut views = layers([true, false, false]);
        for v in &mut views {
            v.bitrate_bps = 0;
            v.started = v.active;
        }
        let (t, _) = s
            .choose(t0, &views, &LayerRequest::Auto, Some(rid("l")))
            .unwrap();
        assert_eq!(t, rid("l"), "left l for the first layer that came");
        // A viewer without a target yet chooses among what is there.
        let (t, _) = s.choose(t0, &views, &LayerRequest::Auto, None).unwrap();
        assert_eq!(t, rid("h"));
        // Once a layer is measured, one that never started counts as stopped.
        views[0].bitrate_bps = 2_500_000;
        let (t, _) = s
            .choose(t0, &views, &LayerRequest::Auto, Some(rid("l")))
            .unwrap();
        assert_eq!(t, rid("h"));
    }

    #[test]
    fn a_small_player_gets_the_smallest_layer_that_covers_it() {
        let t0 = Instant::now();
        let mut s = LayerSelector::new();
        s.estimate_bps = Some(10_000_000);
        let l = layers([true, true, true]);
        // A 600×338 player: m (640×360) covers it, h would be wasted.
        s.render_size = Some((600, 338));
        assert_eq!(
            s.choose(t0, &l, &LayerRequest::Auto, None),
            Some((rid("m"), LayerReason::Size))
        );
        // Bandwidth still rules below the cap.
        s.estimate_bps = Some(400_000);
        assert_eq!(
            s.choose(t0, &l, &LayerRequest::Auto, None),
            Some((rid("l"), LayerReason::Bandwidth))
        );
        // A pin is a pin, whatever the size.
        s.estimate_bps = Some(10_000_000);
        assert_eq!(
            s.choose(t0, &l, &LayerRequest::Rid("h".into()), None),
            Some((rid("h"), LayerReason::Requested))
        );
        // A player bigger than every layer, or no size: the best layer.
        s.render_size = Some((3840, 2160));
        assert_eq!(
            s.choose(t0, &l, &LayerRequest::Auto, None),
            Some((rid("h"), LayerReason::Bandwidth))
        );
        s.render_size = None;
        assert_eq!(
            s.choose(t0, &l, &LayerRequest::Auto, None),
            Some((rid("h"), LayerReason::Bandwidth))
        );
        // A tiny player: l.
        s.render_size = Some((160, 90));
        assert_eq!(
            s.choose(t0, &l, &LayerRequest::Auto, None),
            Some((rid("l"), LayerReason::Size))
        );
    }

    #[test]
    fn the_current_estimate_takes_the_viewer_down_before_the_smoothed_one() {
        let t0 = Instant::now();
        let mut s = LayerSelector::new();
        s.estimate_bps = Some(3_000_000);
        s.raw_estimate_bps = Some(4_000_000);
        assert_eq!(s.effective_estimate(t0), 3_000_000, "up only as smoothed");
        s.raw_estimate_bps = Some(500_000);
        assert_eq!(s.effective_estimate(t0), 500_000, "down as it happens");
        let l = layers([true, true, true]);
        assert_eq!(
            s.choose(t0, &l, &LayerRequest::Auto, Some(rid("h"))),
            Some((rid("l"), LayerReason::Bandwidth))
        );
    }

    #[test]
    fn heavy_receiver_loss_caps_the_estimate_for_a_while() {
        let t0 = Instant::now();
        let mut s = LayerSelector::new();
        s.estimate_bps = Some(3_000_000);
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(!s.on_egress_stats(t0, 0, None));
        // Light loss changes nothing.
        assert!(!s.on_egress_stats(ms(250), 62_500, Some(0.02)));
        assert_eq!(s.effective_estimate(ms(250)), 3_000_000);
        // 2 Mbit/s sent, half of it lost: 1 Mbit/s got through.
        assert!(s.on_egress_stats(ms(500), 125_000, Some(0.5)));
        assert_eq!(s.effective_estimate(ms(500)), 1_000_000);
        let l = layers([true, true, true]);
        assert_eq!(
            s.choose(ms(500), &l, &LayerRequest::Auto, Some(rid("h"))),
            Some((rid("m"), LayerReason::Bandwidth))
        );
        // The cap ends after a while without heavy loss.
        assert_eq!(s.effective_estimate(ms(500) + LOSS_CAP_FOR), 3_000_000);
    }

    #[test]
    fn down_at_once_up_after_the_estimate_held() {
        let t0 = Instant::now();
        let ls = layers([true; 3]);
        let mut s = LayerSelector::new();
        s.estimate_bps = Some(5_000_000);
        let (t, _) = s.choose(t0, &ls, &LayerRequest::Auto, None).unwrap();
        assert_eq!(t, rid("h"));
        s.estimate_bps = Some(400_000);
        let (t, r) = s
            .choose(t0, &ls, &LayerRequest::Auto, Some(rid("h")))
            .unwrap();
        assert_eq!((t, r), (rid("l"), LayerReason::Bandwidth));
        // The estimate recovers: nothing for a while, then one step at a time.
        s.estimate_bps = Some(5_000_000);
        let mut now = t0;
        let mut target = rid("l");
        let mut path = vec![];
        for _ in 0..200 {
            now += Duration::from_millis(100);
            let (t, _) = s
                .choose(now, &ls, &LayerRequest::Auto, Some(target))
                .unwrap();
            if t != target {
                path.push((now - t0, t));
                target = t;
            }
        }
        assert_eq!(path.len(), 1, "{path:?}");
        assert_eq!(path[0].1, rid("h"));
        assert!(path[0].0 >= HOLD_AFTER_DOWN);
    }

    #[test]
    fn a_pinned_layer_wins_and_falls_back_below_when_stopped() {
        let t0 = Instant::now();
        let mut s = LayerSelector::new();
        s.estimate_bps = Some(100_000);
        let req = LayerRequest::Rid("h".into());
        let (t, r) = s.choose(t0, &layers([true; 3]), &req, None).unwrap();
        assert_eq!((t, r), (rid("h"), LayerReason::Requested));
        let (t, r) = s
            .choose(t0, &layers([false, true, true]), &req, None)
            .unwrap();
        assert_eq!((t, r), (rid("m"), LayerReason::LayerStopped));
    }

    #[test]
    fn a_stopped_layer_moves_viewers_down_and_single_layers_just_work() {
        let t0 = Instant::now();
        let mut s = LayerSelector::new();
        s.estimate_bps = Some(10_000_000);
        let (t, _) = s
            .choose(
                t0,
                &layers([false, true, true]),
                &LayerRequest::Auto,
                Some(rid("h")),
            )
            .unwrap();
        assert_eq!(t, rid("m"));
        let single = [LayerView {
            rid: None,
            active: true,
            started: true,
            bitrate_bps: 1_000_000,
            width: 640,
            height: 360,
            made: false,
        }];
        let (t, r) = s
            .choose(t0, &single, &LayerRequest::Rid("l".into()), None)
            .unwrap();
        assert_eq!((t, r), (None, LayerReason::SingleLayer));
        assert!(
            s.choose(t0, &layers([false; 3]), &LayerRequest::Auto, None)
                .is_none()
        );
    }
}
