//! RFC 6184 reassembly (packetization mode 1: single NAL unit, STAP-A and
//! FU-A packets) of one access unit into AVCC.

use super::Malformed;
use crate::h264::{
    NAL_AUD, NAL_FILLER, NAL_IDR, NAL_PPS, NAL_SLICE, NAL_SPS, slice_starts_picture,
};

const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// One access unit, as the sample of an `avc1` track stores it.
pub(super) struct AccessUnit {
    /// 4-byte length-prefixed NAL units.
    pub data: Vec<u8>,
    /// It holds an IDR slice.
    pub idr: bool,
    /// Its first slice starts the picture (`first_mb_in_slice` 0).
    pub starts_picture: bool,
    /// The last SPS in it.
    pub sps: Option<Vec<u8>>,
    /// The last PPS in it.
    pub pps: Option<Vec<u8>>,
}

/// Reassembles the payloads of one frame's packets, in sequence order.
/// `Ok(None)`: well-formed, but without a coded slice (parameter sets or SEI
/// sent on their own timestamp), so not a frame.
pub(super) fn assemble<'a>(
    payloads: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<AccessUnit>, Malformed> {
    let mut au = AccessUnit {
        data: Vec::new(),
        idr: false,
        starts_picture: false,
        sps: None,
        pps: None,
    };
    let mut slices = 0usize;
    let mut fu: Option<Vec<u8>> = None;
    for payload in payloads {
        let (&header, body) = payload.split_first().ok_or(Malformed)?;
        match header & 0x1f {
            1..=23 => {
                if fu.is_some() {
                    return Err(Malformed);
                }
                add_nal(&mut au, &mut slices, payload)?;
            }
            STAP_A => {
                if fu.is_some() || body.is_empty() {
                    return Err(Malformed);
                }
                let mut rest = body;
                while !rest.is_empty() {
                    let (len, tail) = rest.split_first_chunk::<2>().ok_or(Malformed)?;
                    let len = usize::from(u16::from_be_bytes(*len));
                    let nal = tail.get(..len).filter(|n| !n.is_empty()).ok_or(Malformed)?;
                    add_nal(&mut au, &mut slices, nal)?;
                    rest = &tail[len..];
                }
            }
            FU_A => {
                let (&fu_header, data) = body.split_first().ok_or(Malformed)?;
                let start = fu_header & 0x80 != 0;
                let end = fu_header & 0x40 != 0;
                if start {
                    if fu.is_some() {
                        return Err(Malformed);
                    }
                    let mut nal = Vec::with_capacity(data.len() * 8);
                    nal.push((header & 0xe0) | (fu_header & 0x1f));
                    fu = Some(nal);
                }
                // A middle or end fragment without its start is a loss the
                // sequence numbers did not show (or a broken sender).
                let nal = fu.as_mut().ok_or(Malformed)?;
                nal.extend_from_slice(data);
                if end && let Some(nal) = fu.take() {
                    add_nal(&mut au, &mut slices, &nal)?;
                }
            }
            // STAP-B, MTAP and FU-B belong to interleaved mode, which
            // WebRTC does not negotiate; 0, 30 and 31 are undefined.
            _ => return Err(Malformed),
        }
    }
    if fu.is_some() {
        return Err(Malformed);
    }
    Ok((slices > 0).then_some(au))
}

fn add_nal(au: &mut AccessUnit, slices: &mut usize, nal: &[u8]) -> Result<(), Malformed> {
    let &header = nal.first().ok_or(Malformed)?;
    if header & 0x80 != 0 {
        // forbidden_zero_bit: the sender marks a NAL unit it knows is broken.
        return Err(Malformed);
    }
    let len = u32::try_from(nal.len()).map_err(|_| Malformed)?;
    match header & 0x1f {
        // They carry no picture data, and a stale AUD would confuse a
        // decoder reading AVCC.
        NAL_AUD | NAL_FILLER => return Ok(()),
        NAL_SPS => au.sps = Some(nal.to_vec()),
        NAL_PPS => au.pps = Some(nal.to_vec()),
        t @ (NAL_SLICE..=NAL_IDR) => {
            if *slices == 0 {
                au.starts_picture = slice_starts_picture(nal);
            }
            *slices += 1;
            au.idr |= t == NAL_IDR;
        }
        0 | 24..=31 => return Err(Malformed),
        _ => {}
    }
    au.data.extend_from_slice(&len.to_be_bytes());
    au.data.extend_from_slice(nal);
    Ok(())
}
