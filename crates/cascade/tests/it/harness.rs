//! A relay tree on a virtual clock: several nodes (one `Sfu` each), relay
//! links between them made of the parent's sink and the sans-IO link core
//! ([`LinkSender`], the one the tokio shell runs), browsers (str0m peers,
//! lumen-sfu's scenario browsers) that publish or watch, and a seeded
//! network emulator (str0m-netem) on every link, each way. Time jumps to
//! the next thing that happens anywhere.
//!
//! What the control plane does (placing, the HTTP exchange of offer and
//! answer, noticing a dead parent) is the test's job: [`Tree::relay`]
//! makes a link the way `relays.rs` does (attach a sink on the parent,
//! take its description, offer; the child's SFU answers the offer as the
//! stream's publisher), and [`Tree::reparent`] the way its carry task
//! heals (close the old link's session on the child, link to another
//! parent).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lumen_cascade::relay::{LinkChat, LinkEnd, LinkOffer, LinkOutput, LinkSender};
use lumen_sfu::{Input, Output, PeerId, Sfu, SfuConfig, SfuEvent, SinkBody, SinkId, SinkMessage};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Rid, Simulcast, SimulcastLayer};
use str0m_netem::{Netem, NetemConfig};

use crate::browser::released;
pub use crate::browser::{Browser, Got, Packet};

/// One lumen node of the tree (one worker).
pub struct Node {
    pub sfu: Sfu,
    pub addr: SocketAddr,
    pub events: Vec<SfuEvent>,
    /// False once killed: it neither runs nor receives.
    pub alive: bool,
    timeout: Instant,
}

/// A relay link: a sink of `stream` on `parent`, sent by a [`LinkSender`]
/// to `child`, where it is the stream's publisher.
pub struct Link {
    pub parent: usize,
    pub child: usize,
    pub stream: String,
    /// The sink's id on the parent (`SinkId::External`).
    pub sink: u64,
    generation: u64,
    /// The link's session on the child.
    pub child_peer: PeerId,
    pub sender: LinkSender,
    /// How it ended by itself, if it did, and when.
    pub ended: Option<LinkEnd>,
    pub ended_at: Option<Instant>,
    /// Its parent died with it, or the test closed it: nothing runs.
    pub gone: bool,
    /// What the child did on the link's chat channel, in order.
    pub chat: Vec<LinkChat>,
    addr: SocketAddr,
    timeout: Instant,
    /// Parent to child.
    down: Netem<Packet>,
    /// Child to parent.
    up: Netem<Packet>,
}

pub struct Tree {
    pub start: Instant,
    pub now: Instant,
    pub nodes: Vec<Node>,
    pub links: Vec<Link>,
    pub browsers: Vec<Browser>,
    /// Sink messages no link claims yet: (node, sink, message).
    unclaimed: VecDeque<(usize, u64, SinkMessage)>,
    next_sink: u64,
    seed: u64,
    stuck: u32,
}

impl Tree {
    pub fn new(seed: u64) -> Tree {
        let start = Instant::now();
        Tree {
            start,
            now: start,
            nodes: Vec::new(),
            links: Vec::new(),
            browsers: Vec::new(),
            unclaimed: VecDeque::new(),
            next_sink: 1,
            seed,
            stuck: 0,
        }
    }

    /// A node; returns its index.
    pub fn add_node(&mut self) -> usize {
        let k = self.nodes.len();
        let addr = SocketAddr::from((Ipv4Addr::new(10, 0, k as u8 + 1, 1), 8000));
        self.nodes.push(Node {
            sfu: Sfu::new(SfuConfig::new(vec![addr]), self.now),
            addr,
            events: Vec::new(),
            alive: true,
            timeout: self.now,
        });
        k
    }

