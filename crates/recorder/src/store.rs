//! Object storage for recordings: a directory under the data dir by
//! default, any S3-compatible store by configuration, through the
//! `object_store` crate.
//!
//! [`Objects`] seals what it writes when a [`Keyring`] is configured and
//! opens what it reads, so callers only ever see plaintext; a Range read of
//! a sealed object fetches only the chunks that cover it (see
//! [`crate::seal`] for the format). Objects written before sealing was
//! turned on stay readable as they are.

mod config;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, GetRange, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, WriteMultipart,
};

pub use config::{S3Config, Sse, StoreConfig};

use crate::seal::{self, Header, Keyring, Layout, SealError, Sealer};

/// The user-metadata entry naming the key that sealed an object, for
/// operators; the object's own header is what opening trusts.
pub const KEY_ID_METADATA: &str = "lumen-key-id";

/// Uploads in flight per [`ObjectWriter`]; each holds one part (5 MiB).
const WRITER_CONCURRENCY: usize = 4;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The configuration cannot make a store.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// The path is not a valid object path.
    #[error("invalid object path {path:?}: {reason}")]
    Path {
        /// The path given.
        path: String,
        /// Why it is invalid.
        reason: String,
    },
    /// No object at this path.
    #[error("object {0} not found")]
    NotFound(String),
    /// The range starts past the end of the object.
    #[error("range {start}..{end} starts past the end of object {path} ({size} bytes)")]
    Range {
        /// The object.
        path: String,
        /// Requested start.
        start: u64,
        /// Requested end.
        end: u64,
        /// Plaintext size.
        size: u64,
    },
    /// The object is sealed and cannot be opened.
    #[error("object {path}: {source}")]
    Sealed {
        /// The object.
        path: String,
        /// Why.
        source: SealError,
    },
    /// The store failed (unreachable, refused, …): worth retrying.
    #[error("object store: {0}")]
    Backend(#[source] object_store::Error),
}

impl StoreError {
    fn from_backend(path: &ObjectPath, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound(path.to_string()),
            e => StoreError::Backend(e),
        }
    }
}

/// A handle on the recordings store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    keyring: Option<Arc<Keyring>>,
    metadata: bool,
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Its path.
    pub path: String,
    /// Bytes as stored (sealed objects are larger than their plaintext; use
    /// [`Objects::size`] for that).
    pub stored_size: u64,
}

impl Objects {
    /// The store `cfg` describes; relative local dirs are under `data_dir`.
    /// With a keyring, every object written is sealed.
    pub fn open(
        cfg: &StoreConfig,
        data_dir: &Path,
        keyring: Option<Keyring>,
    ) -> Result<Objects, StoreError> {
        let (store, metadata) = config::build(cfg, data_dir)?;
        Ok(Objects {
            store,
            keyring: keyring.map(Arc::new),
            metadata,
        })
    }

    /// Over any `object_store` (tests wrap one to make it fail on demand).
    /// No user metadata is written: not every store accepts it.
    pub fn from_store(store: Arc<dyn ObjectStore>, keyring: Option<Keyring>) -> Objects {
        Objects {
            store,
            keyring: keyring.map(Arc::new),
            metadata: false,
        }
    }

    /// Whether objects written are sealed.
    pub fn is_sealing(&self) -> bool {
        self.keyring.is_some()
    }

    /// Writes a whole object (a fragment: a few MB at most; use
    /// [`Objects::writer`] for anything larger).
    pub async fn put(&self, path: &str, data: Bytes) -> Result<(), StoreError> {
        let encoded = self.encode(data);
        self.put_encoded(path, encoded).await
    }

