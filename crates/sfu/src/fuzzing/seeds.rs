//! Starting corpora, so that the fuzzers begin deep: real str0m offers and
//! candidates, the datagrams of real sessions (captured from the world the
//! `datagrams` body builds, so that their STUN credentials are valid there),
//! scripts that stream H.264, VP8 and simulcast through it, and keyframe
//! payloads with their parameter sets.

use std::net::SocketAddr;

use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, RtcConfig};

use super::world::{SOURCES, World};
use super::{base, fresh, templates};

/// One seed input of one target.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The target (one of [`TARGETS`](super::TARGETS)).
    pub target: &'static str,
    /// A file name for it.
    pub name: String,
    /// The input.
    pub data: Vec<u8>,
}

/// Every generated seed of every target.
pub fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, data: Vec<u8>| {
        out.push(Seed {
            target,
            name: format!("seed-{name}"),
            data,
        })
    };
    for (name, data) in datagram_seeds() {
        add("datagrams", &name, data);
    }
    for (name, data) in codec_seeds() {
        add("codec", name, data);
    }
    for (name, sdp) in offer_seeds() {
        add("offers", name, sdp.into_bytes());
    }
    for (name, frag) in trickle_seeds() {
        add("trickle", name, frag.into_bytes());
    }
    out
}

// Ops of a datagram record (see `super::datagrams`).
const RAW: u8 = 0;
const STUN: u8 = 2;
const RTP: u8 = 3;
const KEYFRAME: u8 = 4;
const WAIT: u8 = 5;
const FAULT: u8 = 6;
const JOIN: u8 = 7;

/// Builds a `datagrams` input.
struct Script(Vec<u8>);

impl Script {
    fn new(setup: u8) -> Script {
        Script(vec![setup])
    }

    fn record(&mut self, source: u8, op: u8, wait: u8, body: &[u8]) -> &mut Script {
        self.0.push(source | (op << 2) | (wait << 5));
        let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(&body[..usize::from(len)]);
        self
    }

    /// The publisher writes a packet: see `World::write_rtp` for `flags`.
    fn rtp(&mut self, flags: u8, ts_step: u16, payload: &[u8]) -> &mut Script {
        let mut body = vec![flags, 1];
        body.extend_from_slice(&ts_step.to_be_bytes());
        body.extend_from_slice(payload);
        self.record(0, RTP, 0, &body)
    }

    /// One 30 fps frame of `codec` on every layer, then an Opus packet and
    /// 33 ms of time.
    fn frame(&mut self, vp8: bool, layers: u8, key: bool, n: u8) -> &mut Script {
        for layer in 0..layers {
            let packets = if vp8 {
                vp8_frame(key, n)
            } else {
                h264_frame(key, n)
            };
            let last = packets.len() - 1;
            for (i, p) in packets.iter().enumerate() {
                let ts = if i == 0 { 3000 } else { 0 };
                let marker = if i == last { 8 } else { 0 };
                self.rtp((layer << 1) | marker | 16, ts, p);
            }
        }
        self.rtp(1, 960, &[0xf8, 0xff, 0xfe]);
        self.record(0, WAIT, 0, &33u16.to_be_bytes())
    }

    fn stream(&mut self, vp8: bool, layers: u8, frames: u8) -> &mut Script {
        for n in 0..frames {
            self.frame(vp8, layers, n % 15 == 0, n);
        }
        self
    }
}

