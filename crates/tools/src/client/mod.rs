//! WHIP and WHEP command-line clients on an independent WebRTC stack
//! (webrtc-rs), for end-to-end tests, load scripts and humans.
//!
//! [`Publisher`] sends an openh264-encoded test pattern whose every access
//! unit carries its frame number and send time in an SEI; [`Watcher`] receives,
//! reassembles and decodes, and checks the frame numbers for gaps and order.
//! Both speak non-trickle WHIP/WHEP (RFC 9725): ICE gathering completes before
//! the offer is POSTed, and the session ends with a DELETE on `Location`.
//!
//! The parts, by job:
//! - both clients: `peer` builds the webrtc-rs peer connection,
//!   `session` negotiates and ends it over HTTP (through `crate::whip`),
//!   `cli` runs them on a terminal;
//! - publishing: `publish` (the session and its counters), `tracks`
//!   (the offer's tracks and the answer's parameters), `send` (encoder
//!   threads and writers), `pattern` (the picture and its encoder);
//! - watching: `watch` (the session), `receive` (track tasks and the
//!   decoder), `stats` (the counters), `depacketize` (H.264 from RTP);
//! - `sei`: the timing SEI both sides agree on;
//! - `chat`: the optional `chat` data channel of either session
//!   (docs/chat.md).

mod chat;
mod cli;
mod depacketize;
mod pattern;
mod peer;
mod publish;
mod receive;
mod sei;
mod send;
mod session;
mod stats;
mod tracks;
mod watch;

pub use crate::whip::LAYER_LINK_REL;
pub use chat::{CHAT_LABEL, ChatFrames, ChatSender, send_frame as chat_send_frame};
pub use cli::{run_publish_cli, run_watch_cli};
pub use pattern::{EncodedFrame, PatternEncoder, draw_pattern};
pub use publish::{LayerStats, PublishOptions, Publisher, SIMULCAST_LAYERS, SimulcastLayer};
pub use sei::{
    FrameTiming, LUMEN_SEI_UUID, find_timing_in_access_unit, parse_timing_sei, split_annex_b,
};
pub use stats::WatchStats;
pub use watch::{WatchOptions, Watcher};

/// The wall clock in µs since the Unix epoch (what timing SEIs carry).
pub(crate) fn micros_since_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
