//! The body of the `chat` fuzz target, shared by `fuzz_targets/chat.rs` and
//! the corpus replay `crates/chat/tests/corpus.rs` (both `#[path]` it in), so
//! that `cargo test` runs exactly what the fuzzer ran. lumen-chat has no
//! `fuzzing` module of its own; this file uses only its public API.
//!
//! Input: the whole input is one frame for `ClientFrame::parse` (text and
//! binary), and one relay envelope for `relay::Up::parse` and
//! `relay::Down::parse` (what another node of the tree sends), which, when
//! it parses, goes into an origin's `relay::Remotes` and a `relay::Proxy`. Then it is split at [`SEP`] into records for a `Room`: a record's
//! first byte is `[advance: 5 bits][op: 3 bits]`, the rest is a frame.
//! `op` 0..=4 picks who sends it (anonymous, guest, registered viewer,
//! moderator, broadcaster); 5 is the same viewer on a second session; 6
//! makes the member picked by the frame's length leave and join again
//! (checking `history` and `state`); 7 sends the frame as binary from the
//! registered viewer. `advance` moves the clock forward by a step from
//! [`STEPS_MS`] before the frame is handled, so windows, slow mode and
//! timeouts expire.

#![allow(dead_code)]

use lumen_chat::relay::{Down, Hop, Proxy, Remotes, Up};
use lumen_chat::{
    ClientFrame, FilterMode, MemberId, MemberInfo, Output, Role, Room, RoomConfig, ServerFrame,
    Target, WordFilter,
};

/// Separates the room records: never valid in UTF-8, so it never cuts a
/// frame the parser would accept.
pub const SEP: u8 = 0xff;
/// The largest frame on the data channel, either way (docs/chat.md).
pub const MAX_FRAME: usize = 16 * 1024;

/// Clock steps, milliseconds: none, within the windows, past the abuse
/// window (10 s), the rate window (30 s), slow mode (1 h), a timeout (14 d).
const STEPS_MS: [u64; 32] = [
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    1,
    1,
    10,
    100,
    500,
    999,
    1_000,
    1_001,
    2_000,
    5_000,
    9_999,
    10_000,
    10_001,
    29_999,
    30_000,
    30_001,
    60_000,
    600_000,
    3_600_000,
    3_600_001,
    86_400_000,
    1_209_600_000,
    1_209_600_001,
    u32::MAX as u64,
];

/// Runs one input.
pub fn run(data: &[u8]) {
    parse(data);
    envelope(data);
    room(data);
}

/// One envelope from another node: refused with an error, or read, written
/// back the same, and applied on both sides of a link.
fn envelope(data: &[u8]) {
    for binary in [false, true] {
        if let Ok(up) = Up::parse(binary, data) {
            assert!(!binary, "a binary envelope parsed: {up:?}");
            assert_eq!(Up::parse(false, up.to_json().as_bytes()).as_ref(), Ok(&up));
            let mut room = Room::new(RoomConfig::default());
            let (_, _) = room.join(MemberInfo::registered("m1", "Mod", Role::Moderator), 0);
            let mut remotes: Remotes<u8> = Remotes::new();
            // As a join first (numbered 1), then itself.
            let join = Up::join(1, &MemberInfo::registered("u1", "Ann", Role::Viewer));
            for (now, up) in [(0, join), (1, up.clone())] {
                let (outputs, resync) = remotes.handle(&mut room, 1, up, now);
                let (local, down) = remotes.route(outputs, resync);
                for o in local {
                    if let Output::Send { frame, .. } = o {
                        check(&frame);
                    }
                }
                for (_, d) in down {
                    if let Down::All { frame } | Down::To { frame, .. } = d {
                        check(&frame);
                    }
                }
            }
            let mut proxy: Proxy<u8, u8> = Proxy::new();
            proxy.link_up();
            let _ = proxy.from_child(1, up);
        }
        if let Ok(down) = Down::parse(binary, data) {
            assert!(!binary, "a binary envelope parsed: {down:?}");
            assert_eq!(
                Down::parse(false, down.to_json().as_bytes()).as_ref(),
                Ok(&down)
            );
            let mut proxy: Proxy<u8, u8> = Proxy::new();
            proxy.link_up();
            let _ = proxy.join_local(0, MemberInfo::anonymous());
            let _ = proxy.from_child(1, Up::join(1, &MemberInfo::anonymous()));
            for hop in proxy.from_parent(down) {
                // Only to those it carries.
                match hop {
                    Hop::Local { to, .. } => assert!(matches!(to, None | Some(0))),
                    Hop::Down(link, _) => assert_eq!(link, 1),
                    Hop::Close(k) => assert_eq!(k, 0),
                    Hop::Up(up) => panic!("a frame from the parent went up: {up:?}"),
                }
            }
        }
    }
}

fn parse(data: &[u8]) {
    for binary in [false, true] {
        match ClientFrame::parse(binary, data) {
            Ok(frame) => {
                assert!(!binary, "a binary frame parsed: {frame:?}");
                // What the server accepted, a Rust client would write back.
                let json = frame.to_json();
                assert_eq!(
                    ClientFrame::parse(false, json.as_bytes()).as_ref(),
                    Ok(&frame),
                    "{json}"
                );
            }
            Err(e) => {
                // Answered in an error frame: never echoes much input.
                assert!(e.message.len() <= 256, "long error message: {e}");
            }
        }
    }
}

