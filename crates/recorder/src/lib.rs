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
//! - [`Recorder`] (in `recorder`): the runtime on a node, one task per live
//!   stream reading its sink feed (highest layer plus audio), fragments
//!   journalled in the recordings table as the spool takes them,
//!   finalisation to a progressive MP4 and an HLS playlist when the stream
//!   ends or after a crash, live thumbnails, retention; [`config`]: its
//!   `[recording]` section.

pub mod config;
pub mod depacketize;
pub mod h264;
pub mod hls;
pub mod mux;
pub mod paths;
mod recorder;
pub mod seal;
pub mod spool;
pub mod store;
#[doc(hidden)]
pub mod testing;
pub mod thumbnail;

pub use config::{Policy, RecorderConfig};
pub use recorder::{Recorder, RecorderError};
