//! Chat under load (`--chat-rate`): every viewer opens the `chat` data
//! channel (docs/chat.md), some of them speak, and every viewer times the
//! messages it receives.
//!
//! One pacer in the media loop spreads the total rate evenly: slot `s` is
//! due `s / rate` seconds after the start and belongs to chatter
//! `s % chatters`, so each chatter speaks every `chatters / rate` seconds
//! and never faster, whoever else has joined yet. A slot whose chatter has
//! not joined the room is skipped (counted, not sent). A message's text
//! carries its send time (`lt:<unix µs>:<viewer>:<n>`); a receiver on the
//! same machine subtracts it from the kernel's receive time of the datagram
//! that carried the frame. Latencies go into log-linear histograms, not
//! sample lists: 1,000 messages a second to 500 viewers is half a million
//! samples a second.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::report::Percentiles;

/// The label of the chat data channel.
pub const CHAT_LABEL: &str = "chat";
/// The prefix of the generator's message texts.
const STAMP_PREFIX: &str = "lt:";

/// What `--chat-rate` asks for.
#[derive(Clone, Debug, Default)]
pub struct ChatLoad {
    /// Messages per second in total, spread evenly over the chatters.
    pub rate_per_sec: f64,
    /// How many viewers speak: the first `chatters` in start order. The
    /// others only read (all viewers open the channel).
    pub chatters: usize,
    /// WHEP Bearer tokens of the chatters: chatter `i` uses
    /// `tokens[i % len]`, so each needs `chat:{stream}` and an identity of
    /// its own (the rate limit is per user). Empty: the run's token.
    pub tokens: Vec<String>,
    /// Open the channels with the `deflate-raw` subprotocol, as the web
    /// client does: large server messages come compressed.
    pub deflate: bool,
}

/// The chat section of the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChatReport {
    /// Messages per second asked for, in total.
    pub rate_per_sec: f64,
    /// Viewers that speak.
    pub chatters: usize,
    /// Viewers whose channel opened and that joined the room (got
    /// `history`).
    pub viewers_joined: usize,
    /// Messages sent.
    pub sent: u64,
    /// Pacer slots skipped because their chatter had not joined (yet) or
    /// had gone.
    pub skipped: u64,
    /// Messages str0m refused to queue (the SCTP buffer was full).
    pub buffer_full: u64,
    /// Receipts to expect: for every message sent, the viewers in the room
    /// at that moment (the sender included: the room echoes to everyone).
    pub expected: u64,
    /// `message` frames of this run received, all viewers.
    pub received: u64,
    /// `received` over `expected`, percent.
    pub received_percent: f64,
    /// Send to receipt, all receipts of the run.
    pub latency: Option<Percentiles>,
    /// Send to receipt of the receipts in the steady window.
    pub steady_latency: Option<Percentiles>,
    /// The steady window's receipts split at the room's timestamp (`ts`,
    /// whole milliseconds of the server's clock, which is this machine's
    /// when the server runs beside the generator): the chatter's send to
    /// the room ...
    pub steady_to_room: Option<Percentiles>,
    /// ... and the room to the receipt.
    pub steady_from_room: Option<Percentiles>,
    /// Over the viewers, each one's p99: how the worst-served client fared.
    pub per_viewer_p99: Option<Percentiles>,
    /// `error` frames by code.
    pub errors: BTreeMap<String, u64>,
    /// Chat channels closed by the server during the run.
    pub channels_closed: u64,
    /// Frames that were not JSON objects with a `type` (or compressed
    /// messages that did not inflate).
    pub unparsed: u64,
    /// Whether the channels asked for compressed messages.
    pub deflate: bool,
    /// Messages that came compressed, all viewers.
    pub compressed: u64,
    /// Bytes of the messages received on the channels, as sent
    /// (compressed or not), all viewers.
    pub bytes: u64,
}

