//! The media core of one stream's recorder, without I/O and without a
//! clock (packet arrival instants are its time): packets of the stream's
//! highest video layer and its audio in, the recording's init segment and
//! closed fragments out, plus keyframes for thumbnails and the moments to
//! ask the publisher for a keyframe. The stream task (`stream.rs`) feeds it
//! from the node and does the writing.
//!
//! # Choosing the layer
//!
//! A simulcast publisher's rids are names it picks (`h/m/l`, `f/h/q`, …),
//! so the layer is chosen by picture size, read from the parameter sets of
//! each layer's keyframes: packets are held for up to [`LAYER_SETTLE`]
//! (the cached keyframes of every layer come at once when a sink attaches),
//! then the largest layer seen is chosen and its held packets replayed.
//!
//! # Timeline
//!
//! Both tracks count from the recording's first frame (a video keyframe,
//! or the first audio frame of an audio-only recording). The first frame of
//! each track is placed by its arrival instant relative to that origin,
//! later ones by their RTP timestamp distance to that first frame, so a
//! track's rhythm is the publisher's and the two tracks line up as they
//! arrived.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use lumen_sfu::{MediaPacket, Rid, TrackDescription, VideoCodec};
use str0m::format::Codec as SdpCodec;
use str0m::media::{MediaKind, Mid, Pt};

use crate::depacketize::{Codec, Depacketizer, Frame};
use crate::mux::{Fragment, MIN_FRAGMENT, Muxer, Sample, TrackConfig};

/// How long the layers of a simulcast publisher are watched for their
/// picture sizes before the largest one seen is chosen.
pub(crate) const LAYER_SETTLE: Duration = Duration::from_millis(500);
/// A recording with a video track that brings no keyframe for this long
/// (after its first audio frame) is recorded audio-only.
pub(crate) const AUDIO_ONLY_AFTER: Duration = Duration::from_secs(5);
/// Bound on the raw video packets held while the layer is chosen.
const MAX_HELD_PACKETS: usize = 4096;
/// Bound on the frames held before the muxer can be made.
const MAX_PENDING_FRAMES: usize = 1024;

/// What one call produced; the caller acts on each part.
#[derive(Debug, Default)]
pub(crate) struct Out {
    /// Ask the publisher for a keyframe of [`Pipeline::layer`].
    pub keyframe_request: bool,
    /// The recording's init segment (once, when its muxer is made).
    pub init: Option<Vec<u8>>,
    /// Fragments closed, in order.
    pub fragments: Vec<Fragment>,
    /// A keyframe for a thumbnail: H.264 as AVCC with its parameter sets
    /// first, or a VP8 frame.
    pub thumbnail: Option<(Codec, Vec<u8>)>,
    /// [`Out::thumbnail`] is the live thumbnail asked for.
    pub thumbnail_live: bool,
    /// [`Out::thumbnail`] is the recording's first keyframe (its poster).
    pub thumbnail_recording: bool,
    /// The recording cannot go on (a track the muxer refuses).
    pub error: Option<String>,
}

/// One stream's depacketizers and, while recording, its muxer.
#[derive(Debug, Default)]
pub(crate) struct Pipeline {
    video: Option<VideoIn>,
    audio: Option<AudioIn>,
    rec: Option<Rec>,
    want_thumbnail: bool,
    /// Frames dropped while waiting for a keyframe, ever.
    skipped: u64,
}

impl Pipeline {
    /// Binds the tracks of a (new) publisher: its first video track with
    /// H.264 or VP8 and its first audio track with Opus.
    pub fn bind(&mut self, tracks: &[TrackDescription]) {
        self.unbind();
        self.video = tracks
            .iter()
            .filter(|t| t.kind == MediaKind::Video)
            .find_map(VideoIn::new);
        self.audio = tracks
            .iter()
            .filter(|t| t.kind == MediaKind::Audio)
            .find_map(AudioIn::new);
    }

    /// The publisher left: nothing is bound.
    pub fn unbind(&mut self) {
        self.count_skipped();
        self.video = None;
        self.audio = None;
    }

    /// The video layer being read (`None`: no simulcast, or not chosen).
    pub fn layer(&self) -> Option<Rid> {
        match self.video.as_ref().map(|v| &v.choice) {
            Some(Choice::Chosen(rid)) => *rid,
            _ => None,
        }
    }

    /// Frames dropped while waiting for a keyframe so far.
    pub fn skipped(&self) -> u64 {
        let live = |d: Option<&Depacketizer>, seen: u64| {
            d.map_or(0, |d| d.stats().skipped.saturating_sub(seen))
        };
        self.skipped
            + self
                .video
                .as_ref()
                .map_or(0, |v| live(v.depack.as_ref(), v.skipped_seen))
    }

