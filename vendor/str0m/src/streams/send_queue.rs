use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::pacer::{QueuePriority, QueueSnapshot};
use crate::rtp_::SeqNo;
use crate::util::not_happening;

use super::RtpPacket;
use super::compact::CompactPacket;

#[derive(Debug)]
pub(crate) struct SendQueue {
    // lumen: the queue kept whole `RtpPacket`s (408 bytes each), and a
    // viewer's video queue grew to hold a keyframe's slice of 16 of them,
    // 6.5 KiB kept for the session's life. It keeps compact records now
    // (see `CompactPacket`), and writes the one being sent into `sending`.
    queue: VecDeque<QueuedPacket>,
    /// The front of the queue once `peek` has asked for it, until `pop`.
    head: Option<QueuedPacket>,
    /// The head, whole: the sender changes it in place before `pop` takes
    /// it. It holds the head's payload while there is a head (see
    /// `CompactPacket::load_into`), an empty one otherwise.
    sending: RtpPacket,
    total: TotalQueue,
    last_emitted: Option<Instant>,
}

/// A packet in the queue, and the one `pop` hands back once sent.
#[derive(Debug)]
pub(crate) struct QueuedPacket {
    pub packet: CompactPacket,
    pub seq_no: SeqNo,
    pub timestamp: Instant,
    pub nackable: bool,
}

impl SendQueue {
    pub fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            head: None,
            sending: RtpPacket::blank(),
            total: TotalQueue::default(),
            last_emitted: None,
        }
    }

    pub fn push(&mut self, packet: RtpPacket) {
        let seq_no = packet.seq_no;
        let nackable = packet.nackable;
        self.queue.push_back(QueuedPacket {
            packet: CompactPacket::new(packet),
            seq_no,
            // Every incoming packet must be timestamped withe a handle_timeout.
            // This sentinel value indicates it is needed.
            timestamp: not_happening(),
            nackable,
        });
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for pkt in self.queue.iter_mut().rev() {
            if pkt.timestamp != not_happening() {
                // all enqueued packets are timestamped.
                break;
            } else {
                pkt.timestamp = now;
                self.total.increase(now, pkt.packet.payload().len());
            }
        }
    }

    pub fn need_timeout(&self) -> bool {
        // Packets are timestamped contiguously from the front,
        // so checking the tail summarizes the entire queue's state.
        // (The head, when there is one, is timestamped.)
        self.queue
            .back()
            .map(|p| p.timestamp == not_happening())
            .unwrap_or_default()
    }

    pub fn peek(&mut self) -> Option<&mut RtpPacket> {
        if self.head.is_none() {
            let front = self.queue.front()?;
            if front.timestamp == not_happening() {
                return None;
            }
            // Unwrap is OK: front() above returned a value.
            let mut q = self.queue.pop_front().unwrap();
            q.packet
                .load_into(&mut self.sending, q.seq_no, q.timestamp, q.nackable);
            self.head = Some(q);
        }
        Some(&mut self.sending)
    }

    /// The head, as the sender left it.
    pub fn pop(&mut self, now: Instant) -> Option<QueuedPacket> {
        // Don't release packets without a timestamp.
        self.peek()?;

        // Unwrap is OK, because peek() above must have returned a value
        // for us to be here.
        let mut q = self.head.take().unwrap();
        q.packet.take_back(&mut self.sending);
        q.seq_no = self.sending.seq_no;
        q.nackable = self.sending.nackable;

        // Must be timestamped
        assert!(q.timestamp != not_happening());

        // lumen: a packet written and sent in one drain has waited nothing;
        // the comparison is cheaper than the subtraction.
        let queue_time = if now == q.timestamp {
            Duration::ZERO
        } else {
            now - q.timestamp
        };
        self.total
            .decrease(now, q.packet.payload().len(), queue_time);
        self.last_emitted = Some(now);

        Some(q)
    }

    /// lumen: what a packet's push, timeout and pop at `now` do to an
    /// empty queue (`StreamTx::send_now`): its totals go up and back down
    /// in the same instant, so only the time of the last packet out moves.
    pub fn passed_through(&mut self, now: Instant) {
        debug_assert!(self.is_empty());
        debug_assert_eq!(self.total.unsent_count, 0);
        self.last_emitted = Some(now);
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_none() && self.queue.is_empty()
    }

    /// The payload of the packet queued last.
    pub fn last_payload(&self) -> Option<&[u8]> {
        match self.queue.back() {
            Some(q) => Some(q.packet.payload()),
            // The head's payload is lent to `sending`.
            None => self.head.as_ref().map(|_| self.sending.payload.as_ref()),
        }
    }

    pub(crate) fn snapshot(&mut self, now: Instant) -> QueueSnapshot {
        self.total.move_time_forward(now);

        let first_unsent = match &self.head {
            Some(q) => Some(q.timestamp),
            None => self
                .queue
                .iter()
                .find(|p| p.timestamp != not_happening())
                .map(|p| p.timestamp),
        };

        QueueSnapshot {
            created_at: now,
            byte_size: self.total.unsent_size,
            packet_count: self.total.unsent_count as u32,
            total_queue_time_origin: self.total.queue_time,
            last_emitted: self.last_emitted,
            first_unsent,
            priority: if self.total.unsent_count > 0 {
                QueuePriority::Media
            } else {
                QueuePriority::Empty
            },
        }
    }

    pub(crate) fn clear(&mut self) {
        self.queue.clear();
        if let Some(mut q) = self.head.take() {
            // `sending` gets its empty payload back.
            q.packet.take_back(&mut self.sending);
        }
        self.total.clear();
        self.last_emitted = None;
    }
}

