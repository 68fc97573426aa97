//! Every rule of the store and the policy, run on SQLite and on a real
//! PostgreSQL server (skipped loudly without one, failing under
//! `LUMEN_REQUIRE_ALL=1`).

use std::time::Duration;

use crate::testing::TempPostgres;
use crate::*;

struct Backend {
    auth: Auth,
    _dir: tempfile::TempDir,
    _pg: Option<TempPostgres>,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let auth = Auth::open(AuthConfig::new(dir.path())).await.unwrap();
    assert_eq!(auth.backend(), "sqlite");
    Backend {
        auth,
        _dir: dir,
        _pg: None,
    }
}

async fn postgres(test: &str) -> Option<Backend> {
    let pg = TempPostgres::start(test)?;
    let dir = tempfile::tempdir().unwrap();
    let mut config = AuthConfig::new(dir.path());
    config.database_url = Some(pg.url());
    let auth = Auth::open(config).await.unwrap();
    assert_eq!(auth.backend(), "postgres");
    Some(Backend {
        auth,
        _dir: dir,
        _pg: Some(pg),
    })
}

/// Runs `scenario` on SQLite, then on PostgreSQL when it is installed.
macro_rules! on_both {
    ($name:ident, $scenario:ident) => {
        #[tokio::test]
        async fn $name() {
            let b = sqlite().await;
            $scenario(&b.auth).await;
            if let Some(b) = postgres(stringify!($name)).await {
                $scenario(&b.auth).await;
            }
        }
    };
}

on_both!(first_admin_through_the_setup_code, setup_scenario);
on_both!(keys_publish_to_their_own_stream_only, key_scenario);
on_both!(private_streams_need_a_subscribe_grant, visibility_scenario);
on_both!(users_log_in_and_roles_rule, user_scenario);
on_both!(revocations_form_a_feed, revocation_scenario);
on_both!(tokens_carry_scopes, token_scenario);
on_both!(chat_is_stored_and_restored, chat_scenario);

async fn setup_scenario(auth: &Auth) {
    assert!(!auth.is_set_up().await.unwrap());
    let first = auth.setup_code().await.unwrap().expect("a code");
    let second = auth.setup_code().await.unwrap().expect("a code");
    // A new code replaces the old one.
    let err = auth.complete_setup(&first, "root", "long enough pw").await;
    assert!(matches!(err, Err(AuthError::Forbidden(_))), "{err:?}");
    // Bad passwords are refused before the code is spent.
    let err = auth.complete_setup(&second, "root", "short").await;
    assert!(matches!(err, Err(AuthError::Invalid(_))), "{err:?}");
    let admin = auth
        .complete_setup(&second, "root", "long enough pw")
        .await
        .unwrap();
    assert_eq!(admin.role, Role::Admin);
    assert!(auth.is_set_up().await.unwrap());
    assert_eq!(auth.setup_code().await.unwrap(), None);
    // The code works once.
    let err = auth
        .complete_setup(&second, "root2", "long enough pw")
        .await;
    assert!(matches!(err, Err(AuthError::Forbidden(_))), "{err:?}");
}

