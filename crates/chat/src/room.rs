//! One stream's chat room: members, ordering, limits and moderation.
//!
//! The room is the authority for its stream (on the origin node): it assigns
//! ids and timestamps, applies every rule, and says who gets which frame.
//! It never reads the clock; `now` is milliseconds since the Unix epoch,
//! passed in, because it also becomes the messages' `ts`. A clock that steps
//! back only makes a limit last longer, never panics.

use std::collections::{HashMap, VecDeque};

mod moderation;

pub use moderation::{AuditAction, AuditEntry, Report};

use crate::filter::{self, WordFilter};
use crate::protocol::{
    ChatMessage, ClientFrame, ErrorCode, FrameError, MAX_FRAME_BYTES, Role, ServerFrame,
};

/// A member of one room: one data channel. `Copy`, used as a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(u64);

/// Who a member is, as signaling authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The user id; `None` for an anonymous viewer, who reads only.
    pub user: Option<String>,
    /// Whether the user has an account (rather than a guest identity);
    /// registered-only mode refuses guests.
    pub registered: bool,
    /// The name shown next to the member's messages.
    pub display_name: String,
    /// The member's role in this room.
    pub role: Role,
}

impl MemberInfo {
    /// An anonymous viewer: reads, never sends.
    pub fn anonymous() -> MemberInfo {
        MemberInfo {
            user: None,
            registered: false,
            display_name: String::new(),
            role: Role::Viewer,
        }
    }

    /// A registered user.
    pub fn registered(user: &str, display_name: &str, role: Role) -> MemberInfo {
        MemberInfo {
            user: Some(user.to_owned()),
            registered: true,
            display_name: display_name.to_owned(),
            role,
        }
    }

    /// A guest: a user identity without an account (a viewer only).
    pub fn guest(user: &str, display_name: &str) -> MemberInfo {
        MemberInfo {
            user: Some(user.to_owned()),
            registered: false,
            display_name: display_name.to_owned(),
            role: Role::Viewer,
        }
    }
}

/// Who a frame goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One member.
    One(MemberId),
    /// Every member of the room (and, through relay links, of its mirrors).
    All,
}

/// What the caller must do after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a text frame.
    Send {
        /// To whom.
        to: Target,
        /// The JSON text, ready for the data channel.
        frame: String,
    },
    /// Close this member's channel; the room has already forgotten it.
    Close {
        /// The member.
        member: MemberId,
        /// Why.
        reason: CloseReason,
    },
}

/// Why the room asks for a channel to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// Too many refused frames in the abuse window.
    Abuse,
}

/// A sliding-window limit: at most `count` events per `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Events allowed in a window.
    pub count: u32,
    /// The window, in milliseconds.
    pub window_ms: u64,
}

/// A room's rules.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// Messages sent to a joining member: 50.
    pub history_len: usize,
    /// Per user (all their sessions together): 20 messages and reports per
    /// 30 s. Privileged roles are exempt.
    pub rate_limit: Limit,
    /// Refused frames a member may send before its channel is closed:
    /// 50 per 10 s. Applies to every role.
    pub abuse_limit: Limit,
    /// The word filter, empty by default.
    pub filter: WordFilter,
    /// Refuse viewers' messages containing links.
    pub links_blocked: bool,
    /// Slow mode at creation, seconds (0 = off).
    pub slow_mode: u64,
    /// Registered-only mode at creation.
    pub registered_only: bool,
    /// The id of the first message, so that a room recreated after a
    /// restart continues after the last persisted id.
    pub first_message_id: u64,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            history_len: 50,
            rate_limit: Limit {
                count: 20,
                window_ms: 30_000,
            },
            abuse_limit: Limit {
                count: 50,
                window_ms: 10_000,
            },
            filter: WordFilter::default(),
            links_blocked: false,
            slow_mode: 0,
            registered_only: false,
            first_message_id: 1,
        }
    }
}

/// One stream's chat room.
#[derive(Debug)]
pub struct Room {
    config: RoomConfig,
    members: HashMap<MemberId, Member>,
    next_member: u64,
    next_message_id: u64,
    /// Recent messages, oldest first, deleted ones removed. Holds more than
    /// `history_len` so that deletions and reports can find slightly older
    /// messages and the history refills after a deletion.
    recent: VecDeque<ChatMessage>,
    users: HashMap<String, UserState>,
    sanctions: HashMap<String, Sanction>,
    slow_mode: u64,
    registered_only: bool,
    reports: Vec<Report>,
    audit: Vec<AuditEntry>,
    persist: Vec<ChatMessage>,
}

