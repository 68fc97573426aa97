//! Chat over the sessions' `chat` data channels: one [`lumen_chat::Room`]
//! per stream on this node, the single authority for its order and
//! moderation.
//!
//! The event follower (`hub::follow_observed`) never waits: the [`Tap`]
//! hands channel events, with what the session table knows of their session
//! (stream, publisher or viewer, the user its credential names), to one task
//! through a bounded queue (dropped and counted when full). That task feeds
//! the rooms and hands their frames, without waiting, to one fan-out task
//! per worker (`fanout`), which coalesces them per member and sends them
//! through [`NodeHandle::send_each`](lumen_node::NodeHandle::send_each).
//!
//! Who may send: the stream's publisher (as its broadcaster), a logged-in
//! viewer of a stream they may watch, and a viewer whose token carries
//! `chat:{stream}` (`moderate:{stream}` moderates); anonymous viewers read
//! (`endpoints::chat_rights` decides when the session is made). Display
//! names and roles come from the account, or from the token's subject.
//!
//! Storage: a room is created from the store (its recent history, next
//! message id and the bans in force) before its first member is answered,
//! and lives in memory while it has members. After each frame the room's
//! queues (new messages, moderation actions, reports) go to a writer task
//! without waiting, so that a slow database never delays fan-out; the
//! writer stores everything queued in one transaction per stream, so its
//! batches grow when the database is slow. Only past `store::WRITE_HELD`
//! records waiting are records dropped (counted and logged). That is
//! `store`.
//!
//! Across the relay tree (`relay`): a stream this node carries from a
//! parent has no room here but a proxy, which carries its members up the
//! relay link's `lumen-relay` channel to the origin's room and what comes
//! down to them; on the origin the members behind each child link are
//! members of the room. Only the origin stores.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lumen_auth::{Auth, Role as AccountRole};
use lumen_chat::{MemberId, MemberInfo, Output, Role, Room, Target};
use lumen_node::{NodeEvent, NodeHandle, SessionRef};
use lumen_sfu::{ChannelId, PeerId, Role as MediaRole};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::hub::{Liveness, Observer};

mod fanout;
mod relay;
mod settings;
mod store;
use crate::sessions::{ChatRights, Kind, Sessions};
use fanout::{At, Fanout, Targets};
pub use settings::ChatSettings;
use store::{FLUSH_WAIT, Writer, load, take_batch, write};

/// The data channel label chat travels on.
pub(crate) const LABEL: &str = "chat";
/// Channel events queued for the chat task at most.
const QUEUE: usize = 4096;

/// A channel event, with what the session table knew of its session.
enum ChatIn {
    Open {
        at: (SessionRef, ChannelId),
        stream: String,
        publisher: bool,
        rights: ChatRights,
        /// The client asked for compressed messages.
        deflate: bool,
    },
    Data {
        at: (SessionRef, ChannelId),
        binary: bool,
        data: Vec<u8>,
    },
    Close {
        at: (SessionRef, ChannelId),
    },
    SessionGone {
        session: SessionRef,
    },
    /// The stream's publisher connected: a broadcast began.
    Live {
        stream: String,
        publisher: SessionRef,
        broadcast: String,
        since_ms: u64,
    },
    /// That publisher is gone.
    Offline {
        stream: String,
        publisher: SessionRef,
    },
    /// This node carries `stream` from a parent through the relay session
    /// `session` (`None`: no longer).
    Carry {
        stream: String,
        session: Option<SessionRef>,
    },
    /// A `lumen-relay` channel on a session that is not a client's (a
    /// relay link's, when `Carry` named that session).
    RelayOpen {
        at: (SessionRef, ChannelId),
    },
    RelayData {
        at: (SessionRef, ChannelId),
        binary: bool,
        data: Vec<u8>,
    },
    RelayClose {
        at: (SessionRef, ChannelId),
    },
    /// Parent side: a relay link this node feeds has chat; `down` takes
    /// envelopes for the child.
    ChildOpen {
        link: relay::LinkId,
        stream: String,
        down: mpsc::Sender<String>,
    },
    /// An envelope from that child.
    ChildData {
        link: relay::LinkId,
        binary: bool,
        data: Vec<u8>,
    },
    /// That link ended.
    ChildGone {
        link: relay::LinkId,
    },
    /// A moderation command from the API, as `info`: the frames the room
    /// answers that member come back.
    Moderate {
        stream: String,
        info: MemberInfo,
        frame: String,
        reply: oneshot::Sender<Vec<String>>,
    },
}

