//! Small reads of SDP text that str0m does not expose as an API: which
//! m-lines an answer has, and with which mid; what a trickle-ICE fragment
//! (RFC 8840, the body of a WHIP/WHEP PATCH) carries; whether an offer is
//! one a worker takes, checked before str0m parses it.

use std::collections::{BTreeMap, HashSet};

use str0m::media::{MediaKind, Mid};

use crate::SessionError;

/// What a trickle-ICE SDP fragment (`application/trickle-ice-sdpfrag`)
/// carries, as the SFU's commands take it. Anything else in the fragment
/// (`m=` and `a=mid:` lines, unknown attributes) is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrickleFragment {
    /// The first `a=ice-ufrag:` value: with [`Self::pwd`], new remote
    /// credentials (an ICE restart when they differ from the session's).
    pub ufrag: Option<String>,
    /// The first `a=ice-pwd:` value.
    pub pwd: Option<String>,
    /// The `candidate:` lines without their `a=`, in order: exactly what
    /// [`Sfu::add_remote_candidate`](crate::Sfu::add_remote_candidate)
    /// takes. Not checked here; that command refuses a bad one.
    pub candidates: Vec<String>,
    /// An `a=end-of-candidates` line was there.
    pub end_of_candidates: bool,
}

impl TrickleFragment {
    /// Reads a fragment. Lines are trimmed (CRLF or LF, surrounding
    /// blanks) and their `a=` prefix is optional. Never fails: a line it
    /// does not know is skipped, an empty value counts as absent.
    pub fn parse(text: &str) -> TrickleFragment {
        let mut frag = TrickleFragment::default();
        for line in text.lines() {
            let line = line.trim();
            let attr = line.strip_prefix("a=").unwrap_or(line);
            if attr.starts_with("candidate:") {
                frag.candidates.push(attr.to_string());
            } else if attr == "end-of-candidates" {
                frag.end_of_candidates = true;
            } else if let Some(v) = attr.strip_prefix("ice-ufrag:") {
                first_value(&mut frag.ufrag, v);
            } else if let Some(v) = attr.strip_prefix("ice-pwd:") {
                first_value(&mut frag.pwd, v);
            }
        }
        frag
    }
}

/// Keeps the first non-empty value of an attribute.
fn first_value(slot: &mut Option<String>, value: &str) {
    let value = value.trim();
    if slot.is_none() && !value.is_empty() {
        *slot = Some(value.to_string());
    }
}

/// One m-line of an SDP: its kind, mid and whether it was accepted (port != 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MLine {
    pub kind: Option<MediaKind>,
    pub mid: Option<Mid>,
    pub accepted: bool,
}

/// The m-lines of an SDP, in order.
pub(crate) fn m_lines(sdp: &str) -> Vec<MLine> {
    let mut out: Vec<MLine> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("m=") {
            let mut parts = rest.split_whitespace();
            let kind = match parts.next() {
                Some("audio") => Some(MediaKind::Audio),
                Some("video") => Some(MediaKind::Video),
                _ => None,
            };
            let accepted = parts.next().is_some_and(|p| p != "0");
            out.push(MLine {
                kind,
                mid: None,
                accepted,
            });
        } else if let Some(mid) = line.strip_prefix("a=mid:")
            && let Some(last) = out.last_mut()
        {
            last.mid = Some(Mid::from(mid.trim()));
        }
    }
    out
}