async fn key_scenario(auth: &Auth) {
    let alice = auth
        .create_user("alice", "alice's password", Role::Broadcaster)
        .await
        .unwrap();
    auth.create_stream(&alice, "show", Visibility::Public, "Alice live")
        .await
        .unwrap();
    auth.create_stream(&alice, "other", Visibility::Public, "")
        .await
        .unwrap();
    let err = auth
        .create_stream(&alice, "show", Visibility::Public, "")
        .await;
    assert!(matches!(err, Err(AuthError::Conflict(_))), "{err:?}");
    let k = auth.create_key("show", "OBS").await.unwrap();
    assert!(
        k.secret.starts_with("lk_") && k.secret.len() >= 3 + 32,
        "{}",
        k.secret
    );
    assert!(k.secret.starts_with(&k.info.prefix));
    let p = auth.principal(&k.secret).await.unwrap();
    let grant = auth.authorize(&p, Action::Publish, "show").await.unwrap();
    assert_eq!(
        grant.credentials,
        vec![format!("key:{}", k.info.id), format!("user:{}", alice.id)]
    );
    assert_eq!(grant.user_id.as_deref(), Some(alice.id.as_str()));
    // Its own stream only.
    let err = auth.authorize(&p, Action::Publish, "other").await;
    assert!(matches!(err, Err(AuthError::Forbidden(_))), "{err:?}");
    let err = auth.authorize(&p, Action::Publish, "nobodys").await;
    assert!(matches!(err, Err(AuthError::Forbidden(_))), "{err:?}");
    // Last use is recorded, the secret is not stored.
    let info = auth.key(&k.info.id).await.unwrap();
    assert!(info.last_used_at.is_some());
    // A wrong key, an unknown one.
    for bad in ["lk_0000", "lk_", &format!("{}x", k.secret)] {
        let err = auth.principal(bad).await;
        assert!(
            matches!(err, Err(AuthError::Unauthenticated(_))),
            "{bad}: {err:?}"
        );
    }
    // Rotation: the old secret stops, the new one works, same label.
    let new = auth.rotate_key(&k.info.id).await.unwrap();
    assert_eq!(new.info.label, "OBS");
    assert_ne!(new.info.id, k.info.id);
    assert!(matches!(
        auth.principal(&k.secret).await,
        Err(AuthError::Unauthenticated(_))
    ));
    let p = auth.principal(&new.secret).await.unwrap();
    auth.authorize(&p, Action::Publish, "show").await.unwrap();
    // Revocation.
    let revoked = auth.revoke_key(&new.info.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(matches!(
        auth.principal(&new.secret).await,
        Err(AuthError::Unauthenticated(_))
    ));
    assert!(matches!(
        auth.revoke_key(&new.info.id).await,
        Err(AuthError::Conflict(_))
    ));
    let keys = auth.keys("show").await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.revoked_at.is_some()));
    // Anonymous never publishes.
    let err = auth
        .authorize(&Principal::Anonymous, Action::Publish, "show")
        .await;
    assert!(matches!(err, Err(AuthError::Unauthenticated(_))), "{err:?}");
    // A viewer owns no streams; keys of an unknown stream cannot be made.
    let v = auth
        .create_user("vic", "vic's password", Role::Viewer)
        .await
        .unwrap();
    let err = auth.create_stream(&v, "vics", Visibility::Public, "").await;
    assert!(matches!(err, Err(AuthError::Forbidden(_))), "{err:?}");
    let err = auth.create_key("nope", "x").await;
    assert!(matches!(err, Err(AuthError::NotFound(_))), "{err:?}");
    // Deleting the stream ends its keys.
    let k = auth.create_key("other", "").await.unwrap();
    auth.delete_stream("other").await.unwrap();
    assert!(auth.principal(&k.secret).await.is_err());
}

async fn visibility_scenario(auth: &Auth) {
    let owner = auth
        .create_user("owner", "owner password", Role::Broadcaster)
        .await
        .unwrap();
    let other = auth
        .create_user("other", "other password", Role::Broadcaster)
        .await
        .unwrap();
    let moderator = auth
        .create_user("mod", "moderator password", Role::Moderator)
        .await
        .unwrap();
    for (name, vis) in [
        ("pub", Visibility::Public),
        ("unl", Visibility::Unlisted),
        ("priv", Visibility::Private),
    ] {
        auth.create_stream(&owner, name, vis, "").await.unwrap();
    }
    let anon = Principal::Anonymous;
    for s in ["pub", "unl", "no-record"] {
        // Allowed because the stream is not private: ended if it becomes so.
        assert_eq!(
            auth.authorize(&anon, Action::Subscribe, s).await.unwrap(),
            Grant {
                credentials: vec![format!("public:{s}")],
                user_id: None,
            }
        );
    }
    let err = auth.authorize(&anon, Action::Subscribe, "priv").await;
    assert!(matches!(err, Err(AuthError::Unauthenticated(_))), "{err:?}");
    let err = auth
        .authorize(&Principal::User(other.clone()), Action::Subscribe, "priv")
        .await;
    assert!(matches!(err, Err(AuthError::Forbidden(_))), "{err:?}");
    for u in [owner.clone(), moderator] {
        auth.authorize(&Principal::User(u), Action::Subscribe, "priv")
            .await
            .unwrap();
    }
    // A subscribe token for it, minted by the owner.
    let scopes = Scopes::parse("subscribe:priv").unwrap();
    let t = auth
        .mint(&owner.id, &scopes, Duration::from_secs(60))
        .unwrap();
    let p = auth.principal(&t).await.unwrap();
    let g = auth.authorize(&p, Action::Subscribe, "priv").await.unwrap();
    assert!(g.credentials.iter().any(|c| c.starts_with("jwt:")));
    // ... which does not publish, nor watch another private stream.
    let err = auth.authorize(&p, Action::Publish, "priv").await;
    assert!(matches!(err, Err(AuthError::Forbidden(_))), "{err:?}");
    auth.update_stream("pub", Some(Visibility::Private), None)
        .await
        .unwrap();
    let err = auth.authorize(&p, Action::Subscribe, "pub").await;
    assert!(matches!(err, Err(AuthError::Forbidden(_))), "{err:?}");
    // A stream key of the stream does not watch it when private.
    let k = auth.create_key("priv", "").await.unwrap();
    let kp = auth.principal(&k.secret).await.unwrap();
    let err = auth.authorize(&kp, Action::Subscribe, "priv").await;
    assert!(matches!(err, Err(AuthError::Forbidden(_))), "{err:?}");
    // Turning a stream private ends the sessions it allowed as public.
    let t0 = crate::model::now_ms();
    auth.update_stream("unl", Some(Visibility::Private), None)
        .await
        .unwrap();
    let feed = auth.revocations_since(t0).await.unwrap();
    assert!(feed.iter().any(|(c, _)| c == "public:unl"), "{feed:?}");
    // Listing.
    let mine = auth.streams_of(&owner.id).await.unwrap();
    let names: Vec<_> = mine.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["priv", "pub", "unl"]);
    assert_eq!(mine[0].owner_name, "owner");
    assert!(auth.streams_of(&other.id).await.unwrap().is_empty());
}

