//! The encoder of an AV1 rung: rav1e, low-latency mode (no frame
//! reordering), speed preset 10, with the look-ahead cut to its minimum
//! and scene-change keyframes off, so a keyframe falls exactly where the
//! source has one or a viewer asks, like the H.264 rungs'.
//!
//! rav1e still holds a frame or two back before it writes one (its
//! keyframe look-ahead), so a rung frame can come out one or two source
//! frames later; each carries the RTP timestamp of its own source frame
//! (rav1e's `opaque`), never the one that pushed it out.
//!
//! rav1e is built without its `asm` feature unless our `av1-asm` feature
//! asks for it (it needs nasm at build time): plain Rust, about three
//! times slower per frame than with assembly (BENCHMARKS.md).

use std::sync::Arc;
use std::time::Instant;

use lumen_sfu::{MediaPacket, Rid};
use rav1e::prelude::{
    Config, Context, EncoderConfig, EncoderStatus, Frame, FrameParameters, FrameType,
    FrameTypeOverride, InvalidConfig, Opaque, Rational, SceneDetectionSpeed,
};

use str0m::media::{Mid, Pt};

use crate::av1_packetize::Av1Packetizer;
use crate::scale::Picture;

/// rav1e's fastest preset.
pub(crate) const SPEED: u8 = 10;

/// An AV1 encoder of one size, bitrate and frame rate.
pub(crate) struct Av1Encoder {
    ctx: Context<u8>,
    size: (usize, usize),
    fps: f32,
}

/// One temporal unit rav1e wrote.
pub(crate) struct Av1Frame {
    /// OBUs in the low-overhead format (with size fields, a temporal
    /// delimiter first).
    pub data: Vec<u8>,
    /// RTP timestamp of the source frame it encodes.
    pub ts: u32,
    /// A key frame (with a sequence header).
    pub keyframe: bool,
    /// rav1e's reconstruction of the frame: what a decoder shows (the
    /// quality bench measures it; rav1e makes it either way).
    #[cfg_attr(not(test), allow(dead_code))]
    pub rec: Option<Arc<Frame<u8>>>,
}

impl Av1Encoder {
    /// An encoder of `size` pictures at `bitrate_bps` for `fps` frames a
    /// second, on `threads` threads (0: rav1e's global pool).
    pub fn new(
        size: (usize, usize),
        bitrate_bps: u32,
        fps: f32,
        threads: usize,
    ) -> Result<Av1Encoder, InvalidConfig> {
        let mut enc = EncoderConfig::with_speed_preset(SPEED);
        enc.width = size.0;
        enc.height = size.1;
        enc.time_base = Rational::new(1, fps.round().clamp(1.0, 120.0) as u64);
        enc.low_latency = true;
        enc.bitrate = i32::try_from(bitrate_bps.max(10_000)).unwrap_or(i32::MAX);
        // With a bitrate, `quantizer` is the coarsest quantizer rate
        // control may use; rav1e's default (100) is fine enough that a
        // small rung of camera-like content overshoots its bitrate two
        // and a half times. 255: no bound.
        enc.quantizer = 255;
        // rav1e spreads a frame over threads by tiles.
        enc.tiles = threads.max(1);
        // Keyframes only where asked (0: no upper bound).
        enc.set_key_frame_interval(0, 0);
        enc.speed_settings.scene_detection_mode = SceneDetectionSpeed::None;
        // The least look-ahead rav1e takes: one frame.
        enc.speed_settings.rdo_lookahead_frames = 1;
        let ctx = Config::new()
            .with_encoder_config(enc)
            .with_threads(threads)
            .new_context()?;
        Ok(Av1Encoder { ctx, size, fps })
    }

    /// The size and frame rate it was made for.
    pub fn made_for(&self) -> ((usize, usize), f32) {
        (self.size, self.fps)
    }

    /// Ends the stream: the frames rav1e still holds.
    #[cfg(test)]
    pub fn finish(&mut self) -> Result<Vec<Av1Frame>, EncoderStatus> {
        self.ctx.flush();
        let mut out = Vec::new();
        loop {
            match self.ctx.receive_packet() {
                Ok(p) => out.push(Av1Frame {
                    ts: p
                        .opaque
                        .and_then(|o| o.downcast::<u32>().ok())
                        .map_or(0, |b| *b),
                    keyframe: p.frame_type == FrameType::KEY,
                    data: p.data,
                    rec: p.rec,
                }),
                Err(EncoderStatus::Encoded) => {}
                Err(EncoderStatus::LimitReached) => return Ok(out),
                Err(e) => return Err(e),
            }
        }
    }

