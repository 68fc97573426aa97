//! WHEP server-sent events (the `urn:ietf:params:whep:ext:core:server-sent-events`
//! extension of draft-ietf-wish-whep): the event names, their JSON, and the
//! feed that turns a stream's and a viewer's state into them.
//!
//! Events, one JSON object on one `data:` line each:
//!
//! - `active` / `inactive`, `{}`: the stream's publisher came or went. No
//!   initial `inactive` when the stream is offline at the start (the draft
//!   forbids it).
//! - `layers`: the publisher's video layers, keyed by the viewer's video
//!   m-line index: `{"0": {"active": [{"id", "simulcastIdx", "bitrate",
//!   "width", "height", "fps"}], "inactive": [{"id", "simulcastIdx", "width",
//!   "height"}], "layers": [{"encodingId", "simulcastIdx", "bitrate", "width",
//!   "height", "fps"}]}}`. `id`/`encodingId` is the rid; `simulcastIdx` counts
//!   from the lowest layer (0); `fps` is lumen's addition. Sent when the
//!   layers change, which includes their bitrates every few seconds. A
//!   stream of one layer that the transcoder left without a ladder because
//!   its budget (`transcode.max_streams`) was spent also has
//!   `"transcode": "over_budget"` beside `active` (lumen's addition).
//! - `viewercount`: `{"viewercount": N}`.
//! - `reconnect`, `{}`: the server is shutting down; POST the offer again
//!   (after a short wait) to get a new session. A node of a cluster that
//!   drains (SIGTERM) names where to go: `{"url": "http://other/whep/NAME"}`
//!   (RFC 9725's WHEP event `reconnect` with the optional `url`).
//! - `layer` (lumen's own): the layer this viewer receives and why:
//!   `{"mediaId": "0", "current": "m", "target": "h", "reason": "bandwidth",
//!   "estimateBps": 1800000, "requested": null}`; `reason` is one of
//!   `starting`, `single-layer`, `bandwidth`, `requested`, `layer-stopped`;
//!   `requested` is the pinned rid or `null` for automatic.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::Event;
use futures_util::Stream;
use lumen_sfu::{LayerInfo, LayerReason, LayerRequest, StreamInfo, ViewerLayer};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use lumen_node::ViewerState;

/// Every event a WHEP session's event stream can carry, in the order the
/// `events` attribute of the `Link` header announces them.
pub(crate) const EVENT_NAMES: [&str; 6] = [
    "active",
    "inactive",
    "layers",
    "viewercount",
    "reconnect",
    "layer",
];

/// A subset of [`EVENT_NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventSet(u8);

impl EventSet {
    pub fn all() -> EventSet {
        EventSet((1 << EVENT_NAMES.len()) - 1)
    }

    /// The known names among `names`. Unknown ones are ignored: players
    /// written for other servers ask for theirs (`vad`, `scte35`) too, and
    /// should still get the events both sides know.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> EventSet {
        let mut bits = 0;
        for n in names {
            if let Some(i) = EVENT_NAMES.iter().position(|e| *e == n.as_ref()) {
                bits |= 1 << i;
            }
        }
        EventSet(bits)
    }

    pub fn has(self, name: &str) -> bool {
        EVENT_NAMES
            .iter()
            .position(|e| *e == name)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }

    pub fn names(self) -> Vec<&'static str> {
        EVENT_NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

/// An event stream created by POSTing to a session's `sse` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventStream {
    pub id: String,
    pub events: EventSet,
}

/// One message: its event name and its JSON data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Message {
    pub event: &'static str,
    pub data: Value,
}

/// Remembers what a feed last said, and says what changed.
#[derive(Debug, Default)]
pub(crate) struct Diff {
    live: Option<bool>,
    layers: Vec<LayerInfo>,
    /// The `transcode` note the last `layers` event carried.
    note: Option<&'static str>,
    viewers: Option<usize>,
    layer: Option<ViewerLayer>,
}

