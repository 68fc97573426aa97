//! CIDR parsing and whom the forwarding headers are believed from.

use super::*;
use axum::http::HeaderValue;

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    h
}

/// The proxy at 10.0.0.1 is trusted, with its whole network.
fn trusted() -> Vec<Cidr> {
    vec![cidr("10.0.0.0/8"), cidr("fd00::/8")]
}

/// The client address seen for a request from `peer` over plain TCP.
fn client(peer: &str, pairs: &[(&str, &str)]) -> IpAddr {
    origin(ip(peer), false, &headers(pairs), &trusted()).addr
}

fn secure(peer: &str, tls: bool, pairs: &[(&str, &str)]) -> bool {
    origin(ip(peer), tls, &headers(pairs), &trusted()).secure
}

#[test]
fn cidrs_parse_and_print_for_both_families() {
    for (text, shown) in [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("127.0.0.1", "127.0.0.1/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("::1", "::1/128"),
        ("::/0", "::/0"),
        (" 192.168.1.0/24 ", "192.168.1.0/24"),
    ] {
        let c = cidr(text);
        assert_eq!(c.to_string(), shown);
        assert_eq!(cidr(shown), c);
    }
    assert_eq!(cidr("10.0.0.0/8").prefix(), 8);
    assert_eq!(cidr("10.0.0.0/8").addr(), ip("10.0.0.0"));
    assert_eq!(Cidr::new(ip("10.0.0.0"), 8), Some(cidr("10.0.0.0/8")));
    assert_eq!(Cidr::new(ip("10.0.0.1"), 8), None);
    assert_eq!(Cidr::new(ip("10.0.0.0"), 33), None);
}

#[test]
fn bad_cidrs_say_why() {
    assert!(matches!(
        "10.0.0/8".parse::<Cidr>(),
        Err(CidrError::Address(_))
    ));
    assert!(matches!("".parse::<Cidr>(), Err(CidrError::Address(_))));
    assert!(matches!(
        "10.0.0.0/33".parse::<Cidr>(),
        Err(CidrError::Prefix(_, 32))
    ));
    assert!(matches!(
        "::/129".parse::<Cidr>(),
        Err(CidrError::Prefix(_, 128))
    ));
    assert!(matches!(
        "10.0.0.0/x".parse::<Cidr>(),
        Err(CidrError::Prefix(..))
    ));
    let err = "10.1.2.3/8".parse::<Cidr>().unwrap_err();
    assert_eq!(
        err,
        CidrError::HostBits("10.1.2.3/8".into(), cidr("10.0.0.0/8"))
    );
    assert!(err.to_string().contains("10.0.0.0/8"), "{err}");
}

#[test]
fn cidrs_contain_their_addresses_only() {
    let net = cidr("192.168.4.0/22");
    assert!(net.contains(ip("192.168.4.0")));
    assert!(net.contains(ip("192.168.7.255")));
    assert!(!net.contains(ip("192.168.8.0")));
    assert!(!net.contains(ip("192.168.3.255")));
    // What a dual-stack listener reports for an IPv4 peer.
    assert!(net.contains(ip("::ffff:192.168.5.1")));
    assert!(!net.contains(ip("::1")));
    assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
    assert!(!cidr("0.0.0.0/0").contains(ip("2001:db8::1")));
    let v6 = cidr("2001:db8::/32");
    assert!(v6.contains(ip("2001:db8:ffff::1")));
    assert!(!v6.contains(ip("2001:db9::1")));
    assert!(cidr("::/0").contains(ip("::1")));
    assert!(cidr("::1").contains(ip("::1")));
    assert!(!cidr("::1").contains(ip("::2")));
}

#[test]
fn an_untrusted_peer_cannot_choose_its_address_or_scheme() {
    let spoof = [
        ("x-forwarded-for", "198.51.100.7"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=198.51.100.8;proto=https"),
    ];
    assert_eq!(client("203.0.113.5", &spoof), ip("203.0.113.5"));
    assert!(!secure("203.0.113.5", false, &spoof));
    // The connection's own TLS still counts.
    assert!(secure("203.0.113.5", true, &spoof));
    // Nothing is trusted by default.
    let o = origin(ip("10.0.0.1"), false, &headers(&spoof), &[]);
    assert_eq!(o.addr, ip("10.0.0.1"));
    assert!(!o.secure);
}

#[test]
fn a_trusted_proxy_names_the_client() {
    assert_eq!(
        client("10.0.0.1", &[("x-forwarded-for", "198.51.100.7")]),
        ip("198.51.100.7")
    );
    assert_eq!(
        client("10.0.0.1", &[("forwarded", "for=198.51.100.7")]),
        ip("198.51.100.7")
    );
    // Without a header, the proxy itself is the client.
    assert_eq!(client("10.0.0.1", &[]), ip("10.0.0.1"));
    // A port on an X-Forwarded-For address, as some proxies write it.
    assert_eq!(
        client("10.0.0.1", &[("x-forwarded-for", "198.51.100.7:4711")]),
        ip("198.51.100.7")
    );
}

#[test]
fn the_right_most_untrusted_hop_is_the_client() {
    // The client wrote the first address itself; our proxies wrote the rest.
    let xff = [("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.0.0.9")];
    assert_eq!(client("10.0.0.1", &xff), ip("198.51.100.7"));
    // Split over header lines, in order.
    let lines = [
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-for", "198.51.100.7, 10.0.0.9"),
    ];
    assert_eq!(client("10.0.0.1", &lines), ip("198.51.100.7"));
    let fwd = [(
        "forwarded",
        "for=1.2.3.4, for=198.51.100.7;proto=https, for=10.0.0.9;proto=http",
    )];
    assert_eq!(client("10.0.0.1", &fwd), ip("198.51.100.7"));
    // The scheme is the one the client used, at the hop that saw it.
    assert!(secure("10.0.0.1", false, &fwd));
    // Every hop trusted: the first one is where the request began.
    assert_eq!(
        client("10.0.0.1", &[("x-forwarded-for", "10.1.1.1, 10.0.0.9")]),
        ip("10.1.1.1")
    );
}

#[test]
fn malformed_headers_are_ignored() {
    for bad in ["not-an-ip", "1.2.3", "198.51.100.7 junk", "[::1"] {
        assert_eq!(
            client("10.0.0.1", &[("x-forwarded-for", bad)]),
            ip("10.0.0.1"),
            "{bad}"
        );
    }
    for bad in [
        "for=",
        "for",
        "for=1.2.3.4:notaport",
        "for=\"[2001:db8::1\"",
        "for=\"unterminated",
        "for=1.2.3.4;for=5.6.7.8",
        "f o r=1.2.3.4",
        "for=a b",
    ] {
        assert_eq!(
            client("10.0.0.1", &[("forwarded", bad)]),
            ip("10.0.0.1"),
            "{bad}"
        );
    }
    // A bad Forwarded element left of a good one: the walk stops there.
    assert_eq!(
        client(
            "10.0.0.1",
            &[("forwarded", "for=1.2.3.4, garbage, for=10.0.0.9")]
        ),
        ip("10.0.0.9")
    );
    // A header that is not text.
    let mut h = HeaderMap::new();
    h.insert(
        XFF,
        HeaderValue::from_bytes(b"198.51.100.7\xff").expect("value"),
    );
    assert_eq!(
        origin(ip("10.0.0.1"), false, &h, &trusted()).addr,
        ip("10.0.0.1")
    );
}

#[test]
fn unknown_and_obfuscated_hops_end_the_chain() {
    assert_eq!(
        client("10.0.0.1", &[("forwarded", "for=unknown")]),
        ip("10.0.0.1")
    );
    assert_eq!(
        client(
            "10.0.0.1",
            &[("forwarded", "for=198.51.100.7, for=_hidden, for=10.0.0.9")]
        ),
        ip("10.0.0.9")
    );
    // `for=unknown` is still the proxy's word: an X-Forwarded-For beside it
    // may be the client's own and is not read.
    assert_eq!(
        client(
            "10.0.0.1",
            &[
                ("forwarded", "for=unknown"),
                ("x-forwarded-for", "198.51.100.7")
            ]
        ),
        ip("10.0.0.1")
    );
}

#[test]
fn forwarded_comes_before_x_forwarded_for() {
    let both = [
        ("forwarded", "for=198.51.100.7"),
        ("x-forwarded-for", "198.51.100.99"),
    ];
    assert_eq!(client("10.0.0.1", &both), ip("198.51.100.7"));
    // A Forwarded header without `for` leaves the address to the other.
    let by_only = [
        ("forwarded", "by=10.0.0.1;proto=https"),
        ("x-forwarded-for", "198.51.100.99"),
    ];
    assert_eq!(client("10.0.0.1", &by_only), ip("198.51.100.99"));
}

#[test]
fn ipv6_in_forwarded() {
    assert_eq!(
        client("10.0.0.1", &[("forwarded", "for=\"[2001:db8::1]:4711\"")]),
        ip("2001:db8::1")
    );
    assert_eq!(
        client(
            "10.0.0.1",
            &[("Forwarded", "For=\"[2001:db8::1]\";Proto=https")]
        ),
        ip("2001:db8::1")
    );
    assert!(secure(
        "10.0.0.1",
        false,
        &[("forwarded", "for=\"[2001:db8::1]:_port\";proto=HTTPS")]
    ));
    // A trusted IPv6 proxy, and a quoted string with escapes and a comma.
    let h = [(
        "forwarded",
        "for=\"[2001:db8::1]\";host=\"a\\\"b,c\", for=\"[fd00::2]\"",
    )];
    assert_eq!(client("fd00::1", &h), ip("2001:db8::1"));
    assert_eq!(
        client("10.0.0.1", &[("x-forwarded-for", "[2001:db8::1]:4711")]),
        ip("2001:db8::1")
    );
}

#[test]
fn the_scheme_comes_from_a_trusted_proxy_only() {
    let https = [("x-forwarded-proto", "https")];
    assert!(secure("10.0.0.1", false, &https));
    assert!(!secure("10.0.0.1", false, &[("x-forwarded-proto", "http")]));
    assert!(!secure("10.0.0.1", false, &[]));
    assert!(secure("10.0.0.1", true, &[("x-forwarded-proto", "http")]));
    assert!(!secure("203.0.113.5", false, &https));
    assert!(secure("10.0.0.1", false, &[("forwarded", "proto=https")]));
    // One proto per address: the client's is the one at its hop.
    let stepped = [
        ("x-forwarded-for", "198.51.100.7, 10.0.0.9"),
        ("x-forwarded-proto", "https, http"),
    ];
    assert!(secure("10.0.0.1", false, &stepped));
    // Not in step: the nearest proxy's.
    let single = [
        ("x-forwarded-for", "198.51.100.7, 10.0.0.9"),
        ("x-forwarded-proto", "https"),
    ];
    assert!(secure("10.0.0.1", false, &single));
}
