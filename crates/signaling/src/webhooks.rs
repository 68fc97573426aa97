//! The node's events as webhooks: a stream going live or not live (merged
//! over the workers by the hub) becomes `stream.started` / `stream.ended`,
//! and a viewer connecting or leaving `viewer.joined` / `viewer.left`
//! when some endpoint subscribed to those. In a cluster the nodes share
//! the store, so only the stream's origin says it started or ended: a
//! node whose publisher is a relay link (a session the node made for its
//! parent, never in the HTTP session table) says nothing of its liveness.
//!
//! The event follower (`hub::follow_observed`) never waits for the
//! database: the [`Tap`] hands events to a bounded queue that one task
//! empties into `Webhooks::emit` (an insert; the deliverer sends later).
//! When the queue is full (the database is stuck) events are dropped and
//! counted rather than slowing the follower, which also keeps the session
//! table current.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lumen_auth::Auth;
use lumen_auth::webhooks::EventType;
use lumen_node::{NodeEvent, SessionRef};
use lumen_sfu::Role;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::hub::{Liveness, Observer};
use crate::sessions::Sessions;

/// Events waiting for the database, at most.
const QUEUE: usize = 1024;

/// Turns node events into queued webhook events. Owned by the event
/// follower: no lock.
pub(crate) struct Tap {
    auth: Auth,
    tx: mpsc::Sender<(EventType, serde_json::Value)>,
    dropped: Arc<AtomicU64>,
    /// Connected viewers: their stream and session URL id, for
    /// `viewer.left` (the HTTP session may be gone by the time the node
    /// says the viewer left).
    viewers: HashMap<SessionRef, (String, Option<String>)>,
    /// Streams this node carries from a parent node (their publisher here
    /// is a relay link): their liveness is the origin's to announce.
    relayed: HashSet<String>,
}

/// A tap, and the task that emits what it queues; the task ends once the
/// tap is dropped and the queue is empty.
pub(crate) fn tap(auth: Auth) -> (Tap, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(emit_all(auth.clone(), rx));
    let tap = Tap {
        auth,
        tx,
        dropped: Arc::default(),
        viewers: HashMap::new(),
        relayed: HashSet::new(),
    };
    (tap, task)
}

impl Observer for Tap {
    /// Viewer events: O(1), and no lookup unless an endpoint wants them.
    fn event(&mut self, sessions: &Sessions, e: &NodeEvent) {
        match e {
            NodeEvent::Connected {
                session,
                role: Role::Publisher,
                stream,
            } if sessions.id_of(*session).is_none() => {
                self.relayed.insert(stream.clone());
            }
            NodeEvent::Connected {
                session,
                role: Role::Viewer,
                stream,
            } => {
                let wanted =
                    self.wants(EventType::ViewerJoined) || self.wants(EventType::ViewerLeft);
                let id = wanted.then(|| sessions.id_of(*session)).flatten();
                if self.wants(EventType::ViewerJoined) {
                    self.queue(
                        EventType::ViewerJoined,
                        json!({ "stream": stream, "session": id }),
                    );
                }
                self.viewers.insert(*session, (stream.clone(), id));
            }
            NodeEvent::Closed {
                session,
                role: Role::Viewer,
                ..
            } => {
                // Only viewers that joined leave.
                if let Some((stream, id)) = self.viewers.remove(session)
                    && self.wants(EventType::ViewerLeft)
                {
                    self.queue(
                        EventType::ViewerLeft,
                        json!({ "stream": stream, "session": id }),
                    );
                }
            }
            _ => {}
        }
    }

    fn liveness(&mut self, change: Liveness) {
        if self.relayed.contains(&change.stream) {
            if !change.live {
                self.relayed.remove(&change.stream);
            }
            return;
        }
        let event = if change.live {
            EventType::StreamStarted
        } else {
            EventType::StreamEnded
        };
        self.queue(event, json!({ "stream": change.stream }));
    }
}

impl Tap {
    fn wants(&self, event: EventType) -> bool {
        self.auth.webhooks().wants(event)
    }

    fn queue(&self, event: EventType, data: serde_json::Value) {
        if self.tx.try_send((event, data)).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_multiple_of(1000) {
                tracing::warn!(
                    event = %event,
                    dropped = n,
                    "webhook event dropped: the queue to the database is full"
                );
            }
        }
    }
}