impl ChatReport {
    /// The chat rows of the end-of-run table.
    pub fn rows(&self, row: &mut dyn FnMut(&str, String)) {
        row(
            "chat",
            format!(
                "{} msg/s asked, {} chatters, {} viewers in the room",
                self.rate_per_sec, self.chatters, self.viewers_joined
            ),
        );
        row(
            "  messages",
            format!(
                "{} sent, {} slots skipped, {} refused by the SCTP buffer",
                self.sent, self.skipped, self.buffer_full
            ),
        );
        row(
            "  channel messages",
            format!(
                "{} bytes received, {} messages compressed{}",
                self.bytes,
                self.compressed,
                if self.deflate { "" } else { " (not asked for)" }
            ),
        );
        row(
            "  receipts",
            format!(
                "{} of {} expected ({:.2} %)",
                self.received, self.expected, self.received_percent
            ),
        );
        row("  send→receipt latency", pct(&self.latency));
        row("  steady latency", pct(&self.steady_latency));
        row("    send→room", pct(&self.steady_to_room));
        row("    room→receipt", pct(&self.steady_from_room));
        row("  per-viewer p99", pct(&self.per_viewer_p99));
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            self.errors
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        row("  errors", errors);
        if self.channels_closed > 0 || self.unparsed > 0 {
            row(
                "  trouble",
                format!(
                    "{} channels closed, {} frames not understood",
                    self.channels_closed, self.unparsed
                ),
            );
        }
    }
}

fn pct(p: &Option<Percentiles>) -> String {
    match p {
        Some(p) => format!(
            "p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n={})",
            p.p50_ms, p.p99_ms, p.max_ms, p.count
        ),
        None => "-".to_owned(),
    }
}

/// What a message text says about its sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Send time, µs since the Unix epoch.
    pub sent_us: u64,
    /// The sender's viewer id.
    pub viewer: usize,
    /// The sender's message number.
    pub n: u64,
}

impl Stamp {
    /// The message text.
    pub fn text(&self) -> String {
        format!("{STAMP_PREFIX}{}:{}:{}", self.sent_us, self.viewer, self.n)
    }

    /// Reads a text made by [`Stamp::text`]; `None` for anything else
    /// (another client's message, a masked word).
    pub fn parse(text: &str) -> Option<Stamp> {
        let mut parts = text.strip_prefix(STAMP_PREFIX)?.split(':');
        let stamp = Stamp {
            sent_us: parts.next()?.parse().ok()?,
            viewer: parts.next()?.parse().ok()?,
            n: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(stamp)
    }
}

/// A server frame, as far as the load run cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A `message`: the stamp if it is one of this generator's, and the
    /// room's `ts` (milliseconds since the Unix epoch).
    Message(Option<Stamp>, Option<u64>),
    /// `history`: the viewer is in the room.
    History,
    /// `error` with its code.
    Error(String),
    /// Any other frame.
    Other,
    /// Not a JSON object with a string `type`.
    Unparsed,
}

/// Sorts one received data-channel message: one frame, or each frame of a
/// `batch` (docs/chat.md) in order. Only the fields needed are read,
/// borrowed where the JSON has no escapes.
pub fn parse_frames(data: &[u8], mut each: impl FnMut(Incoming)) {
    #[derive(Deserialize)]
    struct Frame<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(default, borrow)]
        text: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        code: Option<Cow<'a, str>>,
        #[serde(default)]
        ts: Option<u64>,
        /// A batch's frames (a batch holds no batch).
        #[serde(default, borrow)]
        frames: Option<Vec<Frame<'a>>>,
    }
    fn sort(f: Frame<'_>) -> Incoming {
        match &*f.kind {
            "message" => Incoming::Message(f.text.as_deref().and_then(Stamp::parse), f.ts),
            "history" => Incoming::History,
            "error" => Incoming::Error(f.code.map_or_else(|| "?".to_owned(), Cow::into_owned)),
            _ => Incoming::Other,
        }
    }
    match serde_json::from_slice::<Frame<'_>>(data) {
        Ok(Frame {
            kind,
            frames: Some(frames),
            ..
        }) if kind == "batch" => frames.into_iter().map(sort).for_each(each),
        Ok(f) => each(sort(f)),
        Err(_) => each(Incoming::Unparsed),
    }
}

