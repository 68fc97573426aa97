//! H.264 bitstream helpers the recorder needs and nothing more: NAL unit
//! types, emulation-prevention removal, and enough of a sequence parameter
//! set (ITU-T H.264 §7.3.2.1.1) to know the picture size and the profile
//! the `avcC` box and the recordings table report.
//!
//! An SPS comes from the network, so every read is bounds-checked and every
//! size computed with checked arithmetic: a malformed SPS is an error value.

/// NAL unit type of a non-IDR coded slice.
pub const NAL_SLICE: u8 = 1;
/// NAL unit type of an IDR (keyframe) coded slice.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of supplemental enhancement information.
pub const NAL_SEI: u8 = 6;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// NAL unit type of an access unit delimiter.
pub const NAL_AUD: u8 = 9;
/// NAL unit type of filler data.
pub const NAL_FILLER: u8 = 12;

/// The fields of a sequence parameter set the recorder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sps {
    /// `profile_idc` (66 baseline, 77 main, 100 high, ...).
    pub profile_idc: u8,
    /// The constraint flags byte (`constraint_set0_flag` ... as one byte).
    pub constraints: u8,
    /// `level_idc` (31 for level 3.1, ...).
    pub level_idc: u8,
    /// `chroma_format_idc` (1 is 4:2:0; implied 1 for profiles without it).
    pub chroma_format_idc: u8,
    /// Luma bit depth (8 unless a high profile says otherwise).
    pub bit_depth_luma: u8,
    /// Chroma bit depth.
    pub bit_depth_chroma: u8,
    /// Displayed width in pixels, after cropping.
    pub width: u32,
    /// Displayed height in pixels, after cropping.
    pub height: u32,
}

/// Why an SPS could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpsError {
    /// The NAL unit is not an SPS.
    #[error("not a sequence parameter set (NAL type {0})")]
    NotSps(u8),
    /// The bitstream ended before the fields the recorder needs.
    #[error("truncated sequence parameter set")]
    Truncated,
    /// A field holds a value the standard does not allow.
    #[error("invalid sequence parameter set: {0}")]
    Invalid(&'static str),
}

/// The NAL unit type of a NAL unit (its first byte), if it has one.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|h| h & 0x1f)
}

/// Parses an SPS NAL unit (with its one-byte NAL header, without a start
/// code or length prefix).
pub fn parse_sps(nal: &[u8]) -> Result<Sps, SpsError> {
    match nal_type(nal) {
        Some(NAL_SPS) => {}
        Some(t) => return Err(SpsError::NotSps(t)),
        None => return Err(SpsError::Truncated),
    }
    let rbsp = unescape(&nal[1..]);
    let mut r = BitReader::new(&rbsp);
    let profile_idc = r.bits(8)? as u8;
    let constraints = r.bits(8)? as u8;
    let level_idc = r.bits(8)? as u8;
    let _sps_id = r.ue_max(31)?;

    let (mut chroma_format_idc, mut bit_depth_luma, mut bit_depth_chroma) = (1u8, 8u8, 8u8);
    let mut separate_colour_plane = false;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue_max(3)? as u8;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        bit_depth_luma = 8 + r.ue_max(6)? as u8;
        bit_depth_chroma = 8 + r.ue_max(6)? as u8;
        let _qpprime_y_zero_transform_bypass = r.flag()?;
        if r.flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }

    let _log2_max_frame_num = r.ue_max(12)?;
    match r.ue_max(2)? {
        0 => {
            let _log2_max_poc_lsb = r.ue_max(12)?;
        }
        1 => {
            let _delta_pic_order_always_zero = r.flag()?;
            let _offset_for_non_ref_pic = r.se()?;
            let _offset_for_top_to_bottom_field = r.se()?;
            let cycle = r.ue_max(255)?;
            for _ in 0..cycle {
                let _offset_for_ref_frame = r.se()?;
            }
        }
        _ => {}
    }
    let _max_num_ref_frames = r.ue()?;
    let _gaps_in_frame_num_allowed = r.flag()?;
    let width_mbs = u64::from(r.ue_max(1 << 16)?) + 1;
    let height_map_units = u64::from(r.ue_max(1 << 16)?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        let _mb_adaptive_frame_field = r.flag()?;
    }
    let _direct_8x8_inference = r.flag()?;
    let crop = if r.flag()? {
        [r.ue()?, r.ue()?, r.ue()?, r.ue()?].map(u64::from)
    } else {
        [0; 4]
    };

    // §7.4.2.1.1: cropping counts in chroma sample units, and in field
    // pairs when the stream may be interlaced.
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let (crop_unit_x, crop_unit_y) = if chroma_format_idc == 0 || separate_colour_plane {
        (1, field_factor)
    } else {
        let sub_width = if chroma_format_idc == 3 { 1 } else { 2 };
        let sub_height = if chroma_format_idc == 1 { 2 } else { 1 };
        (sub_width, sub_height * field_factor)
    };
    let full_width = width_mbs * 16;
    let full_height = height_map_units * 16 * field_factor;
    let width = full_width
        .checked_sub(crop_unit_x * (crop[0] + crop[1]))
        .filter(|w| *w > 0)
        .ok_or(SpsError::Invalid("cropping wider than the picture"))?;
    let height = full_height
        .checked_sub(crop_unit_y * (crop[2] + crop[3]))
        .filter(|h| *h > 0)
        .ok_or(SpsError::Invalid("cropping taller than the picture"))?;
    Ok(Sps {
        profile_idc,
        constraints,
        level_idc,
        chroma_format_idc,
        bit_depth_luma,
        bit_depth_chroma,
        width: u32::try_from(width).map_err(|_| SpsError::Invalid("width"))?,
        height: u32::try_from(height).map_err(|_| SpsError::Invalid("height"))?,
    })
}