async fn user_scenario(auth: &Auth) {
    let admin = auth
        .create_user("boss", "boss password", Role::Admin)
        .await
        .unwrap();
    let bob = auth
        .create_user("bob", "bob's password", Role::Broadcaster)
        .await
        .unwrap();
    let err = auth
        .create_user("bob", "another password", Role::Viewer)
        .await;
    assert!(matches!(err, Err(AuthError::Conflict(_))), "{err:?}");
    for bad in ["", "x", ".dot", "sp ace", &"y".repeat(33)] {
        let err = auth.create_user(bad, "long enough", Role::Viewer).await;
        assert!(
            matches!(err, Err(AuthError::Invalid(_))),
            "{bad:?}: {err:?}"
        );
    }
    // Log in: the same answer for a wrong password and an unknown user.
    let wrong = auth.login("bob", "not bob's", None).await.unwrap_err();
    let unknown = auth.login("nobody", "not bob's", None).await.unwrap_err();
    assert_eq!(wrong.to_string(), unknown.to_string());
    let s = auth.login("bob", "bob's password", None).await.unwrap();
    assert_eq!(s.user, bob);
    let (u, csrf) = auth.web_session(&s.token).await.unwrap().unwrap();
    assert_eq!(u, bob);
    assert_eq!(csrf, s.csrf);
    assert!(auth.web_session("nonsense").await.unwrap().is_none());
    // Disabling ends web sessions and log ins.
    auth.set_disabled(&bob.id, true).await.unwrap();
    assert!(auth.web_session(&s.token).await.unwrap().is_none());
    assert!(auth.login("bob", "bob's password", None).await.is_err());
    auth.set_disabled(&bob.id, false).await.unwrap();
    let s = auth.login("bob", "bob's password", None).await.unwrap();
    auth.logout(&s.token).await.unwrap();
    assert!(auth.web_session(&s.token).await.unwrap().is_none());
    // Roles.
    let bob = auth.set_role(&bob.id, Role::Moderator).await.unwrap();
    assert_eq!(bob.role, Role::Moderator);
    // The last admin stays.
    let err = auth.set_role(&admin.id, Role::Viewer).await;
    assert!(matches!(err, Err(AuthError::Conflict(_))), "{err:?}");
    let err = auth.delete_user(&admin.id).await;
    assert!(matches!(err, Err(AuthError::Conflict(_))), "{err:?}");
    // Password change.
    auth.set_password(&bob.id, "a new password").await.unwrap();
    assert!(auth.login("bob", "bob's password", None).await.is_err());
    auth.login("bob", "a new password", None).await.unwrap();
    // Deleting a user deletes their streams and keys.
    let carol = auth
        .create_user("carol", "carol password", Role::Broadcaster)
        .await
        .unwrap();
    auth.create_stream(&carol, "carols", Visibility::Public, "")
        .await
        .unwrap();
    let k = auth.create_key("carols", "").await.unwrap();
    auth.delete_user(&carol.id).await.unwrap();
    assert!(auth.stream("carols").await.unwrap().is_none());
    assert!(auth.principal(&k.secret).await.is_err());
    let names: Vec<_> = auth
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["bob", "boss"]);
}

