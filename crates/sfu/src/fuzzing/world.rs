//! A worker with live sessions to throw datagrams at: str0m `Rtc`s play the
//! browsers (a publisher and a viewer, as in `tests/it/harness.rs`), wired
//! to the `Sfu` directly, with a virtual clock. The fuzz input then acts as
//! the network and as the browsers' applications.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::crypto::Sha1HmacProvider;
use str0m::crypto::dtls::DtlsCert;
use str0m::ice::{StunMessage, TransId};
use str0m::media::{
    Direction, KeyframeRequestKind, MediaKind, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionMap, RtpWrite};
use str0m::{Candidate, Event, Rtc, RtcConfig};

use crate::{Input, Output, PeerId, Sfu, SfuConfig};

/// Bits of a world's setup byte: the publisher sends VP8 (else H.264), in
/// three simulcast layers, and negotiates no RTP header extensions (a
/// minimal client: 12-byte headers, streams told apart by SSRC).
const VP8: u8 = 1;
const SIMULCAST: u8 = 2;
const BARE: u8 = 4;

/// The stream every session of the world is on.
pub(super) const STREAM: &str = "fuzz";

/// Where datagrams come from: a record's source bits index this.
pub(super) const SOURCES: [SocketAddr; 4] = [
    // A stranger nobody introduced.
    addr([10, 9, 9, 9], 1234),
    // The publisher and the first viewer, as their sessions know them.
    addr([10, 0, 1, 1], 5000),
    addr([10, 0, 1, 2], 5000),
    // The publisher behind a rebinding NAT: a second address of its own.
    addr([10, 0, 1, 1], 6000),
];

pub(super) const SFU_ADDR: SocketAddr = addr([10, 0, 0, 1], 8000);

/// More browsers than this and a join is ignored (it costs a handshake).
const MAX_BROWSERS: usize = 4;

/// Rounds of SFU ⇄ browsers delivery per pump: far more than any exchange
/// takes; a bound so that a ping-pong bug shows as slowness, not a hang.
const MAX_PUMP_ROUNDS: usize = 64;

/// Timer firings per `run_for`, a bound on the cost of a long wait.
const MAX_STEPS: usize = 400;

const fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(
        std::net::IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
        port,
    )
}

pub(super) struct Browser {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub peer: Option<PeerId>,
    pub ufrag: String,
    /// The SFU's credentials for this session, from its answer.
    pub sfu_ufrag: String,
    pub sfu_pwd: String,
    pub video: Option<Mid>,
    pub audio: Option<Mid>,
    pub rids: Vec<Rid>,
    pub connected: bool,
    /// Muted: gone from the network (nothing in or out, no timers).
    pub muted: bool,
    /// Datagrams from the SFU the network will lose before the next arrives.
    lose: u8,
    /// The largest payload its str0m can put in a packet (publisher).
    max_payload: usize,
    /// RTP packets received (viewers).
    pub rtp_in: usize,
    /// Publisher: the last sequence number and timestamp written per
    /// (audio, rid index).
    seq_ts: Vec<((bool, usize), u64, u32)>,
    timeout: Instant,
}

pub(super) struct World {
    pub now: Instant,
    pub sfu: Sfu,
    pub browsers: Vec<Browser>,
    sfu_timeout: Instant,
    /// When set, every datagram a browser sends: (browser index, bytes).
    pub capture: Option<Vec<(usize, Vec<u8>)>>,
}

impl World {
    /// A worker with a connected publisher (video as `setup` says, and
    /// Opus) and a connected viewer of its stream.
    pub fn new(start: Instant, setup: u8, capture: bool) -> World {
        let mut w = World {
            now: start,
            sfu: Sfu::new(SfuConfig::new(vec![SFU_ADDR]), start),
            browsers: Vec::new(),
            sfu_timeout: start,
            capture: capture.then(Vec::new),
        };
        w.publisher(setup);
        w.join();
        w.connect();
        w
    }