impl Room {
    /// An empty room.
    pub fn new(config: RoomConfig) -> Room {
        Room {
            members: HashMap::new(),
            next_member: 0,
            next_message_id: config.first_message_id.max(1),
            recent: VecDeque::new(),
            users: HashMap::new(),
            sanctions: HashMap::new(),
            slow_mode: config.slow_mode,
            registered_only: config.registered_only,
            reports: Vec::new(),
            audit: Vec::new(),
            persist: Vec::new(),
            config,
        }
    }

    /// A room that starts from stored state rather than empty: `history`
    /// (oldest first, deleted messages left out) becomes what joining
    /// members get, message ids continue after the last of it (and after
    /// [`RoomConfig::first_message_id`]), and `bans` are in force: each user
    /// with the end of a timeout (ms since the epoch), `None` for a ban.
    /// The caller loads them; the room still never touches a database.
    pub fn restore(
        config: RoomConfig,
        history: Vec<ChatMessage>,
        bans: Vec<(String, Option<u64>)>,
    ) -> Room {
        let mut room = Room::new(config);
        let keep = room.config.history_len.saturating_mul(4);
        let skip = history.len().saturating_sub(keep);
        room.recent = history.into_iter().skip(skip).collect();
        if let Some(last) = room.recent.back() {
            room.next_message_id = room.next_message_id.max(last.id.saturating_add(1));
        }
        room.sanctions = bans
            .into_iter()
            .map(|(user, until)| {
                let sanction = match until {
                    Some(until) => Sanction::TimedOut { until },
                    None => Sanction::Banned,
                };
                (user, sanction)
            })
            .collect();
        room
    }

    /// The number of members.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// A member's identity, if it is still in the room.
    pub fn member(&self, member: MemberId) -> Option<&MemberInfo> {
        self.members.get(&member).map(|m| &m.info)
    }

    /// Slow mode in seconds, 0 when off.
    pub fn slow_mode(&self) -> u64 {
        self.slow_mode
    }

    /// Whether registered-only mode is on.
    pub fn registered_only(&self) -> bool {
        self.registered_only
    }

