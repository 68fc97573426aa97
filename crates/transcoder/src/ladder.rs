//! `Ladder`: the sans-IO core of one transcoded stream. Packets of the
//! publisher's single H.264 layer go in ([`Ladder::push`]); packets of the
//! rungs come out, ready for the Router, each rung with its own rid, SSRC
//! and sequence numbers and the source's timestamps; an H.264 rung with the
//! source's payload type, an AV1 rung with the AV1 payload type the
//! stream's description lists for layers a sink makes.
//!
//! No clock and no I/O: a test feeds it packets and reads what it makes.
//! AV1 rungs are encoded inline too, unless the runtime took them
//! ([`Ladder::detach_av1`]) to run on a thread of their own: then their
//! pictures come out as jobs ([`Pushed::av1_jobs`]).

use std::sync::Arc;

use lumen_recorder::depacketize::{Codec as DepacketizerCodec, Depacketizer};
use lumen_sfu::{MediaPacket, Rid, TrackDescription};
use openh264::OpenH264API;
use openh264::decoder::Decoder;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, Profile, RateControlMode, UsageType,
};
use openh264::formats::YUVSource;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt};

use crate::av1::{Av1Job, Av1Rung};
use crate::config::{RungCodec, RungConfig};
use crate::packetize::{Packetizer, annex_b, nal_type, split_annex_b, split_avcc};
use crate::scale::{Picture, Planes, fit, scale_i420};

/// NAL unit types the ladder looks at.
const NAL_SLICE: u8 = 1;
const NAL_IDR: u8 = 5;
const NAL_SEI: u8 = 6;

/// Whether a stream's tracks can be transcoded, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transcodable {
    /// One H.264 video layer: the ladder follows it.
    Yes,
    /// No video track (or the stream is offline).
    NoVideo,
    /// The publisher sends simulcast layers already.
    Simulcast,
    /// The video is not H.264.
    NotH264,
}

/// Counters of one ladder.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LadderStats {
    /// Source frames completed by the depacketizer.
    pub frames_in: u64,
    /// Source frames decoded to a picture.
    pub frames_decoded: u64,
    /// Source frames the decoder refused (corrupt or unsupported
    /// bitstream), or whose NAL units were malformed.
    pub decode_errors: u64,
    /// Source frames the depacketizer dropped as malformed (payloads
    /// that are not H.264 as RFC 6184 packs it, parameter sets that do
    /// not parse).
    pub malformed: u64,
    /// Rung frames encoded (one per rung and decoded frame).
    pub frames_out: u64,
    /// Rung frames encoded as IDR.
    pub keyframes_out: u64,
    /// Rung frames the encoder failed on.
    pub encode_errors: u64,
    /// RTP packets made.
    pub packets_out: u64,
}

/// What one [`Ladder::push`] made.
#[derive(Debug, Default)]
#[must_use]
pub struct Pushed {
    /// The rungs' packets, for the Router.
    pub packets: Vec<MediaPacket>,
    /// The source lost data and the ladder waits for its next keyframe:
    /// ask the publisher for one (through the Router's throttle).
    pub keyframe_needed: bool,
    /// Pictures for the AV1 rungs the runtime runs ([`Ladder::detach_av1`]).
    pub(crate) av1_jobs: Vec<Av1Job>,
}

/// The ladder of one stream.
pub struct Ladder {
    rungs: Vec<Rung>,
    source: Option<Source>,
    depacketizer: Depacketizer,
    /// SSRC of the source packets the depacketizer follows.
    source_ssrc: Option<u32>,
    decoder: Option<Decoder>,
    /// The source's frame rate, from its frames' timestamps.
    rate: FrameRateMeter,
    stats: LadderStats,
    /// A bad bitstream has been logged (once per ladder).
    warned: bool,
    /// An AV1 rung without an AV1 payload type has been logged.
    warned_av1: bool,
}

