//! H.264 byte-level helpers: Annex B NAL splitting, emulation prevention, and
//! the lumen timing SEI (`user_data_unregistered`) that carries a frame number
//! and the publisher's wall-clock send time through the SFU untouched.
//!
//! Everything here reads untrusted bytes from the network, so every parser
//! returns `None` on malformed input instead of panicking.

/// UUID that marks the lumen timing SEI among other `user_data_unregistered`
/// messages (randomly chosen, fixed forever).
pub const LUMEN_SEI_UUID: [u8; 16] = [
    0x6c, 0x75, 0x6d, 0x65, 0x6e, 0x2d, 0x4a, 0x7b, 0x9e, 0x21, 0xc4, 0x5d, 0x08, 0xf3, 0x6a, 0x11,
];

/// NAL unit type of an SEI.
pub const NAL_SEI: u8 = 6;
/// NAL unit type of an IDR slice.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a non-IDR slice.
pub const NAL_SLICE: u8 = 1;

const SEI_USER_DATA_UNREGISTERED: u8 = 5;
const TIMING_PAYLOAD_LEN: usize = 16 + 8 + 8;

/// What the timing SEI carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTiming {
    /// Frame number, counted from 0 by the publisher.
    pub frame_number: u64,
    /// Publisher wall-clock time when the frame was handed to the encoder
    /// path, in microseconds since the UNIX epoch.
    pub sent_at_micros: u64,
}

/// The NAL unit type (low 5 bits of the header byte), if there is a header.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// Splits an Annex B byte stream into NAL units (without start codes).
/// Bytes before the first start code are ignored; empty NALs are skipped.
pub fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
    let mut nals = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(s) = start {
                // A 4-byte start code leaves one zero in front of it that
                // belongs to the start code, not to the previous NAL.
                let mut end = i;
                while end > s && data[end - 1] == 0 {
                    end -= 1;
                }
                if end > s {
                    nals.push(&data[s..end]);
                }
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start
        && s < data.len()
    {
        nals.push(&data[s..]);
    }
    nals
}

/// Inserts emulation prevention bytes (0x03) so the RBSP contains no
/// `00 00 0x` (x <= 3) sequence once it sits in a NAL unit.
pub fn add_emulation_prevention(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 4);
    let mut zeros = 0usize;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// Removes emulation prevention bytes: every 0x03 that follows two zeros.
