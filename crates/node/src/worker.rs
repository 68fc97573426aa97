//! One worker (a thread and its runtime): owns its UDP socket, its timer,
//! its command channel and its mirror channel, and drives the sans-IO
//! `Sfu` from them. After every input it drains the SFU's outputs
//! (str0m's rule), sends the datagrams as GSO trains, hands mirror
//! messages to other workers, external sinks' messages to their feeds,
//! and events to the node's event stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lumen_sfu::{
    IceCredentials, Input, LayerRequest, MediaPacket, Output, PeerId, Rid, SessionAnswer,
    SessionError, Sfu, SfuConfig, SfuEvent, SinkId, SinkMessage, ViewerLayer,
};
use lumen_udp::Outbox;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::mirror::{MirrorLinks, Mirrored};

/// One message for one data channel of a worker's peer (bytes shared by
/// the channels that get the same message).
pub type ChannelSend = (PeerId, lumen_sfu::ChannelId, Arc<[u8]>);
use crate::feed::{FeedTx, Sent};
use crate::{NodeError, NodeEvent, SessionRef, ViewerState, WorkerSnapshot};

/// Datagrams read in one go before the worker polls its outputs.
const RECV_BATCH: usize = 64;
/// Mirror messages taken in one go.
const MIRROR_BATCH: usize = 64;
/// Commands queued towards one worker before senders wait.
const COMMAND_QUEUE: usize = 256;

