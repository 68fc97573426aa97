//! A room carried over the relay tree (docs/chat.md, "Across nodes").
//!
//! Every relay link has a data channel labelled [`LABEL`] beside its
//! media. Its messages are **envelopes**, JSON text: [`Up`] from a child
//! node to its parent (a member joined, a member's client frame as the
//! client sent it, a member left) and [`Down`] from a parent to a child (a
//! server frame for everyone, or for listed members, or "this member is
//! closed"). Client and server frames travel inside them unchanged, as
//! strings, so the chat wire format stays the only contract with clients.
//!
//! Members are named by numbers the *sending* node chose: each node gives
//! every member it carries up (its own channels' and its children's) a
//! number of its own, and maps what comes down back. So a link never needs
//! ids from more than one hop away, and a node's numbers are its business.
//!
//! Two roles, both sans-IO here:
//! - the stream's **origin** keeps the [`Room`] (the authority) and a
//!   [`Remotes`] per stream: each member of a child link becomes a member
//!   of the room (rate limits, slow mode and bans by user apply to it as to
//!   a local one), and [`Remotes::route`] splits the room's outputs into
//!   local ones and envelopes per link (a frame for [`Target::All`] once
//!   per link, never once per member);
//! - every other node of the tree keeps a [`Proxy`]: no room, no ids, no
//!   storage. It carries its members' frames up, and what comes down to its
//!   own channels and its children; while its link to the parent is down it
//!   answers a frame with the error `unavailable`, and when the link is
//!   made again its members join again (and get `history` again).

use std::collections::HashMap;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::protocol::{ErrorCode, FrameError, Role, ServerFrame};
use crate::room::{MemberId, MemberInfo, Output, Room, Target};

mod proxy;

pub use proxy::{Hop, Proxy};

/// The label of a relay link's chat channel. Not `chat`: a child must
/// never take the link for a broadcaster's chat channel (the broadcaster
/// chats with the rights of the stream's publisher; a link has none).
pub const LABEL: &str = "lumen-relay";

/// The largest envelope accepted, in bytes. A frame inside is at most
/// [`crate::protocol::MAX_FRAME_BYTES`]; escaping it as a JSON string can
/// at worst make it six times longer (control characters as `\u00XX`).
pub const MAX_ENVELOPE_BYTES: usize = 128 * 1024;

/// `retry_after` of the `unavailable` error a node answers while its link
/// to the parent is down: a re-parented link is usually up within this.
pub const RETRY_AFTER_SECS: u64 = 1;

/// From a child node to its parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Up {
    /// A member joined (again, after a new link): who it is, as the node
    /// that serves its channel authenticated it.
    Join {
        /// The sending node's number for the member.
        m: u64,
        /// The user id; `None` for an anonymous viewer.
        user: Option<String>,
        /// Whether the user has an account.
        registered: bool,
        /// The name shown next to its messages.
        display_name: String,
        /// Its role in the room.
        role: Role,
    },
    /// A client frame, exactly as the member sent it.
    Frame {
        /// The member.
        m: u64,
        /// The frame's text.
        text: String,
    },
    /// A frame that failed the byte checks on the node that serves the
    /// member's channel (too large, binary, not UTF-8): the origin answers
    /// and counts it as its own refusal.
    Refused {
        /// The member.
        m: u64,
        /// The error code.
        code: ErrorCode,
        /// The error message.
        message: String,
    },
    /// The member left (its channel or session closed).
    Leave {
        /// The member.
        m: u64,
    },
    /// The member's channel fell behind and its queue was dropped: it needs
    /// a fresh `history` and `state`.
    Resync {
        /// The member.
        m: u64,
    },
}

/// From a parent node to a child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Down {
    /// A server frame for every member.
    All {
        /// The frame's text, unchanged.
        frame: String,
    },
    /// A server frame for these members (the child's numbers).
    To {
        /// The members.
        m: Vec<u64>,
        /// The frame's text, unchanged.
        frame: String,
        /// A `history` or `state` answering [`Up::Resync`].
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resync: bool,
    },
    /// The room dropped this member (too many refused frames): nothing
    /// more reaches it.
    Close {
        /// The member.
        m: u64,
    },
}

/// An envelope that could not be read: bad network input from another
/// node, dropped (and logged by the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Over [`MAX_ENVELOPE_BYTES`].
    #[error("envelope of {0} bytes, the limit is {MAX_ENVELOPE_BYTES}")]
    TooLarge(usize),
    /// A binary data-channel message.
    #[error("envelopes are text, not binary")]
    Binary,
    /// Not an envelope (not UTF-8, not JSON, unknown `t`, missing field).
    #[error("not an envelope: {0}")]
    Malformed(String),
}

fn parse<T: serde::de::DeserializeOwned>(binary: bool, data: &[u8]) -> Result<T, EnvelopeError> {
    if data.len() > MAX_ENVELOPE_BYTES {
        return Err(EnvelopeError::TooLarge(data.len()));
    }
    if binary {
        return Err(EnvelopeError::Binary);
    }
    serde_json::from_slice(data).map_err(|e| EnvelopeError::Malformed(e.to_string()))
}

impl Up {
    /// Reads one message of a link's chat channel.
    pub fn parse(binary: bool, data: &[u8]) -> Result<Up, EnvelopeError> {
        parse(binary, data)
    }

    /// The envelope as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an envelope always serializes")
    }

    /// A member's join.
    pub fn join(m: u64, info: &MemberInfo) -> Up {
        Up::Join {
            m,
            user: info.user.clone(),
            registered: info.registered,
            display_name: info.display_name.clone(),
            role: info.role,
        }
    }
}

impl Down {
    /// Reads one message of a link's chat channel.
    pub fn parse(binary: bool, data: &[u8]) -> Result<Down, EnvelopeError> {
        parse(binary, data)
    }

