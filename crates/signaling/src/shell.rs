//! The tokio shell of one SFU worker: owns its UDP socket, its timer and its
//! command channel, and drives the sans-IO `Sfu` from them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lumen_sfu::{
    IceCredentials, Input, Metrics, Output, PeerId, SessionAnswer, SessionError, Sfu, SfuConfig,
    SfuEvent, StreamInfo,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Datagrams read in one go before the worker polls its outputs.
const RECV_BATCH: usize = 64;

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
}

/// A worker's counters and streams at one moment.
pub(crate) struct Snapshot {
    pub metrics: Metrics,
    pub streams: Vec<StreamInfo>,
    pub busy_ratio: f64,
}

/// The signaling side's handle on one worker.
#[derive(Clone)]
pub(crate) struct WorkerHandle {
    pub tx: mpsc::Sender<Command>,
    pub announced: SocketAddr,
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
        // A panic elsewhere while holding the lock leaves a usable map.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn spawn_worker(
    index: usize,
    socket: UdpSocket,
    announced: SocketAddr,
    sessions: Arc<Sessions>,
    stop: watch::Receiver<bool>,
) -> (WorkerHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(256);
    let sfu = Sfu::new(SfuConfig::new(vec![announced]), Instant::now());
    let task = tokio::spawn(run(index, sfu, socket, announced, rx, sessions, stop));
    (WorkerHandle { tx, announced }, task)
}

async fn run(
    index: usize,
    mut sfu: Sfu,
    socket: UdpSocket,
    announced: SocketAddr,
    mut rx: mpsc::Receiver<Command>,
    sessions: Arc<Sessions>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 2048];
    let started = Instant::now();
    let mut busy = std::time::Duration::ZERO;
    loop {
        let work_start = Instant::now();
        let deadline = drain(index, &mut sfu, &socket, &sessions).await;
        busy += work_start.elapsed();
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let t = Instant::now();
                let busy_ratio = busy.as_secs_f64() / started.elapsed().as_secs_f64().max(1e-9);
                handle_command(&mut sfu, cmd, busy_ratio);
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
            _ = sleep => sfu.handle_input(Input::Timeout(Instant::now())),
        }
    }
    for peer in sfu.peers() {
        sfu.close(peer);
    }
    drain(index, &mut sfu, &socket, &sessions).await;
}

/// Drains the worker's outputs; returns when it next wants the time.
async fn drain(index: usize, sfu: &mut Sfu, socket: &UdpSocket, sessions: &Sessions) -> Instant {
    loop {
        match sfu.poll_output() {
            Output::Transmit(t) => match socket.try_send_to(&t.contents, t.destination) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Err(e) => tracing::debug!(worker = index, error = %e, "send_to"),
            },
            Output::Event(SfuEvent::Closed {
                peer,
                role,
                stream,
                reason,
            }) => {
                tracing::info!(worker = index, %peer, ?role, %stream, ?reason, "session closed");
                sessions.remove_peer(index, peer);
            }
            Output::Event(SfuEvent::Connected { peer, role, stream }) => {
                tracing::info!(worker = index, %peer, ?role, %stream, "session connected");
            }
            // Server-sent events for WHEP viewers come with the SSE extension.
            Output::Event(SfuEvent::StreamUpdated(_) | SfuEvent::ViewerLayerChanged { .. }) => {}
            Output::Timeout(t) => return t,
        }
    }
}

fn handle_command(sfu: &mut Sfu, cmd: Command, busy_ratio: f64) {
    let now = Instant::now();
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
            let _ = reply.send(sfu.subscribe(now, &stream, &offer));
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
            });
        }
    }
}
