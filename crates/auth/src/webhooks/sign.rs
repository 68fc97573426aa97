//! The Standard Webhooks wire format: secrets (`whsec_` + base64), the
//! body (`{"type","timestamp","data"}`), and the signature: `v1,` +
//! base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")).

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::Rng;
use serde::Serialize;

use super::EventType;
use crate::{AuthError, Result};

const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: `whsec_` + base64 of 24 random bytes.
pub fn generate_secret() -> String {
    let mut key = [0u8; 24];
    rand::rng().fill(&mut key[..]);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The `webhook-signature` value of a message: `v1,` + base64 of its
/// HMAC-SHA256. `secret` is the `whsec_…` string; `timestamp` is the
/// `webhook-timestamp` (seconds since the epoch).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Result<String> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes(secret)?);
    let tag = hmac::sign(&key, signed_content(id, timestamp, body).as_bytes());
    Ok(format!("v1,{}", STANDARD.encode(tag.as_ref())))
}

/// Whether one of the space-separated signatures of a `webhook-signature`
/// header is a valid `v1` signature of the message (compared in constant
/// time). A receiver should also refuse timestamps far from its clock.
pub fn verify(secret: &str, id: &str, timestamp: i64, body: &str, header: &str) -> bool {
    let Ok(key) = key_bytes(secret) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let content = signed_content(id, timestamp, body);
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|tag| hmac::verify(&key, content.as_bytes(), &tag).is_ok())
}

/// A secret given by the caller: `whsec_` + base64 of 24 to 64 bytes (the
/// spec's bounds).
pub(super) fn check_secret(secret: &str) -> Result<()> {
    let invalid = || {
        AuthError::Invalid(
            "a webhook secret is `whsec_` followed by the base64 of 24 to 64 random bytes"
                .to_string(),
        )
    };
    if !secret.starts_with(SECRET_PREFIX) {
        return Err(invalid());
    }
    let key = key_bytes(secret).map_err(|_| invalid())?;
    if !(24..=64).contains(&key.len()) {
        return Err(invalid());
    }
    Ok(())
}

/// The body of an event emitted at `now` (ms).
pub(super) fn payload(event: EventType, now: i64, data: &serde_json::Value) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        r#type: &'static str,
        timestamp: String,
        data: &'a serde_json::Value,
    }
    let body = Body {
        r#type: event.as_str(),
        timestamp: rfc3339(now),
        data,
    };
    // Serialising a struct of strings and a `Value` cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}

/// Milliseconds since the epoch as RFC 3339 in UTC, with milliseconds.
pub(super) fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn signed_content(id: &str, timestamp: i64, body: &str) -> String {
    format!("{id}.{timestamp}.{body}")
}

/// The key of a `whsec_…` secret: the base64 after the prefix (a secret
/// without the prefix is taken whole, as the spec's libraries do).
fn key_bytes(secret: &str) -> Result<Vec<u8>> {
    let b64 = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD
        .decode(b64)
        .map_err(|_| AuthError::Invalid("the webhook secret is not valid base64".to_string()))
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