/// How the API hands moderation commands to the rooms of this node.
#[derive(Clone, Default)]
pub(crate) struct ChatHandle {
    tx: Option<mpsc::Sender<ChatIn>>,
}

impl ChatHandle {
    /// Runs one client frame in `stream`'s room as `info` (a member for
    /// the length of the command: it receives no history and is never
    /// seen by others); the frames the room answered it with, `None` when
    /// chat is not running or did not answer in time.
    pub(crate) async fn moderate(
        &self,
        stream: &str,
        info: MemberInfo,
        frame: String,
    ) -> Option<Vec<String>> {
        let tx = self.tx.as_ref()?;
        let (reply, rx) = oneshot::channel();
        tx.send(ChatIn::Moderate {
            stream: stream.to_string(),
            info,
            frame,
            reply,
        })
        .await
        .ok()?;
        tokio::time::timeout(FLUSH_WAIT * 2, rx).await.ok()?.ok()
    }
}

/// The follower's side: sorts the node's channel events into the queue.
pub(crate) struct Tap {
    tx: mpsc::Sender<ChatIn>,
    /// `chat` channels open (`false`) and relay links' `lumen-relay`
    /// channels (`true`), so that other channels' data is not queued.
    open: HashMap<(SessionRef, ChannelId), bool>,
    dropped: Arc<AtomicU64>,
}

/// The queue into the rooms' task, made before the task so that the API's
/// [`ChatHandle`] exists when the router is built.
pub(crate) struct Queue {
    tx: mpsc::Sender<ChatIn>,
    rx: mpsc::Receiver<ChatIn>,
}

impl Queue {
    pub(crate) fn new() -> Queue {
        let (tx, rx) = mpsc::channel(QUEUE);
        Queue { tx, rx }
    }

    /// The API's way in.
    pub(crate) fn handle(&self) -> ChatHandle {
        ChatHandle {
            tx: Some(self.tx.clone()),
        }
    }
}

/// The tap for the follower and the task that runs the rooms.
pub(crate) fn tap(
    queue: Queue,
    auth: Auth,
    node: NodeHandle,
    settings: ChatSettings,
) -> (Tap, JoinHandle<()>) {
    let Queue { tx, rx } = queue;
    let dropped = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(run(rx, auth, node, settings, dropped.clone()));
    (
        Tap {
            tx,
            open: HashMap::new(),
            dropped,
        },
        task,
    )
}

impl Tap {
    fn session_gone(&mut self, session: &SessionRef) {
        let before = self.open.len();
        self.open.retain(|(s, _), _| s != session);
        if self.open.len() != before {
            self.push(ChatIn::SessionGone { session: *session });
        }
    }

    fn push(&self, m: ChatIn) {
        if self.tx.try_send(m).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "chat queue full: channel events dropped");
            }
        }
    }
}

impl Observer for Tap {
    fn event(&mut self, sessions: &Sessions, e: &NodeEvent) {
        match e {
            NodeEvent::ChannelOpen {
                session,
                channel,
                label,
                protocol,
            } if label == LABEL => {
                let Some(entry) = sessions.id_of(*session).and_then(|id| sessions.get(&id)) else {
                    return;
                };
                self.open.insert((*session, *channel), false);
                self.push(ChatIn::Open {
                    at: (*session, *channel),
                    stream: entry.stream,
                    publisher: entry.kind == Kind::Whip,
                    rights: entry.chat,
                    deflate: protocol == lumen_chat::protocol::DEFLATE_PROTOCOL,
                });
            }
            // A relay link's session is the node's own, never a client's
            // (which the session table knows).
            NodeEvent::ChannelOpen {
                session,
                channel,
                label,
                ..
            } if label == lumen_chat::relay::LABEL && sessions.id_of(*session).is_none() => {
                self.open.insert((*session, *channel), true);
                self.push(ChatIn::RelayOpen {
                    at: (*session, *channel),
                });
            }
            NodeEvent::ChannelData {
                session,
                channel,
                binary,
                data,
            } => {
                let at = (*session, *channel);
                let binary = *binary;
                match self.open.get(&at) {
                    Some(false) => self.push(ChatIn::Data {
                        at,
                        binary,
                        data: data.clone(),
                    }),
                    Some(true) => self.push(ChatIn::RelayData {
                        at,
                        binary,
                        data: data.clone(),
                    }),
                    None => {}
                }
            }
            NodeEvent::ChannelClose { session, channel } => {
                let at = (*session, *channel);
                match self.open.remove(&at) {
                    Some(false) => self.push(ChatIn::Close { at }),
                    Some(true) => self.push(ChatIn::RelayClose { at }),
                    None => {}
                }
            }
            NodeEvent::Connected {
                session,
                role: MediaRole::Publisher,
                stream,
            } => {
                if let Some(broadcast) = sessions.id_of(*session) {
                    self.push(ChatIn::Live {
                        stream: stream.clone(),
                        publisher: *session,
                        broadcast,
                        since_ms: now_ms(),
                    });
                }
            }
            NodeEvent::Closed {
                session,
                role: MediaRole::Publisher,
                stream,
                ..
            } => {
                self.push(ChatIn::Offline {
                    stream: stream.clone(),
                    publisher: *session,
                });
                self.session_gone(session);
            }
            NodeEvent::Closed { session, .. } => self.session_gone(session),
            _ => {}
        }
    }

