//! `[recording]` in `lumen.toml`: whether streams are recorded, where to,
//! sealed with which keys, through which spool, and for how long they are
//! kept.
//!
//! ```toml
//! [recording]
//! policy = "always"          # "off" | "always" (default) | "on_demand"
//! retention_days = 0         # delete recordings older than this; 0 keeps them
//! thumbnail_width = 320      # pixels, live and recording thumbnails
//!
//! [recording.store]          # see StoreConfig; default <data dir>/recordings
//! [recording.encryption]     # see EncryptionConfig; default no sealing
//! [recording.spool]          # see SpoolConfig; default <data dir>/spool
//! ```

use serde::{Deserialize, Serialize};

use crate::seal::EncryptionConfig;
use crate::spool::SpoolConfig;
use crate::store::StoreConfig;

/// Which streams are recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// None; the API's start refuses. Live thumbnails are still made.
    Off,
    /// Every stream, from its publisher's first keyframe to its end.
    #[default]
    Always,
    /// Only between a start and a stop through the API, while live.
    OnDemand,
}

/// The recorder's configuration: `[recording]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecorderConfig {
    /// Which streams are recorded.
    pub policy: Policy,
    /// Where recordings are stored.
    pub store: StoreConfig,
    /// Sealing at rest (no keys: objects are stored as they are).
    pub encryption: EncryptionConfig,
    /// The local spool in front of the store.
    pub spool: SpoolConfig,
    /// Recordings older than this many days are deleted (0: kept forever).
    pub retention_days: u32,
    /// Width of thumbnails in pixels (pictures narrower stay as they are).
    pub thumbnail_width: u32,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            policy: Policy::Always,
            store: StoreConfig::default(),
            encryption: EncryptionConfig::default(),
            spool: SpoolConfig::default(),
            retention_days: 0,
            thumbnail_width: 320,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_the_default_and_it_round_trips() {
        let cfg: RecorderConfig = serde_json::from_str("{}").expect("parse");
        assert_eq!(cfg, RecorderConfig::default());
        assert_eq!(cfg.policy, Policy::Always);
        let back: RecorderConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).expect("json")).expect("parse");
        assert_eq!(back, cfg);
    }

    #[test]
    fn policies_and_unknown_fields() {
        let cfg: RecorderConfig =
            serde_json::from_str(r#"{"policy":"on_demand","retention_days":30}"#).expect("parse");
        assert_eq!(cfg.policy, Policy::OnDemand);
        assert_eq!(cfg.retention_days, 30);
        assert!(serde_json::from_str::<RecorderConfig>(r#"{"polcy":"off"}"#).is_err());
    }
}
