//! Offers are refused with the reason: malformed ones (what a client got
//! wrong: no credentials, fingerprint or m-line, credentials RFC 8839 does
//! not allow, m-lines and BUNDLE group that disagree) apart from those
//! lumen cannot serve (no codec it takes, both sides ICE-lite).

use lumen_sfu::SessionError;

use crate::harness::World;

const FINGERPRINT: &str = "a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:\
    00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n";

/// A well-formed H.264 publish offer, with `session` as its session-level
/// ICE and DTLS lines and `group` as its BUNDLE group.
fn offer(session: &str, group: &str) -> String {
    format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {group}\r\n\
         {session}a=setup:actpass\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
         a=rtcp-mux\r\na=rtpmap:96 H264/90000\r\n\
         a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
    )
}

fn creds(ufrag: &str, pwd: &str) -> String {
    format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n")
}

const UFRAG: &str = "abcd";
const PWD: &str = "abcdefghijklmnopqrstuvwx";

#[test]
fn offers_are_refused_as_malformed_or_unsupported_with_a_reason() {
    let mut w = World::new(24);
    let now = w.now;
    let good = format!("{}{FINGERPRINT}", creds(UFRAG, PWD));
    w.sfu
        .publish(now, "ok", &offer(&good, "0"))
        .expect("the well-formed offer is served");

    let malformed = [
        ("not SDP", "hello".to_string()),
        ("a line without =", "v=0\r\nthis is not sdp\r\n".to_string()),
        (
            "no m-line",
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_string() + &good,
        ),
        ("no fingerprint", offer(&creds(UFRAG, PWD), "0")),
        ("no ICE credentials", offer(FINGERPRINT, "0")),
        ("BUNDLE names another mid", offer(&good, "7")),
        (
            "a 30,000-character ufrag",
            offer(
                &format!("{}{FINGERPRINT}", creds(&"u".repeat(30_000), PWD)),
                "0",
            ),
        ),
        (
            "a 3-character ufrag",
            offer(&format!("{}{FINGERPRINT}", creds("abc", PWD)), "0"),
        ),
        (
            "a short password",
            offer(&format!("{}{FINGERPRINT}", creds(UFRAG, "short")), "0"),
        ),
        (
            "a control character",
            offer(&format!("{}{FINGERPRINT}", creds("ab\u{7}d", PWD)), "0"),
        ),
    ];
    for (what, sdp) in &malformed {
        match w.sfu.publish(now, "x", sdp) {
            Err(SessionError::MalformedSdp(why)) => assert!(!why.is_empty(), "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }

    // Well-formed, but not something lumen serves.
    let unservable = [
        (
            "only a data channel",
            format!(
                "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
                 {good}a=setup:actpass\r\n\
                 m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
                 a=mid:0\r\na=sctp-port:5000\r\n"
            ),
        ),
        ("ICE-lite too", offer(&format!("a=ice-lite\r\n{good}"), "0")),
    ];
    for (what, sdp) in &unservable {
        match w.sfu.publish(now, "x", sdp) {
            Err(SessionError::Unsupported(why)) => assert!(!why.is_empty(), "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    assert_eq!(w.sfu.peer_count(), 1);
    assert!(
        w.sfu.stream("x").is_none(),
        "a refused offer left state behind"
    );
}