async fn revocation_scenario(auth: &Auth) {
    let t0 = crate::model::now_ms();
    let u = auth
        .create_user("dora", "dora's password", Role::Broadcaster)
        .await
        .unwrap();
    auth.create_stream(&u, "d", Visibility::Public, "")
        .await
        .unwrap();
    let k = auth.create_key("d", "").await.unwrap();
    auth.revoke_key(&k.info.id).await.unwrap();
    auth.revoke_token("some-jti").await.unwrap();
    auth.set_disabled(&u.id, true).await.unwrap();
    let feed: Vec<String> = auth
        .revocations_since(t0)
        .await
        .unwrap()
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    for want in [
        format!("key:{}", k.info.id),
        "jwt:some-jti".to_string(),
        format!("user:{}", u.id),
    ] {
        assert!(feed.contains(&want), "{want} not in {feed:?}");
    }
    let later = crate::model::now_ms() + 60_000;
    assert!(auth.revocations_since(later).await.unwrap().is_empty());
}

async fn token_scenario(auth: &Auth) {
    let scopes = Scopes::parse("publish:* subscribe:x").unwrap();
    let t = auth
        .mint("service", &scopes, Duration::from_secs(60))
        .unwrap();
    let p = auth.principal(&t).await.unwrap();
    let g = auth
        .authorize(&p, Action::Publish, "anything")
        .await
        .unwrap();
    let Principal::Token(v) = &p else {
        panic!("not a token: {p:?}");
    };
    let jti = v.id.clone().expect("a jti");
    assert_eq!(g.credentials, vec![format!("jwt:{jti}")]);
    auth.revoke_token(&jti).await.unwrap();
    let err = auth.principal(&t).await;
    assert!(matches!(err, Err(AuthError::Unauthenticated(_))), "{err:?}");
    // A disabled user's tokens stop.
    let u = auth
        .create_user("eve", "eve's password", Role::Broadcaster)
        .await
        .unwrap();
    let t = auth.mint(&u.id, &scopes, Duration::from_secs(60)).unwrap();
    auth.principal(&t).await.unwrap();
    auth.set_disabled(&u.id, true).await.unwrap();
    assert!(auth.principal(&t).await.is_err());
}

#[tokio::test]
async fn admin_password_creates_the_first_admin_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AuthConfig::new(dir.path());
    config.admin_password = Some("from the environment".to_string());
    let auth = Auth::open(config.clone()).await.unwrap();
    assert!(auth.is_set_up().await.unwrap());
    let s = auth
        .login("admin", "from the environment", None)
        .await
        .unwrap();
    assert_eq!(s.user.role, Role::Admin);
    auth.set_password(&s.user.id, "changed later")
        .await
        .unwrap();
    drop(auth);
    // A restart with the variable still set does not reset it.
    let auth = Auth::open(config).await.unwrap();
    auth.login("admin", "changed later", None).await.unwrap();
}