    /// Hand out the next keyframe as [`Out::thumbnail`].
    pub fn want_thumbnail(&mut self) {
        self.want_thumbnail = true;
    }

    /// Whether the bound video can give thumbnails (H.264 or VP8).
    pub fn thumbnails_possible(&self) -> bool {
        self.video.as_ref().is_some_and(|v| {
            v.codecs
                .iter()
                .any(|(_, c)| matches!(c, Codec::H264 | Codec::Vp8))
        })
    }

    /// Whether a live thumbnail is wanted and not yet handed out.
    pub fn wants_thumbnail(&self) -> bool {
        self.want_thumbnail
    }

    /// Starts a recording: from the next video keyframe (one is asked for
    /// unless the stream starts on one), with the audio from there.
    pub fn start_recording(&mut self) {
        self.rec = Some(Rec::default());
    }

    /// Ends the recording: whole frames still held are written, then the
    /// last fragments.
    pub fn stop_recording(&mut self) -> Out {
        let mut out = Out::default();
        if self.rec.is_none() {
            return out;
        }
        let video = self
            .video
            .as_mut()
            .and_then(|v| Some((v.depack.as_mut()?.flush().frames, v.last_at?)));
        if let Some((frames, at)) = video {
            for f in frames {
                self.video_frame(f, at, &mut out);
            }
        }
        let audio = self
            .audio
            .as_mut()
            .and_then(|a| Some((a.depack.as_mut()?.flush().frames, a.last_at?)));
        if let Some((frames, at)) = audio {
            for f in frames {
                self.audio_frame(f, at, &mut out);
            }
        }
        if let Some(rec) = self.rec.take()
            && let Some(mut muxer) = rec.muxer
        {
            match muxer.finish() {
                Ok(fragments) => out.fragments.extend(fragments),
                Err(e) => out.error = Some(e.to_string()),
            }
        }
        out
    }

    /// Packets lost upstream (the feed overflowed): every depacketizer
    /// starts over, video from its next keyframe.
    pub fn gap(&mut self) -> Out {
        self.count_skipped();
        if let Some(v) = &mut self.video {
            v.depack = None;
            v.skipped_seen = 0;
        }
        if let Some(a) = &mut self.audio {
            a.depack = None;
        }
        Out {
            keyframe_request: self.video.is_some() && (self.rec.is_some() || self.want_thumbnail),
            ..Out::default()
        }
    }

    /// Takes a batch of the stream's packets; `wall` is the wall-clock
    /// time of `now` (the caller's clock: this code has none).
    pub fn packets(&mut self, packets: Vec<MediaPacket>, now: (Instant, SystemTime)) -> Out {
        let mut out = Out::default();
        if let Some(rec) = &mut self.rec {
            rec.now = Some(now);
        }
        for p in packets {
            if self.video.as_ref().is_some_and(|v| v.mid == p.mid) {
                self.video_packet(p, &mut out);
            } else if self.audio.as_ref().is_some_and(|a| a.mid == p.mid) {
                self.audio_packet(p, &mut out);
            }
        }
        out
    }

    fn video_packet(&mut self, p: MediaPacket, out: &mut Out) {
        let Some(v) = &mut self.video else { return };
        match &mut v.choice {
            Choice::Chosen(rid) => {
                if p.rid == *rid {
                    self.depacketize_video(p, out);
                }
            }
            Choice::Undecided { since, sizes, held } => {
                let first = *since.get_or_insert(p.at);
                if let Some(codec) = v.codecs.iter().find(|(pt, _)| *pt == p.pt).map(|c| c.1)
                    && let Some(size) = lumen_sfu::picture_size(sfu_codec(codec), &p.payload)
                {
                    sizes.insert(p.rid, size);
                }
                let settled = sizes.len() >= v.rids.len()
                    || p.at.saturating_duration_since(first) >= LAYER_SETTLE
                    || held.len() >= MAX_HELD_PACKETS;
                held.push(p);
                if settled {
                    let largest = sizes
                        .iter()
                        .max_by_key(|(_, (w, h))| u64::from(*w) * u64::from(*h))
                        .map(|(rid, _)| *rid);
                    let rid = largest.or_else(|| held.first().map(|p| p.rid)).flatten();
                    let held = std::mem::take(held);
                    tracing::debug!(layer = ?rid, sizes = ?sizes, "recorder: video layer chosen");
                    v.choice = Choice::Chosen(rid);
                    for p in held.into_iter().filter(|p| p.rid == rid) {
                        self.depacketize_video(p, out);
                    }
                }
            }
        }
    }

