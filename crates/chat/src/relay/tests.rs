use serde_json::{Value, json};

use super::*;
use crate::protocol::MAX_FRAME_BYTES;
use crate::{Role, RoomConfig};

const NOW: u64 = 1_700_000_000_000;

fn value(s: &str) -> Value {
    serde_json::from_str(s).expect("JSON")
}

/// Round trip through the wire, as a link carries it.
fn wire_up(up: Up) -> Up {
    Up::parse(false, up.to_json().as_bytes()).expect("an envelope")
}

fn wire_down(down: Down) -> Down {
    Down::parse(false, down.to_json().as_bytes()).expect("an envelope")
}

#[test]
fn envelopes_have_the_documented_shape() {
    let ann = MemberInfo::registered("u1", "Ann", Role::Viewer);
    assert_eq!(
        value(&Up::join(7, &ann).to_json()),
        json!({"t": "join", "m": 7, "user": "u1", "registered": true,
               "display_name": "Ann", "role": "viewer"})
    );
    let text = r#"{"type":"send","text":"hi \"there\""}"#;
    let up = Up::Frame {
        m: 7,
        text: text.to_string(),
    };
    assert_eq!(
        value(&up.to_json()),
        json!({"t": "frame", "m": 7, "text": text})
    );
    assert_eq!(wire_up(up.clone()), up, "the client's text, byte for byte");
    assert_eq!(
        value(&Up::Leave { m: 7 }.to_json()),
        json!({"t": "leave", "m": 7})
    );
    assert_eq!(
        value(
            &Down::To {
                m: vec![7, 9],
                frame: "{}".into(),
                resync: false
            }
            .to_json()
        ),
        json!({"t": "to", "m": [7, 9], "frame": "{}"})
    );
    assert_eq!(
        value(&Down::All { frame: "{}".into() }.to_json()),
        json!({"t": "all", "frame": "{}"})
    );
    assert_eq!(
        value(&Down::Close { m: 3 }.to_json()),
        json!({"t": "close", "m": 3})
    );
    let anon = Up::join(1, &MemberInfo::anonymous());
    assert_eq!(wire_up(anon.clone()), anon);
}

#[test]
fn bad_envelopes_are_errors_not_panics() {
    assert_eq!(Up::parse(true, b"{}"), Err(EnvelopeError::Binary));
    let big = vec![b' '; MAX_ENVELOPE_BYTES + 1];
    assert_eq!(
        Down::parse(false, &big),
        Err(EnvelopeError::TooLarge(MAX_ENVELOPE_BYTES + 1))
    );
    for bad in [
        &b"\xc3\x28"[..],
        b"",
        b"42",
        br#"{"t":"dance","m":1}"#,
        br#"{"t":"frame","m":1}"#,
        br#"{"t":"frame","m":-1,"text":"x"}"#,
        br#"{"t":"join","m":1,"user":null,"registered":false,"display_name":"","role":"king"}"#,
    ] {
        assert!(
            matches!(Up::parse(false, bad), Err(EnvelopeError::Malformed(_))),
            "{bad:?}"
        );
        assert!(Down::parse(false, bad).is_err(), "{bad:?}");
    }
}

/// The origin: a room, its local members by id, its remote ones by link.
struct Origin {
    room: Room,
    remotes: Remotes<u8>,
}

impl Origin {
    fn new() -> Origin {
        Origin {
            room: Room::new(RoomConfig::default()),
            remotes: Remotes::new(),
        }
    }

    fn up(&mut self, link: u8, up: Up, now: u64) -> (Vec<Output>, Vec<(u8, Down)>) {
        let (outputs, resync) = self.remotes.handle(&mut self.room, link, wire_up(up), now);
        self.remotes.route(outputs, resync)
    }

    fn local(&mut self, member: MemberId, text: &str, now: u64) -> (Vec<Output>, Vec<(u8, Down)>) {
        let outputs = self.room.handle_text(member, text, now);
        self.remotes.route(outputs, false)
    }
}

fn frame_of(down: &Down) -> Value {
    match down {
        Down::All { frame } | Down::To { frame, .. } => value(frame),
        Down::Close { .. } => Value::Null,
    }
}

