//! `[chat]` of `lumen.toml`: the rules every room of this node starts with.

use lumen_chat::{FilterMode, Limit, RoomConfig, WordFilter};
use serde::{Deserialize, Serialize};

/// The chat rules of a server: each stream's room is made with them
/// (moderators change slow mode and registered-only mode per room while it
/// runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatSettings {
    /// Messages (and reports) one user may send per
    /// [`rate_limit_seconds`](Self::rate_limit_seconds), over all their
    /// sessions; the broadcaster and moderators are exempt. Default 20.
    pub rate_limit_messages: u32,
    /// The rate limit's window, seconds. Default 30.
    pub rate_limit_seconds: u64,
    /// Words refused or masked in viewers' messages (whole words, any
    /// case). Default none.
    pub filter_words: Vec<String>,
    /// `block` refuses a message with a filtered word (error `filtered`);
    /// `mask` replaces the word with `*`. Default `block`.
    pub filter_mode: FilterMode,
    /// Refuse viewers' messages that contain links. Default off.
    pub block_links: bool,
    /// Seconds between one viewer's messages when a room starts (0: off).
    pub slow_mode_secs: u64,
    /// Rooms start in registered-only mode (only logged-in users and
    /// `chat:` tokens with a subject that is an account may send).
    pub registered_only: bool,
    /// Also accept a `chat` channel the client negotiates out of band
    /// (`negotiated: true, id: 0`). lumen then answers offers with a data
    /// section as the DTLS client, and browsers pick the costlier AES-CM +
    /// HMAC-SHA1 SRTP profile over AES-GCM for those sessions. Default off.
    pub out_of_band: bool,
}

impl Default for ChatSettings {
    fn default() -> Self {
        let room = RoomConfig::default();
        ChatSettings {
            rate_limit_messages: room.rate_limit.count,
            rate_limit_seconds: room.rate_limit.window_ms / 1000,
            filter_words: Vec::new(),
            filter_mode: FilterMode::default(),
            block_links: room.links_blocked,
            slow_mode_secs: room.slow_mode,
            registered_only: room.registered_only,
            out_of_band: false,
        }
    }
}

impl ChatSettings {
    /// Checks what a room could not work with.
    pub fn check(&self) -> Result<(), String> {
        if self.rate_limit_messages == 0 {
            return Err("chat.rate_limit_messages must be at least 1".into());
        }
        if self.rate_limit_seconds == 0 {
            return Err("chat.rate_limit_seconds must be at least 1".into());
        }
        Ok(())
    }

    /// A new room's rules.
    pub(crate) fn room_config(&self) -> RoomConfig {
        RoomConfig {
            rate_limit: Limit {
                count: self.rate_limit_messages,
                window_ms: self.rate_limit_seconds.saturating_mul(1000),
            },
            filter: WordFilter::new(&self.filter_words, self.filter_mode),
            links_blocked: self.block_links,
            slow_mode: self.slow_mode_secs,
            registered_only: self.registered_only,
            ..RoomConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_rooms_own() {
        let s = ChatSettings::default();
        let c = s.room_config();
        let d = RoomConfig::default();
        assert_eq!(c.rate_limit, d.rate_limit);
        assert_eq!(c.slow_mode, d.slow_mode);
        assert!(!c.links_blocked);
        assert!(s.check().is_ok());
    }

    #[test]
    fn toml_sets_the_rules() {
        let s: ChatSettings = serde_json::from_value(serde_json::json!({
            "rate_limit_messages": 100,
            "rate_limit_seconds": 10,
            "filter_words": ["Heck"],
            "filter_mode": "mask",
            "block_links": true,
        }))
        .unwrap();
        let c = s.room_config();
        assert_eq!(
            c.rate_limit,
            Limit {
                count: 100,
                window_ms: 10_000
            }
        );
        assert_eq!(c.filter.mode(), FilterMode::Mask);
        assert!(c.links_blocked);
        let zero = ChatSettings {
            rate_limit_messages: 0,
            ..ChatSettings::default()
        };
        assert!(zero.check().unwrap_err().contains("rate_limit_messages"));
    }
}
