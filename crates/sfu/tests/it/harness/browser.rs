//! A browser of the scenario world: a str0m `Rtc` with its links, that
//! publishes numbered frames or records the frames, audio and data channel
//! messages it receives.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lumen_sfu::PeerId;
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Rtc, RtcConfig};
use str0m_netem::{Netem, NetemConfig};

/// Frames per second a publisher sends.
pub const FPS: u64 = 30;

#[derive(Clone)]
pub struct Packet {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

impl AsRef<[u8]> for Packet {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// A frame a viewer received.
#[derive(Debug, Clone, Copy)]
pub struct Got {
    pub number: u64,
    pub keyframe: bool,
    pub at: Instant,
    /// The simulcast layer the frame came from (b'-' without simulcast).
    pub layer: u8,
    /// The RTP sequence numbers (extended) of its first and last packet,
    /// as the viewer received them.
    pub seqs: (u64, u64),
    /// Its payload type, as the viewer negotiated it.
    pub pt: Pt,
}

pub struct Browser {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub session: Option<PeerId>,
    pub video_mid: Option<Mid>,
    pub audio_mid: Option<Mid>,
    pub connected_at: Option<Instant>,
    /// Viewer: frames received, in arrival order.
    pub frames: Vec<Got>,
    pub audio_frames: u64,
    /// Viewer: the audio level and voice activity (RFC 6464) of each audio
    /// frame received.
    pub audio_levels: Vec<(Option<i8>, Option<bool>)>,
    /// Publisher: the audio level and voice activity its audio carries.
    pub audio_level: Option<(i8, bool)>,
    /// Publisher: keyframe requests received.
    pub keyframe_requests: Vec<Instant>,
    pub publishing: bool,
    pub frame_no: u64,
    pub force_keyframe: bool,
    /// Simulcast: the layers sent (rid, frame bytes), and which are paused.
    pub layers: Vec<(Rid, usize)>,
    pub paused: Vec<Rid>,
    pub force_layer_keyframe: Vec<Rid>,
    /// Publisher: keyframe requests received, by rid.
    pub keyframe_requests_by_rid: Vec<(Instant, Option<Rid>)>,
    /// Publisher: a keyframe every this many frames (None: only when asked).
    pub keyframe_every: Option<u64>,
    /// Publisher without simulcast: bytes of a delta frame (a keyframe is
    /// three times that).
    pub frame_size: usize,
    /// The SFU's SDP answer.
    pub answer_sdp: String,
    /// The data channel it created in its offer, if any.
    pub channel: Option<ChannelId>,
    /// Data channels that opened: (id, label).
    pub channels_open: Vec<(ChannelId, String)>,
    /// Data channel messages received: (id, binary, data).
    pub channel_data: Vec<(ChannelId, bool, Vec<u8>)>,
    /// Data channels that closed.
    pub channels_closed: Vec<ChannelId>,
    pub(super) next_frame_at: Instant,
    pub(super) next_timeout: Instant,
    pub(super) up: Netem<Packet>,
    pub(super) down: Netem<Packet>,
}

impl Browser {
    /// A browser (H.264 and Opus) at `addr`, its host candidate, made at
    /// `now` on the virtual clock; its two links impaired by `up` and
    /// `down`, seeded from `seed`.
    pub(super) fn new(
        now: Instant,
        addr: SocketAddr,
        seed: u64,
        up: NetemConfig,
        down: NetemConfig,
    ) -> Browser {
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_h264(true)
            .enable_opus(true, false)
            .build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
        Browser {
            rtc,
            addr,
            session: None,
            video_mid: None,
            audio_mid: None,
            connected_at: None,
            frames: Vec::new(),
            audio_frames: 0,
            audio_levels: Vec::new(),
            audio_level: None,
            keyframe_requests: Vec::new(),
            publishing: false,
            frame_no: 0,
            force_keyframe: true,
            layers: Vec::new(),
            paused: Vec::new(),
            force_layer_keyframe: Vec::new(),
            keyframe_requests_by_rid: Vec::new(),
            keyframe_every: None,
            frame_size: 1800,
            answer_sdp: String::new(),
            channel: None,
            channels_open: Vec::new(),
            channel_data: Vec::new(),
            channels_closed: Vec::new(),
            next_frame_at: now,
            next_timeout: now,
            up: Netem::new(up.seed(seed * 2 + 1)),
            down: Netem::new(down.seed(seed * 2 + 2)),
        }
    }