/// The frame rate of a stream, from the RTP timestamps of its frames (a
/// moving average): openh264's rate control shares the bitrate out per
/// frame at the rate it is configured with, so a 15 fps source encoded as
/// if it were 30 fps gets half its bitrate.
#[derive(Debug, Default, Clone, Copy)]
struct FrameRateMeter {
    last_ts: Option<u32>,
    fps: Option<f32>,
}

impl FrameRateMeter {
    /// Frame rate assumed until one is measured.
    const DEFAULT: f32 = 30.0;

    fn frame(&mut self, ts: u32) {
        if let Some(last) = self.last_ts.replace(ts) {
            let delta = ts.wrapping_sub(last);
            // Skip repeats, reordering and gaps of over a second.
            if (1..=90_000).contains(&delta) {
                let now = 90_000.0 / delta as f32;
                self.fps = Some(match self.fps {
                    Some(f) => 0.9 * f + 0.1 * now,
                    None => now,
                });
            }
        }
    }

    fn fps(&self) -> f32 {
        self.fps.unwrap_or(Self::DEFAULT).clamp(1.0, 120.0)
    }
}

/// The publisher's layer the ladder reads.
#[derive(Debug, Clone, Copy)]
struct Source {
    mid: Mid,
    rid: Option<Rid>,
    /// Its H.264 payload types.
    pts: [Option<Pt>; 4],
    /// The AV1 payload type of layers a sink makes, when the SFU carries
    /// them (see `lumen_sfu::SfuConfig::sink_av1`).
    av1_pt: Option<Pt>,
}

struct Rung {
    rid: Rid,
    codec: RungCodec,
    /// An AV1 rung's encoder, unless the runtime runs it.
    av1: Option<Av1Rung>,
    box_size: (usize, usize),
    bitrate_bps: u32,
    ssrc: u32,
    packetizer: Packetizer,
    /// The encoder, the size it encodes and the frame rate it was made
    /// for; made on the first picture and again when the source's size or
    /// frame rate changes.
    encoder: Option<(Encoder, (usize, usize), f32)>,
    picture: Picture,
    /// A viewer asked for a keyframe.
    want_keyframe: bool,
}

impl Ladder {
    /// A ladder of these rungs (see [`crate::TranscodeConfig::rungs`];
    /// rungs with an invalid rid are left out). `seed` makes the rungs'
    /// SSRCs and first sequence numbers: pass something that differs from
    /// one ladder of a stream to the next (a time), so a viewer's
    /// Consumer never mistakes a new ladder's packets for old ones.
    pub fn new(rungs: &[RungConfig], seed: u32) -> Ladder {
        let rungs = rungs
            .iter()
            .enumerate()
            .map(|(i, r)| Rung {
                rid: Rid::from(r.rid.as_str()),
                codec: r.codec,
                av1: (r.codec == RungCodec::Av1).then(|| {
                    Av1Rung::new(
                        Rid::from(r.rid.as_str()),
                        mix(seed, i as u32),
                        u64::from(mix(seed, 100 + i as u32) & 0x7fff),
                        r.bitrate_kbps.saturating_mul(1000),
                    )
                }),
                box_size: (r.width as usize, r.height as usize),
                bitrate_bps: r.bitrate_kbps.saturating_mul(1000),
                ssrc: mix(seed, i as u32),
                packetizer: Packetizer::new(u64::from(mix(seed, 100 + i as u32) & 0x7fff)),
                encoder: None,
                picture: Picture::default(),
                want_keyframe: false,
            })
            .collect();
        Ladder {
            rungs,
            source: None,
            depacketizer: Depacketizer::new(DepacketizerCodec::H264),
            source_ssrc: None,
            decoder: None,
            rate: FrameRateMeter::default(),
            stats: LadderStats::default(),
            warned: false,
            warned_av1: false,
        }
    }

