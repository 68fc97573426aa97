//! Encryption at rest: every object is sealed with AES-256-GCM in chunks,
//! so that a Range request on the plaintext only has to fetch and open the
//! chunks that cover it.
//!
//! # Sealed format (version 1)
//!
//! ```text
//! header:
//!   magic        8 bytes  "LUMNSEAL"
//!   version      1 byte   1
//!   chunk_size   4 bytes  u32 big-endian, plaintext bytes per chunk (64 KiB)
//!   salt        16 bytes  random per object
//!   nonce_prefix 7 bytes  random per object
//!   key_id_len   1 byte   1..=64
//!   key_id       key_id_len bytes, ASCII [A-Za-z0-9._-]
//! chunks, i = 0, 1, …, n-1 (n ≥ 1; an empty object has one empty chunk):
//!   AES-256-GCM(object key, nonce_i, aad_i, plaintext chunk i) || 16-byte tag
//! ```
//!
//! Every chunk holds `chunk_size` plaintext bytes except the last, which
//! holds 0..=`chunk_size`. The object key is HKDF-SHA256 of the configured
//! 32-byte key with the object's salt (info `"lumen-seal v1"`): nonces never
//! repeat under one key however many objects a key seals.
//! `nonce_i = nonce_prefix || u32be(i) || last` and
//! `aad_i = header || u32be(i) || last`, where `last` is 1 for the final chunk
//! and 0 otherwise. So a changed header (key id, chunk size), reordered
//! chunks and a truncation at a chunk border all fail authentication
//! instead of decrypting to something shorter or shuffled.
//!
//! The header is authoritative for the key id; the store may also carry it
//! in the object's metadata for operators. Several keys can be configured at
//! once ([`Keyring`]): the current one seals, any of them opens, so keys
//! rotate without re-encrypting old recordings.

use std::ops::Range;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf;

mod keys;

use keys::check_id;
pub use keys::{EncryptionConfig, KEY_ENV, KeyError, KeySource, Keyring};

/// The first bytes of every sealed object.
pub const MAGIC: [u8; 8] = *b"LUMNSEAL";
/// The only format version written and read.
pub const VERSION: u8 = 1;
/// Plaintext bytes per chunk when sealing.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Bytes of the GCM tag after each chunk.
pub const TAG_LEN: u64 = 16;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 64;
/// A header is never longer than this: reading this many bytes of an object
/// is enough to parse it.
pub const MAX_HEADER_LEN: usize = FIXED_HEADER_LEN + MAX_KEY_ID_LEN;

const SALT_LEN: usize = 16;
const PREFIX_LEN: usize = 7;
const FIXED_HEADER_LEN: usize = 8 + 1 + 4 + SALT_LEN + PREFIX_LEN + 1;
const HKDF_INFO: &[u8] = b"lumen-seal v1";

/// Why a sealed object could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The object names a key id this node does not have.
    #[error("sealed with key id {0:?} which is not configured")]
    UnknownKey(String),
    /// The object is sealed and no keyring is configured at all.
    #[error("object is sealed but no key is configured")]
    NoKey,
    /// A chunk's tag did not verify: another key under the same id, or the
    /// bytes were changed, reordered or truncated.
    #[error("authentication failed: wrong key or corrupted object at chunk {0}")]
    Auth(u64),
    /// The header or the length does not follow the format.
    #[error("malformed sealed object: {0}")]
    Malformed(&'static str),
}

/// Whether these first bytes of an object start a sealed object.
pub fn is_sealed(prefix: &[u8]) -> bool {
    prefix.starts_with(&MAGIC)
}

/// The parsed header of a sealed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    salt: [u8; SALT_LEN],
    nonce_prefix: [u8; PREFIX_LEN],
    /// The id of the key that sealed the object.
    pub key_id: String,
}