#[tokio::test]
async fn repeated_failed_log_ins_are_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let auth = Auth::open(AuthConfig::new(dir.path())).await.unwrap();
    auth.create_user("fay", "fay's password", Role::Viewer)
        .await
        .unwrap();
    let ip = Some("192.0.2.7".parse().unwrap());
    let mut throttled = None;
    for _ in 0..10 {
        match auth.login("fay", "guess", ip).await {
            Err(AuthError::Throttled { retry_after }) => {
                throttled = Some(retry_after);
                break;
            }
            Err(AuthError::Unauthenticated(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(throttled.is_some_and(|s| s >= 1), "never throttled");
    // Even the right password waits now.
    assert!(matches!(
        auth.login("fay", "fay's password", ip).await,
        Err(AuthError::Throttled { .. })
    ));
}

#[tokio::test]
async fn a_key_made_in_another_process_is_honoured_at_once() {
    // Two Auth instances on one data dir stand for the server and the CLI.
    let dir = tempfile::tempdir().unwrap();
    let server = Auth::open(AuthConfig::new(dir.path())).await.unwrap();
    let cli = Auth::open(AuthConfig::new(dir.path())).await.unwrap();
    let u = cli
        .create_user("gus", "gus's password", Role::Broadcaster)
        .await
        .unwrap();
    cli.create_stream(&u, "g", Visibility::Public, "")
        .await
        .unwrap();
    let k = cli.create_key("g", "").await.unwrap();
    let p = server.principal(&k.secret).await.unwrap();
    server.authorize(&p, Action::Publish, "g").await.unwrap();
    let t = cli
        .mint(
            "cli",
            &Scopes::parse("publish:g").unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
    let p = server.principal(&t).await.unwrap();
    server.authorize(&p, Action::Publish, "g").await.unwrap();
}

fn chat_message(id: u64, user: &str, text: &str, ts: u64) -> lumen_chat::ChatMessage {
    lumen_chat::ChatMessage {
        id,
        user: user.to_string(),
        display_name: user.to_uppercase(),
        role: lumen_chat::Role::Viewer,
        text: text.to_string(),
        ts,
    }
}

fn chat_audit(ts: u64, action: lumen_chat::AuditAction, target: &str) -> lumen_chat::AuditEntry {
    lumen_chat::AuditEntry {
        ts,
        actor: "mod".to_string(),
        actor_role: lumen_chat::Role::Moderator,
        action,
        target: Some(target.to_string()),
        reason: Some("why".to_string()),
    }
}

async fn chat_scenario(auth: &Auth) {
    use lumen_chat::{AuditAction, Report};
    let chat = auth.chat();
    let now = crate::model::now_ms() as u64;
    assert_eq!(chat.next_message_id("talk").await.unwrap(), 1);
    assert!(chat.history("talk", 50).await.unwrap().is_empty());

    // Three messages; the second deleted in the same batch, the third
    // reported; a ban, a timeout, and a timeout lifted again.
    let messages: Vec<_> = (1..=3)
        .map(|i| chat_message(i, "ann", &format!("m{i}"), now + i))
        .collect();
    let audit = vec![
        chat_audit(now + 10, AuditAction::Delete { message: 2 }, "ann"),
        chat_audit(now + 11, AuditAction::Ban, "bob"),
        chat_audit(now + 12, AuditAction::Timeout { seconds: 60 }, "cid"),
        chat_audit(now + 13, AuditAction::Timeout { seconds: 60 }, "dan"),
        chat_audit(now + 14, AuditAction::Unban, "dan"),
    ];
    let reports = vec![Report {
        ts: now + 20,
        reporter: "eve".to_string(),
        message: messages[2].clone(),
        reason: Some("rude".to_string()),
    }];
    chat.store_batch("talk", &messages, &[], &audit, &reports)
        .await
        .unwrap();
    // Written twice, nothing changes but the logs; another stream is apart.
    chat.store_batch("talk", &messages, &[], &[], &[])
        .await
        .unwrap();
    chat.store_batch(
        "other",
        &[chat_message(7, "x", "elsewhere", now)],
        &[],
        &[],
        &[],
    )
    .await
    .unwrap();

    let texts: Vec<String> = chat
        .history("talk", 50)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["m1", "m3"]);
    let last = chat.history("talk", 1).await.unwrap();
    assert_eq!(last, vec![messages[2].clone()]);
    assert_eq!(chat.next_message_id("talk").await.unwrap(), 4);
    assert_eq!(chat.next_message_id("other").await.unwrap(), 8);

    let bans = chat.bans("talk").await.unwrap();
    assert_eq!(
        bans,
        vec![
            ("bob".to_string(), None),
            ("cid".to_string(), Some(now + 12 + 60_000))
        ]
    );
    // A timeout that has ended is not in force.
    chat.store_batch(
        "talk",
        &[],
        &[],
        &[chat_audit(
            now - 120_000,
            AuditAction::Timeout { seconds: 1 },
            "cid",
        )],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(chat.bans("talk").await.unwrap().len(), 1);

    let log = chat.audit("talk", 3).await.unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].action["kind"], "unban");
    assert_eq!(log[0].target.as_deref(), Some("dan"));
    assert_eq!(log[0].actor_role, "moderator");
    let all = chat.audit("talk", 100).await.unwrap();
    assert_eq!(all.len(), 6);
    let delete = all.iter().find(|a| a.action["kind"] == "delete").unwrap();
    assert_eq!(delete.action["message"], 2);
    assert!(chat.audit("other", 10).await.unwrap().is_empty());

    let reports = chat.reports("talk", false, 10).await.unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].reporter, "eve");
    assert_eq!(reports[0].message["text"], "m3");
    assert!(!reports[0].deleted);
    // Deleting the reported message shows in the report; a clear hides
    // everything sent until then.
    chat.store_batch(
        "talk",
        &[],
        &[],
        &[chat_audit(
            now + 30,
            AuditAction::Delete { message: 3 },
            "ann",
        )],
        &[],
    )
    .await
    .unwrap();
    assert!(chat.reports("talk", false, 10).await.unwrap()[0].deleted);

    // The moderation queue: open until resolved, once; per stream, over
    // every stream, or over an owner's streams.
    let open = chat.reports("talk", true, 10).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].stream, "talk");
    assert!(open[0].resolved_by.is_none());
    assert_eq!(chat.all_reports(None, true, 10).await.unwrap().len(), 1);
    let owner = auth
        .create_user("talk-owner", "owner's password", Role::Broadcaster)
        .await
        .unwrap();
    assert!(
        chat.all_reports(Some(&owner.id), true, 10)
            .await
            .unwrap()
            .is_empty()
    );
    auth.create_stream(&owner, "talk", Visibility::Public, "")
        .await
        .unwrap();
    assert_eq!(
        chat.all_reports(Some(&owner.id), true, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        !chat
            .resolve_report("other", &open[0].id, "mo")
            .await
            .unwrap()
    );
    assert!(
        chat.resolve_report("talk", &open[0].id, "mo")
            .await
            .unwrap()
    );
    assert!(
        !chat
            .resolve_report("talk", &open[0].id, "mo")
            .await
            .unwrap()
    );
    assert!(chat.reports("talk", true, 10).await.unwrap().is_empty());
    let all = chat.reports("talk", false, 10).await.unwrap();
    assert_eq!(all[0].resolved_by.as_deref(), Some("mo"));
    assert!(all[0].resolved_at.is_some());
    chat.store_batch(
        "talk",
        &[chat_message(4, "ann", "m4", now + 40)],
        &[],
        &[chat_audit(now + 41, AuditAction::Clear, "ann")],
        &[],
    )
    .await
    .unwrap();
    assert!(chat.history("talk", 50).await.unwrap().is_empty());
    assert_eq!(chat.next_message_id("talk").await.unwrap(), 5);

    // Replay: messages placed in a broadcast come back in broadcast time,
    // deleted ones never; a message sent while offline is in none.
    use crate::chat::Placement;
    let place = |message, broadcast: &str, media_ms| Placement {
        message,
        broadcast: broadcast.to_string(),
        media_ms,
    };
    let live: Vec<_> = (10..=13)
        .map(|i| chat_message(i, "ann", &format!("live{i}"), now + 100 + i))
        .collect();
    chat.store_batch(
        "talk",
        &live,
        &[
            place(10, "b1", 500),
            place(11, "b1", 900),
            place(12, "b1", 900),
            place(13, "b2", 5),
        ],
        &[chat_audit(
            now + 120,
            AuditAction::Delete { message: 11 },
            "ann",
        )],
        &[],
    )
    .await
    .unwrap();
    let replay = chat.replay("b1", 0, 100).await.unwrap();
    let got: Vec<(i64, &str)> = replay
        .iter()
        .map(|r| (r.media_ms, r.message["text"].as_str().unwrap()))
        .collect();
    assert_eq!(got, [(500, "live10"), (900, "live12")]);
    assert_eq!(chat.replay("b1", 501, 100).await.unwrap().len(), 1);
    assert_eq!(chat.replay("b1", 0, 1).await.unwrap().len(), 1);
    assert_eq!(
        chat.replay("b2", 0, 100).await.unwrap()[0].message["id"],
        13
    );
    assert!(chat.replay("nothing", 0, 100).await.unwrap().is_empty());

    // A busy second: more messages in one batch than one statement takes,
    // all stored in order with their places; a place given later for a
    // message stored by an earlier batch is kept too.
    let busy: Vec<_> = (100..350)
        .map(|i| chat_message(i, "ann", &format!("busy{i}"), now + 1000 + i))
        .collect();
    let places: Vec<_> = busy.iter().map(|m| place(m.id, "b3", m.id * 10)).collect();
    chat.store_batch("talk", &busy, &places, &[], &[])
        .await
        .unwrap();
    let late = chat_message(350, "ann", "late", now + 2000);
    chat.store_batch("talk", std::slice::from_ref(&late), &[], &[], &[])
        .await
        .unwrap();
    chat.store_batch("talk", &[], &[place(350, "b3", 1)], &[], &[])
        .await
        .unwrap();
    let replay = chat.replay("b3", 0, 1000).await.unwrap();
    assert_eq!(replay.len(), 251);
    assert_eq!(replay[0].message["text"], "late");
    assert_eq!(replay[1].media_ms, 1000);
    assert_eq!(replay[250].message["text"], "busy349");
    assert_eq!(chat.next_message_id("talk").await.unwrap(), 351);
    let history = chat.history("talk", 50).await.unwrap();
    assert_eq!(history.len(), 50);
    assert_eq!(history.last().unwrap().text, "late");
    assert_eq!(history[0].text, "busy301");
}