/// The RFC 6381 codec string of a stream with this SPS (`avc1.64001f`).
pub fn codec_string(sps: &Sps) -> String {
    format!(
        "avc1.{:02x}{:02x}{:02x}",
        sps.profile_idc, sps.constraints, sps.level_idc
    )
}

/// Whether a coded slice NAL unit starts a picture: its slice header's
/// `first_mb_in_slice` is 0. Used after a loss, to accept a frame only if
/// its first slice is there.
pub fn slice_starts_picture(nal: &[u8]) -> bool {
    if !matches!(nal_type(nal), Some(NAL_SLICE | NAL_IDR)) {
        return false;
    }
    // first_mb_in_slice is the first ue(v): 0 is the single bit `1`, and
    // an emulation prevention byte cannot occur before it.
    nal.get(1).is_some_and(|b| b & 0x80 != 0)
}

/// Removes emulation prevention bytes (`00 00 03` → `00 00`).
pub fn unescape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &b in data {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), SpsError> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            let delta = i64::from(r.se()?);
            next = (last + delta + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// A big-endian bit reader with exp-Golomb codes (§9.1).
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    fn bit(&mut self) -> Result<u32, SpsError> {
        let byte = self.data.get(self.pos / 8).ok_or(SpsError::Truncated)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(bit))
    }

    fn flag(&mut self) -> Result<bool, SpsError> {
        Ok(self.bit()? == 1)
    }

    fn bits(&mut self, n: u32) -> Result<u32, SpsError> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    fn ue(&mut self) -> Result<u32, SpsError> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(SpsError::Invalid("exp-Golomb code longer than 32 bits"));
            }
        }
        let rest = self.bits(zeros)?;
        // 2^zeros - 1 + rest, which fits u32 only when zeros < 32.
        ((1u64 << zeros) - 1 + u64::from(rest))
            .try_into()
            .map_err(|_| SpsError::Invalid("exp-Golomb value out of range"))
    }

    fn ue_max(&mut self, max: u32) -> Result<u32, SpsError> {
        let v = self.ue()?;
        if v > max {
            return Err(SpsError::Invalid("field out of range"));
        }
        Ok(v)
    }

    fn se(&mut self) -> Result<i32, SpsError> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        i32::try_from(v).map_err(|_| SpsError::Invalid("signed exp-Golomb out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // SPSs written by x264 (ffmpeg -c:v libx264) for testsrc.
    #[test]
    fn x264_high_720p() {
        let sps = parse_sps(&hex("6764001facd9405005bb0110000003001000000303c0f1831960")).unwrap();
        assert_eq!((sps.width, sps.height), (1280, 720));
        assert_eq!((sps.profile_idc, sps.level_idc), (100, 31));
        assert_eq!(codec_string(&sps), "avc1.64001f");
    }

    #[test]
    fn x264_high_1080p_is_cropped() {
        let sps = parse_sps(&hex(
            "67640028acd940780227e5c044000003000400000300f03c60c658",
        ))
        .unwrap();
        assert_eq!((sps.width, sps.height), (1920, 1080));
        assert_eq!(sps.chroma_format_idc, 1);
    }

    #[test]
    fn x264_baseline_360p_is_cropped() {
        let sps = parse_sps(&hex("6742c01ed900a02ff970110000030001000003003c0f162e48")).unwrap();
        assert_eq!((sps.width, sps.height), (640, 360));
        assert_eq!(sps.profile_idc, 66);
    }

    #[test]
    fn high444_with_scaling_lists() {
        // x264 -profile:v high444 -x264-params cqm=jvt: chroma_format_idc 3
        // and a scaling matrix for every list.
        let sps = parse_sps(&hex("67f4001f919b280a00b76022000003000200000300781e30632c")).unwrap();
        assert_eq!((sps.width, sps.height), (1280, 720));
        assert_eq!(sps.chroma_format_idc, 3);
    }

    #[test]
    fn truncated_and_garbage_never_panic() {
        let good = hex("67640028acd940780227e5c044000003000400000300f03c60c658");
        for n in 0..good.len() {
            let _ = parse_sps(&good[..n]);
        }
        assert_eq!(parse_sps(&[0x68, 1]), Err(SpsError::NotSps(8)));
        assert!(parse_sps(&[0x67, 0x64, 0, 0x1f, 0, 0, 0, 0, 0, 0]).is_err());
        // All ones reads as the smallest valid SPS (16x16); it must not panic.
        let _ = parse_sps(&[0x67, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn first_mb_in_slice() {
        assert!(slice_starts_picture(&[0x65, 0x88, 0x84]));
        assert!(!slice_starts_picture(&[0x41, 0x12]));
        assert!(!slice_starts_picture(&[0x67, 0x88]));
        assert!(!slice_starts_picture(&[0x65]));
    }
}
