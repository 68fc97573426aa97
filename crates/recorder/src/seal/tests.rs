use super::*;

fn ring(id: &str, byte: u8) -> Keyring {
    Keyring::new(id, [byte; 32]).expect("valid id")
}

fn plain(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Seals with a small chunk size so chunk borders are easy to reach.
fn seal_small(ring: &Keyring, data: &[u8], chunk: u32) -> Vec<u8> {
    let mut s = ring.sealer_with_chunk_size(chunk);
    let mut out = s.header().to_vec();
    // Pushed in uneven pieces: the output must not depend on them.
    for piece in data.chunks(7) {
        out.extend(s.push(piece));
    }
    out.extend(s.finish());
    out
}

/// Opens `range` of `sealed` the way the store does: only its chunks.
fn open_range(ring: &Keyring, sealed: &[u8], range: Range<u64>) -> Result<Vec<u8>, SealError> {
    let header = Header::parse(&sealed[..sealed.len().min(MAX_HEADER_LEN)])?;
    let layout = Layout::from_sealed(&header, sealed.len() as u64)?;
    let chunks = layout.chunks_for(range.clone());
    if chunks.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = layout.sealed_range(chunks.clone());
    let opened = ring.object_key(&header)?.open_chunks(
        &layout,
        chunks.clone(),
        &sealed[bytes.start as usize..bytes.end as usize],
    )?;
    let skip = (range.start - layout.plain_offset(chunks.start)) as usize;
    let end = range.end.min(layout.plain_len);
    Ok(opened[skip..skip + (end - range.start) as usize].to_vec())
}

#[test]
fn roundtrip_at_every_size_around_chunk_borders() {
    let r = ring("k1", 1);
    for len in [0, 1, 15, 16, 17, 31, 32, 33, 64, 100] {
        let data = plain(len);
        let sealed = seal_small(&r, &data, 16);
        let header = Header::parse(&sealed).expect("header");
        let layout = Layout::from_sealed(&header, sealed.len() as u64).expect("layout");
        assert_eq!(layout.plain_len, len as u64, "len {len}");
        assert_eq!(layout.sealed_len(), sealed.len() as u64);
        assert_eq!(Layout::for_plain(&header, len as u64), layout);
        assert_eq!(r.open(&sealed).expect("opens"), data, "len {len}");
    }
}

#[test]
fn whole_object_seal_uses_default_chunks() {
    let r = ring("k1", 1);
    let data = plain(200_000);
    let sealed = r.seal(&data);
    let header = Header::parse(&sealed).expect("header");
    assert_eq!(header.chunk_size, DEFAULT_CHUNK_SIZE);
    assert_eq!(header.key_id, "k1");
    assert_eq!(r.open(&sealed).expect("opens"), data);
    // No plaintext window survives.
    assert!(!sealed.windows(16).any(|w| w == &data[1000..1016]));
}

#[test]
fn ranges_at_chunk_borders_match_the_plaintext() {
    let r = ring("k1", 1);
    let data = plain(100);
    let sealed = seal_small(&r, &data, 16);
    for start in [0u64, 1, 15, 16, 17, 31, 32, 48, 95, 99] {
        for end in [start + 1, start + 15, start + 16, start + 17, 100, 150] {
            let got = open_range(&r, &sealed, start..end).expect("range opens");
            let want = &data[start as usize..(end.min(100)) as usize];
            assert_eq!(got, want, "{start}..{end}");
        }
    }
    assert!(open_range(&r, &sealed, 100..120).expect("empty").is_empty());
}

#[test]
fn range_reads_only_the_covering_chunks() {
    let header = Header::parse(ring("k1", 1).sealer_with_chunk_size(16).header()).expect("header");
    let layout = Layout::for_plain(&header, 100);
    assert_eq!(layout.chunks, 7);
    assert_eq!(layout.chunks_for(16..32), 1..2);
    assert_eq!(layout.chunks_for(15..17), 0..2);
    assert_eq!(layout.chunks_for(99..1000), 6..7);
    let h = layout.header_len;
    assert_eq!(layout.sealed_range(1..2), h + 32..h + 64);
    // The last chunk holds 4 bytes + tag.
    assert_eq!(layout.sealed_range(6..7), h + 6 * 32..h + 6 * 32 + 20);
}

#[test]
fn tampering_fails_at_the_changed_chunk() {
    let r = ring("k1", 1);
    let sealed = seal_small(&r, &plain(100), 16);
    let h = Header::parse(&sealed).expect("header").len();
    let mut bad = sealed.clone();
    bad[h + 2 * 32 + 3] ^= 1;
    assert_eq!(r.open(&bad), Err(SealError::Auth(2)));
    // A changed chunk size in the header is caught by the AAD, not trusted.
    let mut bad = sealed.clone();
    bad[12] = 17;
    assert!(matches!(r.open(&bad), Err(SealError::Auth(_))));
    // Swapping two chunks fails too.
    let mut bad = sealed.clone();
    let (a, b) = (h..h + 32, h + 32..h + 64);
    let first = bad[a.clone()].to_vec();
    bad.copy_within(b.clone(), a.start);
    bad[b].copy_from_slice(&first);
    assert_eq!(r.open(&bad), Err(SealError::Auth(0)));
}

#[test]
fn truncation_fails() {
    let r = ring("k1", 1);
    let sealed = seal_small(&r, &plain(100), 16);
    let h = Header::parse(&sealed).expect("header").len();
    // At a chunk border: the new last chunk was not sealed as last.
    assert_eq!(r.open(&sealed[..h + 3 * 32]), Err(SealError::Auth(2)));
    // Mid-chunk.
    assert!(matches!(
        r.open(&sealed[..sealed.len() - 5]),
        Err(SealError::Auth(_))
    ));
    assert!(matches!(
        r.open(&sealed[..h + 3]),
        Err(SealError::Malformed(_))
    ));
    assert!(matches!(
        r.open(&sealed[..20]),
        Err(SealError::Malformed(_))
    ));
}

#[test]
fn wrong_key_with_the_same_id_fails_cleanly() {
    let sealed = ring("k1", 1).seal(b"secret");
    let err = ring("k1", 2).open(&sealed).expect_err("wrong key");
    assert_eq!(err, SealError::Auth(0));
    assert_eq!(
        err.to_string(),
        "authentication failed: wrong key or corrupted object at chunk 0"
    );
}

#[test]
fn unknown_key_id_is_named() {
    let sealed = ring("k2", 1).seal(b"secret");
    let err = ring("k1", 1).open(&sealed).expect_err("unknown id");
    assert_eq!(
        err.to_string(),
        r#"sealed with key id "k2" which is not configured"#
    );
}

#[test]
fn rotation_keeps_old_objects_readable() {
    let mut r = ring("k1", 1);
    let old = r.seal(b"old recording");
    r.add("k2", [2; 32]).expect("add");
    r.set_current("k2").expect("current");
    let new = r.seal(b"new recording");
    assert_eq!(Header::parse(&new).expect("h").key_id, "k2");
    assert_eq!(r.open(&old).expect("old"), b"old recording");
    assert_eq!(r.open(&new).expect("new"), b"new recording");
    // A node that only has the new key names the old one.
    let only_new = ring("k2", 2);
    assert_eq!(only_new.open(&old), Err(SealError::UnknownKey("k1".into())));
}

#[test]
fn sealing_twice_gives_different_bytes() {
    let r = ring("k1", 1);
    assert_ne!(r.seal(b"same"), r.seal(b"same"));
}

#[test]
fn keys_load_from_files_env_and_the_key_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("raw.key");
    std::fs::write(&raw, [7u8; 32]).expect("write");
    let hex = dir.path().join("hex.key");
    std::fs::write(&hex, format!("{}\n", "0a".repeat(32))).expect("write");
    let cfg = EncryptionConfig {
        current: Some("b64".into()),
        keys: vec![
            KeySource {
                id: "raw".into(),
                file: Some(raw),
                env: None,
            },
            KeySource {
                id: "hex".into(),
                file: Some(hex),
                env: None,
            },
            KeySource {
                id: "b64".into(),
                file: None,
                env: Some("K".into()),
            },
        ],
    };
    // 32 bytes of 0x01 in base64.
    let b64 = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let lookup = |name: &str| (name == "K").then(|| b64.to_owned());
    let env = format!("e1:{},e2:{b64}", "ff".repeat(32));
    let r = Keyring::from_parts(&cfg, Some(&env), lookup)
        .expect("loads")
        .expect("some");
    assert_eq!(
        r.ids().collect::<Vec<_>>(),
        ["raw", "hex", "b64", "e1", "e2"]
    );
    assert_eq!(r.current_id(), "b64");
    let sealed = r.seal(b"x");
    assert_eq!(ring("b64", 1).open(&sealed).expect("same key"), b"x");
    assert_eq!(
        ring("hex", 0x0a)
            .open(&ring("hex", 0x0a).seal(b"y"))
            .expect("y"),
        b"y"
    );

    let none = Keyring::from_parts(&EncryptionConfig::default(), None, |_| None).expect("ok");
    assert!(none.is_none());
}

