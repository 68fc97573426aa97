//! Garbage on the media socket is counted and dropped and never disturbs a
//! live session. Each kind of garbage is counted under its own reason.

use std::net::SocketAddr;
use std::time::Duration;

use lumen_sfu::{Input, Metrics, TrickleFragment};
use str0m::ice::{StunMessage, TransId};
use str0m_netem::NetemConfig;

use crate::harness::{World, gaps_and_reorders};

/// Where a datagram should be counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// Neither STUN, DTLS, RTP nor RTCP (`dropped_malformed`).
    Malformed,
    /// From an address no peer has, and no STUN check (`dropped_unknown_source`).
    UnknownSource,
    /// The peer's connection refused it (`dropped_rejected`): including
    /// what str0m discards without a word (SRTP of an SSRC the session does
    /// not have, DTLS that is not whole records), which the SFU recognises
    /// and counts. (Only SRTP of one of the session's own SSRCs that fails
    /// authentication goes uncounted: str0m drops it as it drops a
    /// duplicate.)
    Rejected,
}

/// The drop counters: (malformed, unknown source, rejected).
fn drops(m: &Metrics) -> [u64; 3] {
    [
        m.dropped_malformed,
        m.dropped_unknown_source,
        m.dropped_rejected,
    ]
}

fn expected(reason: Reason) -> [u64; 3] {
    match reason {
        Reason::Malformed => [1, 0, 0],
        Reason::UnknownSource => [0, 1, 0],
        Reason::Rejected => [0, 0, 1],
    }
}

#[test]
fn garbage_datagrams_are_counted_by_reason_dropped_and_harmless() {
    let mut w = World::new(31);
    let p = w.publisher("cam", NetemConfig::new()).expect("publish");
    w.browsers[p].keyframe_every = Some(30);
    let v = w.viewer("cam", NetemConfig::new()).expect("watch");
    w.run_for(Duration::from_secs(1));

    let stranger: SocketAddr = "10.9.9.9:1234".parse().expect("addr");
    let publisher_addr = w.browsers[p].addr;
    let dest = w.sfu_addr;
    let mut seed: u32 = 7;
    let mut junk = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect()
    };
    // A connectivity check naming the publisher's session, signed with the
    // wrong password.
    let sfu_ufrag = TrickleFragment::parse(&w.browsers[p].answer_sdp)
        .ufrag
        .expect("the answer has an ice-ufrag");
    let username = format!("{sfu_ufrag}:someone");
    let check = StunMessage::binding_request(&username, TransId::new(), true, 1, 1, false);
    let crypto = str0m::crypto::from_feature_flags();
    let mut buf = [0u8; 512];
    let n = check
        .to_bytes(Some(b"not the password"), &mut buf, |key, payloads| {
            crypto.sha1_hmac_provider.sha1_hmac(key, payloads)
        })
        .expect("a STUN request");
    let bad_check = buf[..n].to_vec();
    use Reason::*;
    let cases: Vec<(&str, SocketAddr, Vec<u8>, Reason)> = vec![
        ("empty, stranger", stranger, vec![], Malformed),
        ("0xff bytes", stranger, vec![0xff; 3], Malformed),
        // Its first byte is 0x6c (the seeded junk is the same every run):
        // between DTLS (20..64) and RTP (128..192), so no kind at all.
        ("random bytes", stranger, junk(1200), Malformed),
        (
            "RTP-looking, stranger",
            stranger,
            [vec![0x80, 0x60], junk(40)].concat(),
            UnknownSource,
        ),
        // A STUN header without the magic cookie: STUN by its first byte,
        // but it does not parse.
        (
            "STUN-looking, stranger",
            stranger,
            [vec![0x00, 0x01, 0x00, 0x00], junk(40)].concat(),
            Malformed,
        ),
        (
            "fake SRTP, publisher",
            publisher_addr,
            [vec![0x80, 0x66, 0x00, 0x01], junk(100)].concat(),
            Rejected,
        ),
        (
            "truncated DTLS record, publisher",
            publisher_addr,
            vec![22, 0xfe, 0xfd, 0, 0],
            Rejected,
        ),
        (
            "RTP shorter than its header, publisher",
            publisher_addr,
            vec![0x80, 0x66, 0x00, 0x01, 0, 0, 0, 9],
            Rejected,
        ),
        ("STUN check, wrong password", stranger, bad_check, Rejected),
        ("empty, publisher", publisher_addr, vec![], Malformed),
    ];
    const ROUNDS: u64 = 50;
    let before = drops(w.sfu.metrics());
    for round in 0..ROUNDS {
        for (name, src, data, reason) in &cases {
            let now = w.now;
            let was = drops(w.sfu.metrics());
            w.sfu.handle_input(Input::Receive {
                now,
                source: *src,
                destination: dest,
                data,
            });
            let is = drops(w.sfu.metrics());
            let delta = [is[0] - was[0], is[1] - was[1], is[2] - was[2]];
            assert_eq!(
                delta,
                expected(*reason),
                "round {round}, {name}: counted as [malformed, unknown source, \
                 rejected] = {delta:?}, expected {reason:?}"
            );
        }
        w.run_for(Duration::from_millis(20));
    }
    // Per reason, over the whole run: the live session's own traffic was
    // never counted as a drop meanwhile.
    let after = drops(w.sfu.metrics());
    let count = |r: Reason| cases.iter().filter(|c| c.3 == r).count() as u64;
    assert_eq!(after[0] - before[0], ROUNDS * count(Malformed), "malformed");
    assert_eq!(
        after[1] - before[1],
        ROUNDS * count(UnknownSource),
        "unknown source"
    );
    assert_eq!(after[2] - before[2], ROUNDS * count(Rejected), "rejected");

    // The session went on undisturbed.
    w.run_for(Duration::from_secs(1));
    let frames = &w.browsers[v].frames;
    assert!(frames.len() > 50, "viewer got {} frames", frames.len());
    assert_eq!(gaps_and_reorders(frames), (0, 0));
    assert!(
        w.sfu
            .stream("cam")
            .is_some_and(|s| s.live && s.viewers == 1)
    );
}
