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
    /// AV1, the AOMedia RTP payload format (aggregation header `Z|Y|W|N`).
    Av1,
}

/// Whether this RTP payload starts a keyframe (or carries the parameter sets
/// that precede one). A decoder can begin at such a packet.
pub fn is_keyframe_start(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::H264 => h264_is_keyframe_start(payload),
        VideoCodec::Vp8 => vp8_is_keyframe_start(payload),
        VideoCodec::Vp9 => vp9_is_keyframe_start(payload),
        VideoCodec::Av1 => av1_is_keyframe_start(payload),
    }
}

/// AV1 aggregation header: `Z|Y|W W|N|0 0 0`.
const AV1_Z: u8 = 0x80;
const AV1_N: u8 = 0x08;
const AV1_OBU_SEQUENCE_HEADER: u8 = 1;

fn av1_is_keyframe_start(payload: &[u8]) -> bool {
    // N: the first packet of a coded video sequence (a key frame with its
    // sequence header); it starts an OBU (Z clear).
    payload
        .first()
        .is_some_and(|&h| h & AV1_N != 0 && h & AV1_Z == 0)
}

/// The first OBU element of an AV1 payload, if it is whole and the packet
/// starts a coded video sequence.
fn av1_first_obu(payload: &[u8]) -> Option<&[u8]> {
    if !av1_is_keyframe_start(payload) {
        return None;
    }
    let w = (payload[0] >> 4) & 0x03;
    let rest = payload.get(1..)?;
    if w == 1 {
        // One element, without a length, running to the end.
        return Some(rest);
    }
    let (len, n) = read_leb128(rest)?;
    rest.get(n..n.checked_add(len)?)
}

/// Reads an AV1 LEB128 value (OBU sizes, RTP element lengths): (value,
/// bytes read); `None` if it does not end within 8 bytes or the data.
pub fn read_leb128(data: &[u8]) -> Option<(usize, usize)> {
    let mut value: u64 = 0;
    for (i, b) in data.iter().take(8).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((usize::try_from(value).ok()?, i + 1));
        }
    }
    None
}