// Total queue time in buffer. This lovely drawing explains how to add more time.
//
// -time--------------------------------------------------------->
//
// +--------------+
// |              |
// +--------------+
//      +---------+                          Already
//      |         |                           queued
//      +---------+                         durations
//          +-----+
//          |     |
//          +-----+
//                       +-+
//                       | |         <-----  Add next
//                       +-+                  packet
//
//
//
// +--------------+--------+
// |              |@@@@@@@@|
// +--------------+--------+
//      +---------+--------+                 The @ is
//      |         |@@@@@@@@|                  what's
//      +---------+--------+                  added
//          +-----+--------+
//          |     |@@@@@@@@|
//          +-----+--------+
//                       +-+
//                       |@|
//                       +-+
#[derive(Debug, Default)]
struct TotalQueue {
    /// Number of unsent packets.
    unsent_count: usize,
    /// The data size (bytes) of the unsent packets.
    unsent_size: usize,
    // /// When we last added some value to `queue_time`.
    // last: Option<Instant>,
    /// The total queue time of all the unsent packets.
    queue_time: Duration,
    // Timestamp of the last added packet.
    last: Option<Instant>,
}

impl TotalQueue {
    fn move_time_forward(&mut self, now: Instant) {
        if let Some(last) = self.last {
            assert!(self.unsent_count > 0);
            // lumen: nothing to do when no time has passed, the common case
            // (a packet is queued and sent in the same poll): skips two
            // `Instant` subtractions per packet.
            if now != last {
                let from_last = now - last;
                self.queue_time += from_last * (self.unsent_count as u32);
                self.last = Some(now);
            }
        } else {
            assert!(self.unsent_count == 0);
            assert!(self.unsent_size == 0);
            assert!(self.queue_time == Duration::ZERO);
        }
    }

    fn increase(&mut self, now: Instant, size: usize) {
        self.move_time_forward(now);
        self.unsent_count += 1;
        self.unsent_size += size;
        self.last = Some(now);
    }

