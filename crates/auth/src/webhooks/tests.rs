//! Webhooks: the Standard Webhooks signature against the spec's example,
//! the grammar of URLs and secrets, and the queue's rules on SQLite and on
//! a real PostgreSQL (endpoints, emitting, the claim, the backoff
//! schedule); the deliverer against a receiver is in `delivery`.

use base64::Engine;

use super::send::Failure;
use super::*;
use crate::testing::TempPostgres;
use crate::{AuthConfig, Role, Visibility};

// ---- the signature ----

#[test]
fn the_signature_is_the_spec_example() {
    // The example the Standard Webhooks libraries and Svix's docs publish.
    // (Its signature is `…/tmIKtSyZlE3uFJELVlNIOLJ1OE=`; a copy of it that
    // ends `…/tRIJxE0Kgy2bNeBEtI1/C3E1+Q=` circulates and is wrong.)
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    let body = r#"{"test": 2432232314}"#;
    let want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    assert_eq!(sign(secret, id, 1614265330, body).unwrap(), want);
    // The vector of the spec repository's Rust library (libraries/rust).
    assert_eq!(
        sign(
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            r#"{"email":"test@example.com","username":"test_user"}"#,
        )
        .unwrap(),
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    );
    assert!(verify(secret, id, 1614265330, body, want));
    // One of several signatures (a receiver during a secret rotation).
    assert!(verify(
        secret,
        id,
        1614265330,
        body,
        &format!("v1,bm9wZQ== {want}")
    ));
    // Anything changed fails.
    assert!(!verify(secret, id, 1614265331, body, want));
    assert!(!verify(secret, "msg_other", 1614265330, body, want));
    assert!(!verify(
        secret,
        id,
        1614265330,
        r#"{"test": 2432232315}"#,
        want
    ));
    assert!(!verify(&generate_secret(), id, 1614265330, body, want));
    assert!(!verify(secret, id, 1614265330, body, "v2,abc"));
}

#[test]
fn secrets_are_made_and_checked() {
    let s = generate_secret();
    let key = s.strip_prefix("whsec_").expect("prefix");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap()
            .len(),
        24
    );
    assert_ne!(s, generate_secret());
    sign::check_secret(&s).unwrap();
    sign::check_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    for bad in [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_",
        "whsec_c2hvcnQ=",
        "whsec_not base64!",
    ] {
        assert!(
            matches!(sign::check_secret(bad), Err(AuthError::Invalid(_))),
            "{bad}"
        );
    }
}