fn datagram_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let setups = [
        (0, "h264"),
        (1, "vp8"),
        (2, "h264-simulcast"),
        (3, "vp8-simulcast"),
        (4, "h264-bare"),
        (5, "vp8-bare"),
    ];
    for (setup, name) in setups {
        let vp8 = setup & 1 != 0;
        let layers = if setup & 2 != 0 { 3 } else { 1 };
        let mut s = Script::new(setup);
        s.stream(vp8, layers, 20);
        out.push((format!("{name}-stream"), s.0.clone()));

        // Keyframe requests, a viewer joining late, losses (a skipped
        // sequence number), a gap long enough to stop a layer.
        s.record(0, KEYFRAME, 3, &[0]).record(0, KEYFRAME, 3, &[1]);
        s.record(0, JOIN, 0, &[]).stream(vp8, layers, 5);
        s.record(0, RTP, 4, &gap(vp8));
        s.record(0, WAIT, 0, &3000u16.to_be_bytes())
            .stream(vp8, layers, 3);
        out.push((format!("{name}-viewers"), s.0));
    }

    // A connected world's own datagrams, replayed raw: from their sources
    // (STUN that passes integrity, DTLS and SRTP that are stale) and from
    // new addresses, which a valid STUN request introduces.
    let mut script = Script::new(0);
    script.stream(false, 1, 20).record(0, KEYFRAME, 2, &[0]);
    script.record(0, RTP, 0, &gap(false)).stream(false, 1, 30);
    let captured = capture(&script.0);
    let mut replay = Script::new(0);
    let mut moved = Script::new(0);
    let mut stranger = Script::new(0);
    for (i, data) in captured.iter().take(200) {
        let source = if *i == 0 { 1 } else { 2 };
        replay.record(source, RAW, 0, data);
        if *i == 0 && is_stun(data) {
            moved.record(3, RAW, 1, data);
        }
        stranger.record(0, RAW, 0, data);
    }
    moved.stream(false, 1, 3);
    out.push(("replay".to_string(), replay.0));
    out.push(("replay-moved".to_string(), moved.0));
    out.push(("replay-stranger".to_string(), stranger.0));

    // Fresh STUN: a nomination from a new address, a role conflict, a
    // wrong password, a request to the other session.
    let mut s = Script::new(0);
    s.record(
        3,
        STUN,
        2,
        &[1, 0x6e, 0x7f, 0x1e, 0xff, 1, 2, 3, 4, 5, 6, 7, 8],
    );
    s.record(
        3,
        STUN,
        2,
        &[3, 0x6e, 0x7f, 0x1e, 0xff, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    s.record(0, STUN, 2, &[5]).record(2, STUN, 2, &[8]);
    s.stream(false, 1, 3);
    out.push(("stun".to_string(), s.0));

    // Loss on the way to the viewer (NACKs and retransmissions), and
    // payloads as big as a publisher's str0m sends, with and without
    // header extensions: a retransmission adds two bytes to them.
    for (setup, name) in [(0, "loss"), (4, "loss-bare")] {
        let mut s = Script::new(setup);
        s.stream(false, 1, 3)
            .record(1, FAULT, 0, &[2, 2])
            .stream(false, 1, 3);
        for size in [1200, 1400, 1900, 1960, 1984] {
            s.record(1, FAULT, 0, &[2, 1]);
            s.rtp(8 | 16, 3000, &[&[0x65][..], &vec![0x5a; size - 1]].concat());
            s.record(0, WAIT, 0, &33u16.to_be_bytes())
                .stream(false, 1, 2);
        }
        out.push((name.to_string(), s.0));
    }

    // Sessions end: closed, or gone silent until ICE gives up.
    let mut s = Script::new(0);
    s.stream(false, 1, 3)
        .record(1, FAULT, 3, &[0])
        .stream(false, 1, 2);
    s.record(0, FAULT, 3, &[0]).record(0, JOIN, 3, &[]);
    out.push(("close".to_string(), s.0));
    let mut s = Script::new(2);
    s.stream(false, 3, 3).record(1, FAULT, 0, &[1]);
    s.record(0, WAIT, 0, &20_000u16.to_be_bytes());
    out.push(("mute".to_string(), s.0));
    out
}

/// The body of an RTP record two sequence numbers on: one packet lost.
fn gap(vp8: bool) -> Vec<u8> {
    let mut body = vec![16, 2];
    body.extend_from_slice(&3000u16.to_be_bytes());
    body.extend_from_slice(
        &if vp8 {
            vp8_frame(false, 9)
        } else {
            h264_frame(false, 9)
        }[0],
    );
    body
}

/// What the browsers of a `datagrams` world send while `script` plays.
fn capture(script: &[u8]) -> Vec<(usize, Vec<u8>)> {
    super::play(script, true)
        .and_then(|mut w| w.capture.take())
        .unwrap_or_default()
}

fn is_stun(data: &[u8]) -> bool {
    data.first().is_some_and(|b| *b < 2)
}

/// SPS (640x480, constrained baseline), PPS, and the start of an IDR slice.
const SPS: [u8; 16] = [
    0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xf6, 0x9b, 0x80, 0x87, 0x83, 0x03, 0x05, 0x06, 0x0a,
];
const PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];
/// A high-profile SPS (640x360) from x264.
const SPS_HIGH: [u8; 26] = [
    0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00,
    0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
];