/// The one frame of a message that is not a batch (tests).
#[cfg(test)]
fn parse_frame(data: &[u8]) -> Incoming {
    let mut out = Vec::new();
    parse_frames(data, |i| out.push(i));
    assert_eq!(out.len(), 1, "one frame");
    out.remove(0)
}

/// `{"type":"send","text":…}` for a stamp (the text needs no escaping).
pub fn send_frame(stamp: &Stamp) -> String {
    format!(r#"{{"type":"send","text":"{}"}}"#, stamp.text())
}

/// Sub-buckets per power of two: about 3 % resolution.
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Up to 2^40 µs (12 days): every latency this tool can see.
const BUCKETS: usize = SUB + (40 - SUB_BITS as usize) * SUB;

/// Receipts of a stretch of the run: send to receipt, and the same split
/// at the room's timestamp.
#[derive(Clone, Debug, Default)]
pub struct Receipts {
    /// Send to receipt.
    pub all: Histogram,
    /// Send to the room's `ts`: the chatter's SCTP, the server's receive
    /// path and the room. `ts` is whole milliseconds, so this reads up to
    /// 1 ms short and `from_room` up to 1 ms long.
    pub to_room: Histogram,
    /// The room's `ts` to receipt: the fan-out, the server's SCTP and send
    /// path, and the viewer's socket.
    pub from_room: Histogram,
}

impl Receipts {
    /// One receipt of a message sent at `sent_us`, stamped by the room at
    /// `room_ms` (if the frame had a `ts`) and received at `arrived_us`.
    pub fn record(&mut self, sent_us: u64, room_ms: Option<u64>, arrived_us: u64) {
        self.all.record(arrived_us.saturating_sub(sent_us));
        if let Some(room_us) = room_ms.map(|ms| ms.saturating_mul(1000)) {
            self.to_room.record(room_us.saturating_sub(sent_us));
            self.from_room.record(arrived_us.saturating_sub(room_us));
        }
    }

    /// Receipts recorded.
    pub fn count(&self) -> u64 {
        self.all.count()
    }

    /// Adds `other`'s receipts.
    pub fn merge(&mut self, other: &Receipts) {
        self.all.merge(&other.all);
        self.to_room.merge(&other.to_room);
        self.from_room.merge(&other.from_room);
    }
}

/// A log-linear histogram of microseconds: exact below 32 µs, then 32
/// buckets per power of two. Percentiles are read at the middle of their
/// bucket; the maximum is kept exactly.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u32>,
    count: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            count: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    /// Adds one sample.
    pub fn record(&mut self, us: u64) {
        let i = bucket(us).min(BUCKETS - 1);
        self.counts[i] = self.counts[i].saturating_add(1);
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// p50, p99 and max; `None` when empty.
    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.count == 0 {
            return None;
        }
        let at = |q: f64| {
            // The same rank as `Percentiles::from_micros`.
            let rank = ((self.count - 1) as f64 * q).round() as u64;
            let mut seen = 0u64;
            for (i, &c) in self.counts.iter().enumerate() {
                seen += u64::from(c);
                if seen > rank {
                    return mid(i).min(self.max_us) as f64 / 1000.0;
                }
            }
            self.max_us as f64 / 1000.0
        };
        Some(Percentiles {
            count: self.count as usize,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: self.max_us as f64 / 1000.0,
        })
    }
}

fn bucket(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros(); // ≥ SUB_BITS
    let shift = e - SUB_BITS;
    let m = ((us >> shift) as usize) & (SUB - 1);
    SUB + shift as usize * SUB + m
}

/// The middle of bucket `i`, µs.
fn mid(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let shift = ((i - SUB) / SUB) as u32;
    let m = ((i - SUB) % SUB) as u64;
    let low = (SUB as u64 + m) << shift;
    low + (1u64 << shift) / 2
}

/// The one scheduler of all chatters' messages.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    chatters: usize,
    start: Instant,
    next_slot: u64,
}

