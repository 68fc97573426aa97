//! The room-less side of a stream on every node of the relay tree but its
//! origin: the members it carries up (its own channels' and its child
//! links'), numbered by this node, and what comes down, mapped back.

use std::collections::HashMap;
use std::hash::Hash;

use super::{Down, Up, unavailable_frame};
use crate::protocol::frame_text;
use crate::room::MemberInfo;

/// What a [`Proxy`] asks its node to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop<K, L> {
    /// Send this envelope up the link to the parent.
    Up(Up),
    /// Send this frame to a channel of this node (`None`: to every one of
    /// the stream's channels here).
    Local {
        /// The channel, or all of them.
        to: Option<K>,
        /// The server frame.
        frame: String,
        /// A resync's `history` or `state`.
        resync: bool,
    },
    /// Send this envelope down a child link.
    Down(L, Down),
    /// The origin dropped this channel's member: forget the channel.
    Close(K),
}

#[derive(Debug)]
enum Via<K, L> {
    Local(K),
    Child(L, u64),
}

#[derive(Debug)]
struct Seat<K, L> {
    via: Via<K, L>,
    info: MemberInfo,
}

/// A node's side of a stream whose room is on another node (up the tree):
/// the members it carries up, its own channels' (`K` names one) and its
/// child links' (`L` names a link).
#[derive(Debug)]
pub struct Proxy<K, L> {
    next: u64,
    seats: HashMap<u64, Seat<K, L>>,
    local: HashMap<K, u64>,
    child: HashMap<(L, u64), u64>,
    /// Members per child link, so that a frame for everyone goes once per
    /// link.
    links: HashMap<L, usize>,
    up: bool,
}

impl<K, L> Default for Proxy<K, L> {
    fn default() -> Self {
        Proxy {
            next: 1,
            seats: HashMap::new(),
            local: HashMap::new(),
            child: HashMap::new(),
            links: HashMap::new(),
            up: false,
        }
    }
}

impl<K: Copy + Eq + Hash, L: Copy + Eq + Hash> Proxy<K, L> {
    /// Nobody yet, and no link to the parent.
    pub fn new() -> Proxy<K, L> {
        Proxy::default()
    }

    /// Whether it carries no member.
    pub fn is_empty(&self) -> bool {
        self.seats.is_empty()
    }

    /// Whether the link to the parent is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The members on this node's own channels.
    pub fn locals(&self) -> impl Iterator<Item = &K> {
        self.local.keys()
    }

    /// Whether this channel is a member.
    pub fn has_local(&self, k: &K) -> bool {
        self.local.contains_key(k)
    }

    /// A channel of this node joined; it gets `history` and `state` from
    /// the origin once the link is up.
    pub fn join_local(&mut self, k: K, info: MemberInfo) -> Vec<Hop<K, L>> {
        let mut out = self.leave_local(&k);
        let m = self.seat(Via::Local(k), info);
        self.local.insert(k, m);
        self.join_up(m, &mut out);
        out
    }

    /// A message on a member's channel.
    pub fn frame_local(&mut self, k: &K, binary: bool, data: &[u8]) -> Vec<Hop<K, L>> {
        let Some(&m) = self.local.get(k) else {
            return Vec::new();
        };
        if !self.up {
            return vec![Hop::Local {
                to: Some(*k),
                frame: unavailable_frame(),
                resync: false,
            }];
        }
        vec![Hop::Up(match frame_text(binary, data) {
            Ok(text) => Up::Frame {
                m,
                text: text.to_string(),
            },
            Err(e) => Up::Refused {
                m,
                code: e.code,
                message: e.message,
            },
        })]
    }

    /// A member's channel closed.
    pub fn leave_local(&mut self, k: &K) -> Vec<Hop<K, L>> {
        match self.local.remove(k) {
            Some(m) => self.unseat(m),
            None => Vec::new(),
        }
    }

    /// A member's channel fell behind: the origin sends it `history` and
    /// `state` again.
    pub fn resync_local(&mut self, k: &K) -> Vec<Hop<K, L>> {
        match self.local.get(k) {
            Some(&m) if self.up => vec![Hop::Up(Up::Resync { m })],
            _ => Vec::new(),
        }
    }

    /// An envelope from a child link.
    pub fn from_child(&mut self, link: L, up: Up) -> Vec<Hop<K, L>> {
        match up {
            Up::Join {
                m: cm,
                user,
                registered,
                display_name,
                role,
            } => {
                let mut out = self.leave_child(link, cm);
                let info = MemberInfo {
                    user,
                    registered,
                    display_name,
                    role,
                };
                let m = self.seat(Via::Child(link, cm), info);
                self.child.insert((link, cm), m);
                *self.links.entry(link).or_default() += 1;
                self.join_up(m, &mut out);
                out
            }
            Up::Frame { m: cm, text } => self.child_frame(link, cm, |m| Up::Frame { m, text }),
            Up::Refused {
                m: cm,
                code,
                message,
            } => self.child_frame(link, cm, |m| Up::Refused { m, code, message }),
            Up::Leave { m: cm } => self.leave_child(link, cm),
            Up::Resync { m: cm } => match self.child.get(&(link, cm)) {
                Some(&m) if self.up => vec![Hop::Up(Up::Resync { m })],
                _ => Vec::new(),
            },
        }
    }