impl Diff {
    /// Messages for a new stream state (`None`: the worker has no such
    /// stream, which is the same as offline and unwatched);
    /// `over_budget`: the transcoder left the stream without a ladder for
    /// its budget (said only while the stream has one layer).
    pub fn stream(
        &mut self,
        info: Option<&StreamInfo>,
        media_id: &str,
        over_budget: bool,
    ) -> Vec<Message> {
        let mut out = Vec::new();
        let live = info.is_some_and(|i| i.live);
        match (self.live, live) {
            (Some(false) | None, true) => out.push(Message {
                event: "active",
                data: json!({}),
            }),
            (Some(true), false) => out.push(Message {
                event: "inactive",
                data: json!({}),
            }),
            _ => {}
        }
        self.live = Some(live);
        let layers = info.map(|i| i.layers.clone()).unwrap_or_default();
        let note = (over_budget && layers.len() == 1).then_some("over_budget");
        if layers != self.layers || note != self.note {
            out.push(Message {
                event: "layers",
                data: layers_json(&layers, media_id, note),
            });
            self.layers = layers;
            self.note = note;
        }
        let viewers = info.map_or(0, |i| i.viewers);
        if self.viewers != Some(viewers) {
            out.push(Message {
                event: "viewercount",
                data: json!({ "viewercount": viewers }),
            });
            self.viewers = Some(viewers);
        }
        out
    }

    /// A message for a new viewer layer state, if it changed.
    pub fn layer(&mut self, layer: Option<&ViewerLayer>, media_id: &str) -> Option<Message> {
        let layer = layer?;
        if self.layer.as_ref() == Some(layer) {
            return None;
        }
        self.layer = Some(layer.clone());
        Some(Message {
            event: "layer",
            data: layer_json(layer, media_id),
        })
    }
}

/// The `layers` event data (draft-ietf-wish-whep's shape; see the module doc).
pub(crate) fn layers_json(layers: &[LayerInfo], media_id: &str, note: Option<&str>) -> Value {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Active<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        simulcast_idx: usize,
        bitrate: u64,
        width: u32,
        height: u32,
        fps: f64,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Inactive<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        simulcast_idx: usize,
        width: u32,
        height: u32,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Selectable<'a> {
        encoding_id: &'a str,
        simulcast_idx: usize,
        bitrate: u64,
        width: u32,
        height: u32,
        fps: f64,
    }
    let n = layers.len();
    let mut active = Vec::new();
    let mut inactive = Vec::new();
    let mut selectable = Vec::new();
    // `layers` come best first; the draft numbers simulcast encodings from
    // the lowest.
    for (i, l) in layers.iter().enumerate() {
        let simulcast_idx = n - 1 - i;
        let id = l.rid.as_deref();
        let fps = (l.fps * 100.0).round() / 100.0;
        if l.active {
            active.push(Active {
                id,
                simulcast_idx,
                bitrate: l.bitrate_bps,
                width: l.width,
                height: l.height,
                fps,
            });
            if let Some(rid) = id {
                selectable.push(Selectable {
                    encoding_id: rid,
                    simulcast_idx,
                    bitrate: l.bitrate_bps,
                    width: l.width,
                    height: l.height,
                    fps,
                });
            }
        } else {
            inactive.push(Inactive {
                id,
                simulcast_idx,
                width: l.width,
                height: l.height,
            });
        }
    }
    let mut media = json!({ "active": active, "inactive": inactive, "layers": selectable });
    if let Some(note) = note {
        media["transcode"] = json!(note);
    }
    let mut map = Map::new();
    map.insert(media_id.to_string(), media);
    Value::Object(map)
}

/// The `layer` event data, also the body of the layer URL's answers.
pub(crate) fn layer_json(l: &ViewerLayer, media_id: &str) -> Value {
    let reason = match l.reason {
        LayerReason::Starting => "starting",
        LayerReason::SingleLayer => "single-layer",
        LayerReason::Bandwidth => "bandwidth",
        LayerReason::Requested => "requested",
        LayerReason::LayerStopped => "layer-stopped",
        LayerReason::Size => "size",
    };
    let requested = match &l.requested {
        LayerRequest::Auto => None,
        LayerRequest::Rid(r) => Some(r.as_str()),
    };
    json!({
        "mediaId": media_id,
        "current": l.current,
        "target": l.target,
        "reason": reason,
        "estimateBps": l.estimate_bps,
        "requested": requested,
    })
}

/// Everything one `GET` of an event stream follows.
pub(crate) struct Feed {
    pub events: EventSet,
    pub media_id: String,
    pub stream_rx: watch::Receiver<Option<StreamInfo>>,
    pub layer_rx: watch::Receiver<Option<ViewerLayer>>,
    pub stop: watch::Receiver<bool>,
    /// Another node's base URL, once this node drains: the viewer is told
    /// to reconnect to the stream's WHEP endpoint there.
    pub moved: watch::Receiver<Option<String>>,
    /// The stream's name.
    pub stream: String,
    /// This reader's place under the event-stream reader limits, let go
    /// when the feed (the response body) is dropped.
    #[allow(dead_code)] // Held for its Drop.
    pub reader: crate::limits::ReaderGuard,
    /// Whether the event stream (and its session) still exists: a DELETE of
    /// either ends the feed.
    pub still_exists: Box<dyn Fn() -> bool + Send + Sync>,
    /// Whether the transcoder left the stream without a ladder for its
    /// budget.
    pub over_budget: Box<dyn Fn() -> bool + Send + Sync>,
}