    /// Starts a multipart upload, sealed chunk by chunk as it is written.
    pub async fn writer(&self, path: &str) -> Result<ObjectWriter, StoreError> {
        let location = parse_path(path)?;
        let sealer = self.keyring.as_ref().map(|k| k.sealer());
        let mut opts = PutMultipartOptions::default();
        if let Some(s) = &sealer {
            opts.attributes = self.key_attributes(s.key_id());
        }
        let upload = self
            .store
            .put_multipart_opts(&location, opts)
            .await
            .map_err(|e| StoreError::from_backend(&location, e))?;
        let mut upload = WriteMultipart::new(upload);
        if let Some(s) = &sealer {
            upload.write(s.header());
        }
        Ok(ObjectWriter {
            upload,
            sealer,
            location,
        })
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &str) -> Result<Bytes, StoreError> {
        let location = parse_path(path)?;
        let stored = self
            .store
            .get(&location)
            .await
            .map_err(|e| StoreError::from_backend(&location, e))?
            .bytes()
            .await
            .map_err(|e| StoreError::from_backend(&location, e))?;
        if !seal::is_sealed(&stored) {
            return Ok(stored);
        }
        let ring = self.ring_for(path)?;
        ring.open(&stored)
            .map(Bytes::from)
            .map_err(|source| StoreError::Sealed {
                path: path.to_owned(),
                source,
            })
    }

    /// Reads `range` of the plaintext; the end is clamped to the object.
    /// For a sealed object only the chunks covering the range are fetched.
    pub async fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let location = parse_path(path)?;
        let head = self.head(&location).await?;
        let Some((header, layout)) = head.sealed else {
            return self
                .plain_range(&location, path, range, head.stored_size)
                .await;
        };
        let end = range.end.min(layout.plain_len);
        if range.start > layout.plain_len {
            return Err(StoreError::Range {
                path: path.to_owned(),
                start: range.start,
                end: range.end,
                size: layout.plain_len,
            });
        }
        if range.start >= end {
            return Ok(Bytes::new());
        }
        let sealed_err = |source| StoreError::Sealed {
            path: path.to_owned(),
            source,
        };
        let key = self
            .ring_for(path)?
            .object_key(&header)
            .map_err(sealed_err)?;
        let chunks = layout.chunks_for(range.start..end);
        let bytes = self
            .store
            .get_range(&location, layout.sealed_range(chunks.clone()))
            .await
            .map_err(|e| StoreError::from_backend(&location, e))?;
        let opened = key
            .open_chunks(&layout, chunks.clone(), &bytes)
            .map_err(sealed_err)?;
        let skip = (range.start - layout.plain_offset(chunks.start)) as usize;
        let len = (end - range.start) as usize;
        Ok(Bytes::from(opened).slice(skip..skip + len))
    }

    /// The plaintext size of an object.
    pub async fn size(&self, path: &str) -> Result<u64, StoreError> {
        let head = self.head(&parse_path(path)?).await?;
        Ok(match head.sealed {
            Some((_, layout)) => layout.plain_len,
            None => head.stored_size,
        })
    }

    /// Deletes an object (no error when it does not exist).
    pub async fn delete(&self, path: &str) -> Result<(), StoreError> {
        let location = parse_path(path)?;
        match self.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::Backend(e)),
        }
    }

    /// Every object under `prefix` (path segments, recursive), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let prefix = parse_path(prefix)?;
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        let mut all: Vec<Listed> = self
            .store
            .list(prefix.as_ref())
            .map_ok(|m| Listed {
                path: m.location.to_string(),
                stored_size: m.size,
            })
            .try_collect()
            .await
            .map_err(StoreError::Backend)?;
        all.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(all)
    }

    /// What [`Objects::put_encoded`] stores for `data`: sealed when a
    /// keyring is set. The spool keeps this form so plaintext never rests
    /// on local disk either.
    pub(crate) fn encode(&self, data: Bytes) -> Bytes {
        match &self.keyring {
            Some(ring) => Bytes::from(ring.seal(&data)),
            None => data,
        }
    }

    /// Stores bytes [`Objects::encode`] made.
    pub(crate) async fn put_encoded(&self, path: &str, encoded: Bytes) -> Result<(), StoreError> {
        let location = parse_path(path)?;
        let mut opts = PutOptions::default();
        if seal::is_sealed(&encoded) {
            let head = &encoded[..encoded.len().min(seal::MAX_HEADER_LEN)];
            if let Ok(header) = Header::parse(head) {
                opts.attributes = self.key_attributes(&header.key_id);
            }
        }
        self.store
            .put_opts(&location, PutPayload::from(encoded), opts)
            .await
            .map_err(|e| StoreError::from_backend(&location, e))?;
        Ok(())
    }

    fn key_attributes(&self, key_id: &str) -> Attributes {
        let mut attrs = Attributes::new();
        if self.metadata {
            attrs.insert(
                Attribute::Metadata(KEY_ID_METADATA.into()),
                AttributeValue::from(key_id.to_owned()),
            );
        }
        attrs
    }

    fn ring_for(&self, path: &str) -> Result<&Keyring, StoreError> {
        self.keyring.as_deref().ok_or_else(|| StoreError::Sealed {
            path: path.to_owned(),
            source: SealError::NoKey,
        })
    }

    /// The stored size and, for a sealed object, its header and layout: one
    /// request for the first bytes, which also reports the size.
    async fn head(&self, location: &ObjectPath) -> Result<Head, StoreError> {
        let opts =
            GetOptions::new().with_range(Some(GetRange::Bounded(0..seal::MAX_HEADER_LEN as u64)));
        let (prefix, stored_size) = match self.store.get_opts(location, opts).await {
            Ok(r) => {
                let size = r.meta.size;
                let bytes = r
                    .bytes()
                    .await
                    .map_err(|e| StoreError::from_backend(location, e))?;
                (bytes, size)
            }
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::NotFound(location.to_string()));
            }
            // A range on an empty object is refused: ask for its size.
            Err(e) => {
                let meta = self
                    .store
                    .head(location)
                    .await
                    .map_err(|e| StoreError::from_backend(location, e))?;
                if meta.size != 0 {
                    return Err(StoreError::Backend(e));
                }
                (Bytes::new(), 0)
            }
        };
        if !seal::is_sealed(&prefix) {
            return Ok(Head {
                stored_size,
                sealed: None,
            });
        }
        let sealed_err = |source| StoreError::Sealed {
            path: location.to_string(),
            source,
        };
        let header = Header::parse(&prefix).map_err(sealed_err)?;
        let layout = Layout::from_sealed(&header, stored_size).map_err(sealed_err)?;
        Ok(Head {
            stored_size,
            sealed: Some((header, layout)),
        })
    }

    async fn plain_range(
        &self,
        location: &ObjectPath,
        path: &str,
        range: Range<u64>,
        size: u64,
    ) -> Result<Bytes, StoreError> {
        if range.start > size {
            return Err(StoreError::Range {
                path: path.to_owned(),
                start: range.start,
                end: range.end,
                size,
            });
        }
        let end = range.end.min(size);
        if range.start >= end {
            return Ok(Bytes::new());
        }
        self.store
            .get_range(location, range.start..end)
            .await
            .map_err(|e| StoreError::from_backend(location, e))
    }
}

