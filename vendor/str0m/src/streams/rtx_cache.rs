use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use crate::io::DATAGRAM_MAX_PACKET_SIZE;
use crate::packet::Vp8Patch;
use crate::rtp_::{ExtensionValues, MediaTime, Pt, RtpHeader, SeqNo, Ssrc};

use super::RtpPacket;
use super::rtx_cache_buf::EvictingBuffer;
use crate::util::already_happened;

const RTX_CACHE_SIZE_QUANTIZER: usize = 25;
const RTX_CACHE_QUANTIZE_SLOTS: usize = DATAGRAM_MAX_PACKET_SIZE / RTX_CACHE_SIZE_QUANTIZER;

#[derive(Debug)]
pub(crate) struct RtxCache {
    // Data, new additions here probably need to be cleared in [`clear`].
    packet_by_seq_no: EvictingBuffer<CachedPacket>,

    // Technically we want [Option<SeqNo>; X] to indicate the absence of
    // a SeqNo. However We can half the storage space by using the sentinel
    // values SeqNo::MAX to indicate None
    seq_no_by_quantized_size: [SeqNo; RTX_CACHE_QUANTIZE_SLOTS],

    // lumen: the cached packet last handed out, whole (see `CachedPacket`);
    // boxed on the first resend, for the streams that never resend.
    out: Option<Box<RtpPacket>>,
}

/// What the cache keeps of a sent packet: everything a resend reads, with
/// the parts a packet seldom has (CSRCs, header extension values) boxed.
// lumen: the cache kept whole `RtpPacket`s, 408 bytes each (the header
// alone is 288: 15 CSRC slots and every extension value inline), for
// every packet of the last `send_buffer_video` sent to each viewer; the
// payload itself is shared. This record is 72 bytes (96 with the
// buffer's position and time); a resend rebuilds the `RtpPacket` from it
// in `RtxCache::out`. The sequence number is the buffer's position, and
// the packet's queue time is not kept: nothing reads it on a resend.
#[derive(Debug)]
struct CachedPacket {
    time: MediaTime,
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

#[derive(Debug)]
struct RareParts {
    csrc_count: usize,
    csrc: [u32; 15],
    ext_vals: ExtensionValues,
}

impl CachedPacket {
    fn new(p: RtpPacket) -> Self {
        let h = p.header;
        let rare = (h.csrc_count != 0 || h.csrc != [0; 15] || !h.ext_vals.is_empty()).then(|| {
            Box::new(RareParts {
                csrc_count: h.csrc_count,
                csrc: h.csrc,
                ext_vals: h.ext_vals,
            })
        });
        CachedPacket {
            time: p.time,
            payload: p.payload,
            vp8_patch: p.vp8_patch,
            ssrc: h.ssrc,
            rtp_time: h.timestamp,
            sequence_number: h.sequence_number,
            payload_type: h.payload_type,
            version: h.version,
            marker: h.marker,
            has_padding: h.has_padding,
            has_extension: h.has_extension,
            // (A header is at most 12 + 60 + 4 + 4 * 255 bytes.)
            header_len: h.header_len.min(u16::MAX as usize) as u16,
            rare,
        }
    }

    fn restore(&self, seq_no: SeqNo) -> RtpPacket {
        let (csrc_count, csrc, ext_vals) = match &self.rare {
            Some(r) => (r.csrc_count, r.csrc, r.ext_vals.clone()),
            None => (0, [0; 15], ExtensionValues::default()),
        };
        RtpPacket {
            seq_no,
            time: self.time,
            header: RtpHeader {
                version: self.version,
                has_padding: self.has_padding,
                has_extension: self.has_extension,
                csrc_count,
                marker: self.marker,
                payload_type: self.payload_type,
                sequence_number: self.sequence_number,
                timestamp: self.rtp_time,
                ssrc: self.ssrc,
                csrc,
                ext_vals,
                header_len: self.header_len as usize,
            },
            payload: self.payload.clone(),
            vp8_patch: self.vp8_patch,
            // Read only for a packet out of the send queue, never for a
            // resend (the queue-delay stat).
            timestamp: already_happened(),
            // Only incoming packets carry one.
            last_sender_info: None,
            nackable: true,
        }
    }
}

impl RtxCache {
    pub fn new(max_packet_count: usize, max_packet_age: Duration) -> Self {
        Self {
            packet_by_seq_no: EvictingBuffer::new(10, max_packet_age, max_packet_count),
            seq_no_by_quantized_size: [SeqNo::MAX; RTX_CACHE_QUANTIZE_SLOTS],
            out: None,
        }
    }

    pub fn cache_sent_packet(&mut self, packet: RtpPacket, now: Instant) {
        assert!(packet.nackable);
        let seq_no = packet.seq_no;
        let quantized_size = packet.payload.len() / RTX_CACHE_SIZE_QUANTIZER;
        self.packet_by_seq_no
            .push(*seq_no, now, CachedPacket::new(packet));
        self.seq_no_by_quantized_size[quantized_size] = seq_no;
        self.remove_old_packets(now);
    }

    pub fn last_cached_seq_no(&self) -> Option<SeqNo> {
        Some(self.packet_by_seq_no.last_position()?.into())
    }

    /// The payload size of a cached packet, if it is still cached.
    pub fn cached_payload_len(&self, seq_no: SeqNo) -> Option<usize> {
        Some(self.packet_by_seq_no.get(*seq_no)?.payload.len())
    }

