//! The recorder's part of the node's events: a publisher that connects
//! starts a broadcast (followed for its live thumbnail, and recorded under
//! the `always` policy), one that goes ends it. The recorder's calls queue
//! a command for the stream's task and return at once, so the event
//! follower never waits.

use lumen_node::NodeEvent;
use lumen_recorder::Recorder;
use lumen_sfu::Role;

use crate::hub::{Liveness, Observer};
use crate::sessions::Sessions;

/// The follower's side.
pub(crate) struct Tap {
    recorder: Recorder,
}

impl Tap {
    pub(crate) fn new(recorder: Recorder) -> Tap {
        Tap { recorder }
    }
}

impl Observer for Tap {
    fn event(&mut self, sessions: &Sessions, e: &NodeEvent) {
        match e {
            NodeEvent::Connected {
                session,
                role: Role::Publisher,
                stream,
            } => {
                if let Some(broadcast) = sessions.id_of(*session) {
                    self.recorder.publisher_live(stream, &broadcast);
                }
            }
            NodeEvent::Closed {
                role: Role::Publisher,
                stream,
                ..
            } => self.recorder.publisher_gone(stream),
            _ => {}
        }
    }

    fn liveness(&mut self, _: Liveness) {}
}
