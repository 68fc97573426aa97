//! RTP payloads in, whole media frames out: H.264 (RFC 6184: single NAL
//! unit, STAP-A, FU-A), VP8 (RFC 7741) and Opus (RFC 7587).
//!
//! Packets go in with the values a `MediaPacket` carries (extended sequence
//! number, RTP timestamp, marker bit, payload) in arrival order. A small
//! reorder buffer puts them back in sequence order, so a retransmission that
//! arrives a little late still completes its frame. A frame is handed out
//! only when every packet of it is there and well-formed: after a loss, or
//! when a stream starts mid-picture, video frames are dropped until the next
//! keyframe and [`Push::keyframe_needed`] asks the caller to request one
//! (PLI/FIR). Nothing here trusts the payload: malformed input is counted in
//! [`Stats`] and dropped, never a panic.
//!
//! There is no clock: a hole in the sequence is declared lost once
//! `reorder_window` packets have arrived after it, or at [`Depacketizer::flush`].

mod h264;
mod vp8;

use std::collections::BTreeMap;

use crate::mux::TrackConfig;

/// The codec of a depacketizer's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// H.264 (RFC 6184, packetization mode 1).
    H264,
    /// VP8 (RFC 7741).
    Vp8,
    /// Opus (RFC 7587).
    Opus,
}

impl Codec {
    /// Whether frames of this codec depend on earlier ones (so a loss
    /// means waiting for a keyframe).
    pub fn is_video(self) -> bool {
        matches!(self, Codec::H264 | Codec::Vp8)
    }
}

/// One whole frame (a video picture or an Opus packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The RTP timestamp extended to 64 bits across 32-bit wraps. Only
    /// differences between frames of one stream mean anything; the first
    /// frame's value is its 32-bit timestamp plus 2^32, so a slightly
    /// earlier timestamp after it still has room.
    pub rtp_ts: u64,
    /// Whether it can be decoded without earlier frames (H.264 IDR, VP8 key
    /// frame; every Opus frame).
    pub keyframe: bool,
    /// The frame as an MP4 sample stores it. H.264: AVCC, each NAL unit
    /// behind a 4-byte big-endian length, in stream order; SPS/PPS stay
    /// in-band as the publisher sent them (so a mid-stream change of
    /// parameters reaches the decoder), access unit delimiters and filler
    /// are dropped. VP8: the frame as the encoder wrote it. Opus: the packet.
    pub data: Vec<u8>,
}

/// What one [`Depacketizer::push`] produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[must_use]
pub struct Push {
    /// Frames completed by this packet, oldest first (usually zero or one;
    /// more when a late packet completes several).
    pub frames: Vec<Frame>,
    /// The stream lost data (or started without a keyframe) and frames are
    /// being dropped until the next keyframe: send the publisher a keyframe
    /// request. Raised when that state begins and again every
    /// [`KEYFRAME_REREQUEST_FRAMES`] dropped frames while it lasts.
    pub keyframe_needed: bool,
}

/// While waiting for a keyframe, the request is repeated after this many
/// dropped frames (a second at 30 fps), in case the first one was lost.
pub const KEYFRAME_REREQUEST_FRAMES: u64 = 30;

/// Counters of what a depacketizer received and dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Packets pushed.
    pub packets: u64,
    /// Packets that came after their frame was already handed out or given
    /// up, or twice.
    pub late_or_duplicate: u64,
    /// Frames handed out.
    pub frames: u64,
    /// Holes in the sequence given up on.
    pub losses: u64,
    /// Frames dropped because a payload was malformed or incomplete.
    pub malformed: u64,
    /// Whole frames dropped while waiting for a keyframe.
    pub skipped: u64,
    /// Keyframe requests raised.
    pub keyframe_requests: u64,
}

/// Reassembles frames of one RTP stream (one SSRC).
#[derive(Debug)]
pub struct Depacketizer {
    codec: Codec,
    reorder: Reorder,
    last_ts: Option<u64>,
    waiting_keyframe: bool,
    /// Frames dropped since the last keyframe request of this wait (`None`:
    /// none asked for yet, as when the stream starts on a delta frame).
    since_request: Option<u64>,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    size: Option<(u32, u32)>,
    stats: Stats,
}

/// How many packets may arrive after a hole before it is declared lost:
/// enough for a retransmission's round trip at a few megabits per second.
pub const DEFAULT_REORDER_WINDOW: usize = 64;

/// A frame of more packets than this is dropped as malformed (it bounds the
/// memory a publisher that never sets the marker bit can take).
const MAX_FRAME_PACKETS: usize = 8192;

impl Depacketizer {
    /// A depacketizer with the default reorder window.
    pub fn new(codec: Codec) -> Self {
        Self::with_reorder_window(codec, DEFAULT_REORDER_WINDOW)
    }

    /// A depacketizer that declares a hole lost once `window` packets have
    /// arrived after it (0: at once, for input known to be in order).
    pub fn with_reorder_window(codec: Codec, window: usize) -> Self {
        Depacketizer {
            codec,
            reorder: Reorder::new(window, codec == Codec::Opus),
            last_ts: None,
            waiting_keyframe: codec.is_video(),
            since_request: None,
            sps: None,
            pps: None,
            size: None,
            stats: Stats::default(),
        }
    }

