//! The transcoder's part of the node's events: a publisher that connects
//! gets a ladder if its stream is a single H.264 layer (the transcoder
//! checks that from the stream's description), one that leaves stops it;
//! the count of each stream's connected viewers lets a ladder nobody
//! watches pause. The calls return at once, so the event follower never
//! waits.

use std::collections::{HashMap, HashSet};

use lumen_node::{NodeEvent, SessionRef};
use lumen_sfu::Role;
use lumen_transcoder::Transcoder;

use crate::hub::{Liveness, Observer};
use crate::sessions::Sessions;

/// The follower's side.
pub(crate) struct Tap {
    transcoder: Transcoder,
    /// Connected viewers, per stream (a viewer that never connected is
    /// never counted, so its close is not either).
    viewers: HashMap<String, HashSet<SessionRef>>,
}

impl Tap {
    pub(crate) fn new(transcoder: Transcoder) -> Tap {
        Tap {
            transcoder,
            viewers: HashMap::new(),
        }
    }
}

impl Observer for Tap {
    fn event(&mut self, _: &Sessions, e: &NodeEvent) {
        match e {
            NodeEvent::Connected {
                role: Role::Publisher,
                stream,
                ..
            } => self.transcoder.publisher_live(stream),
            NodeEvent::Closed {
                role: Role::Publisher,
                stream,
                ..
            } => self.transcoder.publisher_gone(stream),
            NodeEvent::Connected {
                session,
                role: Role::Viewer,
                stream,
            } => {
                let v = self.viewers.entry(stream.clone()).or_default();
                if v.insert(*session) {
                    self.transcoder.viewers(stream, v.len());
                }
            }
            NodeEvent::Closed {
                session,
                role: Role::Viewer,
                stream,
                ..
            } => {
                if let Some(v) = self.viewers.get_mut(stream)
                    && v.remove(session)
                {
                    self.transcoder.viewers(stream, v.len());
                    if v.is_empty() {
                        self.viewers.remove(stream);
                    }
                }
            }
            _ => {}
        }
    }

    fn liveness(&mut self, _: Liveness) {}
}
