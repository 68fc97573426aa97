//! lumen's chat: a sans-IO chat room, one per stream.
//!
//! Every WHIP and WHEP session carries a data channel `chat`. The node hands
//! each message it receives on one to the stream's [`Room`] with
//! [`Room::handle`] and sends the returned [`Output`]s; the room never reads
//! the clock and never touches a socket or a database, like `lumen-sfu`.
//! Time is an input: `now` is milliseconds since the Unix epoch, which also
//! becomes each message's `ts`.
//!
//! The origin node's room is the single authority for order and moderation.
//! A relay link carries client frames up to it and its server frames down,
//! unchanged, inside the envelopes of [`relay`] (which also holds the
//! origin's mapping of remote members and the proxy every other node
//! runs), so the wire format in [`protocol`] is the only contract with
//! clients.
//! docs/chat.md describes every frame and error code.
//!
//! ```
//! use lumen_chat::{MemberInfo, Output, Role, Room, RoomConfig, Target};
//!
//! let mut room = Room::new(RoomConfig::default());
//! let now = 1_700_000_000_000; // ms since the Unix epoch, from the caller
//! let (ann, outputs) = room.join(MemberInfo::registered("u1", "Ann", Role::Viewer), now);
//! assert_eq!(outputs.len(), 2); // history, then state
//! for output in room.handle_text(ann, r#"{"type":"send","text":"hello"}"#, now) {
//!     match output {
//!         Output::Send { to: Target::All, frame } => { /* to every member's channel */ }
//!         Output::Send { to: Target::One(member), frame } => { /* to one channel */ }
//!         Output::Close { member, .. } => { /* close its channel */ }
//!     }
//! }
//! // Off the hot path: batch these into the database.
//! let _messages = room.take_persist();
//! let _audit = room.take_audit();
//! let _reports = room.take_reports();
//! ```
#![deny(missing_docs)]

mod filter;
pub mod protocol;
pub mod relay;
mod room;

pub use filter::{FilterMode, WordFilter};
pub use protocol::{ChatMessage, ClientFrame, ErrorCode, FrameError, Role, ServerFrame};
pub use room::{
    AuditAction, AuditEntry, CloseReason, Limit, MemberId, MemberInfo, Output, Report, Room,
    RoomConfig, Target,
};
