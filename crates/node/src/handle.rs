//! `NodeHandle`: the typed way into a node's workers. Each method sends one
//! command to the worker that owns the session (or the stream) and awaits
//! its answer; none blocks a worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lumen_sfu::{
    ChannelId, IceCredentials, LayerRequest, Metrics, PeerId, SessionError, SinkId, StreamInfo,
    ViewerLayer,
};
use tokio::sync::oneshot;

use crate::placement;
use crate::sink::{self, DEFAULT_SINK_QUEUE, SinkFeed};
use crate::worker::{Command, WorkerHandle};

pub use crate::worker::ChannelSend;

/// A session on a node: the worker that serves it and its peer there.
/// A `Copy` handle, as a `PeerId` is inside one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionRef {
    /// The worker's index.
    pub worker: usize,
    /// The peer on that worker.
    pub peer: PeerId,
}

impl std::fmt::Display for SessionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "w{}/{}", self.worker, self.peer)
    }
}

/// A new session: the SDP answer and where it lives.
#[derive(Debug, Clone)]
pub struct NodeAnswer {
    /// The session.
    pub session: SessionRef,
    /// The SDP answer for the client.
    pub answer_sdp: String,
    /// The media address announced to it (its worker's).
    pub announced: SocketAddr,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The SFU refused it; see [`SessionError`].
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A layer was requested by a rid the stream never had (not sent by
    /// its publisher, nor made by a transcoder).
    #[error("stream {stream:?} has no encoding {rid:?}; it sends {}", if known.is_empty() {
        "one layer without a rid (no simulcast, no transcoded ladder)".to_string()
    } else {
        known.join(", ")
    })]
    UnknownRid {
        /// The stream.
        stream: String,
        /// The rid asked for.
        rid: String,
        /// The rids it has (the publisher's and transcoded rungs).
        known: Vec<String>,
    },
    /// The worker is gone (the node is shutting down).
    #[error("the media worker is not available")]
    Unavailable,
}

/// What a WHEP event feed starts from: a viewer's stream and layer now.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewerState {
    /// The stream as the viewer's worker has it.
    pub stream: Option<StreamInfo>,
    /// The viewer's layer state, if it receives video.
    pub layer: Option<ViewerLayer>,
}

/// One worker's counters and streams at one moment.
#[derive(Debug, Clone)]
pub struct WorkerSnapshot {
    /// The SFU's counters since start.
    pub metrics: Metrics,
    /// The streams the worker has (live ones, and mirrors with viewers).
    pub streams: Vec<StreamInfo>,
    /// Share of wall time the worker spent working since start.
    pub busy_ratio: f64,
    /// Mirror messages this worker could not hand to another worker (its
    /// queue was full).
    pub mirror_dropped: u64,
    /// Packet batches this worker dropped for external sinks whose feed was
    /// full (see [`SinkFeed`]).
    pub sink_dropped: u64,
}

/// The typed handle on a running node; cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<Inner>,
}

struct Inner {
    workers: Vec<WorkerHandle>,
    spread: usize,
    /// The number of the next external sink ([`SinkId::External`]).
    next_sink: AtomicU64,
}

impl NodeHandle {
    pub(crate) fn new(workers: Vec<WorkerHandle>, spread: usize) -> Self {
        NodeHandle {
            inner: Arc::new(Inner {
                workers,
                spread,
                next_sink: AtomicU64::new(1),
            }),
        }
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.inner.workers.len()
    }