/// A large object being uploaded in parts (the finalised MP4), sealed as it
/// goes. Call [`ObjectWriter::finish`]; dropping it leaves no object.
pub struct ObjectWriter {
    upload: WriteMultipart,
    sealer: Option<Sealer>,
    location: ObjectPath,
}

impl ObjectWriter {
    /// Appends bytes; waits when enough parts are in flight.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.upload
            .wait_for_capacity(WRITER_CONCURRENCY)
            .await
            .map_err(StoreError::Backend)?;
        match &mut self.sealer {
            Some(s) => {
                let sealed = s.push(data);
                self.upload.put(Bytes::from(sealed));
            }
            None => self.upload.write(data),
        }
        Ok(())
    }

    /// Completes the upload: the object appears whole, or not at all.
    pub async fn finish(mut self) -> Result<(), StoreError> {
        if let Some(s) = self.sealer.take() {
            self.upload.put(Bytes::from(s.finish()));
        }
        self.upload
            .finish()
            .await
            .map_err(|e| StoreError::from_backend(&self.location, e))?;
        Ok(())
    }

    /// Abandons the upload and the parts already sent.
    pub async fn abort(self) -> Result<(), StoreError> {
        self.upload.abort().await.map_err(StoreError::Backend)
    }
}

struct Head {
    stored_size: u64,
    sealed: Option<(Header, Layout)>,
}

/// Refuses a path the store would refuse, before it is queued.
pub(crate) fn check_path(path: &str) -> Result<(), StoreError> {
    parse_path(path).map(|_| ())
}

fn parse_path(path: &str) -> Result<ObjectPath, StoreError> {
    ObjectPath::parse(path).map_err(|e| StoreError::Path {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
