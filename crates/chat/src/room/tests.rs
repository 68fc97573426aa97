//! Room scenarios on a fake clock: `now` is a plain number the tests advance.

use serde_json::{Value, json};

use super::*;
use crate::filter::FilterMode;

const T0: u64 = 1_700_000_000_000;

fn frame(text: &str) -> String {
    json!({ "type": "send", "text": text }).to_string()
}

fn parsed(frame: &str) -> Value {
    serde_json::from_str(frame).unwrap()
}

/// The frames of `outputs` that reach `member`, parsed.
fn seen_by(outputs: &[Output], member: MemberId) -> Vec<Value> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send { to, frame } if *to == Target::All || *to == Target::One(member) => {
                Some(parsed(frame))
            }
            _ => None,
        })
        .collect()
}

/// Asserts `outputs` is exactly one error to `member` and returns its code
/// and retry_after.
fn error_to(outputs: &[Output], member: MemberId) -> (String, Option<u64>) {
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    let Output::Send { to, frame } = &outputs[0] else {
        panic!("{outputs:?}")
    };
    assert_eq!(*to, Target::One(member), "an error goes to its sender only");
    let frame = parsed(frame);
    assert_eq!(frame["type"], "error", "{frame}");
    (
        frame["code"].as_str().unwrap().to_owned(),
        frame["retry_after"].as_u64(),
    )
}

/// Asserts `outputs` is one message to everyone and returns it.
fn broadcast(outputs: &[Output]) -> Value {
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    let Output::Send {
        to: Target::All,
        frame,
    } = &outputs[0]
    else {
        panic!("{outputs:?}")
    };
    parsed(frame)
}

fn viewer(user: &str) -> MemberInfo {
    MemberInfo::registered(user, &user.to_uppercase(), Role::Viewer)
}

fn join(room: &mut Room, info: MemberInfo) -> MemberId {
    room.join(info, T0).0
}

#[test]
fn viewers_and_broadcaster_exchange_messages() {
    let mut room = Room::new(RoomConfig::default());
    let (ann, joined) = room.join(viewer("ann"), T0);
    assert_eq!(
        seen_by(&joined, ann),
        vec![
            json!({"type": "history", "messages": []}),
            json!({"type": "state", "slow_mode": 0, "registered_only": false}),
        ]
    );
    let bob = join(&mut room, viewer("bob"));
    let cam = join(
        &mut room,
        MemberInfo::registered("cam", "Cam", Role::Broadcaster),
    );

    let out = room.handle_text(ann, &frame("hi all"), T0 + 5);
    assert_eq!(
        broadcast(&out),
        json!({"type": "message", "id": 1, "user": "ann", "display_name": "ANN", "role": "viewer", "text": "hi all", "ts": T0 + 5})
    );
    let out = room.handle_text(cam, &frame("welcome"), T0 + 6);
    let msg = broadcast(&out);
    assert_eq!(
        (msg["id"].as_u64(), msg["role"].as_str()),
        (Some(2), Some("broadcaster"))
    );
    let out = room.handle_text(bob, &frame("hey"), T0 + 7);
    assert_eq!(broadcast(&out)["id"], 3);

    let persisted: Vec<u64> = room.take_persist().iter().map(|m| m.id).collect();
    assert_eq!(persisted, [1, 2, 3]);
    assert!(room.take_persist().is_empty());
    assert_eq!(room.member_count(), 3);
    room.leave(bob);
    assert_eq!(room.member_count(), 2);
    assert!(room.handle_text(bob, &frame("ghost"), T0 + 8).is_empty());
}