pub fn strip_emulation_prevention(ebsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ebsp.len());
    let mut zeros = 0usize;
    for &b in ebsp {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// Builds the complete timing SEI NAL unit (header byte included, no start
/// code).
pub fn write_timing_sei(timing: FrameTiming) -> Vec<u8> {
    let mut rbsp = Vec::with_capacity(2 + TIMING_PAYLOAD_LEN + 1);
    rbsp.push(SEI_USER_DATA_UNREGISTERED);
    rbsp.push(TIMING_PAYLOAD_LEN as u8);
    rbsp.extend_from_slice(&LUMEN_SEI_UUID);
    rbsp.extend_from_slice(&timing.frame_number.to_be_bytes());
    rbsp.extend_from_slice(&timing.sent_at_micros.to_be_bytes());
    // rbsp_trailing_bits: stop bit then alignment zeros.
    rbsp.push(0x80);
    let mut nal = Vec::with_capacity(rbsp.len() + 8);
    // forbidden_zero_bit 0, nal_ref_idc 0 (SEI is never referenced), type 6.
    nal.push(NAL_SEI);
    nal.extend_from_slice(&add_emulation_prevention(&rbsp));
    nal
}

/// Parses one NAL unit (no start code) and returns the lumen timing if it is
/// an SEI that carries it. Other SEI messages in the same NAL are skipped.
pub fn parse_timing_sei(nal: &[u8]) -> Option<FrameTiming> {
    if nal_type(nal)? != NAL_SEI {
        return None;
    }
    let rbsp = strip_emulation_prevention(nal.get(1..)?);
    let mut pos = 0usize;
    // Each sei_message needs at least type + size bytes; the trailing 0x80
    // ends the loop.
    while pos + 2 <= rbsp.len() && rbsp[pos] != 0x80 {
        let payload_type = read_ff_coded(&rbsp, &mut pos)?;
        let payload_size = read_ff_coded(&rbsp, &mut pos)?;
        let payload = rbsp.get(pos..pos.checked_add(payload_size)?)?;
        pos += payload_size;
        if payload_type == usize::from(SEI_USER_DATA_UNREGISTERED)
            && payload.len() >= TIMING_PAYLOAD_LEN
            && payload[..16] == LUMEN_SEI_UUID
        {
            let frame_number = u64::from_be_bytes(payload[16..24].try_into().ok()?);
            let sent_at_micros = u64::from_be_bytes(payload[24..32].try_into().ok()?);
            return Some(FrameTiming {
                frame_number,
                sent_at_micros,
            });
        }
    }
    None
}

/// Finds the lumen timing SEI in an Annex B access unit.
pub fn find_timing_in_access_unit(au: &[u8]) -> Option<FrameTiming> {
    split_annex_b(au).into_iter().find_map(parse_timing_sei)
}

/// Whether an Annex B access unit contains an IDR slice.
pub fn access_unit_has_idr(au: &[u8]) -> bool {
    split_annex_b(au)
        .into_iter()
        .any(|n| nal_type(n) == Some(NAL_IDR))
}

/// Reads an SEI payload type or size: a run of 0xFF bytes (255 each) plus a
/// final byte.
fn read_ff_coded(data: &[u8], pos: &mut usize) -> Option<usize> {
    let mut value = 0usize;
    loop {
        let b = *data.get(*pos)?;
        *pos += 1;
        value = value.checked_add(usize::from(b))?;
        if b != 0xff {
            return Some(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_start_code_emulation(bytes: &[u8]) -> bool {
        bytes
            .windows(3)
            .any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2)
    }

    #[test]
    fn sei_round_trip_with_emulation_prevention() {
        // Zero-heavy values force 00 00 00 / 00 00 01 sequences in the RBSP.
        for timing in [
            FrameTiming {
                frame_number: 0,
                sent_at_micros: 0,
            },
            FrameTiming {
                frame_number: 1,
                sent_at_micros: 0x0000_0001_0000_0002,
            },
            FrameTiming {
                frame_number: 0x0000_0300_0000_0003,
                sent_at_micros: 1_700_000_000_000_000,
            },
            FrameTiming {
                frame_number: u64::MAX,
                sent_at_micros: u64::MAX,
            },
        ] {
            let nal = write_timing_sei(timing);
            assert_eq!(nal_type(&nal), Some(NAL_SEI));
            assert!(
                !has_start_code_emulation(&nal),
                "emulation prevention missing in {nal:02x?}"
            );
            assert_eq!(parse_timing_sei(&nal), Some(timing));
        }
        let zero = write_timing_sei(FrameTiming {
            frame_number: 0,
            sent_at_micros: 0,
        });
        assert!(
            zero.len() > 1 + 2 + TIMING_PAYLOAD_LEN + 1,
            "no 0x03 inserted"
        );
    }

    #[test]
    fn emulation_prevention_inverts() {
        let raw = [0u8, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 4, 0, 0];
        let escaped = add_emulation_prevention(&raw);
        assert!(!has_start_code_emulation(&escaped));
        assert_eq!(strip_emulation_prevention(&escaped), raw);
    }

    #[test]
    fn sei_found_in_access_unit_after_other_messages() {
        // An SEI NAL carrying an unrelated user_data_unregistered first.
        let mut rbsp = vec![5u8, 20];
        rbsp.extend_from_slice(&[0xaa; 20]);
        rbsp.push(0x80);
        let mut other = vec![NAL_SEI];
        other.extend_from_slice(&add_emulation_prevention(&rbsp));

        let timing = FrameTiming {
            frame_number: 42,
            sent_at_micros: 7,
        };
        let mut au = Vec::new();
        for nal in [
            &other[..],
            &write_timing_sei(timing),
            &[0x65, 0x88, 0x80][..],
        ] {
            au.extend_from_slice(&[0, 0, 0, 1]);
            au.extend_from_slice(nal);
        }
        assert_eq!(find_timing_in_access_unit(&au), Some(timing));
        assert!(access_unit_has_idr(&au));
    }

    #[test]
    fn malformed_sei_is_rejected_without_panic() {
        let good = write_timing_sei(FrameTiming {
            frame_number: 9,
            sent_at_micros: 9,
        });
        for cut in 0..good.len() - 1 {
            let _ = parse_timing_sei(&good[..cut]);
        }
        assert_eq!(parse_timing_sei(&[NAL_SEI, 0xff, 0xff, 0xff]), None);
        assert_eq!(parse_timing_sei(&[NAL_SEI, 5, 200, 1, 2]), None);
        assert_eq!(parse_timing_sei(&[]), None);
    }

    #[test]
    fn split_handles_three_and_four_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4,
        ];
        let nals = split_annex_b(&data);
        assert_eq!(
            nals,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4][..]]
        );
    }
}