    fn depacketize_video(&mut self, p: MediaPacket, out: &mut Out) {
        let Some(v) = &mut self.video else { return };
        let Some(codec) = v.codecs.iter().find(|(pt, _)| *pt == p.pt).map(|c| c.1) else {
            return;
        };
        if v.depack.as_ref().is_none_or(|d| d.codec() != codec) {
            if let Some(d) = &v.depack {
                self.skipped += d.stats().skipped.saturating_sub(v.skipped_seen);
            }
            v.depack = Some(Depacketizer::new(codec));
            v.skipped_seen = 0;
        }
        v.last_at = Some(p.at);
        let Some(d) = &mut v.depack else { return };
        let push = d.push(p.seq, p.timestamp, p.marker, &p.payload);
        if push.keyframe_needed && (self.rec.is_some() || self.want_thumbnail) {
            out.keyframe_request = true;
        }
        for f in push.frames {
            self.video_frame(f, p.at, out);
        }
    }

    fn audio_packet(&mut self, p: MediaPacket, out: &mut Out) {
        if self.rec.is_none() {
            return;
        }
        let Some(a) = &mut self.audio else { return };
        if !a.pts.contains(&p.pt) {
            return;
        }
        a.last_at = Some(p.at);
        let d = a
            .depack
            .get_or_insert_with(|| Depacketizer::new(Codec::Opus));
        let push = d.push(p.seq, p.timestamp, p.marker, &p.payload);
        for f in push.frames {
            self.audio_frame(f, p.at, out);
        }
    }

    fn video_frame(&mut self, f: Frame, at: Instant, out: &mut Out) {
        let Some(v) = &self.video else { return };
        let Some(d) = &v.depack else { return };
        let codec = d.codec();
        let pictures = matches!(codec, Codec::H264 | Codec::Vp8);
        let keyframe = |data: &[u8], sps: Option<&[u8]>, pps: Option<&[u8]>| match codec {
            Codec::H264 => (codec, with_parameter_sets(data, sps, pps)),
            _ => (codec, data.to_vec()),
        };
        if f.keyframe && pictures && self.want_thumbnail {
            self.want_thumbnail = false;
            out.thumbnail = Some(keyframe(&f.data, d.sps(), d.pps()));
            out.thumbnail_live = true;
        }
        let config = d.track_config();
        let (sps, pps) = (d.sps().map(<[u8]>::to_vec), d.pps().map(<[u8]>::to_vec));
        let has_audio = self.audio.is_some();
        let Some(rec) = &mut self.rec else { return };
        if rec.audio_only {
            return;
        }
        if rec.muxer.is_none() {
            if !f.keyframe && !rec.pending.iter().any(|p| p.video) {
                // A recording starts on a keyframe: ask for one now rather
                // than wait for the publisher's next.
                if rec.may_request(at) {
                    out.keyframe_request = true;
                }
                return;
            }
            if f.keyframe && pictures && config.is_some() && !rec.thumbnail_done {
                rec.thumbnail_done = true;
                if out.thumbnail.is_none() {
                    out.thumbnail = Some(keyframe(&f.data, sps.as_deref(), pps.as_deref()));
                }
                out.thumbnail_recording = true;
            }
            rec.hold(Held {
                video: true,
                frame: f,
                at,
            });
            if let Some(video) = config {
                let mut tracks = vec![video];
                if has_audio {
                    tracks.push(TrackConfig::Opus { channels: 2 });
                }
                rec.build(tracks, Some(0), has_audio.then_some(1), out);
            }
            return;
        }
        if f.keyframe && pictures && !rec.thumbnail_done {
            rec.thumbnail_done = true;
            if out.thumbnail.is_none() {
                out.thumbnail = Some(keyframe(&f.data, sps.as_deref(), pps.as_deref()));
            }
            out.thumbnail_recording = true;
        }
        rec.push(Kind::Video, f, at, out);
    }

    fn audio_frame(&mut self, f: Frame, at: Instant, out: &mut Out) {
        let has_video = self.video.is_some();
        let Some(rec) = &mut self.rec else { return };
        if rec.muxer.is_some() {
            rec.push(Kind::Audio, f, at, out);
            return;
        }
        rec.hold(Held {
            video: false,
            frame: f,
            at,
        });
        let first_audio = rec.pending.iter().find(|p| !p.video).map(|p| p.at);
        let waited =
            first_audio.is_some_and(|t| at.saturating_duration_since(t) >= AUDIO_ONLY_AFTER);
        let video_pending = rec.pending.iter().any(|p| p.video);
        if !has_video || (waited && !video_pending) {
            if has_video {
                tracing::info!("recorder: no video keyframe came; recording audio only");
            }
            rec.audio_only = true;
            rec.build(vec![TrackConfig::Opus { channels: 2 }], None, Some(0), out);
        }
    }

