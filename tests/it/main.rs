//! End-to-end tests of the `lumen` binary's parts over real sockets: the
//! server, the CLI's WHIP/WHEP clients (webrtc-rs, an independent WebRTC
//! stack) and headless Chromium.

mod browser;
mod chrome;
mod e2e;
mod impair;
mod layering;
mod load;
mod simulcast;
mod support;