    /// A browser on `node` publishing three simulcast layers h, m, l of
    /// H.264 (about 2.5 Mbps, 800 kbps and 200 kbps at 30 fps) and Opus.
    pub fn simulcast_publisher(&mut self, node: usize, stream: &str, up: NetemConfig) -> usize {
        let i = self.new_browser(up, NetemConfig::new());
        let layers: Vec<(Rid, usize)> = vec![
            (Rid::from("h"), 10_400),
            (Rid::from("m"), 3_300),
            (Rid::from("l"), 800),
        ];
        let b = &mut self.browsers[i];
        let simulcast = Simulcast {
            send: layers
                .iter()
                .map(|(rid, _)| SimulcastLayer {
                    rid: *rid,
                    attributes: None,
                })
                .collect(),
            recv: Vec::new(),
        };
        let mut api = b.rtc.sdp_api();
        let video = api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            None,
            None,
            Some(simulcast),
        );
        let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().expect("changes");
        b.video_mid = Some(video);
        b.audio_mid = Some(audio);
        b.layers = layers;
        let now = self.now;
        let answer = self.nodes[node]
            .sfu
            .publish(now, stream, &offer.to_sdp_string())
            .expect("publish");
        self.finish(i, pending, &answer.answer_sdp, answer.peer);
        self.browsers[i].publishing = true;
        self.drain();
        i
    }

    /// A browser watching `stream` on `node` over a link (node to
    /// browser) with these conditions.
    pub fn viewer(&mut self, node: usize, stream: &str, down: NetemConfig) -> usize {
        let i = self.new_browser(NetemConfig::new(), down);
        let b = &mut self.browsers[i];
        let mut api = b.rtc.sdp_api();
        let video = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let audio = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().expect("changes");
        b.video_mid = Some(video);
        b.audio_mid = Some(audio);
        let now = self.now;
        let answer = self.nodes[node]
            .sfu
            .subscribe(now, stream, &offer.to_sdp_string())
            .expect("subscribe");
        self.finish(i, pending, &answer.answer_sdp, answer.peer);
        self.drain();
        i
    }

    /// A relay link of `stream` from `parent` to `child` over a network
    /// link with these conditions (each way), made as `relays.rs` makes
    /// one; returns its index.
    pub fn relay(&mut self, parent: usize, child: usize, stream: &str, net: NetemConfig) -> usize {
        let sink = self.next_sink;
        self.next_sink += 1;
        let now = self.now;
        let generation = self.nodes[parent]
            .sfu
            .attach_sink(now, stream, SinkId::External(sink))
            .expect("the parent carries the stream");
        self.drain();
        // The sink's first message: the stream's description.
        let mut mine: VecDeque<SinkMessage> = VecDeque::new();
        self.unclaimed.retain(|(n, s, m)| {
            let ours = *n == parent && *s == sink;
            if ours {
                mine.push_back(m.clone());
            }
            !ours
        });
        let Some(SinkBody::Source { tracks, .. }) = mine.pop_front().map(|m| m.into_parts().1)
        else {
            panic!("the sink's first message is not the description");
        };
        let l = self.links.len();
        let addr = SocketAddr::from((Ipv4Addr::new(10, 0, parent as u8 + 1, 2), 9000 + l as u16));
        let offer = LinkOffer::new(now, tracks, addr).expect("offer");
        let answer = self.nodes[child]
            .sfu
            .publish(now, stream, offer.offer_sdp())
            .expect("the child takes the link as the stream's publisher");
        let sender = offer.accept(&answer.answer_sdp).expect("answer accepted");
        let seed = self.seed.wrapping_mul(31).wrapping_add(100 + l as u64);
        self.links.push(Link {
            parent,
            child,
            stream: stream.to_string(),
            sink,
            generation,
            child_peer: answer.peer,
            sender,
            ended: None,
            ended_at: None,
            gone: false,
            chat: Vec::new(),
            addr,
            timeout: now,
            down: Netem::new(net.seed(seed * 2 + 1)),
            up: Netem::new(net.seed(seed * 2 + 2)),
        });
        for m in mine {
            feed(&mut self.links[l].sender, m);
        }
        self.drain();
        l
    }

    /// The child of link `l` re-parents to `parent`, as the carry task
    /// does when its parent stops answering: the old link's session on the
    /// child ends (its viewers stay), a new link is made.
    pub fn reparent(&mut self, l: usize, parent: usize, net: NetemConfig) -> usize {
        let (child, peer, stream) = {
            let link = &mut self.links[l];
            link.gone = true;
            (link.child, link.child_peer, link.stream.clone())
        };
        self.nodes[child].sfu.close(peer);
        self.drain();
        self.relay(parent, child, &stream, net)
    }

    /// The node stops at once (SIGKILL): no packet in or out, its links
    /// to its children stop with it.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].alive = false;
        for link in &mut self.links {
            if link.parent == node {
                link.gone = true;
            }
        }
    }

    /// Runs the tree until `d` of virtual time has passed.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            self.step(until);
        }
    }

    /// Runs until `cond` holds or `limit` of virtual time passed; returns
    /// whether it held.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Tree) -> bool) -> bool {
        let until = self.now + limit;
        while self.now < until {
            if cond(self) {
                return true;
            }
            self.step(until);
        }
        cond(self)
    }

    fn new_browser(&mut self, up: NetemConfig, down: NetemConfig) -> usize {
        let i = self.browsers.len();
        let addr = SocketAddr::from((Ipv4Addr::new(10, 1, 0, (i + 1) as u8), 5000));
        let seed = self.seed.wrapping_mul(1000).wrapping_add(i as u64);
        self.browsers
            .push(Browser::new(self.now, addr, seed, up, down));
        i
    }

    fn finish(
        &mut self,
        i: usize,
        pending: str0m::change::SdpPendingOffer,
        answer: &str,
        peer: PeerId,
    ) {
        let b = &mut self.browsers[i];
        b.answer_sdp = answer.to_string();
        let answer = SdpAnswer::from_sdp_string(answer).expect("the SFU's answer parses");
        b.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("the SFU's answer is accepted");
        b.session = Some(peer);
        b.next_timeout = self.now;
    }

    fn step(&mut self, until: Instant) {
        let mut next = until;
        for n in self.nodes.iter().filter(|n| n.alive) {
            next = next.min(n.timeout);
        }
        for l in self.links.iter().filter(|l| !l.gone) {
            next = next.min(l.timeout);
        }
        for l in &self.links {
            next = next.min(l.down.poll_timeout()).min(l.up.poll_timeout());
        }
        for b in &self.browsers {
            next = next.min(b.next_wake());
        }
        if next > self.now {
            self.now = next;
            self.stuck = 0;
        } else {
            // Something keeps asking for "now": let time move, as lumen-sfu's
            // scenario world does.
            self.stuck += 1;
            if self.stuck > 20 {
                self.now += Duration::from_millis(1);
                self.stuck = 0;
            }
        }
        let now = self.now;

        // What the network links release.
        for i in 0..self.browsers.len() {
            let (to_node, to_browser) = self.browsers[i].released(now);
            for p in to_node {
                self.deliver_to_node(now, &p);
            }
            self.browsers[i].receive(now, to_browser);
        }
        for l in 0..self.links.len() {
            let (to_child, to_parent) = {
                let link = &mut self.links[l];
                (released(&mut link.down, now), released(&mut link.up, now))
            };
            for p in to_child {
                self.deliver_to_node(now, &p);
            }
            let link = &mut self.links[l];
            if !link.gone {
                for p in to_parent {
                    link.sender.handle_receive(now, p.from, &p.data);
                }
            }
        }

        // Timers.
        for n in self.nodes.iter_mut().filter(|n| n.alive) {
            if now >= n.timeout {
                n.sfu.handle_input(Input::Timeout(now));
            }
        }
        for l in self.links.iter_mut().filter(|l| !l.gone) {
            if now >= l.timeout {
                l.sender.handle_timeout(now);
            }
        }
        for b in &mut self.browsers {
            b.tick(now, self.start);
        }
        self.drain();
    }

    fn deliver_to_node(&mut self, now: Instant, p: &Packet) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.addr == p.to && n.alive) {
            n.sfu.handle_input(Input::Receive {
                now,
                source: p.from,
                destination: p.to,
                data: &p.data,
            });
        }
    }

    /// Drains every node and link until none has anything more for
    /// another (sink messages one way, keyframe requests the other).
    fn drain(&mut self) {
        let now = self.now;
        loop {
            let mut busy = false;
            for k in 0..self.nodes.len() {
                if self.nodes[k].alive {
                    busy |= self.drain_node(k, now);
                }
            }
            for l in 0..self.links.len() {
                if !self.links[l].gone {
                    busy |= self.drain_link(l, now);
                }
            }
            if !busy {
                break;
            }
        }
        for b in &mut self.browsers {
            b.drain(now);
        }
    }

    /// Answers whether it handed a link something.
    fn drain_node(&mut self, k: usize, now: Instant) -> bool {
        let mut fed = false;
        loop {
            match self.nodes[k].sfu.poll_output() {
                Output::Transmit(t) => {
                    let p = Packet {
                        from: t.source,
                        to: t.destination,
                        data: t.contents.to_vec(),
                    };
                    if let Some(b) = self.browsers.iter_mut().find(|b| b.addr == p.to) {
                        b.down.handle_input(str0m_netem::Input::Packet(now, p));
                    } else if let Some(l) = self
                        .links
                        .iter_mut()
                        .find(|l| l.addr == p.to && l.child == k)
                    {
                        l.up.handle_input(str0m_netem::Input::Packet(now, p));
                    }
                }
                Output::Event(e) => self.nodes[k].events.push(e),
                Output::Sink {
                    to: SinkId::External(n),
                    message,
                } => {
                    match self
                        .links
                        .iter_mut()
                        .find(|l| l.parent == k && l.sink == n && !l.gone)
                    {
                        Some(l) => {
                            feed(&mut l.sender, message);
                            fed = true;
                        }
                        None => self.unclaimed.push_back((k, n, message)),
                    }
                }
                Output::Sink { to, .. } => panic!("no sink {to:?} in this tree"),
                Output::Timeout(t) => {
                    let node = &mut self.nodes[k];
                    node.sfu.sent(now);
                    node.timeout = t;
                    return fed;
                }
            }
        }
    }

    /// Answers whether it handed its parent something.
    fn drain_link(&mut self, l: usize, now: Instant) -> bool {
        let mut told = false;
        loop {
            let link = &mut self.links[l];
            match link.sender.poll_output() {
                LinkOutput::Transmit(t) => {
                    let p = Packet {
                        from: t.source,
                        to: t.destination,
                        data: t.contents.to_vec(),
                    };
                    link.down.handle_input(str0m_netem::Input::Packet(now, p));
                }
                LinkOutput::KeyframeRequest(rid) => {
                    let (parent, sink, stream) = (link.parent, link.sink, link.stream.clone());
                    self.nodes[parent].sfu.handle_sink_message(
                        now,
                        SinkId::External(sink),
                        SinkMessage::keyframe(&stream, rid),
                    );
                    told = true;
                }
                LinkOutput::Chat(c) => link.chat.push(c),
                LinkOutput::End(end) => {
                    // As the shell does: the sink detaches.
                    link.ended = Some(end);
                    link.ended_at = Some(now);
                    link.gone = true;
                    let (parent, sink, generation) = (link.parent, link.sink, link.generation);
                    let detach = SinkMessage::detach(&link.stream, generation);
                    self.nodes[parent]
                        .sfu
                        .handle_sink_message(now, SinkId::External(sink), detach);
                    return true;
                }
                LinkOutput::Timeout(t) => {
                    link.timeout = t;
                    return told;
                }
            }
        }
    }
}

/// Hands a sink message to a link, as the shell hands a feed's events.
fn feed(sender: &mut LinkSender, message: SinkMessage) {
    match message.into_parts().1 {
        SinkBody::Source { tracks, fresh, .. } => sender.handle_source(&tracks, fresh),
        SinkBody::Packets(p) => sender.handle_packets(p),
        _ => {}
    }
}