/// The largest picture an AV1 sequence header allows (max_frame_width and
/// max_frame_height; AV1 spec 5.5), from a sequence header OBU without
/// size field (as RTP carries it).
fn av1_sequence_size(obu: &[u8]) -> Option<(u32, u32)> {
    let header = *obu.first()?;
    if (header >> 3) & 0x0f != AV1_OBU_SEQUENCE_HEADER {
        return None;
    }
    let mut at = 1 + usize::from(header & 0x04 != 0);
    if header & 0x02 != 0 {
        // A size field after all: skip it.
        at += read_leb128(obu.get(at..)?)?.1;
    }
    let mut r = BitReader {
        data: obu.get(at..)?,
        pos: 0,
    };
    r.bits(3)?; // seq_profile
    r.bits(1)?; // still_picture
    let reduced = r.bits(1)? == 1;
    if reduced {
        r.bits(5)?; // seq_level_idx[0]
    } else {
        let timing_info = r.bits(1)? == 1;
        let mut decoder_model = false;
        let mut buffer_delay_len = 0;
        if timing_info {
            r.bits(32)?; // num_units_in_display_tick
            r.bits(32)?; // time_scale
            if r.bits(1)? == 1 {
                r.uvlc()?; // num_ticks_per_picture_minus_1
            }
            decoder_model = r.bits(1)? == 1;
            if decoder_model {
                buffer_delay_len = r.bits(5)? as u32 + 1;
                r.bits(32)?; // num_units_in_decoding_tick
                r.bits(5)?; // buffer_removal_time_length_minus_1
                r.bits(5)?; // frame_presentation_time_length_minus_1
            }
        }
        let initial_display_delay = r.bits(1)? == 1;
        let points = r.bits(5)? + 1;
        for _ in 0..points {
            r.bits(12)?; // operating_point_idc
            if r.bits(5)? > 7 {
                r.bits(1)?; // seq_tier
            }
            if decoder_model && r.bits(1)? == 1 {
                r.bits(buffer_delay_len)?; // decoder_buffer_delay
                r.bits(buffer_delay_len)?; // encoder_buffer_delay
                r.bits(1)?; // low_delay_mode_flag
            }
            if initial_display_delay && r.bits(1)? == 1 {
                r.bits(4)?;
            }
        }
    }
    let w_bits = r.bits(4)? as u32 + 1;
    let h_bits = r.bits(4)? as u32 + 1;
    let w = r.bits(w_bits)? + 1;
    let h = r.bits(h_bits)? + 1;
    Some((w as u32, h as u32))
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

/// The picture size (width, height in pixels) a keyframe packet announces,
/// if this packet carries it: the SPS for H.264 (alone, or inside a STAP-A),
/// the keyframe header for VP8, the sequence header (its largest picture)
/// for AV1; never for VP9. Any bytes at all may be
/// passed: a payload it cannot read is `None`.
pub fn picture_size(codec: VideoCodec, payload: &[u8]) -> Option<(u32, u32)> {
    match codec {
        VideoCodec::H264 => {
            let first = *payload.first()?;
            match first & 0x1f {
                H264_SPS => h264_sps_size(payload),
                H264_STAP_A => {
                    let mut rest = payload.get(1..)?;
                    while rest.len() > 2 {
                        let size = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                        let nal = rest.get(2..2 + size)?;
                        if nal.first().is_some_and(|h| h & 0x1f == H264_SPS) {
                            return h264_sps_size(nal);
                        }
                        rest = &rest[2 + size..];
                    }
                    None
                }
                _ => None,
            }
        }
        VideoCodec::Vp8 => vp8_size(payload),
        VideoCodec::Vp9 => None,
        VideoCodec::Av1 => av1_first_obu(payload).and_then(av1_sequence_size),
    }
}

fn vp8_size(payload: &[u8]) -> Option<(u32, u32)> {
    if !vp8_is_keyframe_start(payload) {
        return None;
    }
    let b0 = payload[0];
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *payload.get(1)?;
        i = 2;
        if x & 0x80 != 0 {
            i += if payload.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    // 3-byte frame tag, 3-byte start code 9d 01 2a, then 14-bit sizes.
    let h = payload.get(i..i + 10)?;
    if h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([h[6], h[7]]) & 0x3fff;
    let ht = u16::from_le_bytes([h[8], h[9]]) & 0x3fff;
    Some((w as u32, ht as u32))
}

/// Reads width and height from an H.264 SPS NAL (header byte included).
fn h264_sps_size(nal: &[u8]) -> Option<(u32, u32)> {
    // Strip emulation prevention bytes (00 00 03 -> 00 00).
    let mut rbsp = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal.get(1..)? {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut r = BitReader {
        data: &rbsp,
        pos: 0,
    };
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bits(1)?;
        }
        r.ue()?; // bit_depth_luma
        r.ue()?; // bit_depth_chroma
        r.bits(1)?;
        if r.bits(1)? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bits(1)? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num
    let poc_type = r.ue()?;
    if poc_type == 0 {
        r.ue()?;
    } else if poc_type == 1 {
        r.bits(1)?;
        r.se()?;
        r.se()?;
        let n = r.ue()?;
        if n > 255 {
            return None;
        }
        for _ in 0..n {
            r.se()?;
        }
    }
    r.ue()?; // max_num_ref_frames
    r.bits(1)?;
    let w_mbs = r.ue()? + 1;
    let h_map = r.ue()? + 1;
    let frame_mbs_only = r.bits(1)?;
    if frame_mbs_only == 0 {
        r.bits(1)?;
    }
    r.bits(1)?; // direct_8x8_inference
    let (mut cl, mut cr, mut ct, mut cb) = (0, 0, 0, 0);
    if r.bits(1)? == 1 {
        cl = r.ue()?;
        cr = r.ue()?;
        ct = r.ue()?;
        cb = r.ue()?;
    }
    let (sub_w, sub_h) = match chroma_format_idc {
        0 | 3 => (1, 1),
        2 => (2, 1),
        _ => (2, 2),
    };
    let crop_x = sub_w;
    let crop_y = sub_h * (2 - frame_mbs_only);
    let width = (w_mbs * 16).checked_sub((cl + cr) * crop_x)?;
    let height = (h_map * 16 * (2 - frame_mbs_only)).checked_sub((ct + cb) * crop_y)?;
    Some((width as u32, height as u32))
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bits(&mut self, n: u32) -> Option<u64> {
        let mut v = 0u64;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            let bit = (byte >> (7 - (self.pos % 8))) & 1;
            v = (v << 1) | bit as u64;
            self.pos += 1;
        }
        Some(v)
    }

    fn ue(&mut self) -> Option<u64> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u64 << zeros) - 1 + self.bits(zeros)?)
    }

    /// AV1's uvlc(): leading zeros, then as many bits.
    fn uvlc(&mut self) -> Option<u64> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros >= 32 {
                return None;
            }
        }
        Some((1u64 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i64> {
        let v = self.ue()? as i64;
        Some(if v % 2 == 1 { (v + 1) / 2 } else { -(v / 2) })
    }
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

    #[test]
    fn h264_sps_sizes() {
        // SPSs from x264 (ffmpeg): baseline 320x180 and 1280x720 (both
        // cropped from whole macroblocks), high profile 640x360.
        let sps_320x180 = [
            0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0x9f, 0x9f, 0x01, 0x10, 0x00, 0x00, 0x03,
            0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0xa4, 0x80,
        ];
        assert_eq!(
            picture_size(VideoCodec::H264, &sps_320x180),
            Some((320, 180))
        );
        let sps_1280x720 = [
            0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
            0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x24, 0x80,
        ];
        assert_eq!(
            picture_size(VideoCodec::H264, &sps_1280x720),
            Some((1280, 720))
        );
        let sps_high_640x360 = [
            0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00,
            0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
        ];
        assert_eq!(
            picture_size(VideoCodec::H264, &sps_high_640x360),
            Some((640, 360))
        );
        // A constrained-baseline SPS for 640x480.
        let sps_640x480 = [
            0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xf6, 0x9b, 0x80, 0x87, 0x83, 0x03, 0x05,
            0x06, 0x0a,
        ];
        assert_eq!(
            picture_size(VideoCodec::H264, &sps_640x480),
            Some((640, 480))
        );
        // Inside a STAP-A.
        let mut stap = vec![0x78, 0x00, sps_640x480.len() as u8];
        stap.extend_from_slice(&sps_640x480);
        assert_eq!(picture_size(VideoCodec::H264, &stap), Some((640, 480)));
        // Truncated SPS: no size, no panic.
        assert_eq!(picture_size(VideoCodec::H264, &sps_640x480[..5]), None);
        assert_eq!(picture_size(VideoCodec::H264, &[0x65, 0x00]), None);
    }

    #[test]
    fn av1_keyframes_by_the_n_bit_and_size_from_the_sequence_header() {
        // rav1e's sequence header for 320x180 (no size field), as the first
        // of two elements (W=2) of a packet that starts a sequence (N).
        let seq = [
            0x08, 0x00, 0x00, 0x00, 0xfa, 0x1e, 0x7f, 0x66, 0x21, 0x0a, 0x80, 0xa0,
        ];
        let mut key = vec![0x28, seq.len() as u8];
        key.extend_from_slice(&seq);
        key.extend_from_slice(&[0x30, 1, 2, 3]);
        assert!(is_keyframe_start(VideoCodec::Av1, &key));
        assert_eq!(picture_size(VideoCodec::Av1, &key), Some((320, 180)));
        // W=1: the one element runs to the end.
        let mut one = vec![0x18];
        one.extend_from_slice(&seq);
        assert_eq!(picture_size(VideoCodec::Av1, &one), Some((320, 180)));
        // W=0: every element has a length.
        key[0] = 0x08;
        assert_eq!(picture_size(VideoCodec::Av1, &key), Some((320, 180)));
        // No N, or a continuation (Z): not a start, no size.
        assert!(!is_keyframe_start(VideoCodec::Av1, &[0x10, 0x30, 0]));
        assert!(!is_keyframe_start(VideoCodec::Av1, &[0x88, 0x30, 0]));
        assert_eq!(picture_size(VideoCodec::Av1, &[0x10, 0x30, 0]), None);
        // Truncated headers and lengths past the end: none, never a panic.
        for n in 0..key.len() {
            let _ = picture_size(VideoCodec::Av1, &key[..n]);
        }
        assert_eq!(picture_size(VideoCodec::Av1, &key[..8]), None);
        assert_eq!(picture_size(VideoCodec::Av1, &[0x08, 0xff]), None);
        assert!(!is_keyframe_start(VideoCodec::Av1, &[]));
        // A first element that is not a sequence header: no size.
        assert_eq!(picture_size(VideoCodec::Av1, &[0x18, 0x30, 0, 0]), None);
    }

    #[test]
    fn vp8_keyframe_size() {
        let p = [
            0x10, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, 0x00,
        ];
        assert_eq!(picture_size(VideoCodec::Vp8, &p), Some((640, 480)));
        assert_eq!(picture_size(VideoCodec::Vp8, &p[..8]), None);
    }
}
