use std::sync::Arc;
use std::time::Instant;

use crate::packet::Vp8Patch;
use crate::rtp_::{ExtensionValues, Frequency, MediaTime, Pt, RtpHeader, SeqNo, Ssrc};

use super::RtpPacket;

/// An outgoing packet as the send queue and the retransmission cache keep
/// it: everything sending it again reads, with the parts a packet seldom
/// has (CSRCs, header extension values) boxed.
// lumen: both kept whole `RtpPacket`s, 408 bytes each (the header alone is
// 288: 15 CSRC slots and every extension value inline); the payload itself
// is shared. This record is 56 bytes. The sequence number, the queue time
// and the nackable flag are not in it: the retransmission cache knows the
// first from its buffer's position and needs neither of the others, and
// the send queue keeps them beside the record. Of the media time only the
// clock rate is kept: `StreamTx::write_rtp` makes its count from the RTP
// timestamp, and nothing changes one without the other.
#[derive(Debug)]
pub(crate) struct CompactPacket {
    clock_rate: Frequency,
    payload: Arc<[u8]>,
    vp8_patch: Option<Vp8Patch>,
    ssrc: Ssrc,
    rtp_time: u32,
    sequence_number: u16,
    payload_type: Pt,
    version: u8,
    marker: bool,
    has_padding: bool,
    has_extension: bool,
    header_len: u16,
    rare: Option<Box<RareParts>>,
}

/// Whether a header has the parts a record keeps boxed (`RareParts`).
fn has_rare_parts(h: &RtpHeader) -> bool {
    h.csrc_count != 0 || h.csrc != [0; 15] || !h.ext_vals.is_empty()
}

#[derive(Debug)]
struct RareParts {
    csrc_count: usize,
    csrc: [u32; 15],
    ext_vals: ExtensionValues,
}

impl CompactPacket {
    pub fn new(p: RtpPacket) -> Self {
        debug_assert_eq!(p.time.numer(), p.header.timestamp as u64);
        let mut c = Self::of_sent(&p.header, p.time.frequency(), p.payload);
        c.vp8_patch = p.vp8_patch;
        c
    }

