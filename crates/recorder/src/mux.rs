//! Samples in, bytes out: the CMAF muxer of a recording.
//!
//! A [`Muxer`] writes an init segment (`ftyp` + `moov` with `mvex`) and then
//! fragments, each `prft` + `moof` + `mdat`, one `traf` per track that has
//! samples in it (video and audio muxed in one fragment: ffmpeg, Chromium's
//! MSE and hls.js all play that). [`progressive`] turns the init segment and
//! the fragments' [`FragmentIndex`]es into one progressive MP4 (moov before
//! mdat) without holding the media in memory; [`FragmentIndex`] is also what
//! a crash recovery needs, and [`parse_fragment_index`] rebuilds it from a
//! stored fragment.
//!
//! Boxes are written with `mp4-atom`; nothing here is hand-written except
//! the arithmetic of offsets.
//!
//! # Cutting fragments
//!
//! The *reference* track is the first video track (the first track if there
//! is no video). A fragment is cut before a reference keyframe once the
//! fragment holds at least [`MIN_FRAGMENT`] of reference media, and cut
//! regardless of keyframes before a reference sample that would make the
//! fragment longer than [`MAX_FRAGMENT`]. WebRTC encoders send keyframes
//! only when asked, so most fragments of a long GOP are force-cut and start
//! with a non-sync sample (its `trun` flags say so, and
//! [`FragmentIndex::keyframe_start`] is false); [`Muxer::keyframe_due`] tells
//! the caller when a keyframe request would let the next cut land on one.
//! Other tracks follow the reference's cut time: a fragment takes their
//! samples that start before it, so their part may overrun the cut by less
//! than one of their frames. If the reference stalls (video lost, waiting
//! for a keyframe) the other tracks cut on their own after
//! [`MAX_FRAGMENT`] + [`STALL_SLACK`], at [`MAX_FRAGMENT`].
//!
//! # Durations
//!
//! A sample's duration is the distance to the next sample's decode time, so
//! the muxer holds one sample back per track; at [`Muxer::finish`] the last
//! one repeats the duration before it (or a codec default).

mod boxes;
mod progressive;

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use progressive::{CopyRange, Progressive, RecordingInfo, parse_fragment_index, progressive};

/// A fragment holds at least this much reference media before it is cut at
/// a keyframe.
pub const MIN_FRAGMENT: Duration = Duration::from_secs(1);
/// A fragment never holds more than this much reference media.
pub const MAX_FRAGMENT: Duration = Duration::from_secs(2);
/// How far past [`MAX_FRAGMENT`] non-reference tracks may run ahead of a
/// stalled reference track before they are cut on their own.
pub const STALL_SLACK: Duration = Duration::from_millis(500);

/// The timescale of video tracks (the RTP clock rate of video).
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// The timescale of Opus tracks (Opus always runs at 48 kHz).
pub const OPUS_TIMESCALE: u32 = 48_000;

/// One track of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrackConfig {
    /// H.264 video; samples are AVCC with 4-byte lengths.
    H264 {
        /// The sequence parameter set NAL unit (with its header byte).
        sps: Vec<u8>,
        /// The picture parameter set NAL unit.
        pps: Vec<u8>,
        /// Picture width in pixels.
        width: u32,
        /// Picture height in pixels.
        height: u32,
    },
    /// VP8 video.
    Vp8 {
        /// Picture width in pixels.
        width: u32,
        /// Picture height in pixels.
        height: u32,
    },
    /// Opus audio at 48 kHz.
    Opus {
        /// Output channels as signalled (WebRTC: 2).
        channels: u8,
    },
}

impl TrackConfig {
    /// Ticks per second of the track's timestamps.
    pub fn timescale(&self) -> u32 {
        match self {
            TrackConfig::H264 { .. } | TrackConfig::Vp8 { .. } => VIDEO_TIMESCALE,
            TrackConfig::Opus { .. } => OPUS_TIMESCALE,
        }
    }

    /// Whether it is a video track.
    pub fn is_video(&self) -> bool {
        !matches!(self, TrackConfig::Opus { .. })
    }

    /// Its RFC 6381 codec string (`avc1.42e01f`, `vp8`, `opus`).
    pub fn codec_string(&self) -> String {
        match self {
            TrackConfig::H264 { sps, .. } => match sps.get(1..4) {
                Some(p) => format!("avc1.{:02x}{:02x}{:02x}", p[0], p[1], p[2]),
                None => "avc1".to_owned(),
            },
            TrackConfig::Vp8 { .. } => "vp8".to_owned(),
            TrackConfig::Opus { .. } => "opus".to_owned(),
        }
    }

