//! The world of a scenario: one `Sfu`, browsers made of str0m `Rtc`s, a netem
//! link each way between every browser and the SFU, and a virtual clock.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lumen_sfu::{Input, Output, PeerId, RelayMessage, SessionError, Sfu, SfuConfig, SfuEvent};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Rtc, RtcConfig};
use str0m_netem::{Netem, NetemConfig};

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
    next_frame_at: Instant,
    next_timeout: Instant,
    up: Netem<Packet>,
    down: Netem<Packet>,
}

/// Another worker of the node.
pub struct Worker {
    pub sfu: Sfu,
    pub addr: SocketAddr,
    pub events: Vec<SfuEvent>,
    timeout: Instant,
}

pub struct World {
    pub start: Instant,
    pub now: Instant,
    pub sfu: Sfu,
    pub sfu_addr: SocketAddr,
    pub browsers: Vec<Browser>,
    pub sfu_events: Vec<SfuEvent>,
    sfu_timeout: Instant,
    /// More workers of the same node (worker `k` is `workers[k - 1]`;
    /// worker 0 is `sfu`), fed by cross-worker relay messages.
    pub workers: Vec<Worker>,
    /// Relay messages in flight: (from, to, message), in order.
    relay: std::collections::VecDeque<(usize, usize, RelayMessage)>,
    /// When set, every datagram worker 0 sends, in order: (to, bytes).
    pub sent_log: Option<Vec<(SocketAddr, usize)>>,
    seed: u64,
    stuck: u32,
}

