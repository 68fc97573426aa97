//! The world of a scenario: one `Sfu`, browsers made of str0m `Rtc`s, a netem
//! link each way between every browser and the SFU, and a virtual clock.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lumen_sfu::{
    Input, Output, PeerId, SessionError, Sfu, SfuConfig, SfuEvent, SinkId, SinkMessage,
};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Rid, Simulcast, SimulcastLayer};
use str0m_netem::NetemConfig;

mod browser;
mod flood;

pub use browser::{Browser, Got, Packet, gaps_and_reorders, make_frame};
pub use flood::{assert_undisturbed, bystander_and_attacker};

/// A clean link with 10 ms of latency each way.
pub fn link() -> NetemConfig {
    NetemConfig::new().latency(Duration::from_millis(10))
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
    /// worker 0 is `sfu`), fed by the sink messages of their mirrors.
    pub workers: Vec<Worker>,
    /// Sink messages in flight between workers: (from, to, message), in
    /// order.
    sink_messages: std::collections::VecDeque<(usize, usize, SinkMessage)>,
    /// When set, every datagram worker 0 sends, in order: (to, bytes).
    pub sent_log: Option<Vec<(SocketAddr, usize)>>,
    /// When set, the RTP header of every RTP datagram worker 0 sends
    /// (SRTP leaves it in the clear), in order: (to, payload type, header
    /// length in bytes with its extensions).
    pub rtp_header_log: Option<Vec<(SocketAddr, u8, usize)>>,
    /// When set, every RTP datagram into and out of worker 0, in order:
    /// when, the browser's address, whether it came in, payload type, RTP
    /// timestamp (SRTP leaves the header in the clear).
    pub rtp_times: Option<Vec<RtpSeen>>,
    /// What the workers handed to external sinks ([`SinkId::External`]),
    /// in order: (sink, message).
    pub sink_log: Vec<(u64, SinkMessage)>,
    seed: u64,
    stuck: u32,
}

impl World {
    pub fn new(seed: u64) -> Self {
        World::with_config(seed, |_| {})
    }

