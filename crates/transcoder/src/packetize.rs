//! H.264 access units to RTP payloads (RFC 6184, packetization mode 1): a
//! NAL unit that fits goes alone (single NAL unit packet), a bigger one is
//! cut into FU-A fragments. Payloads stay under [`MAX_PAYLOAD`] bytes, as a
//! browser's do, so a packet with SRTP and header extensions still crosses
//! an Ethernet path unfragmented. Also the two byte-stream framings the
//! transcoder meets: Annex B (openh264's output) and AVCC (the
//! depacketizer's).

/// Largest RTP payload made.
pub const MAX_PAYLOAD: usize = 1200;

/// NAL unit type of a fragmentation unit (FU-A).
const FU_A: u8 = 28;

/// One RTP packet's worth of an access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPayload {
    /// Extended sequence number.
    pub seq: u64,
    /// Last packet of the access unit.
    pub marker: bool,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Packetizes the access units of one RTP stream, numbering its packets.
#[derive(Debug, Clone)]
pub struct Packetizer {
    next_seq: u64,
    max: usize,
}

impl Packetizer {
    /// Numbers packets from `first_seq`, payloads at most [`MAX_PAYLOAD`].
    pub fn new(first_seq: u64) -> Packetizer {
        Packetizer::with_max_payload(first_seq, MAX_PAYLOAD)
    }

    /// Payloads at most `max` bytes (at least 3: a FU-A needs two bytes of
    /// headers and one of data).
    pub fn with_max_payload(first_seq: u64, max: usize) -> Packetizer {
        Packetizer {
            next_seq: first_seq,
            max: max.max(3),
        }
    }

    /// The packets of one access unit (its NAL units without start codes
    /// or lengths, in order); the last has the marker bit. Empty NAL units
    /// are skipped.
    pub fn packetize(&mut self, nals: &[&[u8]]) -> Vec<RtpPayload> {
        let mut out = Vec::new();
        for nal in nals.iter().filter(|n| !n.is_empty()) {
            if nal.len() <= self.max {
                out.push(self.next(nal.to_vec()));
                continue;
            }
            let indicator = (nal[0] & 0xe0) | FU_A;
            let kind = nal[0] & 0x1f;
            let chunks: Vec<&[u8]> = nal[1..].chunks(self.max - 2).collect();
            let last = chunks.len() - 1;
            for (i, chunk) in chunks.into_iter().enumerate() {
                let start = if i == 0 { 0x80 } else { 0 };
                let end = if i == last { 0x40 } else { 0 };
                let mut p = Vec::with_capacity(chunk.len() + 2);
                p.push(indicator);
                p.push(start | end | kind);
                p.extend_from_slice(chunk);
                out.push(self.next(p));
            }
        }
        if let Some(p) = out.last_mut() {
            p.marker = true;
        }
        out
    }

    fn next(&mut self, payload: Vec<u8>) -> RtpPayload {
        let seq = self.next_seq;
        self.next_seq += 1;
        RtpPayload {
            seq,
            marker: false,
            payload,
        }
    }
}

/// The NAL units of an Annex B byte stream (without start codes); bytes
/// before the first start code are ignored.
pub fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
    let mut nals = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(s) = start {
                // The zero of a 4-byte start code is not the NAL's.
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
    if let Some(s) = start.filter(|&s| s < data.len()) {
        nals.push(&data[s..]);
    }
    nals
}

/// The NAL units of an AVCC access unit (each behind a 4-byte big-endian
/// length); `None` if a length runs past the end.
pub fn split_avcc(mut data: &[u8]) -> Option<Vec<&[u8]>> {
    let mut nals = Vec::new();
    while !data.is_empty() {
        let (len, rest) = data.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        let (nal, rest) = rest.split_at_checked(len)?;
        if !nal.is_empty() {
            nals.push(nal);
        }
        data = rest;
    }
    Some(nals)
}

/// NAL units as an Annex B byte stream (4-byte start codes).
pub fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nals.iter().map(|n| n.len() + 4).sum());
    for n in nals {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(n);
    }
    out
}