async fn emit_all(auth: Auth, mut rx: mpsc::Receiver<(EventType, serde_json::Value)>) {
    while let Some((event, data)) = rx.recv().await {
        if let Err(e) = auth.webhooks().emit(event, data).await {
            tracing::warn!(event = %event, error = %e, "webhook event not queued");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;
    use lumen_sfu::{CloseReason, PeerId, StreamInfo};

    fn live(worker: usize, live: bool) -> NodeEvent {
        NodeEvent::StreamUpdated {
            worker,
            info: StreamInfo {
                name: "cam".into(),
                live,
                viewers: 0,
                layers: Vec::new(),
            },
        }
    }

    fn viewer(peer: u64, connected: bool) -> NodeEvent {
        let session = SessionRef {
            worker: 0,
            peer: PeerId(peer),
        };
        if connected {
            NodeEvent::Connected {
                session,
                role: Role::Viewer,
                stream: "cam".into(),
            }
        } else {
            NodeEvent::Closed {
                session,
                role: Role::Viewer,
                stream: "cam".into(),
                reason: CloseReason::Requested,
            }
        }
    }

    /// What the tap queues for `events`, with `subscribed` registered.
    async fn queued(subscribed: &[EventType], events: Vec<NodeEvent>) -> Vec<String> {
        let dir = tempfile::tempdir().expect("dir");
        let auth = Auth::open(lumen_auth::AuthConfig::new(dir.path()))
            .await
            .expect("store");
        auth.webhooks()
            .register("http://127.0.0.1:9/", subscribed, None, "")
            .await
            .expect("endpoint");
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let mut tap = Tap {
            auth,
            tx,
            dropped: Arc::default(),
            viewers: HashMap::new(),
            relayed: HashSet::new(),
        };
        let (hub, sessions) = (Hub::default(), Sessions::default());
        for e in events {
            tap.event(&sessions, &e);
            if let Some(change) = hub.apply(&sessions, e) {
                tap.liveness(change);
            }
        }
        drop(tap);
        let mut out = Vec::new();
        while let Some((event, data)) = rx.recv().await {
            out.push(format!("{event} {}", data["stream"].as_str().unwrap_or("")));
        }
        out
    }

    #[tokio::test]
    async fn liveness_becomes_started_and_ended() {
        let got = queued(
            &[EventType::StreamStarted],
            vec![
                live(0, true),
                live(1, true),
                viewer(1, true),
                live(0, false),
                live(1, false),
            ],
        )
        .await;
        assert_eq!(got, ["stream.started cam", "stream.ended cam"]);
    }

    /// A node carrying the stream from a parent (its publisher is a relay
    /// link, unknown to the HTTP session table) leaves the stream's
    /// liveness to the origin: the shared store gets it once.
    #[tokio::test]
    async fn a_relayed_stream_is_announced_by_its_origin_only() {
        let link = NodeEvent::Connected {
            session: SessionRef {
                worker: 0,
                peer: PeerId(7),
            },
            role: Role::Publisher,
            stream: "cam".into(),
        };
        let got = queued(
            &[EventType::StreamStarted, EventType::StreamEnded],
            vec![link, live(0, true), viewer(1, true), live(0, false)],
        )
        .await;
        assert!(got.is_empty(), "{got:?}");
    }

    #[tokio::test]
    async fn viewer_events_only_when_subscribed() {
        let events = || vec![viewer(1, false), viewer(2, true), viewer(2, false)];
        // Nobody wants them: nothing queued.
        assert!(
            queued(&[EventType::StreamStarted], events())
                .await
                .iter()
                .all(|e| !e.starts_with("viewer"))
        );
        // A close without a connect (a viewer that never joined) is no leave.
        let got = queued(&[EventType::ViewerJoined, EventType::ViewerLeft], events()).await;
        assert_eq!(got, ["viewer.joined cam", "viewer.left cam"]);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let dir = tempfile::tempdir().expect("dir");
        let auth = Auth::open(lumen_auth::AuthConfig::new(dir.path()))
            .await
            .expect("store");
        let (tx, _rx) = mpsc::channel(1);
        let tap = Tap {
            auth,
            tx,
            dropped: Arc::default(),
            viewers: HashMap::new(),
            relayed: HashSet::new(),
        };
        for _ in 0..3 {
            tap.queue(EventType::StreamStarted, json!({}));
        }
        assert_eq!(tap.dropped.load(Ordering::Relaxed), 2);
    }
}