    /// Encodes one picture (of the encoder's size) taken from the source
    /// frame of RTP timestamp `ts`; returns the temporal units rav1e wrote
    /// (none while it fills its look-ahead, then about one per picture).
    pub fn encode(
        &mut self,
        pic: &Picture,
        keyframe: bool,
        ts: u32,
    ) -> Result<Vec<Av1Frame>, EncoderStatus> {
        if (pic.width, pic.height) != self.size {
            return Err(EncoderStatus::Failure);
        }
        let mut frame = self.ctx.new_frame();
        let cw = pic.width.div_ceil(2);
        frame.planes[0].copy_from_raw_u8(&pic.y, pic.width, 1);
        frame.planes[1].copy_from_raw_u8(&pic.u, cw, 1);
        frame.planes[2].copy_from_raw_u8(&pic.v, cw, 1);
        let params = FrameParameters {
            frame_type_override: if keyframe {
                FrameTypeOverride::Key
            } else {
                FrameTypeOverride::No
            },
            opaque: Some(Opaque::new(ts)),
            ..FrameParameters::default()
        };
        self.ctx.send_frame((frame, params))?;
        let mut out = Vec::new();
        loop {
            match self.ctx.receive_packet() {
                Ok(p) => {
                    let ts = p
                        .opaque
                        .and_then(|o| o.downcast::<u32>().ok())
                        .map_or(ts, |b| *b);
                    out.push(Av1Frame {
                        data: p.data,
                        ts,
                        keyframe: p.frame_type == FrameType::KEY,
                        rec: p.rec,
                    });
                }
                // A frame went into the encoder's state; more may follow.
                Err(EncoderStatus::Encoded) => {}
                Err(EncoderStatus::NeedMoreData) => return Ok(out),
                Err(e) => return Err(e),
            }
        }
    }
}

/// An AV1 rung: its encoder (made on its first picture, made again when
/// the size or the frame rate moves), its packetizer and its RTP stream.
/// It runs on the ladder's thread in tests ([`crate::Ladder`] inline) and
/// on a thread of its own on a node (see `runtime`), so a slow frame never
/// holds up the H.264 rungs or the source.
pub(crate) struct Av1Rung {
    pub rid: Rid,
    ssrc: u32,
    bitrate_bps: u32,
    packetizer: Av1Packetizer,
    encoder: Option<Av1Encoder>,
}

/// A picture for an AV1 rung.
#[derive(Debug, Clone)]
pub(crate) struct Av1Job {
    /// The rung.
    pub rid: Rid,
    /// Scaled to the rung's size.
    pub picture: Picture,
    /// Make it a key frame (the source's is, or a viewer asked).
    pub keyframe: bool,
    /// The source frame's RTP timestamp.
    pub ts: u32,
    /// The source's frame rate.
    pub fps: f32,
    /// The video track and the AV1 payload type of the stream.
    pub mid: Mid,
    pub pt: Pt,
    pub at: Instant,
}

/// What an AV1 rung made of a picture.
#[derive(Debug, Default)]
pub(crate) struct Av1Made {
    pub packets: Vec<MediaPacket>,
    /// Frames written (rav1e writes a frame or two later than it gets it).
    pub frames: u64,
    pub keyframes: u64,
    /// Pictures the encoder failed on (or wrote something unreadable).
    pub errors: u64,
}

impl Av1Rung {
    pub fn new(rid: Rid, ssrc: u32, first_seq: u64, bitrate_bps: u32) -> Av1Rung {
        Av1Rung {
            rid,
            ssrc,
            bitrate_bps,
            packetizer: Av1Packetizer::new(first_seq),
            encoder: None,
        }
    }

