//! lumen's test and measurement tools, apart from the server so that it does
//! not link a second WebRTC stack, an H.264 codec or an HTTP client:
//!
//! - [`client`]: `lumen publish` and `lumen watch`, WHIP and WHEP clients on
//!   webrtc-rs with an openh264 test pattern;
//! - [`load`]: `lumen load`, many str0m WHEP viewers driven from one thread;
//! - [`bench`](mod@bench): `lumen bench`, the machine's forwarding ceiling and the
//!   simulcast switch time;
//! - [`impair`]: a UDP proxy that narrows a client's downlink.
//!
//! The `lumen` binary exposes them as subcommands; the end-to-end tests and
//! `benches/fanout.rs` call them directly.
#![deny(missing_docs)]

pub mod bench;
pub mod client;
pub mod impair;
pub mod load;
mod whip;
