//! AV1 temporal units to RTP payloads, as the AV1 RTP payload format
//! (AOMedia, "RTP Payload Format For AV1", v1.0) packs them: each payload
//! starts with an aggregation header `Z|Y|W W|N|0 0 0`, then OBU elements
//! (an OBU or a fragment of one). Temporal delimiters and tile lists are
//! left out and the OBUs' size fields are stripped (`obu_has_size_field`
//! cleared), as the format says; element lengths are LEB128 in front of
//! each element except the last when there are at most three (`W`).
//! Payloads stay under [`MAX_PAYLOAD`](crate::packetize::MAX_PAYLOAD)
//! bytes, like the H.264 rungs'.
//!
//! str0m has an AV1 packetizer, but it is private to str0m (not even
//! under its `unversioned` feature), hence this one.

use crate::packetize::{MAX_PAYLOAD, RtpPayload};

/// OBU types the packetizer looks at (AV1 spec 6.2.2).
pub const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_TEMPORAL_DELIMITER: u8 = 2;
const OBU_TILE_LIST: u8 = 8;

/// Aggregation header bits.
const Z: u8 = 0x80;
const Y: u8 = 0x40;
const N: u8 = 0x08;

/// A temporal unit is not a sequence of well-formed OBUs (an OBU's size
/// runs past the end, or its LEB128 does not end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed AV1 OBU at byte {0}")]
pub struct MalformedObu(pub usize);

/// Packetizes the temporal units of one RTP stream, numbering its packets.
#[derive(Debug, Clone)]
pub struct Av1Packetizer {
    next_seq: u64,
    max: usize,
}

impl Av1Packetizer {
    /// Numbers packets from `first_seq`, payloads at most [`MAX_PAYLOAD`].
    pub fn new(first_seq: u64) -> Av1Packetizer {
        Av1Packetizer::with_max_payload(first_seq, MAX_PAYLOAD)
    }

    /// Payloads at most `max` bytes (at least 4: the aggregation header, a
    /// length and some data).
    pub fn with_max_payload(first_seq: u64, max: usize) -> Av1Packetizer {
        Av1Packetizer {
            next_seq: first_seq,
            max: max.max(4),
        }
    }