impl Pacer {
    /// Slots every `1 / rate_per_sec` from `start`, round the chatters.
    /// `None` when there is nothing to pace.
    pub fn new(rate_per_sec: f64, chatters: usize, start: Instant) -> Option<Pacer> {
        let interval = Duration::try_from_secs_f64(1.0 / rate_per_sec).ok()?;
        (chatters > 0 && !interval.is_zero()).then_some(Pacer {
            interval,
            chatters,
            start,
            next_slot: 0,
        })
    }

    /// When the next slot is due.
    pub fn next_due(&self) -> Instant {
        self.start
            + self
                .interval
                .saturating_mul(self.next_slot.min(u32::MAX as u64) as u32)
    }

    /// The chatter of the next slot if it is due at `now`, and moves on.
    pub fn poll_due(&mut self, now: Instant) -> Option<usize> {
        if self.next_due() > now {
            return None;
        }
        let chatter = (self.next_slot % self.chatters as u64) as usize;
        self.next_slot += 1;
        Some(chatter)
    }
}

/// One viewer's chat state in the media loop.
#[derive(Debug, Default)]
pub struct ChatSlot {
    /// The channel str0m made for the offer.
    pub channel: Option<str0m::channel::ChannelId>,
    /// The channel opened.
    pub open: bool,
    /// `history` arrived: the room has this viewer as a member.
    pub joined: bool,
    /// Messages this viewer sent.
    pub sent: u64,
    /// Its messages numbered so far (sent or refused by the buffer).
    pub next_n: u64,
    /// Send to receipt of what it received.
    pub latency: Histogram,
}

/// The whole run's chat counters, kept by the media loop.
#[derive(Debug, Default)]
pub struct ChatTotals {
    /// Messages sent.
    pub sent: u64,
    /// Slots whose chatter was not in the room.
    pub skipped: u64,
    /// Writes str0m refused.
    pub buffer_full: u64,
    /// Receipts to expect.
    pub expected: u64,
    /// Stamped `message` frames received.
    pub received: u64,
    /// Viewers in the room now.
    pub members: u64,
    /// Viewers that ever joined.
    pub joined: u64,
    /// `error` frames by code.
    pub errors: BTreeMap<String, u64>,
    /// Channels the server closed.
    pub closed: u64,
    /// Frames not understood.
    pub unparsed: u64,
    /// Messages that came compressed.
    pub compressed: u64,
    /// Bytes of the messages received, as sent.
    pub bytes: u64,
    /// All receipts.
    pub latency: Histogram,
    /// Receipts since the last timeline point.
    pub window: Receipts,
    /// Each second's receipts, with the end of the second (for the steady
    /// window, chosen after the run).
    pub seconds: Vec<(Instant, Receipts)>,
    /// The frames of messages received lately, by their bytes.
    decoded: Decoded,
}

/// The frames of the last messages received, by their bytes as received:
/// the server sends the same message (a round's frames, compressed once) to
/// every member, so this loop's viewers mostly receive bytes another of
/// them just received. Inflating and parsing them once, not once per
/// viewer, keeps the generator's CPU for receiving; every viewer's receipt
/// is still counted and timed on its own. A real client decodes its own
/// copy, on its own machine.
#[derive(Debug, Default)]
struct Decoded {
    /// Text messages, then binary (compressed) ones.
    by_bytes: [FramesOf; 2],
}

/// A message's frames, by its bytes.
type FramesOf = HashMap<Box<[u8]>, Arc<[Incoming]>>;

/// Most messages of a kind [`Decoded`] keeps (a few rounds' worth); then it
/// starts over.
const DECODED_KEPT: usize = 64;