impl World {
    pub fn new(seed: u64) -> Self {
        let start = Instant::now();
        let sfu_addr = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 8000));
        World {
            start,
            now: start,
            sfu: Sfu::new(SfuConfig::new(vec![sfu_addr]), start),
            sfu_addr,
            browsers: Vec::new(),
            sfu_events: Vec::new(),
            sfu_timeout: start,
            workers: Vec::new(),
            relay: Default::default(),
            sent_log: None,
            seed,
            stuck: 0,
        }
    }

    /// Adds a worker to the node; returns its index.
    pub fn add_worker(&mut self) -> usize {
        let k = self.workers.len() + 1;
        let addr = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 8000 + k as u16));
        self.workers.push(Worker {
            sfu: Sfu::new(SfuConfig::new(vec![addr]), self.now),
            addr,
            events: Vec::new(),
            timeout: self.now,
        });
        k
    }

    /// Worker `k`'s SFU.
    pub fn node(&mut self, k: usize) -> &mut Sfu {
        if k == 0 {
            &mut self.sfu
        } else {
            &mut self.workers[k - 1].sfu
        }
    }

    /// A viewer of `stream` on worker `k`, fed by worker 0 (the origin),
    /// as signaling places one: attach a mirror, hand over what the origin
    /// produced, then subscribe.
    pub fn viewer_on(
        &mut self,
        k: usize,
        stream: &str,
        down: NetemConfig,
    ) -> Result<usize, SessionError> {
        if k != 0 {
            let now = self.now;
            self.sfu.attach_mirror(now, stream, k)?;
            self.drain();
        }
        let i = self.new_browser(NetemConfig::new(), down);
        let b = &mut self.browsers[i];
        let mut api = b.rtc.sdp_api();
        let video = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let audio = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().expect("changes");
        b.video_mid = Some(video);
        b.audio_mid = Some(audio);
        let now = self.now;
        let answer = self
            .node(k)
            .subscribe(now, stream, &offer.to_sdp_string())?;
        self.finish(i, pending, &answer.answer_sdp, answer.peer);
        Ok(i)
    }

    fn new_browser(&mut self, link_up: NetemConfig, link_down: NetemConfig) -> usize {
        let i = self.browsers.len();
        let addr = SocketAddr::from((Ipv4Addr::new(10, 0, 1, (i + 1) as u8), 5000));
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_h264(true)
            .enable_opus(true, false)
            .build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
        let seed = self.seed.wrapping_mul(1000).wrapping_add(i as u64);
        self.browsers.push(Browser {
            rtc,
            addr,
            session: None,
            video_mid: None,
            audio_mid: None,
            connected_at: None,
            frames: Vec::new(),
            audio_frames: 0,
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
            next_frame_at: self.now,
            next_timeout: self.now,
            up: Netem::new(link_up.seed(seed * 2 + 1)),
            down: Netem::new(link_down.seed(seed * 2 + 2)),
        });
        i
    }

    /// A browser that publishes H.264 video and Opus audio on `stream`.
    pub fn publisher(&mut self, stream: &str, up: NetemConfig) -> Result<usize, SessionError> {
        let i = self.new_browser(up, NetemConfig::new());
        let b = &mut self.browsers[i];
        let mut api = b.rtc.sdp_api();
        let video = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().expect("changes");
        b.video_mid = Some(video);
        b.audio_mid = Some(audio);
        let answer = self.sfu.publish(self.now, stream, &offer.to_sdp_string())?;
        self.finish(i, pending, &answer.answer_sdp, answer.peer);
        self.browsers[i].publishing = true;
        Ok(i)
    }

    /// A browser that publishes three simulcast layers h, m, l of H.264
    /// (about 2.5 Mbps, 800 kbps and 200 kbps at 30 fps) plus Opus.
    pub fn simulcast_publisher(&mut self, stream: &str) -> Result<usize, SessionError> {
        let i = self.new_browser(NetemConfig::new(), NetemConfig::new());
        let b = &mut self.browsers[i];
        let layers: Vec<(Rid, usize)> = vec![
            (Rid::from("h"), 10_400),
            (Rid::from("m"), 3_300),
            (Rid::from("l"), 800),
        ];
        let simulcast = Simulcast {
            send: layers
                .iter()
                .map(|(rid, _)| SimulcastLayer {
                    rid: *rid,
                    attributes: None,
                })
                .collect(),
            recv: Vec::new(),
        };
        let mut api = b.rtc.sdp_api();
        let video = api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            None,
            None,
            Some(simulcast),
        );
        let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().expect("changes");
        b.video_mid = Some(video);
        b.audio_mid = Some(audio);
        b.layers = layers;
        let answer = self.sfu.publish(self.now, stream, &offer.to_sdp_string())?;
        self.finish(i, pending, &answer.answer_sdp, answer.peer);
        self.browsers[i].publishing = true;
        Ok(i)
    }

    /// Changes the conditions of the link from the SFU to browser `i`.
    pub fn set_down_link(&mut self, i: usize, config: NetemConfig) {
        let seed = self.seed.wrapping_mul(7919).wrapping_add(i as u64);
        self.browsers[i].down.set_config(config.seed(seed));
    }

    /// A browser that watches `stream`, over a link with the given conditions.
    pub fn viewer(&mut self, stream: &str, down: NetemConfig) -> Result<usize, SessionError> {
        self.viewer_on(0, stream, down)
    }

    fn finish(&mut self, i: usize, pending: SdpPendingOffer, answer: &str, peer: PeerId) {
        let b = &mut self.browsers[i];
        let answer = SdpAnswer::from_sdp_string(answer).expect("the SFU's answer parses");
        b.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("the SFU's answer is accepted");
        b.session = Some(peer);
        b.next_timeout = self.now;
    }

    /// Runs the world until `d` of virtual time has passed.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            self.step(until);
        }
    }

    /// Runs until `cond` holds or `limit` of virtual time passed; returns whether it held.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&World) -> bool) -> bool {
        let until = self.now + limit;
        while self.now < until {
            if cond(self) {
                return true;
            }
            self.step(until);
        }
        cond(self)
    }

    fn step(&mut self, until: Instant) {
        // The next thing that happens, anywhere.
        let mut next = until.min(self.sfu_timeout);
        for w in &self.workers {
            next = next.min(w.timeout);
        }
        for b in &self.browsers {
            next = next
                .min(b.next_timeout)
                .min(b.up.poll_timeout())
                .min(b.down.poll_timeout());
            if b.publishing {
                next = next.min(b.next_frame_at);
            }
        }
        if next > self.now {
            self.now = next;
            self.stuck = 0;
        } else {
            // Something keeps asking for "now" (a pacer, a link that is
            // busy): let time move, like str0m's own test harness does.
            self.stuck += 1;
            if self.stuck > 20 {
                self.now += Duration::from_millis(1);
                self.stuck = 0;
            }
        }
        let now = self.now;

        // Deliver what the links release.
        for i in 0..self.browsers.len() {
            let mut to_sfu = Vec::new();
            let mut to_browser = Vec::new();
            {
                let b = &mut self.browsers[i];
                b.up.handle_input(str0m_netem::Input::Timeout(now));
                while let Some(o) = b.up.poll_output() {
                    if let str0m_netem::Output::Packet(p) = o {
                        to_sfu.push(p);
                    }
                }
                b.down.handle_input(str0m_netem::Input::Timeout(now));
                while let Some(o) = b.down.poll_output() {
                    if let str0m_netem::Output::Packet(p) = o {
                        to_browser.push(p);
                    }
                }
            }
            for p in to_sfu {
                let input = Input::Receive {
                    now,
                    source: p.from,
                    destination: p.to,
                    data: &p.data,
                };
                match self.workers.iter_mut().find(|w| w.addr == p.to) {
                    Some(w) => w.sfu.handle_input(input),
                    None => self.sfu.handle_input(input),
                }
            }
            let b = &mut self.browsers[i];
            for p in to_browser {
                if let Ok(r) = Receive::new(Protocol::Udp, p.from, p.to, &p.data) {
                    let _ = b.rtc.handle_input(str0m::Input::Receive(now, r));
                }
                // Poll after every datagram, as a str0m application must: the
                // SRTP keys of a finished handshake are installed while
                // polling, so media right behind the last DTLS flight would
                // otherwise be dropped.
                b.drain(now);
            }
        }

        // Timers.
        if now >= self.sfu_timeout {
            self.sfu.handle_input(Input::Timeout(now));
        }
        for w in &mut self.workers {
            if now >= w.timeout {
                w.sfu.handle_input(Input::Timeout(now));
            }
        }
        for b in &mut self.browsers {
            if now >= b.next_timeout {
                let _ = b.rtc.handle_input(str0m::Input::Timeout(now));
            }
            if b.publishing && now >= b.next_frame_at {
                b.write_frame(now, self.start);
            }
        }

        self.drain();
    }

    fn drain(&mut self) {
        let now = self.now;
        loop {
            for k in 0..=self.workers.len() {
                self.drain_node(k, now);
            }
            if self.relay.is_empty() {
                break;
            }
            // Between workers, in order, as through the shell's channels.
            while let Some((from, to, m)) = self.relay.pop_front() {
                if to <= self.workers.len() {
                    self.node(to).handle_relay(now, from, m);
                }
            }
        }
        for b in &mut self.browsers {
            b.drain(now);
        }
    }

    fn drain_node(&mut self, k: usize, now: Instant) {
        loop {
            let out = self.node(k).poll_output();
            match out {
                Output::Transmit(t) => {
                    if k == 0
                        && let Some(log) = &mut self.sent_log
                    {
                        log.push((t.destination, t.contents.len()));
                    }
                    if let Some(b) = self.browsers.iter_mut().find(|b| b.addr == t.destination) {
                        let p = Packet {
                            from: t.source,
                            to: t.destination,
                            data: t.contents.to_vec(),
                        };
                        b.down.handle_input(str0m_netem::Input::Packet(now, p));
                    }
                }
                Output::Event(e) if k == 0 => self.sfu_events.push(e),
                Output::Event(e) => self.workers[k - 1].events.push(e),
                Output::Relay { to, message } => self.relay.push_back((k, to, message)),
                Output::Timeout(t) => {
                    // Everything produced went onto the links.
                    self.node(k).sent(now);
                    if k == 0 {
                        self.sfu_timeout = t;
                    } else {
                        self.workers[k - 1].timeout = t;
                    }
                    break;
                }
            }
        }
    }
}

impl Browser {
    fn drain(&mut self, now: Instant) {
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
                    Event::MediaData(d) => {
                        if Some(d.mid) == self.video_mid {
                            if let Some(f) = parse_frame(&d.data) {
                                self.frames.push(Got {
                                    number: f.0,
                                    keyframe: f.1,
                                    at: now,
                                    layer: f.2,
                                });
                            }
                        } else {
                            self.audio_frames += 1;
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

    fn write_frame(&mut self, now: Instant, start: Instant) {
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
