//! Tokens: lumen's own (mint, verify, the key file shared by processes),
//! the attacks that must fail, and external issuers through a JWKS file and
//! a JWKS URL served by a small HTTP server on loopback.
//!
//! No test depends on how fast it runs: times in claims are an hour away
//! from now, against a leeway of a minute (or the other way round).

use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair,
    RsaPublicKeyComponents,
};
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::scope::Action;

const HOUR: u64 = 3600;
const EXT_ISSUER: &str = "https://site.example";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn config(dir: &Path) -> TokenConfig {
    TokenConfig {
        data_dir: dir.to_path_buf(),
        issuer: "lumen".to_string(),
        audience: "lumen".to_string(),
        hs256_secret: None,
        external: Vec::new(),
        leeway: Duration::from_secs(60),
    }
}

fn open(config: TokenConfig) -> TokenService {
    TokenService::open(config).expect("open")
}

fn scopes(s: &str) -> Scopes {
    Scopes::parse(s).expect("scopes")
}

/// Valid claims for lumen, changed by `edit`.
fn claims(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let now = now();
    let mut c = json!({
        "iss": "lumen",
        "aud": "lumen",
        "sub": "alice",
        "exp": now + HOUR,
        "nbf": now,
        "iat": now,
        "jti": "j1",
        "scope": "subscribe:foo",
    });
    edit(c.as_object_mut().expect("object"));
    c
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token of any header, claims and signature, signed by nobody.
fn forge(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string()),
        b64(claims.to_string())
    )
}

#[track_caller]
fn refused(result: Result<VerifiedToken, TokenError>) -> String {
    match result {
        Err(TokenError::Invalid(reason)) => reason,
        other => panic!("expected an invalid token, got {other:?}"),
    }
}

/// A key pair of some other party, and a way to sign with it.
struct Signer {
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

impl Signer {
    fn ed25519(kid: &str) -> Signer {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).expect("keygen");
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("pkcs8");
        Signer {
            alg: Algorithm::EdDSA,
            key: EncodingKey::from_ed_der(doc.as_ref()),
            jwk: json!({
                "kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key()),
                "kid": kid, "alg": "EdDSA", "use": "sig",
            }),
        }
    }

    fn p256(kid: &str) -> Signer {
        let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
        let doc = EcdsaKeyPair::generate_pkcs8(alg, &aws_lc_rs::rand::SystemRandom::new())
            .expect("keygen");
        let pair = EcdsaKeyPair::from_pkcs8(alg, doc.as_ref()).expect("pkcs8");
        let point = pair.public_key().as_ref();
        assert_eq!(point.len(), 65, "uncompressed P-256 point");
        Signer {
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_der(doc.as_ref()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]),
                "kid": kid, "alg": "ES256",
            }),
        }
    }

    fn rsa(kid: &str) -> Signer {
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("keygen");
        let der = pair.as_der().expect("pkcs8");
        let body = STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|l| std::str::from_utf8(l).expect("base64"))
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        Signer {
            alg: Algorithm::RS256,
            key: EncodingKey::from_rsa_pem(pem.as_bytes()).expect("pem"),
            jwk: json!({"kty": "RSA", "n": b64(&public.n), "e": b64(&public.e), "kid": kid}),
        }
    }

    fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign")
    }
}

fn jwks_of(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

fn ext_claims() -> Value {
    claims(|c| {
        c.insert("iss".into(), json!(EXT_ISSUER));
        c.insert("sub".into(), json!("viewer-7"));
    })
}

// ---- lumen's own tokens ----

#[tokio::test]
async fn mint_then_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = open(config(dir.path()));
    let before = now();
    let token = svc
        .mint(
            "alice",
            &scopes("publish:foo chat:*"),
            Duration::from_secs(HOUR),
        )
        .expect("mint");
    let after = now();

    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some(svc.key_id()));

    let verified = svc.verify(&token).await.expect("verify");
    assert_eq!(verified.subject, "alice");
    assert_eq!(verified.issuer, "lumen");
    assert_eq!(verified.scopes, scopes("publish:foo chat:*"));
    assert!(verified.scopes.allows(Action::Publish, "foo"));
    assert!((before + HOUR..=after + HOUR).contains(&verified.expires_at));
    let jti = verified.id.expect("jti");
    assert!(jti.len() >= 20, "{jti}");

    let other = svc
        .mint("alice", &Scopes::default(), Duration::from_secs(HOUR))
        .expect("mint");
    let other = svc.verify(&other).await.expect("verify");
    assert_ne!(
        other.id.as_deref(),
        Some(jti.as_str()),
        "a fresh jti each time"
    );
    assert!(other.scopes.is_empty());
}

