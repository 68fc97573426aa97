//! RFC 7741 reassembly of one VP8 frame, and the fields of its frame
//! header (RFC 6386 §9.1) the muxer needs.

use super::Malformed;

pub(super) struct Vp8Frame {
    pub data: Vec<u8>,
    pub keyframe: bool,
    /// Width and height from a key frame's header.
    pub size: Option<(u32, u32)>,
}

/// Reassembles the payloads of one frame's packets, in sequence order.
pub(super) fn assemble<'a>(
    payloads: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vp8Frame, Malformed> {
    let mut data = Vec::new();
    for (i, payload) in payloads.into_iter().enumerate() {
        let (start, body) = descriptor(payload)?;
        // The first packet must start partition 0; anything else means the
        // frame's beginning was lost.
        if i == 0 && !start {
            return Err(Malformed);
        }
        data.extend_from_slice(body);
    }
    let &tag = data.first().ok_or(Malformed)?;
    let keyframe = tag & 1 == 0;
    let size = if keyframe {
        // 3-byte frame tag, start code, then 14-bit width and height (the
        // top two bits of each are the upscaling mode).
        let header = data.get(3..10).ok_or(Malformed)?;
        if header[..3] != [0x9d, 0x01, 0x2a] {
            return Err(Malformed);
        }
        let width = u32::from(u16::from_le_bytes([header[3], header[4]]) & 0x3fff);
        let height = u32::from(u16::from_le_bytes([header[5], header[6]]) & 0x3fff);
        if width == 0 || height == 0 {
            return Err(Malformed);
        }
        Some((width, height))
    } else {
        None
    };
    Ok(Vp8Frame {
        data,
        keyframe,
        size,
    })
}

/// Splits the payload descriptor off: whether the packet starts partition
/// 0 of a frame (S bit set, partition index 0), and the VP8 bytes.
fn descriptor(payload: &[u8]) -> Result<(bool, &[u8]), Malformed> {
    let &first = payload.first().ok_or(Malformed)?;
    let start = first & 0x10 != 0 && first & 0x07 == 0;
    let mut at = 1;
    if first & 0x80 != 0 {
        let &ext = payload.get(1).ok_or(Malformed)?;
        at = 2;
        if ext & 0x80 != 0 {
            // PictureID: 7 bits, or 15 when its M bit is set.
            let &pid = payload.get(at).ok_or(Malformed)?;
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    let body = payload
        .get(at..)
        .filter(|b| !b.is_empty())
        .ok_or(Malformed)?;
    Ok((start, body))
}
