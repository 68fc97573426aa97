//! The tokio shell of one SFU worker: owns its UDP socket, its timer and its
//! command channel, and drives the sans-IO `Sfu` from them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lumen_sfu::{
    IceCredentials, Input, LayerRequest, Metrics, Output, PeerId, RelayMessage, Role,
    SessionAnswer, SessionError, Sfu, SfuConfig, SfuEvent, StreamInfo, ViewerLayer,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::gso::Outbox;

/// Datagrams read in one go before the worker polls its outputs.
const RECV_BATCH: usize = 64;
/// Relay messages (each a batch of packets) queued towards one worker
/// before more are dropped.
pub(crate) const RELAY_QUEUE: usize = 1024;
/// Relay messages taken in one go.
const RELAY_BATCH: usize = 64;

/// A message from worker `.0` to another.
pub(crate) type Relayed = (usize, RelayMessage);

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
    RestartIce {
        peer: PeerId,
        ufrag: String,
        pwd: String,
        reply: oneshot::Sender<Result<IceCredentials, SessionError>>,
    },
    Snapshot {
        reply: oneshot::Sender<Snapshot>,
    },
    /// On a stream's origin: feed worker `worker` with the stream so it can
    /// take viewers. Answered once the first messages are on their way.
    AttachMirror {
        stream: String,
        worker: usize,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    /// Pins a viewer's video layer or returns it to automatic; answers with
    /// the viewer's layer state afterwards.
    SetLayer {
        peer: PeerId,
        stream: String,
        request: LayerRequest,
        /// The player's size in device pixels, if it said.
        render_size: Option<(u32, u32)>,
        reply: oneshot::Sender<Result<Option<ViewerLayer>, LayerError>>,
    },
    /// A viewer's stream and layer state now; `None` when the peer is gone.
    ViewerState {
        peer: PeerId,
        stream: String,
        reply: oneshot::Sender<Option<ViewerState>>,
    },
}

/// Why a layer request was refused.
#[derive(Debug)]
pub(crate) enum LayerError {
    /// The SFU refused it (unknown peer).
    Session(SessionError),
    /// The stream's publisher sends layers, none with this rid.
    UnknownRid { rid: String, known: Vec<String> },
}

/// What an SSE feed starts from.
pub(crate) struct ViewerState {
    pub stream: Option<StreamInfo>,
    pub layer: Option<ViewerLayer>,
}

/// A worker's counters and streams at one moment.
pub(crate) struct Snapshot {
    pub metrics: Metrics,
    pub streams: Vec<StreamInfo>,
    pub busy_ratio: f64,
    /// Relay messages this worker could not hand to another (its queue was
    /// full), and the packets in them.
    pub relay_dropped: u64,
}

/// The signaling side's handle on one worker.
#[derive(Clone)]
pub(crate) struct WorkerHandle {
    pub tx: mpsc::Sender<Command>,
    pub announced: SocketAddr,
    /// Peers on the worker, as it last counted them.
    pub load: Arc<AtomicUsize>,
}

/// WHIP/WHEP sessions by id. The HTTP side adds them; a worker removes the
/// ones whose peer it closed (ICE timeout, DTLS close, DELETE).
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, SessionEntry>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionEntry {
    pub kind: crate::http::Kind,
    pub stream: String,
    pub worker: usize,
    pub peer: PeerId,
    pub etag: String,
    pub remote_ufrag: String,
    /// The offer's first video m-line: its index and its mid (WHEP layer
    /// selection names it by `mediaId`).
    pub video: Option<(usize, Option<String>)>,
    /// WHEP server-sent event streams created on this session, newest last.
    pub event_streams: Vec<crate::events::EventStream>,
}

/// Fan-out of the workers' stream and viewer-layer events to HTTP
/// subscribers (the WHEP server-sent-event feeds).
///
/// Watch channels rather than a broadcast queue: a feed only ever needs the
/// latest state, so a burst of updates (a hundred viewers joining) costs each
/// feed one wake-up, and a slow reader can never lag behind.
#[derive(Default)]
pub(crate) struct Hub {
    streams: Mutex<HashMap<String, StreamFeed>>,
    viewers: Mutex<HashMap<(usize, PeerId), ViewerFeed>>,
}

/// The latest layer state of one viewer, for its event feed.
type ViewerFeed = watch::Sender<Option<ViewerLayer>>;

