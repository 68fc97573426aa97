//! lumen's transcoder: an adaptive-bitrate ladder for publishers that send
//! one H.264 layer (OBS, GStreamer, ffmpeg, most WHIP encoders).
//!
//! The transcoder is a sink of the stream (`NodeHandle::attach_sink`): it
//! starts from the cached group of pictures, depacketizes the publisher's
//! single layer, decodes it (openh264), scales each picture down
//! ([`scale`]), encodes the rungs (openh264; by default 640×360 at
//! 800 kbit/s as `m` and 320×180 at 200 kbit/s as `l`, never larger than
//! the source), packetizes them ([`packetize`], RFC 6184) and hands them
//! back to the stream's Router (`SinkFeed::try_inject`), which forwards
//! them exactly like a simulcast publisher's layers: per-viewer adaptation,
//! layer pinning, the WHEP `layers` event and mirrors on other workers work
//! unchanged. The source layer never waits for a rung: the Router forwards
//! it before the transcoder sees it, and the transcoder's feed drops
//! batches rather than hold the worker.
//!
//! - [`Ladder`] (in `ladder`): the sans-IO core, packets of the source in,
//!   packets of the rungs out. A rung's frame carries the source frame's
//!   RTP timestamp and SEI messages (lumen's timing SEI: frame number and
//!   capture time), and is an IDR when the source's is or when a viewer of
//!   the rung asked for one (the publisher is not asked).
//! - [`Transcoder`] (in `runtime`): one thread per transcoded stream,
//!   started when its publisher connects, at most
//!   [`TranscodeConfig::max_streams`] at a time; [`config`]: the
//!   `[transcode]` section.
//!
//! Bad input (a stream the decoder cannot decode, corrupt NAL units) keeps
//! the source forwarding as it is: the ladder counts it
//! ([`LadderStats::decode_errors`]), logs it once and never panics.
//!
//! A rung may be AV1 instead ([`RungCodec::Av1`], `codec = "av1"`):
//! encoded with rav1e (low-latency, speed 10, `asm` off unless the
//! `av1-asm` feature asks for it, which needs nasm; in `av1`) and
//! packetized per the AV1 RTP payload format ([`av1_packetize`]), with the
//! AV1 payload type the SFU lists for layers a sink makes
//! (`lumen_sfu::SfuConfig::sink_av1`): only viewers whose offer has AV1 get
//! it. Its frames keep the source's timestamps, not its SEI (AV1 has no
//! H.264 SEI; lumen's timing SEI is not carried over), come a few frames
//! later than an H.264 rung's (rav1e's look-ahead), and are encoded on a
//! thread of their own. AV1 rungs are off by default: see BENCHMARKS.md
//! for why.
//!
//! The depacketizer is `lumen_recorder::depacketize` (reorder window,
//! loss, waiting for a keyframe). It belongs in a small media crate that
//! both use; it stays in the recorder until that crate exists.

#![deny(missing_docs)]

mod av1;
pub mod av1_packetize;
pub mod config;
mod ladder;
pub mod packetize;
mod runtime;
pub mod scale;

pub use config::{RungCodec, RungConfig, TranscodeConfig};
pub use ladder::{Ladder, LadderStats, Transcodable};
pub use runtime::{Transcoder, TranscoderStats};