    /// The default duration of a sample when nothing follows it to measure
    /// (a 30 fps frame; a 20 ms Opus packet).
    fn default_duration(&self) -> u32 {
        self.timescale() / if self.is_video() { 30 } else { 50 }
    }
}

/// One media sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Decode time in the track's timescale, from the start of the recording
    /// (the same origin for every track, so they stay in sync).
    pub dts: u64,
    /// Presentation time minus decode time (0 without B-frames, as with
    /// every WebRTC encoder).
    pub cts_offset: i32,
    /// Whether it decodes on its own.
    pub keyframe: bool,
    /// The coded sample (a frame as the depacketizer gives it).
    pub data: Vec<u8>,
    /// The wall-clock time of this sample, as the caller's clock says (for
    /// instance when its first packet arrived). The first sample of a
    /// fragment's reference track gives the fragment's `prft` time.
    pub wall_clock: SystemTime,
}

/// One finished fragment: what to store, and its index.
#[derive(Debug, Clone, PartialEq)]
pub struct Fragment {
    /// `prft` + `moof` + `mdat`, ready to store.
    pub bytes: Vec<u8>,
    /// Where its samples are, for the progressive file and the playlist.
    pub index: FragmentIndex,
}

/// Everything about a fragment's samples that the progressive file needs,
/// without the media. Serializable, to be journalled next to the stored
/// fragment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentIndex {
    /// The `mfhd` sequence number, from 1.
    pub seq: u32,
    /// The wall-clock time of the fragment's first reference sample, as a
    /// 64-bit NTP timestamp (the `prft` box's).
    pub ntp_time: u64,
    /// The track id whose samples set the fragment's cut and time.
    pub reference_track: u32,
    /// Whether the reference track's first sample in it is a keyframe (or
    /// it has no reference sample), so it decodes without earlier fragments.
    pub keyframe_start: bool,
    /// Byte offset of the `mdat` payload in the fragment.
    pub mdat_offset: u64,
    /// Length of the `mdat` payload.
    pub mdat_len: u64,
    /// One run per track with samples in the fragment, in track order.
    pub tracks: Vec<TrackRun>,
}

/// The samples of one track in one fragment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackRun {
    /// The track id (1-based, in the order of the muxer's tracks).
    pub track_id: u32,
    /// Ticks per second.
    pub timescale: u32,
    /// Decode time of the first sample (`tfdt`).
    pub base_dts: u64,
    /// Offset of the first sample's data in the `mdat` payload.
    pub data_offset: u64,
    /// The samples, contiguous in the payload.
    pub samples: Vec<SampleInfo>,
}

/// One sample of a [`TrackRun`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleInfo {
    /// Bytes.
    pub size: u32,
    /// Ticks.
    pub duration: u32,
    /// Presentation minus decode time, in ticks.
    pub cts_offset: i32,
    /// Whether it decodes on its own.
    pub sync: bool,
}

impl TrackRun {
    /// Sum of its sample durations, in ticks.
    pub fn duration(&self) -> u64 {
        self.samples.iter().map(|s| u64::from(s.duration)).sum()
    }

    /// Sum of its sample sizes.
    pub fn size(&self) -> u64 {
        self.samples.iter().map(|s| u64::from(s.size)).sum()
    }
}

impl FragmentIndex {
    /// The reference track's run (or the first run there is).
    pub fn reference_run(&self) -> Option<&TrackRun> {
        self.tracks
            .iter()
            .find(|t| t.track_id == self.reference_track)
            .or_else(|| self.tracks.first())
    }

    /// When the fragment starts, in seconds from the recording's start.
    pub fn start_secs(&self) -> f64 {
        self.reference_run()
            .map_or(0.0, |r| r.base_dts as f64 / f64::from(r.timescale))
    }

    /// How long the fragment plays, in seconds (its reference track).
    pub fn duration_secs(&self) -> f64 {
        self.reference_run()
            .map_or(0.0, |r| r.duration() as f64 / f64::from(r.timescale))
    }
}