#[tokio::test]
async fn a_second_service_on_the_same_data_dir_shares_the_key() {
    // As `lumen token mint` does while the server runs.
    let dir = tempfile::tempdir().expect("tempdir");
    let server = open(config(dir.path()));
    let cli = open(config(dir.path()));
    assert_eq!(server.key_id(), cli.key_id());
    assert_eq!(server.jwks(), cli.jwks());

    let by_server = server
        .mint("alice", &scopes("admin"), Duration::from_secs(HOUR))
        .expect("mint");
    let by_cli = cli
        .mint("bob", &scopes("publish:cam1"), Duration::from_secs(HOUR))
        .expect("mint");
    assert_eq!(cli.verify(&by_server).await.expect("cli").subject, "alice");
    assert_eq!(server.verify(&by_cli).await.expect("server").subject, "bob");
}

#[cfg(unix)]
#[test]
fn the_key_file_is_private_and_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("new").join("data");
    let _svc = open(config(&data));
    let meta = std::fs::metadata(data.join(KEY_FILE)).expect("key file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir_meta = std::fs::metadata(&data).expect("data dir");
    assert_eq!(dir_meta.permissions().mode() & 0o077, 0, "made private");
    let names: Vec<_> = std::fs::read_dir(&data)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, [KEY_FILE], "no temporary file left behind");
}

#[test]
fn services_starting_together_end_with_one_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, data) = (barrier.clone(), data.clone());
            std::thread::spawn(move || {
                barrier.wait();
                open(config(&data)).key_id().to_string()
            })
        })
        .collect();
    let kids: Vec<String> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    assert!(kids.iter().all(|k| *k == kids[0]), "{kids:?}");
    assert_eq!(open(config(&data)).key_id(), kids[0]);
    assert_eq!(std::fs::read_dir(&data).expect("read dir").count(), 1);
}

#[test]
fn a_corrupt_key_file_is_an_error_not_a_new_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(KEY_FILE), b"not a key").expect("write");
    match TokenService::open(config(dir.path())) {
        Err(TokenError::Keys(msg)) => assert!(msg.contains(KEY_FILE), "{msg}"),
        other => panic!("expected a key error, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(dir.path().join(KEY_FILE)).expect("read"),
        b"not a key"
    );
}

#[test]
fn jwks_is_an_rfc8037_okp_key_with_its_thumbprint_as_kid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = open(config(dir.path()));
    let doc = svc.jwks();
    let keys = doc["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["kid"], svc.key_id());
    let x = URL_SAFE_NO_PAD
        .decode(key["x"].as_str().expect("x"))
        .expect("base64url");
    assert_eq!(x.len(), 32);
    // The kid is the RFC 7638 thumbprint, as jsonwebtoken computes it too.
    let jwk: Jwk = serde_json::from_value(key.clone()).expect("a JWK");
    let thumbprint = jwk
        .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
        .expect("thumbprint");
    assert_eq!(thumbprint, svc.key_id());
    // And another service trusting this JWKS would accept lumen's tokens.
    assert!(external_key(&jwk).is_some());
}

#[test]
fn config_debug_hides_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(dir.path());
    c.hs256_secret = Some("hunter2-hunter2-hunter2-hunter2-x".to_string());
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!format!("{:?}", open(c)).contains("hunter2"));
}

#[tokio::test]
async fn leeway_and_aud_lists_are_honoured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(dir.path());
    c.leeway = Duration::from_secs(2 * HOUR);
    let svc = open(c);
    let now = now();
    let late = claims(|c| {
        c.insert("exp".into(), json!(now - HOUR));
    });
    let early = claims(|c| {
        c.insert("nbf".into(), json!(now + HOUR));
    });
    let listed = claims(|c| {
        c.insert("aud".into(), json!(["someone", "lumen"]));
    });
    for c in [late, early, listed] {
        svc.verify(&svc.sign(&c).expect("sign"))
            .await
            .expect("accepted");
    }
}