#[test]
fn bad_keys_are_refused_with_a_reason() {
    let cfg = EncryptionConfig::default();
    let short = Keyring::from_parts(&cfg, Some("k1:AAAA"), |_| None).expect_err("short");
    assert_eq!(short.to_string(), r#"key "k1": 3 bytes, want 32"#);
    let no_id = Keyring::from_parts(&cfg, Some("AAAA"), |_| None).expect_err("no id");
    assert!(no_id.to_string().contains("kid:KEY"), "{no_id}");
    let dup = format!("k1:{0},k1:{0}", "00".repeat(32));
    assert!(matches!(
        Keyring::from_parts(&cfg, Some(&dup), |_| None),
        Err(KeyError::Duplicate(_))
    ));
    let cur = EncryptionConfig {
        current: Some("zz".into()),
        keys: vec![],
    };
    assert!(matches!(
        Keyring::from_parts(&cur, None, |_| None),
        Err(KeyError::UnknownCurrent(_))
    ));
    assert!(matches!(
        Keyring::new("a b", [0; 32]),
        Err(KeyError::BadId(_))
    ));
}

#[test]
fn debug_never_prints_key_bytes() {
    let r = ring("k1", 0xAB);
    let shown = format!("{r:?}");
    assert!(shown.contains("k1") && !shown.contains("171"), "{shown}");
}