/// The checks of an offer that one pass over its text can make, before
/// str0m parses it (which costs memory and time per m-line and candidate):
/// every line is `<letter>=<value>`; at most `max_m_lines` m-lines and
/// `max_candidates` candidates ([`SessionError::OfferTooLarge`], found
/// before the rest is read); at least one m-line, ICE credentials
/// (RFC 8839's) and a DTLS fingerprint ([`SessionError::MalformedSdp`]);
/// not ICE-lite, as lumen is ([`SessionError::Unsupported`]). Returns the
/// number of distinct candidates.
pub(crate) fn check_offer(
    sdp: &str,
    max_m_lines: usize,
    max_candidates: usize,
) -> Result<usize, SessionError> {
    let malformed = |why: String| Err(SessionError::MalformedSdp(why));
    if !sdp.trim_start().starts_with("v=") {
        return malformed("an SDP starts with a v= line".to_string());
    }
    let mut m_lines = 0;
    let mut candidates = HashSet::new();
    let (mut ufrag, mut pwd, mut fingerprint, mut ice_lite) = (false, false, false, false);
    for (i, line) in sdp.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let b = line.as_bytes();
        if b.len() < 2 || !b[0].is_ascii_lowercase() || b[1] != b'=' {
            return malformed(format!(
                "line {} is not of the form <letter>=<value>",
                i + 1
            ));
        }
        if line.starts_with("m=") {
            m_lines += 1;
            if m_lines > max_m_lines {
                return Err(SessionError::OfferTooLarge(format!(
                    "more than {max_m_lines} m-lines"
                )));
            }
        } else if let Some(c) = line.strip_prefix("a=candidate:") {
            // An offer repeats its candidates in every m-line (str0m, and
            // browsers without BUNDLE do): each counts once, as str0m
            // takes it.
            candidates.insert(c.trim_end());
            if candidates.len() > max_candidates {
                return Err(SessionError::OfferTooLarge(format!(
                    "more than {max_candidates} distinct ICE candidates"
                )));
            }
        } else if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            check_ice_value("ice-ufrag", v.trim(), UFRAG_MIN)
                .map_err(SessionError::MalformedSdp)?;
            ufrag = true;
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            check_ice_value("ice-pwd", v.trim(), PWD_MIN).map_err(SessionError::MalformedSdp)?;
            pwd = true;
        } else if line.starts_with("a=fingerprint:") {
            fingerprint = true;
        } else if line.trim_end() == "a=ice-lite" && m_lines == 0 {
            ice_lite = true;
        }
    }
    if m_lines == 0 {
        return malformed("the SDP has no media (m=) section".to_string());
    }
    if !(ufrag && pwd) {
        return malformed(
            "the offer has no ICE credentials (a=ice-ufrag and a=ice-pwd)".to_string(),
        );
    }
    if !fingerprint {
        return malformed("the offer has no DTLS fingerprint (a=fingerprint)".to_string());
    }
    if ice_lite {
        return Err(SessionError::Unsupported(
            "the offer is ICE-lite, as lumen is: one side must be a full ICE agent".to_string(),
        ));
    }
    if let Some(pt) = payload_type_conflict(sdp) {
        return malformed(format!(
            "payload type {pt} has two meanings: its a=rtpmap or a=fmtp differ between m-lines"
        ));
    }
    Ok(candidates.len())
}

/// A payload type that the m-lines of an SDP map differently (RFC 8843
/// forbids it within a BUNDLE group): its `a=rtpmap` or `a=fmtp` value in
/// one m-line differs from another's, or is missing there. str0m 0.25
/// panics on such an offer ("Pt locked multiple times", in `accept_offer`)
/// instead of refusing it; found by `fuzz/`, reproducer in
/// `fuzz/regressions/offers/`.
fn payload_type_conflict(sdp: &str) -> Option<u8> {
    // What each payload type means in each m-line (0: the session part).
    type Meaning<'a> = (Option<&'a str>, Option<&'a str>);
    let mut meanings: BTreeMap<(usize, u8), Meaning> = BTreeMap::new();
    let mut m_line = 0;
    for line in sdp.lines().map(str::trim) {
        if line.starts_with("m=") {
            m_line += 1;
        } else if let Some((pt, value)) = line.strip_prefix("a=rtpmap:").and_then(pt_value) {
            meanings.entry((m_line, pt)).or_default().0 = Some(value);
        } else if let Some((pt, value)) = line.strip_prefix("a=fmtp:").and_then(pt_value) {
            meanings.entry((m_line, pt)).or_default().1 = Some(value);
        }
    }
    let mut first = BTreeMap::new();
    meanings
        .into_iter()
        .find(|((_, pt), meaning)| first.entry(*pt).or_insert(*meaning) != meaning)
        .map(|((_, pt), _)| pt)
}

/// `<pt> <value>` of an `a=rtpmap:` or `a=fmtp:` attribute.
fn pt_value(attr: &str) -> Option<(u8, &str)> {
    let (pt, value) = attr.split_once(' ')?;
    Some((pt.trim().parse().ok()?, value.trim()))
}