    pub fn get_cached_packet_by_seq_no(&mut self, seq_no: SeqNo) -> Option<&mut RtpPacket> {
        let packet = self.packet_by_seq_no.get(*seq_no)?.restore(seq_no);
        match &mut self.out {
            Some(out) => **out = packet,
            None => self.out = Some(Box::new(packet)),
        }
        self.out.as_deref_mut()
    }

    pub fn get_cached_packet_smaller_than(&mut self, max_size: usize) -> Option<&mut RtpPacket> {
        let quantized_size = max_size / RTX_CACHE_SIZE_QUANTIZER;

        let seq_no = self.seq_no_by_quantized_size[..quantized_size]
            .iter()
            .rev()
            .filter(|seq_no| !seq_no.is_max())
            .find(|seq_no| self.packet_by_seq_no.contains(***seq_no))?;

        self.get_cached_packet_by_seq_no(*seq_no)
    }

    fn remove_old_packets(&mut self, now: Instant) {
        self.packet_by_seq_no.maybe_evict(now);
    }

    pub(crate) fn last_packet(&self) -> Option<&[u8]> {
        let packet = self.packet_by_seq_no.last()?;
        Some(packet.payload.as_ref())
    }

    pub(crate) fn clear(&mut self) {
        self.packet_by_seq_no.clear();
        self.seq_no_by_quantized_size = [SeqNo::MAX; RTX_CACHE_QUANTIZE_SLOTS];
    }
}

#[cfg(test)]
mod test {
    use crate::rtp_::MediaTime;
    use crate::rtp_::RtpHeader;

    use super::*;

    fn after(now: Instant, millis: u64) -> Instant {
        now + Duration::from_millis(millis)
    }

    // lumen: a resend does not carry the queue time of the packet it
    // repeats (see `CachedPacket`).
    fn resent(now: Instant, seq_no: u64, millis: u64) -> RtpPacket {
        RtpPacket {
            timestamp: already_happened(),
            ..packet(now, seq_no, millis)
        }
    }

    fn packet(now: Instant, seq_no: u64, millis: u64) -> RtpPacket {
        RtpPacket {
            header: RtpHeader::default(),
            seq_no: seq_no.into(),
            time: MediaTime::from_90khz(0),
            payload: millis.to_be_bytes().into(),
            vp8_patch: None,
            timestamp: after(now, millis),
            last_sender_info: None,
            nackable: true,
        }
    }

    #[test]
    fn rtx_cache_0_sized() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(0, Duration::from_secs(3));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), after(now, 10));
        assert_eq!(
            Some(&mut resent(now, 1, 10)),
            rtx_cache.get_cached_packet_by_seq_no(1.into())
        );
        assert_eq!(
            Some(&mut resent(now, 1, 10)),
            rtx_cache.get_cached_packet_smaller_than(1000)
        );
    }

    #[test]
    fn rtx_cache_0_duration() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(10, Duration::from_secs(0));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), after(now, 10));
        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(1.into()));
        assert_eq!(None, rtx_cache.get_cached_packet_smaller_than(1000));
    }

    #[test]
    fn rtx_cache_1_sized() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(1, Duration::from_secs(3));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), after(now, 10));
        assert_eq!(
            Some(&mut resent(now, 1, 10)),
            rtx_cache.get_cached_packet_by_seq_no(1.into())
        );
        assert_eq!(
            Some(&mut resent(now, 1, 10)),
            rtx_cache.get_cached_packet_smaller_than(1000)
        );
        assert_eq!(
            Some(&mut resent(now, 1, 10)),
            rtx_cache.get_cached_packet_smaller_than(25)
        );
        assert_eq!(None, rtx_cache.get_cached_packet_smaller_than(24));
        rtx_cache.cache_sent_packet(packet(now, 2, 20), after(now, 20));
        assert_eq!(
            Some(&mut resent(now, 2, 20)),
            rtx_cache.get_cached_packet_by_seq_no(2.into())
        );
    }

    #[test]
    fn rtx_cache_100_sized_backwards() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(100, Duration::from_secs(3));

        for i in 1..=200 {
            let seq_no = 201 - i;
            let pkt = packet(now, seq_no, (201 - i) * 10);
            let now = after(now, i * 10);
            rtx_cache.cache_sent_packet(pkt, now);
        }

        assert_eq!(
            Some(&mut resent(now, 200, 2000)),
            rtx_cache.get_cached_packet_by_seq_no(200.into())
        );
        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(100.into()));
        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(101.into()));
    }

    #[test]
    fn rtx_cache_eviction() {
        let now = Instant::now();
        // Cache can take all entries
        let mut rtx_cache = RtxCache::new(400, Duration::from_secs(1));
        for i in 1..=200 {
            let seq_no = i;
            let pkt = packet(now, seq_no, i * 10);
            let now = after(now, i * 10);
            rtx_cache.cache_sent_packet(pkt, now);
        }

        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(99.into()));

        assert_eq!(
            Some(&mut resent(now, 100, 1000)),
            rtx_cache.get_cached_packet_by_seq_no(100.into())
        );
        assert_eq!(
            Some(&mut resent(now, 200, 2000)),
            rtx_cache.get_cached_packet_by_seq_no(200.into())
        );
    }
}