// ---- attacks on lumen's own tokens ----

#[tokio::test]
async fn alg_none_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = open(config(dir.path()));
    for alg in ["none", "None", "NONE", "HS512", "PS256", "ES384", ""] {
        let token = forge(&json!({"alg": alg, "typ": "JWT"}), &claims(|_| {}), "");
        assert_eq!(
            refused(svc.verify(&token).await),
            "unsupported algorithm",
            "{alg}"
        );
    }
    let token = forge(&json!({"typ": "JWT"}), &claims(|_| {}), "");
    assert_eq!(refused(svc.verify(&token).await), "malformed token");
}

/// HS256 "signed" with lumen's public key as the HMAC secret: the classic
/// key confusion, which works against a verifier that lets the token pick
/// the algorithm for a key.
fn confused_token(svc: &TokenService) -> String {
    let x = svc.jwks()["keys"][0]["x"].as_str().expect("x").to_string();
    let public = URL_SAFE_NO_PAD.decode(&x).expect("x");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(svc.key_id().to_string());
    let mut tokens = Vec::new();
    for secret in [public.as_slice(), x.as_bytes()] {
        let key = EncodingKey::from_secret(secret).expect("secret");
        tokens.push(jsonwebtoken::encode(&header, &claims(|_| {}), &key).expect("sign"));
    }
    tokens.join(" ")
}

#[tokio::test]
async fn key_confusion_without_an_hs256_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = open(config(dir.path()));
    for token in confused_token(&svc).split(' ') {
        assert_eq!(refused(svc.verify(token).await), "unsupported algorithm");
    }
}

#[tokio::test]
async fn key_confusion_with_an_hs256_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = "0123456789abcdef0123456789abcdef";
    let mut c = config(dir.path());
    c.hs256_secret = Some(secret.to_string());
    let svc = open(c);
    for token in confused_token(&svc).split(' ') {
        assert_eq!(refused(svc.verify(token).await), "bad signature");
    }
    // While a token made with the secret itself is accepted.
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("secret");
    let token =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(|_| {}), &key).expect("sign");
    let verified = svc.verify(&token).await.expect("HS256 with the secret");
    assert_eq!(verified.subject, "alice");
    // HS384 with the same secret is not on the allow-list.
    let token =
        jsonwebtoken::encode(&Header::new(Algorithm::HS384), &claims(|_| {}), &key).expect("sign");
    assert_eq!(refused(svc.verify(&token).await), "unsupported algorithm");
}

#[tokio::test]
async fn expired_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = open(config(dir.path()));
    let now = now();
    let token = svc
        .sign(&claims(|c| {
            c.insert("exp".into(), json!(now - HOUR));
            c.insert("nbf".into(), json!(now - 2 * HOUR));
        }))
        .expect("sign");
    assert_eq!(refused(svc.verify(&token).await), "token expired");
}

#[tokio::test]
async fn not_yet_valid_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = open(config(dir.path()));
    let now = now();
    let token = svc
        .sign(&claims(|c| {
            c.insert("nbf".into(), json!(now + HOUR));
            c.insert("exp".into(), json!(now + 2 * HOUR));
        }))
        .expect("sign");
    assert_eq!(refused(svc.verify(&token).await), "token not yet valid");
}

#[tokio::test]
async fn wrong_audience_and_issuer_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = open(config(dir.path()));
    let cases = [
        ("aud", json!("other"), "wrong audience"),
        ("aud", json!(["other", "more"]), "wrong audience"),
        // jsonwebtoken counts an `aud` of the wrong type as missing.
        ("aud", json!(7), "missing required claim"),
        ("iss", json!("Lumen"), "unknown issuer"),
        ("iss", json!("lumen "), "unknown issuer"),
        ("iss", json!(["lumen"]), "malformed token"),
        ("scope", json!("subscribe:foo root"), "invalid scope"),
        ("sub", json!(42), "malformed token"),
        ("exp", json!("tomorrow"), "malformed token"),
    ];
    for (claim, value, reason) in cases {
        let c = claims(|c| {
            c.insert(claim.into(), value.clone());
        });
        let token = svc.sign(&c).expect("sign");
        assert_eq!(
            refused(svc.verify(&token).await),
            reason,
            "{claim}: {value}"
        );
    }
}