/// A command for a worker; each carries the channel for its answer.
pub(crate) enum Command {
    Publish {
        stream: String,
        offer: String,
        reply: oneshot::Sender<Result<SessionAnswer, SessionError>>,
    },
    Subscribe {
        stream: String,
        offer: String,
        reply: oneshot::Sender<Result<SessionAnswer, SessionError>>,
    },
    Close {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    Candidates {
        peer: PeerId,
        lines: Vec<String>,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    /// Messages to data channels of this worker's peers, in order, each
    /// answered (the same bytes shared by many channels are one `Arc`).
    SendChannel {
        to: Vec<ChannelSend>,
        binary: bool,
        reply: oneshot::Sender<Vec<Result<(), SessionError>>>,
    },
    RestartIce {
        peer: PeerId,
        ufrag: String,
        pwd: String,
        reply: oneshot::Sender<Result<IceCredentials, SessionError>>,
    },
    Snapshot {
        reply: oneshot::Sender<WorkerSnapshot>,
    },
    /// On a stream's origin: attach a sink (a mirror on another worker).
    /// Answered once the sink's first messages are on their way.
    AttachSink {
        stream: String,
        sink: SinkId,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    /// On a stream's origin: attach an external sink that hands its
    /// messages to `feed`. Answered with the attachment's generation.
    AttachFeed {
        stream: String,
        id: u64,
        feed: FeedTx,
        reply: oneshot::Sender<Result<u64, SessionError>>,
    },
    /// An external sink asks for a keyframe of a layer.
    FeedKeyframe { id: u64, rid: Option<Rid> },
    /// An external sink hands in packets of layers it makes (a
    /// transcoder's rungs).
    FeedInject { id: u64, packets: Vec<MediaPacket> },
    /// An external sink detaches (answered once it is, if asked).
    DetachFeed {
        id: u64,
        reply: Option<oneshot::Sender<()>>,
    },
    SetLayer {
        peer: PeerId,
        stream: String,
        request: LayerRequest,
        render_size: Option<(u32, u32)>,
        reply: oneshot::Sender<Result<Option<ViewerLayer>, NodeError>>,
    },
    ViewerState {
        peer: PeerId,
        stream: String,
        reply: oneshot::Sender<Option<ViewerState>>,
    },
}

/// The node's handle on one worker.
#[derive(Clone)]
pub(crate) struct WorkerHandle {
    pub tx: mpsc::Sender<Command>,
    pub local: SocketAddr,
    pub announced: SocketAddr,
    /// Peers on the worker, as it last counted them (placement reads it).
    pub load: Arc<AtomicUsize>,
}

/// Starts worker `index` on `socket`, bound to `local` and announced in
/// ICE candidates as `announced`, on a thread of its own with a runtime of
/// its own (the socket moves to that runtime's reactor). As tasks of the
/// server's shared runtime, a wake-up of one worker (a mirror batch, a
/// datagram) could pull another runtime thread onto the CPU a worker was
/// running on. The returned task ends when the worker's thread does.
pub(crate) fn spawn(
    index: usize,
    sfu: SfuConfig,
    socket: UdpSocket,
    (local, announced): (SocketAddr, SocketAddr),
    links: MirrorLinks,
    events: mpsc::UnboundedSender<NodeEvent>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<(WorkerHandle, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let load = Arc::new(AtomicUsize::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let socket = socket.into_std()?;
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let worker_load = load.clone();
    std::thread::Builder::new()
        .name(format!("lumen-worker-{index}"))
        .spawn(move || {
            runtime.block_on(async move {
                let socket = match UdpSocket::from_std(socket) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(worker = index, error = %e, "the worker's socket");
                        return;
                    }
                };
                let worker = Worker {
                    index,
                    sfu: Sfu::new(sfu, Instant::now()),
                    socket,
                    announced,
                    outbox: Outbox::new().recycling(lumen_sfu::recycle_datagram),
                    mirror_to: links.to,
                    mirror_dropped: AtomicU64::new(0),
                    feeds: HashMap::new(),
                    sink_dropped: 0,
                    events,
                    load: worker_load,
                    started: Instant::now(),
                    busy: Duration::ZERO,
                };
                worker.run(rx, links.rx, stop).await;
            });
            let _ = done_tx.send(());
        })?;
    let task = tokio::spawn(async move {
        let _ = done_rx.await;
    });
    Ok((
        WorkerHandle {
            tx,
            local,
            announced,
            load,
        },
        task,
    ))
}

struct Worker {
    index: usize,
    sfu: Sfu,
    socket: UdpSocket,
    announced: SocketAddr,
    outbox: Outbox,
    mirror_to: Vec<mpsc::Sender<Mirrored>>,
    mirror_dropped: AtomicU64,
    /// The external sinks attached here, by number.
    feeds: HashMap<u64, FeedTx>,
    /// Packet batches dropped because a feed was full.
    sink_dropped: u64,
    events: mpsc::UnboundedSender<NodeEvent>,
    load: Arc<AtomicUsize>,
    started: Instant,
    busy: Duration,
}

impl Worker {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut mirror_rx: mpsc::Receiver<Mirrored>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; 2048];
        loop {
            let work_start = Instant::now();
            let deadline = self.drain().await;
            self.load.store(self.sfu.peer_count(), Ordering::Relaxed);
            self.busy += work_start.elapsed();
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
            tokio::select! {
                biased;
                // (The guard wait_for returns must not live across an await.)
                _ = async { stop.wait_for(|s| *s).await.is_ok() } => break,
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    let t = Instant::now();
                    // What other workers sent first: an attach that preceded
                    // this command (a viewer's offer) must be in place.
                    while let Ok((from, m)) = mirror_rx.try_recv() {
                        self.sfu.handle_sink_message(Instant::now(), SinkId::Worker(from), m);
                    }
                    self.command(cmd).await;
                    self.busy += t.elapsed();
                }
                m = mirror_rx.recv() => {
                    let t = Instant::now();
                    if let Some((from, m)) = m {
                        self.sfu.handle_sink_message(t, SinkId::Worker(from), m);
                        for _ in 1..MIRROR_BATCH {
                            match mirror_rx.try_recv() {
                                Ok((from, m)) => self.sfu.handle_sink_message(
                                    Instant::now(), SinkId::Worker(from), m,
                                ),
                                Err(_) => break,
                            }
                        }
                    }
                    self.busy += t.elapsed();
                }
                r = self.socket.recv_from(&mut buf) => {
                    let t = Instant::now();
                    match r {
                        Ok((n, source)) => {
                            self.sfu.handle_input(Input::Receive {
                                now: t, source, destination: self.announced, data: &buf[..n],
                            });
                            for _ in 1..RECV_BATCH {
                                match self.socket.try_recv_from(&mut buf) {
                                    Ok((n, source)) => self.sfu.handle_input(Input::Receive {
                                        now: Instant::now(), source,
                                        destination: self.announced, data: &buf[..n],
                                    }),
                                    Err(_) => break,
                                }
                            }
                        }
                        // ICMP errors from a peer that went away surface here on Linux.
                        Err(e) => tracing::debug!(worker = self.index, error = %e, "recv_from"),
                    }
                    self.busy += t.elapsed();
                }
                _ = sleep => {}
            }
            // Timers are due whichever branch woke the loop: a socket that is
            // never empty must not hold back retransmissions and reports.
            let now = Instant::now();
            if now >= deadline {
                self.sfu.handle_input(Input::Timeout(now));
            }
        }
        for peer in self.sfu.peers() {
            self.sfu.close(peer);
        }
        self.drain().await;
    }