/// Misuse of the muxer (a bug in the caller, never network input).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError {
    /// A muxer needs at least one track.
    #[error("a recording needs at least one track")]
    NoTracks,
    /// The track index is not one of the muxer's tracks.
    #[error("no track {0}")]
    UnknownTrack(usize),
    /// A track's configuration cannot be written (an SPS too short, a
    /// picture size over 65535).
    #[error("track {track}: {reason}")]
    BadTrack {
        /// The track's index.
        track: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The box writer refused (sizes out of range).
    #[error("writing MP4 boxes: {0}")]
    Mp4(#[from] mp4_atom::Error),
}

/// Stored fragments or an init segment that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The bytes are not valid MP4 boxes.
    #[error("reading MP4 boxes: {0}")]
    Mp4(#[from] mp4_atom::Error),
    /// The boxes are valid but not what this muxer writes.
    #[error("unexpected fragment layout: {0}")]
    Layout(&'static str),
}

/// Counters of samples the muxer dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MuxStats {
    /// Samples written into fragments.
    pub samples: u64,
    /// Samples dropped because their decode time did not increase.
    pub out_of_order: u64,
    /// Samples dropped because they were empty.
    pub empty: u64,
}

/// The muxer of one recording. See the module documentation for the rules.
#[derive(Debug)]
pub struct Muxer {
    configs: Vec<TrackConfig>,
    tracks: Vec<TrackState>,
    reference: usize,
    next_seq: u32,
    stats: MuxStats,
}

#[derive(Debug, Default)]
struct TrackState {
    held: Option<Sample>,
    last_dts: Option<u64>,
    last_duration: Option<u32>,
    /// Resolved samples not yet in a fragment, in decode order.
    queue: VecDeque<Ready>,
}

#[derive(Debug)]
struct Ready {
    dts: u64,
    duration: u32,
    cts_offset: i32,
    keyframe: bool,
    data: Vec<u8>,
    wall_clock: SystemTime,
}

impl Muxer {
    /// A muxer of these tracks; track ids are their positions plus one.
    pub fn new(tracks: Vec<TrackConfig>) -> Result<Self, MuxError> {
        if tracks.is_empty() {
            return Err(MuxError::NoTracks);
        }
        for (i, t) in tracks.iter().enumerate() {
            boxes::check(i, t)?;
        }
        let reference = tracks.iter().position(TrackConfig::is_video).unwrap_or(0);
        Ok(Muxer {
            tracks: tracks.iter().map(|_| TrackState::default()).collect(),
            configs: tracks,
            reference,
            next_seq: 1,
            stats: MuxStats::default(),
        })
    }

    /// The tracks, in order.
    pub fn tracks(&self) -> &[TrackConfig] {
        &self.configs
    }

    /// The comma-separated RFC 6381 codecs of the recording.
    pub fn codecs(&self) -> String {
        let codecs: Vec<_> = self.configs.iter().map(TrackConfig::codec_string).collect();
        codecs.join(",")
    }

    /// Samples written and dropped so far.
    pub fn stats(&self) -> MuxStats {
        self.stats
    }

    /// The init segment: `ftyp` (iso6, cmfc) and `moov` with `mvex`.
    pub fn init_segment(&self) -> Result<Vec<u8>, MuxError> {
        boxes::init_segment(&self.configs)
    }

    /// Whether a keyframe now would let the open fragment be cut on it
    /// rather than force-cut: the reference track is video and the fragment
    /// already holds [`MIN_FRAGMENT`] of it. The caller rate-limits its
    /// requests.
    pub fn keyframe_due(&self) -> bool {
        let (Some(config), Some(track)) = (
            self.configs.get(self.reference),
            self.tracks.get(self.reference),
        ) else {
            return false;
        };
        let (Some(first), Some(held)) = (track.queue.front(), track.held.as_ref()) else {
            return false;
        };
        config.is_video()
            && nanos(held.dts.saturating_sub(first.dts), config.timescale())
                >= MIN_FRAGMENT.as_nanos()
    }

    /// Adds a sample to track `track` (an index into the muxer's tracks).
    /// Returns the fragment this completes, if any (at most one). A sample
    /// whose decode time is not after the track's previous one, or that is
    /// empty, is dropped and counted.
    pub fn push(&mut self, track: usize, sample: Sample) -> Result<Option<Fragment>, MuxError> {
        let state = self
            .tracks
            .get_mut(track)
            .ok_or(MuxError::UnknownTrack(track))?;
        if sample.data.is_empty() {
            self.stats.empty += 1;
            return Ok(None);
        }
        if state.last_dts.is_some_and(|last| sample.dts <= last) {
            self.stats.out_of_order += 1;
            return Ok(None);
        }
        state.last_dts = Some(sample.dts);
        let Some(prev) = state.held.replace(sample) else {
            return Ok(None);
        };
        let duration =
            u32::try_from(state.last_dts.unwrap_or(prev.dts) - prev.dts).unwrap_or(u32::MAX);
        state.last_duration = Some(duration);
        self.add(track, ready(prev, duration))
    }

    /// Ends the recording: writes out every sample still held. Returns the
    /// last fragments (none if nothing was pending).
    pub fn finish(&mut self) -> Result<Vec<Fragment>, MuxError> {
        let mut out = Vec::new();
        for track in 0..self.tracks.len() {
            let state = &mut self.tracks[track];
            if let Some(last) = state.held.take() {
                let duration = state
                    .last_duration
                    .unwrap_or_else(|| self.configs[track].default_duration());
                out.extend(self.add(track, ready(last, duration))?);
            }
        }
        while let Some(fragment) = self.cut(u128::MAX)? {
            out.push(fragment);
        }
        Ok(out)
    }

    fn add(&mut self, track: usize, sample: Ready) -> Result<Option<Fragment>, MuxError> {
        let timescale = self.configs[track].timescale();
        let at = nanos(sample.dts, timescale);
        let end = nanos(sample.dts + u64::from(sample.duration), timescale);
        let mut fragment = None;
        if track == self.reference {
            if let Some(first) = self.tracks[track].queue.front() {
                let start = self.fragment_start().unwrap_or(at);
                let span = at.saturating_sub(nanos(first.dts, timescale));
                let at_keyframe = self.configs[track].is_video()
                    && sample.keyframe
                    && span >= MIN_FRAGMENT.as_nanos();
                if at_keyframe || end.saturating_sub(start) > MAX_FRAGMENT.as_nanos() {
                    fragment = self.cut(at)?;
                }
            }
            self.tracks[track].queue.push_back(sample);
        } else {
            self.tracks[track].queue.push_back(sample);
            if let Some(start) = self.fragment_start()
                && end.saturating_sub(start) > (MAX_FRAGMENT + STALL_SLACK).as_nanos()
            {
                fragment = self.cut(start + MAX_FRAGMENT.as_nanos())?;
            }
        }
        Ok(fragment)
    }

    /// The decode time (ns) of the earliest sample waiting for a fragment.
    fn fragment_start(&self) -> Option<u128> {
        self.tracks
            .iter()
            .zip(&self.configs)
            .filter_map(|(t, c)| t.queue.front().map(|s| nanos(s.dts, c.timescale())))
            .min()
    }

    /// Closes a fragment of every queued sample that starts before `before`
    /// (ns); `None` if there is none.
    fn cut(&mut self, before: u128) -> Result<Option<Fragment>, MuxError> {
        let mut runs = Vec::new();
        for (i, (state, config)) in self.tracks.iter_mut().zip(&self.configs).enumerate() {
            let timescale = config.timescale();
            let n = state
                .queue
                .iter()
                .take_while(|s| nanos(s.dts, timescale) < before)
                .count();
            if n > 0 {
                runs.push((i, state.queue.drain(..n).collect::<Vec<_>>()));
            }
        }
        if runs.is_empty() {
            return Ok(None);
        }
        let reference = runs
            .iter()
            .find(|(i, _)| *i == self.reference)
            .or_else(|| runs.first());
        let (keyframe_start, wall_clock, reference_track) = match reference {
            Some((i, samples)) => {
                let first = samples.first();
                (
                    *i != self.reference || first.is_some_and(|s| s.keyframe),
                    first.map_or(UNIX_EPOCH, |s| s.wall_clock),
                    *i,
                )
            }
            None => (true, UNIX_EPOCH, self.reference),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.samples += runs.iter().map(|(_, s)| s.len() as u64).sum::<u64>();
        let runs: Vec<boxes::Run<'_>> = runs
            .iter()
            .map(|(i, samples)| boxes::Run {
                track_id: *i as u32 + 1,
                timescale: self.configs[*i].timescale(),
                samples: samples
                    .iter()
                    .map(|s| boxes::RunSample {
                        dts: s.dts,
                        info: SampleInfo {
                            size: s.data.len() as u32,
                            duration: s.duration,
                            cts_offset: s.cts_offset,
                            sync: s.keyframe,
                        },
                        data: &s.data,
                    })
                    .collect(),
            })
            .collect();
        let fragment = boxes::fragment(
            seq,
            reference_track as u32 + 1,
            keyframe_start,
            ntp(wall_clock),
            &runs,
        )?;
        Ok(Some(fragment))
    }
}

fn ready(sample: Sample, duration: u32) -> Ready {
    Ready {
        dts: sample.dts,
        duration,
        cts_offset: sample.cts_offset,
        keyframe: sample.keyframe,
        data: sample.data,
        wall_clock: sample.wall_clock,
    }
}

/// Ticks to nanoseconds, to compare times of tracks with different clocks.
fn nanos(ticks: u64, timescale: u32) -> u128 {
    u128::from(ticks) * 1_000_000_000 / u128::from(timescale.max(1))
}

/// A wall-clock time as a 64-bit NTP timestamp (seconds since 1900 in the
/// high half, the fraction in the low half). Times before 1970 give 0.
pub fn ntp(time: SystemTime) -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let Ok(since) = time.duration_since(UNIX_EPOCH) else {
        return 0;
    };
    let secs = since.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

#[cfg(test)]
mod tests;