#[tokio::test]
async fn missing_claims_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = open(config(dir.path()));
    for claim in ["iss", "aud", "exp", "sub"] {
        let c = claims(|c| {
            c.remove(claim);
        });
        let token = svc.sign(&c).expect("sign");
        assert_eq!(
            refused(svc.verify(&token).await),
            "missing required claim",
            "{claim}"
        );
    }
    // Optional ones: no nbf, iat, jti or scope.
    let c = claims(|c| {
        for claim in ["nbf", "iat", "jti", "scope"] {
            c.remove(claim);
        }
    });
    let verified = svc.verify(&svc.sign(&c).expect("sign")).await.expect("ok");
    assert_eq!(verified.id, None);
    assert!(verified.scopes.is_empty());
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = open(config(dir.path()));
    let token = svc
        .mint("alice", &scopes("subscribe:foo"), Duration::from_secs(HOUR))
        .expect("mint");
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    payload["scope"] = json!("admin");
    let tampered = format!("{}.{}.{}", parts[0], b64(payload.to_string()), parts[2]);
    assert_eq!(refused(svc.verify(&tampered).await), "bad signature");

    // The signature of another token.
    let other = svc
        .mint("alice", &scopes("admin"), Duration::from_secs(HOUR))
        .expect("mint");
    let other_sig = other.rsplit('.').next().expect("signature");
    let swapped = format!("{}.{}.{other_sig}", parts[0], parts[1]);
    assert_eq!(refused(svc.verify(&swapped).await), "bad signature");
}

#[tokio::test]
async fn another_key_under_lumens_kid_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = open(config(dir.path()));
    let attacker = Signer::ed25519("x");
    let token = attacker.sign(Some(svc.key_id()), &claims(|_| {}));
    assert_eq!(refused(svc.verify(&token).await), "bad signature");
    let token = attacker.sign(None, &claims(|_| {}));
    assert_eq!(refused(svc.verify(&token).await), "bad signature");
    let token = attacker.sign(Some("another-kid"), &claims(|_| {}));
    assert_eq!(refused(svc.verify(&token).await), "unknown signing key");
}

#[tokio::test]
async fn a_token_of_an_unknown_issuer_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = open(config(dir.path()));
    let stranger = Signer::ed25519("s1");
    let token = stranger.sign(Some("s1"), &ext_claims());
    assert_eq!(refused(svc.verify(&token).await), "unknown issuer");
    // Even signed with lumen's own key: lumen does not mint for others.
    let token = svc.sign(&ext_claims()).expect("sign");
    assert_eq!(refused(svc.verify(&token).await), "unknown issuer");
}

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = open(config(dir.path()));
    let valid = svc
        .mint("alice", &Scopes::default(), Duration::from_secs(HOUR))
        .expect("mint");
    let long = format!("{valid}{}", "A".repeat(MAX_TOKEN_LEN));
    let cases = [
        String::new(),
        "abc".to_string(),
        "a.b".to_string(),
        format!("{valid}.x"),
        "!!.??.##".to_string(),
        format!("{}.e30.", b64("not json")),
        long,
    ];
    for token in &cases {
        assert_eq!(
            refused(svc.verify(token).await),
            "malformed token",
            "{token:.40}"
        );
    }
}

// ---- external issuers ----

fn external(jwks: JwksSource, audience: Option<&str>) -> ExternalIssuer {
    ExternalIssuer {
        issuer: EXT_ISSUER.to_string(),
        audience: audience.map(str::to_string),
        jwks,
    }
}

