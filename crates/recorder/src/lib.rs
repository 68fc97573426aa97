//! lumen's recorder: a sink of a stream that depacketizes its highest layer
//! and its audio, muxes them to fragmented MP4 (CMAF) and writes the
//! fragments to object storage while the stream is live.
//!
//! - [`depacketize`]: RTP payloads (H.264, VP8, Opus) to frames, waiting
//!   for a keyframe after loss; [`h264`]: SPS parsing.
//! - [`mux`]: frames to an init segment and fragments (≤ 2 s, cut at
//!   keyframes), and the playable MP4 made from their indexes; [`hls`]:
//!   the playlist of the fragments; [`thumbnail`]: a keyframe as JPEG.
//! - [`store`]: the object store (a local directory or S3), [`seal`]:
//!   AES-256-GCM sealing at rest, [`spool`]: local spooling and ordered
//!   retries while the store is unreachable; [`paths`]: object names.

pub mod depacketize;
pub mod h264;
pub mod hls;
pub mod mux;
pub mod paths;
pub mod seal;
pub mod spool;
pub mod store;
#[doc(hidden)]
pub mod testing;
pub mod thumbnail;