impl Decoded {
    /// The frames of a message: inflated (when `binary`) and parsed, or
    /// what an earlier viewer's identical message gave.
    fn decode(&mut self, binary: bool, data: &[u8]) -> Arc<[Incoming]> {
        let seen = &mut self.by_bytes[usize::from(binary)];
        if let Some(f) = seen.get(data) {
            return f.clone();
        }
        let mut frames = Vec::new();
        if binary {
            match lumen_chat::protocol::inflate(data) {
                Some(text) => parse_frames(text.as_bytes(), |f| frames.push(f)),
                None => frames.push(Incoming::Unparsed),
            }
        } else {
            parse_frames(data, |f| frames.push(f));
        }
        let frames: Arc<[Incoming]> = frames.into();
        if seen.len() >= DECODED_KEPT {
            seen.clear();
        }
        seen.insert(data.into(), frames.clone());
        frames
    }
}

impl ChatTotals {
    /// Takes one received frame of a viewer; `arrived_us` is its receive
    /// time, µs since the epoch.
    pub fn on_frame(&mut self, slot: &mut ChatSlot, binary: bool, data: &[u8], arrived_us: u64) {
        self.bytes += data.len() as u64;
        if binary {
            // Only a compressed message is binary (docs/chat.md).
            self.compressed += 1;
        }
        let frames = self.decoded.decode(binary, data);
        for f in frames.iter().cloned() {
            self.take(slot, f, arrived_us);
        }
    }

    /// Counts one frame a viewer received.
    fn take(&mut self, slot: &mut ChatSlot, f: Incoming, arrived_us: u64) {
        match f {
            Incoming::Message(Some(stamp), room_ms) => {
                let lat = arrived_us.saturating_sub(stamp.sent_us);
                self.received += 1;
                self.latency.record(lat);
                self.window.record(stamp.sent_us, room_ms, arrived_us);
                slot.latency.record(lat);
            }
            Incoming::History if !slot.joined => {
                slot.joined = true;
                self.members += 1;
                self.joined += 1;
            }
            Incoming::Error(code) => *self.errors.entry(code).or_default() += 1,
            Incoming::Unparsed => self.unparsed += 1,
            Incoming::Message(None, _) | Incoming::History | Incoming::Other => {}
        }
    }

    /// The viewer left the room (channel closed, or the viewer died).
    pub fn left(&mut self, slot: &mut ChatSlot) {
        if slot.joined {
            slot.joined = false;
            self.members = self.members.saturating_sub(1);
        }
        slot.open = false;
    }

    /// Closes the current second (a timeline point).
    pub fn tick(&mut self, now: Instant) -> Option<Percentiles> {
        let p = self.window.all.percentiles();
        let full = std::mem::take(&mut self.window);
        self.seconds.push((now, full));
        p
    }

