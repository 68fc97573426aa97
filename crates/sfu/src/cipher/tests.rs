use super::*;

/// RFC 7714 section 16.1.1: AEAD_AES_128_GCM on an RTP packet, with the
/// session key and salt.
mod rfc7714 {
    pub const KEY: [u8; 16] = [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f,
    ];
    pub const SALT: [u8; 12] = [
        0x51, 0x75, 0x69, 0x64, 0x20, 0x70, 0x72, 0x6f, 0x20, 0x71, 0x75, 0x6f,
    ];
    pub const PLAIN: &[u8] = &[
        0x80, 0x40, 0xf1, 0x7b, 0x80, 0x41, 0xf8, 0xd3, 0x55, 0x01, 0xa0, 0xb2, 0x47, 0x61, 0x6c,
        0x6c, 0x69, 0x61, 0x20, 0x65, 0x73, 0x74, 0x20, 0x6f, 0x6d, 0x6e, 0x69, 0x73, 0x20, 0x64,
        0x69, 0x76, 0x69, 0x73, 0x61, 0x20, 0x69, 0x6e, 0x20, 0x70, 0x61, 0x72, 0x74, 0x65, 0x73,
        0x20, 0x74, 0x72, 0x65, 0x73,
    ];
    pub const PROTECTED: &[u8] = &[
        0x80, 0x40, 0xf1, 0x7b, 0x80, 0x41, 0xf8, 0xd3, 0x55, 0x01, 0xa0, 0xb2, 0xf2, 0x4d, 0xe3,
        0xa3, 0xfb, 0x34, 0xde, 0x6c, 0xac, 0xba, 0x86, 0x1c, 0x9d, 0x7e, 0x4b, 0xca, 0xbe, 0x63,
        0x3b, 0xd5, 0x0d, 0x29, 0x4e, 0x6f, 0x42, 0xa5, 0xf4, 0x7a, 0x51, 0xc7, 0xd1, 0x9b, 0x36,
        0xde, 0x3a, 0xdf, 0x88, 0x33, 0x89, 0x9d, 0x7f, 0x27, 0xbe, 0xb1, 0x6a, 0x91, 0x52, 0xcf,
        0x76, 0x5e, 0xe4, 0x39, 0x0c, 0xce,
    ];

    /// The packet's IV (RFC 7714 section 8.1): the salt XOR 00 00, the
    /// SSRC, the rollover counter (0), the sequence number.
    pub fn iv() -> [u8; 12] {
        let mut iv = [0; 12];
        iv[2..6].copy_from_slice(&PLAIN[8..12]);
        iv[10..12].copy_from_slice(&PLAIN[2..4]);
        for (b, s) in iv.iter_mut().zip(SALT) {
            *b ^= s;
        }
        iv
    }
}

#[test]
fn seals_and_opens_the_rfc_7714_packet() {
    let (head, payload) = rfc7714::PLAIN.split_at(12);
    let mut cipher = Gcm128.create_cipher(rfc7714::KEY, true);
    // Room to spare after the tag, which must stay as it was.
    let mut out = vec![0xee; payload.len() + TAG_LEN + 5];
    cipher
        .encrypt(&rfc7714::iv(), head, payload, &mut out)
        .unwrap();
    assert_eq!(&out[..payload.len() + TAG_LEN], &rfc7714::PROTECTED[12..]);
    assert_eq!(&out[payload.len() + TAG_LEN..], &[0xee; 5]);

    let mut cipher = Gcm128.create_cipher(rfc7714::KEY, false);
    let mut plain = vec![0; payload.len()];
    let n = cipher
        .decrypt(
            &rfc7714::iv(),
            &[head],
            &rfc7714::PROTECTED[12..],
            &mut plain,
        )
        .unwrap();
    assert_eq!(&plain[..n], payload);
    // The additional data in two pieces (as SRTCP passes it) is the same.
    let n = cipher
        .decrypt(
            &rfc7714::iv(),
            &[&head[..8], &head[8..]],
            &rfc7714::PROTECTED[12..],
            &mut plain,
        )
        .unwrap();
    assert_eq!(&plain[..n], payload);
}

/// Deterministic bytes (xorshift), so a failure repeats.
fn bytes(seed: &mut u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}

/// One key's AES-GCM ciphers, one sealing and one opening, of either
/// size, from this provider or the default one.
enum Gcm {
    Aes128(Box<dyn AeadAes128GcmCipher>, Box<dyn AeadAes128GcmCipher>),
    Aes256(Box<dyn AeadAes256GcmCipher>, Box<dyn AeadAes256GcmCipher>),
}

impl Gcm {
    fn new(key: &[u8], default: bool) -> Gcm {
        let srtp: &dyn SrtpProvider = if default { default_srtp() } else { &Srtp };
        if let Ok(k) = <[u8; 16]>::try_from(key) {
            let p = srtp.aead_aes_128_gcm();
            Gcm::Aes128(p.create_cipher(k, true), p.create_cipher(k, false))
        } else {
            let k = <[u8; 32]>::try_from(key).expect("a 16- or 32-byte key");
            let p = srtp.aead_aes_256_gcm();
            Gcm::Aes256(p.create_cipher(k, true), p.create_cipher(k, false))
        }
    }

    fn seal(&mut self, iv: &[u8; 12], aad: &[u8], input: &[u8], output: &mut [u8]) -> Option<()> {
        match self {
            Gcm::Aes128(e, _) => e.encrypt(iv, aad, input, output).ok(),
            Gcm::Aes256(e, _) => e.encrypt(iv, aad, input, output).ok(),
        }
    }