    /// The stream's codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// What was received and dropped so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The latest H.264 sequence parameter set seen.
    pub fn sps(&self) -> Option<&[u8]> {
        self.sps.as_deref()
    }

    /// The latest H.264 picture parameter set seen.
    pub fn pps(&self) -> Option<&[u8]> {
        self.pps.as_deref()
    }

    /// The picture size of the latest keyframe (video only).
    pub fn video_size(&self) -> Option<(u32, u32)> {
        self.size
    }

    /// The muxer track for this stream, once it is known: for video after
    /// the first keyframe handed out (it needs the picture size, and for
    /// H.264 the parameter sets). Opus is assumed to be signalled as
    /// stereo (`opus/48000/2`), as WebRTC always does.
    pub fn track_config(&self) -> Option<TrackConfig> {
        match self.codec {
            Codec::H264 => {
                let (width, height) = self.size?;
                Some(TrackConfig::H264 {
                    sps: self.sps.clone()?,
                    pps: self.pps.clone()?,
                    width,
                    height,
                })
            }
            Codec::Vp8 => {
                let (width, height) = self.size?;
                Some(TrackConfig::Vp8 { width, height })
            }
            Codec::Opus => Some(TrackConfig::Opus { channels: 2 }),
        }
    }

    /// Takes one RTP packet and hands out the frames it completes.
    pub fn push(&mut self, seq: u64, rtp_ts: u32, marker: bool, payload: &[u8]) -> Push {
        self.stats.packets += 1;
        if !self.reorder.insert(seq, rtp_ts, marker, payload) {
            self.stats.late_or_duplicate += 1;
        }
        self.drain(false)
    }

    /// The stream ended: hands out the frames that are whole and gives up
    /// on the rest.
    pub fn flush(&mut self) -> Push {
        self.drain(true)
    }

    fn drain(&mut self, flush: bool) -> Push {
        let mut push = Push::default();
        while let Some(run) = self.reorder.pop(flush) {
            match run {
                Run::Lost => {
                    self.stats.losses += 1;
                    self.lose(&mut push);
                }
                Run::Frame { packets, after_gap } => {
                    let Some(first) = packets.first() else {
                        continue;
                    };
                    let rtp_ts = self.extend_ts(first.ts);
                    match self.assemble(&packets) {
                        Ok(Some(assembled)) => self.accept(assembled, rtp_ts, after_gap, &mut push),
                        Ok(None) => {}
                        Err(Malformed) => {
                            self.stats.malformed += 1;
                            self.lose(&mut push);
                        }
                    }
                }
            }
        }
        push
    }

    fn assemble(&mut self, packets: &[Packet]) -> Result<Option<Assembled>, Malformed> {
        match self.codec {
            Codec::H264 => {
                let Some(au) = h264::assemble(packets.iter().map(|p| p.payload.as_slice()))? else {
                    return Ok(None);
                };
                if let Some(sps) = au.sps {
                    self.sps = Some(sps);
                }
                if let Some(pps) = au.pps {
                    self.pps = Some(pps);
                }
                // An IDR is only a usable keyframe once the parameter sets
                // it refers to (and the picture size) are known.
                let keyframe = au.idr && self.sps.is_some() && self.pps.is_some();
                if keyframe && let Some(sps) = self.sps.as_deref() {
                    match crate::h264::parse_sps(sps) {
                        Ok(sps) => self.size = Some((sps.width, sps.height)),
                        Err(_) => return Err(Malformed),
                    }
                }
                Ok(Some(Assembled {
                    data: au.data,
                    keyframe,
                    starts_cleanly: au.starts_picture,
                }))
            }
            Codec::Vp8 => {
                let frame = vp8::assemble(packets.iter().map(|p| p.payload.as_slice()))?;
                if let Some(size) = frame.size {
                    self.size = Some(size);
                }
                Ok(Some(Assembled {
                    data: frame.data,
                    keyframe: frame.keyframe,
                    starts_cleanly: true,
                }))
            }
            Codec::Opus => {
                // RFC 7587: one Opus packet per RTP packet, never split.
                let [packet] = packets else {
                    return Err(Malformed);
                };
                if packet.payload.is_empty() {
                    return Err(Malformed);
                }
                Ok(Some(Assembled {
                    data: packet.payload.clone(),
                    keyframe: true,
                    starts_cleanly: true,
                }))
            }
        }
    }

    fn accept(&mut self, frame: Assembled, rtp_ts: u64, after_gap: bool, push: &mut Push) {
        let usable = !after_gap || frame.starts_cleanly;
        if self.waiting_keyframe {
            if !(frame.keyframe && usable) {
                self.stats.skipped += 1;
                match self.since_request {
                    Some(n) if n + 1 < KEYFRAME_REREQUEST_FRAMES => {
                        self.since_request = Some(n + 1);
                    }
                    _ => self.request_keyframe(push),
                }
                return;
            }
            self.waiting_keyframe = false;
            self.since_request = None;
        } else if !usable {
            self.stats.malformed += 1;
            self.lose(push);
            return;
        }
        self.stats.frames += 1;
        push.frames.push(Frame {
            rtp_ts,
            keyframe: frame.keyframe,
            data: frame.data,
        });
    }