impl Feed {
    /// The messages of this feed, starting from `initial` (asked of the
    /// worker after the watches were taken, so nothing falls in between).
    /// The stream ends when the session or the event stream is deleted, or
    /// after `reconnect` when the server shuts down.
    pub fn into_stream(
        self,
        initial: ViewerState,
    ) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        let mut state = FeedState {
            feed: self,
            diff: Diff::default(),
            queue: VecDeque::new(),
            stream_open: true,
            ended: false,
        };
        let over = (state.feed.over_budget)();
        let msgs = state
            .diff
            .stream(initial.stream.as_ref(), &state.feed.media_id, over);
        state.enqueue(msgs);
        let msg = state
            .diff
            .layer(initial.layer.as_ref(), &state.feed.media_id);
        state.enqueue(msg);
        futures_util::stream::unfold(state, |mut s| async move {
            let msg = s.next().await?;
            let event = Event::default().event(msg.event).data(msg.data.to_string());
            Some((Ok(event), s))
        })
    }
}

enum Woke {
    Stop,
    Moved(String),
    ViewerGone,
    Layer(Option<ViewerLayer>),
    Stream(Option<StreamInfo>),
    StreamGone,
}

struct FeedState {
    feed: Feed,
    diff: Diff,
    queue: VecDeque<Message>,
    stream_open: bool,
    ended: bool,
}

