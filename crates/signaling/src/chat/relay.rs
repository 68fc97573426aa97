//! Chat over the relay tree (docs/chat.md, "Across nodes"): the node's side
//! of lumen-chat's `relay` envelopes.
//!
//! - **Up** (this node carries a stream from a parent): `relays.rs` tells
//!   the rooms' task which session of the node is the stream's relay link
//!   ([`ChatHandle::carry`]); the link's `lumen-relay` channel on that
//!   session is the way to the parent. The stream then has no room here but
//!   a [`Proxy`]: its members (this node's channels and its children's
//!   members) join the origin's room through the channel, their frames go
//!   up as sent, and what comes down goes to this node's channels through
//!   the usual fan-out and to the children's links. Nothing is stored here.
//!   While the link is down (the parent died, re-parenting) a frame is
//!   answered with the error `unavailable`; the next link's channel makes
//!   every member join again.
//! - **Down** (this node feeds children): each running relay link's chat
//!   ([`ChatHandle::child_link`]) is a link of the stream's [`Remotes`] when
//!   the room is here (this node is the origin), or of its proxy when this
//!   node is in the middle of the tree.
//!
//! Only a `lumen-relay` channel on a session this node made as a relay link
//! counts: a client that labels a channel so on its own session is ignored.

use std::collections::HashMap;
use std::sync::Arc;

use lumen_cascade::relay::{LinkChat, RelayChat};
use lumen_chat::relay::{Down, Hop, Proxy, Remotes, Up};
use lumen_chat::{MemberInfo, Output};
use lumen_node::{NodeHandle, SessionRef};
use lumen_sfu::SessionError;
use tokio::sync::mpsc;
use tokio::time::Duration;

use super::fanout::{At, Targets};
use super::{ChatHandle, ChatIn, Rooms, per_worker};

/// A link's chat: its number on this node (the relay link's id).
pub(crate) type LinkId = u64;

/// `lumen-relay` channels waiting for their `carry` at most.
const UNCLAIMED: usize = 256;

/// How long the way up waits before trying a full channel again.
const UP_RETRY: Duration = Duration::from_millis(20);

/// The relay side of the rooms' task.
#[derive(Default)]
pub(super) struct Relay {
    /// Streams whose room is up the tree.
    proxies: HashMap<String, Proxied>,
    /// The relay sessions this node carries streams through.
    carriers: HashMap<SessionRef, String>,
    /// `lumen-relay` channels opened on sessions not (yet) named by a
    /// `carry`: the link's channel may open before `relays.rs` has said
    /// which stream the session carries.
    unclaimed: HashMap<SessionRef, At>,
    /// This node's channels that are members of a proxied stream.
    pub(super) members: HashMap<At, String>,
    /// Running relay links this node feeds, with chat.
    children: HashMap<LinkId, Child>,
    /// The origin's side: the members behind each stream's child links.
    remotes: HashMap<String, Remotes<LinkId>>,
}

struct Proxied {
    proxy: Proxy<At, LinkId>,
    /// Whether `relays.rs` still carries the stream from a parent.
    carried: bool,
    up: Option<Upstream>,
    /// Per worker, this node's member channels (`None` until needed).
    all: Option<Vec<Targets>>,
}

/// The way to the parent: the relay session's chat channel, written by a
/// task of its own so that a full channel never holds the rooms' task.
struct Upstream {
    at: At,
    tx: mpsc::UnboundedSender<String>,
}

struct Child {
    stream: String,
    down: mpsc::Sender<String>,
}

impl ChatHandle {
    /// This node carries `stream` from a parent over the relay session
    /// `session`; `None`: it no longer does. Sent before the parent gets
    /// the session's answer, so it comes before the link's channel opens.
    pub(crate) async fn carry(&self, stream: &str, session: Option<SessionRef>) {
        if let Some(tx) = &self.tx {
            let _ = tx
                .send(ChatIn::Carry {
                    stream: stream.to_string(),
                    session,
                })
                .await;
        }
    }