    /// Encodes one picture; returns the packets of the frames rav1e wrote.
    pub fn encode(&mut self, job: &Av1Job) -> Av1Made {
        let mut made = Av1Made::default();
        let size = (job.picture.width, job.picture.height);
        // A rate a quarter off is made again, as for the H.264 rungs.
        let stale = |e: &Av1Encoder| {
            let (s, f) = e.made_for();
            s != size || (job.fps - f).abs() > f * 0.25
        };
        if self.encoder.as_ref().is_none_or(stale) {
            // One thread: the rung has its own; rav1e's pool would take
            // the node's other cores from the H.264 rungs and the workers.
            match Av1Encoder::new(size, self.bitrate_bps, job.fps, 1) {
                Ok(e) => self.encoder = Some(e),
                Err(e) => {
                    made.errors += 1;
                    tracing::debug!(rid = %self.rid, error = %e, "transcoder: no AV1 encoder");
                    return made;
                }
            }
        }
        let Some(encoder) = self.encoder.as_mut() else {
            return made;
        };
        let frames = match encoder.encode(&job.picture, job.keyframe, job.ts) {
            Ok(f) => f,
            Err(e) => {
                made.errors += 1;
                tracing::debug!(rid = %self.rid, error = %e, "transcoder: AV1 encode failed");
                // Start again on a key frame.
                self.encoder = None;
                return made;
            }
        };
        for f in frames {
            let Ok(payloads) = self.packetizer.packetize(&f.data) else {
                made.errors += 1;
                continue;
            };
            made.frames += 1;
            made.keyframes += u64::from(f.keyframe);
            made.packets
                .extend(payloads.into_iter().map(|p| MediaPacket {
                    mid: job.mid,
                    rid: Some(self.rid),
                    ssrc: self.ssrc,
                    seq: p.seq,
                    pt: job.pt,
                    timestamp: f.ts,
                    marker: p.marker,
                    payload: Arc::from(p.payload),
                    ext: Default::default(),
                    at: job.at,
                }));
        }
        made
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::av1_packetize::{Av1Packetizer, OBU_SEQUENCE_HEADER, obu_type, obus_for_rtp};

    fn picture(w: usize, h: usize, n: usize) -> Picture {
        let mut p = Picture::new(w, h);
        for (i, y) in p.y.iter_mut().enumerate() {
            let (x, row) = (i % w, i / w);
            *y = ((x + row + n * 5) % 200 + 20) as u8;
        }
        p
    }

    #[test]
    fn frames_come_out_in_order_with_their_own_timestamps_and_keyframes_where_asked() {
        let mut enc = Av1Encoder::new((160, 90), 100_000, 30.0, 1).unwrap();
        let mut frames = Vec::new();
        for i in 0..20usize {
            let ts = 90_000 + 3000 * i as u32;
            frames.extend(
                enc.encode(&picture(160, 90, i), i == 0 || i == 12, ts)
                    .unwrap(),
            );
        }
        // rav1e holds a few back; the rest came out in order.
        assert!(frames.len() >= 15, "{} frames out of 20", frames.len());
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.ts, 90_000 + 3000 * i as u32, "frame {i}");
            assert_eq!(f.keyframe, i == 0 || i == 12, "frame {i}");
            let obus = obus_for_rtp(&f.data).unwrap();
            let seq = obus.iter().any(|o| obu_type(o) == OBU_SEQUENCE_HEADER);
            assert_eq!(
                seq, f.keyframe,
                "a sequence header with each keyframe, frame {i}"
            );
            let rec = f.rec.as_ref().expect("a reconstruction");
            assert_eq!(rec.planes[0].cfg.width, 160);
        }
        // What it made packetizes.
        let mut p = Av1Packetizer::new(0);
        assert!(frames.iter().all(|f| p.packetize(&f.data).is_ok()));
    }

    /// The SFU finds an AV1 rung's key frames and its size in what the
    /// packetizer makes (the `N` bit, the sequence header), and nothing
    /// else starts a key frame.
    #[test]
    fn the_sfu_finds_the_rungs_keyframes_and_size() {
        use lumen_sfu::{VideoCodec, is_keyframe_start, picture_size};
        let mut enc = Av1Encoder::new((320, 180), 200_000, 30.0, 1).unwrap();
        let mut p = Av1Packetizer::new(0);
        let mut packets = Vec::new();
        for i in 0..12usize {
            for f in enc
                .encode(&picture(320, 180, i), i == 0 || i == 6, 3000 * i as u32)
                .unwrap()
            {
                packets.push((f.keyframe, p.packetize(&f.data).unwrap()));
            }
        }
        assert!(packets.len() >= 7, "{} frames out of 12", packets.len());
        assert_eq!(packets.iter().filter(|(key, _)| *key).count(), 2);
        for (key, pkts) in &packets {
            assert_eq!(is_keyframe_start(VideoCodec::Av1, &pkts[0].payload), *key);
            let size = picture_size(VideoCodec::Av1, &pkts[0].payload);
            assert_eq!(size, key.then_some((320, 180)));
            for later in &pkts[1..] {
                assert!(!is_keyframe_start(VideoCodec::Av1, &later.payload));
            }
        }
    }

    #[test]
    fn a_picture_of_another_size_is_refused() {
        let mut enc = Av1Encoder::new((160, 90), 100_000, 30.0, 1).unwrap();
        assert!(enc.encode(&picture(320, 180, 0), true, 0).is_err());
    }
}
