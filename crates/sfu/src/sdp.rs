//! Small reads of SDP text that str0m does not expose as an API: which
//! m-lines an answer has, and with which mid; what a trickle-ICE fragment
//! (RFC 8840, the body of a WHIP/WHEP PATCH) carries.

use str0m::media::{MediaKind, Mid};

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
}