impl Header {
    /// Parses the header at the start of `buf` (at least the whole header;
    /// [`MAX_HEADER_LEN`] bytes always suffice).
    pub fn parse(buf: &[u8]) -> Result<Header, SealError> {
        if !is_sealed(buf) {
            return Err(SealError::Malformed("no seal header"));
        }
        if buf.len() < FIXED_HEADER_LEN {
            return Err(SealError::Malformed("truncated header"));
        }
        if buf[8] != VERSION {
            return Err(SealError::Malformed("unsupported version"));
        }
        let chunk_size = u32::from_be_bytes([buf[9], buf[10], buf[11], buf[12]]);
        if chunk_size == 0 {
            return Err(SealError::Malformed("zero chunk size"));
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&buf[13..13 + SALT_LEN]);
        let mut nonce_prefix = [0u8; PREFIX_LEN];
        let at = 13 + SALT_LEN;
        nonce_prefix.copy_from_slice(&buf[at..at + PREFIX_LEN]);
        let id_len = usize::from(buf[FIXED_HEADER_LEN - 1]);
        let id = buf
            .get(FIXED_HEADER_LEN..FIXED_HEADER_LEN + id_len)
            .ok_or(SealError::Malformed("truncated header"))?;
        let key_id = std::str::from_utf8(id)
            .ok()
            .filter(|id| check_id(id).is_ok())
            .ok_or(SealError::Malformed("invalid key id"))?
            .to_owned();
        Ok(Header {
            chunk_size,
            salt,
            nonce_prefix,
            key_id,
        })
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        FIXED_HEADER_LEN + self.key_id.len()
    }

    /// Always false: a header has a fixed part (for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Its encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.nonce_prefix);
        // check_id bounds the length to 64.
        out.push(self.key_id.len() as u8);
        out.extend_from_slice(self.key_id.as_bytes());
        out
    }
}

/// Where the chunks of a sealed object lie: pure arithmetic from the header
/// and the sealed length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of the header.
    pub header_len: u64,
    /// Plaintext bytes per chunk.
    pub chunk_size: u64,
    /// Number of chunks (at least 1).
    pub chunks: u64,
    /// Plaintext length.
    pub plain_len: u64,
}

impl Layout {
    /// The layout of `plain_len` bytes sealed under `header`.
    pub fn for_plain(header: &Header, plain_len: u64) -> Layout {
        let chunk_size = u64::from(header.chunk_size);
        Layout {
            header_len: header.len() as u64,
            chunk_size,
            chunks: plain_len.div_ceil(chunk_size).max(1),
            plain_len,
        }
    }

    /// The layout of a sealed object of `sealed_len` bytes.
    pub fn from_sealed(header: &Header, sealed_len: u64) -> Result<Layout, SealError> {
        let header_len = header.len() as u64;
        let chunk_size = u64::from(header.chunk_size);
        let body = sealed_len
            .checked_sub(header_len)
            .filter(|b| *b >= TAG_LEN)
            .ok_or(SealError::Malformed("shorter than one chunk"))?;
        let chunks = body.div_ceil(chunk_size + TAG_LEN);
        let last = body - (chunks - 1) * (chunk_size + TAG_LEN);
        if last < TAG_LEN {
            // A final chunk shorter than a tag cannot exist: cut mid-chunk.
            return Err(SealError::Auth(chunks - 1));
        }
        Ok(Layout {
            header_len,
            chunk_size,
            chunks,
            plain_len: body - chunks * TAG_LEN,
        })
    }

    /// Sealed length of the whole object.
    pub fn sealed_len(&self) -> u64 {
        self.header_len + self.plain_len + self.chunks * TAG_LEN
    }

    /// The chunks that hold the plaintext `range` (clamped to the object);
    /// empty when the range is.
    pub fn chunks_for(&self, range: Range<u64>) -> Range<u64> {
        let end = range.end.min(self.plain_len);
        if range.start >= end {
            return 0..0;
        }
        range.start / self.chunk_size..end.div_ceil(self.chunk_size)
    }

    /// The sealed bytes of `chunks`, as a range of the object.
    pub fn sealed_range(&self, chunks: Range<u64>) -> Range<u64> {
        let full = self.chunk_size + TAG_LEN;
        let start = self.header_len + chunks.start * full;
        let end = (self.header_len + chunks.end * full).min(self.sealed_len());
        start..end
    }

    /// The plaintext offset where `chunk` starts.
    pub fn plain_offset(&self, chunk: u64) -> u64 {
        chunk * self.chunk_size
    }
}

/// The AEAD key of one object, derived from a configured key and the
/// object's salt.
pub struct ObjectKey {
    key: LessSafeKey,
    header: Vec<u8>,
    nonce_prefix: [u8; PREFIX_LEN],
    chunk_size: u32,
}