/// The NAL unit type (low five bits of its first byte).
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumen_recorder::depacketize::{Codec, Depacketizer};

    fn nal(kind: u8, len: usize) -> Vec<u8> {
        let mut n = vec![0x60 | kind];
        n.extend((0..len - 1).map(|i| (i % 251) as u8 | 1));
        n
    }

    #[test]
    fn small_nals_go_alone_and_big_ones_as_fu_a_under_the_limit() {
        let (sps, pps, idr) = (nal(7, 12), nal(8, 4), nal(5, 3000));
        let mut p = Packetizer::new(10);
        let out = p.packetize(&[&sps, &pps, &idr]);
        assert_eq!(out[0].payload, sps);
        assert_eq!(out[1].payload, pps);
        // 2999 bytes after the header, 1198 per fragment: 3 fragments.
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|p| p.payload.len() <= MAX_PAYLOAD));
        assert_eq!(
            out.iter().map(|p| p.seq).collect::<Vec<_>>(),
            [10, 11, 12, 13, 14]
        );
        assert_eq!(out.iter().filter(|p| p.marker).count(), 1);
        assert!(out[4].marker);
        // FU-A: indicator keeps NRI, type 28; header S on first, E on last.
        assert_eq!(out[2].payload[0], 0x60 | 28);
        assert_eq!(out[2].payload[1], 0x80 | 5);
        assert_eq!(out[3].payload[1], 5);
        assert_eq!(out[4].payload[1], 0x40 | 5);
        // Numbering goes on with the next access unit.
        assert_eq!(p.packetize(&[&nal(1, 50)])[0].seq, 15);
    }

    #[test]
    fn what_is_packetized_depacketizes_to_the_same_nal_units() {
        // A real IDR (the depacketizer parses its SPS), of noise, so that it
        // needs FU-A, then a P frame.
        let config = openh264::encoder::EncoderConfig::new().skip_frames(false);
        let api = openh264::OpenH264API::from_source();
        let mut enc = openh264::encoder::Encoder::with_api_config(api, config).unwrap();
        let mut pic = crate::scale::Picture::new(320, 240);
        for (i, y) in pic.y.iter_mut().enumerate() {
            *y = ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8;
        }
        let idr = enc.encode(&pic).unwrap().to_vec();
        pic.y.rotate_left(7);
        let p_frame = enc.encode(&pic).unwrap().to_vec();
        let aus = [split_annex_b(&idr), split_annex_b(&p_frame)];
        assert!(
            aus[0].iter().any(|n| n.len() > MAX_PAYLOAD),
            "the IDR needs fragments"
        );
        let mut p = Packetizer::new(1);
        let mut d = Depacketizer::new(Codec::H264);
        let mut frames = Vec::new();
        for (ts, au) in [3000u32, 6000].into_iter().zip(&aus) {
            for pkt in p.packetize(au) {
                assert!(pkt.payload.len() <= MAX_PAYLOAD);
                frames.extend(d.push(pkt.seq, ts, pkt.marker, &pkt.payload).frames);
            }
        }
        frames.extend(d.flush().frames);
        assert_eq!(frames.len(), 2, "{:?}", d.stats());
        assert!(frames[0].keyframe);
        assert_eq!(split_avcc(&frames[0].data).unwrap(), aus[0]);
        assert_eq!(split_avcc(&frames[1].data).unwrap(), aus[1]);
    }

    #[test]
    fn byte_streams_split_into_their_nal_units() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        assert_eq!(
            split_annex_b(&data),
            [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5]]
        );
        let nals = split_annex_b(&data);
        assert_eq!(split_annex_b(&annex_b(&nals)), nals);
        assert_eq!(
            split_avcc(&[0, 0, 0, 2, 9, 9, 0, 0, 0, 1, 7]).unwrap(),
            [&[9, 9][..], &[7]]
        );
        assert_eq!(split_avcc(&[0, 0, 0, 9, 1]), None);
        assert_eq!(split_avcc(&[0, 0]), None);
    }
}