/// One stream's state as each worker that has it last said, and the
/// merged state its followers see.
struct StreamFeed {
    tx: watch::Sender<Option<StreamInfo>>,
    parts: Vec<(usize, StreamInfo)>,
}

impl StreamFeed {
    fn new() -> Self {
        StreamFeed {
            tx: watch::Sender::new(None),
            parts: Vec::new(),
        }
    }
}

/// A stream as the whole node serves it, from what each worker has of it
/// (the origin's publisher, the viewers of every worker).
pub(crate) fn merge_streams(infos: impl IntoIterator<Item = StreamInfo>) -> Vec<StreamInfo> {
    let mut out: Vec<StreamInfo> = Vec::new();
    for info in infos {
        match out.iter_mut().find(|s| s.name == info.name) {
            None => out.push(info),
            Some(s) => {
                s.viewers += info.viewers;
                // Layers as the live worker that sees the most of them measures.
                if info.live && (!s.live || info.layers.len() > s.layers.len()) {
                    s.layers = info.layers;
                }
                s.live |= info.live;
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

impl Hub {
    /// Follows a stream's state; the current value counts as seen.
    pub fn watch_stream(&self, name: &str) -> watch::Receiver<Option<StreamInfo>> {
        lock(&self.streams)
            .entry(name.to_string())
            .or_insert_with(StreamFeed::new)
            .tx
            .subscribe()
    }

    /// Follows a viewer's layer state; `None` once its peer is closed. The
    /// receiver's `changed()` fails when the peer closes.
    pub fn watch_viewer(
        &self,
        worker: usize,
        peer: PeerId,
    ) -> Option<watch::Receiver<Option<ViewerLayer>>> {
        lock(&self.viewers)
            .get(&(worker, peer))
            .map(watch::Sender::subscribe)
    }

    fn stream_updated(&self, worker: usize, info: StreamInfo) {
        let mut map = lock(&self.streams);
        let name = info.name.clone();
        let feed = map.entry(name.clone()).or_insert_with(StreamFeed::new);
        feed.parts.retain(|(w, _)| *w != worker);
        if info.live || info.viewers > 0 {
            feed.parts.push((worker, info.clone()));
        }
        let merged = merge_streams(feed.parts.iter().map(|(_, i)| i.clone()))
            .pop()
            .unwrap_or(StreamInfo {
                live: false,
                viewers: 0,
                layers: Vec::new(),
                ..info
            });
        // A stream nobody publishes, watches or follows is forgotten, so the
        // map does not grow with every name ever used.
        if feed.parts.is_empty() && feed.tx.receiver_count() == 0 {
            map.remove(&name);
            return;
        }
        feed.tx.send_replace(Some(merged));
    }

    fn viewer_added(&self, worker: usize, peer: PeerId) {
        lock(&self.viewers).insert((worker, peer), watch::Sender::new(None));
    }

    fn viewer_layer(&self, worker: usize, peer: PeerId, layer: ViewerLayer) {
        if let Some(tx) = lock(&self.viewers).get(&(worker, peer)) {
            tx.send_replace(Some(layer));
        }
    }

    fn viewer_closed(&self, worker: usize, peer: PeerId) {
        lock(&self.viewers).remove(&(worker, peer));
    }
}

/// A panic elsewhere while holding a lock leaves a usable map.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sessions {
    pub fn insert(&self, id: String, e: SessionEntry) {
        self.lock().insert(id, e);
    }
    pub fn get(&self, id: &str) -> Option<SessionEntry> {
        self.lock().get(id).cloned()
    }
    pub fn remove(&self, id: &str) -> Option<SessionEntry> {
        self.lock().remove(id)
    }
    pub fn update(&self, id: &str, f: impl FnOnce(&mut SessionEntry)) -> bool {
        self.lock().get_mut(id).map(f).is_some()
    }
    fn remove_peer(&self, worker: usize, peer: PeerId) {
        self.lock()
            .retain(|_, e| !(e.worker == worker && e.peer == peer));
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionEntry>> {
        lock(&self.map)
    }
}

/// A worker's ends of the relay channels between workers.
pub(crate) struct RelayLinks {
    /// Messages for this worker.
    pub rx: mpsc::Receiver<Relayed>,
    /// Senders to every worker, by index (its own included, unused).
    pub to: Vec<mpsc::Sender<Relayed>>,
}

/// One bounded channel per worker, and each worker's links.
pub(crate) fn relay_links(workers: usize) -> Vec<RelayLinks> {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..workers).map(|_| mpsc::channel(RELAY_QUEUE)).unzip();
    rxs.into_iter()
        .map(|rx| RelayLinks {
            rx,
            to: txs.clone(),
        })
        .collect()
}

pub(crate) fn spawn_worker(
    index: usize,
    socket: UdpSocket,
    announced: SocketAddr,
    links: RelayLinks,
    sessions: Arc<Sessions>,
    hub: Arc<Hub>,
    stop: watch::Receiver<bool>,
) -> (WorkerHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(256);
    let sfu = Sfu::new(SfuConfig::new(vec![announced]), Instant::now());
    let load = Arc::new(AtomicUsize::new(0));
    let shared = Shared {
        sessions,
        hub,
        relay_to: links.to,
        relay_dropped: AtomicU64::new(0),
        load: load.clone(),
    };
    let task = tokio::spawn(run(
        index, sfu, socket, announced, rx, links.rx, shared, stop,
    ));
    (
        WorkerHandle {
            tx,
            announced,
            load,
        },
        task,
    )
}

/// What a worker shares with the HTTP side and the other workers.
struct Shared {
    sessions: Arc<Sessions>,
    hub: Arc<Hub>,
    relay_to: Vec<mpsc::Sender<Relayed>>,
    relay_dropped: AtomicU64,
    load: Arc<AtomicUsize>,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    index: usize,
    mut sfu: Sfu,
    socket: UdpSocket,
    announced: SocketAddr,
    mut rx: mpsc::Receiver<Command>,
    mut relay_rx: mpsc::Receiver<Relayed>,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 2048];
    let mut outbox = Outbox::new();
    let started = Instant::now();
    let mut busy = std::time::Duration::ZERO;
    loop {
        let work_start = Instant::now();
        let deadline = drain(index, &mut sfu, &socket, &mut outbox, &shared).await;
        shared.load.store(sfu.peer_count(), Ordering::Relaxed);
        busy += work_start.elapsed();
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
                while let Ok((from, m)) = relay_rx.try_recv() {
                    sfu.handle_relay(Instant::now(), from, m);
                }
                let busy_ratio = busy.as_secs_f64() / started.elapsed().as_secs_f64().max(1e-9);
                if let Command::AttachMirror { stream, worker, reply } = cmd {
                    let r = sfu.attach_mirror(t, &stream, worker);
                    // The mirror's first messages are queued before the
                    // answer, so its worker has them before the viewer's offer.
                    drain(index, &mut sfu, &socket, &mut outbox, &shared).await;
                    let _ = reply.send(r);
                } else {
                    handle_command(index, &mut sfu, cmd, busy_ratio, &shared);
                }
                busy += t.elapsed();
            }
            m = relay_rx.recv() => {
                let t = Instant::now();
                if let Some((from, m)) = m {
                    sfu.handle_relay(t, from, m);
                    for _ in 1..RELAY_BATCH {
                        match relay_rx.try_recv() {
                            Ok((from, m)) => sfu.handle_relay(Instant::now(), from, m),
                            Err(_) => break,
                        }
                    }
                }
                busy += t.elapsed();
            }
            r = socket.recv_from(&mut buf) => {
                let t = Instant::now();
                match r {
                    Ok((n, source)) => {
                        sfu.handle_input(Input::Receive { now: t, source, destination: announced, data: &buf[..n] });
                        for _ in 1..RECV_BATCH {
                            match socket.try_recv_from(&mut buf) {
                                Ok((n, source)) => sfu.handle_input(Input::Receive {
                                    now: Instant::now(), source, destination: announced, data: &buf[..n],
                                }),
                                Err(_) => break,
                            }
                        }
                    }
                    // ICMP errors from a peer that went away surface here on Linux.
                    Err(e) => tracing::debug!(worker = index, error = %e, "recv_from"),
                }
                busy += t.elapsed();
            }
            _ = sleep => {}
        }
        // Timers are due whichever branch woke the loop: a socket that is
        // never empty must not hold back retransmissions and reports.
        let now = Instant::now();
        if now >= deadline {
            sfu.handle_input(Input::Timeout(now));
        }
    }
    for peer in sfu.peers() {
        sfu.close(peer);
    }
    drain(index, &mut sfu, &socket, &mut outbox, &shared).await;
}

