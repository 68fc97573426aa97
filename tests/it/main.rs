//! End-to-end tests of the `lumen` binary's parts over real sockets: the
//! server, the CLI's WHIP/WHEP clients (webrtc-rs, an independent WebRTC
//! stack) and headless Chromium.

mod accounts_browser;
mod browser;
mod chat_browser;
mod chat_cli;
mod chrome;
mod cluster;
mod cluster_chat;
mod cluster_nodes;
mod deploy;
mod e2e;
mod https_browser;
mod impair;
mod layering;
mod load;
mod load_chat;
mod recording;
mod revocation;
mod simulcast;
mod support;
mod transcode;
