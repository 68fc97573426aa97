//! Keys: loading them from files and the environment, and the keyring
//! that seals with one of them and opens with any.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{
    DEFAULT_CHUNK_SIZE, Header, Layout, MAX_KEY_ID_LEN, ObjectKey, PREFIX_LEN, SALT_LEN, SealError,
    Sealer,
};

/// The environment variable holding keys: `kid:KEY[,kid2:KEY2…]`, each KEY
/// 32 bytes in base64 or hex; the first one seals unless `current` is set.
pub const KEY_ENV: &str = "LUMEN_RECORDING_KEY";

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key is not 32 bytes of raw, base64 or hex.
    #[error("key {id:?}: {reason}")]
    BadKey {
        /// Its id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A key id is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid key id {0:?}: 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    BadId(String),
    /// Two keys share an id.
    #[error("key id {0:?} is configured twice")]
    Duplicate(String),
    /// `current` names a key that is not configured.
    #[error("current key id {0:?} is not configured")]
    UnknownCurrent(String),
}

/// `[recording.encryption]`: where the keys come from.
///
/// ```toml
/// [recording.encryption]
/// current = "k2"                       # optional: default the first key
/// keys = [
///   { id = "k1", file = "/etc/lumen/k1.key" },  # 32 raw bytes, base64 or hex
///   { id = "k2", env = "LUMEN_KEY_K2" },         # base64 or hex
/// ]
/// ```
///
/// Keys in [`KEY_ENV`] are added after these.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// The id of the key that seals new objects.
    #[serde(default)]
    pub current: Option<String>,
    /// The configured keys.
    #[serde(default)]
    pub keys: Vec<KeySource>,
}

/// One configured key: from a file or from an environment variable.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeySource {
    /// The key id written into every object it seals.
    pub id: String,
    /// A file holding 32 raw bytes, or 32 bytes in base64 or hex.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// An environment variable holding 32 bytes in base64 or hex.
    #[serde(default)]
    pub env: Option<String>,
}

/// The configured keys: one seals, all open.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(String, Secret)>,
    current: usize,
}

/// 32 bytes that are wiped when dropped and never printed.
#[derive(Clone)]
struct Secret([u8; 32]);

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: without volatile writes the compiler may elide this,
        // but it costs nothing and usually works.
        self.0 = [0; 32];
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .field("current", &self.current_id())
            .finish()
    }
}

impl Keyring {
    /// A keyring of one key, which seals.
    pub fn new(id: &str, key: [u8; 32]) -> Result<Keyring, KeyError> {
        check_id(id)?;
        Ok(Keyring {
            keys: vec![(id.to_owned(), Secret(key))],
            current: 0,
        })
    }

    /// Adds a key that opens objects (and seals once made current).
    pub fn add(&mut self, id: &str, key: [u8; 32]) -> Result<(), KeyError> {
        check_id(id)?;
        if self.keys.iter().any(|(k, _)| k == id) {
            return Err(KeyError::Duplicate(id.to_owned()));
        }
        self.keys.push((id.to_owned(), Secret(key)));
        Ok(())
    }

    /// Makes `id` the key that seals.
    pub fn set_current(&mut self, id: &str) -> Result<(), KeyError> {
        self.current = self
            .keys
            .iter()
            .position(|(k, _)| k == id)
            .ok_or_else(|| KeyError::UnknownCurrent(id.to_owned()))?;
        Ok(())
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.keys[self.current].0
    }

