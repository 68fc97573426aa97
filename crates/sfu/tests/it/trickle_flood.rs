//! A client that trickles candidates without end: its session takes
//! `max_remote_candidates`, every later one is refused at once, and a viewer
//! of another stream on the same worker keeps every frame on time.
//!
//! Without the bound str0m keeps every candidate and scans them all for each
//! new one: a PATCH of 600 costs in proportion to all before it, on the
//! worker's thread. `World::on_worker` charges that time to the virtual
//! clock, so the stall shows as a gap in the viewer's frames.

use std::time::Duration;

use lumen_sfu::{DEFAULT_MAX_REMOTE_CANDIDATES, SessionError};

use crate::harness::{assert_undisturbed, bystander_and_attacker};

/// Candidates the client sends, 600 to a PATCH (as in the issue), one
/// PATCH every 20 ms.
const CANDIDATES: usize = 10_000;
const PER_PATCH: usize = 600;

#[test]
fn a_trickle_flood_is_refused_past_the_bound_and_stalls_no_other_stream() {
    // The flooding client publishes a stream of its own on the same worker.
    let (mut w, v, a) = bystander_and_attacker(41);
    let attacker = w.browsers[a].session.expect("session");
    let before = w.browsers[v].frames.len();
    let flood_start = w.now;

    let lines: Vec<String> = (0..CANDIDATES)
        .map(|i| {
            format!(
                "candidate:{i} 1 udp 2122260223 10.{}.{}.{} {} typ host",
                (i >> 16) & 0xff,
                (i >> 8) & 0xff,
                i & 0xff,
                1024 + i % 60_000
            )
        })
        .collect();
    let (mut taken, mut refusals) = (0, Vec::new());
    for patch in lines.chunks(PER_PATCH) {
        // As the node applies a PATCH: in order, up to the first refusal.
        let (ok, refusal) = w.on_worker(|sfu, _| {
            let mut ok = 0;
            for l in patch {
                if let Err(e) = sfu.add_remote_candidate(attacker, l) {
                    return (ok, Some(e));
                }
                ok += 1;
            }
            (ok, None)
        });
        taken += ok;
        refusals.push(refusal);
        w.run_for(Duration::from_millis(20));
    }
    w.run_for(Duration::from_millis(500));

    // The other stream's viewer: every frame, in order, at the publisher's
    // pace throughout the flood.
    let flood = w.now - flood_start;
    assert_undisturbed(&w.browsers[v].frames[before..], flood);
    // The session took as many as it may (its offer gave one), and each
    // PATCH after was refused at its first line (so each cost next to
    // nothing), and counted.
    assert_eq!(taken, DEFAULT_MAX_REMOTE_CANDIDATES - 1);
    assert!(
        refusals.iter().all(|r| *r
            == Some(SessionError::TooManyCandidates(
                DEFAULT_MAX_REMOTE_CANDIDATES
            ))),
        "{refusals:?}"
    );
    assert_eq!(
        w.sfu.metrics().candidates_refused,
        CANDIDATES.div_ceil(PER_PATCH) as u64,
        "one refusal counted per PATCH"
    );
    // The flooding session itself goes on.
    assert!(w.sfu.has_peer(attacker));
}