    fn browser(&self, h264: bool, vp8: bool, bare: bool) -> Browser {
        let i = self.browsers.len();
        let addr = addr([10, 0, 1, (i + 1) as u8], 5000);
        let mut config = RtcConfig::new()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_h264(h264)
            .enable_vp8(vp8)
            .set_rtp_mode(true);
        if bare {
            config = config.set_extension_map(ExtensionMap::empty());
        }
        if let Some(cert) = browser_cert() {
            config = config.set_dtls_cert(cert.clone());
        }
        let mut rtc = config.build(self.now);
        if let Ok(c) = Candidate::host(addr, "udp") {
            rtc.add_local_candidate(c);
        }
        Browser {
            rtc,
            addr,
            peer: None,
            ufrag: String::new(),
            sfu_ufrag: String::new(),
            sfu_pwd: String::new(),
            video: None,
            audio: None,
            rids: Vec::new(),
            connected: false,
            muted: false,
            lose: 0,
            // str0m 0.25 builds a packet in a 2000-byte buffer and panics
            // past it (instead of refusing the write): measured, what fits
            // under this browser's header. Past it, the harness would crash.
            max_payload: if bare { 1984 } else { 1960 },
            rtp_in: 0,
            seq_ts: Vec::new(),
            timeout: self.now,
        }
    }

    fn publisher(&mut self, setup: u8) {
        let vp8 = setup & VP8 != 0;
        let mut b = self.browser(!vp8, vp8, setup & BARE != 0);
        if setup & SIMULCAST != 0 {
            b.rids = vec![Rid::from("h"), Rid::from("m"), Rid::from("l")];
        }
        let layers = (!b.rids.is_empty()).then(|| Simulcast {
            send: b
                .rids
                .iter()
                .map(|rid| SimulcastLayer {
                    rid: *rid,
                    attributes: None,
                })
                .collect(),
            recv: Vec::new(),
        });
        self.negotiate(b, Direction::SendOnly, layers);
    }

    /// Another viewer subscribes (both codecs offered).
    pub fn join(&mut self) {
        if self.browsers.len() < MAX_BROWSERS {
            let b = self.browser(true, true, false);
            self.negotiate(b, Direction::RecvOnly, None);
        }
    }

    /// Browser `b` offers video (in `layers`) and audio in direction `dir`,
    /// and the SFU publishes it (send) or lets it watch (receive).
    fn negotiate(&mut self, mut b: Browser, dir: Direction, layers: Option<Simulcast>) {
        let mut api = b.rtc.sdp_api();
        b.video = Some(api.add_media(MediaKind::Video, dir, None, None, layers));
        b.audio = Some(api.add_media(MediaKind::Audio, dir, None, None, None));
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        let offer = offer.to_sdp_string();
        let now = self.now;
        let answer = if dir == Direction::SendOnly {
            self.sfu.publish(now, STREAM, &offer)
        } else {
            self.sfu.subscribe(now, STREAM, &offer)
        };
        if let Ok(answer) = answer {
            b.ufrag = sdp_attr(&offer, "ice-ufrag");
            b.sfu_ufrag = sdp_attr(&answer.answer_sdp, "ice-ufrag");
            b.sfu_pwd = sdp_attr(&answer.answer_sdp, "ice-pwd");
            if let Ok(a) = SdpAnswer::from_sdp_string(&answer.answer_sdp) {
                let _ = b.rtc.sdp_api().accept_answer(pending, a);
            }
            b.peer = Some(answer.peer);
        }
        self.browsers.push(b);
        self.pump();
    }

    /// Runs until every session is connected (ICE and DTLS), or 5 s passed.
    pub fn connect(&mut self) {
        let until = self.now + Duration::from_secs(5);
        while self.now < until
            && self
                .browsers
                .iter()
                .any(|b| b.peer.is_some() && !b.connected)
        {
            self.run_for(Duration::from_millis(20));
        }
    }

    /// A datagram arrives at the SFU.
    pub fn receive(&mut self, source: SocketAddr, data: &[u8]) {
        let now = self.now;
        self.sfu.handle_input(Input::Receive {
            now,
            source,
            destination: SFU_ADDR,
            data,
        });
        self.pump();
    }