    /// The bound UDP address of each worker.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.workers.iter().map(|w| w.local).collect()
    }

    /// The media address worker `worker` announces in ICE candidates.
    pub fn announced(&self, worker: usize) -> Option<SocketAddr> {
        self.inner.workers.get(worker).map(|w| w.announced)
    }

    /// A publisher (WHIP) session on `stream`, on the stream's origin worker.
    pub async fn publish(&self, stream: &str, offer: String) -> Result<NodeAnswer, NodeError> {
        let worker = placement::origin_of(stream, self.workers());
        let s = stream.to_string();
        let answer = self
            .ask(worker, |reply| Command::Publish {
                stream: s,
                offer,
                reply,
            })
            .await??;
        self.answer(worker, answer)
    }

    /// A viewer (WHEP) session on `stream`: on the stream's origin, or on
    /// the least busy worker through a mirror when the origin is busier
    /// (see [`crate::NodeConfig::worker_spread`]).
    pub async fn subscribe(&self, stream: &str, offer: String) -> Result<NodeAnswer, NodeError> {
        let origin = placement::origin_of(stream, self.workers());
        let mut worker = origin;
        if self.workers() > 1 {
            let loads: Vec<_> = self.inner.workers.iter().map(|w| w.load.clone()).collect();
            let chosen = placement::viewer_worker(&loads, origin, self.inner.spread);
            if chosen != origin {
                let s = stream.to_string();
                let attached = self
                    .ask(origin, |reply| Command::AttachSink {
                        stream: s,
                        sink: SinkId::Worker(chosen),
                        reply,
                    })
                    .await?;
                // Not live: the origin itself answers why.
                if attached.is_ok() {
                    worker = chosen;
                }
            }
        }
        let s = stream.to_string();
        let answer = self
            .ask(worker, |reply| Command::Subscribe {
                stream: s,
                offer,
                reply,
            })
            .await??;
        self.answer(worker, answer)
    }

    /// Attaches an external sink (a recorder, a transcoder, a relay link)
    /// to `stream` on its origin worker, where its publisher is, and
    /// returns its feed, which holds at most [`DEFAULT_SINK_QUEUE`] unread
    /// packet batches (see [`NodeHandle::attach_sink_with_queue`]).
    ///
    /// The stream needs a publisher, connected or still connecting:
    /// otherwise [`SessionError::NotLive`], and a caller that wants a
    /// stream from its start attaches when its publisher arrives
    /// ([`NodeEvent::StreamUpdated`](crate::NodeEvent::StreamUpdated) or
    /// [`NodeEvent::Connected`](crate::NodeEvent::Connected)). Once
    /// attached, the feed gets what a mirror gets:
    /// [`FeedEvent::Source`](crate::FeedEvent::Source) first, then the
    /// cached group of pictures of each layer (so video starts on a
    /// keyframe when one is cached; else ask for one with
    /// [`SinkFeed::request_keyframe`]), then live packets. When the
    /// publisher leaves it gets a `Source` without tracks and stays
    /// attached; the next publisher comes as a `Source` with `fresh` set.
    /// It ends when it is detached or dropped, or the node shuts down.
    pub async fn attach_sink(&self, stream: &str) -> Result<SinkFeed, NodeError> {
        self.attach_sink_with_queue(stream, DEFAULT_SINK_QUEUE)
            .await
    }

    /// [`NodeHandle::attach_sink`] with a feed that holds at most `queue`
    /// unread packet batches (at least one): past that the worker drops
    /// batches for it, counts them ([`WorkerSnapshot::sink_dropped`]) and
    /// the feed reports a [`FeedEvent::Gap`](crate::FeedEvent::Gap).
    pub async fn attach_sink_with_queue(
        &self,
        stream: &str,
        queue: usize,
    ) -> Result<SinkFeed, NodeError> {
        let worker = placement::origin_of(stream, self.workers());
        let w = self
            .inner
            .workers
            .get(worker)
            .ok_or(NodeError::Unavailable)?;
        let id = self.inner.next_sink.fetch_add(1, Ordering::Relaxed);
        let (tx, feed) = sink::feed(stream, id, queue, w.tx.clone());
        let s = stream.to_string();
        let attached = self
            .ask(worker, |reply| Command::AttachFeed {
                stream: s,
                id,
                feed: tx,
                reply,
            })
            .await
            .and_then(|r| r.map_err(NodeError::from));
        match attached {
            Ok(_generation) => Ok(feed),
            Err(e) => {
                feed.forget();
                Err(e)
            }
        }
    }

    /// Closes a session; `false` if it was already gone.
    pub async fn close(&self, session: SessionRef) -> Result<bool, NodeError> {
        let peer = session.peer;
        self.ask(session.worker, |reply| Command::Close { peer, reply })
            .await
    }

    /// Sends one message on a session's data channel (opened by the
    /// client, announced by [`NodeEvent::ChannelOpen`](crate::NodeEvent)):
    /// text when `binary` is false. Refused with the SFU's reason when the
    /// channel is closed, its send buffer is full or the message too large;
    /// the media never waits for it.
    pub async fn send_channel(
        &self,
        session: SessionRef,
        channel: ChannelId,
        binary: bool,
        data: Vec<u8>,
    ) -> Result<(), NodeError> {
        let mut results = self
            .send_channels(&[(session, channel)], binary, data)
            .await;
        results.pop().unwrap_or(Err(NodeError::Unavailable))
    }

    /// [`NodeHandle::send_channel`] of one message to many channels (a chat
    /// room's members): one command per worker, not one per channel, all
    /// workers asked at once. The results come in the order of `to`.
    pub async fn send_channels(
        &self,
        to: &[(SessionRef, ChannelId)],
        binary: bool,
        data: Vec<u8>,
    ) -> Vec<Result<(), NodeError>> {
        let data: Arc<[u8]> = data.into();
        let mut results: Vec<Result<(), NodeError>> =
            to.iter().map(|_| Err(NodeError::Unavailable)).collect();
        let mut workers: Vec<usize> = to.iter().map(|(s, _)| s.worker).collect();
        workers.sort_unstable();
        workers.dedup();
        // Every worker's command first, then the answers: the workers work
        // on them side by side.
        let mut asked = Vec::with_capacity(workers.len());
        for worker in workers {
            let (index, sends): (Vec<usize>, Vec<ChannelSend>) = to
                .iter()
                .enumerate()
                .filter(|(_, (s, _))| s.worker == worker)
                .map(|(i, (s, c))| (i, (s.peer, *c, data.clone())))
                .unzip();
            asked.push((index, self.post_channel(worker, binary, sends).await));
        }
        for (index, answer) in asked {
            let answered = match answer {
                Ok(rx) => rx.await.map_err(|_| NodeError::Unavailable),
                Err(e) => Err(e),
            };
            match answered {
                Ok(each) => {
                    for (i, r) in index.into_iter().zip(each) {
                        results[i] = r.map_err(NodeError::from);
                    }
                }
                Err(e) => {
                    for i in index {
                        results[i] = Err(e.clone());
                    }
                }
            }
        }
        results
    }

    /// Messages of their own to channels of worker `worker`'s peers, sent
    /// in the order given, in one command: what a fan-out that coalesces
    /// frames per member hands over. Answers each send as
    /// [`Sfu::send_channel`](lumen_sfu::Sfu::send_channel) did; `Err` when
    /// the worker is gone.
    pub async fn send_each(
        &self,
        worker: usize,
        binary: bool,
        sends: Vec<ChannelSend>,
    ) -> Result<Vec<Result<(), SessionError>>, NodeError> {
        self.post_channel(worker, binary, sends)
            .await?
            .await
            .map_err(|_| NodeError::Unavailable)
    }

    /// Queues a [`Command::SendChannel`]; the receiver of its answer.
    async fn post_channel(
        &self,
        worker: usize,
        binary: bool,
        to: Vec<ChannelSend>,
    ) -> Result<oneshot::Receiver<Vec<Result<(), SessionError>>>, NodeError> {
        let w = self
            .inner
            .workers
            .get(worker)
            .ok_or(NodeError::Unavailable)?;
        let (reply, rx) = oneshot::channel();
        w.tx.send(Command::SendChannel { to, binary, reply })
            .await
            .map_err(|_| NodeError::Unavailable)?;
        Ok(rx)
    }

    /// Adds trickled ICE candidates (`candidate:…` lines) to a session.
    pub async fn candidates(
        &self,
        session: SessionRef,
        lines: Vec<String>,
    ) -> Result<(), NodeError> {
        let peer = session.peer;
        self.ask(session.worker, |reply| Command::Candidates {
            peer,
            lines,
            reply,
        })
        .await??;
        Ok(())
    }

    /// Restarts ICE with the client's new credentials; answers the server's.
    pub async fn restart_ice(
        &self,
        session: SessionRef,
        ufrag: String,
        pwd: String,
    ) -> Result<IceCredentials, NodeError> {
        let peer = session.peer;
        Ok(self
            .ask(session.worker, |reply| Command::RestartIce {
                peer,
                ufrag,
                pwd,
                reply,
            })
            .await??)
    }

    /// Pins a viewer's video layer (or returns it to automatic) and sets
    /// its player's size; answers the viewer's layer state afterwards
    /// (`None`: it receives no video).
    pub async fn set_layer(
        &self,
        session: SessionRef,
        stream: &str,
        request: LayerRequest,
        render_size: Option<(u32, u32)>,
    ) -> Result<Option<ViewerLayer>, NodeError> {
        let (peer, s) = (session.peer, stream.to_string());
        self.ask(session.worker, |reply| Command::SetLayer {
            peer,
            stream: s,
            request,
            render_size,
            reply,
        })
        .await?
    }

    /// A viewer's stream and layer now; `None` once the session is gone.
    pub async fn viewer_state(
        &self,
        session: SessionRef,
        stream: &str,
    ) -> Result<Option<ViewerState>, NodeError> {
        let (peer, s) = (session.peer, stream.to_string());
        self.ask(session.worker, |reply| Command::ViewerState {
            peer,
            stream: s,
            reply,
        })
        .await
    }

    /// Every worker's counters and streams (workers that are gone are left
    /// out).
    pub async fn snapshot(&self) -> Vec<WorkerSnapshot> {
        let mut out = Vec::with_capacity(self.workers());
        for i in 0..self.workers() {
            if let Ok(s) = self.ask(i, |reply| Command::Snapshot { reply }).await {
                out.push(s);
            }
        }
        out
    }

    /// The streams as the whole node serves them (each merged from every
    /// worker that has a part of it), sorted by name.
    pub async fn streams(&self) -> Vec<StreamInfo> {
        merge_streams(self.snapshot().await.into_iter().flat_map(|s| s.streams))
    }

    fn answer(&self, worker: usize, a: lumen_sfu::SessionAnswer) -> Result<NodeAnswer, NodeError> {
        Ok(NodeAnswer {
            session: SessionRef {
                worker,
                peer: a.peer,
            },
            answer_sdp: a.answer_sdp,
            announced: self.announced(worker).ok_or(NodeError::Unavailable)?,
        })
    }

    /// Sends a command to a worker and waits for its answer.
    async fn ask<T>(
        &self,
        worker: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let w = self
            .inner
            .workers
            .get(worker)
            .ok_or(NodeError::Unavailable)?;
        let (tx, rx) = oneshot::channel();
        w.tx.send(make(tx))
            .await
            .map_err(|_| NodeError::Unavailable)?;
        rx.await.map_err(|_| NodeError::Unavailable)
    }
}

/// A stream as the whole node serves it, from what each worker has of it
/// (the origin's publisher, the viewers of every worker); sorted by name.
pub fn merge_streams(infos: impl IntoIterator<Item = StreamInfo>) -> Vec<StreamInfo> {
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