struct World {
    room: Room,
    infos: Vec<MemberInfo>,
    /// The session of each of `infos`, `None` after the room closed it.
    ids: Vec<Option<MemberId>>,
    now: u64,
}

fn room(data: &[u8]) {
    let filter = WordFilter::new(["darn", "heck"], FilterMode::Mask);
    let config = RoomConfig {
        filter,
        links_blocked: true,
        ..RoomConfig::default()
    };
    let infos = vec![
        MemberInfo::anonymous(),
        MemberInfo::guest("g1", "Guest"),
        MemberInfo::registered("u1", "Ann", Role::Viewer),
        MemberInfo::registered("m1", "Mod", Role::Moderator),
        MemberInfo::registered("b1", "Bob", Role::Broadcaster),
        // The registered viewer again, on a second session.
        MemberInfo::registered("u1", "Ann", Role::Viewer),
    ];
    let mut world = World {
        room: Room::new(config),
        ids: vec![None; infos.len()],
        infos,
        now: 1_764_643_200_000,
    };
    for i in 0..world.infos.len() {
        world.join(i);
    }
    for record in data.split(|&b| b == SEP) {
        let Some((&head, frame)) = record.split_first() else {
            continue;
        };
        world.now = world.now.saturating_add(STEPS_MS[usize::from(head >> 3)]);
        let op = usize::from(head & 7);
        match op {
            0..=5 => world.handle(op, false, frame),
            6 => {
                let i = frame.len() % world.infos.len();
                if let Some(id) = world.ids[i].take() {
                    world.room.leave(id);
                }
                world.join(i);
            }
            _ => world.handle(2, true, frame),
        }
        // Drained as a node does; the queues stay consistent.
        for message in world.room.take_persist() {
            check_message_frame(&ServerFrame::Message(message));
        }
        let _ = world.room.take_audit();
        let _ = world.room.take_reports();
    }
    assert!(world.room.history().count() <= 50);
}

impl World {
    fn join(&mut self, i: usize) {
        let (id, outputs) = self.room.join(self.infos[i].clone(), self.now);
        self.ids[i] = Some(id);
        assert_eq!(outputs.len(), 2, "join: history, then state");
        for (n, output) in outputs.iter().enumerate() {
            let Output::Send { to, frame } = output else {
                panic!("join closed a channel: {output:?}");
            };
            assert_eq!(*to, Target::One(id));
            let parsed = check(frame);
            match (n, parsed) {
                (0, ServerFrame::History { messages }) => assert!(messages.len() <= 50),
                (1, ServerFrame::State { .. }) => {}
                (_, other) => panic!("join sent {other:?}"),
            }
        }
    }

    fn handle(&mut self, i: usize, binary: bool, frame: &[u8]) {
        let Some(id) = self.ids[i] else {
            // Closed for abuse: a new session.
            return self.join(i);
        };
        let outputs = self.room.handle(id, binary, frame, self.now);
        // Members before the call: a member closed for abuse gets its last
        // error frame before the `Close`.
        let members = self.ids.clone();
        for output in outputs {
            match output {
                Output::Send { to, frame } => {
                    if let Target::One(to) = to {
                        assert!(members.contains(&Some(to)), "a frame to a stranger");
                    }
                    check(&frame);
                }
                Output::Close { member, .. } => {
                    assert!(self.room.member(member).is_none(), "closed but still in");
                    for slot in &mut self.ids {
                        if *slot == Some(member) {
                            *slot = None;
                        }
                    }
                }
            }
        }
    }
}

/// An output frame: JSON (a `String`, so UTF-8) of a server frame, under
/// 16 KiB; except `history`, whose messages are each checked instead.
fn check(frame: &str) -> ServerFrame {
    let parsed: ServerFrame = serde_json::from_str(frame)
        .unwrap_or_else(|e| panic!("output is not a server frame ({e}): {frame}"));
    assert_eq!(parsed.to_json(), frame, "output does not round-trip");
    match &parsed {
        ServerFrame::History { messages } => {
            if HISTORY_UNDER_LIMIT {
                assert!(
                    frame.len() <= MAX_FRAME,
                    "history frame is {} bytes",
                    frame.len()
                );
            }
            for message in messages {
                check_message_frame(&ServerFrame::Message(message.clone()));
            }
        }
        _ => assert!(
            frame.len() <= MAX_FRAME,
            "output frame is {} bytes",
            frame.len()
        ),
    }
    parsed
}

/// Whether a `history` frame is held to the 16 KiB limit too. It is since
/// finding 3 (fuzz/README.md): the room sends as many of the last messages
/// as fit in one frame.
const HISTORY_UNDER_LIMIT: bool = true;

fn check_message_frame(frame: &ServerFrame) {
    let json = frame.to_json();
    assert!(
        json.len() <= MAX_FRAME,
        "message frame is {} bytes",
        json.len()
    );
}
