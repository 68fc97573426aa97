//! The node's events as the HTTP side follows them: the WHEP server-sent
//! event feeds (a stream's state merged over the workers, each viewer's
//! layer state), and the forgetting of sessions the node closed.
//!
//! Watch channels rather than a broadcast queue: a feed only ever needs the
//! latest state, so a burst of updates (a hundred viewers joining) costs each
//! feed one wake-up, and a slow reader can never lag behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lumen_node::{NodeEvent, SessionRef, merge_streams};
use lumen_sfu::{Role, StreamInfo, ViewerLayer};
use tokio::sync::{mpsc, watch};

use crate::sessions::Sessions;
use crate::sync::lock;

#[derive(Default)]
pub(crate) struct Hub {
    streams: Mutex<HashMap<String, StreamFeed>>,
    viewers: Mutex<HashMap<SessionRef, ViewerFeed>>,
}

/// The latest layer state of one viewer, for its event feed.
type ViewerFeed = watch::Sender<Option<ViewerLayer>>;

/// A stream went live or stopped being live, as merged over the workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Liveness {
    pub stream: String,
    pub live: bool,
}

/// One stream's state as each worker that has it last said, and the
/// merged state its followers see.
struct StreamFeed {
    tx: watch::Sender<Option<StreamInfo>>,
    parts: Vec<(usize, StreamInfo)>,
}

impl StreamFeed {
    fn new() -> Self {
        StreamFeed {
            tx: watch::Sender::new(None),
            parts: Vec::new(),
        }
    }
}

/// What else follows the node's events besides the hub (the webhooks),
/// called in the follower's task: it must not wait.
pub(crate) trait Observer {
    /// A node event, before the hub applies it (so the session table still
    /// has a closed session).
    fn event(&mut self, sessions: &Sessions, e: &NodeEvent);
    /// A stream went live or stopped being live.
    fn liveness(&mut self, change: Liveness);
}

impl Observer for () {
    fn event(&mut self, _: &Sessions, _: &NodeEvent) {}
    fn liveness(&mut self, _: Liveness) {}
}

/// Applies the node's events to the sessions and the hub until the node's
/// event stream ends (at shutdown).
#[cfg(test)]
pub(crate) async fn follow(
    events: mpsc::UnboundedReceiver<NodeEvent>,
    sessions: Arc<Sessions>,
    hub: Arc<Hub>,
) {
    follow_observed(events, sessions, hub, ()).await
}

/// [`follow`], and `observer` sees every event and liveness change.
pub(crate) async fn follow_observed(
    mut events: mpsc::UnboundedReceiver<NodeEvent>,
    sessions: Arc<Sessions>,
    hub: Arc<Hub>,
    mut observer: impl Observer,
) {
    while let Some(e) = events.recv().await {
        observer.event(&sessions, &e);
        if let Some(change) = hub.apply(&sessions, e) {
            observer.liveness(change);
        }
    }
}

impl Hub {
    /// One node event; a change of a stream's liveness comes back (for
    /// the webhooks).
    pub fn apply(&self, sessions: &Sessions, e: NodeEvent) -> Option<Liveness> {
        match e {
            NodeEvent::StreamUpdated { worker, info } => {
                return self.stream_updated(worker, info);
            }
            NodeEvent::ViewerLayerChanged { session, layer, .. } => {
                self.viewer_layer(session, layer)
            }
            NodeEvent::Closed { session, role, .. } => {
                sessions.closed(session);
                if role == Role::Viewer {
                    lock(&self.viewers).remove(&session);
                }
            }
            // Connected, and data channels (chat attaches here later).
            _ => {}
        }
        None
    }

    /// Follows a stream's state; the current value counts as seen.
    pub fn watch_stream(&self, name: &str) -> watch::Receiver<Option<StreamInfo>> {
        lock(&self.streams)
            .entry(name.to_string())
            .or_insert_with(StreamFeed::new)
            .tx
            .subscribe()
    }

    /// Follows a viewer's layer state; `None` once its session is closed.
    /// The receiver's `changed()` fails when the session closes.
    pub fn watch_viewer(
        &self,
        session: SessionRef,
    ) -> Option<watch::Receiver<Option<ViewerLayer>>> {
        lock(&self.viewers)
            .get(&session)
            .map(watch::Sender::subscribe)
    }

    /// A viewer session was created: its feed exists from now on.
    pub fn viewer_added(&self, session: SessionRef) {
        lock(&self.viewers)
            .entry(session)
            .or_insert_with(|| watch::Sender::new(None));
    }

    /// A viewer's new layer state (from the node, or at once after a
    /// request, before media flows and the SFU has a layer to report).
    pub fn viewer_layer(&self, session: SessionRef, layer: ViewerLayer) {
        if let Some(tx) = lock(&self.viewers).get(&session) {
            tx.send_replace(Some(layer));
        }
    }

    /// Forgets a viewer's feed (its session is gone).
    pub fn viewer_closed(&self, session: SessionRef) {
        lock(&self.viewers).remove(&session);
    }

