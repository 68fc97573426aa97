//! `[transcode]` in `lumen.toml`: whether single-layer streams get a
//! ladder, its rungs, and how many streams may be transcoded at once.
//!
//! ```toml
//! [transcode]
//! enabled = true        # default
//! max_streams = 2       # CPU budget: streams transcoded at once
//! idle_secs = 10        # pause a ladder this long after its last viewer left
//!
//! [[transcode.rungs]]   # default: m 640x360 800 kbit/s, l 320x180 200 kbit/s
//! rid = "m"
//! width = 640
//! height = 360
//! bitrate_kbps = 800
//! codec = "h264"       # default; "av1": encoded with rav1e, sent only to
//!                      # viewers whose offer has AV1
//! ```

use serde::{Deserialize, Serialize};

/// The transcoder's configuration: `[transcode]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscodeConfig {
    /// Whether single-layer H.264 streams get a ladder.
    pub enabled: bool,
    /// At most this many streams are transcoded at once (each costs about
    /// a third of a core for a 720p30 source); past it, new streams are
    /// forwarded without a ladder and the refusal is logged and counted.
    pub max_streams: usize,
    /// A ladder whose viewers have all left pauses after this many seconds
    /// (decodes and encodes nothing; its rungs go quiet) until a viewer
    /// connects; one whose stream has had no viewer yet pauses as soon as
    /// its rungs have made a picture. 0: never pauses. It counts against
    /// `max_streams` while paused.
    pub idle_secs: u64,
    /// The rungs, best first. A rung whose box is not smaller than the
    /// source is left out.
    pub rungs: Vec<RungConfig>,
}

/// One rung of the ladder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RungConfig {
    /// The layer's name, as viewers pin it (`m`, `l`).
    pub rid: String,
    /// The box the picture fits in, keeping the source's aspect ratio.
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// Target bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// The rung's codec: `h264` (openh264, constrained baseline, every
    /// viewer decodes it) or `av1` (rav1e, low-latency, speed 10; only
    /// viewers whose offer has AV1 get it, the others never see the
    /// layer). An AV1 rung needs the SFU to carry AV1 layers
    /// (`lumen_sfu::SfuConfig::sink_av1`), which lumen turns on when a
    /// rung is AV1.
    #[serde(default)]
    pub codec: RungCodec,
}

/// The codec of a rung.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RungCodec {
    /// H.264 (openh264), constrained baseline.
    #[default]
    H264,
    /// AV1 (rav1e), for viewers that negotiated it.
    Av1,
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        TranscodeConfig {
            enabled: true,
            max_streams: 2,
            idle_secs: 10,
            rungs: vec![
                RungConfig {
                    rid: "m".into(),
                    width: 640,
                    height: 360,
                    bitrate_kbps: 800,
                    codec: RungCodec::H264,
                },
                RungConfig {
                    rid: "l".into(),
                    width: 320,
                    height: 180,
                    bitrate_kbps: 200,
                    codec: RungCodec::H264,
                },
            ],
        }
    }
}

impl TranscodeConfig {
    /// Whether a rung is AV1 (the SFU must then carry AV1 layers).
    pub fn has_av1(&self) -> bool {
        self.enabled && self.rungs.iter().any(|r| r.codec == RungCodec::Av1)
    }

    /// Checks what a file or environment could get wrong: rids must be
    /// non-empty, distinct, at most 16 characters of letters, digits, `-`
    /// and `_` (RFC 8851), sizes at least 16×16, bitrates above zero.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for r in &self.rungs {
            let ok_rid = !r.rid.is_empty()
                && r.rid.len() <= 16
                && r.rid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok_rid {
                return Err(format!(
                    "transcode rung rid {:?}: 1 to 16 letters, digits, - or _",
                    r.rid
                ));
            }
            if !seen.insert(r.rid.as_str()) {
                return Err(format!("transcode rung rid {:?} appears twice", r.rid));
            }
            if r.width < 16 || r.height < 16 || r.width > 4096 || r.height > 4096 {
                return Err(format!(
                    "transcode rung {:?}: {}x{} is outside 16x16 to 4096x4096",
                    r.rid, r.width, r.height
                ));
            }
            if r.bitrate_kbps == 0 {
                return Err(format!(
                    "transcode rung {:?}: bitrate_kbps must be above 0",
                    r.rid
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_ladder_is_valid_and_bad_rungs_are_named() {
        assert!(TranscodeConfig::default().check().is_ok());
        let mut c = TranscodeConfig::default();
        c.rungs[1].rid = "m".into();
        assert!(c.check().unwrap_err().contains("twice"));
        let mut c = TranscodeConfig::default();
        c.rungs[0].rid = "a b".into();
        assert!(c.check().is_err());
        let mut c = TranscodeConfig::default();
        c.rungs[0].bitrate_kbps = 0;
        assert!(c.check().unwrap_err().contains("bitrate"));
    }
}