/// RFC 8839: `ice-ufrag-att = "ice-ufrag:" ufrag; ufrag = 4*256ice-char`.
const UFRAG_MIN: usize = 4;
/// RFC 8839: `ice-pwd-att = "ice-pwd:" password; password = 22*256ice-char`.
const PWD_MIN: usize = 22;
/// RFC 8839's upper bound on both.
const ICE_VALUE_MAX: usize = 256;

/// Whether a ufrag and password are what RFC 8839 allows; the reason if not.
pub(crate) fn check_ice_credentials(ufrag: &str, pwd: &str) -> Result<(), String> {
    check_ice_value("ice-ufrag", ufrag, UFRAG_MIN)?;
    check_ice_value("ice-pwd", pwd, PWD_MIN)
}

/// One ICE credential: `min` to 256 `ice-char`s (ALPHA / DIGIT / "+" /
/// "/"). The reason does not quote the value (it may be 30,000 bytes of
/// control characters).
fn check_ice_value(name: &str, value: &str, min: usize) -> Result<(), String> {
    let n = value.len();
    if !(min..=ICE_VALUE_MAX).contains(&n) {
        return Err(format!(
            "the {name} is {n} bytes long; RFC 8839 allows {min} to {ICE_VALUE_MAX}"
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    {
        return Err(format!(
            "the {name} has a character RFC 8839 does not allow \
             (only letters, digits, + and /)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickle_fragment_gives_credentials_and_candidates() {
        let text = "a=ice-ufrag:EsAw\r\n\
                    a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
                    m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                    a=mid:0\r\n\
                    a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n\
                    a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host\r\n\
                    a=end-of-candidates\r\n";
        let f = TrickleFragment::parse(text);
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(
            f.candidates,
            [
                "candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0",
                "candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host",
            ]
        );
        assert!(f.end_of_candidates);
    }

    #[test]
    fn a_trickle_fragment_is_read_leniently() {
        // LF only, blanks around lines, a bare candidate line, repeated
        // credentials (the first wins), an empty value (absent).
        let text = "  a=ice-ufrag:first  \n\
                    a=ice-ufrag:second\n\
                    a=ice-pwd:\n\
                    candidate:1 1 udp 1 10.0.0.1 5000 typ host\n\
                    \n\
                    a=candidate-ish\n\
                    a=ice-pwd:pw\n";
        let f = TrickleFragment::parse(text);
        assert_eq!(f.ufrag.as_deref(), Some("first"));
        assert_eq!(f.pwd.as_deref(), Some("pw"));
        assert_eq!(f.candidates, ["candidate:1 1 udp 1 10.0.0.1 5000 typ host"]);
        assert!(!f.end_of_candidates);
        assert_eq!(TrickleFragment::parse(""), TrickleFragment::default());
    }

    #[test]
    fn a_trickle_fragment_never_panics() {
        let nasty = [
            "a=",
            "a=ice-ufrag:",
            "=\r\r\n\u{0}",
            "a=candidate:\u{1F600}\u{200B}",
            "\u{FEFF}a=ice-pwd:x",
            "a=a=a=ice-ufrag:y",
            "\r\n\r\n\r",
        ];
        for text in nasty {
            let _ = TrickleFragment::parse(text);
        }
        // Every prefix of a real fragment, cut at each char boundary.
        let text = "a=ice-ufrag:ü\r\na=candidate:1 1 udp 1 10.0.0.1 9 typ host\r\n";
        for (i, _) in text.char_indices() {
            let _ = TrickleFragment::parse(&text[..i]);
        }
    }

    #[test]
    fn reads_kinds_mids_and_rejections() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                   m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";
        let lines = m_lines(sdp);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].kind, Some(MediaKind::Audio));
        assert!(lines[0].accepted);
        assert_eq!(lines[1].mid, Some(Mid::from("1")));
        assert!(!lines[1].accepted);
        assert_eq!(lines[2].kind, None);
    }

    #[test]
    fn ice_credentials_are_what_rfc_8839_allows() {
        let pwd = "abcdefghijklmnopqrstu/";
        assert_eq!(check_ice_credentials("aZ0+", pwd), Ok(()));
        assert_eq!(
            check_ice_credentials(&"u".repeat(256), &"p".repeat(256)),
            Ok(())
        );
        for (ufrag, pwd) in [
            ("abc", pwd),
            ("abcd", &pwd[1..]),
            (&"u".repeat(257), pwd),
            ("abcd", &"p".repeat(257)),
            ("ab d", pwd),
            ("ab-d", pwd),
            ("abcd", "abcdefghijklmnopqrstu\u{0}"),
            ("abcé", pwd),
        ] {
            assert!(
                check_ice_credentials(ufrag, pwd).is_err(),
                "{ufrag:?} {pwd:?}"
            );
        }
    }

    #[test]
    fn an_offer_is_checked_in_one_pass() {
        let offer = |extra: &str| {
            format!(
                "v=0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n\
                 a=fingerprint:sha-256 00\r\n{extra}\
                 m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=candidate:1 1 udp 1 10.0.0.1 9 typ host\r\n\
                 m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=candidate:1 1 udp 1 10.0.0.1 9 typ host\r\n\
                 a=candidate:2 1 udp 1 10.0.0.2 9 typ host\r\n"
            )
        };
        // Candidates repeated in each m-line count once.
        assert_eq!(check_offer(&offer(""), 2, 2), Ok(2));
        let too_large = |r| matches!(r, Err(SessionError::OfferTooLarge(_)));
        assert!(too_large(check_offer(&offer(""), 1, 2)), "m-lines");
        assert!(too_large(check_offer(&offer(""), 2, 1)), "candidates");
        assert!(matches!(
            check_offer(&offer("a=ice-lite\r\n"), 2, 2),
            Err(SessionError::Unsupported(_))
        ));
        for cut in [
            "a=ice-ufrag:abcd\r\n",
            "a=ice-pwd:abcdefghijklmnopqrstuv\r\n",
            "a=fingerprint:sha-256 00\r\n",
        ] {
            let sdp = offer("").replace(cut, "");
            assert!(
                matches!(check_offer(&sdp, 2, 2), Err(SessionError::MalformedSdp(_))),
                "without {cut:?}"
            );
        }
    }
}

/// The offer as lumen accepts it when it has a data channel section
/// (`m=application`): with `a=setup:actpass` turned into `a=setup:passive`,
/// so that lumen takes the DTLS client role. RFC 8832 then has the client
/// pick odd SCTP stream ids for the channels it opens in band, which leaves
/// stream 0 free for a `chat` channel negotiated out of band
/// (`negotiated: true, id: 0`). `None`: keep the offer as it is (no data
/// section, or the client insists on being the DTLS client with
/// `a=setup:active`, and then stream 0 may be one of its own).
pub(crate) fn dtls_client_for_channels(sdp: &str) -> Option<String> {
    let mut data = false;
    let mut actpass = false;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("m=application ") {
            data = true;
        } else if let Some(role) = line.strip_prefix("a=setup:") {
            match role.trim() {
                "actpass" => actpass = true,
                // Already passive: lumen is the client as it is.
                "passive" => {}
                _ => return None,
            }
        }
    }
    if !data {
        return None;
    }
    if !actpass {
        return Some(sdp.to_string());
    }
    Some(sdp.replace("a=setup:actpass", "a=setup:passive"))
}

#[cfg(test)]
mod dtls_role_tests {
    use super::dtls_client_for_channels;

    #[test]
    fn a_data_offer_makes_lumen_the_dtls_client() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=setup:actpass\r\n\
                     m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=setup:actpass\r\n";
        let got = dtls_client_for_channels(offer).expect("rewritten");
        assert_eq!(got.matches("a=setup:passive").count(), 2);
        assert!(!got.contains("actpass"));
        // Media only: untouched. The client as DTLS client: untouched.
        assert_eq!(
            dtls_client_for_channels("m=audio 9 x 111\r\na=setup:actpass\r\n"),
            None
        );
        let active = offer.replace("actpass", "active");
        assert_eq!(dtls_client_for_channels(&active), None);
        let passive = offer.replace("actpass", "passive");
        assert_eq!(
            dtls_client_for_channels(&passive).as_deref(),
            Some(passive.as_str())
        );
    }
}
