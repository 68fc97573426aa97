//! A client that sends valid connectivity checks for its own session from
//! thousands of source ports: the session takes `max_addrs_per_session`
//! addresses, every later one is dropped and counted before str0m sees it,
//! and a viewer of another stream on the same worker keeps every frame on
//! time.
//!
//! Without the bound each new address becomes a peer-reflexive candidate
//! in str0m, which every later check scans: the flood costs the worker's
//! thread in proportion to its square. `World::on_worker` charges that time
//! to the virtual clock.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use lumen_sfu::{DEFAULT_MAX_ADDRS_PER_SESSION, Input, TrickleFragment};
use str0m::ice::{StunMessage, TransId};

use crate::harness::{assert_undisturbed, bystander_and_attacker};

/// Source ports the checks come from.
const PORTS: u16 = 5_000;
/// Checks delivered per burst, one burst a millisecond.
const PER_BURST: usize = 250;

#[test]
fn checks_from_thousands_of_ports_take_a_few_addresses_and_stall_no_other_stream() {
    let (mut w, v, a) = bystander_and_attacker(43);

    // Checks the session's credentials accept: the client owns it.
    let answer = TrickleFragment::parse(&w.browsers[a].answer_sdp);
    let sfu_ufrag = answer.ufrag.expect("the answer's ice-ufrag");
    let sfu_pwd = answer.pwd.expect("the answer's ice-pwd");
    let own_ufrag = w.browsers[a].rtc.direct_api().local_ice_credentials().ufrag;
    let username = format!("{sfu_ufrag}:{own_ufrag}");
    let crypto = str0m::crypto::from_feature_flags();
    let check = |prio: u32| -> Vec<u8> {
        let msg = StunMessage::binding_request(&username, TransId::new(), true, 7, prio, false);
        let mut buf = [0u8; 512];
        let n = msg
            .to_bytes(Some(sfu_pwd.as_bytes()), &mut buf, |key, payloads| {
                crypto.sha1_hmac_provider.sha1_hmac(key, payloads)
            })
            .expect("a STUN request");
        buf[..n].to_vec()
    };
    let flood_ip = Ipv4Addr::new(10, 66, 0, 1);
    let checks: Vec<(SocketAddr, Vec<u8>)> = (0..PORTS)
        .map(|i| {
            (
                SocketAddr::from((flood_ip, 10_000 + i)),
                check(1_000 + u32::from(i)),
            )
        })
        .collect();

    w.sent_log = Some(Vec::new());
    let before = w.browsers[v].frames.len();
    let flood_start = w.now;
    let dropped_before = w.sfu.metrics().dropped_address_limit;
    let dest = w.sfu_addr;
    for burst in checks.chunks(PER_BURST) {
        w.on_worker(|sfu, now| {
            for (source, data) in burst {
                sfu.handle_input(Input::Receive {
                    now,
                    source: *source,
                    destination: dest,
                    data,
                });
            }
        });
        w.run_for(Duration::from_millis(1));
    }
    w.run_for(Duration::from_millis(500));

    // The other stream's viewer: every frame, in order, on time.
    let flood = w.now - flood_start;
    assert_undisturbed(&w.browsers[v].frames[before..], flood);

    // The session took a few addresses (it had one already), answered
    // their checks, and no more: the rest were counted, unanswered.
    let answered = w
        .sent_log
        .as_ref()
        .expect("log")
        .iter()
        .filter(|(to, _)| to.ip() == std::net::IpAddr::V4(flood_ip))
        .map(|(to, _)| *to)
        .collect::<std::collections::HashSet<_>>()
        .len();
    assert_eq!(answered, DEFAULT_MAX_ADDRS_PER_SESSION - 1);
    assert_eq!(
        w.sfu.metrics().dropped_address_limit - dropped_before,
        u64::from(PORTS) - answered as u64
    );
    // The flooding session's own address still works.
    assert!(w.browsers[a].connected_at.is_some());
    let attacker = w.browsers[a].session.expect("session");
    assert!(w.sfu.has_peer(attacker));
}
