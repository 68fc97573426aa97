//! An offer larger than a worker takes (the 64 KiB with 750
//! m-lines, ~6 MB of str0m state per session) is refused before str0m
//! parses it; one at the bound is served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lumen_sfu::{DEFAULT_MAX_M_LINES, DEFAULT_MAX_REMOTE_CANDIDATES, SessionError};
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, RtcConfig};

use crate::harness::World;

/// A publish offer with this many m-lines (video and audio by turns) and
/// host candidates.
fn offer(m_lines: usize, candidates: u16) -> String {
    let mut rtc = RtcConfig::new().build(Instant::now());
    for i in 0..candidates {
        let addr = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 5000));
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
    }
    let mut api = rtc.sdp_api();
    for i in 0..m_lines {
        let kind = if i % 2 == 0 {
            MediaKind::Video
        } else {
            MediaKind::Audio
        };
        api.add_media(kind, Direction::SendOnly, None, None, None);
    }
    let (offer, _pending) = api.apply().expect("offer");
    offer.to_sdp_string()
}

#[test]
fn an_offer_with_too_many_m_lines_or_candidates_is_refused_before_parsing() {
    let mut w = World::new(49);
    let now = w.now;

    let huge = offer(750, 1);
    assert_eq!(huge.matches("\r\nm=").count(), 750);
    let started = Instant::now();
    let e = w.sfu.publish(now, "big", &huge).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(e, SessionError::OfferTooLarge(ref why) if why.contains("m-lines")),
        "{e:?}"
    );
    // Refused after one pass over the text, before str0m built anything.
    assert!(took < Duration::from_millis(50), "refusing took {took:?}");
    let e = w.sfu.subscribe(now, "big", &huge).unwrap_err();
    assert!(matches!(e, SessionError::OfferTooLarge(_)), "{e:?}");

    let crowded = offer(2, DEFAULT_MAX_REMOTE_CANDIDATES as u16 + 1);
    let e = w.sfu.publish(now, "big", &crowded).unwrap_err();
    assert!(
        matches!(e, SessionError::OfferTooLarge(ref why) if why.contains("candidates")),
        "{e:?}"
    );
    assert_eq!(w.sfu.metrics().offers_too_large, 3);
    assert_eq!(w.sfu.peer_count(), 0);
    assert!(
        w.sfu.streams().is_empty(),
        "a refused offer left state behind"
    );

    // At the bounds: served (lumen takes one audio and one video m-line).
    let full = offer(DEFAULT_MAX_M_LINES, DEFAULT_MAX_REMOTE_CANDIDATES as u16);
    w.sfu
        .publish(now, "big", &full)
        .expect("an offer at the bounds");
    assert_eq!(w.sfu.peer_count(), 1);
    assert_eq!(w.sfu.metrics().offers_too_large, 3);
}
