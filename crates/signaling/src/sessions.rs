//! The WHIP and WHEP sessions this server created, by their URL id, and by
//! the node session that serves each (so that a node's `Closed` event
//! forgets one in O(1)).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use lumen_auth::Grant;
use lumen_node::SessionRef;

use crate::events::EventStream;
use crate::sync::{decrement, lock};

/// Which protocol a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Whip,
    Whep,
}

impl Kind {
    /// The first segment of its URLs.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }
}

/// What created a media session, so that only the same credential may
/// change or end it (`authn::may_touch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holder {
    /// No credential: the session URL alone is the capability.
    Anyone,
    /// A Bearer value, by its digest.
    Bearer(String),
    /// A logged-in user, by id.
    User(String),
}

/// What a session may do in its stream's chat, decided from its credential
/// when it is created (`chat:` and `moderate:` scopes, a logged-in user).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ChatRights {
    /// Who it chats as: the user id of a logged-in page, or a token's
    /// subject; `None` reads only.
    pub speaker: Option<String>,
    /// Whether it moderates (the `moderate:` scope, a moderator or admin,
    /// the stream's owner).
    pub moderates: bool,
}

/// One session as the HTTP side knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionEntry {
    pub kind: Kind,
    pub stream: String,
    /// Where the node serves it.
    pub session: SessionRef,
    pub etag: String,
    pub remote_ufrag: String,
    /// The offer's first video m-line: its index and its mid (WHEP layer
    /// selection names it by `mediaId`).
    pub video: Option<(usize, Option<String>)>,
    /// WHEP server-sent event streams created on this session, newest last.
    pub event_streams: Vec<EventStream>,
    /// The address that created it, for the per-client limits.
    pub client: Option<IpAddr>,
    /// The credentials it was opened with (it ends when one is revoked)
    /// and the user it counts against.
    pub grant: Grant,
    /// Who may change or end it.
    pub holder: Holder,
    /// Its rights in the stream's chat.
    pub chat: ChatRights,
}

/// Node sessions remembered as closed before their HTTP session was
/// registered (a `Closed` event that overtook the answer): enough for any
/// burst, bounded so it cannot grow.
const CLOSED_EARLY: usize = 1024;

#[derive(Default)]
pub(crate) struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, SessionEntry>,
    by_ref: HashMap<SessionRef, String>,
    closed_early: VecDeque<SessionRef>,
    per_client: HashMap<IpAddr, usize>,
    per_user: HashMap<String, usize>,
}

impl Inner {
    fn forget(&mut self, e: &SessionEntry) {
        if let Some(ip) = e.client {
            decrement(&mut self.per_client, &ip);
        }
        if let Some(u) = &e.grant.user_id {
            decrement(&mut self.per_user, u);
        }
    }
}

impl Sessions {
    /// Registers a new session; `false` (and nothing stored) when its node
    /// session already closed.
    pub fn insert(&self, id: String, e: SessionEntry) -> bool {
        let mut g = self.lock();
        if let Some(i) = g.closed_early.iter().position(|s| *s == e.session) {
            g.closed_early.remove(i);
            return false;
        }
        g.by_ref.insert(e.session, id.clone());
        if let Some(ip) = e.client {
            *g.per_client.entry(ip).or_default() += 1;
        }
        if let Some(u) = &e.grant.user_id {
            *g.per_user.entry(u.clone()).or_default() += 1;
        }
        g.by_id.insert(id, e);
        true
    }

    pub fn get(&self, id: &str) -> Option<SessionEntry> {
        self.lock().by_id.get(id).cloned()
    }