    /// Follows the stream's (new) tracks; returns whether it can be
    /// transcoded. `fresh`: a new publisher, whose packets start over.
    pub fn set_source(&mut self, tracks: &[TrackDescription], fresh: bool) -> Transcodable {
        let verdict = transcodable(tracks);
        let source = tracks
            .iter()
            .find(|t| t.kind == MediaKind::Video)
            .filter(|_| verdict == Transcodable::Yes)
            .map(|t| {
                let mut pts = [None; 4];
                for (slot, p) in pts.iter_mut().zip(
                    t.params
                        .iter()
                        .filter(|p| p.spec().codec == Codec::H264)
                        .map(|p| p.pt()),
                ) {
                    *slot = Some(p);
                }
                Source {
                    mid: t.mid,
                    rid: t.rids.first().copied(),
                    pts,
                    av1_pt: t
                        .params
                        .iter()
                        .find(|p| p.spec().codec == Codec::Av1)
                        .map(|p| p.pt()),
                }
            });
        if fresh || source.is_none() {
            self.restart_source();
        }
        self.source = source;
        verdict
    }

    /// The rids of the rungs, best first.
    pub fn rids(&self) -> Vec<Rid> {
        self.rungs.iter().map(|r| r.rid).collect()
    }

    /// Takes the AV1 rungs' encoders out, for a thread of their own: from
    /// now on their pictures come out of [`Ladder::push`] as
    /// [`Pushed::av1_jobs`].
    pub(crate) fn detach_av1(&mut self) -> Vec<Av1Rung> {
        self.rungs.iter_mut().filter_map(|r| r.av1.take()).collect()
    }

    /// The source's layer (`None`: the stream has no rids), for keyframe
    /// requests to the publisher.
    pub fn source_rid(&self) -> Option<Rid> {
        self.source.and_then(|s| s.rid)
    }