    /// The history a joining member gets, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &ChatMessage> {
        let skip = self.recent.len().saturating_sub(self.config.history_len);
        self.recent.iter().skip(skip)
    }

    /// Adds a member; its first frames are the history and the room state.
    pub fn join(&mut self, info: MemberInfo, now: u64) -> (MemberId, Vec<Output>) {
        let id = MemberId(self.next_member);
        self.next_member += 1;
        self.members.insert(
            id,
            Member {
                info,
                strikes: VecDeque::new(),
            },
        );
        self.sweep(now);
        let history = self.history_frame();
        let outputs = vec![
            send(Target::One(id), &history),
            send(Target::One(id), &self.state_frame()),
        ];
        (id, outputs)
    }

    /// What a member gets on joining, again (`history`, then `state`):
    /// for a member whose backlog the node dropped because its channel
    /// could not keep up. Empty for an unknown member.
    pub fn resync(&self, member: MemberId) -> Vec<Output> {
        if !self.members.contains_key(&member) {
            return Vec::new();
        }
        vec![
            send(Target::One(member), &self.history_frame()),
            send(Target::One(member), &self.state_frame()),
        ]
    }

    /// The `history` frame: the last messages, as many as fit in one frame
    /// of at most [`MAX_FRAME_BYTES`] like every other (long messages make
    /// the oldest give way).
    fn history_frame(&self) -> ServerFrame {
        let mut messages: Vec<ChatMessage> = self.history().cloned().collect();
        loop {
            let frame = ServerFrame::History { messages };
            if frame.to_json().len() <= MAX_FRAME_BYTES {
                return frame;
            }
            let ServerFrame::History { messages: mut m } = frame else {
                unreachable!("built above")
            };
            if m.is_empty() {
                return ServerFrame::History { messages: m };
            }
            m.remove(0);
            messages = m;
        }
    }

    /// Removes a member. Unknown members are ignored.
    pub fn leave(&mut self, member: MemberId) {
        self.members.remove(&member);
    }

    /// Handles one data-channel message from a member. `binary` is the
    /// message's binary flag. Frames from unknown (left or closed) members
    /// are ignored: a few may still be in flight after a close.
    pub fn handle(&mut self, member: MemberId, binary: bool, data: &[u8], now: u64) -> Vec<Output> {
        let mut out = Vec::new();
        if !self.members.contains_key(&member) {
            return out;
        }
        let result = match ClientFrame::parse(binary, data) {
            Ok(frame) => self.apply(member, frame, now, &mut out),
            Err(e) => Err(Refusal::new(e.code, e.message)),
        };
        if let Err(refusal) = result {
            self.refuse(member, refusal, now, &mut out);
        }
        out
    }

    /// Refuses a frame of `member` that failed the byte checks
    /// ([`crate::protocol::frame_text`]) on a relay node, which carried
    /// only the error up: answered and counted against the abuse bound as
    /// if [`Room::handle`] had refused it here.
    pub fn refuse_frame(&mut self, member: MemberId, error: FrameError, now: u64) -> Vec<Output> {
        let mut out = Vec::new();
        if self.members.contains_key(&member) {
            self.refuse(
                member,
                Refusal::new(error.code, error.message),
                now,
                &mut out,
            );
        }
        out
    }

    /// [`Room::handle`] for a text message.
    pub fn handle_text(&mut self, member: MemberId, text: &str, now: u64) -> Vec<Output> {
        self.handle(member, false, text.as_bytes(), now)
    }

    /// Drains the reports queue.
    pub fn take_reports(&mut self) -> Vec<Report> {
        std::mem::take(&mut self.reports)
    }

    /// Drains the audit log. Persist it after [`Room::take_persist`]: a
    /// deletion may refer to a message in the same batch.
    pub fn take_audit(&mut self) -> Vec<AuditEntry> {
        std::mem::take(&mut self.audit)
    }

    /// Drains the accepted messages, for a database writer to batch.
    pub fn take_persist(&mut self) -> Vec<ChatMessage> {
        std::mem::take(&mut self.persist)
    }

    fn apply(
        &mut self,
        member: MemberId,
        frame: ClientFrame,
        now: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        if frame == ClientFrame::Join {
            return Ok(());
        }
        let info = self.members[&member].info.clone();
        // Every frame acts as a user: anonymous viewers only read.
        let Some(user) = info.user.clone() else {
            return Err(Refusal::new(ErrorCode::ReadOnly, "sign in to chat"));
        };
        let actor = Actor { member, user, info };
        match frame {
            ClientFrame::Join => Ok(()),
            ClientFrame::Send { text } => self.send(&actor, text, now, out),
            ClientFrame::Delete { id } => self.delete(&actor, id, now, out),
            ClientFrame::Report { id, reason } => self.report(&actor, id, reason, now, out),
            ClientFrame::Timeout {
                user,
                seconds,
                reason,
            } => {
                let until = now.saturating_add(seconds.saturating_mul(1000));
                self.sanction(&actor, user, Sanction::TimedOut { until }, reason, now, out)
            }
            ClientFrame::Ban { user, reason } => {
                self.sanction(&actor, user, Sanction::Banned, reason, now, out)
            }
            ClientFrame::Unban { user } => self.unban(&actor, user, now, out),
            ClientFrame::Clear => {
                moderator(&actor)?;
                self.recent.clear();
                self.log(&actor, AuditAction::Clear, None, None, now);
                out.push(send(Target::All, &ServerFrame::Cleared));
                Ok(())
            }
            ClientFrame::Slow { seconds } => {
                moderator(&actor)?;
                self.slow_mode = seconds;
                self.log(&actor, AuditAction::SlowMode { seconds }, None, None, now);
                out.push(send(Target::All, &self.state_frame()));
                Ok(())
            }
            ClientFrame::Mode { registered_only } => {
                moderator(&actor)?;
                self.registered_only = registered_only;
                let action = AuditAction::RegisteredOnly {
                    on: registered_only,
                };
                self.log(&actor, action, None, None, now);
                out.push(send(Target::All, &self.state_frame()));
                Ok(())
            }
        }
    }

    fn send(
        &mut self,
        actor: &Actor,
        text: String,
        now: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        self.check_sanction(&actor.user, now)?;
        let privileged = actor.info.role.is_privileged();
        let text = if privileged {
            text
        } else {
            if self.registered_only && !actor.info.registered {
                return Err(Refusal::new(
                    ErrorCode::RegisteredOnly,
                    "only registered users may chat right now",
                ));
            }
            let state = self.users.entry(actor.user.clone()).or_default();
            if self.slow_mode > 0
                && let Some(last) = state.last_message
            {
                let ready = last.saturating_add(self.slow_mode.saturating_mul(1000));
                if now < ready {
                    return Err(Refusal::new(
                        ErrorCode::SlowMode,
                        format!("slow mode is {} s", self.slow_mode),
                    )
                    .retry_after_ms(ready - now));
                }
            }
            state.rate(self.config.rate_limit, now)?;
            if self.config.links_blocked && filter::contains_link(&text) {
                return Err(Refusal::new(
                    ErrorCode::LinksBlocked,
                    "links are not allowed in this chat",
                ));
            }
            self.config.filter.apply(&text).ok_or_else(|| {
                Refusal::new(ErrorCode::Filtered, "the message contains a filtered word")
            })?
        };
        self.users
            .entry(actor.user.clone())
            .or_default()
            .last_message = Some(now);
        let message = ChatMessage {
            id: self.next_message_id,
            user: actor.user.clone(),
            display_name: actor.info.display_name.clone(),
            role: actor.info.role,
            text,
            ts: now,
        };
        self.next_message_id += 1;
        out.push(send(Target::All, &ServerFrame::Message(message.clone())));
        self.persist.push(message.clone());
        self.recent.push_back(message);
        while self.recent.len() > self.config.history_len.saturating_mul(4) {
            self.recent.pop_front();
        }
        Ok(())
    }

    /// Answers a refused frame and counts it; past the abuse limit the
    /// member is dropped and its channel closed.
    fn refuse(&mut self, member: MemberId, refusal: Refusal, now: u64, out: &mut Vec<Output>) {
        let limit = self.config.abuse_limit;
        let Some(m) = self.members.get_mut(&member) else {
            return;
        };
        out.push(send(
            Target::One(member),
            &ServerFrame::Error {
                code: refusal.code,
                message: refusal.message,
                retry_after: refusal.retry_after,
            },
        ));
        if !within(&mut m.strikes, limit, now) {
            self.members.remove(&member);
            out.push(Output::Close {
                member,
                reason: CloseReason::Abuse,
            });
        }
    }

    fn state_frame(&self) -> ServerFrame {
        ServerFrame::State {
            slow_mode: self.slow_mode,
            registered_only: self.registered_only,
        }
    }

    /// Forgets per-user state that can no longer refuse anything, once it
    /// outgrows the membership, so that a long stream's room stays bounded
    /// by its audience rather than by everyone who ever chatted.
    fn sweep(&mut self, now: u64) {
        if self.users.len() <= 2 * self.members.len() + 64 {
            return;
        }
        let active: std::collections::HashSet<&str> = self
            .members
            .values()
            .filter_map(|m| m.info.user.as_deref())
            .collect();
        let keep_ms = self
            .config
            .rate_limit
            .window_ms
            .max(self.slow_mode.saturating_mul(1000));
        self.users.retain(|user, state| {
            active.contains(user.as_str())
                || state
                    .last_activity()
                    .is_some_and(|t| now < t.saturating_add(keep_ms))
        });
        self.sanctions
            .retain(|_, s| !matches!(s, Sanction::TimedOut { until } if *until <= now));
    }
}