impl FeedState {
    fn enqueue(&mut self, msgs: impl IntoIterator<Item = Message>) {
        let events = self.feed.events;
        self.queue
            .extend(msgs.into_iter().filter(|m| events.has(m.event)));
    }

    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.queue.pop_front() {
                return Some(m);
            }
            if self.ended {
                return None;
            }
            self.wait().await;
            if !self.ended && !self.still_exists() {
                self.ended = true;
                self.queue.clear();
            }
        }
    }

    async fn wait(&mut self) {
        let f = &mut self.feed;
        let woke = tokio::select! {
            biased;
            _ = f.stop.wait_for(|s| *s) => Woke::Stop,
            m = f.moved.wait_for(|m| m.is_some()) => match m {
                Ok(url) => Woke::Moved(url.clone().unwrap_or_default()),
                Err(_) => Woke::Stop,
            },
            r = f.layer_rx.changed() => match r {
                Ok(()) => Woke::Layer(f.layer_rx.borrow_and_update().clone()),
                Err(_) => Woke::ViewerGone,
            },
            r = f.stream_rx.changed(), if self.stream_open => match r {
                Ok(()) => Woke::Stream(f.stream_rx.borrow_and_update().clone()),
                Err(_) => Woke::StreamGone,
            },
        };
        match woke {
            Woke::Stop => {
                self.ended = true;
                self.enqueue([Message {
                    event: "reconnect",
                    data: json!({}),
                }]);
            }
            Woke::Moved(base) => {
                self.ended = true;
                let url = format!("{base}/whep/{}", self.feed.stream);
                self.enqueue([Message {
                    event: "reconnect",
                    data: json!({ "url": url }),
                }]);
            }
            // The viewer's peer is closed: the session is over.
            Woke::ViewerGone => self.ended = true,
            Woke::Layer(l) => {
                let msg = self.diff.layer(l.as_ref(), &self.feed.media_id);
                self.enqueue(msg);
            }
            Woke::Stream(info) => {
                let over = (self.feed.over_budget)();
                let msgs = self.diff.stream(info.as_ref(), &self.feed.media_id, over);
                self.enqueue(msgs);
            }
            Woke::StreamGone => self.stream_open = false,
        }
    }

    fn still_exists(&self) -> bool {
        (self.feed.still_exists)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(rid: &str, active: bool, h: u32) -> LayerInfo {
        LayerInfo {
            rid: Some(rid.to_string()),
            active,
            bitrate_bps: u64::from(h) * 1000,
            width: h * 16 / 9,
            height: h,
            fps: 29.999,
        }
    }

    fn info(live: bool, viewers: usize, layers: Vec<LayerInfo>) -> StreamInfo {
        StreamInfo {
            name: "cam".into(),
            live,
            viewers,
            layers,
        }
    }

    fn names(msgs: &[Message]) -> Vec<&'static str> {
        msgs.iter().map(|m| m.event).collect()
    }

    #[test]
    fn event_sets_ignore_unknown_names() {
        let s = EventSet::from_names(&["layers", "vad", "viewercount"]);
        assert_eq!(s.names(), ["layers", "viewercount"]);
        assert!(!s.has("active"));
        assert_eq!(EventSet::all().names(), EVENT_NAMES);
    }

    #[test]
    fn no_initial_inactive_then_transitions() {
        let mut d = Diff::default();
        assert_eq!(
            names(&d.stream(Some(&info(false, 1, vec![])), "0", false)),
            ["viewercount"]
        );
        let layers = vec![layer("h", true, 720), layer("l", true, 180)];
        assert_eq!(
            names(&d.stream(Some(&info(true, 1, layers.clone())), "0", false)),
            ["active", "layers"]
        );
        assert!(
            d.stream(Some(&info(true, 1, layers)), "0", false)
                .is_empty()
        );
        assert_eq!(
            names(&d.stream(Some(&info(false, 2, vec![])), "0", false)),
            ["inactive", "layers", "viewercount"]
        );
    }

    #[test]
    fn layers_follow_the_draft_shape() {
        let v = layers_json(
            &[
                layer("h", false, 720),
                layer("m", true, 360),
                layer("l", true, 180),
            ],
            "1",
            None,
        );
        let m = &v["1"];
        assert_eq!(m["active"][0]["id"], "m");
        assert_eq!(m["active"][0]["simulcastIdx"], 1);
        assert_eq!(m["active"][0]["height"], 360);
        assert_eq!(m["active"][0]["fps"], 30.0);
        assert_eq!(m["active"][1]["simulcastIdx"], 0);
        assert_eq!(m["inactive"][0]["id"], "h");
        assert_eq!(m["inactive"][0]["simulcastIdx"], 2);
        assert_eq!(m["layers"][0]["encodingId"], "m");
        assert_eq!(m["layers"][1]["encodingId"], "l");
        assert_eq!(m["layers"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn a_single_layer_has_no_selectable_encoding() {
        let mut l = layer("x", true, 480);
        l.rid = None;
        let v = layers_json(&[l], "0", None);
        assert!(v["0"]["active"][0].get("id").is_none());
        assert_eq!(v["0"]["layers"], json!([]));
        assert!(v["0"].get("transcode").is_none());
    }

    #[test]
    fn a_single_layer_left_without_a_ladder_for_the_budget_says_so() {
        let mut one = layer("x", true, 720);
        one.rid = None;
        let mut d = Diff::default();
        let first = d.stream(Some(&info(true, 1, vec![one.clone()])), "0", true);
        let layers = first.iter().find(|m| m.event == "layers").expect("layers");
        assert_eq!(layers.data["0"]["transcode"], "over_budget");
        // Said once; and again, without the note, when it no longer holds.
        assert!(
            d.stream(Some(&info(true, 1, vec![one.clone()])), "0", true)
                .is_empty()
        );
        let lifted = d.stream(Some(&info(true, 1, vec![one])), "0", false);
        assert_eq!(names(&lifted), ["layers"]);
        assert!(lifted[0].data["0"].get("transcode").is_none());
        // A stream with simulcast layers needs no ladder: no note.
        let mut d = Diff::default();
        let simulcast = vec![layer("h", true, 720), layer("l", true, 180)];
        let msgs = d.stream(Some(&info(true, 1, simulcast)), "0", true);
        let layers = msgs.iter().find(|m| m.event == "layers").expect("layers");
        assert!(layers.data["0"].get("transcode").is_none());
    }

    #[test]
    fn layer_state_is_sent_on_change_only() {
        let mut d = Diff::default();
        let mut l = ViewerLayer {
            current: Some("m".into()),
            target: Some("h".into()),
            reason: LayerReason::Bandwidth,
            estimate_bps: Some(1_500_000),
            requested: LayerRequest::Auto,
        };
        let m = d.layer(Some(&l), "0").expect("first state");
        assert_eq!(
            m.data,
            json!({"mediaId": "0", "current": "m", "target": "h", "reason": "bandwidth",
                   "estimateBps": 1_500_000, "requested": null})
        );
        assert!(d.layer(Some(&l), "0").is_none());
        l.requested = LayerRequest::Rid("l".into());
        l.reason = LayerReason::Requested;
        let m = d.layer(Some(&l), "0").expect("changed");
        assert_eq!(m.data["requested"], "l");
        assert_eq!(m.data["reason"], "requested");
    }
}