    fn decrease(&mut self, now: Instant, size: usize, queue_time: Duration) {
        self.move_time_forward(now);

        self.unsent_count -= 1;
        self.unsent_size -= size;

        self.queue_time -= queue_time;

        if self.unsent_count == 0 {
            assert!(self.unsent_size == 0);
            self.queue_time = Duration::ZERO;
            self.last = None;
        }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod test {
    use crate::rtp_::MediaTime;
    use crate::rtp_::RtpHeader;

    use super::*;

    // lumen: the packets' media times are 0, as their RTP timestamps are:
    // the queue keeps only the timestamp and the clock rate (see
    // `CompactPacket`).

    #[test]
    fn peek_pop_no_timestamp() {
        let mut queue = SendQueue::new();

        queue.push(RtpPacket {
            seq_no: 0.into(),
            time: MediaTime::from_90khz(0),
            header: RtpHeader::default(),
            payload: [].into(),
            vp8_patch: None,
            timestamp: Instant::now(),
            last_sender_info: None,
            nackable: true,
        });

        assert!(queue.peek().is_none());
        assert!(queue.pop(Instant::now()).is_none());
        assert!(queue.need_timeout());

        let snapshot_at = Instant::now() + Duration::from_secs(3);
        assert_eq!(
            queue.snapshot(snapshot_at),
            QueueSnapshot {
                created_at: snapshot_at,
                packet_count: 0,
                byte_size: 0,
                total_queue_time_origin: Duration::ZERO,
                first_unsent: None,
                priority: QueuePriority::Empty,
                ..Default::default()
            }
        );
    }

    #[test]
    fn peek_pop_after_timestamp() {
        let mut queue = SendQueue::new();

        let start = Instant::now();

        queue.push(RtpPacket {
            seq_no: 0.into(),
            time: MediaTime::from_90khz(0),
            header: RtpHeader::default(),
            payload: [42, 42].into(),
            vp8_patch: None,
            timestamp: start,
            last_sender_info: None,
            nackable: true,
        });

        queue.handle_timeout(start);

        assert!(queue.peek().is_some());
        assert!(!queue.need_timeout());

        let snapshot_at = start + Duration::from_secs(3);
        assert_eq!(
            queue.snapshot(snapshot_at),
            QueueSnapshot {
                created_at: snapshot_at,
                packet_count: 1,
                byte_size: 2,
                total_queue_time_origin: Duration::from_secs(3),
                first_unsent: Some(start),
                priority: QueuePriority::Media,
                ..Default::default()
            }
        );

        assert!(queue.pop(Instant::now()).is_some());
    }

    #[test]
    fn untimed_packets_are_contiguous_at_tail() {
        let mut queue = SendQueue::new();
        let start = Instant::now();

        queue.push(RtpPacket {
            seq_no: 0.into(),
            time: MediaTime::from_90khz(0),
            header: RtpHeader::default(),
            payload: [0; 10].into(),
            vp8_patch: None,
            timestamp: start,
            last_sender_info: None,
            nackable: true,
        });
        queue.push(RtpPacket {
            seq_no: 1.into(),
            time: MediaTime::from_90khz(0),
            header: RtpHeader::default(),
            payload: [1; 10].into(),
            vp8_patch: None,
            timestamp: start,
            last_sender_info: None,
            nackable: true,
        });
        queue.push(RtpPacket {
            seq_no: 2.into(),
            time: MediaTime::from_90khz(0),
            header: RtpHeader::default(),
            payload: [1; 10].into(),
            vp8_patch: None,
            timestamp: start,
            last_sender_info: None,
            nackable: true,
        });

        assert!(
            queue.queue.iter().all(|q| q.timestamp == not_happening()),
            "expect every new packet's timestamp to start with the sentinel value"
        );
        assert!(queue.need_timeout());

        let now = start + Duration::from_millis(10);
        queue.handle_timeout(now);

        assert!(
            queue.queue.iter().all(|q| q.timestamp != not_happening()),
            "expect handle_timeout to have timestamped every packet"
        );
        assert!(!queue.need_timeout());
    }

    // lumen: the queue keeps compact records and the packet being sent
    // whole (see `SendQueue::head`).
    #[test]
    fn a_peeked_packet_changed_in_place_is_the_one_popped() {
        let mut queue = SendQueue::new();
        let start = Instant::now();
        let packet = |seq_no: u64, byte: u8| RtpPacket {
            seq_no: seq_no.into(),
            time: MediaTime::from_90khz(10 * seq_no),
            header: RtpHeader {
                sequence_number: seq_no as u16,
                timestamp: 10 * seq_no as u32,
                ..Default::default()
            },
            payload: [byte; 3].into(),
            vp8_patch: None,
            timestamp: start,
            last_sender_info: None,
            nackable: seq_no != 1,
        };
        queue.push(packet(0, 7));
        queue.push(packet(1, 8));
        queue.handle_timeout(start);

        let head = queue.peek().unwrap();
        assert_eq!(*head.seq_no, 0);
        assert_eq!(head.timestamp, start);
        head.header.marker = true;
        head.header.ext_vals.audio_level = Some(-30);
        head.nackable = false;

        // A packet written while the head is out goes behind it.
        queue.push(packet(2, 9));
        assert!(queue.need_timeout());
        assert_eq!(queue.last_payload(), Some(&[9u8; 3][..]));
        let later = start + Duration::from_millis(5);
        queue.handle_timeout(later);
        let snapshot = queue.snapshot(later);
        assert_eq!(snapshot.packet_count, 3);
        assert_eq!(snapshot.first_unsent, Some(start));

        let whole = |q: QueuedPacket| q.packet.restore(q.seq_no, q.timestamp, q.nackable);
        let first = whole(queue.pop(later).unwrap());
        assert_eq!(*first.seq_no, 0);
        assert!(first.header.marker);
        assert_eq!(first.header.ext_vals.audio_level, Some(-30));
        assert!(!first.nackable);
        assert_eq!(&first.payload[..], &[7; 3]);

        // The next one is written over the first: nothing of it stays.
        let head = queue.peek().unwrap();
        assert!(!head.header.marker);
        assert!(head.header.ext_vals.is_empty());
        assert_eq!(&head.payload[..], &[8; 3]);
        let second = whole(queue.pop(later).unwrap());
        assert_eq!(*second.seq_no, 1);
        assert!(!second.header.marker);
        assert!(second.header.ext_vals.is_empty());
        assert!(!second.nackable);
        assert_eq!(second.time, MediaTime::from_90khz(10));
        assert_eq!(&second.payload[..], &[8; 3]);

        let third = whole(queue.pop(later).unwrap());
        assert_eq!(*third.seq_no, 2);
        assert!(third.nackable);
        assert_eq!(third.timestamp, later);
        // The packet being sent holds no payload of the queue's after.
        assert!(queue.sending.payload.is_empty());
        assert!(queue.is_empty());
        assert!(queue.pop(later).is_none());
        assert_eq!(queue.snapshot(later).packet_count, 0);
    }

    #[test]
    fn total_queue() {
        let mut total_queue = TotalQueue::default();
        let now = Instant::now();
        total_queue.increase(now, 0);
        total_queue.increase(now, 1);
        total_queue.decrease(now, 1, Duration::ZERO);
        // Doesn't panic
        total_queue.move_time_forward(now + Duration::from_millis(1));
    }
}