    fn open(
        &mut self,
        iv: &[u8; 12],
        aads: &[&[u8]],
        input: &[u8],
        output: &mut [u8],
    ) -> Option<usize> {
        match self {
            Gcm::Aes128(_, d) => d.decrypt(iv, aads, input, output).ok(),
            Gcm::Aes256(_, d) => d.decrypt(iv, aads, input, output).ok(),
        }
    }
}

/// What this provider seals the default one opens, and the other way
/// round, byte for byte the same: a viewer or publisher on any other
/// WebRTC stack reads what the SFU sends.
#[test]
fn seals_as_the_default_provider_does_and_opens_what_it_seals() {
    let mut seed = 0x9E37_79B9_7F4A_7C15;
    for key_len in [16, 32] {
        let key = bytes(&mut seed, key_len);
        let (mut ours, mut theirs) = (Gcm::new(&key, false), Gcm::new(&key, true));
        // Around the 16-byte block and the ciphers' wider strides, a
        // typical video packet, the largest.
        for len in [
            0, 1, 15, 16, 17, 31, 32, 33, 95, 96, 97, 255, 256, 257, 1184, 1452,
        ] {
            let iv: [u8; 12] = bytes(&mut seed, 12).try_into().unwrap();
            let aad = bytes(&mut seed, 12 + len % 5 * 4);
            let plain = bytes(&mut seed, len);
            let what = format!("{key_len}-byte key, {len} bytes");

            let mut sealed = vec![0; len + TAG_LEN];
            let mut expected = vec![0; len + TAG_LEN];
            ours.seal(&iv, &aad, &plain, &mut sealed).unwrap();
            theirs.seal(&iv, &aad, &plain, &mut expected).unwrap();
            assert_eq!(sealed, expected, "{what}");

            // Each opens what the other sealed.
            for (opener, packet) in [(&mut theirs, &sealed), (&mut ours, &expected)] {
                let mut opened = vec![0xee; len];
                assert_eq!(
                    opener.open(&iv, &[&aad], packet, &mut opened),
                    Some(len),
                    "{what}"
                );
                assert_eq!(opened, plain, "{what}");
            }
        }
    }
}

/// A packet altered anywhere (payload, tag, additional data, IV) does not
/// open, and neither does one shorter than its tag; a short output is an
/// error, not a panic.
#[test]
fn a_packet_altered_anywhere_does_not_open() {
    let mut seed = 0x2545_F491_4F6C_DD1D;
    for key_len in [16, 32] {
        let mut ours = Gcm::new(&bytes(&mut seed, key_len), false);
        let iv: [u8; 12] = bytes(&mut seed, 12).try_into().unwrap();
        let aad = bytes(&mut seed, 12);
        let plain = bytes(&mut seed, 300);
        let mut sealed = vec![0; plain.len() + TAG_LEN];
        ours.seal(&iv, &aad, &plain, &mut sealed).unwrap();
        let mut out = vec![0; plain.len()];
        assert_eq!(ours.open(&iv, &[&aad], &sealed, &mut out), Some(300));

        for at in [0, 150, 299, 300, 315] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert_eq!(
                ours.open(&iv, &[&aad], &bad, &mut out),
                None,
                "{key_len}: byte {at}"
            );
        }
        let mut bad_aad = aad.clone();
        bad_aad[3] ^= 0x80;
        assert_eq!(ours.open(&iv, &[&bad_aad], &sealed, &mut out), None);
        let mut bad_iv = iv;
        bad_iv[11] ^= 1;
        assert_eq!(ours.open(&bad_iv, &[&aad], &sealed, &mut out), None);
        assert_eq!(
            ours.open(&iv, &[&aad], &sealed[..TAG_LEN - 1], &mut out),
            None
        );
        assert_eq!(ours.open(&iv, &[&aad], &sealed, &mut out[..299]), None);
        let mut short = vec![0; plain.len() + TAG_LEN - 1];
        assert_eq!(ours.seal(&iv, &aad, &plain, &mut short), None);
    }
}

/// The counter-mode cipher with its key kept: the same key stream as the
/// default provider's for every packet through one cipher, each under its
/// own IV, and back again.
#[test]
fn counter_mode_with_the_kept_key_is_the_default_s() {
    let mut seed = 0x5851_F42D_4C95_7F2D;
    let key: [u8; 16] = bytes(&mut seed, 16).try_into().unwrap();
    let mut ours = Cm128.create_cipher(key, true);
    let mut theirs = default_srtp().aes_128_cm_sha1_80().create_cipher(key, true);
    for len in [1, 15, 16, 17, 160, 1184, 1452] {
        let iv: [u8; 16] = bytes(&mut seed, 16).try_into().unwrap();
        let plain = bytes(&mut seed, len);
        // (The default cipher wants 15 bytes of room after the input.)
        let mut sealed = vec![0xee; len + 15];
        let mut expected = vec![0xee; len + 15];
        ours.encrypt(&iv, &plain, &mut sealed).unwrap();
        theirs.encrypt(&iv, &plain, &mut expected).unwrap();
        assert_eq!(sealed[..len], expected[..len], "{len} bytes");
        assert_ne!(sealed[..len], plain[..], "{len} bytes not encrypted");

        let mut back = vec![0; len];
        ours.decrypt(&iv, &sealed[..len], &mut back).unwrap();
        assert_eq!(back, plain, "{len} bytes");
    }
    let mut short = vec![0; 9];
    assert!(ours.encrypt(&[0; 16], &[1; 10], &mut short).is_err());
}