#[tokio::test]
async fn external_issuer_from_a_jwks_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ed, ec, rsa) = (
        Signer::ed25519("ed"),
        Signer::p256("ec"),
        Signer::rsa("rsa"),
    );
    let secret = b"a shared secret that must never work";
    let ignored = [
        json!({"kty": "oct", "k": b64(secret), "kid": "hmac", "alg": "HS256"}),
        json!({"kty": "EC", "crv": "P-384", "x": b64([1; 48]), "y": b64([2; 48]), "kid": "p384"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64([3; 32]), "kid": "enc", "use": "enc"}),
        json!({"kty": "RSA", "n": b64([5; 128]), "e": "AQAB", "kid": "short"}),
        json!({"kty": "OKP", "crv": "Ed25519", "kid": "no-x"}),
    ];
    let mut keys = vec![ed.jwk.clone(), ec.jwk.clone(), rsa.jwk.clone()];
    keys.extend(ignored);
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks_of(&keys)).expect("write");
    let mut c = config(&dir.path().join("data"));
    c.external = vec![external(JwksSource::File(path), None)];
    let svc = open(c);

    for (signer, kid) in [(&ed, "ed"), (&ec, "ec"), (&rsa, "rsa")] {
        let token = signer.sign(Some(kid), &ext_claims());
        let verified = svc.verify(&token).await.expect(kid);
        assert_eq!(verified.issuer, EXT_ISSUER);
        assert_eq!(verified.subject, "viewer-7");
        assert!(verified.scopes.allows(Action::Subscribe, "foo"));
        // Keys of one kind: a token without a kid finds the only one.
        let token = signer.sign(None, &ext_claims());
        svc.verify(&token).await.expect("without a kid");
    }

    // The key decides the algorithm: an ES256 token under the Ed25519 kid.
    let token = ec.sign(Some("ed"), &ext_claims());
    assert_eq!(refused(svc.verify(&token).await), "unsupported algorithm");
    // HMAC with the secret published as an `oct` key.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hmac".to_string());
    let key = EncodingKey::from_secret(secret).expect("secret");
    let token = jsonwebtoken::encode(&header, &ext_claims(), &key).expect("sign");
    assert_eq!(refused(svc.verify(&token).await), "unsupported algorithm");
    // A key the JWKS does not have, and keys it skipped.
    for kid in ["nope", "hmac", "p384", "enc", "short"] {
        let token = ed.sign(Some(kid), &ext_claims());
        assert_eq!(
            refused(svc.verify(&token).await),
            "unknown signing key",
            "{kid}"
        );
    }
    // Their key under lumen's issuer, and lumen's key under theirs.
    let token = ed.sign(Some("ed"), &claims(|_| {}));
    assert_eq!(refused(svc.verify(&token).await), "unknown signing key");
    let token = svc.sign(&ext_claims()).expect("sign");
    assert_eq!(refused(svc.verify(&token).await), "unknown signing key");
    // Expired and wrong audience are checked for them too.
    let expired = ext_claims();
    let mut expired = expired.as_object().expect("object").clone();
    expired.insert("exp".into(), json!(now() - HOUR));
    let token = ed.sign(Some("ed"), &Value::Object(expired));
    assert_eq!(refused(svc.verify(&token).await), "token expired");
}

#[tokio::test]
async fn external_issuer_with_its_own_audience() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ed = Signer::ed25519("ed");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks_of(std::slice::from_ref(&ed.jwk))).expect("write");
    let mut c = config(&dir.path().join("data"));
    c.external = vec![external(JwksSource::File(path), Some("viewers"))];
    let svc = open(c);
    let token = ed.sign(Some("ed"), &ext_claims());
    assert_eq!(refused(svc.verify(&token).await), "wrong audience");
    let mut for_viewers = ext_claims();
    for_viewers["aud"] = json!("viewers");
    let token = ed.sign(Some("ed"), &for_viewers);
    svc.verify(&token).await.expect("its audience");
}

#[test]
fn bad_external_configs_are_refused_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, jwks_of(&[Signer::ed25519("k").jwk])).expect("write");
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).expect("write");
    let cases = [
        external(
            JwksSource::Url("https://site.example/jwks.json".into()),
            None,
        ),
        external(JwksSource::Url("ftp://site.example/jwks.json".into()), None),
        external(JwksSource::Url("http://user:pw@site.example/".into()), None),
        external(JwksSource::Url("not a url".into()), None),
        external(JwksSource::File(dir.path().join("missing.json")), None),
        external(JwksSource::File(empty), None),
        ExternalIssuer {
            issuer: "lumen".into(),
            ..external(JwksSource::File(jwks.clone()), None)
        },
    ];
    for ext in cases {
        let mut c = config(&dir.path().join("data"));
        c.external = vec![ext.clone()];
        assert!(
            matches!(TokenService::open(c), Err(TokenError::Keys(_))),
            "{ext:?}"
        );
    }
    let mut c = config(&dir.path().join("data"));
    c.external = vec![
        external(JwksSource::File(jwks.clone()), None),
        external(JwksSource::File(jwks), None),
    ];
    assert!(matches!(TokenService::open(c), Err(TokenError::Keys(_))));
}