    /// A child link went away: its members leave.
    pub fn child_gone(&mut self, link: L) -> Vec<Hop<K, L>> {
        let gone: Vec<u64> = self
            .child
            .keys()
            .filter(|(l, _)| *l == link)
            .map(|(_, cm)| *cm)
            .collect();
        let mut out = Vec::new();
        for cm in gone {
            out.extend(self.leave_child(link, cm));
        }
        out
    }

    /// The link to the parent is up (a new one after a re-parenting too):
    /// every member joins through it.
    pub fn link_up(&mut self) -> Vec<Hop<K, L>> {
        self.up = true;
        let mut ms: Vec<u64> = self.seats.keys().copied().collect();
        ms.sort_unstable();
        ms.into_iter()
            .map(|m| Hop::Up(Up::join(m, &self.seats[&m].info)))
            .collect()
    }

    /// The link to the parent is gone: frames are answered `unavailable`
    /// until the next one is up.
    pub fn link_down(&mut self) {
        self.up = false;
    }

    /// An envelope from the parent.
    pub fn from_parent(&mut self, down: Down) -> Vec<Hop<K, L>> {
        let mut out = Vec::new();
        match down {
            Down::All { frame } => {
                for link in self.links.keys() {
                    out.push(Hop::Down(
                        *link,
                        Down::All {
                            frame: frame.clone(),
                        },
                    ));
                }
                if !self.local.is_empty() {
                    out.push(Hop::Local {
                        to: None,
                        frame,
                        resync: false,
                    });
                }
            }
            Down::To { m, frame, resync } => {
                let mut per_link: Vec<(L, Vec<u64>)> = Vec::new();
                for m in m {
                    match self.seats.get(&m).map(|s| &s.via) {
                        Some(Via::Local(k)) => out.push(Hop::Local {
                            to: Some(*k),
                            frame: frame.clone(),
                            resync,
                        }),
                        Some(Via::Child(link, cm)) => {
                            match per_link.iter_mut().find(|(l, _)| l == link) {
                                Some((_, ms)) => ms.push(*cm),
                                None => per_link.push((*link, vec![*cm])),
                            }
                        }
                        // Left meanwhile.
                        None => {}
                    }
                }
                for (link, m) in per_link {
                    out.push(Hop::Down(
                        link,
                        Down::To {
                            m,
                            frame: frame.clone(),
                            resync,
                        },
                    ));
                }
            }
            Down::Close { m } => match self.seats.remove(&m).map(|s| s.via) {
                Some(Via::Local(k)) => {
                    self.local.remove(&k);
                    out.push(Hop::Close(k));
                }
                Some(Via::Child(link, cm)) => {
                    self.child.remove(&(link, cm));
                    self.count_down(link);
                    out.push(Hop::Down(link, Down::Close { m: cm }));
                }
                None => {}
            },
        }
        out
    }

    fn seat(&mut self, via: Via<K, L>, info: MemberInfo) -> u64 {
        let m = self.next;
        self.next += 1;
        self.seats.insert(m, Seat { via, info });
        m
    }

    fn join_up(&self, m: u64, out: &mut Vec<Hop<K, L>>) {
        if self.up {
            out.push(Hop::Up(Up::join(m, &self.seats[&m].info)));
        }
    }

    fn unseat(&mut self, m: u64) -> Vec<Hop<K, L>> {
        self.seats.remove(&m);
        if self.up {
            vec![Hop::Up(Up::Leave { m })]
        } else {
            Vec::new()
        }
    }

    fn leave_child(&mut self, link: L, cm: u64) -> Vec<Hop<K, L>> {
        match self.child.remove(&(link, cm)) {
            Some(m) => {
                self.count_down(link);
                self.unseat(m)
            }
            None => Vec::new(),
        }
    }

    fn child_frame(&mut self, link: L, cm: u64, up: impl FnOnce(u64) -> Up) -> Vec<Hop<K, L>> {
        let Some(&m) = self.child.get(&(link, cm)) else {
            return Vec::new();
        };
        if !self.up {
            return vec![Hop::Down(
                link,
                Down::To {
                    m: vec![cm],
                    frame: unavailable_frame(),
                    resync: false,
                },
            )];
        }
        vec![Hop::Up(up(m))]
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