#[test]
fn late_joiner_gets_history_without_deleted_messages() {
    let mut room = Room::new(RoomConfig::default());
    let ann = join(&mut room, viewer("ann"));
    let bob = join(&mut room, viewer("bob"));
    let mo = join(
        &mut room,
        MemberInfo::registered("mo", "Mo", Role::Moderator),
    );
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        room.handle_text(ann, &frame(text), T0 + i as u64);
    }
    // A sender deletes its own message; someone else's is refused.
    let out = room.handle_text(ann, r#"{"type":"delete","id":2}"#, T0 + 10);
    assert_eq!(broadcast(&out), json!({"type": "deleted", "id": 2}));
    let out = room.handle_text(bob, r#"{"type":"delete","id":1}"#, T0 + 11);
    assert_eq!(error_to(&out, bob).0, "forbidden");
    let out = room.handle_text(bob, r#"{"type":"delete","id":99}"#, T0 + 11);
    assert_eq!(error_to(&out, bob).0, "not_found");
    // A moderator deletes anyone's.
    let out = room.handle_text(mo, r#"{"type":"delete","id":3}"#, T0 + 12);
    assert_eq!(broadcast(&out), json!({"type": "deleted", "id": 3}));

    let (late, joined) = room.join(viewer("late"), T0 + 20);
    let history = &seen_by(&joined, late)[0];
    let ids: Vec<u64> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1]);

    let audit = room.take_audit();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1].actor, "mo");
    assert_eq!(audit[1].action, AuditAction::Delete { message: 3 });
    assert_eq!(audit[1].target.as_deref(), Some("ann"));
}