async fn recordings_scenario(auth: &Auth) {
    use crate::recordings::{Finished, FragmentRecord, RecordingState};
    let recs = auth.recordings();
    let a = recs.create("cam", Some("sess1")).await.unwrap();
    assert!(a.id.starts_with("rec_"));
    assert_eq!(a.state, RecordingState::Recording);
    assert_eq!(a.broadcast.as_deref(), Some("sess1"));
    recs.set_init(&a.id, "rec/a/init.mp4").await.unwrap();
    for seq in 0..3u64 {
        let f = FragmentRecord {
            seq,
            object: format!("rec/a/{seq}.m4s"),
            size: 1000 + seq,
            duration_ms: 2000,
            uploaded: false,
            index: format!("{{\"seq\":{seq}}}"),
        };
        recs.add_fragment(&a.id, &f).await.unwrap();
    }
    // Journalled twice: replaced, not doubled.
    let again = FragmentRecord {
        seq: 2,
        object: "rec/a/2.m4s".into(),
        size: 7,
        duration_ms: 1500,
        uploaded: false,
        index: "{}".into(),
    };
    recs.add_fragment(&a.id, &again).await.unwrap();
    recs.mark_uploaded(&a.id, 0).await.unwrap();
    let frags = recs.fragments(&a.id).await.unwrap();
    assert_eq!(frags.len(), 3);
    assert!(frags[0].uploaded && !frags[1].uploaded);
    assert_eq!(frags[2].size, 7);

    // A crash leaves it unfinished; finalising makes it ready.
    let b = recs.create("other", None).await.unwrap();
    let open: Vec<String> = recs
        .unfinished()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(open, [a.id.clone(), b.id.clone()]);
    recs.set_state(&a.id, RecordingState::Finalizing, None)
        .await
        .unwrap();
    let mid = recs.get(&a.id).await.unwrap().unwrap();
    assert_eq!(mid.state, RecordingState::Finalizing);
    assert!(mid.ended_at.is_some());
    recs.finish(
        &a.id,
        &Finished {
            duration_ms: 5500,
            size: 12345,
            codecs: "avc1.42e01f,opus".into(),
            width: 1280,
            height: 720,
            thumbnail_object: Some("rec/a/thumb.jpg".into()),
        },
    )
    .await
    .unwrap();
    let done = recs.get(&a.id).await.unwrap().unwrap();
    assert_eq!(done.state, RecordingState::Ready);
    assert_eq!((done.width, done.height, done.size), (1280, 720, 12345));
    assert_eq!(done.init_object.as_deref(), Some("rec/a/init.mp4"));
    recs.set_state(&b.id, RecordingState::Failed, Some("no keyframe"))
        .await
        .unwrap();
    assert!(recs.unfinished().await.unwrap().is_empty());

    assert_eq!(recs.list(None, None, 10).await.unwrap().len(), 2);
    let cams = recs.list(Some("cam"), None, 10).await.unwrap();
    assert_eq!(cams.len(), 1);
    assert!(
        recs.list(Some("cam"), Some(cams[0].started_at), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let future = crate::model::now_ms() + 1000;
    assert_eq!(recs.older_than(future).await.unwrap().len(), 2);
    assert!(recs.older_than(0).await.unwrap().is_empty());

    assert!(recs.delete(&a.id).await.unwrap());
    assert!(!recs.delete(&a.id).await.unwrap());
    assert!(recs.fragments(&a.id).await.unwrap().is_empty());
    assert!(recs.get(&a.id).await.unwrap().is_none());
}

on_both!(
    recordings_are_journalled_finished_listed_and_deleted,
    recordings_scenario
);
