//! lumen's recorder: a sink of a stream that depacketizes its highest layer
//! and its audio, muxes them to fragmented MP4 (CMAF) and writes the
//! fragments to object storage while the stream is live.

pub mod depacketize;
pub mod h264;
pub mod hls;
pub mod mux;
pub mod thumbnail;