    fn count_skipped(&mut self) {
        if let Some(v) = &mut self.video
            && let Some(d) = &v.depack
        {
            let now = d.stats().skipped;
            self.skipped += now.saturating_sub(v.skipped_seen);
            v.skipped_seen = now;
        }
    }
}

#[derive(Debug)]
struct VideoIn {
    mid: Mid,
    codecs: Vec<(Pt, Codec)>,
    rids: Vec<Rid>,
    choice: Choice,
    depack: Option<Depacketizer>,
    /// The depacketizer's `skipped` already counted in `Pipeline::skipped`.
    skipped_seen: u64,
    /// Arrival of the latest packet.
    last_at: Option<Instant>,
}

impl VideoIn {
    fn new(t: &TrackDescription) -> Option<VideoIn> {
        let codecs: Vec<(Pt, Codec)> = t
            .params
            .iter()
            .filter_map(|p| {
                let codec = match p.spec().codec {
                    SdpCodec::H264 => Codec::H264,
                    SdpCodec::Vp8 => Codec::Vp8,
                    _ => return None,
                };
                Some((p.pt(), codec))
            })
            .collect();
        if codecs.is_empty() {
            return None;
        }
        let choice = if t.rids.len() <= 1 {
            Choice::Chosen(t.rids.first().copied())
        } else {
            Choice::Undecided {
                since: None,
                sizes: HashMap::new(),
                held: Vec::new(),
            }
        };
        Some(VideoIn {
            mid: t.mid,
            codecs,
            rids: t.rids.clone(),
            choice,
            depack: None,
            skipped_seen: 0,
            last_at: None,
        })
    }
}

#[derive(Debug)]
enum Choice {
    Undecided {
        since: Option<Instant>,
        sizes: HashMap<Option<Rid>, (u32, u32)>,
        held: Vec<MediaPacket>,
    },
    Chosen(Option<Rid>),
}

#[derive(Debug)]
struct AudioIn {
    mid: Mid,
    pts: Vec<Pt>,
    depack: Option<Depacketizer>,
    /// Arrival of the latest packet.
    last_at: Option<Instant>,
}

