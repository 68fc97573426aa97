//! Just enough payload parsing to know where a picture starts: a consumer that
//! joins mid-stream must begin on a keyframe, or the viewer's decoder shows
//! garbage until the next one. Everything here reads network bytes, so every
//! index is checked and a short or odd payload is simply "not a keyframe".

/// The video codecs the SFU understands well enough to find keyframes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264, RFC 6184 packetization.
    H264,
    /// VP8, RFC 7741 packetization.
    Vp8,
    /// VP9, draft-ietf-payload-vp9 packetization.
    Vp9,
}

/// Whether this RTP payload starts a keyframe (or carries the parameter sets
/// that precede one). A decoder can begin at such a packet.
pub fn is_keyframe_start(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::H264 => h264_is_keyframe_start(payload),
        VideoCodec::Vp8 => vp8_is_keyframe_start(payload),
        VideoCodec::Vp9 => vp9_is_keyframe_start(payload),
    }
}

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

fn h264_is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        H264_IDR | H264_SPS => true,
        H264_STAP_A => {
            // Aggregation packet: a sequence of (u16 size, NAL) after the header.
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                let Some(nal) = rest.get(2..2 + size) else {
                    return false;
                };
                if let Some(&h) = nal.first()
                    && matches!(h & 0x1f, H264_IDR | H264_SPS)
                {
                    return true;
                }
                rest = &rest[2 + size..];
            }
            false
        }
        H264_FU_A => {
            let Some(&fu_header) = payload.get(1) else {
                return false;
            };
            let start = fu_header & 0x80 != 0;
            start && matches!(fu_header & 0x1f, H264_IDR | H264_SPS)
        }
        _ => false,
    }
}

fn vp8_is_keyframe_start(payload: &[u8]) -> bool {
    // RFC 7741 section 4.2: payload descriptor, then the VP8 payload header.
    let Some(&b0) = payload.first() else {
        return false;
    };
    let extended = b0 & 0x80 != 0;
    let start_of_partition = b0 & 0x10 != 0;
    let partition_id = b0 & 0x0f;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut i = 1;
    if extended {
        let Some(&x) = payload.get(i) else {
            return false;
        };
        i += 1;
        if x & 0x80 != 0 {
            // PictureID, 7 or 15 bits.
            let Some(&p) = payload.get(i) else {
                return false;
            };
            i += if p & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    // VP8 payload header: the inverse key frame flag is bit 0 of the first byte.
    payload.get(i).is_some_and(|h| h & 0x01 == 0)
}

fn vp9_is_keyframe_start(payload: &[u8]) -> bool {
    // Flexible/non-flexible descriptor: I|P|L|F|B|E|V|Z. A keyframe is a
    // start of frame (B) that is not inter-predicted (P == 0).
    let Some(&b0) = payload.first() else {
        return false;
    };
    let inter_predicted = b0 & 0x40 != 0;
    let begin = b0 & 0x08 != 0;
    begin && !inter_predicted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_single_nal_types() {
        assert!(is_keyframe_start(VideoCodec::H264, &[0x65, 0x88]));
        assert!(is_keyframe_start(VideoCodec::H264, &[0x67, 0x42]));
        assert!(!is_keyframe_start(VideoCodec::H264, &[0x41, 0x9a]));
        assert!(!is_keyframe_start(VideoCodec::H264, &[]));
    }

    #[test]
    fn h264_stap_a_with_sps() {
        // STAP-A carrying SEI (6) then SPS (7).
        let p = [0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x67, 0x42];
        assert!(is_keyframe_start(VideoCodec::H264, &p));
        let p = [0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x41, 0x42];
        assert!(!is_keyframe_start(VideoCodec::H264, &p));
        // Truncated sizes never read out of bounds.
        let p = [0x78, 0x00, 0x09, 0x06];
        assert!(!is_keyframe_start(VideoCodec::H264, &p));
    }

    #[test]
    fn h264_fu_a_start_and_middle() {
        assert!(is_keyframe_start(VideoCodec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!is_keyframe_start(VideoCodec::H264, &[0x7c, 0x05, 0x00]));
        assert!(!is_keyframe_start(VideoCodec::H264, &[0x7c, 0x81, 0x00]));
        assert!(!is_keyframe_start(VideoCodec::H264, &[0x7c]));
    }

    #[test]
    fn vp8_descriptor_variants() {
        // Minimal descriptor, S=1 PID=0, keyframe (bit0 = 0).
        assert!(is_keyframe_start(VideoCodec::Vp8, &[0x10, 0x00]));
        // Interframe.
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[0x10, 0x01]));
        // Extended with 15-bit picture id.
        assert!(is_keyframe_start(
            VideoCodec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x00]
        ));
        // Not a partition start.
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[0x00, 0x00]));
        // Truncated.
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[0x90, 0x80]));
    }

    #[test]
    fn vp9_begin_without_inter_prediction() {
        assert!(is_keyframe_start(VideoCodec::Vp9, &[0x08]));
        assert!(!is_keyframe_start(VideoCodec::Vp9, &[0x48]));
        assert!(!is_keyframe_start(VideoCodec::Vp9, &[0x00]));
    }
}