    fn liveness(&mut self, _: Liveness) {}
}

/// Both observers in the one follower.
impl<A: Observer, B: Observer> Observer for (A, B) {
    fn event(&mut self, sessions: &Sessions, e: &NodeEvent) {
        self.0.event(sessions, e);
        self.1.event(sessions, e);
    }

    fn liveness(&mut self, change: Liveness) {
        self.0.liveness(change.clone());
        self.1.liveness(change);
    }
}

/// The rooms of this node and where their members are.
struct Rooms {
    rooms: HashMap<String, Room>,
    members: HashMap<At, (String, MemberId)>,
    /// Each room's members' channels, and what a frame to all of them
    /// goes to on each worker (made again when the membership changes).
    channels: HashMap<String, RoomChannels>,
    /// The broadcast each live stream is in: its publisher, the broadcast
    /// id (the publisher's session id) and when it went live (ms).
    live: HashMap<String, (SessionRef, String, u64)>,
    fanout: Fanout,
    /// The streams whose room is up the tree, and the relay links' chat.
    relay: relay::Relay,
    node: NodeHandle,
    writer: Writer,
}

#[derive(Default)]
struct RoomChannels {
    by_member: HashMap<MemberId, At>,
    /// Per worker, the targets of `Target::All`; `None` until needed.
    all: Option<Vec<Targets>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn run(
    mut rx: mpsc::Receiver<ChatIn>,
    auth: Auth,
    node: NodeHandle,
    settings: ChatSettings,
    _dropped: Arc<AtomicU64>,
) {
    let (lag_tx, mut lagging) = mpsc::unbounded_channel();
    let (fanout, fan_tasks) = Fanout::start(&node, lag_tx);
    let (writer, write_rx) = Writer::new();
    let write_task = tokio::spawn(write(write_rx, writer.held.clone(), auth.clone()));
    let mut r = Rooms {
        rooms: HashMap::new(),
        members: HashMap::new(),
        channels: HashMap::new(),
        live: HashMap::new(),
        fanout,
        relay: relay::Relay::default(),
        node,
        writer,
    };
    loop {
        let m = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
            Some(at) = lagging.recv() => {
                r.resync(at);
                continue;
            }
        };
        match m {
            ChatIn::Open {
                at,
                stream,
                publisher,
                rights,
                deflate,
            } => {
                if deflate {
                    // Before the room's first frames to it.
                    r.fanout.deflate(at);
                }
                let info = member_info(&auth, &stream, publisher, rights).await;
                if r.relay.proxies(&stream) {
                    r.proxy_join(at, stream, info);
                    continue;
                }
                if !r.rooms.contains_key(&stream) {
                    let room = load(&auth, &r.writer, &stream, settings.room_config()).await;
                    r.rooms.insert(stream.clone(), room);
                }
                let Some(room) = r.rooms.get_mut(&stream) else {
                    continue;
                };
                let (member, outputs) = room.join(info, now_ms());
                r.members.insert(at, (stream.clone(), member));
                let c = r.channels.entry(stream.clone()).or_default();
                c.by_member.insert(member, at);
                c.all = None;
                r.send(&stream, outputs, false);
            }
            ChatIn::Data { at, binary, data } => {
                let Some((stream, member)) = r.members.get(&at).cloned() else {
                    r.proxy_data(at, binary, &data);
                    continue;
                };
                let Some(room) = r.rooms.get_mut(&stream) else {
                    continue;
                };
                let outputs = room.handle(member, binary, &data, now_ms());
                let batch = take_batch(room, r.live.get(&stream));
                if !batch.is_empty() {
                    r.writer.store(stream.clone(), batch);
                }
                r.send(&stream, outputs, false);
            }
            ChatIn::Carry { stream, session } => r.carry(stream, session),
            ChatIn::RelayOpen { at } => r.upstream_open(at),
            ChatIn::RelayData { at, binary, data } => r.upstream_data(at, binary, &data),
            ChatIn::RelayClose { at } => r.upstream_closed(at),
            ChatIn::ChildOpen { link, stream, down } => r.child_open(link, stream, down),
            ChatIn::ChildData { link, binary, data } => {
                // The origin's room is made (from the store) by the first
                // remote join, as by a local one.
                if let Some((stream, up)) = r.child_data(link, binary, &data, now_ms()) {
                    let room = load(&auth, &r.writer, &stream, settings.room_config()).await;
                    r.rooms.insert(stream.clone(), room);
                    r.remote_up(&stream, link, up, now_ms());
                }
            }
            ChatIn::ChildGone { link } => r.child_gone(link),
            ChatIn::Moderate {
                stream,
                info,
                frame,
                reply,
            } => {
                if r.relay.proxies(&stream) {
                    // The room is on the origin: moderate there (the
                    // reply dropped answers the API `503`).
                    continue;
                }
                if !r.rooms.contains_key(&stream) {
                    let room = load(&auth, &r.writer, &stream, settings.room_config()).await;
                    r.rooms.insert(stream.clone(), room);
                }
                let Some(room) = r.rooms.get_mut(&stream) else {
                    continue;
                };
                let now = now_ms();
                // Joined for the command only: its history is not wanted.
                let (member, _) = room.join(info, now);
                let outputs = room.handle_text(member, &frame, now);
                room.leave(member);
                let batch = take_batch(room, r.live.get(&stream));
                if room.member_count() == 0 {
                    r.rooms.remove(&stream);
                }
                if !batch.is_empty() {
                    r.writer.store(stream.clone(), batch);
                }
                let (answer, others): (Vec<Output>, Vec<Output>) = outputs.into_iter().partition(
                    |o| matches!(o, Output::Send { to: Target::One(m), .. } if *m == member),
                );
                r.send(&stream, others, false);
                let answer = answer
                    .into_iter()
                    .filter_map(|o| match o {
                        Output::Send { frame, .. } => Some(frame),
                        Output::Close { .. } => None,
                    })
                    .collect();
                let _ = reply.send(answer);
            }
            ChatIn::Close { at } => {
                r.leave(at);
                r.proxy_leave(at);
            }
            ChatIn::Live {
                stream,
                publisher,
                broadcast,
                since_ms,
            } => {
                r.live.insert(stream, (publisher, broadcast, since_ms));
            }
            ChatIn::Offline { stream, publisher } => {
                if r.live.get(&stream).is_some_and(|(p, _, _)| *p == publisher) {
                    r.live.remove(&stream);
                }
            }
            ChatIn::SessionGone { session } => {
                let gone: Vec<_> = r
                    .members
                    .keys()
                    .filter(|(s, _)| *s == session)
                    .copied()
                    .collect();
                for at in gone {
                    r.leave(at);
                }
                let gone: Vec<_> = r
                    .relay
                    .members
                    .keys()
                    .filter(|(s, _)| *s == session)
                    .copied()
                    .collect();
                for at in gone {
                    r.proxy_leave(at);
                }
                if r.relay.is_carrier(&session) {
                    r.carrier_gone(session);
                }
            }
        }
    }
    // The writer stores what it holds once its queue closes; the fan-out
    // tasks end with their queues.
    drop(r);
    let _ = write_task.await;
    for t in fan_tasks {
        let _ = t.await;
    }
}

