//! lumen's own Ed25519 key pair: made once, atomically, kept private in
//! the data dir, shared by every process on it.

use super::*;

pub(super) struct OwnKey {
    pub(super) signing: EncodingKey,
    pub(super) verifying: DecodingKey,
    /// The public key, base64url.
    pub(super) x: String,
    pub(super) kid: String,
}

impl OwnKey {
    pub(super) fn load_or_create(dir: &Path) -> Result<OwnKey, TokenError> {
        let path = dir.join(KEY_FILE);
        let pkcs8 = match std::fs::read(&path) {
            Ok(bytes) => {
                warn_if_shared(&path);
                bytes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key_file(dir, &path)?,
            Err(e) => return Err(file_error(&path, &e)),
        };
        OwnKey::from_pkcs8(&pkcs8).ok_or_else(|| {
            TokenError::Keys(format!(
                "{} is not an Ed25519 PKCS#8 key; move it away to make a new one \
                 (tokens signed with the old one will stop working)",
                path.display()
            ))
        })
    }

    pub(super) fn from_pkcs8(pkcs8: &[u8]) -> Option<OwnKey> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).ok()?;
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        // RFC 7638: SHA-256 over the required members in lexicographic order.
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        Some(OwnKey {
            signing: EncodingKey::from_ed_der(pkcs8),
            verifying: DecodingKey::from_ed_components(&x).ok()?,
            kid: URL_SAFE_NO_PAD.encode(digest.as_ref()),
            x,
        })
    }
}

/// Creates the key file so that processes starting at the same time end
/// with one key: each writes a complete temporary file, then *links* it to
/// the final name. Unlike `rename`, `link` never replaces a file, so the
/// first one wins and the others read its key instead of overwriting it
/// (a process that had already loaded its own key would otherwise sign with
/// a key nobody else has).
pub(super) fn create_key_file(dir: &Path, path: &Path) -> Result<Vec<u8>, TokenError> {
    create_private_dir(dir).map_err(|e| file_error(dir, &e))?;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| TokenError::Keys("cannot generate an Ed25519 key".to_string()))?;
    let suffix = random_id().ok_or_else(|| TokenError::Keys("no randomness".to_string()))?;
    let tmp = dir.join(format!(".{KEY_FILE}.{}.{suffix}.tmp", std::process::id()));
    if let Err(e) = write_private(&tmp, doc.as_ref()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(file_error(&tmp, &e));
    }
    match std::fs::hard_link(&tmp, path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the token signing key");
            sync_dir(dir);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        // A file system without hard links: rename, which can replace a key
        // that another process created in the same instant.
        Err(_) if !path.exists() => {
            if let Err(e) = std::fs::rename(&tmp, path) {
                let _ = std::fs::remove_file(&tmp);
                return Err(file_error(path, &e));
            }
            sync_dir(dir);
        }
        Err(_) => {}
    }
    let _ = std::fs::remove_file(&tmp);
    // Whoever won, the file now holds the key every process uses.
    std::fs::read(path).map_err(|e| file_error(path, &e))
}

pub(super) fn file_error(path: &Path, e: &std::io::Error) -> TokenError {
    TokenError::Keys(format!("{}: {e}", path.display()))
}

#[cfg(unix)]
pub(super) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
pub(super) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

pub(super) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes the new directory entry durable; best effort.
pub(super) fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

pub(super) fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "the token signing key is readable by other users; chmod 600 it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