    /// A STUN binding request to browser `i`'s session, from `source`, with
    /// valid integrity (unless `wrong_pwd`): how an address introduces
    /// itself. `body` picks the attributes.
    pub fn stun(
        &mut self,
        i: usize,
        source: SocketAddr,
        body: &[u8],
        crypto: &dyn Sha1HmacProvider,
    ) {
        let Some(b) = self.browsers.get(i) else {
            return;
        };
        let flags = body.first().copied().unwrap_or(0);
        let prio = u32::from_be_bytes(array(body.get(1..)));
        let tie = u64::from_be_bytes(array(body.get(5..)));
        let username = format!("{}:{}", b.sfu_ufrag, b.ufrag);
        let msg = StunMessage::binding_request(
            &username,
            TransId::new(),
            flags & 2 != 0,
            tie,
            prio,
            flags & 1 != 0,
        );
        let pwd = if flags & 4 != 0 {
            "wrong"
        } else {
            b.sfu_pwd.as_str()
        };
        let mut buf = [0u8; 512];
        let hmac = |key: &[u8], payloads: &[&[u8]]| crypto.sha1_hmac(key, payloads);
        if let Ok(n) = msg.to_bytes(Some(pwd.as_bytes()), &mut buf, hmac) {
            let datagram = buf[..n].to_vec();
            self.receive(source, &datagram);
        }
    }

    /// The publisher's application writes an RTP packet (encrypted by its
    /// `Rtc`, so it passes SRTP and reaches the forwarding path).
    ///
    /// `body`: flags (bit 0 audio, bits 1-2 rid index, bit 3 marker, bit 4
    /// nackable, bits 5-7 payload type index), sequence number step (i8),
    /// timestamp step (u16), payload.
    pub fn write_rtp(&mut self, body: &[u8]) {
        let now = self.now;
        let Some(b) = self.browsers.first_mut() else {
            return;
        };
        let flags = body.first().copied().unwrap_or(0);
        let seq_step = body.get(1).map_or(1, |&s| i64::from(s as i8));
        let ts_step = u32::from(u16::from_be_bytes(array(body.get(2..))));
        let payload = body.get(4..).unwrap_or_default();
        let payload = payload[..payload.len().min(b.max_payload)].to_vec();
        let audio = flags & 1 != 0;
        let Some(mid) = (if audio { b.audio } else { b.video }) else {
            return;
        };
        let layer = if audio || b.rids.is_empty() {
            0
        } else {
            usize::from((flags >> 1) & 3) % b.rids.len()
        };
        let rid = (!audio).then(|| b.rids.get(layer).copied()).flatten();
        let pts = b
            .rtc
            .media(mid)
            .map(|m| m.remote_pts().to_vec())
            .unwrap_or_default();
        let Some(&pt) = pts.get(usize::from(flags >> 5) % pts.len().max(1)) else {
            return;
        };
        let key = (audio, layer);
        let (seq, ts) = match b.seq_ts.iter_mut().find(|(k, ..)| *k == key) {
            Some((_, seq, ts)) => {
                // Within the first rollover: a jump past it needs the ROC
                // signalled out of band, which no browser does.
                *seq = seq.saturating_add_signed(seq_step).clamp(1, 65_535);
                *ts = ts.wrapping_add(ts_step);
                (*seq, *ts)
            }
            None => {
                b.seq_ts.push((key, 1000, 90_000));
                (1000, 90_000)
            }
        };
        let mut api = b.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, rid) else {
            return;
        };
        tx.write_rtp(
            RtpWrite::new(pt, seq.into(), ts, now, payload)
                .marker(flags & 8 != 0)
                .nackable(flags & 16 != 0),
        );
        self.pump();
    }

    /// A viewer's application asks for a keyframe (PLI, or FIR with bit 0).
    pub fn request_keyframe(&mut self, body: &[u8]) {
        let flags = body.first().copied().unwrap_or(0);
        let viewers = self.browsers.len().saturating_sub(1).max(1);
        let i = 1 + usize::from(flags >> 1) % viewers;
        let Some(b) = self.browsers.get_mut(i) else {
            return;
        };
        let Some(mid) = b.video else {
            return;
        };
        let kind = if flags & 1 != 0 {
            KeyframeRequestKind::Fir
        } else {
            KeyframeRequestKind::Pli
        };
        if let Some(rx) = b.rtc.direct_api().stream_rx_by_mid(mid, None) {
            rx.request_keyframe(kind);
        }
        self.pump();
    }

    /// Something happens to browser `i`: by `body` bit 0, it vanishes from
    /// the network; bit 1, the network loses the next `body[1]` (at least
    /// one) datagrams to it; else signaling closes its session.
    pub fn fault(&mut self, i: usize, body: &[u8]) {
        let Some(b) = self.browsers.get_mut(i) else {
            return;
        };
        let flags = body.first().copied().unwrap_or(0);
        if flags & 1 != 0 {
            b.muted = true;
        } else if flags & 2 != 0 {
            b.lose = body.get(1).copied().unwrap_or(1).max(1);
        } else if let Some(peer) = b.peer {
            self.sfu.close(peer);
        }
        self.pump();
    }

    /// Lets `d` of virtual time pass, firing every timer on the way (after
    /// `MAX_STEPS` of them the clock jumps to the end, as for a machine
    /// that was suspended).
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        for _ in 0..MAX_STEPS {
            let next = self.next_timer().max(self.now + Duration::from_millis(1));
            if next > until {
                break;
            }
            self.now = next;
            self.fire();
        }
        self.now = self.now.max(until);
        self.fire();
    }

    fn next_timer(&self) -> Instant {
        self.browsers
            .iter()
            .filter(|b| !b.muted)
            .map(|b| b.timeout)
            .fold(self.sfu_timeout, Instant::min)
    }

    fn fire(&mut self) {
        let now = self.now;
        if now >= self.sfu_timeout {
            self.sfu.handle_input(Input::Timeout(now));
        }
        for b in self.browsers.iter_mut().filter(|b| !b.muted) {
            if now >= b.timeout {
                let _ = b.rtc.handle_input(str0m::Input::Timeout(now));
            }
        }
        self.pump();
    }

    /// Delivers datagrams both ways until nobody has anything to send,
    /// draining the SFU to its `Timeout` each round.
    fn pump(&mut self) {
        let now = self.now;
        for _ in 0..MAX_PUMP_ROUNDS {
            let mut to_sfu = Vec::new();
            for (i, b) in self.browsers.iter_mut().enumerate() {
                for data in b.drain(now) {
                    if let Some(c) = &mut self.capture {
                        c.push((i, data.clone()));
                    }
                    to_sfu.push((b.addr, data));
                }
            }
            for (source, data) in &to_sfu {
                self.sfu.handle_input(Input::Receive {
                    now,
                    source: *source,
                    destination: SFU_ADDR,
                    data,
                });
            }
            let mut to_browsers = 0;
            loop {
                match self.sfu.poll_output() {
                    Output::Transmit(t) => {
                        let Some(b) = self
                            .browsers
                            .iter_mut()
                            .find(|b| b.addr == t.destination && !b.muted)
                        else {
                            continue;
                        };
                        to_browsers += 1;
                        if b.lose > 0 {
                            b.lose -= 1;
                            continue;
                        }
                        if let Ok(r) =
                            Receive::new(Protocol::Udp, t.source, t.destination, &t.contents)
                        {
                            let _ = b.rtc.handle_input(str0m::Input::Receive(now, r));
                        }
                    }
                    Output::Timeout(t) => {
                        self.sfu_timeout = t;
                        break;
                    }
                    _ => {}
                }
            }
            if to_sfu.is_empty() && to_browsers == 0 {
                break;
            }
        }
    }
}

