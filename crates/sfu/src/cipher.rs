//! SRTP's ciphers: AES-GCM (RFC 7714) on `ring`, AES-128-CM (RFC 3711)
//! on aws-lc-rs with its key expanded once; the rest of str0m's crypto as
//! its default (aws-lc-rs).
//!
//! The SFU seals every forwarded packet once for each viewer, so the
//! cipher is most of a forwarded packet's cost. `ring` seals AES-GCM with
//! VAES and VPCLMULQDQ on 256-bit registers where the CPU has them (AMD
//! Zen 3 on, Intel Ice Lake on); aws-lc-rs 1.19 uses those only with
//! AVX-512 and otherwise takes its 128-bit AES-NI code. On the AMD EPYC
//! of this project's benchmarks a 1,200-byte payload seals in ~256 ns with
//! `ring` against ~430 ns with aws-lc-rs (`lumen bench ceiling`, "encrypt
//! only"; BENCHMARKS.md, "SRTP's AES-GCM on ring"). Where the CPU has
//! neither, both take the same AES-NI code.
//!
//! str0m's default AES-128-CM cipher expands its key again for every
//! packet; this one keeps the expanded key. The key derivation, DTLS and
//! the hashes stay with the default provider.

use aws_lc_rs::cipher::{AES_128, EncryptingKey, EncryptionContext, UnboundCipherKey};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, Algorithm, LessSafeKey, Nonce, Tag, UnboundKey};
use str0m::crypto::{
    AeadAes128GcmCipher, AeadAes256GcmCipher, Aes128CmSha1_80Cipher, CryptoError, CryptoProvider,
    SrtpProvider, SupportedAeadAes128Gcm, SupportedAeadAes256Gcm, SupportedAes128CmSha1_80,
};

/// Bytes of the authentication tag after the ciphertext.
const TAG_LEN: usize = 16;

/// The error for an output buffer too short for what goes into it.
fn short_output(cipher: &str, output: usize, needed: usize) -> CryptoError {
    CryptoError::Other(format!(
        "{cipher}: {output} bytes of output where {needed} are needed"
    ))
}

/// str0m's default crypto provider with these SRTP ciphers: the one every
/// peer of an [`Sfu`](crate::Sfu) uses.
pub fn crypto_provider() -> CryptoProvider {
    CryptoProvider {
        srtp_provider: &Srtp,
        ..str0m::crypto::from_feature_flags()
    }
}

/// The default provider's SRTP, for what this one does not replace.
fn default_srtp() -> &'static dyn SrtpProvider {
    str0m::crypto::from_feature_flags().srtp_provider
}

#[derive(Debug)]
struct Srtp;

impl SrtpProvider for Srtp {
    fn aes_128_cm_sha1_80(&self) -> &'static dyn SupportedAes128CmSha1_80 {
        &Cm128
    }

    fn aead_aes_128_gcm(&self) -> &'static dyn SupportedAeadAes128Gcm {
        &Gcm128
    }

    fn aead_aes_256_gcm(&self) -> &'static dyn SupportedAeadAes256Gcm {
        &Gcm256
    }

    fn srtp_aes_128_ecb_round(&self, key: &[u8], input: &[u8], output: &mut [u8]) {
        default_srtp().srtp_aes_128_ecb_round(key, input, output)
    }

    fn srtp_aes_256_ecb_round(&self, key: &[u8], input: &[u8], output: &mut [u8]) {
        default_srtp().srtp_aes_256_ecb_round(key, input, output)
    }
}

#[derive(Debug)]
struct Cm128;

impl SupportedAes128CmSha1_80 for Cm128 {
    fn create_cipher(&self, key: [u8; 16], _encrypt: bool) -> Box<dyn Aes128CmSha1_80Cipher> {
        let key = UnboundCipherKey::new(&AES_128, &key).expect("an SRTP AES-128 key");
        Box::new(CmCipher {
            key: EncryptingKey::ctr(key).expect("AES-128 in counter mode"),
        })
    }
}

/// One direction's AES-128 counter-mode key, expanded.
struct CmCipher {
    key: EncryptingKey,
}

impl std::fmt::Debug for CmCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the key.
        f.debug_struct("CmCipher").finish_non_exhaustive()
    }
}