    /// A relay link this node feeds (number `link`) started: its chat
    /// joins the stream's room here (or goes on up the tree).
    pub(crate) fn child_link(&self, link: LinkId, stream: &str, chat: RelayChat) {
        let Some(tx) = self.tx.clone() else {
            return;
        };
        let stream = stream.to_string();
        tokio::spawn(async move {
            let RelayChat { down, mut up } = chat;
            if tx
                .send(ChatIn::ChildOpen { link, stream, down })
                .await
                .is_err()
            {
                return;
            }
            while let Some(c) = up.recv().await {
                match c {
                    // The child's envelopes come only once it is open.
                    LinkChat::Open => {}
                    LinkChat::Message { binary, data } => {
                        if tx
                            .send(ChatIn::ChildData { link, binary, data })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    LinkChat::Closed => break,
                }
            }
            let _ = tx.send(ChatIn::ChildGone { link }).await;
        });
    }
}

impl Relay {
    /// Whether `stream`'s room is up the tree.
    pub(super) fn proxies(&self, stream: &str) -> bool {
        self.proxies.contains_key(stream)
    }

    /// Whether `session` is a relay link this node carries a stream
    /// through.
    pub(super) fn is_carrier(&self, session: &SessionRef) -> bool {
        self.carriers.contains_key(session) || self.unclaimed.contains_key(session)
    }
}

impl Rooms {
    /// `relays.rs` carries `stream` through `session` now (or no longer).
    pub(super) fn carry(&mut self, stream: String, session: Option<SessionRef>) {
        let old: Vec<SessionRef> = self
            .relay
            .carriers
            .iter()
            .filter(|(_, s)| **s == stream)
            .map(|(k, _)| *k)
            .collect();
        for s in old {
            self.relay.carriers.remove(&s);
            self.link_down(&stream);
        }
        match session {
            Some(session) => {
                self.relay.carriers.insert(session, stream.clone());
                let p = self.relay.proxies.entry(stream).or_insert_with(|| Proxied {
                    proxy: Proxy::new(),
                    carried: true,
                    up: None,
                    all: None,
                });
                p.carried = true;
                if let Some(at) = self.relay.unclaimed.remove(&session) {
                    self.upstream_open(at);
                }
            }
            None => {
                if let Some(p) = self.relay.proxies.get_mut(&stream) {
                    p.carried = false;
                }
                self.drop_idle_proxy(&stream);
            }
        }
    }

    /// The relay session's `lumen-relay` channel opened: the way up.
    pub(super) fn upstream_open(&mut self, at: At) {
        let Some(stream) = self.relay.carriers.get(&at.0).cloned() else {
            // Named by the `carry` that follows, or by nothing (then
            // ignored, and forgotten with its session).
            if self.relay.unclaimed.len() < UNCLAIMED {
                self.relay.unclaimed.insert(at.0, at);
            }
            return;
        };
        let Some(p) = self.relay.proxies.get_mut(&stream) else {
            return;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_up(self.node.clone(), at, rx));
        p.up = Some(Upstream { at, tx });
        tracing::info!(%stream, "chat: joined the origin's room through the relay link");
        let hops = p.proxy.link_up();
        self.hops(&stream, hops);
    }