    /// The next time something is due here: its own timeout, its links'
    /// releases, its next frame when publishing.
    pub(super) fn next_wake(&self) -> Instant {
        let next = self
            .next_timeout
            .min(self.up.poll_timeout())
            .min(self.down.poll_timeout());
        if self.publishing {
            next.min(self.next_frame_at)
        } else {
            next
        }
    }

    /// What its two links release at `now`: (towards the server, towards
    /// the browser).
    pub(super) fn released(&mut self, now: Instant) -> (Vec<Packet>, Vec<Packet>) {
        (released(&mut self.up, now), released(&mut self.down, now))
    }

    /// Takes datagrams its down link released, polling after each, as a
    /// str0m application must: the SRTP keys of a finished handshake are
    /// installed while polling, so media right behind the last DTLS flight
    /// would otherwise be dropped.
    #[inline(never)] // counted by benches/chat-cost.sh
    pub(super) fn receive(&mut self, now: Instant, packets: Vec<Packet>) {
        for p in packets {
            if let Ok(r) = Receive::new(Protocol::Udp, p.from, p.to, &p.data) {
                let _ = self.rtc.handle_input(str0m::Input::Receive(now, r));
            }
            self.drain(now);
        }
    }

    /// Its timers: str0m's timeout, and the next frame when publishing
    /// (frame times count from `start`).
    #[inline(never)] // counted by benches/chat-cost.sh
    pub(super) fn tick(&mut self, now: Instant, start: Instant) {
        if now >= self.next_timeout {
            let _ = self.rtc.handle_input(str0m::Input::Timeout(now));
        }
        if self.publishing && now >= self.next_frame_at {
            self.write_frame(now, start);
        }
        std::hint::black_box(());
    }

    /// [`Self::drain`] when the world drains every browser: a function of
    /// its own so that `benches/chat-cost.sh` can count it apart from the
    /// drains inside `receive`.
    #[inline(never)]
    pub(super) fn settle(&mut self, now: Instant) {
        self.drain(now);
        std::hint::black_box(());
    }

    pub(super) fn drain(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(str0m::Output::Timeout(t)) => {
                    self.next_timeout = t;
                    break;
                }
                Ok(str0m::Output::Transmit(t)) => {
                    let p = Packet {
                        from: t.source,
                        to: t.destination,
                        data: t.contents.to_vec(),
                    };
                    self.up.handle_input(str0m_netem::Input::Packet(now, p));
                }
                Ok(str0m::Output::Event(e)) => match e {
                    Event::Connected => self.connected_at = Some(now),
                    Event::KeyframeRequest(r) => {
                        self.keyframe_requests.push(now);
                        self.keyframe_requests_by_rid.push((now, r.rid));
                        match r.rid {
                            Some(rid) => self.force_layer_keyframe.push(rid),
                            None => self.force_keyframe = true,
                        }
                    }
                    Event::ChannelOpen(id, label) => self.channels_open.push((id, label)),
                    Event::ChannelData(d) => self.channel_data.push((d.id, d.binary, d.data)),
                    Event::ChannelClose(id) => self.channels_closed.push(id),
                    Event::MediaData(d) => {
                        if Some(d.mid) == self.video_mid {
                            if let Some(f) = parse_frame(&d.data) {
                                self.frames.push(Got {
                                    number: f.0,
                                    keyframe: f.1,
                                    at: now,
                                    layer: f.2,
                                    seqs: (**d.seq_range.start(), **d.seq_range.end()),
                                    pt: d.pt,
                                });
                            }
                        } else {
                            self.audio_frames += 1;
                            self.audio_levels
                                .push((d.ext_vals.audio_level, d.ext_vals.voice_activity));
                        }
                    }
                    _ => {}
                },
                Err(_) => {
                    self.next_timeout = now + Duration::from_millis(10);
                    break;
                }
            }
        }
    }