impl Browser {
    /// Polls the browser's `Rtc` to its timeout; returns what it sends.
    fn drain(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if self.muted {
            return out;
        }
        loop {
            match self.rtc.poll_output() {
                Ok(str0m::Output::Timeout(t)) => {
                    self.timeout = t;
                    break;
                }
                Ok(str0m::Output::Transmit(t)) => out.push(t.contents.to_vec()),
                Ok(str0m::Output::Event(Event::Connected)) => self.connected = true,
                Ok(str0m::Output::Event(Event::RtpPacket(_))) => self.rtp_in += 1,
                Ok(str0m::Output::Event(_)) => {}
                Err(_) => {
                    self.timeout = now + Duration::from_millis(10);
                    break;
                }
            }
        }
        out
    }
}

/// One DTLS certificate for every browser: generating one costs about as
/// much as the rest of a world's setup. (The SFU's sessions make their own.)
fn browser_cert() -> Option<&'static DtlsCert> {
    static CERT: OnceLock<Option<DtlsCert>> = OnceLock::new();
    CERT.get_or_init(|| {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    })
    .as_ref()
}

/// The value of the first `a=<name>:` line.
fn sdp_attr(sdp: &str, name: &str) -> String {
    let prefix = format!("a={name}:");
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .unwrap_or_default()
        .to_string()
}

/// The first `N` bytes of `b`, zero-padded.
fn array<const N: usize>(b: Option<&[u8]>) -> [u8; N] {
    let mut out = [0; N];
    let b = b.unwrap_or_default();
    let n = b.len().min(N);
    out[..n].copy_from_slice(&b[..n]);
    out
}