#[test]
fn remote_members_are_members_of_the_origins_room() {
    let mut o = Origin::new();
    let (mo, _) = o
        .room
        .join(MemberInfo::registered("mod", "Mo", Role::Moderator), NOW);
    // Two members behind link 1 (one edge), one behind link 2.
    let (_, down) = o.up(
        1,
        Up::join(10, &MemberInfo::registered("u1", "Ann", Role::Viewer)),
        NOW,
    );
    let kinds: Vec<_> = down
        .iter()
        .map(|(l, d)| (*l, frame_of(d)["type"].clone()))
        .collect();
    assert_eq!(kinds, [(1, json!("history")), (1, json!("state"))]);
    assert!(matches!(&down[0].1, Down::To { m, .. } if *m == [10]));
    o.up(1, Up::join(11, &MemberInfo::anonymous()), NOW);
    o.up(
        2,
        Up::join(10, &MemberInfo::registered("u2", "Bo", Role::Viewer)),
        NOW,
    );
    assert_eq!(o.room.member_count(), 4);

    // A remote member's message goes to everyone: once to the local
    // members (one output), once per link, whatever its members.
    let (local, down) = o.up(
        1,
        Up::Frame {
            m: 10,
            text: r#"{"type":"send","text":"hello"}"#.into(),
        },
        NOW,
    );
    assert!(matches!(
        &local[..],
        [Output::Send {
            to: Target::All,
            ..
        }]
    ));
    let mut links: Vec<u8> = down
        .iter()
        .map(|(l, d)| {
            assert!(matches!(d, Down::All { .. }), "{d:?}");
            *l
        })
        .collect();
    links.sort_unstable();
    assert_eq!(links, [1, 2]);
    let m = frame_of(&down[0].1);
    assert_eq!(m["type"], "message");
    assert_eq!(
        (m["user"].clone(), m["display_name"].clone()),
        (json!("u1"), json!("Ann"))
    );
    let Output::Send { frame, .. } = &local[0] else {
        unreachable!()
    };
    assert_eq!(value(frame), m, "the same frame, the same id, everywhere");

    // The moderator bans the edge's user: the notice goes to that member
    // only, and its next send is refused `banned`, to it only.
    let (_, down) = o.local(mo, r#"{"type":"ban","user":"u1"}"#, NOW + 1);
    assert!(
        down.iter().any(|(l, d)| *l == 1
            && matches!(d, Down::To { m, .. } if *m == [10])
            && frame_of(d)["type"] == "notice"),
        "{down:?}"
    );
    let (local, down) = o.up(
        1,
        Up::Frame {
            m: 10,
            text: r#"{"type":"send","text":"still here"}"#.into(),
        },
        NOW + 2,
    );
    assert!(local.is_empty(), "{local:?}");
    assert_eq!(down.len(), 1, "{down:?}");
    assert!(matches!(&down[0], (1, Down::To { m, .. }) if *m == [10]));
    assert_eq!(frame_of(&down[0].1)["code"], "banned");

    // The anonymous member behind link 1 reads only.
    let (_, down) = o.up(
        1,
        Up::Frame {
            m: 11,
            text: r#"{"type":"send","text":"x"}"#.into(),
        },
        NOW,
    );
    assert_eq!(frame_of(&down[0].1)["code"], "read_only");

    // The link goes: its members leave the room; the other link's stay.
    o.remotes.link_gone(&mut o.room, 1);
    assert_eq!(o.room.member_count(), 2);
    let (_, down) = o.local(mo, r#"{"type":"send","text":"after"}"#, NOW + 3);
    assert_eq!(down.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [2]);
}

#[test]
fn a_users_rate_limit_counts_its_sessions_on_every_node() {
    let mut o = Origin::new();
    let (here, _) = o
        .room
        .join(MemberInfo::registered("u1", "Ann", Role::Viewer), NOW);
    o.up(
        1,
        Up::join(5, &MemberInfo::registered("u1", "Ann", Role::Viewer)),
        NOW,
    );
    let send = r#"{"type":"send","text":"x"}"#;
    for i in 0..10 {
        o.local(here, send, NOW + i);
        o.up(
            1,
            Up::Frame {
                m: 5,
                text: send.into(),
            },
            NOW + i,
        );
    }
    // The 21st message of the user in 30 s, from the edge, is refused.
    let (_, down) = o.up(
        1,
        Up::Frame {
            m: 5,
            text: send.into(),
        },
        NOW + 20,
    );
    assert_eq!(frame_of(&down[0].1)["code"], "rate_limited", "{down:?}");
}

#[test]
fn refusals_made_on_the_edge_count_at_the_origin_until_the_member_is_closed() {
    let mut o = Origin::new();
    o.up(
        1,
        Up::join(3, &MemberInfo::registered("u1", "Ann", Role::Viewer)),
        NOW,
    );
    let err = crate::protocol::frame_text(true, b"x").expect_err("binary");
    let mut closed = false;
    for _ in 0..60 {
        let (_, down) = o.up(
            1,
            Up::Refused {
                m: 3,
                code: err.code,
                message: err.message.clone(),
            },
            NOW,
        );
        if down.iter().any(|(_, d)| *d == Down::Close { m: 3 }) {
            closed = true;
            break;
        }
        assert_eq!(frame_of(&down[0].1)["code"], "binary");
    }
    assert!(closed, "past the abuse bound the member is closed");
    assert_eq!(o.room.member_count(), 0);
    assert_eq!(o.remotes.member(1, 3), None);
}

#[test]
fn a_resync_answers_the_member_with_history_marked_resync() {
    let mut o = Origin::new();
    o.up(1, Up::join(3, &MemberInfo::anonymous()), NOW);
    let (_, down) = o.up(1, Up::Resync { m: 3 }, NOW);
    assert_eq!(down.len(), 2);
    assert!(
        down.iter()
            .all(|(_, d)| matches!(d, Down::To { resync: true, m, .. } if *m == [3]))
    );
}

type Edge = Proxy<&'static str, u8>;

#[test]
fn a_proxy_carries_members_up_and_answers_unavailable_without_a_link() {
    let mut p = Edge::new();
    assert!(
        p.join_local("a", MemberInfo::registered("u1", "Ann", Role::Viewer))
            .is_empty()
    );
    let hops = p.frame_local(&"a", false, br#"{"type":"send","text":"hi"}"#);
    let [
        Hop::Local {
            to: Some("a"),
            frame,
            resync: false,
        },
    ] = &hops[..]
    else {
        panic!("{hops:?}")
    };
    let e = value(frame);
    assert_eq!(
        (e["type"].clone(), e["code"].clone()),
        (json!("error"), json!("unavailable"))
    );
    assert_eq!(e["retry_after"], RETRY_AFTER_SECS);

    // The link comes up: the member joins through it.
    let hops = p.link_up();
    let [Hop::Up(Up::Join { m, user, .. })] = &hops[..] else {
        panic!("{hops:?}")
    };
    assert_eq!(user.as_deref(), Some("u1"));
    let m = *m;
    // Its frames go up as sent; bytes that are no frame go up as refusals.
    let text = r#"{"type":"send","text":"hi"}"#;
    assert_eq!(
        p.frame_local(&"a", false, text.as_bytes()),
        [Hop::Up(Up::Frame {
            m,
            text: text.into()
        })]
    );
    assert!(matches!(
        &p.frame_local(&"a", true, b"x")[..],
        [Hop::Up(Up::Refused {
            code: ErrorCode::Binary,
            ..
        })]
    ));
    let big = vec![b'a'; MAX_FRAME_BYTES + 1];
    assert!(matches!(
        &p.frame_local(&"a", false, &big)[..],
        [Hop::Up(Up::Refused {
            code: ErrorCode::TooLarge,
            ..
        })]
    ));
    // What comes down reaches its channel.
    let hops = p.from_parent(wire_down(Down::To {
        m: vec![m],
        frame: "F".into(),
        resync: true,
    }));
    assert_eq!(
        hops,
        [Hop::Local {
            to: Some("a"),
            frame: "F".into(),
            resync: true
        }]
    );
    // The link goes and comes back (another parent): the member joins
    // again under the same number.
    p.link_down();
    assert!(
        p.frame_local(&"a", false, text.as_bytes())
            .iter()
            .all(|h| matches!(h, Hop::Local { .. }))
    );
    assert!(matches!(&p.link_up()[..], [Hop::Up(Up::Join { m: again, .. })] if *again == m));
    assert_eq!(p.leave_local(&"a"), [Hop::Up(Up::Leave { m })]);
    assert!(p.is_empty());
}

#[test]
fn a_middle_node_fans_out_once_per_link_and_maps_numbers_both_ways() {
    let mut p = Edge::new();
    p.link_up();
    let info = MemberInfo::registered("u1", "Ann", Role::Viewer);
    let mut ups = Vec::new();
    ups.extend(p.join_local("a", info.clone()));
    // Two children numbering their members alike.
    ups.extend(p.from_child(1, Up::join(1, &info)));
    ups.extend(p.from_child(1, Up::join(2, &info)));
    ups.extend(p.from_child(2, Up::join(1, &info)));
    let ms: Vec<u64> = ups
        .iter()
        .map(|h| match h {
            Hop::Up(Up::Join { m, .. }) => *m,
            other => panic!("{other:?}"),
        })
        .collect();
    let mut distinct = ms.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        4,
        "one number per member carried up: {ms:?}"
    );

    // Everyone's frame: once to the local channels, once per child link.
    let hops = p.from_parent(Down::All { frame: "F".into() });
    assert_eq!(hops.len(), 3, "{hops:?}");
    assert!(hops.contains(&Hop::Local {
        to: None,
        frame: "F".into(),
        resync: false
    }));
    assert!(hops.contains(&Hop::Down(1, Down::All { frame: "F".into() })));
    assert!(hops.contains(&Hop::Down(2, Down::All { frame: "F".into() })));

    // A frame for listed members: each child gets its own numbers.
    let hops = p.from_parent(Down::To {
        m: ms.clone(),
        frame: "G".into(),
        resync: false,
    });
    assert!(hops.contains(&Hop::Local {
        to: Some("a"),
        frame: "G".into(),
        resync: false
    }));
    assert!(hops.contains(&Hop::Down(
        1,
        Down::To {
            m: vec![1, 2],
            frame: "G".into(),
            resync: false
        }
    )));
    assert!(hops.contains(&Hop::Down(
        2,
        Down::To {
            m: vec![1],
            frame: "G".into(),
            resync: false
        }
    )));

    // A child's member's frame goes up under the middle's number.
    let text = r#"{"type":"send","text":"x"}"#;
    assert_eq!(
        p.from_child(
            2,
            Up::Frame {
                m: 1,
                text: text.into()
            }
        ),
        [Hop::Up(Up::Frame {
            m: ms[3],
            text: text.into()
        })]
    );
    // The origin closes that member: the child is told, in its numbers.
    assert_eq!(
        p.from_parent(Down::Close { m: ms[3] }),
        [Hop::Down(2, Down::Close { m: 1 })]
    );
    // Child 2 has no member left: everyone's frames skip it.
    let hops = p.from_parent(Down::All { frame: "H".into() });
    assert!(
        !hops.iter().any(|h| matches!(h, Hop::Down(2, _))),
        "{hops:?}"
    );
    // Child 1 goes: its members leave the origin's room.
    let hops = p.child_gone(1);
    let mut left: Vec<u64> = hops
        .iter()
        .map(|h| match h {
            Hop::Up(Up::Leave { m }) => *m,
            other => panic!("{other:?}"),
        })
        .collect();
    left.sort_unstable();
    assert_eq!(left, [ms[1], ms[2]]);
    // A child's frame while the link to the parent is down is answered
    // down that child's link.
    p.link_down();
    ups = p.from_child(2, Up::join(4, &info));
    assert!(ups.is_empty());
    let hops = p.from_child(
        2,
        Up::Frame {
            m: 4,
            text: text.into(),
        },
    );
    let [Hop::Down(2, Down::To { m, frame, .. })] = &hops[..] else {
        panic!("{hops:?}")
    };
    assert_eq!(*m, [4]);
    assert_eq!(value(frame)["code"], "unavailable");
}

/// Origin ← middle ← edge, envelopes as JSON text between them: a member
/// on the edge and one on the origin see the same messages with the same
/// ids in the same order, and a late joiner on the edge gets the history.
#[test]
fn a_room_over_two_hops_is_one_room() {
    let mut o = Origin::new();
    let mut middle: Proxy<&'static str, u8> = Proxy::new();
    let mut edge: Proxy<&'static str, u8> = Proxy::new();
    middle.link_up();
    edge.link_up();
    // What each channel received, as frames.
    let mut seen: HashMap<&'static str, Vec<Value>> = HashMap::new();
    let (ann, first) = o
        .room
        .join(MemberInfo::registered("u1", "Ann", Role::Viewer), NOW);
    seen.entry("ann")
        .or_default()
        .extend(first.iter().map(|o| match o {
            Output::Send { frame, .. } => value(frame),
            _ => unreachable!(),
        }));

    // Runs the hops of a node until nothing moves: the edge's ups go to
    // the middle (as link 1), the middle's to the origin (as link 9).
    fn run(
        o: &mut Origin,
        middle: &mut Proxy<&'static str, u8>,
        edge: &mut Proxy<&'static str, u8>,
        seen: &mut HashMap<&'static str, Vec<Value>>,
        ann: MemberId,
        mut from_edge: Vec<Hop<&'static str, u8>>,
        mut from_origin: (Vec<Output>, Vec<(u8, Down)>),
    ) {
        loop {
            let mut to_origin = Vec::new();
            let mut to_edge = Vec::new();
            for h in from_edge.drain(..) {
                match h {
                    Hop::Up(up) => {
                        let up = Up::parse(false, up.to_json().as_bytes()).expect("up");
                        for h in middle.from_child(1, up) {
                            match h {
                                Hop::Up(up) => to_origin.push(up),
                                other => panic!("{other:?}"),
                            }
                        }
                    }
                    Hop::Local { to, frame, .. } => {
                        let who = to.unwrap_or("bo");
                        seen.entry(who).or_default().push(value(&frame));
                    }
                    other => panic!("{other:?}"),
                }
            }
            let (local, down) = std::mem::take(&mut from_origin);
            for l in local {
                if let Output::Send { to, frame } = l
                    && (matches!(to, Target::All) || matches!(to, Target::One(m) if m == ann))
                {
                    seen.entry("ann").or_default().push(value(&frame));
                }
            }
            for (link, d) in down {
                assert_eq!(link, 9);
                let d = Down::parse(false, d.to_json().as_bytes()).expect("down");
                for h in middle.from_parent(d) {
                    match h {
                        Hop::Down(1, d) => to_edge.push(d),
                        other => panic!("{other:?}"),
                    }
                }
            }
            for d in to_edge {
                from_edge.extend(edge.from_parent(d));
            }
            for up in to_origin {
                let (a, b) = o.up(9, up, NOW);
                from_origin.0.extend(a);
                from_origin.1.extend(b);
            }
            if from_edge.is_empty() && from_origin.0.is_empty() && from_origin.1.is_empty() {
                return;
            }
        }
    }

    let hops = edge.join_local("bo", MemberInfo::registered("u2", "Bo", Role::Viewer));
    run(
        &mut o,
        &mut middle,
        &mut edge,
        &mut seen,
        ann,
        hops,
        Default::default(),
    );
    let hops = edge.frame_local(&"bo", false, br#"{"type":"send","text":"from the edge"}"#);
    run(
        &mut o,
        &mut middle,
        &mut edge,
        &mut seen,
        ann,
        hops,
        Default::default(),
    );
    let out = o.local(ann, r#"{"type":"send","text":"from the origin"}"#, NOW + 1);
    run(
        &mut o,
        &mut middle,
        &mut edge,
        &mut seen,
        ann,
        Vec::new(),
        out,
    );

    let messages = |who: &str| -> Vec<(u64, String)> {
        seen[who]
            .iter()
            .filter(|f| f["type"] == "message")
            .map(|f| {
                (
                    f["id"].as_u64().expect("id"),
                    f["text"].as_str().expect("text").to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        messages("ann"),
        [
            (1, "from the edge".to_string()),
            (2, "from the origin".to_string())
        ]
    );
    assert_eq!(messages("bo"), messages("ann"));

    // A late joiner on the edge gets the origin's history.
    let hops = edge.join_local("cy", MemberInfo::anonymous());
    run(
        &mut o,
        &mut middle,
        &mut edge,
        &mut seen,
        ann,
        hops,
        Default::default(),
    );
    let history = &seen["cy"][0];
    assert_eq!(history["type"], "history");
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["from the edge", "from the origin"]);
    assert_eq!(o.room.member_count(), 3);
}