impl ObjectKey {
    fn derive(secret: &[u8; 32], header: &Header) -> ObjectKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &header.salt).extract(secret);
        let info = [HKDF_INFO];
        // 32 bytes out of HKDF-SHA256 cannot fail.
        let okm = prk.expand(&info, &AES_256_GCM).expect("hkdf length");
        ObjectKey {
            key: LessSafeKey::new(UnboundKey::from(okm)),
            header: header.encode(),
            nonce_prefix: header.nonce_prefix,
            chunk_size: header.chunk_size,
        }
    }

    /// Opens `chunks` of the object laid out as `layout`, from `sealed`,
    /// their sealed bytes (as [`Layout::sealed_range`] gives them).
    pub fn open_chunks(
        &self,
        layout: &Layout,
        chunks: Range<u64>,
        sealed: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let full = (layout.chunk_size + TAG_LEN) as usize;
        let mut out = Vec::with_capacity(sealed.len());
        let mut rest = sealed;
        for index in chunks {
            let last = index + 1 == layout.chunks;
            let take = if last {
                rest.len()
            } else {
                full.min(rest.len())
            };
            if take < TAG_LEN as usize || (!last && take < full) {
                return Err(SealError::Auth(index));
            }
            let mut buf = rest[..take].to_vec();
            rest = &rest[take..];
            let index32 =
                u32::try_from(index).map_err(|_| SealError::Malformed("too many chunks"))?;
            let plain = self
                .key
                .open_in_place(self.nonce(index32, last), self.aad(index32, last), &mut buf)
                .map_err(|_| SealError::Auth(index))?;
            out.extend_from_slice(plain);
        }
        Ok(out)
    }

    fn seal_chunk(&self, index: u32, last: bool, plain: &[u8], out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(plain);
        // Sealing only fails for inputs beyond GCM's limits, far above a chunk.
        let tag = self
            .key
            .seal_in_place_separate_tag(
                self.nonce(index, last),
                self.aad(index, last),
                &mut out[at..],
            )
            .expect("chunk within GCM limits");
        out.extend_from_slice(tag.as_ref());
    }

    fn nonce(&self, index: u32, last: bool) -> Nonce {
        let mut n = [0u8; 12];
        n[..PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        n[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&index.to_be_bytes());
        n[11] = u8::from(last);
        Nonce::assume_unique_for_key(n)
    }

    fn aad(&self, index: u32, last: bool) -> Aad<Vec<u8>> {
        let mut aad = Vec::with_capacity(self.header.len() + 5);
        aad.extend_from_slice(&self.header);
        aad.extend_from_slice(&index.to_be_bytes());
        aad.push(u8::from(last));
        Aad::from(aad)
    }
}

/// Seals one object as it is written: [`Sealer::header`] first, then what
/// [`Sealer::push`] returns, then what [`Sealer::finish`] returns.
pub struct Sealer {
    key: ObjectKey,
    pending: Vec<u8>,
    next_chunk: u32,
}

impl Sealer {
    /// The header, which starts the object.
    pub fn header(&self) -> &[u8] {
        &self.key.header
    }

    /// The id of the key that seals.
    pub fn key_id(&self) -> &str {
        // The id is the tail of the header, after its length byte.
        std::str::from_utf8(&self.key.header[FIXED_HEADER_LEN..]).unwrap_or_default()
    }

    /// Plaintext bytes per chunk.
    pub fn chunk_size(&self) -> usize {
        self.key.chunk_size as usize
    }

    /// Takes plaintext; returns the chunks it completes. A full chunk is
    /// held back until more data shows it is not the last one.
    pub fn push(&mut self, plain: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(plain);
        let size = self.chunk_size();
        let mut out = Vec::new();
        let mut at = 0;
        while self.pending.len() - at > size {
            self.key.seal_chunk(
                self.next_chunk,
                false,
                &self.pending[at..at + size],
                &mut out,
            );
            self.next_chunk = self
                .next_chunk
                .checked_add(1)
                .expect("object under 256 TiB");
            at += size;
        }
        self.pending.drain(..at);
        out
    }

    /// Seals what is left as the last chunk.
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pending.len() + TAG_LEN as usize);
        let pending = std::mem::take(&mut self.pending);
        self.key
            .seal_chunk(self.next_chunk, true, &pending, &mut out);
        out
    }
}

#[cfg(test)]
mod tests;
