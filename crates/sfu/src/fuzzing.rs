//! Entry points shared by the fuzz targets (`fuzz/`) and the corpus
//! regression test (`tests/it/fuzz_corpus.rs`); not an API.
//!
//! One function per parser that sees network input. Each takes arbitrary
//! bytes, drives the real path with them and returns; a panic is a bug (bad
//! network input is counted and dropped, never fatal). The bodies are
//! written once, here, so that a corpus file replays in `cargo test` exactly
//! as the fuzzer ran it. str0m's non-cryptographic randomness (ICE
//! credentials, SSRCs, transaction ids) is seeded per input, so a run
//! repeats; DTLS keys still differ from run to run.

mod seeds;
mod world;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use str0m::media::{Direction, MediaKind, Rid, Simulcast, SimulcastLayer};
use str0m::{Candidate, RtcConfig};

use crate::{Output, Sfu, SfuConfig, TrickleFragment, VideoCodec, is_keyframe_start, picture_size};
use world::{SOURCES, STREAM, World};

pub use seeds::{Seed, seeds};

/// The fuzz targets, as named under `fuzz/fuzz_targets/` and `fuzz/corpus/`.
pub const TARGETS: [&str; 4] = ["datagrams", "codec", "offers", "trickle"];

/// Runs `data` through the body of the target named `target`.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "datagrams" => datagrams(data),
        "codec" => codec_payloads(data),
        "offers" => offers(data),
        "trickle" => trickle(data),
        other => panic!("no fuzz target {other:?}"),
    }
}

/// Virtual time a datagram record lets pass after it, by the tag's top bits.
const WAITS_MS: [u64; 8] = [0, 1, 5, 20, 50, 100, 500, 2000];

/// Records per input: each costs a round of delivery.
const MAX_RECORDS: usize = 200;

/// Datagrams from the network, and the browsers' doings, against a worker
/// with a connected publisher (plus Opus) and a connected viewer.
///
/// Byte 0 picks the publisher: bit 0 VP8 (else H.264), bit 1 simulcast
/// (h, m, l), bit 2 no RTP header extensions. Then records `[tag, len: u16 BE, body]` (a short tail is taken
/// as it is). The tag's bits 0-1 pick a source address: a stranger, the
/// publisher, the viewer, or the publisher from a second address. Bits 2-4
/// pick what happens:
/// - 0, 1: the body arrives as a datagram from that source;
/// - 2: a STUN binding request with valid integrity from that source, to
///   the viewer's session for source 2 and the publisher's otherwise (body
///   bit 3 swaps them; see `World::stun` for the rest of the body);
/// - 3: the publisher writes an RTP packet (see `World::write_rtp`);
/// - 4: a viewer asks for a keyframe;
/// - 5: body (u16 BE) milliseconds pass;
/// - 6: browser number `source` is closed by signaling, vanishes, or
///   loses datagrams (see `World::fault`);
/// - 7: another viewer joins.
///
/// Bits 5-7 let time pass afterwards (`WAITS_MS`).
pub fn datagrams(data: &[u8]) {
    play(data, false);
}