/// An H.264 access unit as RTP payloads: a keyframe is a STAP-A of SPS and
/// PPS, then an IDR in three FU-A fragments; a delta frame one slice.
fn h264_frame(key: bool, n: u8) -> Vec<Vec<u8>> {
    if !key {
        return vec![[&[0x41, 0x9a, n][..], &[0x5a; 40]].concat()];
    }
    let mut stap = vec![0x78];
    for nal in [&SPS[..], &PPS[..]] {
        stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        stap.extend_from_slice(nal);
    }
    let fu = |header: u8| [&[0x7c, header, 0x88, n][..], &[0x5a; 60]].concat();
    vec![stap, fu(0x85), fu(0x05), fu(0x45)]
}

/// A VP8 frame as RTP payloads (15-bit picture id `n`): a keyframe's first
/// packet carries the 640x480 keyframe header.
fn vp8_frame(key: bool, n: u8) -> Vec<Vec<u8>> {
    let descriptor = |start: bool| vec![if start { 0x90 } else { 0x80 }, 0x80, 0x80, n];
    let mut first = descriptor(true);
    if key {
        first.extend_from_slice(&[0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
    } else {
        first.extend_from_slice(&[0x51, 0x02, 0x00]);
    }
    first.extend_from_slice(&[0x33; 40]);
    let mut rest = descriptor(false);
    rest.extend_from_slice(&[0x33; 40]);
    vec![first, rest]
}

fn codec_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let with = |codec: u8, payload: &[u8]| [&[codec][..], payload].concat();
    let h264 = h264_frame(true, 1);
    let mut stap_high = vec![0x78, 0, SPS_HIGH.len() as u8];
    stap_high.extend_from_slice(&SPS_HIGH);
    vec![
        ("h264-sps", with(0, &SPS)),
        ("h264-sps-high", with(0, &SPS_HIGH)),
        ("h264-stap-a", with(0, &h264[0])),
        ("h264-stap-a-high", with(0, &stap_high)),
        ("h264-fu-a-idr", with(0, &h264[1])),
        ("h264-delta", with(0, &h264_frame(false, 2)[0])),
        ("vp8-key", with(1, &vp8_frame(true, 1)[0])),
        ("vp8-delta", with(1, &vp8_frame(false, 2)[0])),
        ("vp8-continuation", with(1, &vp8_frame(true, 1)[1])),
        (
            "vp8-tl0",
            with(1, &[0x90, 0xe0, 0x80, 0x01, 0x07, 0x40, 0x50, 0x02, 0x00]),
        ),
        (
            "vp9-key",
            with(2, &[0x8a, 0x80, 0x01, 0x82, 0x49, 0x83, 0x42, 0x00]),
        ),
        ("vp9-delta", with(2, &[0xca, 0x80, 0x02])),
    ]
}

fn offer_seeds() -> Vec<(&'static str, String)> {
    let t = templates();
    let offer =
        |h264: bool, vp8: bool, vp9: bool, media: &[(MediaKind, Direction)], channel: bool| {
            let mut rtc = RtcConfig::new()
                .clear_codecs()
                .enable_opus(true, false)
                .enable_h264(h264)
                .enable_vp8(vp8)
                .enable_vp9(vp9)
                .build(base());
            if let Ok(c) = Candidate::host(SOURCES[1], "udp") {
                rtc.add_local_candidate(c);
            }
            let mut api = rtc.sdp_api();
            for (kind, dir) in media {
                api.add_media(*kind, *dir, None, None, None);
            }
            if channel {
                api.add_channel("chat".to_string());
            }
            api.apply()
                .map(|(o, _)| o.to_sdp_string())
                .unwrap_or_default()
        };
    use Direction::{RecvOnly, SendOnly, SendRecv};
    use MediaKind::{Audio, Video};
    vec![
        ("publisher-h264", t.publishers[0].clone()),
        ("publisher-vp8-simulcast", t.publishers[1].clone()),
        (
            "viewer",
            offer(
                true,
                true,
                false,
                &[(Video, RecvOnly), (Audio, RecvOnly)],
                false,
            ),
        ),
        (
            "viewer-vp8-only",
            offer(false, true, false, &[(Video, RecvOnly)], false),
        ),
        (
            "audio-only",
            offer(false, false, false, &[(Audio, SendOnly)], false),
        ),
        (
            "vp9-only",
            offer(false, false, true, &[(Video, SendOnly)], false),
        ),
        (
            "sendrecv-channel",
            offer(
                true,
                false,
                false,
                &[(Video, SendRecv), (Audio, SendRecv)],
                true,
            ),
        ),
    ]
}

fn trickle_seeds() -> Vec<(&'static str, String)> {
    let start = fresh();
    let w = World::new(start, 0, false);
    let ufrag = w
        .browsers
        .first()
        .map(|b| b.ufrag.clone())
        .unwrap_or_default();
    let line = |c: Result<Candidate, _>| {
        c.map(|c: Candidate| format!("a={}\r\n", c.to_sdp_string()))
            .unwrap_or_default()
    };
    let sock = |s: &str| s.parse::<SocketAddr>().unwrap_or(SOURCES[0]);
    let host = line(Candidate::host(SOURCES[1], "udp"));
    let moved = line(Candidate::host(SOURCES[3], "udp"));
    let srflx = line(Candidate::server_reflexive(
        sock("198.51.100.7:40000"),
        SOURCES[1],
        "udp",
    ));
    let relay = line(Candidate::relayed(
        sock("203.0.113.9:3478"),
        SOURCES[1],
        "udp",
    ));
    let tcp = line(Candidate::host(sock("10.0.1.1:9"), "tcp"));
    let v6 = line(Candidate::host(sock("[2001:db8::1]:5000"), "udp"));
    let media = "m=audio 9 RTP/AVP 0\r\na=mid:0\r\n";
    vec![
        ("candidates", format!("{media}{host}{moved}{srflx}{relay}{tcp}{v6}a=end-of-candidates\r\n")),
        (
            "candidates-ufrag",
            format!(
                "a=ice-ufrag:{ufrag}\r\n{media}a=candidate:1 1 udp 2122260223 10.0.1.1 6000 typ host generation 0 ufrag {ufrag} network-id 1\r\n"
            ),
        ),
        (
            "restart",
            format!(
                "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n{media}{moved}a=end-of-candidates\r\n"
            ),
        ),
        (
            "chrome",
            "a=ice-ufrag:v8Lx\r\na=ice-pwd:GdpW980Caww9WWsbg6jJ5pGu\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
             a=candidate:755488126 1 tcp 1518280447 192.168.115.173 9 typ host tcptype active generation 0 network-id 1 network-cost 10\r\n\
             a=candidate:842163049 1 udp 1686052607 203.0.113.4 61764 typ srflx raddr 192.168.115.173 rport 61764 generation 0 network-id 1\r\n\
             a=candidate:1 1 udp 2122260223 4f1a7b0e-0c44-4f4b-9d35-0d9bd3b6a8f1.local 54321 typ host\r\n"
                .to_string(),
        ),
        ("end", "a=end-of-candidates\r\n".to_string()),
    ]
}