    /// The packets of one temporal unit (low-overhead bitstream format, as
    /// an encoder writes it: OBUs with size fields); the last has the
    /// marker bit. A temporal unit that starts a coded video sequence (it
    /// has a sequence header) has `N` set on its first packet.
    pub fn packetize(&mut self, temporal_unit: &[u8]) -> Result<Vec<RtpPayload>, MalformedObu> {
        let obus = obus_for_rtp(temporal_unit)?;
        let new_sequence = obus.iter().any(|o| obu_type(o) == OBU_SEQUENCE_HEADER);
        // Each element is (bytes, continues in the next packet).
        let mut packets: Vec<(u8, Vec<&[u8]>)> = Vec::new();
        let mut elements: Vec<&[u8]> = Vec::new();
        let mut used = 1;
        let mut first_is_continuation = false;
        for obu in &obus {
            let mut rest: &[u8] = obu;
            while !rest.is_empty() {
                let space = self.max - used;
                // A length, then at least one byte.
                if space < 2 {
                    let z = if first_is_continuation { Z } else { 0 };
                    packets.push((z, std::mem::take(&mut elements)));
                    used = 1;
                    first_is_continuation = false;
                    continue;
                }
                let room = space - leb128_len(space);
                let n = rest.len().min(room);
                elements.push(&rest[..n]);
                used += leb128_len(n) + n;
                rest = &rest[n..];
                if !rest.is_empty() {
                    // The OBU goes on in the next packet.
                    let z = if first_is_continuation { Z } else { 0 };
                    packets.push((z | Y, std::mem::take(&mut elements)));
                    used = 1;
                    first_is_continuation = true;
                }
            }
        }
        if !elements.is_empty() {
            let z = if first_is_continuation { Z } else { 0 };
            packets.push((z, elements));
        }
        let count = packets.len();
        let mut out = Vec::with_capacity(count);
        for (i, (zy, elements)) in packets.into_iter().enumerate() {
            let w = if elements.len() <= 3 {
                elements.len() as u8
            } else {
                0
            };
            let n = if i == 0 && new_sequence { N } else { 0 };
            let mut payload = Vec::with_capacity(self.max);
            payload.push(zy | (w << 4) | n);
            let last = elements.len() - 1;
            for (j, e) in elements.iter().enumerate() {
                if w == 0 || j < last {
                    write_leb128(&mut payload, e.len());
                }
                payload.extend_from_slice(e);
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            out.push(RtpPayload {
                seq,
                marker: i + 1 == count,
                payload,
            });
        }
        Ok(out)
    }
}

/// The OBUs of a temporal unit as RTP carries them: without temporal
/// delimiters and tile lists, each without its size field.
pub fn obus_for_rtp(mut data: &[u8]) -> Result<Vec<Vec<u8>>, MalformedObu> {
    let total = data.len();
    let mut out = Vec::new();
    while !data.is_empty() {
        let at = total - data.len();
        let header = data[0];
        let ext = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        let header_len = 1 + usize::from(ext);
        if data.len() < header_len {
            return Err(MalformedObu(at));
        }
        let (size, size_len) = if has_size {
            read_leb128(&data[header_len..]).ok_or(MalformedObu(at))?
        } else {
            // Without a size field the OBU runs to the end.
            (data.len() - header_len, 0)
        };
        let body_start = header_len + size_len;
        let end = body_start.checked_add(size).ok_or(MalformedObu(at))?;
        if end > data.len() {
            return Err(MalformedObu(at));
        }
        let kind = obu_type(data);
        if kind != OBU_TEMPORAL_DELIMITER && kind != OBU_TILE_LIST {
            let mut obu = Vec::with_capacity(header_len + size);
            obu.push(header & !0x02);
            obu.extend_from_slice(&data[1..header_len]);
            obu.extend_from_slice(&data[body_start..end]);
            out.push(obu);
        }
        data = &data[end..];
    }
    Ok(out)
}

/// The type of an OBU (from its header's first byte).
pub fn obu_type(obu: &[u8]) -> u8 {
    obu.first().map_or(0, |h| (h >> 3) & 0x0f)
}

/// Reads a LEB128 value: the SFU's reader, which finds AV1 keyframes.
pub use lumen_sfu::read_leb128;

fn leb128_len(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn write_leb128(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An OBU with a size field: `kind`, `len` bytes of body.
    fn obu(kind: u8, len: usize) -> Vec<u8> {
        let mut o = vec![(kind << 3) | 0x02];
        write_leb128(&mut o, len);
        o.extend((0..len).map(|i| (i % 251) as u8));
        o
    }

    /// Reassembles the OBUs (without size fields) of one temporal unit's
    /// payloads, as a receiver does; checks the aggregation headers.
    pub(crate) fn depacketize(payloads: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut obus: Vec<Vec<u8>> = Vec::new();
        let mut open = false;
        for p in payloads {
            let h = p[0];
            assert_eq!(h & 0x07, 0, "reserved bits");
            assert_eq!(h & Z != 0, open, "Z says whether an OBU goes on");
            let w = usize::from((h >> 4) & 0x03);
            let mut rest = &p[1..];
            let mut i = 0;
            while !rest.is_empty() {
                i += 1;
                let len = if w != 0 && i == w {
                    rest.len()
                } else {
                    let (len, n) = read_leb128(rest).expect("element length");
                    rest = &rest[n..];
                    len
                };
                let (e, r) = rest.split_at(len);
                if open {
                    obus.last_mut().unwrap().extend_from_slice(e);
                } else {
                    obus.push(e.to_vec());
                }
                open = false;
                rest = r;
            }
            assert!(w == 0 || i == w, "W counts the elements");
            open = h & Y != 0;
        }
        assert!(!open, "the last OBU ends in the temporal unit");
        obus
    }

    #[test]
    fn a_keyframe_is_split_under_the_limit_and_reassembles_without_td_or_sizes() {
        let mut tu = obu(OBU_TEMPORAL_DELIMITER, 0);
        tu.extend(obu(OBU_SEQUENCE_HEADER, 11));
        tu.extend(obu(6, 3000)); // a frame OBU
        let mut p = Av1Packetizer::new(7);
        let out = p.packetize(&tu).unwrap();
        assert!(out.iter().all(|x| x.payload.len() <= MAX_PAYLOAD));
        assert_eq!(out.len(), 3, "3000 bytes and a header: three packets");
        assert_eq!(out.iter().map(|x| x.seq).collect::<Vec<_>>(), [7, 8, 9]);
        assert_eq!(out.iter().filter(|x| x.marker).count(), 1);
        assert!(out[2].marker);
        // N on the first packet only; Y on all but the last, Z on all but
        // the first.
        assert_eq!(out[0].payload[0] & (N | Y | Z), N | Y);
        assert_eq!(out[1].payload[0] & (N | Y | Z), Z | Y);
        assert_eq!(out[2].payload[0] & (N | Y | Z), Z);
        let payloads: Vec<&[u8]> = out.iter().map(|x| x.payload.as_slice()).collect();
        let obus = depacketize(&payloads);
        assert_eq!(obus.len(), 2, "the temporal delimiter is left out");
        let mut seq = obu(OBU_SEQUENCE_HEADER, 11);
        seq.remove(1); // the size field
        seq[0] &= !0x02;
        assert_eq!(obus[0], seq);
        assert_eq!(obus[1].len(), 3001);
        assert_eq!(obu_type(&obus[1]), 6);
        assert_eq!(obus[1][0] & 0x02, 0, "no size field");
        // Numbering goes on; an inter frame has no N.
        let next = p.packetize(&obu(6, 40)).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].seq, 10);
        assert_eq!(next[0].payload[0], 1 << 4, "W=1, nothing else");
    }

