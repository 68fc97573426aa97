//! `Router`: one per stream. It knows the stream's publisher, its incoming
//! tracks (the Producer) and the viewers whose Consumers read from them: the
//! explicit producer -> consumers map of mediasoup, without callbacks.

use std::time::Duration;

use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Rid};

use crate::PeerId;
use crate::codec::VideoCodec;
use crate::keyframe::KeyframeRequester;

/// Handle of a router inside one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RouterId(pub u64);

pub(crate) struct Router {
    pub name: String,
    pub publisher: Option<PeerId>,
    pub viewers: Vec<PeerId>,
    /// The publisher's incoming tracks (its Producer), at most one per kind.
    pub tracks: Vec<TrackIn>,
}

/// One incoming track of the publisher.
pub(crate) struct TrackIn {
    pub mid: Mid,
    pub kind: MediaKind,
    /// Negotiated primary payload types (no RTX).
    pub params: Vec<PayloadParams>,
    /// The simulcast layer forwarded. Until per-viewer layer selection exists
    /// the first layer that sends is kept.
    pub rid: Option<Rid>,
    pub rid_chosen: bool,
    pub keyframes: KeyframeRequester,
}

impl Router {
    pub fn new(name: String) -> Self {
        Router {
            name,
            publisher: None,
            viewers: Vec::new(),
            tracks: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.publisher.is_none() && self.viewers.is_empty()
    }
}

impl TrackIn {
    pub fn new(mid: Mid, kind: MediaKind, params: Vec<PayloadParams>, kf: Duration) -> Self {
        TrackIn {
            mid,
            kind,
            params,
            rid: None,
            rid_chosen: false,
            keyframes: KeyframeRequester::new(kf),
        }
    }
}

/// The video codec of a payload, if the SFU knows where its keyframes are.
pub(crate) fn video_codec(p: &PayloadParams) -> Option<VideoCodec> {
    use str0m::format::Codec;
    match p.spec().codec {
        Codec::H264 => Some(VideoCodec::H264),
        Codec::Vp8 => Some(VideoCodec::Vp8),
        Codec::Vp9 => Some(VideoCodec::Vp9),
        _ => None,
    }
}

/// Whether a viewer that negotiated `b` can decode what a publisher sends as `a`.
pub(crate) fn compatible(a: &PayloadParams, b: &PayloadParams) -> bool {
    use str0m::format::Codec;
    let (a, b) = (a.spec(), b.spec());
    if a.codec != b.codec || a.clock_rate != b.clock_rate {
        return false;
    }
    match a.codec {
        Codec::H264 => {
            let mode = |p: &str0m::format::CodecSpec| p.format.packetization_mode.unwrap_or(0);
            // profile_idc is the top byte; the level only bounds resolution and
            // rate, which browsers decode beyond what they announce.
            let profile =
                |p: &str0m::format::CodecSpec| p.format.profile_level_id.unwrap_or(0x42001f) >> 16;
            mode(&a) == mode(&b) && profile(&a) == profile(&b)
        }
        Codec::Vp9 => a.format.profile_id.unwrap_or(0) == b.format.profile_id.unwrap_or(0),
        _ => true,
    }
}