/// Sends a frame.
fn send(to: Target, frame: &ServerFrame) -> Output {
    Output::Send {
        to,
        frame: frame.to_json(),
    }
}

fn notice(member: MemberId, text: String) -> Output {
    send(Target::One(member), &ServerFrame::Notice { text })
}

fn moderator(actor: &Actor) -> Result<(), Refusal> {
    if actor.info.role.is_privileged() {
        Ok(())
    } else {
        Err(Refusal::new(
            ErrorCode::Forbidden,
            "only moderators can do that",
        ))
    }
}

/// Records an event in a sliding window; false when it is over the limit.
fn within(times: &mut VecDeque<u64>, limit: Limit, now: u64) -> bool {
    while times
        .front()
        .is_some_and(|&t| now >= t.saturating_add(limit.window_ms))
    {
        times.pop_front();
    }
    if times.len() >= limit.count as usize {
        return false;
    }
    times.push_back(now);
    true
}

#[derive(Debug)]
struct Member {
    info: MemberInfo,
    /// Times of refused frames within the abuse window.
    strikes: VecDeque<u64>,
}

struct Actor {
    member: MemberId,
    user: String,
    info: MemberInfo,
}

#[derive(Debug, Default)]
struct UserState {
    /// Times of rate-limited actions within the rate window.
    sends: VecDeque<u64>,
    last_message: Option<u64>,
}

impl UserState {
    fn rate(&mut self, limit: Limit, now: u64) -> Result<(), Refusal> {
        if within(&mut self.sends, limit, now) {
            return Ok(());
        }
        let oldest = self.sends.front().copied().unwrap_or(now);
        let ready = oldest.saturating_add(limit.window_ms);
        Err(Refusal::new(
            ErrorCode::RateLimited,
            format!(
                "at most {} messages per {} s",
                limit.count,
                limit.window_ms / 1000
            ),
        )
        .retry_after_ms(ready.saturating_sub(now)))
    }

    fn last_activity(&self) -> Option<u64> {
        self.sends.back().copied().max(self.last_message)
    }
}

#[derive(Debug, Clone, Copy)]
enum Sanction {
    Banned,
    TimedOut { until: u64 },
}

struct Refusal {
    code: ErrorCode,
    message: String,
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `retry_after` is whole seconds, rounded up so that a client waiting
    /// that long is never refused again for the same reason.
    fn retry_after_ms(mut self, ms: u64) -> Refusal {
        self.retry_after = Some(ms.div_ceil(1000).max(1));
        self
    }
}

#[cfg(test)]
mod tests;