    /// lumen: the record of the packet that `header` heads, with no VP8
    /// patch, made from its parts: [`CompactPacket::new`] has the whole
    /// packet, `StreamTx::send_now` only these.
    pub fn of_sent(header: &RtpHeader, clock_rate: Frequency, payload: Arc<[u8]>) -> Self {
        CompactPacket {
            clock_rate,
            payload,
            vp8_patch: None,
            ssrc: header.ssrc,
            rtp_time: header.timestamp,
            sequence_number: header.sequence_number,
            payload_type: header.payload_type,
            version: header.version,
            marker: header.marker,
            has_padding: header.has_padding,
            has_extension: header.has_extension,
            // (A header is at most 12 + 60 + 4 + 4 * 255 bytes.)
            header_len: header.header_len.min(u16::MAX as usize) as u16,
            rare: has_rare_parts(header).then(|| {
                Box::new(RareParts {
                    csrc_count: header.csrc_count,
                    csrc: header.csrc,
                    ext_vals: header.ext_vals.clone(),
                })
            }),
        }
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Writes the packet into `into` (the send queue's packet being sent),
    /// lending it the payload: `into`'s own goes into the record until
    /// [`CompactPacket::take_back`]. Nothing is allocated and no reference
    /// count changes, as they would for a new `RtpPacket` per packet.
    pub fn load_into(
        &mut self,
        into: &mut RtpPacket,
        seq_no: SeqNo,
        timestamp: Instant,
        nackable: bool,
    ) {
        self.write_all_but_payload(into, seq_no, timestamp, nackable);
        std::mem::swap(&mut into.payload, &mut self.payload);
    }

    /// Writes the packet into `into` (the retransmission cache's scratch
    /// packet), leaving the record as it was.
    pub fn restore_into(
        &self,
        into: &mut RtpPacket,
        seq_no: SeqNo,
        timestamp: Instant,
        nackable: bool,
    ) {
        self.write_all_but_payload(into, seq_no, timestamp, nackable);
        into.payload = self.payload.clone();
    }

    // Inlined: on the send queue's path for every packet, where a call
    // cost ~40 instructions more per packet forwarded.
    #[inline(always)]
    fn write_all_but_payload(
        &self,
        into: &mut RtpPacket,
        seq_no: SeqNo,
        timestamp: Instant,
        nackable: bool,
    ) {
        let h = &mut into.header;
        h.version = self.version;
        h.has_padding = self.has_padding;
        h.has_extension = self.has_extension;
        h.marker = self.marker;
        h.payload_type = self.payload_type;
        h.sequence_number = self.sequence_number;
        h.timestamp = self.rtp_time;
        h.ssrc = self.ssrc;
        h.header_len = self.header_len as usize;
        match &self.rare {
            Some(r) => {
                h.csrc_count = r.csrc_count;
                h.csrc = r.csrc;
                h.ext_vals = r.ext_vals.clone();
            }
            None => {
                h.csrc_count = 0;
                h.csrc = [0; 15];
                h.ext_vals = ExtensionValues::default();
            }
        }
        into.seq_no = seq_no;
        into.time = MediaTime::new(self.rtp_time as u64, self.clock_rate);
        into.vp8_patch = self.vp8_patch;
        into.timestamp = timestamp;
        // Only incoming packets carry one.
        into.last_sender_info = None;
        into.nackable = nackable;
    }

    /// Takes the payload back from the packet [`CompactPacket::load_into`]
    /// wrote, and what the sender changed in it (the clock rate, extension
    /// values).
    pub fn take_back(&mut self, from: &mut RtpPacket) {
        std::mem::swap(&mut from.payload, &mut self.payload);
        let h = &from.header;
        debug_assert_eq!(from.time.numer(), h.timestamp as u64);
        self.clock_rate = from.time.frequency();
        self.vp8_patch = from.vp8_patch;
        self.ssrc = h.ssrc;
        self.rtp_time = h.timestamp;
        self.sequence_number = h.sequence_number;
        self.payload_type = h.payload_type;
        self.version = h.version;
        self.marker = h.marker;
        self.has_padding = h.has_padding;
        self.has_extension = h.has_extension;
        self.header_len = h.header_len.min(u16::MAX as usize) as u16;
        if has_rare_parts(h) {
            let parts = RareParts {
                csrc_count: h.csrc_count,
                csrc: h.csrc,
                ext_vals: h.ext_vals.clone(),
            };
            match &mut self.rare {
                Some(r) => **r = parts,
                None => self.rare = Some(Box::new(parts)),
            }
        } else {
            self.rare = None;
        }
    }

    /// The whole packet again, leaving the record as it was.
    #[cfg(test)]
    pub fn restore(&self, seq_no: SeqNo, timestamp: Instant, nackable: bool) -> RtpPacket {
        let mut p = RtpPacket::blank();
        self.restore_into(&mut p, seq_no, timestamp, nackable);
        p
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::rtp_::RtpHeader;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_record_stays_small() {
        // Kept per packet: 128 of them per video stream in the retransmission
        // cache, with the buffer's position and time (80 bytes a slot).
        assert_eq!(std::mem::size_of::<CompactPacket>(), 56);
        assert!(std::mem::size_of::<RtpPacket>() > 400);
    }

    #[test]
    fn a_packet_comes_back_whole() {
        let now = Instant::now();
        let packet = |rare: bool| {
            let mut header = RtpHeader {
                sequence_number: 7,
                timestamp: 90_000,
                marker: true,
                ssrc: 42.into(),
                header_len: 12,
                ..Default::default()
            };
            if rare {
                header.ext_vals.audio_level = Some(-20);
                header.csrc_count = 1;
                header.csrc[0] = 99;
            }
            RtpPacket {
                seq_no: 7.into(),
                time: MediaTime::new(90_000, Frequency::NINETY_KHZ),
                header,
                payload: [1, 2, 3].into(),
                vp8_patch: None,
                timestamp: now,
                last_sender_info: None,
                nackable: true,
            }
        };
        // The send queue's packet being sent, written over for each.
        let mut sending = RtpPacket::blank();
        for rare in [true, false, true] {
            let mut record = CompactPacket::new(packet(rare));
            assert_eq!(record.restore(7.into(), now, true), packet(rare));
            record.load_into(&mut sending, 7.into(), now, true);
            assert_eq!(sending, packet(rare));
            record.take_back(&mut sending);
            assert!(sending.payload.is_empty());
            assert_eq!(record.restore(7.into(), now, true), packet(rare));
        }
    }
}