#[test]
fn endpoint_urls_follow_the_documented_grammar() {
    for ok in [
        "http://h",
        "http://hooks.example:8080/lumen?x=1&y=a%20b",
        "https://127.0.0.1:65535/",
        "http://h:0",
        "http://h:0999/",
        "http://h//a?b?c:@!$&'()*+,;=~",
    ] {
        send::check_url(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "",
        "HTTP://h/",
        "http://",
        "http:///p",
        "http://h:/",
        "http://h:65536/",
        "http://h:012345/",
        "http://h:08080/",
        "http://u@h/",
        "http://h?x",
        "http://h/#frag",
        "http://h/a b",
        "http://h/\"",
        "http://h_x/",
        "http://[::1]:8/p",
        "http://[::1/",
        "http://[]/",
        "http://a:b:c/",
        "ws://h/",
    ] {
        assert!(
            matches!(send::check_url(bad), Err(AuthError::Invalid(_))),
            "{bad}"
        );
    }
    let long = format!("http://h/{}", "a".repeat(2048));
    assert!(send::check_url(&long).is_err());
    // Every path byte the grammar takes makes a request target hyper takes.
    for b in
        (b'!'..=b'~').filter(|b| b.is_ascii_alphanumeric() || b"._~!$&'()*+,;=:@/?%-".contains(b))
    {
        let c = b as char;
        let target = format!("/a{c}b?c{c}d");
        assert!(hyper::Uri::try_from(target.as_str()).is_ok(), "{target}");
        send::check_url(&format!("http://h{target}")).unwrap();
    }
}

#[test]
fn secrets_follow_the_documented_grammar() {
    use base64::engine::general_purpose::STANDARD;
    // Canonical base64 of 24 to 64 bytes, and nothing else.
    for n in 0..=70usize {
        let key: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
        let secret = format!("whsec_{}", STANDARD.encode(&key));
        assert_eq!(
            sign::check_secret(&secret).is_ok(),
            (24..=64).contains(&n),
            "{n} bytes"
        );
    }
    // Stray bits in the last character, a missing pad.
    for bad in [
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAB==",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAAB=",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAA",
    ] {
        assert!(sign::check_secret(bad).is_err(), "{bad}");
    }
    sign::check_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAA==").unwrap();
    sign::check_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAAE=").unwrap();
}

#[test]
fn payloads_carry_type_time_and_data() {
    assert_eq!(sign::rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(sign::rfc3339(1_614_265_330_042), "2021-02-25T15:02:10.042Z");
    assert_eq!(sign::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(sign::rfc3339(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    let p = sign::payload(
        EventType::StreamStarted,
        1_614_265_330_000,
        &serde_json::json!({"stream": "cam"}),
    );
    assert_eq!(
        p,
        r#"{"type":"stream.started","timestamp":"2021-02-25T15:02:10.000Z","data":{"stream":"cam"}}"#
    );
}

#[test]
fn the_backoff_schedule_grows_then_gives_up() {
    let c = WebhookConfig::default();
    let delays: Vec<Option<u64>> = (1..=8)
        .map(|a| c.retry_delay(a).map(|d| d.as_secs()))
        .collect();
    assert_eq!(
        delays,
        [
            Some(5),
            Some(30),
            Some(120),
            Some(600),
            Some(3600),
            Some(4 * 3600),
            Some(12 * 3600),
            None
        ]
    );
    assert_eq!(c.retry_delay(0), None, "no attempt made, nothing to retry");
    // An attempt's outcome follows it.
    let ok = deliver::outcome(&c, 1, 7, Ok(204), 0.5);
    assert_eq!(
        (ok.status, ok.status_code, ok.error),
        (DeliveryStatus::Delivered, Some(204), None)
    );
    let again = deliver::outcome(&c, 2, 7, Err(Failure::Status(503)), 0.0);
    assert_eq!(again.status, DeliveryStatus::Pending);
    assert_eq!(again.next_attempt_at, 7 + 30_000);
    assert_eq!(again.status_code, Some(503));
    // Jitter lengthens the wait by up to its share.
    let late = deliver::outcome(&c, 2, 7, Err(Failure::Status(503)), 0.999_999);
    assert_eq!(late.next_attempt_at, 7 + 30_000 + 2_999);
    let done = deliver::outcome(&c, 8, 7, Err(Failure::Transport("refused".into())), 0.0);
    assert_eq!(done.status, DeliveryStatus::Failed);
    assert_eq!(
        (done.status_code, done.error.as_deref()),
        (None, Some("refused"))
    );
    // 410 Gone ends it at once.
    let gone = deliver::outcome(&c, 1, 7, Err(Failure::Status(410)), 0.0);
    assert_eq!(
        (gone.status, gone.status_code),
        (DeliveryStatus::Failed, Some(410))
    );
}

#[test]
fn event_names_round_trip() {
    for e in EventType::ALL {
        assert_eq!(e.as_str().parse::<EventType>().unwrap(), e);
        assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
    }
    assert!(matches!(
        "stream.paused".parse::<EventType>(),
        Err(AuthError::Invalid(_))
    ));
}

// ---- the store, on both databases ----

struct Backend {
    auth: Auth,
    _dir: tempfile::TempDir,
    _pg: Option<TempPostgres>,
}

async fn open(config: impl FnOnce(&mut AuthConfig), pg: Option<TempPostgres>) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let mut c = AuthConfig::new(dir.path());
    c.database_url = pg.as_ref().map(TempPostgres::url);
    config(&mut c);
    Backend {
        auth: Auth::open(c).await.unwrap(),
        _dir: dir,
        _pg: pg,
    }
}

/// Runs `scenario` on SQLite, then on PostgreSQL when it is installed.
macro_rules! on_both {
    ($name:ident, $scenario:ident) => {
        #[tokio::test]
        async fn $name() {
            let b = open(|_| {}, None).await;
            $scenario(&b.auth).await;
            if let Some(pg) = TempPostgres::start(stringify!($name)) {
                let b = open(|_| {}, Some(pg)).await;
                assert_eq!(b.auth.backend(), "postgres");
                $scenario(&b.auth).await;
            }
        }
    };
}

on_both!(
    endpoints_are_registered_checked_and_deleted,
    endpoint_scenario
);
on_both!(events_queue_per_subscribed_endpoint, emit_scenario);
on_both!(a_due_delivery_is_claimed_once, claim_scenario);
on_both!(failed_attempts_back_off_then_fail, backoff_scenario);
on_both!(revoking_a_key_emits_key_revoked, key_scenario);

async fn endpoint_scenario(auth: &Auth) {
    let hooks = auth.webhooks();
    for bad in [
        "ftp://example.com/",
        "example.com/hook",
        "http://",
        "http://user:pw@example.com/",
        "not a url",
    ] {
        let err = hooks.register(bad, &[], None, "").await;
        assert!(matches!(err, Err(AuthError::Invalid(_))), "{bad}: {err:?}");
    }
    let err = hooks
        .register("http://h/", &[], Some("whsec_short"), "")
        .await;
    assert!(matches!(err, Err(AuthError::Invalid(_))), "{err:?}");
    // Without a list: everything but the opt-in viewer events.
    let a = hooks
        .register("http://hooks.example:8080/lumen?x=1", &[], None, "ops")
        .await
        .unwrap();
    assert_eq!(
        a.endpoint.events,
        [
            EventType::StreamStarted,
            EventType::StreamEnded,
            EventType::KeyRevoked,
            EventType::RecordingReady
        ]
    );
    assert!(a.secret.starts_with("whsec_"));
    assert!(a.endpoint.enabled);
    assert!(hooks.wants(EventType::StreamStarted));
    assert!(!hooks.wants(EventType::ViewerJoined));
    // The caller's own secret; a named list, deduplicated.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let b = hooks
        .register(
            "https://localhost/hook",
            &[
                EventType::ViewerLeft,
                EventType::ViewerJoined,
                EventType::ViewerLeft,
            ],
            Some(secret),
            "",
        )
        .await
        .unwrap();
    assert_eq!(b.secret, secret);
    assert_eq!(
        b.endpoint.events,
        [EventType::ViewerJoined, EventType::ViewerLeft]
    );
    assert!(hooks.wants(EventType::ViewerJoined));
    // Listing shows no secret.
    let all = hooks.endpoints().await.unwrap();
    assert_eq!(all, [a.endpoint.clone(), b.endpoint.clone()]);
    assert!(!serde_json::to_string(&all).unwrap().contains("whsec_"));
    // Disabling takes its events out of what is wanted.
    let off = hooks.set_enabled(&b.endpoint.id, false).await.unwrap();
    assert!(!off.enabled);
    assert!(!hooks.wants(EventType::ViewerJoined));
    hooks.set_enabled(&b.endpoint.id, true).await.unwrap();
    assert!(hooks.wants(EventType::ViewerJoined));
    // Deleting.
    hooks.delete(&b.endpoint.id).await.unwrap();
    assert!(!hooks.wants(EventType::ViewerJoined));
    for err in [
        hooks.delete(&b.endpoint.id).await.map(|_| ()),
        hooks.endpoint(&b.endpoint.id).await.map(|_| ()),
        hooks.deliveries(&b.endpoint.id, 10).await.map(|_| ()),
        hooks.set_enabled("ep_nope", true).await.map(|_| ()),
    ] {
        assert!(matches!(err, Err(AuthError::NotFound(_))), "{err:?}");
    }
    assert_eq!(hooks.endpoints().await.unwrap(), [a.endpoint]);
}

async fn emit_scenario(auth: &Auth) {
    let hooks = auth.webhooks();
    let streams = hooks
        .register(
            "http://127.0.0.1:9/a",
            &[EventType::StreamStarted],
            None,
            "",
        )
        .await
        .unwrap();
    let keys = hooks
        .register("http://127.0.0.1:9/b", &[EventType::KeyRevoked], None, "")
        .await
        .unwrap();
    let both = hooks
        .register(
            "http://127.0.0.1:9/c",
            &[EventType::StreamStarted, EventType::KeyRevoked],
            None,
            "",
        )
        .await
        .unwrap();
    let data = serde_json::json!({"stream": "cam"});
    assert_eq!(
        hooks
            .emit(EventType::StreamStarted, data.clone())
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        hooks
            .emit(EventType::ViewerJoined, data.clone())
            .await
            .unwrap(),
        0
    );
    hooks.set_enabled(&both.endpoint.id, false).await.unwrap();
    assert_eq!(
        hooks
            .emit(EventType::StreamStarted, data.clone())
            .await
            .unwrap(),
        1
    );
    let log = hooks.deliveries(&streams.endpoint.id, 10).await.unwrap();
    assert_eq!(log.len(), 2);
    let d = &log[0];
    assert!(d.id.starts_with("msg_"), "{}", d.id);
    assert_eq!(d.endpoint_id, streams.endpoint.id);
    assert_eq!(d.event_type, "stream.started");
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.attempts, 0);
    assert!(d.next_attempt_at.is_some());
    assert_eq!(
        (d.last_status_code, &d.last_error, d.delivered_at),
        (None, &None, None)
    );
    assert_eq!(d.payload["type"], "stream.started");
    assert_eq!(d.payload["data"], data);
    assert!(
        d.payload["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_ne!(log[0].id, log[1].id);
    assert!(
        hooks
            .deliveries(&keys.endpoint.id, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        hooks.deliveries(&both.endpoint.id, 10).await.unwrap().len(),
        1
    );
    // The latest N, newest first.
    for _ in 0..3 {
        hooks
            .emit(EventType::StreamStarted, data.clone())
            .await
            .unwrap();
    }
    let latest = hooks.deliveries(&streams.endpoint.id, 2).await.unwrap();
    assert_eq!(latest.len(), 2);
    assert!(latest[0].created_at >= latest[1].created_at);
    // A disabled endpoint's pending deliveries wait; deleting drops them.
    let now = model::now_ms() + 1;
    let due = hooks.claim_due(now, 100).await.unwrap();
    assert!(due.iter().all(|(d, _)| !d.url.ends_with("/c")), "{due:?}");
    assert_eq!(due.len(), 5);
    hooks.delete(&streams.endpoint.id).await.unwrap();
    hooks.set_enabled(&both.endpoint.id, true).await.unwrap();
    let due = hooks.claim_due(now + 1_000_000, 100).await.unwrap();
    assert_eq!(due.len(), 1, "only /c's one is left: {due:?}");
}

async fn claim_scenario(auth: &Auth) {
    let hooks = auth.webhooks();
    let ep = hooks
        .register("http://127.0.0.1:9/", &[EventType::StreamEnded], None, "")
        .await
        .unwrap();
    for i in 0..6 {
        hooks
            .emit(EventType::StreamEnded, serde_json::json!({ "stream": i }))
            .await
            .unwrap();
    }
    let now = model::now_ms() + 1;
    // Not due before it was emitted.
    assert!(hooks.claim_due(now - 60_000, 10).await.unwrap().is_empty());
    // A second node on the same database: the two claim at the same moment
    // and every delivery goes to exactly one of them.
    let other = Auth::open(auth.config().clone()).await.unwrap();
    let other = other.webhooks();
    let (a, b) = tokio::join!(hooks.claim_due(now, 4), other.claim_due(now, 4));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut ids: Vec<&str> = a.iter().chain(&b).map(|(d, _)| d.id.as_str()).collect();
    let claimed = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), claimed, "a delivery was claimed twice");
    // Whatever the race left is claimed next; then nothing is due.
    let rest = hooks.claim_due(now, 10).await.unwrap();
    assert_eq!(claimed + rest.len(), 6);
    assert!(hooks.claim_due(now, 10).await.unwrap().is_empty());
    assert!(other.claim_due(now, 10).await.unwrap().is_empty());
    // A claim holds for the lease: after it, the delivery is due again (its
    // node died while sending), under the same id.
    let (due, until) = &a.first().or(b.first()).expect("a claim").clone();
    let again = hooks.claim_due(*until, 10).await.unwrap();
    assert_eq!(again.len(), 6);
    assert!(again.iter().any(|(d, _)| d.id == due.id));
    // The first claim's failure is not recorded over the new claim, but a
    // success is: the receiver has it.
    let fail = deliver::outcome(
        &auth.config().webhooks,
        1,
        now,
        Err(Failure::Status(500)),
        0.0,
    );
    assert!(
        !queue::record(hooks.pool(), &due.id, *until, &fail)
            .await
            .unwrap()
    );
    let ok = deliver::outcome(&auth.config().webhooks, 1, now, Ok(200), 0.0);
    assert!(
        queue::record(hooks.pool(), &due.id, *until, &ok)
            .await
            .unwrap()
    );
    let log = hooks.deliveries(&ep.endpoint.id, 10).await.unwrap();
    let d = log.iter().find(|d| d.id == due.id).expect("in the log");
    assert_eq!(d.status, DeliveryStatus::Delivered);
    assert_eq!(
        (d.attempts, d.last_status_code, d.next_attempt_at),
        (1, Some(200), None)
    );
    assert_eq!(d.delivered_at, Some(now));
    // Delivered is final.
    assert!(
        !queue::record(hooks.pool(), &due.id, *until, &ok)
            .await
            .unwrap()
    );
}

async fn backoff_scenario(auth: &Auth) {
    let hooks = auth.webhooks();
    let config = &auth.config().webhooks;
    let ep = hooks
        .register("http://127.0.0.1:9/", &[EventType::StreamStarted], None, "")
        .await
        .unwrap();
    hooks
        .emit(EventType::StreamStarted, serde_json::json!({}))
        .await
        .unwrap();
    let mut now = model::now_ms() + 1;
    let max = config.retry_delays.len() as u32 + 1;
    for attempt in 1..=max {
        let claimed = hooks.claim_due(now, 10).await.unwrap();
        assert_eq!(claimed.len(), 1, "attempt {attempt}");
        let (due, until) = &claimed[0];
        assert_eq!(due.attempts, attempt - 1);
        let result = deliver::outcome(config, attempt, now, Err(Failure::Status(503)), 0.0);
        assert!(
            queue::record(hooks.pool(), &due.id, *until, &result)
                .await
                .unwrap()
        );
        let d = hooks
            .deliveries(&ep.endpoint.id, 1)
            .await
            .unwrap()
            .remove(0);
        assert_eq!((d.attempts, d.last_status_code), (attempt, Some(503)));
        assert_eq!(d.last_error.as_deref(), Some("HTTP status 503"));
        if attempt < max {
            let delay = config.retry_delays[attempt as usize - 1].as_millis() as i64;
            assert_eq!(d.status, DeliveryStatus::Pending);
            assert_eq!(d.next_attempt_at, Some(now + delay));
            // Not due a moment before its time.
            assert!(
                hooks
                    .claim_due(now + delay - 1, 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
            now += delay;
        } else {
            assert_eq!(d.status, DeliveryStatus::Failed);
            assert_eq!(d.next_attempt_at, None);
        }
    }
    assert!(hooks.claim_due(i64::MAX / 2, 10).await.unwrap().is_empty());
    // Done deliveries older than the retention go; pending ones stay.
    hooks
        .emit(EventType::StreamStarted, serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(queue::prune(hooks.pool(), i64::MAX).await.unwrap(), 1);
    let log = hooks.deliveries(&ep.endpoint.id, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status, DeliveryStatus::Pending);
}

async fn key_scenario(auth: &Auth) {
    let hooks = auth.webhooks();
    let ep = hooks
        .register("http://127.0.0.1:9/", &[EventType::KeyRevoked], None, "")
        .await
        .unwrap();
    let owner = auth
        .create_user("kim", "kim's password", Role::Broadcaster)
        .await
        .unwrap();
    auth.create_stream(&owner, "show", Visibility::Public, "")
        .await
        .unwrap();
    let k = auth.create_key("show", "OBS").await.unwrap();
    let rotated = auth.rotate_key(&k.info.id).await.unwrap();
    let spare = auth.create_key("show", "spare").await.unwrap();
    auth.revoke_key(&spare.info.id).await.unwrap();
    // Deleting the stream ends its last live key.
    auth.delete_stream("show").await.unwrap();
    let mut log = hooks.deliveries(&ep.endpoint.id, 10).await.unwrap();
    log.reverse();
    let revoked: Vec<(&str, &str)> = log
        .iter()
        .map(|d| {
            assert_eq!(d.event_type, "key.revoked");
            assert_eq!(d.payload["data"]["stream"], "show");
            (
                d.payload["data"]["key_id"].as_str().unwrap_or_default(),
                d.payload["data"]["label"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let mut want = vec![
        (k.info.id.as_str(), "OBS"),
        (spare.info.id.as_str(), "spare"),
        (rotated.info.id.as_str(), "OBS"),
    ];
    let mut got = revoked.clone();
    // Same-millisecond rows have no order among themselves.
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

mod delivery;