impl AudioIn {
    fn new(t: &TrackDescription) -> Option<AudioIn> {
        let pts: Vec<Pt> = t
            .params
            .iter()
            .filter(|p| p.spec().codec == SdpCodec::Opus)
            .map(|p| p.pt())
            .collect();
        (!pts.is_empty()).then_some(AudioIn {
            mid: t.mid,
            pts,
            depack: None,
            last_at: None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Video,
    Audio,
}

#[derive(Debug)]
struct Held {
    video: bool,
    frame: Frame,
    at: Instant,
}

/// One recording's muxing state.
#[derive(Debug, Default)]
struct Rec {
    muxer: Option<Muxer>,
    /// Muxer track of each kind.
    tracks: [Option<usize>; 2],
    /// Frames waiting for the muxer (for the video's parameters).
    pending: Vec<Held>,
    /// The recording's first instant and its wall-clock time.
    origin: Option<(Instant, SystemTime)>,
    clocks: [Clock; 2],
    last_request: Option<Instant>,
    thumbnail_done: bool,
    audio_only: bool,
    /// The latest `now` the caller gave.
    now: Option<(Instant, SystemTime)>,
}

impl Rec {
    fn may_request(&mut self, at: Instant) -> bool {
        if self
            .last_request
            .is_some_and(|t| at.saturating_duration_since(t) < MIN_FRAGMENT)
        {
            return false;
        }
        self.last_request = Some(at);
        true
    }

    fn hold(&mut self, held: Held) {
        if self.pending.len() >= MAX_PENDING_FRAMES {
            self.pending.remove(0);
        }
        self.pending.push(held);
    }

    /// Makes the muxer and writes what was held, from the first held
    /// frame of the reference kind on.
    fn build(
        &mut self,
        configs: Vec<TrackConfig>,
        video: Option<usize>,
        audio: Option<usize>,
        out: &mut Out,
    ) {
        let muxer = match Muxer::new(configs).and_then(|m| m.init_segment().map(|i| (m, i))) {
            Ok((muxer, init)) => {
                out.init = Some(init);
                muxer
            }
            Err(e) => {
                out.error = Some(e.to_string());
                return;
            }
        };
        self.muxer = Some(muxer);
        self.tracks = [video, audio];
        let pending = std::mem::take(&mut self.pending);
        let start = if video.is_some() {
            pending.iter().find(|p| p.video && p.frame.keyframe)
        } else {
            pending.iter().find(|p| !p.video)
        };
        let Some(origin) = start.map(|p| p.at) else {
            return;
        };
        // Frames are only made in `packets`, which sets `now`.
        let origin_wall = match self.now {
            Some((now, wall)) if origin <= now => wall.checked_sub(now - origin).unwrap_or(wall),
            Some((_, wall)) => wall,
            None => SystemTime::UNIX_EPOCH,
        };
        self.origin = Some((origin, origin_wall));
        for p in pending {
            if p.at < origin || (p.video && video.is_none()) {
                continue;
            }
            let kind = if p.video { Kind::Video } else { Kind::Audio };
            self.push(kind, p.frame, p.at, out);
        }
    }

    fn push(&mut self, kind: Kind, f: Frame, at: Instant, out: &mut Out) {
        let index = kind as usize;
        let (Some(track), Some((origin, origin_wall)), Some(muxer)) =
            (self.tracks[index], self.origin, self.muxer.as_mut())
        else {
            return;
        };
        let rate = u64::from(muxer.tracks()[track].timescale());
        let dts =
            self.clocks[index].dts(f.rtp_ts as u32, at.saturating_duration_since(origin), rate);
        let wall_clock =
            origin_wall + Duration::from_nanos(dts.saturating_mul(1_000_000_000) / rate.max(1));
        let sample = Sample {
            dts,
            cts_offset: 0,
            keyframe: f.keyframe,
            data: f.data,
            wall_clock,
        };
        match muxer.push(track, sample) {
            Ok(Some(fragment)) => out.fragments.push(fragment),
            Ok(None) => {}
            Err(e) => out.error = Some(e.to_string()),
        }
        if kind == Kind::Video && muxer.keyframe_due() && self.may_request(at) {
            out.keyframe_request = true;
        }
    }
}

/// A track's RTP clock mapped onto the recording's timeline.
#[derive(Debug, Default, Clone, Copy)]
struct Clock {
    /// The first frame's extended timestamp and decode time.
    first: Option<(u64, u64)>,
    last: u32,
    ext: u64,
}

impl Clock {
    /// The decode time of a frame with 32-bit RTP timestamp `ts` that
    /// arrived `since_origin` after the recording's start; `rate` is the
    /// track's clock rate (its timescale). Extends the timestamp itself, so
    /// a depacketizer started over after a gap changes nothing.
    fn dts(&mut self, ts: u32, since_origin: Duration, rate: u64) -> u64 {
        match self.first {
            None => {
                let ext = (1u64 << 32) + u64::from(ts);
                let dts = (since_origin.as_nanos() * u128::from(rate) / 1_000_000_000) as u64;
                self.first = Some((ext, dts));
                self.last = ts;
                self.ext = ext;
                dts
            }
            Some((first_ext, first_dts)) => {
                let step = i64::from(ts.wrapping_sub(self.last) as i32);
                self.ext = self.ext.checked_add_signed(step).unwrap_or(self.ext);
                self.last = ts;
                // A frame from before the first one gets a time the muxer
                // drops as out of order.
                (first_dts + self.ext).saturating_sub(first_ext)
            }
        }
    }
}

fn sfu_codec(codec: Codec) -> VideoCodec {
    match codec {
        Codec::Vp8 => VideoCodec::Vp8,
        _ => VideoCodec::H264,
    }
}

fn nal_types(mut data: &[u8]) -> impl Iterator<Item = u8> + '_ {
    std::iter::from_fn(move || {
        let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
        let nal = data.get(4..4 + len)?;
        data = &data[4 + len..];
        Some(nal.first().map_or(0, |h| h & 0x1f))
    })
}

/// The access unit with the parameter sets in front when it lacks them
/// (the thumbnail decoder starts from nothing).
fn with_parameter_sets(au: &[u8], sps: Option<&[u8]>, pps: Option<&[u8]>) -> Vec<u8> {
    if nal_types(au).any(|t| t == 7) {
        return au.to_vec();
    }
    let mut out = Vec::with_capacity(au.len() + 64);
    for nal in [sps, pps].into_iter().flatten() {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out.extend_from_slice(au);
    out
}

#[cfg(test)]
mod tests;