/// The body of `datagrams`: returns the world as the input left it.
fn play(data: &[u8], capture: bool) -> Option<World> {
    let start = fresh();
    let (&setup, mut rest) = data.split_first()?;
    let crypto = str0m::crypto::from_feature_flags();
    let mut w = World::new(start, setup, capture);
    for _ in 0..MAX_RECORDS {
        let Some((&tag, tail)) = rest.split_first() else {
            break;
        };
        let len = match tail {
            [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
            _ => 0,
        };
        let tail = tail.get(2..).unwrap_or_default();
        let (body, next) = tail.split_at(len.min(tail.len()));
        rest = next;
        let source = usize::from(tag & 3);
        match (tag >> 2) & 7 {
            0 | 1 => w.receive(SOURCES[source], body),
            2 => {
                let swap = body.first().is_some_and(|f| f & 8 != 0);
                let to = usize::from((source == 2) != swap);
                w.stun(to, SOURCES[source], body, crypto.sha1_hmac_provider);
            }
            3 => w.write_rtp(body),
            4 => w.request_keyframe(body),
            5 => {
                let ms = u16::from_be_bytes([
                    body.first().copied().unwrap_or(0),
                    body.get(1).copied().unwrap_or(0),
                ]);
                w.run_for(Duration::from_millis(u64::from(ms)));
            }
            6 => w.fault(source, body),
            _ => {
                w.join();
                w.connect();
            }
        }
        w.run_for(Duration::from_millis(WAITS_MS[usize::from(tag >> 5)]));
    }
    Some(w)
}

/// An RTP payload as the forwarder sees it: byte 0 picks the codec (H.264,
/// VP8, VP9, AV1), the rest is the payload.
pub fn codec_payloads(data: &[u8]) {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let codec = match pick % 4 {
        0 => VideoCodec::H264,
        1 => VideoCodec::Vp8,
        2 => VideoCodec::Vp9,
        _ => VideoCodec::Av1,
    };
    let key = is_keyframe_start(codec, payload);
    let size = picture_size(codec, payload);
    // The forwarder takes a layer's size from the packets a viewer may
    // start on: one that announces a size must start a keyframe.
    assert!(
        size.is_none() || key,
        "{codec:?} payload announces {size:?} but does not start a keyframe"
    );
}

/// An SDP offer (the input as lossy UTF-8), as WHIP and WHEP hand it over:
/// it publishes on a fresh worker and then watches itself there, and it
/// watches live str0m publishers (H.264; VP8 simulcast) and tries to
/// publish over them. Errors are fine; outputs are drained and a
/// little time passes before everything is closed.
pub fn offers(data: &[u8]) {
    let templates = templates();
    let start = fresh();
    let sdp = String::from_utf8_lossy(data);

    let mut sfu = worker(start);
    let mut peers = Vec::new();
    if let Ok(a) = sfu.publish(start, "a", &sdp) {
        peers.push(a.peer);
        drain(&mut sfu);
        peers.extend(sfu.subscribe(start, "a", &sdp).map(|a| a.peer));
        drain(&mut sfu);
    }
    peers.extend(sfu.subscribe(start, "offline", &sdp).map(|a| a.peer));
    settle(&mut sfu, start, &peers);

    for publisher in &templates.publishers {
        let mut sfu = worker(start);
        let Ok(a) = sfu.publish(start, STREAM, publisher) else {
            continue;
        };
        let mut peers = vec![a.peer];
        drain(&mut sfu);
        peers.extend(sfu.subscribe(start, STREAM, &sdp).map(|a| a.peer));
        drain(&mut sfu);
        peers.extend(sfu.publish(start, STREAM, &sdp).map(|a| a.peer));
        settle(&mut sfu, start, &peers);
    }
}

/// A trickle-ICE sdpfrag (the input as lossy UTF-8), PATCHed into the
/// publisher's session of a connected worker: every line as a candidate,
/// then the fragment as signaling reads it — an ICE restart when it brings
/// new credentials, then its candidates. Then time passes.
pub fn trickle(data: &[u8]) {
    let start = fresh();
    let text = String::from_utf8_lossy(data);
    let mut w = World::new(start, 0, false);
    let Some((peer, ufrag)) = w
        .browsers
        .first()
        .and_then(|b| Some((b.peer?, b.ufrag.clone())))
    else {
        return;
    };
    for line in text.lines().take(64) {
        let _ = w.sfu.add_remote_candidate(peer, line);
    }
    let frag = TrickleFragment::parse(&text);
    if let (Some(u), Some(p)) = (&frag.ufrag, &frag.pwd)
        && *u != ufrag
    {
        let _ = w.sfu.restart_ice(peer, u, p);
    }
    for c in frag.candidates.iter().take(64) {
        let _ = w.sfu.add_remote_candidate(peer, c);
    }
    w.run_for(Duration::from_millis(500));
    w.fault(0, &[]);
}

/// Offers built once per process (before any seeding, so that every input
/// sees the same randomness after it).
struct Templates {
    /// Offers of str0m publishers: H.264 and Opus; VP8 simulcast and Opus.
    publishers: Vec<String>,
}

fn templates() -> &'static Templates {
    static T: OnceLock<Templates> = OnceLock::new();
    T.get_or_init(|| Templates {
        publishers: vec![publisher_offer(false, false), publisher_offer(true, true)],
    })
}

/// The offer of a str0m browser that publishes video (and Opus).
fn publisher_offer(vp8: bool, simulcast: bool) -> String {
    let addr = SOURCES[1];
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_h264(!vp8)
        .enable_vp8(vp8)
        .build(base());
    if let Ok(c) = Candidate::host(addr, "udp") {
        rtc.add_local_candidate(c);
    }
    let layers = simulcast.then(|| Simulcast {
        send: ["h", "m", "l"]
            .iter()
            .map(|r| SimulcastLayer {
                rid: Rid::from(*r),
                attributes: None,
            })
            .collect(),
        recv: Vec::new(),
    });
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, layers);
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.apply()
        .map(|(offer, _)| offer.to_sdp_string())
        .unwrap_or_default()
}

/// Seeds str0m's randomness and returns the start of virtual time.
fn fresh() -> Instant {
    fastrand::seed(0x5eed);
    base()
}

/// The start of virtual time: one `Instant` for the process.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn worker(now: Instant) -> Sfu {
    Sfu::new(SfuConfig::new(vec![world::SFU_ADDR]), now)
}

/// Polls until `Timeout`. A worker that never gets there breaks the
/// contract of `poll_output`: that is a bug too.
fn drain(sfu: &mut Sfu) {
    for _ in 0..100_000 {
        if let Output::Timeout(_) = sfu.poll_output() {
            return;
        }
    }
    panic!("poll_output did not reach Timeout in 100000 outputs");
}

/// Drains, lets a second pass, and closes the peers.
fn settle(sfu: &mut Sfu, start: Instant, peers: &[crate::PeerId]) {
    drain(sfu);
    sfu.handle_input(crate::Input::Timeout(start + Duration::from_secs(1)));
    drain(sfu);
    for peer in peers {
        sfu.close(*peer);
    }
    drain(sfu);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every publisher setup connects both sessions, and the stream seed
    /// reaches the viewer: the fuzzer starts where media flows.
    #[test]
    fn datagram_worlds_connect_and_forward() {
        for seed in seeds().iter().filter(|s| s.name.ends_with("-stream")) {
            let w = play(&seed.data, false).expect("a world");
            assert!(
                w.browsers.iter().all(|b| b.connected),
                "{}: not every session connected",
                seed.name
            );
            let got = w.browsers[1].rtp_in;
            assert!(got > 20, "{}: the viewer got {got} RTP packets", seed.name);
        }
    }
}