    pub(super) fn write_frame(&mut self, now: Instant, start: Instant) {
        self.next_frame_at = now + Duration::from_micros(1_000_000 / FPS);
        if self.connected_at.is_none() {
            return;
        }
        let n = self.frame_no;
        self.frame_no += 1;
        let key = self.force_keyframe || self.keyframe_every.is_some_and(|k| n.is_multiple_of(k));
        self.force_keyframe = false;
        let ticks = (now - start).as_micros() as u64 * 90 / 1000;
        let time = MediaTime::new(ticks, Frequency::NINETY_KHZ);
        if self.layers.is_empty() {
            let data = make_frame(n, key, b'-', self.frame_size);
            if let Some(mid) = self.video_mid
                && let Some(w) = self.rtc.writer(mid)
            {
                let pt = w
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::H264)
                    .map(|p| p.pt());
                if let Some(pt) = pt {
                    w.write(pt, now, time, data).expect("video write");
                }
            }
        } else {
            let forced = std::mem::take(&mut self.force_layer_keyframe);
            for (rid, size) in self.layers.clone() {
                if self.paused.contains(&rid) {
                    continue;
                }
                let key = key || forced.contains(&rid);
                let tag = rid.to_string().bytes().next().unwrap_or(b'?');
                let data = make_frame(n, key, tag, size);
                if let Some(mid) = self.video_mid
                    && let Some(w) = self.rtc.writer(mid)
                {
                    let pt = w
                        .payload_params()
                        .find(|p| p.spec().codec == Codec::H264)
                        .map(|p| p.pt());
                    if let Some(pt) = pt {
                        w.rid(rid).write(pt, now, time, data).expect("layer write");
                    }
                }
                self.drain(now);
            }
        }
        // Audio rides along: one 20 ms Opus packet per frame is close enough.
        if let Some(mid) = self.audio_mid
            && let Some(w) = self.rtc.writer(mid)
        {
            let pt = w
                .payload_params()
                .find(|p| p.spec().codec == Codec::Opus)
                .map(|p| p.pt());
            if let Some(pt) = pt {
                let t = (now - start).as_micros() as u64 * 48 / 1000;
                let w = match self.audio_level {
                    Some((level, voice)) => w.audio_level(level, voice),
                    None => w,
                };
                w.write(
                    pt,
                    now,
                    MediaTime::new(t, Frequency::FORTY_EIGHT_KHZ),
                    vec![0xf8, 0xff, 0xfe],
                )
                .expect("audio write");
            }
        }
        self.drain(now);
    }
}

/// An H.264 access unit in Annex B whose picture bytes carry its number and
/// layer as text (no zero bytes, so no accidental start codes). Keyframes
/// carry SPS + PPS + IDR; others one non-IDR slice.
pub fn make_frame(n: u64, key: bool, layer: u8, delta_size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let tag = format!("F{n:010}{};", layer as char);
    if key {
        out.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0x8c]);
        out.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
        out.extend_from_slice(&[0, 0, 0, 1, 0x65]);
    } else {
        out.extend_from_slice(&[0, 0, 0, 1, 0x41]);
    }
    out.extend_from_slice(tag.as_bytes());
    let size = if key { delta_size * 3 } else { delta_size };
    out.extend(std::iter::repeat_n(0x5a, size));
    out
}

/// Reads back (number, keyframe, layer) from a depacketized access unit.
pub fn parse_frame(data: &[u8]) -> Option<(u64, bool, u8)> {
    let pos = data.iter().position(|&b| b == b'F')?;
    let text = data.get(pos + 1..pos + 11)?;
    let n: u64 = std::str::from_utf8(text).ok()?.parse().ok()?;
    let layer = *data.get(pos + 11)?;
    let key = data.windows(5).any(|w| w == [0, 0, 0, 1, 0x65])
        || data.windows(4).any(|w| w == [0, 0, 1, 0x65]);
    Some((n, key, layer))
}

/// Frame numbers missing between consecutive received frames, and frames out of order.
pub fn gaps_and_reorders(frames: &[Got]) -> (u64, u64) {
    let mut gaps = 0;
    let mut reorders = 0;
    for w in frames.windows(2) {
        if w[1].number == w[0].number && w[1].layer != w[0].layer {
            // A switch down lands on the other layer's copy of the same
            // picture time: shown once more, not out of order.
            continue;
        }
        if w[1].number <= w[0].number {
            reorders += 1;
        } else {
            gaps += w[1].number - w[0].number - 1;
        }
    }
    (gaps, reorders)
}

/// What a link releases at `now`.
pub(super) fn released(net: &mut Netem<Packet>, now: Instant) -> Vec<Packet> {
    net.handle_input(str0m_netem::Input::Timeout(now));
    let mut out = Vec::new();
    while let Some(o) = net.poll_output() {
        if let str0m_netem::Output::Packet(p) = o {
            out.push(p);
        }
    }
    out
}