impl Rooms {
    fn leave(&mut self, at: At) {
        let Some((stream, member)) = self.members.remove(&at) else {
            return;
        };
        self.forget(&stream, member);
        if let Some(room) = self.rooms.get_mut(&stream) {
            room.leave(member);
            self.drop_idle_room(&stream);
        }
    }

    /// Drops a member's channel from its room's targets and its fan-out.
    fn forget(&mut self, stream: &str, member: MemberId) {
        let Some(c) = self.channels.get_mut(stream) else {
            return;
        };
        if let Some(at) = c.by_member.remove(&member) {
            c.all = None;
            self.fanout.forget(at);
        }
        if c.by_member.is_empty() {
            self.channels.remove(stream);
        }
    }

    /// A fresh `history` and `state` for a channel whose backlog the
    /// fan-out dropped.
    fn resync(&mut self, at: At) {
        let Some((stream, member)) = self.members.get(&at).cloned() else {
            self.proxy_resync(at);
            return;
        };
        if let Some(room) = self.rooms.get(&stream) {
            let outputs = room.resync(member);
            self.send(&stream, outputs, true);
        }
    }

    /// Hands `outputs` to the fan-out, and what is for members behind
    /// child links to those links; never waits.
    fn send(&mut self, stream: &str, outputs: Vec<Output>, resync: bool) {
        let outputs = self.route_remote(stream, outputs, resync);
        for o in outputs {
            match o {
                Output::Send { to, frame } => {
                    let Some(c) = self.channels.get_mut(stream) else {
                        continue;
                    };
                    let frame: Arc<str> = frame.into();
                    match to {
                        Target::One(m) => {
                            if let Some((session, channel)) = c.by_member.get(&m) {
                                let to: Targets = Arc::new([(session.peer, *channel)]);
                                self.fanout.send(session.worker, to, frame, resync);
                            }
                        }
                        Target::All => {
                            let workers = self.fanout.workers();
                            let all = c
                                .all
                                .get_or_insert_with(|| per_worker(&c.by_member, workers));
                            for (worker, to) in all.iter().enumerate() {
                                if !to.is_empty() {
                                    self.fanout.send(worker, to.clone(), frame.clone(), resync);
                                }
                            }
                        }
                    }
                }
                Output::Close { member, .. } => {
                    // The room dropped the abuser; nothing more reaches it.
                    if let Some(at) = self
                        .channels
                        .get(stream)
                        .and_then(|c| c.by_member.get(&member).copied())
                    {
                        self.members.remove(&at);
                        self.forget(stream, member);
                    }
                }
            }
        }
    }
}