/// Drains the worker's outputs, then sends what they held; returns when it
/// next wants the time.
async fn drain(
    index: usize,
    sfu: &mut Sfu,
    socket: &UdpSocket,
    outbox: &mut Outbox,
    shared: &Shared,
) -> Instant {
    loop {
        match sfu.poll_output() {
            Output::Transmit(t) => {
                outbox.push(t);
                if outbox.is_full() {
                    outbox.flush(socket).await;
                }
            }
            Output::Event(SfuEvent::Closed {
                peer,
                role,
                stream,
                reason,
            }) => {
                tracing::info!(worker = index, %peer, ?role, %stream, ?reason, "session closed");
                shared.sessions.remove_peer(index, peer);
                if role == Role::Viewer {
                    shared.hub.viewer_closed(index, peer);
                }
            }
            Output::Event(SfuEvent::Connected { peer, role, stream }) => {
                tracing::info!(worker = index, %peer, ?role, %stream, "session connected");
            }
            Output::Event(SfuEvent::StreamUpdated(info)) => {
                shared.hub.stream_updated(index, info);
            }
            Output::Relay { to, message } => {
                let sent = shared
                    .relay_to
                    .get(to)
                    .is_some_and(|tx| tx.try_send((index, message)).is_ok());
                if !sent {
                    // The other worker is that far behind (or gone): its
                    // viewers lose these packets rather than this one stall.
                    shared.relay_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Output::Event(SfuEvent::ViewerLayerChanged { peer, layer, .. }) => {
                shared.hub.viewer_layer(index, peer, layer);
            }
            Output::Timeout(t) => {
                outbox.flush(socket).await;
                sfu.sent(Instant::now());
                return t;
            }
        }
    }
}

fn handle_command(index: usize, sfu: &mut Sfu, cmd: Command, busy_ratio: f64, shared: &Shared) {
    let now = Instant::now();
    let hub = &shared.hub;
    match cmd {
        Command::Publish {
            stream,
            offer,
            reply,
        } => {
            let _ = reply.send(sfu.publish(now, &stream, &offer));
        }
        Command::Subscribe {
            stream,
            offer,
            reply,
        } => {
            let answer = sfu.subscribe(now, &stream, &offer);
            if let Ok(a) = &answer {
                // Before the first event about this peer can be drained.
                hub.viewer_added(index, a.peer);
            }
            let _ = reply.send(answer);
        }
        Command::Close { peer, reply } => {
            let _ = reply.send(sfu.close(peer));
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
        Command::Snapshot { reply } => {
            let _ = reply.send(Snapshot {
                metrics: sfu.metrics().clone(),
                streams: sfu.streams(),
                busy_ratio,
                relay_dropped: shared.relay_dropped.load(Ordering::Relaxed),
            });
        }
        Command::AttachMirror {
            stream,
            worker,
            reply,
        } => {
            // (The run loop answers it after a drain; this is the fallback.)
            let _ = reply.send(sfu.attach_mirror(now, &stream, worker));
        }
        Command::SetLayer {
            peer,
            stream,
            request,
            render_size,
            reply,
        } => {
            let r = set_layer(sfu, peer, &stream, request, render_size);
            if let Ok(Some(layer)) = &r {
                // Feeds show a new request at once, even before media flows
                // and the SFU has a layer to report.
                hub.viewer_layer(index, peer, layer.clone());
            }
            let _ = reply.send(r);
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

fn set_layer(
    sfu: &mut Sfu,
    peer: PeerId,
    stream: &str,
    request: LayerRequest,
    render_size: Option<(u32, u32)>,
) -> Result<Option<ViewerLayer>, LayerError> {
    if let LayerRequest::Rid(rid) = &request {
        // Only a rid the publisher has never announced is refused: one that
        // merely paused (a browser drops `h` when short of uplink) stays a
        // valid wish, served by the best layer below it meanwhile.
        let known: Vec<String> = sfu
            .stream(stream)
            .map(|s| s.layers.into_iter().filter_map(|l| l.rid).collect())
            .unwrap_or_default();
        if !known.is_empty() && !known.contains(rid) {
            return Err(LayerError::UnknownRid {
                rid: rid.clone(),
                known,
            });
        }
    }
    sfu.set_render_size(peer, render_size)
        .map_err(LayerError::Session)?;
    sfu.set_layer(peer, request).map_err(LayerError::Session)?;
    Ok(sfu.viewer_layer(peer))
}
