//! argon2id password hashes (PHC strings), computed off the async threads.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::{AuthError, Result};

/// The PHC string of `password` with a fresh salt.
pub(crate) async fn hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut salt[..]);
        let salt =
            SaltString::encode_b64(&salt).map_err(|e| AuthError::Invalid(format!("salt: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AuthError::Invalid(format!("cannot hash the password: {e}")))
    })
    .await
    .map_err(|_| AuthError::Invalid("password hashing was cancelled".to_string()))?
}

/// Whether `password` matches the PHC string `hash` (false for a hash that
/// does not parse).
pub(crate) async fn verify(password: String, hash: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .map_err(|_| AuthError::Invalid("password check was cancelled".to_string()))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let h = super::hash("correct horse".to_string()).await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(
            super::verify("correct horse".to_string(), h.clone())
                .await
                .unwrap()
        );
        assert!(!super::verify("correct horsf".to_string(), h).await.unwrap());
        assert!(
            !super::verify("x".to_string(), "not a hash".to_string())
                .await
                .unwrap()
        );
    }
}
