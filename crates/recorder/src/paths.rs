//! Where a recording's objects live in the store. The recorder writes them
//! and signaling serves them, both through these names.

/// Every object of recording `id` is under this prefix.
pub fn prefix(id: &str) -> String {
    format!("recordings/{id}/")
}

/// The init segment (`ftyp` + `moov`) of its fragments.
pub fn init(id: &str) -> String {
    format!("recordings/{id}/init.mp4")
}

/// Fragment `seq` (`prft` + `moof` + `mdat`).
pub fn fragment(id: &str, seq: u64) -> String {
    format!("recordings/{id}/{seq:08}.m4s")
}

/// The playable MP4 (`moov` before `mdat`) made at the end.
pub fn mp4(id: &str) -> String {
    format!("recordings/{id}/recording.mp4")
}

/// The CMAF HLS playlist of its fragments.
pub fn playlist(id: &str) -> String {
    format!("recordings/{id}/index.m3u8")
}

/// Its thumbnail (JPEG).
pub fn thumbnail(id: &str) -> String {
    format!("recordings/{id}/thumbnail.jpg")
}

/// The fragment a playlist URI (`00000003.m4s`) names, if it is one.
pub fn fragment_seq(file: &str) -> Option<u64> {
    let digits = file.strip_suffix(".m4s")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_names_round_trip() {
        assert_eq!(fragment("rec_1", 3), "recordings/rec_1/00000003.m4s");
        assert_eq!(fragment_seq("00000003.m4s"), Some(3));
        for bad in ["3.m4s", "0000000x.m4s", "00000003.mp4", "../x.m4s", ""] {
            assert_eq!(fragment_seq(bad), None, "{bad}");
        }
    }
}
