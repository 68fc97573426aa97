//! What the attacks send, built without any I/O so it can be tested: ICE
//! connectivity checks with a session's credentials, trickle fragments of
//! many candidates, real str0m offers, and offers with hundreds of m-lines
//! squeezed under the server's body limit.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::Context;
use aws_lc_rs::hmac;
use str0m::ice::{StunMessage, TransId};
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, RtcConfig};

/// The server's body limit, which the big offer must fit.
pub(super) const MAX_BODY: usize = 64 * 1024;

/// A STUN binding request as a controlling ICE agent sends it (RFC 8445
/// 7.1): USERNAME `server_ufrag:client_ufrag`, PRIORITY, ICE-CONTROLLING,
/// MESSAGE-INTEGRITY keyed with the server's password, FINGERPRINT. Such a
/// check passes the server's integrity test from any source address, which
/// is what makes a flood of them from new ports cost it something.
pub(super) fn binding_request(
    server_ufrag: &str,
    client_ufrag: &str,
    server_pwd: &str,
    tie_breaker: u64,
) -> anyhow::Result<Vec<u8>> {
    let username = format!("{server_ufrag}:{client_ufrag}");
    // A host candidate's priority (RFC 8445 5.1.2.1: type 126, local 65535,
    // component 1), what a browser's first check carries.
    let prio = (126 << 24) | (65535 << 8) | (256 - 1);
    let msg =
        StunMessage::binding_request(&username, TransId::new(), true, tie_breaker, prio, false);
    let mut buf = vec![0u8; 2048];
    let n = msg
        .to_bytes(Some(server_pwd.as_bytes()), &mut buf, hmac_sha1)
        .map_err(|e| anyhow::anyhow!("encoding a binding request: {e}"))?;
    buf.truncate(n);
    Ok(buf)
}

/// A trickle fragment (`application/trickle-ice-sdpfrag`) of `count` host
/// candidates on `ip`, with ports from `first_port` on (wrapping within
/// 1024–65535, so consecutive fragments name distinct candidates).
pub(super) fn candidate_fragment(ip: IpAddr, first_port: u32, count: usize) -> String {
    let mut out = String::with_capacity(count * 64);
    for k in 0..count as u32 {
        let port = 1024 + (first_port + k) % (65536 - 1024);
        let _ = write!(
            out,
            "a=candidate:{k} 1 udp 2122260223 {ip} {port} typ host\r\n"
        );
    }
    out
}

/// What an offer asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    /// WHIP: send audio and video.
    Publish,
    /// WHEP: receive them.
    Watch,
}

/// A real str0m offer (audio and video, as the load generator's viewers and
/// a browser make it) and its ICE ufrag, with a host candidate or none.
pub(super) fn str0m_offer(
    side: Side,
    candidate: Option<SocketAddr>,
) -> anyhow::Result<(String, String)> {
    let mut rtc = RtcConfig::new().build(Instant::now());
    if let Some(addr) = candidate {
        rtc.add_local_candidate(Candidate::host(addr, "udp").context("host candidate")?);
    }
    let dir = match side {
        Side::Publish => Direction::SendOnly,
        Side::Watch => Direction::RecvOnly,
    };
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, dir, None, None, None);
    api.add_media(MediaKind::Audio, dir, None, None, None);
    let (offer, _pending) = api.apply().context("the offer has no changes")?;
    let sdp = offer.to_sdp_string();
    let ufrag = sdp_attr(&sdp, "ice-ufrag")
        .context("str0m's offer has no ice-ufrag")?
        .to_owned();
    Ok((sdp, ufrag))
}