    /// The envelope as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an envelope always serializes")
    }
}

/// The `error` frame a node answers while its link to the parent is down.
pub fn unavailable_frame() -> String {
    ServerFrame::Error {
        code: ErrorCode::Unavailable,
        message: "chat is reconnecting to the stream's origin".to_string(),
        retry_after: Some(RETRY_AFTER_SECS),
    }
    .to_json()
}

/// The origin's side: the members of one room that sit behind child links
/// (`L` names a link).
#[derive(Debug)]
pub struct Remotes<L> {
    by_remote: HashMap<(L, u64), MemberId>,
    by_member: HashMap<MemberId, (L, u64)>,
    /// Members per link, so that a frame for everyone goes once per link.
    links: HashMap<L, usize>,
}

impl<L> Default for Remotes<L> {
    fn default() -> Self {
        Remotes {
            by_remote: HashMap::new(),
            by_member: HashMap::new(),
            links: HashMap::new(),
        }
    }
}

impl<L: Copy + Eq + Hash> Remotes<L> {
    /// No remote members.
    pub fn new() -> Remotes<L> {
        Remotes::default()
    }

    /// Whether no member sits behind a link.
    pub fn is_empty(&self) -> bool {
        self.by_member.is_empty()
    }

    /// The room's member for a link's member, if it is in the room.
    pub fn member(&self, link: L, m: u64) -> Option<MemberId> {
        self.by_remote.get(&(link, m)).copied()
    }

    /// Applies an envelope from `link` to the room; the room's outputs,
    /// for [`Remotes::route`] (with `resync` set for an [`Up::Resync`]'s).
    pub fn handle(&mut self, room: &mut Room, link: L, up: Up, now: u64) -> (Vec<Output>, bool) {
        match up {
            Up::Join {
                m,
                user,
                registered,
                display_name,
                role,
            } => {
                // A member that joins again (a repeated envelope) replaces
                // itself rather than counting twice.
                self.remove(room, link, m);
                let info = MemberInfo {
                    user,
                    registered,
                    display_name,
                    role,
                };
                let (id, out) = room.join(info, now);
                self.by_remote.insert((link, m), id);
                self.by_member.insert(id, (link, m));
                *self.links.entry(link).or_default() += 1;
                (out, false)
            }
            Up::Frame { m, text } => match self.member(link, m) {
                Some(id) => (room.handle_text(id, &text, now), false),
                None => (Vec::new(), false),
            },
            Up::Refused { m, code, message } => match self.member(link, m) {
                Some(id) => (
                    room.refuse_frame(id, FrameError::new(code, message), now),
                    false,
                ),
                None => (Vec::new(), false),
            },
            Up::Leave { m } => {
                self.remove(room, link, m);
                (Vec::new(), false)
            }
            Up::Resync { m } => match self.member(link, m) {
                Some(id) => (room.resync(id), true),
                None => (Vec::new(), false),
            },
        }
    }

    /// The link went away: its members leave the room (they join again
    /// through the child's next link).
    pub fn link_gone(&mut self, room: &mut Room, link: L) {
        let gone: Vec<u64> = self
            .by_remote
            .keys()
            .filter(|(l, _)| *l == link)
            .map(|(_, m)| *m)
            .collect();
        for m in gone {
            self.remove(room, link, m);
        }
    }

    /// Splits a room's outputs: the local members' (unchanged, for the
    /// node's own fan-out; a frame for everyone stays one) and an envelope
    /// per link and frame. `resync`: the outputs answer a resync.
    pub fn route(&mut self, outputs: Vec<Output>, resync: bool) -> (Vec<Output>, Vec<(L, Down)>) {
        let mut local = Vec::with_capacity(outputs.len());
        let mut down: Vec<(L, Down)> = Vec::new();
        for o in outputs {
            match o {
                Output::Send {
                    to: Target::All,
                    frame,
                } => {
                    for link in self.links.keys() {
                        down.push((
                            *link,
                            Down::All {
                                frame: frame.clone(),
                            },
                        ));
                    }
                    local.push(Output::Send {
                        to: Target::All,
                        frame,
                    });
                }
                Output::Send {
                    to: Target::One(id),
                    frame,
                } => match self.by_member.get(&id) {
                    Some(&(link, m)) => {
                        // The same frame for several members behind one
                        // link (a sanction's notice to each of a user's
                        // sessions) travels once.
                        if let Some((
                            l,
                            Down::To {
                                m: ms,
                                frame: f,
                                resync: r,
                            },
                        )) = down.last_mut()
                            && *l == link
                            && *f == frame
                            && *r == resync
                        {
                            ms.push(m);
                        } else {
                            down.push((
                                link,
                                Down::To {
                                    m: vec![m],
                                    frame,
                                    resync,
                                },
                            ));
                        }
                    }
                    None => local.push(Output::Send {
                        to: Target::One(id),
                        frame,
                    }),
                },
                Output::Close { member, reason } => match self.by_member.remove(&member) {
                    Some((link, m)) => {
                        self.by_remote.remove(&(link, m));
                        self.count_down(link);
                        down.push((link, Down::Close { m }));
                    }
                    None => local.push(Output::Close { member, reason }),
                },
            }
        }
        (local, down)
    }

    fn remove(&mut self, room: &mut Room, link: L, m: u64) {
        if let Some(id) = self.by_remote.remove(&(link, m)) {
            self.by_member.remove(&id);
            self.count_down(link);
            room.leave(id);
        }
    }

    fn count_down(&mut self, link: L) {
        if let Some(n) = self.links.get_mut(&link) {
            *n -= 1;
            if *n == 0 {
                self.links.remove(&link);
            }
        }
    }
}

#[cfg(test)]
mod tests;