    /// The streams published here (by WHIP sessions), by name.
    pub fn published(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .lock()
            .by_id
            .values()
            .filter(|e| e.kind == Kind::Whip)
            .map(|e| e.stream.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The URL id of the WHIP session publishing `stream` here, if any.
    pub fn publisher_of(&self, stream: &str) -> Option<String> {
        self.lock()
            .by_id
            .iter()
            .find(|(_, e)| e.kind == Kind::Whip && e.stream == stream)
            .map(|(id, _)| id.clone())
    }

    /// The URL id of the session the node serves as `session`.
    pub fn id_of(&self, session: SessionRef) -> Option<String> {
        self.lock().by_ref.get(&session).cloned()
    }

    pub fn remove(&self, id: &str) -> Option<SessionEntry> {
        let mut g = self.lock();
        let e = g.by_id.remove(id)?;
        g.by_ref.remove(&e.session);
        g.forget(&e);
        Some(e)
    }

    /// Changes a session in place; `false` when there is no such session.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut SessionEntry)) -> bool {
        self.lock().by_id.get_mut(id).map(f).is_some()
    }

    /// The node closed `session`: forget its HTTP session.
    pub fn closed(&self, session: SessionRef) {
        let mut g = self.lock();
        match g.by_ref.remove(&session) {
            Some(id) => {
                if let Some(e) = g.by_id.remove(&id) {
                    g.forget(&e);
                }
            }
            None => {
                // Deleted already (nothing to do), or not registered yet.
                if g.closed_early.len() >= CLOSED_EARLY {
                    g.closed_early.pop_front();
                }
                g.closed_early.push_back(session);
            }
        }
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Sessions created from `client` that are still open.
    pub fn of_client(&self, client: IpAddr) -> usize {
        self.lock().per_client.get(&client).copied().unwrap_or(0)
    }

    /// Sessions whose credentials are held by `user` that are still open.
    pub fn of_user(&self, user: &str) -> usize {
        self.lock().per_user.get(user).copied().unwrap_or(0)
    }

    /// The sessions opened with `credential` (`key:…`, `jwt:…`, `user:…`),
    /// by URL id. A scan: revocations are rare.
    pub fn with_credential(&self, credential: &str) -> Vec<(String, SessionRef)> {
        self.lock()
            .by_id
            .iter()
            .filter(|(_, e)| e.grant.credentials.iter().any(|c| c == credential))
            .map(|(id, e)| (id.clone(), e.session))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumen_sfu::PeerId;

    fn entry(worker: usize, peer: u64) -> SessionEntry {
        SessionEntry {
            kind: Kind::Whep,
            stream: "cam".into(),
            session: SessionRef {
                worker,
                peer: PeerId(peer),
            },
            etag: "e".into(),
            remote_ufrag: "u".into(),
            video: None,
            event_streams: Vec::new(),
            client: Some(IpAddr::from([10, 0, 0, worker as u8])),
            grant: Grant {
                credentials: vec![format!("key:{worker}"), "user:u".to_string()],
                user_id: Some("u".to_string()),
            },
            holder: Holder::Anyone,
            chat: ChatRights::default(),
        }
    }

    #[test]
    fn sessions_are_found_by_credential_and_counted_per_user() {
        let s = Sessions::default();
        assert!(s.insert("a".into(), entry(0, 1)));
        assert!(s.insert("b".into(), entry(1, 1)));
        assert_eq!(s.of_user("u"), 2);
        let found = s.with_credential("key:1");
        assert_eq!(found, vec![("b".to_string(), entry(1, 1).session)]);
        assert_eq!(s.with_credential("user:u").len(), 2);
        assert!(s.with_credential("key:9").is_empty());
        s.remove("a");
        s.closed(entry(1, 1).session);
        assert_eq!(s.of_user("u"), 0);
        assert!(lock(&s.inner).per_user.is_empty());
    }

    #[test]
    fn a_node_close_forgets_the_session() {
        let s = Sessions::default();
        assert!(s.insert("a".into(), entry(0, 1)));
        assert!(s.insert("b".into(), entry(1, 1)));
        s.closed(entry(0, 1).session);
        assert!(s.get("a").is_none());
        assert!(s.get("b").is_some());
        assert_eq!(s.len(), 1);
        // Counted per client while open, forgotten after.
        assert_eq!(s.of_client(IpAddr::from([10, 0, 0, 0])), 0);
        assert_eq!(s.of_client(IpAddr::from([10, 0, 0, 1])), 1);
        s.remove("b");
        assert_eq!(s.of_client(IpAddr::from([10, 0, 0, 1])), 0);
        assert!(lock(&s.inner).per_client.is_empty());
    }

    #[test]
    fn a_close_that_overtook_the_answer_is_not_lost() {
        let s = Sessions::default();
        s.closed(entry(0, 7).session);
        assert!(!s.insert("late".into(), entry(0, 7)));
        assert!(s.get("late").is_none());
        // Remembered once only.
        assert!(s.insert("again".into(), entry(0, 7)));
    }

    #[test]
    fn early_closes_are_bounded() {
        let s = Sessions::default();
        for p in 0..(CLOSED_EARLY as u64 + 10) {
            s.closed(entry(0, p).session);
        }
        assert_eq!(lock(&s.inner).closed_early.len(), CLOSED_EARLY);
    }
}