    fn stream_updated(&self, worker: usize, info: StreamInfo) -> Option<Liveness> {
        let mut map = lock(&self.streams);
        let name = info.name.clone();
        let feed = map.entry(name.clone()).or_insert_with(StreamFeed::new);
        let was_live = feed.tx.borrow().as_ref().is_some_and(|s| s.live);
        feed.parts.retain(|(w, _)| *w != worker);
        if info.live || info.viewers > 0 {
            feed.parts.push((worker, info.clone()));
        }
        let merged = merge_streams(feed.parts.iter().map(|(_, i)| i.clone()))
            .pop()
            .unwrap_or(StreamInfo {
                live: false,
                viewers: 0,
                layers: Vec::new(),
                ..info
            });
        let change = (merged.live != was_live).then(|| Liveness {
            stream: name.clone(),
            live: merged.live,
        });
        // A stream nobody publishes, watches or follows is forgotten, so the
        // map does not grow with every name ever used (it was not live: it
        // has no parts).
        if feed.parts.is_empty() && feed.tx.receiver_count() == 0 {
            map.remove(&name);
        } else {
            feed.tx.send_replace(Some(merged));
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumen_sfu::{CloseReason, LayerReason, LayerRequest, PeerId};

    fn info(live: bool, viewers: usize) -> StreamInfo {
        StreamInfo {
            name: "cam".into(),
            live,
            viewers,
            layers: Vec::new(),
        }
    }

    #[test]
    fn a_stream_merges_the_workers_parts() {
        let hub = Hub::default();
        let sessions = Sessions::default();
        let rx = hub.watch_stream("cam");
        hub.apply(
            &sessions,
            NodeEvent::StreamUpdated {
                worker: 0,
                info: info(true, 2),
            },
        );
        hub.apply(
            &sessions,
            NodeEvent::StreamUpdated {
                worker: 1,
                info: info(false, 3),
            },
        );
        let s = rx.borrow().clone().expect("state");
        assert!(s.live);
        assert_eq!(s.viewers, 5);
        hub.apply(
            &sessions,
            NodeEvent::StreamUpdated {
                worker: 0,
                info: info(false, 0),
            },
        );
        let s = rx.borrow().clone().expect("state");
        assert!(!s.live);
        assert_eq!(s.viewers, 3);
    }

    #[test]
    fn liveness_changes_once_over_the_workers() {
        let hub = Hub::default();
        let sessions = Sessions::default();
        let apply = |worker, live, viewers| {
            hub.apply(
                &sessions,
                NodeEvent::StreamUpdated {
                    worker,
                    info: info(live, viewers),
                },
            )
            .map(|l| l.live)
        };
        // Viewers on a mirror before the publisher connects: not live.
        assert_eq!(apply(1, false, 2), None);
        assert_eq!(apply(0, true, 0), Some(true));
        // Updates while live, from either worker, change nothing.
        assert_eq!(apply(0, true, 1), None);
        assert_eq!(apply(1, true, 3), None);
        // Live until no worker says so.
        assert_eq!(apply(0, false, 0), None);
        assert_eq!(apply(1, false, 0), Some(false));
        // Forgotten (nobody follows it), then live again.
        assert!(lock(&hub.streams).is_empty());
        assert_eq!(apply(0, true, 0), Some(true));
        assert_eq!(apply(0, false, 0), Some(false));
    }

    #[test]
    fn an_unfollowed_dead_stream_is_forgotten() {
        let hub = Hub::default();
        let sessions = Sessions::default();
        hub.apply(
            &sessions,
            NodeEvent::StreamUpdated {
                worker: 0,
                info: info(true, 0),
            },
        );
        hub.apply(
            &sessions,
            NodeEvent::StreamUpdated {
                worker: 0,
                info: info(false, 0),
            },
        );
        assert!(lock(&hub.streams).is_empty());
    }

    #[test]
    fn a_viewer_feed_follows_its_layer_and_ends_with_its_session() {
        let hub = Hub::default();
        let sessions = Sessions::default();
        let s = SessionRef {
            worker: 1,
            peer: PeerId(4),
        };
        hub.viewer_added(s);
        let mut rx = hub.watch_viewer(s).expect("feed");
        let layer = ViewerLayer {
            current: Some("h".into()),
            target: Some("h".into()),
            reason: LayerReason::Bandwidth,
            estimate_bps: None,
            requested: LayerRequest::Auto,
        };
        hub.apply(
            &sessions,
            NodeEvent::ViewerLayerChanged {
                session: s,
                stream: "cam".into(),
                layer: layer.clone(),
            },
        );
        assert_eq!(rx.borrow_and_update().clone(), Some(layer));
        hub.apply(
            &sessions,
            NodeEvent::Closed {
                session: s,
                role: Role::Viewer,
                stream: "cam".into(),
                reason: CloseReason::Requested,
            },
        );
        assert!(hub.watch_viewer(s).is_none());
        assert!(rx.has_changed().is_err(), "the feed's sender is gone");
    }
}