/// A room's channels, split by worker.
fn per_worker<K>(members: &HashMap<K, At>, workers: usize) -> Vec<Targets> {
    let mut split: Vec<Vec<(PeerId, ChannelId)>> = vec![Vec::new(); workers];
    for (session, channel) in members.values() {
        if let Some(w) = split.get_mut(session.worker) {
            w.push((session.peer, *channel));
        }
    }
    split.into_iter().map(Targets::from).collect()
}

/// Who a chat member is, from its session's rights: the publisher is the
/// broadcaster; a speaker that is a user chats under the account's name and
/// role (the stream's owner as its broadcaster); a speaker that is not (a
/// token's subject from a service or an external site) chats as a guest
/// under that name; a session without chat rights reads only.
async fn member_info(auth: &Auth, stream: &str, publisher: bool, rights: ChatRights) -> MemberInfo {
    let Some(speaker) = rights.speaker else {
        return if publisher {
            // A publisher with a service token: the stream's broadcaster.
            MemberInfo {
                user: Some(format!("broadcaster:{stream}")),
                registered: true,
                display_name: stream.to_string(),
                role: Role::Broadcaster,
            }
        } else {
            MemberInfo::anonymous()
        };
    };
    let owner = auth.stream(stream).await.ok().flatten().map(|s| s.owner_id);
    let account = auth.user(&speaker).await.ok();
    let base = if rights.moderates {
        Role::Moderator
    } else {
        Role::Viewer
    };
    match account {
        Some(u) => {
            let role = if publisher || owner.as_deref() == Some(u.id.as_str()) {
                Role::Broadcaster
            } else {
                match u.role {
                    AccountRole::Admin => Role::Admin,
                    AccountRole::Moderator => Role::Moderator,
                    _ => base,
                }
            };
            MemberInfo {
                user: Some(u.id.clone()),
                registered: true,
                display_name: u.name,
                role,
            }
        }
        // A publisher with a service token: the stream's broadcaster.
        None if publisher => MemberInfo {
            user: Some(format!("broadcaster:{stream}")),
            registered: true,
            display_name: stream.to_string(),
            role: Role::Broadcaster,
        },
        None => MemberInfo {
            user: Some(format!("token:{speaker}")),
            registered: false,
            display_name: speaker.clone(),
            role: base,
        },
    }
}