/// An offer with `m_lines` media sections, video and audio by turns, each
/// as small as a parser would still take (mid, one codec, rtcp-mux;
/// connection and direction at session level), so that the 750 of
/// them fit in [`MAX_BODY`].
pub(super) fn many_m_lines_offer(side: Side, m_lines: usize) -> String {
    let mut sdp = String::with_capacity(MAX_BODY);
    sdp.push_str("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
    sdp.push_str("c=IN IP4 0.0.0.0\r\na=group:BUNDLE");
    for i in 0..m_lines {
        let _ = write!(sdp, " {i}");
    }
    sdp.push_str("\r\na=ice-ufrag:bigo\r\na=ice-pwd:bigofferbigofferbigoffer\r\n");
    sdp.push_str("a=fingerprint:sha-256 ");
    for i in 0..32 {
        let _ = write!(sdp, "{}{:02X}", if i > 0 { ":" } else { "" }, i * 7);
    }
    sdp.push_str("\r\na=setup:actpass\r\n");
    sdp.push_str(match side {
        Side::Publish => "a=sendonly\r\n",
        Side::Watch => "a=recvonly\r\n",
    });
    for i in 0..m_lines {
        if i % 2 == 0 {
            let _ = write!(
                sdp,
                "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:{i}\r\na=rtpmap:96 H264/90000\r\na=rtcp-mux\r\n"
            );
        } else {
            let _ = write!(
                sdp,
                "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{i}\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-mux\r\n"
            );
        }
    }
    sdp
}

/// First `a=NAME:value` of an SDP.
pub(super) fn sdp_attr<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("a="))
        .filter_map(|l| l.strip_prefix(name))
        .find_map(|l| l.strip_prefix(':'))
        .map(str::trim)
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32 (ISO HDLC), bit by bit: the FINGERPRINT's checksum.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn a_binding_request_carries_the_sessions_credentials() {
        let bytes = binding_request("srvU", "cliU", "serverpasswordserverpw", 7).expect("encode");
        let msg = StunMessage::parse(&bytes).expect("parses as STUN");
        assert!(msg.is_binding_request());
        assert_eq!(msg.split_username(), Some(("srvU", "cliU")));
        assert_eq!(msg.ice_controlling(), Some(7));
        assert!(msg.prio().is_some());
        assert!(msg.verify(b"serverpasswordserverpw", hmac_sha1));
        assert!(!msg.verify(b"another password entirely", hmac_sha1));
        // FINGERPRINT last: type 0x8028, CRC-32 of all before it XOR "STUN".
        let n = bytes.len();
        assert_eq!(&bytes[n - 8..n - 4], &[0x80, 0x28, 0x00, 0x04]);
        let fp = u32::from_be_bytes([bytes[n - 4], bytes[n - 3], bytes[n - 2], bytes[n - 1]]);
        assert_eq!(fp, crc32(&bytes[..n - 8]) ^ 0x5354_554e);
        // A fresh transaction each time.
        let again = binding_request("srvU", "cliU", "serverpasswordserverpw", 7).expect("encode");
        assert_ne!(bytes[8..20], again[8..20]);
    }

    #[test]
    fn the_big_offer_has_750_m_lines_within_the_body_limit() {
        for side in [Side::Publish, Side::Watch] {
            let sdp = many_m_lines_offer(side, 750);
            assert!(sdp.len() <= MAX_BODY, "{} bytes", sdp.len());
            assert!(sdp.len() > MAX_BODY - 4096, "{} bytes", sdp.len());
            assert_eq!(sdp.matches("\r\nm=").count(), 750);
            assert_eq!(sdp.matches("\r\na=mid:").count(), 750);
            assert!(sdp.contains("a=group:BUNDLE 0 1 2 "));
            assert!(sdp.contains(" 749\r\n"));
            assert!(sdp.lines().all(|l| l.len() >= 3 && l.as_bytes()[1] == b'='));
        }
    }

    #[test]
    fn a_trickle_fragment_names_distinct_valid_candidates() {
        let ip = IpAddr::from([127, 0, 0, 2]);
        let frag = candidate_fragment(ip, 65_000, 600);
        let mut ports = std::collections::HashSet::new();
        for line in frag.lines() {
            let attr = line.strip_prefix("a=").expect("a= line");
            let c = Candidate::from_sdp_string(attr).expect("valid candidate syntax");
            assert_eq!(c.addr().ip(), ip);
            assert!(c.addr().port() >= 1024);
            ports.insert(c.addr().port());
        }
        assert_eq!(ports.len(), 600, "ports wrap without repeating");
    }

    #[test]
    fn str0m_offers_and_their_ufrag() {
        let (sdp, ufrag) = str0m_offer(Side::Publish, None).expect("offer");
        assert_eq!(sdp_attr(&sdp, "ice-ufrag"), Some(ufrag.as_str()));
        assert!(sdp.contains("a=sendonly"));
        assert!(!sdp.contains("a=candidate"));
        let addr = SocketAddr::from(([127, 0, 0, 4], 9));
        let (sdp, _) = str0m_offer(Side::Watch, Some(addr)).expect("offer");
        assert!(sdp.contains("a=recvonly"));
        assert!(sdp.contains("127.0.0.4 9 typ host"));
        assert_eq!(sdp_attr("a=ice-pwd: x \r\n", "ice-pwd"), Some("x"));
        assert_eq!(sdp_attr("a=ice-pwdx:y\r\n", "ice-pwd"), None);
    }
}