    fn lose(&mut self, push: &mut Push) {
        if !self.codec.is_video() || self.waiting_keyframe {
            return;
        }
        self.waiting_keyframe = true;
        self.request_keyframe(push);
    }

    fn request_keyframe(&mut self, push: &mut Push) {
        self.since_request = Some(0);
        if !push.keyframe_needed {
            self.stats.keyframe_requests += 1;
        }
        push.keyframe_needed = true;
    }

    /// Extends a 32-bit RTP timestamp by the shortest signed step from the
    /// previous frame's, so it keeps counting across the wrap.
    fn extend_ts(&mut self, ts: u32) -> u64 {
        let ext = match self.last_ts {
            None => u64::from(ts) + (1 << 32),
            Some(last) => {
                let step = i64::from(ts.wrapping_sub(last as u32) as i32);
                last.checked_add_signed(step).unwrap_or(last)
            }
        };
        self.last_ts = Some(ext);
        ext
    }
}

/// A frame's bytes after codec-specific reassembly.
struct Assembled {
    data: Vec<u8>,
    keyframe: bool,
    /// The payload shows the frame's first packet is there (H.264: the
    /// first slice has `first_mb_in_slice` 0; VP8: S bit on partition 0).
    starts_cleanly: bool,
}

/// A payload that cannot be (part of) a valid frame.
#[derive(Debug)]
struct Malformed;

#[derive(Debug)]
struct Packet {
    ts: u32,
    marker: bool,
    payload: Vec<u8>,
}

/// What the reorder buffer hands out, in sequence order.
#[derive(Debug)]
enum Run {
    /// Packets were missing: what was held of the frame around the hole is
    /// dropped.
    Lost,
    /// The packets of one frame, contiguous, ending at a marker bit or at a
    /// change of timestamp. `after_gap`: the packet before the first one
    /// was lost or never seen, so the frame's start is not certain.
    Frame {
        packets: Vec<Packet>,
        after_gap: bool,
    },
}

#[derive(Debug)]
struct Reorder {
    window: usize,
    /// Every packet is a whole frame (audio), so a run never waits for the
    /// next packet to see where it ends.
    single: bool,
    packets: BTreeMap<u64, Packet>,
    /// The sequence number the next run starts at.
    next: Option<u64>,
    after_gap: bool,
}

impl Reorder {
    fn new(window: usize, single: bool) -> Self {
        Reorder {
            window,
            single,
            packets: BTreeMap::new(),
            next: None,
            after_gap: true,
        }
    }

    /// Keeps a packet; false if it is late or a duplicate.
    fn insert(&mut self, seq: u64, ts: u32, marker: bool, payload: &[u8]) -> bool {
        if self.next.is_some_and(|n| seq < n) || self.packets.contains_key(&seq) {
            return false;
        }
        self.packets.insert(
            seq,
            Packet {
                ts,
                marker,
                payload: payload.to_vec(),
            },
        );
        true
    }

    fn pop(&mut self, flush: bool) -> Option<Run> {
        let (&first, head) = self.packets.first_key_value()?;
        let start = self.next.unwrap_or(first);
        if first != start {
            if !flush && self.packets.len() <= self.window {
                return None;
            }
            self.next = Some(first);
            self.after_gap = true;
            return Some(Run::Lost);
        }
        let ts = head.ts;
        let mut seq = start;
        let end = loop {
            match self.packets.get(&seq) {
                Some(p) if p.ts != ts => break seq - 1,
                Some(p) if p.marker || self.single => break seq,
                Some(_) if seq - start >= MAX_FRAME_PACKETS as u64 => {
                    self.drop_through(seq);
                    return Some(Run::Lost);
                }
                Some(_) => seq += 1,
                None => {
                    let after = self.packets.range(seq..).count();
                    if flush || after > self.window {
                        // Part of the frame is missing: drop what was held
                        // of it, and go on at the next packet there is.
                        self.packets = self.packets.split_off(&seq);
                        let next = self.packets.first_key_value().map_or(seq, |(&k, _)| k);
                        self.next = Some(next);
                        self.after_gap = true;
                        return Some(Run::Lost);
                    }
                    return None;
                }
            }
        };
        let rest = self.packets.split_off(&(end + 1));
        let run = std::mem::replace(&mut self.packets, rest);
        self.next = Some(end + 1);
        let after_gap = std::mem::replace(&mut self.after_gap, false);
        Some(Run::Frame {
            packets: run.into_values().collect(),
            after_gap,
        })
    }

    fn drop_through(&mut self, last: u64) {
        self.packets = self.packets.split_off(&(last + 1));
        self.next = Some(last + 1);
        self.after_gap = true;
    }
}

#[cfg(test)]
mod tests;