impl Aes128CmSha1_80Cipher for CmCipher {
    /// `input` XOR the key stream from `iv`, into `output` (counter mode
    /// encrypts and decrypts alike).
    fn encrypt(
        &mut self,
        iv: &[u8; 16],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(), CryptoError> {
        let Some(body) = output.get_mut(..input.len()) else {
            return Err(short_output("AES-CM", output.len(), input.len()));
        };
        body.copy_from_slice(input);
        let iv = aws_lc_rs::iv::FixedLength::from(*iv);
        self.key
            .less_safe_encrypt(body, EncryptionContext::Iv128(iv))
            .map_err(|_| CryptoError::Other("AES-CM failed".into()))?;
        Ok(())
    }

    fn decrypt(
        &mut self,
        iv: &[u8; 16],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(), CryptoError> {
        self.encrypt(iv, input, output)
    }
}

#[derive(Debug)]
struct Gcm128;

impl SupportedAeadAes128Gcm for Gcm128 {
    fn create_cipher(&self, key: [u8; 16], _encrypt: bool) -> Box<dyn AeadAes128GcmCipher> {
        Box::new(GcmCipher::new(&AES_128_GCM, &key))
    }
}

#[derive(Debug)]
struct Gcm256;

impl SupportedAeadAes256Gcm for Gcm256 {
    fn create_cipher(&self, key: [u8; 32], _encrypt: bool) -> Box<dyn AeadAes256GcmCipher> {
        Box::new(GcmCipher::new(&AES_256_GCM, &key))
    }
}

/// One direction's AES-GCM key.
struct GcmCipher {
    key: LessSafeKey,
}

impl std::fmt::Debug for GcmCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the key.
        f.debug_struct("GcmCipher").finish_non_exhaustive()
    }
}

impl GcmCipher {
    fn new(algorithm: &'static Algorithm, key: &[u8]) -> GcmCipher {
        let key = UnboundKey::new(algorithm, key).expect("an SRTP AES-GCM key of its length");
        GcmCipher {
            key: LessSafeKey::new(key),
        }
    }

    /// Seals `input` into `output`: the ciphertext, then the tag.
    fn seal(
        &self,
        iv: &[u8; 12],
        aad: &[u8],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(), CryptoError> {
        let len = input.len();
        if output.len() < len + TAG_LEN {
            return Err(short_output("AES-GCM", output.len(), len + TAG_LEN));
        }
        let (body, rest) = output.split_at_mut(len);
        body.copy_from_slice(input);
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*iv), Aad::from(aad), body)
            .map_err(|_| CryptoError::Other("AES-GCM seal failed".into()))?;
        rest[..TAG_LEN].copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens `input` (ciphertext, then tag) into `output`: the plaintext's
    /// length, or an error when the tag does not match.
    fn open(
        &self,
        iv: &[u8; 12],
        aads: &[&[u8]],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize, CryptoError> {
        let Some(len) = input.len().checked_sub(TAG_LEN) else {
            return Err(CryptoError::Other("AES-GCM: shorter than its tag".into()));
        };
        if output.len() < len {
            return Err(short_output("AES-GCM", output.len(), len));
        }
        let (ciphertext, tag) = input.split_at(len);
        let tag = Tag::try_from(tag).expect("16 bytes");
        let joined;
        let aad = match aads {
            [one] => *one,
            _ => {
                joined = aads.concat();
                &joined
            }
        };
        let body = &mut output[..len];
        body.copy_from_slice(ciphertext);
        self.key
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(*iv),
                Aad::from(aad),
                tag,
                body,
                0..,
            )
            .map_err(|_| CryptoError::Other("AES-GCM: the tag does not match".into()))?;
        Ok(len)
    }
}

/// The two AES-GCM cipher traits, one interface: the key's length is the
/// only difference, and the key is already in the cipher.
macro_rules! gcm_cipher {
    ($($cipher:ident),*) => {$(
        impl $cipher for GcmCipher {
            fn encrypt(
                &mut self,
                iv: &[u8; 12],
                aad: &[u8],
                input: &[u8],
                output: &mut [u8],
            ) -> Result<(), CryptoError> {
                self.seal(iv, aad, input, output)
            }

            fn decrypt(
                &mut self,
                iv: &[u8; 12],
                aads: &[&[u8]],
                input: &[u8],
                output: &mut [u8],
            ) -> Result<usize, CryptoError> {
                self.open(iv, aads, input, output)
            }
        }
    )*};
}

gcm_cipher!(AeadAes128GcmCipher, AeadAes256GcmCipher);

#[cfg(test)]
mod tests;