    /// Drains the SFU's outputs, then sends what they held; returns when it
    /// next wants the time.
    async fn drain(&mut self) -> Instant {
        loop {
            match self.sfu.poll_output() {
                Output::Transmit(t) => {
                    self.outbox.push(t.destination, t.contents.into());
                    if self.outbox.is_full() {
                        self.outbox.flush(&self.socket).await;
                    }
                }
                Output::Sink { to, message } => self.hand_to_sink(to, message),
                Output::Event(e) => self.event(e),
                Output::Timeout(t) => {
                    self.outbox.flush(&self.socket).await;
                    self.sfu.sent(Instant::now());
                    return t;
                }
            }
        }
    }

    fn hand_to_sink(&mut self, to: SinkId, message: SinkMessage) {
        match to {
            SinkId::Worker(w) => {
                let sent = self
                    .mirror_to
                    .get(w)
                    .is_some_and(|tx| tx.try_send((self.index, message)).is_ok());
                if !sent {
                    // The other worker is that far behind (or gone): its
                    // viewers lose these packets rather than this one stall.
                    self.mirror_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            SinkId::External(id) => {
                // None: detached meanwhile; what was in flight is moot.
                let Some(feed) = self.feeds.get_mut(&id) else {
                    return;
                };
                match feed.send(message) {
                    Sent::Queued => {}
                    // Its reader is slower than the stream: it loses these
                    // packets (and is told) rather than hold this worker.
                    Sent::Dropped => self.sink_dropped += 1,
                    // Dropped without a word reaching here (the command
                    // queue was full): detach it now.
                    Sent::Closed => self.detach_feed(id),
                }
            }
            // A kind of sink this shell does not serve yet.
            _ => {
                self.mirror_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Forgets an external sink and detaches it from its stream.
    fn detach_feed(&mut self, id: u64) {
        if let Some(f) = self.feeds.remove(&id) {
            let detach = SinkMessage::detach(&f.stream, f.generation);
            self.sfu
                .handle_sink_message(Instant::now(), SinkId::External(id), detach);
        }
    }

    fn event(&self, e: SfuEvent) {
        let worker = self.index;
        let session = |peer| SessionRef { worker, peer };
        let ev = match e {
            SfuEvent::Connected { peer, role, stream } => {
                tracing::info!(worker, %peer, ?role, %stream, "session connected");
                NodeEvent::Connected {
                    session: session(peer),
                    role,
                    stream,
                }
            }
            SfuEvent::StreamUpdated(info) => NodeEvent::StreamUpdated { worker, info },
            SfuEvent::ViewerLayerChanged {
                peer,
                stream,
                layer,
            } => NodeEvent::ViewerLayerChanged {
                session: session(peer),
                stream,
                layer,
            },
            SfuEvent::ChannelOpen {
                peer,
                channel,
                label,
                protocol,
            } => NodeEvent::ChannelOpen {
                session: session(peer),
                channel,
                label,
                protocol,
            },
            SfuEvent::ChannelData {
                peer,
                channel,
                binary,
                data,
            } => NodeEvent::ChannelData {
                session: session(peer),
                channel,
                binary,
                data,
            },
            SfuEvent::ChannelClose { peer, channel } => NodeEvent::ChannelClose {
                session: session(peer),
                channel,
            },
            SfuEvent::Closed {
                peer,
                role,
                stream,
                reason,
            } => {
                tracing::info!(worker, %peer, ?role, %stream, ?reason, "session closed");
                NodeEvent::Closed {
                    session: session(peer),
                    role,
                    stream,
                    reason,
                }
            }
            #[allow(unreachable_patterns)]
            _ => return,
        };
        // Nobody listening (a node without signaling, in tests) is fine.
        let _ = self.events.send(ev);
    }

    async fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        let sfu = &mut self.sfu;
        match cmd {
            Command::Publish {
                stream,
                offer,
                reply,
            } => {
                let r = sfu.publish(now, &stream, &offer);
                // Placement reads the count: it is right before the
                // answer leaves (the worker is on another thread).
                self.load.store(sfu.peer_count(), Ordering::Relaxed);
                let _ = reply.send(r);
            }
            Command::Subscribe {
                stream,
                offer,
                reply,
            } => {
                let r = sfu.subscribe(now, &stream, &offer);
                self.load.store(sfu.peer_count(), Ordering::Relaxed);
                let _ = reply.send(r);
            }
            Command::Close { peer, reply } => {
                let r = sfu.close(peer);
                self.load.store(sfu.peer_count(), Ordering::Relaxed);
                let _ = reply.send(r);
            }
            Command::Candidates { peer, lines, reply } => {
                let r = lines
                    .iter()
                    .try_for_each(|l| sfu.add_remote_candidate(peer, l));
                let _ = reply.send(r);
            }
            Command::RestartIce {
                peer,
                ufrag,
                pwd,
                reply,
            } => {
                let _ = reply.send(sfu.restart_ice(peer, &ufrag, &pwd));
            }
            Command::SendChannel { to, binary, reply } => {
                let results = to
                    .into_iter()
                    .map(|(peer, channel, data)| sfu.send_channel(peer, channel, binary, &data))
                    .collect();
                let _ = reply.send(results);
            }
            Command::Snapshot { reply } => {
                let busy_ratio =
                    self.busy.as_secs_f64() / self.started.elapsed().as_secs_f64().max(1e-9);
                let _ = reply.send(WorkerSnapshot {
                    metrics: sfu.metrics().clone(),
                    streams: sfu.streams(),
                    busy_ratio,
                    mirror_dropped: self.mirror_dropped.load(Ordering::Relaxed),
                    sink_dropped: self.sink_dropped,
                });
            }
            Command::AttachSink {
                stream,
                sink,
                reply,
            } => {
                let r = sfu.attach_sink(now, &stream, sink).map(|_| ());
                // The sink's first messages are queued before the answer, so
                // a mirror's worker has them before the viewer's offer.
                self.drain().await;
                let _ = reply.send(r);
            }
            Command::AttachFeed {
                stream,
                id,
                mut feed,
                reply,
            } => match sfu.attach_sink(now, &stream, SinkId::External(id)) {
                Ok(generation) => {
                    // In place before the drain that hands it its first
                    // messages.
                    feed.generation = generation;
                    self.feeds.insert(id, feed);
                    let _ = reply.send(Ok(generation));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::FeedKeyframe { id, rid } => {
                if let Some(f) = self.feeds.get(&id) {
                    let m = SinkMessage::keyframe(&f.stream, rid);
                    sfu.handle_sink_message(now, SinkId::External(id), m);
                }
            }
            Command::FeedInject { id, packets } => {
                if let Some(f) = self.feeds.get(&id) {
                    let m = SinkMessage::inject(&f.stream, packets);
                    sfu.handle_sink_message(now, SinkId::External(id), m);
                }
            }
            Command::DetachFeed { id, reply } => {
                self.detach_feed(id);
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            Command::SetLayer {
                peer,
                stream,
                request,
                render_size,
                reply,
            } => {
                let _ = reply.send(set_layer(sfu, peer, &stream, request, render_size));
            }
            Command::ViewerState {
                peer,
                stream,
                reply,
            } => {
                let state = sfu.has_peer(peer).then(|| ViewerState {
                    stream: sfu.stream(&stream),
                    layer: sfu.viewer_layer(peer),
                });
                let _ = reply.send(state);
            }
        }
    }
}

fn set_layer(
    sfu: &mut Sfu,
    peer: PeerId,
    stream: &str,
    request: LayerRequest,
    render_size: Option<(u32, u32)>,
) -> Result<Option<ViewerLayer>, NodeError> {
    if let LayerRequest::Rid(rid) = &request {
        // Only a rid the stream has never had is refused: one that merely
        // paused (a browser drops `h` when short of uplink) stays a valid
        // wish, served by the best layer below it meanwhile. A stream whose
        // layers are known (it is live) and has no layer of that name (one
        // layer without a rid, and no transcoded rungs) refuses it too:
        // pinning a layer that does not exist would only disturb the
        // viewer's picture.
        let layers = sfu.stream(stream).map(|s| s.layers).unwrap_or_default();
        let known: Vec<String> = layers.iter().filter_map(|l| l.rid.clone()).collect();
        if !layers.is_empty() && !known.contains(rid) {
            return Err(NodeError::UnknownRid {
                stream: stream.to_string(),
                rid: rid.clone(),
                known,
            });
        }
    }
    sfu.set_render_size(peer, render_size)?;
    sfu.set_layer(peer, request)?;
    Ok(sfu.viewer_layer(peer))
}
