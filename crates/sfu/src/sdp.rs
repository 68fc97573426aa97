//! Small reads of SDP text that str0m does not expose as an API: which
//! m-lines an answer has, and with which mid.

use str0m::media::{MediaKind, Mid};

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