/// A JWKS over HTTP/1.1 on loopback, counting the requests it answers.
struct JwksServer {
    url: String,
    body: Arc<Mutex<String>>,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(body: String) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("addr")
        );
        let body = Arc::new(Mutex::new(body));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (b, r) = (body.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                r.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&request).into_owned());
                let body = b.lock().expect("lock").clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        JwksServer {
            url,
            body,
            requests,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.requests.lock().expect("lock").len()
    }

    fn serve(&self, body: String) {
        *self.body.lock().expect("lock") = body;
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn external_issuer_from_a_jwks_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (
        Signer::p256("a"),
        Signer::ed25519("b"),
        Signer::ed25519("c"),
    );
    let server = JwksServer::start(jwks_of(std::slice::from_ref(&a.jwk))).await;
    let mut cfg = config(dir.path());
    cfg.external = vec![external(JwksSource::Url(server.url.clone()), None)];
    let svc = open(cfg);
    assert_eq!(server.hits(), 0, "fetched on first use, not at open");

    let token_a = a.sign(Some("a"), &ext_claims());
    assert_eq!(svc.verify(&token_a).await.expect("a").subject, "viewer-7");
    assert_eq!(server.hits(), 1);
    let request = server.requests.lock().expect("lock")[0].clone();
    assert!(
        request.starts_with("GET /.well-known/jwks.json HTTP/1.1\r\n"),
        "{request}"
    );
    let host = server.url["http://".len()..]
        .split('/')
        .next()
        .expect("host");
    assert!(
        request
            .to_ascii_lowercase()
            .contains(&format!("host: {host}\r\n")),
        "{request}"
    );

    svc.verify(&token_a).await.expect("a, cached");
    assert_eq!(server.hits(), 1, "served from the cache");

    // The issuer adds key b. Right after a load, an unknown kid does not
    // load again (a flood of made-up kids costs one load a minute)...
    server.serve(jwks_of(&[a.jwk.clone(), b.jwk.clone()]));
    let token_b = b.sign(Some("b"), &ext_claims());
    assert_eq!(refused(svc.verify(&token_b).await), "unknown signing key");
    assert_eq!(server.hits(), 1);
    // ...but once that minute is over it does, and finds b.
    svc.forget_jwks_loads().await;
    assert_eq!(svc.verify(&token_b).await.expect("b").subject, "viewer-7");
    assert_eq!(server.hits(), 2);
    svc.verify(&token_a).await.expect("a still there");

    let token_c = c.sign(Some("c"), &ext_claims());
    assert_eq!(refused(svc.verify(&token_c).await), "unknown signing key");
    assert_eq!(refused(svc.verify(&token_c).await), "unknown signing key");
    assert_eq!(server.hits(), 2);

    // The issuer withdraws a; after the next load, a's tokens stop working.
    server.serve(jwks_of(std::slice::from_ref(&b.jwk)));
    svc.forget_jwks_loads().await;
    assert_eq!(refused(svc.verify(&token_c).await), "unknown signing key");
    assert_eq!(server.hits(), 3);
    assert_eq!(refused(svc.verify(&token_a).await), "unknown signing key");
    svc.verify(&token_b).await.expect("b");

    // A broken answer keeps the keys loaded before.
    server.serve("<html>oops</html>".to_string());
    svc.forget_jwks_loads().await;
    assert_eq!(refused(svc.verify(&token_c).await), "unknown signing key");
    assert_eq!(server.hits(), 4);
    svc.verify(&token_b).await.expect("b, kept");
}

#[tokio::test]
async fn an_unreachable_jwks_url_is_a_key_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port that was free a moment ago: connecting is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    drop(listener);
    let mut cfg = config(dir.path());
    cfg.external = vec![external(JwksSource::Url(url), None)];
    let svc = open(cfg);
    let token = Signer::ed25519("k").sign(Some("k"), &ext_claims());
    for _ in 0..2 {
        match svc.verify(&token).await {
            Err(TokenError::Keys(msg)) => {
                assert!(!msg.contains("127.0.0.1"), "no internals: {msg}");
            }
            other => panic!("expected a key error, got {other:?}"),
        }
    }
}

#[test]
fn verify_can_run_on_any_task() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = open(config(dir.path()));
    send_sync(&svc);
    send(svc.verify("x"));
}
