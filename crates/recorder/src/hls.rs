//! The HLS media playlist of a recording's CMAF fragments (RFC 8216bis):
//! version 7 for `EXT-X-MAP` with fragmented MP4.

use std::fmt::Write;

/// One media segment of a playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment<'a> {
    /// Its URI, relative to the playlist's.
    pub uri: &'a str,
    /// How long it plays, in seconds.
    pub duration: f64,
    /// Whether it starts with a keyframe (decodes without the segment
    /// before it).
    pub independent: bool,
}

/// Writes the playlist of `segments` in order, all sharing the init segment
/// at `init_uri`. `ended`: the recording is over, so the playlist is a
/// complete VOD one (`EXT-X-PLAYLIST-TYPE:VOD`, `EXT-X-ENDLIST`); otherwise
/// it is a growing `EVENT` playlist.
pub fn playlist(segments: &[Segment<'_>], init_uri: &str, ended: bool) -> String {
    // The target duration is each duration rounded to the nearest integer
    // (RFC 8216bis §4.4.3.1), at least 1.
    let target = segments
        .iter()
        .map(|s| s.duration.round() as u64)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "#EXTM3U");
    let _ = writeln!(out, "#EXT-X-VERSION:7");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:0");
    let _ = writeln!(
        out,
        "#EXT-X-PLAYLIST-TYPE:{}",
        if ended { "VOD" } else { "EVENT" }
    );
    if !segments.is_empty() && segments.iter().all(|s| s.independent) {
        let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS");
    }
    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", quoted(init_uri));
    for s in segments {
        let _ = writeln!(out, "#EXTINF:{:.3},", s.duration);
        let _ = writeln!(out, "{}", s.uri);
    }
    if ended {
        let _ = writeln!(out, "#EXT-X-ENDLIST");
    }
    out
}

/// A quoted-string may not hold `"` or line breaks (RFC 8216bis §4.2).
fn quoted(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '"' | '\r' | '\n'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vod_playlist() {
        let segments = [
            Segment {
                uri: "1.m4s",
                duration: 2.0,
                independent: true,
            },
            Segment {
                uri: "2.m4s",
                duration: 1.533,
                independent: true,
            },
        ];
        let p = playlist(&segments, "init.mp4", true);
        assert_eq!(
            p,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXTINF:2.000,\n1.m4s\n#EXTINF:1.533,\n2.m4s\n#EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn live_playlist_with_a_dependent_segment() {
        let segments = [
            Segment {
                uri: "a",
                duration: 2.6,
                independent: true,
            },
            Segment {
                uri: "b",
                duration: 2.0,
                independent: false,
            },
        ];
        let p = playlist(&segments, "i\"nit", false);
        assert!(p.contains("#EXT-X-TARGETDURATION:3\n"));
        assert!(p.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"));
        assert!(!p.contains("INDEPENDENT"));
        assert!(!p.contains("ENDLIST"));
        assert!(p.contains("URI=\"init\""));
    }
}
