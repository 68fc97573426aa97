//! An ICE restart takes only the credentials RFC 8839 allows (`ice-char`s:
//! letters, digits, `+`, `/`; a ufrag of 4 to 256, a password of 22 to
//! 256); anything else is refused and the session goes on as it was.

use std::time::Duration;

use lumen_sfu::{SessionError, TrickleFragment};
use str0m_netem::NetemConfig;

use crate::harness::{World, gaps_and_reorders};

#[test]
fn an_ice_restart_with_bad_credentials_is_refused_and_changes_nothing() {
    let mut w = World::new(51);
    let p = w.publisher("cam", NetemConfig::new()).expect("publish");
    w.browsers[p].keyframe_every = Some(30);
    let v = w.viewer("cam", NetemConfig::new()).expect("watch");
    w.run_for(Duration::from_secs(1));
    let peer = w.browsers[v].session.expect("session");
    let sfu_ufrag = TrickleFragment::parse(&w.browsers[v].answer_sdp).ufrag;

    let pwd = "abcdefghijklmnopqrstuv"; // 22: the shortest allowed
    let long = "u".repeat(30_000);
    let bad = [
        ("a 30,000-character ufrag", long.as_str(), pwd),
        ("a one-space password", "abcd", " "),
        ("a control character in the ufrag", "ab\u{1}d", pwd),
        (
            "a newline in the password",
            "abcd",
            "abcdefghijk\r\nlmnopqrstuv",
        ),
        ("a 3-character ufrag", "abc", pwd),
        ("a 21-character password", "abcd", &pwd[1..]),
        ("a 257-character password", "abcd", &"p".repeat(257)),
        ("a character outside ice-char", "ab-d", pwd),
        ("non-ASCII", "abcé", pwd),
        ("empty", "", ""),
    ];
    for (what, ufrag, pwd) in bad {
        match w.sfu.restart_ice(peer, ufrag, pwd) {
            Err(SessionError::BadIceCredentials(why)) => {
                assert!(
                    why.len() < 200,
                    "{what}: the reason quotes the value: {why}"
                );
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // Nothing changed: the SFU still answers to its old credentials (a
    // refused restart would otherwise have replaced them), and the viewer
    // keeps its frames.
    let before = w.browsers[v].frames.len();
    w.run_for(Duration::from_secs(2));
    let frames = &w.browsers[v].frames;
    assert!(
        frames.len() - before > 50,
        "{} frames",
        frames.len() - before
    );
    assert_eq!(gaps_and_reorders(frames), (0, 0));
    assert!(w.sfu.stream("cam").is_some_and(|s| s.viewers == 1));

    // The bounds themselves, and every ice-char, are fine.
    let ok = w
        .sfu
        .restart_ice(peer, "aZ0+", "abcdefghijklmnopqrstu/")
        .expect("a restart at the bounds");
    assert_ne!(
        Some(ok.ufrag),
        sfu_ufrag,
        "new credentials answer a restart"
    );
    w.sfu
        .restart_ice(peer, &"u".repeat(256), &"p".repeat(256))
        .expect("a restart at the upper bounds");
}