    #[test]
    fn many_small_obus_share_a_packet_with_w_zero() {
        let mut tu = Vec::new();
        for _ in 0..5 {
            tu.extend(obu(5, 10)); // metadata OBUs
        }
        let out = Av1Packetizer::new(0).packetize(&tu).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].payload[0] & 0x30,
            0,
            "W=0: every element has a length"
        );
        assert_eq!(depacketize(&[&out[0].payload]).len(), 5);
    }

    #[test]
    fn every_size_packs_and_reassembles() {
        for len in [
            1, 2, 126, 127, 128, 1195, 1196, 1197, 1198, 1199, 2400, 5000,
        ] {
            for max in [4, 5, 100, 1200] {
                let mut tu = obu(OBU_SEQUENCE_HEADER, 9);
                tu.extend(obu(6, len));
                let out = Av1Packetizer::with_max_payload(0, max)
                    .packetize(&tu)
                    .unwrap();
                assert!(out.iter().all(|x| x.payload.len() <= max), "{len} {max}");
                let payloads: Vec<&[u8]> = out.iter().map(|x| x.payload.as_slice()).collect();
                let obus = depacketize(&payloads);
                assert_eq!(obus.len(), 2, "{len} {max}");
                assert_eq!(obus[1].len(), len + 1, "{len} {max}");
            }
        }
    }

    #[test]
    fn malformed_temporal_units_are_an_error_not_a_panic() {
        let mut p = Av1Packetizer::new(0);
        // A size past the end.
        assert_eq!(p.packetize(&[0x32, 10, 1, 2]), Err(MalformedObu(0)));
        // A LEB128 that never ends.
        assert!(p.packetize(&[0x32, 0xff, 0xff]).is_err());
        // A header with an extension byte missing.
        assert!(
            p.packetize(&obu(6, 2).into_iter().chain([0x36]).collect::<Vec<_>>())
                .is_err()
        );
        assert_eq!(p.packetize(&[]).unwrap(), vec![]);
    }
}