    /// A viewer of rung `rid` needs a keyframe (`None`: of every rung): the
    /// rung's next frame is an IDR. The publisher is not asked.
    pub fn request_keyframe(&mut self, rid: Option<Rid>) {
        for r in &mut self.rungs {
            if rid.is_none_or(|x| x == r.rid) {
                r.want_keyframe = true;
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> LadderStats {
        self.stats
    }

    /// Takes one packet of the stream (any track, any layer: only the
    /// source's are read) and returns the rung packets of the frames it
    /// completed.
    pub fn push(&mut self, pkt: &MediaPacket) -> Pushed {
        let mut out = Pushed::default();
        let Some(source) = self.source else {
            return out;
        };
        if pkt.mid != source.mid || pkt.rid != source.rid || !source.pts.contains(&Some(pkt.pt)) {
            return out;
        }
        if self.source_ssrc != Some(pkt.ssrc) {
            // A new SSRC numbers its packets afresh.
            if self.source_ssrc.is_some() {
                self.restart_source();
            }
            self.source_ssrc = Some(pkt.ssrc);
        }
        let malformed = self.depacketizer.stats().malformed;
        let pushed = self
            .depacketizer
            .push(pkt.seq, pkt.timestamp, pkt.marker, &pkt.payload);
        let bad = self.depacketizer.stats().malformed - malformed;
        if bad > 0 {
            self.stats.malformed += bad;
            self.warn_once("the source's RTP payloads are malformed");
        }
        out.keyframe_needed = pushed.keyframe_needed;
        for frame in pushed.frames {
            self.stats.frames_in += 1;
            // The 32-bit timestamp the frame was sent with.
            let ts = frame.rtp_ts as u32;
            self.rate.frame(ts);
            self.transcode(&frame.data, frame.keyframe, ts, pkt, &mut out);
        }
        out
    }

    /// Decodes one source frame (AVCC) and encodes it on every rung.
    fn transcode(
        &mut self,
        avcc: &[u8],
        keyframe: bool,
        ts: u32,
        pkt: &MediaPacket,
        pushed: &mut Pushed,
    ) {
        let out = &mut pushed.packets;
        let Some(nals) = split_avcc(avcc) else {
            self.bad_input("malformed access unit");
            return;
        };
        // SEI messages (lumen's timing SEI: frame number, capture time)
        // travel with the rung's frame, so latency and continuity are
        // measured on one clock whichever layer a viewer gets.
        let sei: Vec<&[u8]> = nals
            .iter()
            .copied()
            .filter(|n| nal_type(n) == Some(NAL_SEI))
            .collect();
        if self.decoder.is_none() {
            match Decoder::new() {
                Ok(d) => self.decoder = Some(d),
                Err(e) => {
                    self.bad_input(&format!("no decoder: {e}"));
                    return;
                }
            }
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return;
        };
        let decoded = match decoder.decode(&annex_b(&nals)) {
            Ok(Some(yuv)) => yuv,
            // Parameter sets alone, or a frame the decoder holds back.
            Ok(None) => return,
            Err(e) => {
                self.stats.decode_errors += 1;
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(error = %e, "transcoder: the source does not decode; it is forwarded without rungs until it does");
                }
                return;
            }
        };
        self.stats.frames_decoded += 1;
        let (w, h) = decoded.dimensions();
        let fps = self.rate.fps();
        let av1_pt = self.source.and_then(|s| s.av1_pt);
        let planes = Planes {
            width: w,
            height: h,
            y: decoded.y(),
            u: decoded.u(),
            v: decoded.v(),
            strides: decoded.strides(),
        };
        for rung in &mut self.rungs {
            let Some(size) = fit(w, h, rung.box_size.0, rung.box_size.1) else {
                continue;
            };
            let av1_pt = match (rung.codec, av1_pt) {
                (RungCodec::H264, _) => None,
                (_, Some(pt)) => Some(pt),
                (_, None) => {
                    // The SFU does not carry AV1 layers: no viewer could
                    // get this rung.
                    if !self.warned_av1 {
                        self.warned_av1 = true;
                        tracing::warn!(rid = %rung.rid, "transcoder: an AV1 rung, but the SFU does not carry AV1 layers (sink_av1); the rung is left out");
                    }
                    continue;
                }
            };
            rung.picture.width = size.0;
            rung.picture.height = size.1;
            if scale_i420(&planes, &mut rung.picture).is_err() {
                self.stats.decode_errors += 1;
                continue;
            }
            if let Some(pt) = av1_pt {
                let asked = std::mem::take(&mut rung.want_keyframe);
                let job = Av1Job {
                    rid: rung.rid,
                    picture: rung.picture.clone(),
                    keyframe: keyframe || asked,
                    ts,
                    fps,
                    mid: pkt.mid,
                    pt,
                    at: pkt.at,
                };
                match rung.av1.as_mut() {
                    Some(av1) => {
                        let made = av1.encode(&job);
                        self.stats.frames_out += made.frames;
                        self.stats.keyframes_out += made.keyframes;
                        self.stats.encode_errors += made.errors;
                        self.stats.packets_out += made.packets.len() as u64;
                        out.extend(made.packets);
                    }
                    None => pushed.av1_jobs.push(job),
                }
                continue;
            }
            match rung.encode(size, fps, keyframe, ts, &sei) {
                Ok(Some(Encoded { nals, idr })) => {
                    self.stats.frames_out += 1;
                    self.stats.keyframes_out += u64::from(idr);
                    let refs: Vec<&[u8]> = nals.iter().map(Vec::as_slice).collect();
                    for p in rung.packetizer.packetize(&refs) {
                        self.stats.packets_out += 1;
                        out.push(MediaPacket {
                            mid: pkt.mid,
                            rid: Some(rung.rid),
                            ssrc: rung.ssrc,
                            seq: p.seq,
                            pt: pkt.pt,
                            timestamp: ts,
                            marker: p.marker,
                            payload: Arc::from(p.payload),
                            ext: Default::default(),
                            at: pkt.at,
                        });
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.stats.encode_errors += 1;
                    tracing::debug!(rid = %rung.rid, error = %e, "transcoder: encode failed");
                }
            }
        }
    }

    /// Forgets the source's packets and decoder state: what comes next
    /// starts on the source's next keyframe (after a pause).
    pub fn restart(&mut self) {
        self.restart_source();
    }

    /// Forgets the source's packets and decoder state (a new publisher or
    /// SSRC): what comes next starts on a keyframe.
    fn restart_source(&mut self) {
        self.depacketizer = Depacketizer::new(DepacketizerCodec::H264);
        self.source_ssrc = None;
        self.decoder = None;
    }

    fn bad_input(&mut self, what: &str) {
        self.stats.decode_errors += 1;
        self.warn_once(what);
    }

    /// Logs bad input once per ladder: a broken publisher must not flood
    /// the log (the counters say how much).
    fn warn_once(&mut self, what: &str) {
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                "transcoder: {what}; the source is forwarded without rungs until it decodes"
            );
        }
    }
}

impl Rung {
    /// Encodes the rung's scaled picture (the source's SEI go in front of
    /// its first slice); `None` when the encoder made no picture.
    fn encode(
        &mut self,
        size: (usize, usize),
        fps: f32,
        keyframe: bool,
        ts: u32,
        sei: &[&[u8]],
    ) -> Result<Option<Encoded>, openh264::Error> {
        // A rate a quarter off is made again (an IDR on this rung): once
        // when a source is not at 30 fps, rarely after.
        let stale =
            |(_, s, f): &(Encoder, (usize, usize), f32)| *s != size || (fps - f).abs() > f * 0.25;
        if self.encoder.as_ref().is_none_or(stale) {
            let config = EncoderConfig::new()
                .bitrate(BitRate::from_bps(self.bitrate_bps.max(10_000)))
                .max_frame_rate(FrameRate::from_hz(fps))
                .rate_control_mode(RateControlMode::Bitrate)
                // Every source frame has its rung frame: a skipped one
                // would be a gap in the frame numbers a viewer sees.
                .skip_frames(false)
                .usage_type(UsageType::CameraVideoRealTime)
                // Constrained baseline: what every WebRTC peer decodes.
                .profile(Profile::Baseline)
                // IDRs where the source has them (and where a viewer
                // asks), never where openh264 sees a scene change: the
                // rungs switch with the source, and an unasked IDR costs
                // a rung's bitrate several times over.
                .scene_change_detect(false);
            // (The intra period stays 0: IDRs only where the source has
            // one or a viewer asks.)
            let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)?;
            self.encoder = Some((encoder, size, fps));
        }
        let Some((encoder, _, _)) = self.encoder.as_mut() else {
            return Ok(None);
        };
        if keyframe || self.want_keyframe {
            self.want_keyframe = false;
            encoder.force_intra_frame();
        }
        let millis = u64::from(ts) / 90;
        let bitstream =
            encoder.encode_at(&self.picture, openh264::Timestamp::from_millis(millis))?;
        let raw = bitstream.to_vec();
        let mut nals: Vec<Vec<u8>> = Vec::new();
        let mut idr = false;
        let mut slices = false;
        for n in split_annex_b(&raw) {
            let t = nal_type(n);
            if matches!(t, Some(NAL_SLICE..=NAL_IDR)) && !slices {
                nals.extend(sei.iter().map(|s| s.to_vec()));
                slices = true;
            }
            idr |= t == Some(NAL_IDR);
            nals.push(n.to_vec());
        }
        if !slices {
            // No slice: the encoder skipped the picture.
            return Ok(None);
        }
        Ok(Some(Encoded { nals, idr }))
    }
}

/// A rung's frame: its NAL units, and whether it is an IDR.
struct Encoded {
    nals: Vec<Vec<u8>>,
    idr: bool,
}

/// Whether the tracks are a stream the ladder can follow.
pub(crate) fn transcodable(tracks: &[TrackDescription]) -> Transcodable {
    let Some(video) = tracks.iter().find(|t| t.kind == MediaKind::Video) else {
        return Transcodable::NoVideo;
    };
    if video.rids.len() > 1 {
        return Transcodable::Simulcast;
    }
    if !video.params.iter().any(|p| p.spec().codec == Codec::H264) {
        return Transcodable::NotH264;
    }
    Transcodable::Yes
}

/// A well-spread 32-bit value from a seed and an index (SplitMix-style).
fn mix(seed: u32, i: u32) -> u32 {
    let mut z = (u64::from(seed) << 32 | u64::from(i)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u32
}

#[cfg(test)]
mod av1_bench;
#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;