    /// A world whose SFU (worker 0) has this configuration.
    pub fn with_config(seed: u64, config: impl FnOnce(&mut SfuConfig)) -> Self {
        let start = Instant::now();
        let sfu_addr = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 8000));
        let mut sfu_config = SfuConfig::new(vec![sfu_addr]);
        config(&mut sfu_config);
        World {
            start,
            now: start,
            sfu: Sfu::new(sfu_config, start),
            sfu_addr,
            browsers: Vec::new(),
            sfu_events: Vec::new(),
            sfu_timeout: start,
            workers: Vec::new(),
            sink_messages: Default::default(),
            sent_log: None,
            rtp_header_log: None,
            rtp_times: None,
            sink_log: Vec::new(),
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
        self.viewer_with(k, stream, down, None)
    }

    /// [`Self::viewer_on`], with a data channel of this label in the offer.
    pub fn viewer_with(
        &mut self,
        k: usize,
        stream: &str,
        down: NetemConfig,
        channel: Option<&str>,
    ) -> Result<usize, SessionError> {
        self.viewer_full(k, stream, down, channel, false)
    }

    /// A viewer on worker 0 whose browser decodes AV1 as well as H.264
    /// (and offers both).
    pub fn viewer_av1(&mut self, stream: &str, down: NetemConfig) -> Result<usize, SessionError> {
        self.viewer_full(0, stream, down, None, true)
    }

    fn viewer_full(
        &mut self,
        k: usize,
        stream: &str,
        down: NetemConfig,
        channel: Option<&str>,
        av1: bool,
    ) -> Result<usize, SessionError> {
        if k != 0 {
            let now = self.now;
            self.sfu.attach_sink(now, stream, SinkId::Worker(k))?;
            self.drain();
        }
        let i = self.new_browser(NetemConfig::new(), down);
        let b = &mut self.browsers[i];
        if av1 {
            b.rtc = str0m::RtcConfig::new()
                .clear_codecs()
                .enable_h264(true)
                .enable_av1(true)
                .enable_opus(true, false)
                .build(self.now);
            b.rtc
                .add_local_candidate(str0m::Candidate::host(b.addr, "udp").expect("host"));
        }
        let mut api = b.rtc.sdp_api();
        let video = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let audio = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        b.channel = channel.map(|label| api.add_channel(label.to_string()));
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
        let seed = self.seed.wrapping_mul(1000).wrapping_add(i as u64);
        self.browsers
            .push(Browser::new(self.now, addr, seed, link_up, link_down));
        i
    }

    /// A browser that publishes H.264 video and Opus audio on `stream`.
    pub fn publisher(&mut self, stream: &str, up: NetemConfig) -> Result<usize, SessionError> {
        self.publisher_with(stream, up, None)
    }

    /// [`Self::publisher`], with a data channel of this label in the offer.
    pub fn publisher_with(
        &mut self,
        stream: &str,
        up: NetemConfig,
        channel: Option<&str>,
    ) -> Result<usize, SessionError> {
        let i = self.new_browser(up, NetemConfig::new());
        let b = &mut self.browsers[i];
        let mut api = b.rtc.sdp_api();
        let video = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        b.channel = channel.map(|label| api.add_channel(label.to_string()));
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
        b.answer_sdp = answer.to_string();
        let answer = SdpAnswer::from_sdp_string(answer).expect("the SFU's answer parses");
        b.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("the SFU's answer is accepted");
        b.session = Some(peer);
        b.next_timeout = self.now;
    }

    /// Browser `i` sends a message on its data channel. Returns whether
    /// its str0m took it (the channel is open and has room).
    #[inline(never)] // counted by benches/chat-cost.sh
    pub fn send_on_channel(&mut self, i: usize, binary: bool, data: &[u8]) -> bool {
        let now = self.now;
        let b = &mut self.browsers[i];
        let Some(id) = b.channel else {
            return false;
        };
        let sent = b
            .rtc
            .channel(id)
            .is_some_and(|mut ch| ch.write(binary, data).unwrap_or(false));
        b.drain(now);
        sent
    }

    /// Browser `i` closes its data channel.
    pub fn close_channel(&mut self, i: usize) {
        let now = self.now;
        let b = &mut self.browsers[i];
        if let Some(id) = b.channel {
            b.rtc.direct_api().close_data_channel(id);
        }
        b.drain(now);
    }

    /// External sink `n` sends `message` to worker 0 (the origin), as the
    /// shell would hand it over.
    pub fn sink_says(&mut self, n: u64, message: SinkMessage) {
        let now = self.now;
        self.sfu
            .handle_sink_message(now, SinkId::External(n), message);
        self.drain();
    }

    /// Runs `f` on worker 0 (a command, or a burst of datagrams) and
    /// drains it, as its thread would, and charges the real time that took
    /// to the virtual clock: the worker was busy that long, so everything
    /// that waited for it (packets on the links, its viewers' frames) shows
    /// the stall in virtual time.
    pub fn on_worker<T>(&mut self, f: impl FnOnce(&mut Sfu, Instant) -> T) -> T {
        let started = Instant::now();
        let r = f(&mut self.sfu, self.now);
        self.drain();
        self.now += started.elapsed();
        r
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
            next = next.min(b.next_wake());
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
            let (to_sfu, to_browser) = self.browsers[i].released(now);
            for p in to_sfu {
                let input = Input::Receive {
                    now,
                    source: p.from,
                    destination: p.to,
                    data: &p.data,
                };
                match self.workers.iter_mut().find(|w| w.addr == p.to) {
                    Some(w) => sfu_input(&mut w.sfu, input),
                    None => {
                        if let Some(log) = &mut self.rtp_times {
                            log.extend(RtpSeen::of(now, p.from, true, &p.data));
                        }
                        sfu_input(&mut self.sfu, input)
                    }
                }
            }
            self.browsers[i].receive(now, to_browser);
        }

        // Timers.
        if now >= self.sfu_timeout {
            sfu_input(&mut self.sfu, Input::Timeout(now));
        }
        for w in &mut self.workers {
            if now >= w.timeout {
                sfu_input(&mut w.sfu, Input::Timeout(now));
            }
        }
        for b in &mut self.browsers {
            b.tick(now, self.start);
        }

        self.drain();
    }

    fn drain(&mut self) {
        let now = self.now;
        loop {
            for k in 0..=self.workers.len() {
                self.drain_node(k, now);
            }
            if self.sink_messages.is_empty() {
                break;
            }
            // Between workers, in order, as through the shell's channels.
            while let Some((from, to, m)) = self.sink_messages.pop_front() {
                if to <= self.workers.len() {
                    self.node(to)
                        .handle_sink_message(now, SinkId::Worker(from), m);
                }
            }
        }
        for b in &mut self.browsers {
            b.settle(now);
        }
    }

    fn drain_node(&mut self, k: usize, now: Instant) {
        loop {
            let out = sfu_poll(self.node(k));
            match out {
                Output::Transmit(t) => {
                    if k == 0
                        && let Some(log) = &mut self.sent_log
                    {
                        log.push((t.destination, t.contents.len()));
                    }
                    if k == 0
                        && let Some(log) = &mut self.rtp_times
                    {
                        log.extend(RtpSeen::of(now, t.destination, false, &t.contents));
                    }
                    if k == 0
                        && let Some(log) = &mut self.rtp_header_log
                        && let Some((pt, len)) = rtp_header(&t.contents)
                    {
                        log.push((t.destination, pt, len));
                    }
                    if let Some(b) = self.browsers.iter_mut().find(|b| b.addr == t.destination) {
                        let p = Packet {
                            from: t.source,
                            to: t.destination,
                            data: t.contents.to_vec(),
                        };
                        b.down.handle_input(str0m_netem::Input::Packet(now, p));
                    }
                    // Sent: its buffer goes back, as lumen-node's outbox
                    // hands it back.
                    lumen_sfu::recycle_datagram(t.contents.into());
                }
                Output::Event(e) if k == 0 => self.sfu_events.push(e),
                Output::Event(e) => self.workers[k - 1].events.push(e),
                Output::Sink {
                    to: SinkId::Worker(to),
                    message,
                } => self.sink_messages.push_back((k, to, message)),
                Output::Sink {
                    to: SinkId::External(n),
                    message,
                } => self.sink_log.push((n, message)),
                Output::Sink { to, .. } => panic!("no sink {to:?} in this world"),
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

/// An RTP datagram into or out of worker 0 ([`World::rtp_times`]).
#[derive(Debug, Clone, Copy)]
pub struct RtpSeen {
    pub at: Instant,
    /// The browser's address (where it came from, or where it went).
    pub peer: SocketAddr,
    pub inbound: bool,
    pub pt: u8,
    pub timestamp: u32,
}

impl RtpSeen {
    fn of(at: Instant, peer: SocketAddr, inbound: bool, d: &[u8]) -> Option<Self> {
        let (pt, _) = rtp_header(d)?;
        Some(RtpSeen {
            at,
            peer,
            inbound,
            pt,
            timestamp: u32::from_be_bytes(d[4..8].try_into().ok()?),
        })
    }
}

/// An RTP datagram's payload type and header length (fixed header, CSRCs
/// and header extensions); `None` for RTCP, DTLS and STUN (RFC 7983).
fn rtp_header(d: &[u8]) -> Option<(u8, usize)> {
    if d.len() < 12 || d[0] >> 6 != 2 || (192..=223).contains(&d[1]) {
        return None;
    }
    let mut len = 12 + 4 * usize::from(d[0] & 0x0f);
    if d[0] & 0x10 != 0 {
        let words = usize::from(u16::from_be_bytes([*d.get(len + 2)?, *d.get(len + 3)?]));
        len += 4 + 4 * words;
    }
    Some((d[1] & 0x7f, len))
}

/// The world's calls into an SFU, each a function of its own that does
/// not end in the call (no tail call), so that `benches/chat-cost.sh` can
/// count everything under it.
#[inline(never)]
pub fn sfu_input(sfu: &mut Sfu, input: Input<'_>) {
    sfu.handle_input(input);
    std::hint::black_box(());
}

/// See [`sfu_input`].
#[inline(never)]
pub fn sfu_poll(sfu: &mut Sfu) -> Output {
    std::hint::black_box(sfu.poll_output())
}