#[test]
fn history_is_the_last_fifty_and_refills_after_deletion() {
    let mut room = Room::new(RoomConfig::default());
    let ann = join(&mut room, viewer("ann"));
    let mo = join(
        &mut room,
        MemberInfo::registered("mo", "Mo", Role::Moderator),
    );
    for i in 0..60u64 {
        room.handle_text(mo, &frame(&format!("m{i}")), T0 + i);
    }
    room.handle_text(mo, r#"{"type":"delete","id":60}"#, T0 + 100);
    let ids: Vec<u64> = room.history().map(|m| m.id).collect();
    assert_eq!(ids.len(), 50);
    assert_eq!((ids[0], ids[49]), (10, 59));
    // Clear empties it for everyone.
    let out = room.handle_text(mo, r#"{"type":"clear"}"#, T0 + 101);
    assert_eq!(seen_by(&out, ann), vec![json!({"type": "cleared"})]);
    assert_eq!(room.history().count(), 0);
    assert_eq!(
        room.take_audit().last().map(|a| a.action.clone()),
        Some(AuditAction::Clear)
    );
}

#[test]
fn the_history_frame_fits_the_frame_limit() {
    let mut room = Room::new(RoomConfig::default());
    let mo = join(
        &mut room,
        MemberInfo::registered("mo", "Mo", Role::Moderator),
    );
    // 50 messages of 500 emoji: about 100 KiB of history.
    let long = "\u{1F600}".repeat(500);
    for i in 0..50u64 {
        room.handle_text(mo, &frame(&long), T0 + i);
    }
    let (late, out) = room.join(viewer("late"), T0 + 100);
    let Output::Send { frame, .. } = &out[0] else {
        panic!("history first: {out:?}");
    };
    assert!(frame.len() <= MAX_FRAME_BYTES, "{} bytes", frame.len());
    let history = seen_by(&out, late).remove(0);
    let ids: Vec<u64> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["id"].as_u64())
        .collect();
    // The newest ones, in order, as many as fit.
    assert!(!ids.is_empty() && ids.len() < 50, "{ids:?}");
    assert_eq!(ids.last(), Some(&50));
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
}

#[test]
fn a_ban_refuses_every_session_of_the_user_until_unbanned() {
    let mut room = Room::new(RoomConfig::default());
    let troll = join(&mut room, viewer("troll"));
    let troll2 = join(&mut room, viewer("troll"));
    let bob = join(&mut room, viewer("bob"));
    let mo = join(
        &mut room,
        MemberInfo::registered("mo", "Mo", Role::Moderator),
    );

    let out = room.handle_text(mo, r#"{"type":"ban","user":"troll","reason":"spam"}"#, T0);
    assert_eq!(
        seen_by(&out, troll),
        vec![json!({"type": "notice", "text": "you have been banned: spam"})]
    );
    assert_eq!(seen_by(&out, troll2).len(), 1);
    assert!(seen_by(&out, bob).is_empty(), "bystanders are not told");
    assert_eq!(seen_by(&out, mo)[0]["type"], "notice");

    for member in [troll, troll2] {
        let out = room.handle_text(member, &frame("let me talk"), T0 + 1);
        assert_eq!(error_to(&out, member), ("banned".to_owned(), None));
    }
    assert_eq!(
        broadcast(&room.handle_text(bob, &frame("ok"), T0 + 2))["user"],
        "bob"
    );

    let audit = room.take_audit();
    assert_eq!(audit[0].action, AuditAction::Ban);
    assert_eq!(
        (audit[0].target.as_deref(), audit[0].reason.as_deref()),
        (Some("troll"), Some("spam"))
    );

    room.handle_text(mo, r#"{"type":"unban","user":"troll"}"#, T0 + 3);
    assert_eq!(
        broadcast(&room.handle_text(troll2, &frame("sorry"), T0 + 4))["user"],
        "troll"
    );
    let out = room.handle_text(mo, r#"{"type":"unban","user":"troll"}"#, T0 + 5);
    assert_eq!(error_to(&out, mo).0, "not_found");
}

#[test]
fn a_timeout_expires() {
    let mut room = Room::new(RoomConfig::default());
    let ann = join(&mut room, viewer("ann"));
    let mo = join(
        &mut room,
        MemberInfo::registered("mo", "Mo", Role::Moderator),
    );
    room.handle_text(mo, r#"{"type":"timeout","user":"ann","seconds":60}"#, T0);
    let out = room.handle_text(ann, &frame("hm"), T0 + 30_000);
    assert_eq!(error_to(&out, ann), ("timed_out".to_owned(), Some(30)));
    let out = room.handle_text(ann, &frame("hm"), T0 + 59_001);
    assert_eq!(error_to(&out, ann), ("timed_out".to_owned(), Some(1)));
    assert_eq!(
        broadcast(&room.handle_text(ann, &frame("back"), T0 + 60_000))["text"],
        "back"
    );
    assert_eq!(
        room.take_audit()[0].action,
        AuditAction::Timeout { seconds: 60 }
    );
}

#[test]
fn only_moderators_moderate_and_only_admins_sanction_moderators() {
    let mut room = Room::new(RoomConfig::default());
    let ann = join(&mut room, viewer("ann"));
    let mo = join(
        &mut room,
        MemberInfo::registered("mo", "Mo", Role::Moderator),
    );
    let cam = join(
        &mut room,
        MemberInfo::registered("cam", "Cam", Role::Broadcaster),
    );
    let root = join(
        &mut room,
        MemberInfo::registered("root", "Root", Role::Admin),
    );
    for command in [
        r#"{"type":"ban","user":"mo"}"#,
        r#"{"type":"clear"}"#,
        r#"{"type":"slow","seconds":5}"#,
        r#"{"type":"mode","registered_only":true}"#,
    ] {
        let out = room.handle_text(ann, command, T0);
        assert_eq!(error_to(&out, ann).0, "forbidden", "{command}");
    }
    let out = room.handle_text(mo, r#"{"type":"ban","user":"cam"}"#, T0);
    assert_eq!(error_to(&out, mo).0, "forbidden");
    let out = room.handle_text(mo, r#"{"type":"ban","user":"mo"}"#, T0);
    assert_eq!(error_to(&out, mo).0, "forbidden");
    // The broadcaster moderates its own room; an admin may sanction anyone.
    assert!(
        !room
            .handle_text(cam, r#"{"type":"timeout","user":"ann","seconds":5}"#, T0)
            .is_empty()
    );
    room.handle_text(root, r#"{"type":"ban","user":"mo"}"#, T0);
    let out = room.handle_text(mo, &frame("hi"), T0 + 1);
    assert_eq!(error_to(&out, mo).0, "banned");
}

#[test]
fn slow_mode_spaces_a_viewers_messages() {
    let mut room = Room::new(RoomConfig::default());
    let ann = join(&mut room, viewer("ann"));
    let mo = join(
        &mut room,
        MemberInfo::registered("mo", "Mo", Role::Moderator),
    );
    let out = room.handle_text(mo, r#"{"type":"slow","seconds":10}"#, T0);
    assert_eq!(
        broadcast(&out),
        json!({"type": "state", "slow_mode": 10, "registered_only": false})
    );
    assert_eq!(room.slow_mode(), 10);

    broadcast(&room.handle_text(ann, &frame("one"), T0 + 1_000));
    let out = room.handle_text(ann, &frame("two"), T0 + 4_000);
    assert_eq!(error_to(&out, ann), ("slow_mode".to_owned(), Some(7)));
    let out = room.handle_text(ann, &frame("two"), T0 + 10_500);
    assert_eq!(error_to(&out, ann), ("slow_mode".to_owned(), Some(1)));
    broadcast(&room.handle_text(ann, &frame("two"), T0 + 11_000));
    // Moderators are exempt.
    broadcast(&room.handle_text(mo, &frame("a"), T0 + 11_001));
    broadcast(&room.handle_text(mo, &frame("b"), T0 + 11_002));
    // Off again.
    room.handle_text(mo, r#"{"type":"slow","seconds":0}"#, T0 + 11_003);
    broadcast(&room.handle_text(ann, &frame("three"), T0 + 11_004));
}

#[test]
fn the_rate_limit_counts_every_session_of_a_user() {
    let mut room = Room::new(RoomConfig::default());
    let ann = join(&mut room, viewer("ann"));
    let ann2 = join(&mut room, viewer("ann"));
    let cam = join(
        &mut room,
        MemberInfo::registered("cam", "Cam", Role::Broadcaster),
    );
    for i in 0..20u64 {
        let member = if i % 2 == 0 { ann } else { ann2 };
        broadcast(&room.handle_text(member, &frame("spam"), T0 + i * 1_000));
    }
    // The oldest of the 20 was at T0: the 21st can go at T0 + 30 s.
    let out = room.handle_text(ann2, &frame("more"), T0 + 19_500);
    assert_eq!(error_to(&out, ann2), ("rate_limited".to_owned(), Some(11)));
    let out = room.handle_text(ann, &frame("more"), T0 + 29_999);
    assert_eq!(error_to(&out, ann), ("rate_limited".to_owned(), Some(1)));
    broadcast(&room.handle_text(ann, &frame("more"), T0 + 30_000));
    // The broadcaster is exempt.
    for i in 0..100u64 {
        broadcast(&room.handle_text(cam, &frame("go"), T0 + i));
    }
}

#[test]
fn length_limit_and_anonymous_viewers() {
    let mut room = Room::new(RoomConfig::default());
    let ann = join(&mut room, viewer("ann"));
    let anon = join(&mut room, MemberInfo::anonymous());
    let out = room.handle_text(ann, &frame(&"x".repeat(501)), T0);
    assert_eq!(error_to(&out, ann).0, "text_too_long");
    broadcast(&room.handle_text(ann, &frame(&"x".repeat(500)), T0));
    for command in [frame("hello"), r#"{"type":"report","id":1}"#.to_owned()] {
        let out = room.handle_text(anon, &command, T0);
        assert_eq!(error_to(&out, anon).0, "read_only");
    }
    // `join` (the first frame on an out-of-band channel) is answered by
    // nothing, for anybody.
    assert!(room.handle_text(anon, r#"{"type":"join"}"#, T0).is_empty());
    assert!(room.handle_text(ann, r#"{"type":"join"}"#, T0).is_empty());
}

#[test]
fn registered_only_mode_refuses_guests() {
    let mut room = Room::new(RoomConfig::default());
    let guest = join(&mut room, MemberInfo::guest("guest-7", "Guest 7"));
    let ann = join(&mut room, viewer("ann"));
    let mo = join(
        &mut room,
        MemberInfo::registered("mo", "Mo", Role::Moderator),
    );
    broadcast(&room.handle_text(guest, &frame("hi"), T0));
    let out = room.handle_text(mo, r#"{"type":"mode","registered_only":true}"#, T0 + 1);
    assert_eq!(
        broadcast(&out),
        json!({"type": "state", "slow_mode": 0, "registered_only": true})
    );
    let out = room.handle_text(guest, &frame("hi?"), T0 + 2);
    assert_eq!(error_to(&out, guest).0, "registered_only");
    broadcast(&room.handle_text(ann, &frame("hi"), T0 + 3));
    room.handle_text(mo, r#"{"type":"mode","registered_only":false}"#, T0 + 4);
    broadcast(&room.handle_text(guest, &frame("hi!"), T0 + 5));
    assert_eq!(
        room.take_audit()
            .iter()
            .map(|a| a.action.clone())
            .collect::<Vec<_>>(),
        [
            AuditAction::RegisteredOnly { on: true },
            AuditAction::RegisteredOnly { on: false }
        ]
    );
}

#[test]
fn the_word_filter_blocks_or_masks() {
    let mut room = Room::new(RoomConfig {
        filter: WordFilter::new(["darn"], FilterMode::Block),
        ..RoomConfig::default()
    });
    let ann = join(&mut room, viewer("ann"));
    let out = room.handle_text(ann, &frame("oh DARN"), T0);
    assert_eq!(error_to(&out, ann).0, "filtered");

    let mut room = Room::new(RoomConfig {
        filter: WordFilter::new(["darn"], FilterMode::Mask),
        ..RoomConfig::default()
    });
    let ann = join(&mut room, viewer("ann"));
    assert_eq!(
        broadcast(&room.handle_text(ann, &frame("oh DARN it"), T0))["text"],
        "oh **** it"
    );
    assert_eq!(room.take_persist()[0].text, "oh **** it");
}

#[test]
fn links_can_be_blocked() {
    let mut room = Room::new(RoomConfig {
        links_blocked: true,
        ..RoomConfig::default()
    });
    let ann = join(&mut room, viewer("ann"));
    let cam = join(
        &mut room,
        MemberInfo::registered("cam", "Cam", Role::Broadcaster),
    );
    let out = room.handle_text(ann, &frame("free stuff at https://spam.example"), T0);
    assert_eq!(error_to(&out, ann).0, "links_blocked");
    let out = room.handle_text(ann, &frame("see spam.com"), T0);
    assert_eq!(error_to(&out, ann).0, "links_blocked");
    broadcast(&room.handle_text(ann, &frame("no link, e.g. this"), T0));
    broadcast(&room.handle_text(cam, &frame("schedule: https://lumen.tv/cam"), T0));
}

#[test]
fn reports_go_to_the_queue() {
    let mut room = Room::new(RoomConfig::default());
    let ann = join(&mut room, viewer("ann"));
    let bob = join(&mut room, viewer("bob"));
    room.handle_text(ann, &frame("rude"), T0);
    let out = room.handle_text(bob, r#"{"type":"report","id":1,"reason":"rude"}"#, T0 + 1);
    assert_eq!(seen_by(&out, bob)[0]["type"], "notice");
    assert!(seen_by(&out, ann).is_empty());
    let out = room.handle_text(bob, r#"{"type":"report","id":7}"#, T0 + 2);
    assert_eq!(error_to(&out, bob).0, "not_found");
    let reports = room.take_reports();
    assert_eq!(reports.len(), 1);
    assert_eq!(
        (reports[0].reporter.as_str(), reports[0].message.id),
        ("bob", 1)
    );
    assert_eq!(reports[0].reason.as_deref(), Some("rude"));
    assert!(room.take_reports().is_empty());
}

#[test]
fn each_bad_input_is_answered_to_its_sender_only() {
    let mut room = Room::new(RoomConfig::default());
    let ann = join(&mut room, viewer("ann"));
    let big = frame(&"a".repeat(20_000));
    let cases: [(bool, &[u8], &str); 11] = [
        (true, br#"{"type":"clear"}"#, "binary"),
        (false, b"\xc3\x28", "not_utf8"),
        (false, b"hello", "not_json"),
        (false, b"42", "not_object"),
        (false, br#"{"type":"dance"}"#, "unknown_type"),
        (false, br#"{"type":"send"}"#, "missing_field"),
        (false, br#"{"type":"delete","id":"x"}"#, "bad_field"),
        (false, big.as_bytes(), "too_large"),
        (false, br#"{"type":"send","text":""}"#, "empty_text"),
        (false, br#"{"type":"send","text":"   "}"#, "empty_text"),
        (false, b"", "not_json"),
    ];
    for (binary, data, code) in cases {
        let out = room.handle(ann, binary, data, T0);
        assert_eq!(
            error_to(&out, ann).0,
            code,
            "{:?}",
            String::from_utf8_lossy(data)
        );
    }
    assert!(room.take_persist().is_empty());
}

#[test]
fn a_flood_closes_the_flooder_only() {
    let mut room = Room::new(RoomConfig::default());
    let bob = join(&mut room, viewer("bob"));
    for flood in [b"garbage".to_vec(), frame("buy followers").into_bytes()] {
        let flooder = join(&mut room, viewer("flooder"));
        let mut closes = 0;
        let mut to_bob = 0;
        for i in 0..10_000u64 {
            for output in room.handle(flooder, false, &flood, T0 + i) {
                match output {
                    Output::Close { member, reason } => {
                        assert_eq!((member, reason), (flooder, CloseReason::Abuse));
                        closes += 1;
                    }
                    Output::Send {
                        to: Target::One(member),
                        ..
                    } => assert_eq!(member, flooder),
                    Output::Send {
                        to: Target::All, ..
                    } => to_bob += 1,
                }
            }
        }
        assert_eq!(closes, 1);
        assert!(room.member(flooder).is_none());
        // Garbage reaches nobody else; valid messages only until the rate limit.
        assert_eq!(to_bob, if flood == b"garbage" { 0 } else { 20 });
        broadcast(&room.handle_text(bob, &frame("still here"), T0 + 10_001));
    }
    assert_eq!(room.member_count(), 1);
}

#[test]
fn a_restored_room_continues_from_its_stored_state() {
    let stored: Vec<ChatMessage> = (1..=3)
        .map(|id| ChatMessage {
            id,
            user: "ann".into(),
            display_name: "Ann".into(),
            role: Role::Viewer,
            text: format!("m{id}"),
            ts: T0 + id,
        })
        .collect();
    let bans = vec![
        ("bob".to_string(), None),
        ("cid".to_string(), Some(T0 + 60_000)),
    ];
    let config = RoomConfig {
        first_message_id: 2,
        ..RoomConfig::default()
    };
    let mut room = Room::restore(config, stored.clone(), bans);
    let (ann, out) = room.join(MemberInfo::registered("ann", "Ann", Role::Viewer), T0);
    let history = &seen_by(&out, ann)[0];
    assert_eq!(history["type"], "history");
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["m1", "m2", "m3"]);
    // Ids go on after the stored ones, not from `first_message_id`.
    let out = room.handle_text(ann, &frame("m4"), T0 + 10);
    assert_eq!(seen_by(&out, ann)[0]["id"], 4);
    assert_eq!(room.take_persist().len(), 1);
    // Stored messages can be deleted like any other.
    let out = room.handle_text(ann, r#"{"type":"delete","id":1}"#, T0 + 11);
    assert_eq!(seen_by(&out, ann)[0]["type"], "deleted");
    // The ban holds; the timeout holds until it ends.
    let (bob, _) = room.join(MemberInfo::registered("bob", "Bob", Role::Viewer), T0);
    let out = room.handle_text(bob, &frame("hi"), T0 + 20);
    assert_eq!(error_to(&out, bob).0, "banned");
    let (cid, _) = room.join(MemberInfo::registered("cid", "Cid", Role::Viewer), T0);
    let out = room.handle_text(cid, &frame("hi"), T0 + 30);
    assert_eq!(error_to(&out, cid).0, "timed_out");
    let out = room.handle_text(cid, &frame("hi"), T0 + 60_000);
    assert_eq!(seen_by(&out, cid)[0]["type"], "message");
}