    /// An envelope from the parent.
    pub(super) fn upstream_data(&mut self, at: At, binary: bool, data: &[u8]) {
        let Some(stream) = self.relay.carriers.get(&at.0).cloned() else {
            return;
        };
        let down = match Down::parse(binary, data) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(%stream, "chat: a bad envelope from the parent: {e}");
                return;
            }
        };
        let Some(p) = self.relay.proxies.get_mut(&stream) else {
            return;
        };
        let hops = p.proxy.from_parent(down);
        self.hops(&stream, hops);
    }

    /// The relay session's channel (or the session) closed.
    pub(super) fn upstream_closed(&mut self, at: At) {
        if self.relay.unclaimed.get(&at.0) == Some(&at) {
            self.relay.unclaimed.remove(&at.0);
        }
        if let Some(stream) = self.relay.carriers.get(&at.0).cloned()
            && self
                .relay
                .proxies
                .get(&stream)
                .and_then(|p| p.up.as_ref())
                .is_some_and(|u| u.at == at)
        {
            self.link_down(&stream);
        }
    }

    /// A relay session is gone.
    pub(super) fn carrier_gone(&mut self, session: SessionRef) {
        self.relay.unclaimed.remove(&session);
        if let Some(stream) = self.relay.carriers.remove(&session) {
            self.link_down(&stream);
        }
    }

    fn link_down(&mut self, stream: &str) {
        if let Some(p) = self.relay.proxies.get_mut(stream)
            && p.up.take().is_some()
        {
            tracing::info!(%stream, "chat: the link to the origin's room is down");
            p.proxy.link_down();
        }
    }

    /// A channel of this node joins a proxied stream's room.
    pub(super) fn proxy_join(&mut self, at: At, stream: String, info: MemberInfo) {
        let Some(p) = self.relay.proxies.get_mut(&stream) else {
            return;
        };
        let hops = p.proxy.join_local(at, info);
        p.all = None;
        self.relay.members.insert(at, stream.clone());
        self.hops(&stream, hops);
    }

    /// A message on a proxied member's channel.
    pub(super) fn proxy_data(&mut self, at: At, binary: bool, data: &[u8]) {
        let Some(stream) = self.relay.members.get(&at).cloned() else {
            return;
        };
        let Some(p) = self.relay.proxies.get_mut(&stream) else {
            return;
        };
        let hops = p.proxy.frame_local(&at, binary, data);
        self.hops(&stream, hops);
    }

    /// A proxied member's channel closed.
    pub(super) fn proxy_leave(&mut self, at: At) {
        let Some(stream) = self.relay.members.remove(&at) else {
            return;
        };
        self.fanout.forget(at);
        if let Some(p) = self.relay.proxies.get_mut(&stream) {
            let hops = p.proxy.leave_local(&at);
            p.all = None;
            self.hops(&stream, hops);
        }
        self.drop_idle_proxy(&stream);
    }

    /// A proxied member's channel lags: a fresh history from the origin.
    pub(super) fn proxy_resync(&mut self, at: At) {
        let Some(stream) = self.relay.members.get(&at).cloned() else {
            return;
        };
        if let Some(p) = self.relay.proxies.get_mut(&stream) {
            let hops = p.proxy.resync_local(&at);
            self.hops(&stream, hops);
        }
    }

    /// A relay link this node feeds has chat.
    pub(super) fn child_open(&mut self, link: LinkId, stream: String, down: mpsc::Sender<String>) {
        self.relay.children.insert(link, Child { stream, down });
    }

    /// An envelope from a child link. Returns the stream whose room must
    /// exist (loaded) first, when this node is the origin and has none.
    pub(super) fn child_data(
        &mut self,
        link: LinkId,
        binary: bool,
        data: &[u8],
        now: u64,
    ) -> Option<(String, Up)> {
        let stream = self.relay.children.get(&link)?.stream.clone();
        let up = match Up::parse(binary, data) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(%stream, link, "chat: a bad envelope from a child: {e}");
                return None;
            }
        };
        if let Some(p) = self.relay.proxies.get_mut(&stream) {
            let hops = p.proxy.from_child(link, up);
            self.hops(&stream, hops);
            return None;
        }
        if !self.rooms.contains_key(&stream) {
            // Only a join makes a room; anything else is for a member that
            // is not in it.
            return matches!(up, Up::Join { .. }).then_some((stream, up));
        }
        self.remote_up(&stream, link, up, now);
        None
    }

    /// Applies a child's envelope to the room here (the origin's).
    pub(super) fn remote_up(&mut self, stream: &str, link: LinkId, up: Up, now: u64) {
        let Some(room) = self.rooms.get_mut(stream) else {
            return;
        };
        let remotes = self.relay.remotes.entry(stream.to_string()).or_default();
        let (outputs, resync) = remotes.handle(room, link, up, now);
        let batch = super::take_batch(room, self.live.get(stream));
        if !batch.is_empty() {
            self.writer.store(stream.to_string(), batch);
        }
        self.send(stream, outputs, resync);
        self.drop_idle_room(stream);
    }

    /// A child link ended: its members leave.
    pub(super) fn child_gone(&mut self, link: LinkId) {
        let Some(child) = self.relay.children.remove(&link) else {
            return;
        };
        let stream = child.stream;
        if let Some(p) = self.relay.proxies.get_mut(&stream) {
            let hops = p.proxy.child_gone(link);
            self.hops(&stream, hops);
            self.drop_idle_proxy(&stream);
            return;
        }
        if let (Some(room), Some(remotes)) = (
            self.rooms.get_mut(&stream),
            self.relay.remotes.get_mut(&stream),
        ) {
            remotes.link_gone(room, link);
        }
        self.drop_idle_room(&stream);
    }

    /// The room's outputs that go down child links; the rest, for this
    /// node's channels.
    pub(super) fn route_remote(
        &mut self,
        stream: &str,
        outputs: Vec<Output>,
        resync: bool,
    ) -> Vec<Output> {
        let Some(remotes) = self.relay.remotes.get_mut(stream) else {
            return outputs;
        };
        let (local, down) = remotes.route(outputs, resync);
        for (link, d) in down {
            self.send_child(link, d);
        }
        local
    }

    /// Forgets a room with no members, and its remote members' map.
    pub(super) fn drop_idle_room(&mut self, stream: &str) {
        if self
            .rooms
            .get(stream)
            .is_some_and(|r| r.member_count() == 0)
        {
            // The next member restarts it from the store.
            self.rooms.remove(stream);
        }
        if !self.rooms.contains_key(stream) {
            self.relay.remotes.remove(stream);
        }
    }

    fn drop_idle_proxy(&mut self, stream: &str) {
        if self
            .relay
            .proxies
            .get(stream)
            .is_some_and(|p| !p.carried && p.proxy.is_empty())
        {
            self.relay.proxies.remove(stream);
        }
    }

    fn send_child(&mut self, link: LinkId, d: Down) {
        if let Some(c) = self.relay.children.get(&link)
            && c.down.try_send(d.to_json()).is_err()
        {
            tracing::warn!(stream = %c.stream, link, "chat: a child link's queue is full: a frame dropped");
        }
    }

    /// Does what a proxy asked.
    fn hops(&mut self, stream: &str, hops: Vec<Hop<At, LinkId>>) {
        for h in hops {
            match h {
                Hop::Up(up) => {
                    if let Some(u) = self.relay.proxies.get(stream).and_then(|p| p.up.as_ref()) {
                        let _ = u.tx.send(up.to_json());
                    }
                }
                Hop::Down(link, d) => self.send_child(link, d),
                Hop::Local { to, frame, resync } => {
                    let frame: Arc<str> = frame.into();
                    match to {
                        Some(at) => {
                            let to: Targets = Arc::new([(at.0.peer, at.1)]);
                            self.fanout.send(at.0.worker, to, frame, resync);
                        }
                        None => {
                            let workers = self.fanout.workers();
                            let Some(p) = self.relay.proxies.get_mut(stream) else {
                                continue;
                            };
                            let proxy = &p.proxy;
                            let all = p.all.get_or_insert_with(|| {
                                let members: HashMap<At, At> =
                                    proxy.locals().map(|at| (*at, *at)).collect();
                                per_worker(&members, workers)
                            });
                            for (worker, to) in all.iter().enumerate() {
                                if !to.is_empty() {
                                    self.fanout.send(worker, to.clone(), frame.clone(), resync);
                                }
                            }
                        }
                    }
                }
                Hop::Close(at) => {
                    self.relay.members.remove(&at);
                    self.fanout.forget(at);
                    if let Some(p) = self.relay.proxies.get_mut(stream) {
                        p.all = None;
                    }
                }
            }
        }
    }
}

/// Writes envelopes to the parent on the relay session's chat channel, in
/// order; a full channel is tried again shortly, a closed one ends it.
async fn write_up(node: NodeHandle, at: At, mut rx: mpsc::UnboundedReceiver<String>) {
    while let Some(text) = rx.recv().await {
        let data: Arc<[u8]> = text.into_bytes().into();
        loop {
            let sent = node
                .send_each(at.0.worker, false, vec![(at.0.peer, at.1, data.clone())])
                .await;
            match sent.map(|mut r| r.pop()) {
                Ok(Some(Ok(()))) => break,
                Ok(Some(Err(SessionError::ChannelFull))) => tokio::time::sleep(UP_RETRY).await,
                other => {
                    tracing::debug!("chat: the way up closed: {other:?}");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_link_and_the_chat_agree_on_the_channels_label() {
        assert_eq!(lumen_cascade::relay::CHAT_LABEL, lumen_chat::relay::LABEL);
        assert_ne!(lumen_chat::relay::LABEL, super::super::LABEL);
    }
}