    /// The report, with `steady_from` as the start of the steady window
    /// and each viewer's slot.
    pub fn report<'a>(
        &self,
        load: &ChatLoad,
        steady_from: Instant,
        slots: impl Iterator<Item = &'a ChatSlot>,
    ) -> ChatReport {
        let mut steady = Receipts::default();
        for (end, r) in &self.seconds {
            if *end > steady_from {
                steady.merge(r);
            }
        }
        let mut p99s: Vec<u64> = slots
            .filter_map(|s| s.latency.percentiles())
            .map(|p| (p.p99_ms * 1000.0) as u64)
            .collect();
        ChatReport {
            rate_per_sec: load.rate_per_sec,
            chatters: load.chatters,
            viewers_joined: self.joined as usize,
            sent: self.sent,
            skipped: self.skipped,
            buffer_full: self.buffer_full,
            expected: self.expected,
            received: self.received,
            received_percent: if self.expected > 0 {
                self.received as f64 * 100.0 / self.expected as f64
            } else {
                0.0
            },
            latency: self.latency.percentiles(),
            steady_latency: steady.all.percentiles(),
            steady_to_room: steady.to_room.percentiles(),
            steady_from_room: steady.from_room.percentiles(),
            per_viewer_p99: Percentiles::from_micros(&mut p99s),
            errors: self.errors.clone(),
            channels_closed: self.closed,
            unparsed: self.unparsed,
            deflate: load.deflate,
            compressed: self.compressed,
            bytes: self.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_others_are_ignored() {
        let s = Stamp {
            sent_us: 1_764_643_200_123_456,
            viewer: 17,
            n: 3,
        };
        assert_eq!(s.text(), "lt:1764643200123456:17:3");
        assert_eq!(Stamp::parse(&s.text()), Some(s));
        for other in [
            "hello",
            "lt:",
            "lt:1:2",
            "lt:1:2:3:4",
            "lt:x:2:3",
            "xlt:1:2:3",
        ] {
            assert_eq!(Stamp::parse(other), None, "{other}");
        }
    }

    #[test]
    fn frames_sort_by_type() {
        let s = Stamp {
            sent_us: 5,
            viewer: 1,
            n: 0,
        };
        let sent: serde_json::Value = serde_json::from_str(&send_frame(&s)).expect("json");
        assert_eq!(sent["type"], "send");
        assert_eq!(sent["text"], "lt:5:1:0");
        let msg = format!(
            r#"{{"type":"message","id":4,"user":"load-1","display_name":"load-1","role":"viewer","text":"{}","ts":1}}"#,
            s.text()
        );
        assert_eq!(
            parse_frame(msg.as_bytes()),
            Incoming::Message(Some(s), Some(1))
        );
        assert_eq!(
            parse_frame(br#"{"type":"message","text":"hi \"there\""}"#),
            Incoming::Message(None, None)
        );
        assert_eq!(
            parse_frame(br#"{"type":"history","messages":[{"text":"lt:1:2:3"}]}"#),
            Incoming::History
        );
        assert_eq!(
            parse_frame(
                br#"{"type":"error","code":"rate_limited","message":"slow down","retry_after":3}"#
            ),
            Incoming::Error("rate_limited".into())
        );
        assert_eq!(
            parse_frame(br#"{"type":"state","slow_mode":0}"#),
            Incoming::Other
        );
        for bad in [&b""[..], b"42", b"{\"type\":1}", b"\xc3\x28", b"{"] {
            assert_eq!(parse_frame(bad), Incoming::Unparsed);
        }
    }

    #[test]
    fn a_receipt_splits_at_the_rooms_timestamp() {
        let mut r = Receipts::default();
        // Sent at 1 s, stamped by the room at 1.003 s, received at 1.0105 s.
        r.record(1_000_000, Some(1_003), 1_010_500);
        // A frame without `ts` counts whole only.
        r.record(1_000_000, None, 1_020_000);
        let max = |h: &Histogram| h.percentiles().map(|p| p.max_ms);
        assert_eq!(r.count(), 2);
        assert_eq!(max(&r.all), Some(20.0));
        assert_eq!((r.to_room.count(), max(&r.to_room)), (1, Some(3.0)));
        assert_eq!((r.from_room.count(), max(&r.from_room)), (1, Some(7.5)));
        let mut merged = Receipts::default();
        merged.merge(&r);
        merged.merge(&r);
        assert_eq!((merged.count(), merged.from_room.count()), (4, 2));
    }

    #[test]
    fn batches_are_taken_frame_by_frame() {
        let s = Stamp {
            sent_us: 9,
            viewer: 2,
            n: 1,
        };
        let msg = format!(
            r#"{{"type":"message","id":4,"text":"{}","ts":1}}"#,
            s.text()
        );
        let batch = format!(
            r#"{{"type":"batch","frames":[{{"type":"history","messages":[]}},{{"type":"state","slow_mode":0}},{msg}]}}"#
        );
        let mut got = Vec::new();
        parse_frames(batch.as_bytes(), |i| got.push(i));
        assert_eq!(
            got,
            vec![
                Incoming::History,
                Incoming::Other,
                Incoming::Message(Some(s), Some(1))
            ]
        );
        let mut slot = ChatSlot::default();
        let mut totals = ChatTotals::default();
        totals.on_frame(&mut slot, false, batch.as_bytes(), 20);
        assert!(slot.joined);
        assert_eq!((totals.received, totals.joined), (1, 1));
        assert_eq!(totals.latency.percentiles().map(|p| p.max_ms), Some(0.011));
    }

    /// Every viewer that receives the same bytes counts its own receipt,
    /// whether the frames were decoded for it or for a viewer before it.
    #[test]
    fn identical_messages_count_for_every_viewer() {
        let s = Stamp {
            sent_us: 9,
            viewer: 2,
            n: 1,
        };
        let batch = format!(
            r#"{{"type":"batch","frames":[{{"type":"history","messages":[]}},{{"type":"notice","text":"{}"}},{{"type":"message","id":4,"text":"{}","ts":1}}]}}"#,
            "x".repeat(600),
            s.text()
        );
        let zipped = lumen_chat::protocol::deflate(&batch).expect("long enough to compress");
        let mut totals = ChatTotals::default();
        let mut slots: Vec<ChatSlot> = (0..3).map(|_| ChatSlot::default()).collect();
        for (i, slot) in slots.iter_mut().enumerate() {
            totals.on_frame(slot, true, &zipped, 20 + i as u64);
            assert!(slot.joined, "viewer {i}");
        }
        totals.on_frame(&mut slots[0], false, batch.as_bytes(), 30);
        assert_eq!(
            (totals.received, totals.joined, totals.compressed),
            (4, 3, 3)
        );
        assert_eq!(totals.latency.percentiles().map(|p| p.max_ms), Some(0.021));
        // Bytes that do not inflate count as not understood, every time.
        for _ in 0..2 {
            totals.on_frame(&mut slots[1], true, b"\xff\xff", 40);
        }
        assert_eq!(totals.unparsed, 2);
        // More distinct messages than are kept: each still decoded.
        for n in 0..(DECODED_KEPT as u64 * 2) {
            let s = Stamp {
                sent_us: 1,
                viewer: 0,
                n,
            };
            let msg = format!(
                r#"{{"type":"message","id":{n},"text":"{}","ts":1}}"#,
                s.text()
            );
            totals.on_frame(&mut slots[2], false, msg.as_bytes(), 5);
        }
        assert_eq!(totals.received, 4 + DECODED_KEPT as u64 * 2);
    }

    #[test]
    fn histogram_percentiles_are_close_to_exact_ones() {
        let mut h = Histogram::default();
        let mut exact: Vec<u64> = (0..10_000u64).map(|i| (i * 7_919) % 50_000 + 3).collect();
        for &v in &exact {
            h.record(v);
        }
        let e = Percentiles::from_micros(&mut exact).expect("samples");
        let p = h.percentiles().expect("samples");
        assert_eq!(p.count, e.count);
        assert_eq!(p.max_ms, e.max_ms);
        for (got, want) in [(p.p50_ms, e.p50_ms), (p.p99_ms, e.p99_ms)] {
            assert!((got - want).abs() <= want * 0.04, "{got} vs {want}");
        }
        let mut small = Histogram::default();
        small.record(7);
        assert_eq!(small.percentiles().map(|p| p.p50_ms), Some(0.007));
        let mut merged = Histogram::default();
        merged.merge(&h);
        merged.merge(&small);
        assert_eq!(merged.percentiles().map(|p| p.count), Some(10_001));
        assert_eq!(Histogram::default().percentiles(), None);
        // Every bucket's middle falls back into that bucket.
        for i in 0..BUCKETS {
            assert_eq!(bucket(mid(i)), i, "bucket {i}");
        }
    }

    #[test]
    fn pacer_spreads_the_rate_round_the_chatters() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100.0, 3, t0).expect("a pacer");
        assert_eq!(p.poll_due(t0), Some(0));
        assert_eq!(p.poll_due(t0), None, "the next slot is 10 ms later");
        let later = t0 + Duration::from_millis(35);
        let due: Vec<usize> = std::iter::from_fn(|| p.poll_due(later)).collect();
        assert_eq!(due, vec![1, 2, 0]);
        assert_eq!(p.next_due(), t0 + Duration::from_millis(40));
        assert!(Pacer::new(0.0, 3, t0).is_none());
        assert!(Pacer::new(10.0, 0, t0).is_none());
    }
}