    /// Every configured id, in configuration order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(k, _)| k.as_str())
    }

    /// Loads the configured keys and those in [`KEY_ENV`]; `None` when
    /// there are none (objects are then stored in the clear).
    pub fn from_config(cfg: &EncryptionConfig) -> Result<Option<Keyring>, KeyError> {
        let env = std::env::var(KEY_ENV).ok();
        Self::from_parts(cfg, env.as_deref(), |name| std::env::var(name).ok())
    }

    /// [`Keyring::from_config`] with the environment given: `key_env` is
    /// the value of [`KEY_ENV`], `lookup` reads other variables.
    pub fn from_parts(
        cfg: &EncryptionConfig,
        key_env: Option<&str>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Keyring>, KeyError> {
        let mut loaded: Vec<(String, [u8; 32])> = Vec::new();
        for source in &cfg.keys {
            let key = match (&source.file, &source.env) {
                (Some(path), None) => {
                    let raw = std::fs::read(path).map_err(|source| KeyError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    decode_key(&source.id, &raw, true)?
                }
                (None, Some(var)) => {
                    let value = lookup(var).ok_or_else(|| KeyError::BadKey {
                        id: source.id.clone(),
                        reason: format!("environment variable {var} is not set"),
                    })?;
                    decode_key(&source.id, value.as_bytes(), false)?
                }
                _ => {
                    return Err(KeyError::BadKey {
                        id: source.id.clone(),
                        reason: "give exactly one of `file` or `env`".into(),
                    });
                }
            };
            loaded.push((source.id.clone(), key));
        }
        if let Some(value) = key_env {
            for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (id, key) = item.split_once(':').ok_or_else(|| KeyError::BadKey {
                    id: String::new(),
                    reason: format!("{KEY_ENV} entries are `kid:KEY`"),
                })?;
                loaded.push((id.to_owned(), decode_key(id, key.as_bytes(), false)?));
            }
        }
        let mut loaded = loaded.into_iter();
        let Some((id, key)) = loaded.next() else {
            return match &cfg.current {
                Some(current) => Err(KeyError::UnknownCurrent(current.clone())),
                None => Ok(None),
            };
        };
        let mut ring = Keyring::new(&id, key)?;
        for (id, key) in loaded {
            ring.add(&id, key)?;
        }
        if let Some(current) = &cfg.current {
            ring.set_current(current)?;
        }
        Ok(Some(ring))
    }

    /// Seals a whole object with the current key.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut sealer = self.sealer();
        let mut out = sealer.header().to_vec();
        out.reserve(plaintext.len() + (plaintext.len() / sealer.chunk_size() + 1) * 16);
        out.extend_from_slice(&sealer.push(plaintext));
        out.extend_from_slice(&sealer.finish());
        out
    }

    /// Opens a whole sealed object.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let header = Header::parse(sealed)?;
        let key = self.object_key(&header)?;
        let layout = Layout::from_sealed(&header, sealed.len() as u64)?;
        let body = &sealed[header.len()..];
        key.open_chunks(&layout, 0..layout.chunks, body)
    }

    /// A streaming sealer for one object, with the current key.
    pub fn sealer(&self) -> Sealer {
        self.sealer_with_chunk_size(DEFAULT_CHUNK_SIZE)
    }

    /// A streaming sealer with another chunk size (tests use small ones).
    pub fn sealer_with_chunk_size(&self, chunk_size: u32) -> Sealer {
        let mut salt = [0u8; SALT_LEN];
        let mut nonce_prefix = [0u8; PREFIX_LEN];
        // The system RNG failing is not something a recorder can work around.
        aws_lc_rs::rand::fill(&mut salt).expect("system random generator");
        aws_lc_rs::rand::fill(&mut nonce_prefix).expect("system random generator");
        let (id, secret) = &self.keys[self.current];
        let header = Header {
            chunk_size: chunk_size.max(1),
            salt,
            nonce_prefix,
            key_id: id.clone(),
        };
        let key = ObjectKey::derive(&secret.0, &header);
        Sealer {
            key,
            pending: Vec::new(),
            next_chunk: 0,
        }
    }

    /// The key that opens the object with this header.
    pub fn object_key(&self, header: &Header) -> Result<ObjectKey, SealError> {
        let (_, secret) = self
            .keys
            .iter()
            .find(|(id, _)| *id == header.key_id)
            .ok_or_else(|| SealError::UnknownKey(header.key_id.clone()))?;
        Ok(ObjectKey::derive(&secret.0, header))
    }
}

pub(super) fn check_id(id: &str) -> Result<(), KeyError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadId(id.to_owned()))
    }
}

/// 32 bytes in hex or base64 (standard or URL-safe, padded or not),
/// surrounding whitespace ignored; or, from a file, 32 raw bytes.
fn decode_key(id: &str, raw: &[u8], from_file: bool) -> Result<[u8; 32], KeyError> {
    let bad = |reason: &str| KeyError::BadKey {
        id: id.to_owned(),
        reason: reason.to_owned(),
    };
    if from_file && let Ok(key) = <[u8; 32]>::try_from(raw) {
        return Ok(key);
    }
    let text = std::str::from_utf8(raw)
        .map_err(|_| bad("not 32 raw bytes, hex or base64"))?
        .trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        decode_hex(text)
    } else {
        decode_base64(text).ok_or_else(|| bad("not 32 raw bytes, hex or base64"))?
    };
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| bad(&format!("{} bytes, want 32", bytes.len())))
}

fn decode_hex(text: &str) -> Vec<u8> {
    let nibble = |b: u8| match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    };
    text.as_bytes()
        .chunks(2)
        .map(|p| nibble(p[0]) << 4 | nibble(p[1]))
        .collect()
}

// A key is 44 characters: not worth a dependency.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        acc = acc << 6 | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
