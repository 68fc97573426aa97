//! Chat's storage: what a room's queues hold after a frame goes, without
//! waiting, to one writer task that stores it in batches (one transaction
//! per stream), and a room being created starts from what the store holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use lumen_auth::Auth;
use lumen_auth::chat::Placement;
use lumen_chat::{AuditEntry, ChatMessage, Report, Room, RoomConfig};
use lumen_node::SessionRef;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, MissedTickBehavior};

/// Records waiting for the writer at most (a database stalled for minutes
/// at a thousand messages a second): past it new ones are dropped.
const WRITE_HELD: usize = 200_000;
/// The writer stores what it holds this often, or sooner when it holds
/// [`BATCH_ITEMS`] records.
const BATCH_EVERY: Duration = Duration::from_millis(200);
const BATCH_ITEMS: usize = 100;
/// How long a room being created waits for the writer to store what an
/// earlier incarnation of the room left queued.
pub(super) const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// What `room`'s queues hold now, its messages placed in the stream's
/// broadcast when it is live.
pub(super) fn take_batch(room: &mut Room, live: Option<&(SessionRef, String, u64)>) -> Batch {
    let messages = room.take_persist();
    let placements = match live {
        Some((_, broadcast, since)) => messages
            .iter()
            .map(|m| Placement {
                message: m.id,
                broadcast: broadcast.clone(),
                media_ms: m.ts.saturating_sub(*since),
            })
            .collect(),
        None => Vec::new(),
    };
    Batch {
        messages,
        placements,
        audit: room.take_audit(),
        reports: room.take_reports(),
    }
}

/// What one room's queues held after a frame.
#[derive(Default)]
pub(super) struct Batch {
    messages: Vec<ChatMessage>,
    placements: Vec<Placement>,
    audit: Vec<AuditEntry>,
    reports: Vec<Report>,
}

impl Batch {
    fn len(&self) -> usize {
        self.messages.len() + self.audit.len() + self.reports.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn append(&mut self, mut other: Batch) {
        self.messages.append(&mut other.messages);
        self.placements.append(&mut other.placements);
        self.audit.append(&mut other.audit);
        self.reports.append(&mut other.reports);
    }
}

/// What the chat task asks of the writer.
pub(super) enum Write {
    Store {
        stream: String,
        batch: Batch,
    },
    /// Store everything queued so far, then answer.
    Flush(oneshot::Sender<()>),
}

/// The chat task's side of the writer's queue.
pub(super) struct Writer {
    pub(super) tx: mpsc::UnboundedSender<Write>,
    /// Records queued and not yet stored (the writer subtracts what it
    /// stores).
    pub(super) held: Arc<AtomicUsize>,
    dropped: AtomicU64,
}

impl Writer {
    pub(super) fn new() -> (Writer, mpsc::UnboundedReceiver<Write>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            tx,
            held: Arc::new(AtomicUsize::new(0)),
            dropped: AtomicU64::new(0),
        };
        (writer, rx)
    }

    /// Hands a batch to the writer without waiting. Dropped only when
    /// [`WRITE_HELD`] records already wait (logged at the first drop and
    /// every thousandth after).
    pub(super) fn store(&self, stream: String, batch: Batch) {
        let n = batch.len();
        if self.held.load(Ordering::Relaxed) + n > WRITE_HELD {
            let before = self.dropped.fetch_add(n as u64, Ordering::Relaxed);
            let total = before + n as u64;
            if before == 0 || before / 1000 != total / 1000 {
                tracing::warn!(
                    records = n,
                    dropped = total,
                    held = WRITE_HELD,
                    "chat store too slow: records not stored"
                );
            }
            return;
        }
        self.held.fetch_add(n, Ordering::Relaxed);
        if self.tx.send(Write::Store { stream, batch }).is_err() {
            // The writer is gone (shutting down): nothing stores them.
            self.held.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// A room as the store left it: its recent history, the id after the last
/// stored one, and the bans in force. What an earlier incarnation of the
/// room still has queued is stored first. A store that fails gives an
/// empty room (logged): chat goes on without its history.
pub(super) async fn load(
    auth: &Auth,
    writer: &Writer,
    stream: &str,
    mut config: RoomConfig,
) -> Room {
    let (tx, rx) = oneshot::channel();
    if writer.tx.send(Write::Flush(tx)).is_ok() {
        let _ = tokio::time::timeout(FLUSH_WAIT, rx).await;
    }
    let chat = auth.chat();
    let stored = async {
        let history = chat.history(stream, config.history_len).await?;
        let next = chat.next_message_id(stream).await?;
        let bans = chat.bans(stream).await?;
        Ok::<_, lumen_auth::AuthError>((history, next, bans))
    };
    match stored.await {
        Ok((history, next, bans)) => {
            config.first_message_id = next;
            Room::restore(config, history, bans)
        }
        Err(e) => {
            tracing::warn!(%stream, error = %e, "chat room not restored: starting empty");
            Room::new(config)
        }
    }
}

/// The writer: collects batches per stream and stores them every
/// [`BATCH_EVERY`], or at once when it holds [`BATCH_ITEMS`] records or a
/// flush is asked, one transaction per stream. Whatever queued while it
/// stored goes into the next transaction.
pub(super) async fn write(
    mut rx: mpsc::UnboundedReceiver<Write>,
    held: Arc<AtomicUsize>,
    auth: Auth,
) {
    let mut pending: HashMap<String, Batch> = HashMap::new();
    let mut count = 0;
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut closed = false;
    let mut tick = tokio::time::interval(BATCH_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while !closed {
        let mut due = false;
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = tick.tick() => {
                due = true;
                None
            }
        };
        let mut take = |m: Option<Write>, closed: &mut bool| match m {
            Some(Write::Store { stream, batch }) => {
                count += batch.len();
                pending.entry(stream).or_default().append(batch);
            }
            Some(Write::Flush(done)) => flushes.push(done),
            None => *closed = true,
        };
        if !due {
            take(first, &mut closed);
        }
        while let Ok(m) = rx.try_recv() {
            take(Some(m), &mut closed);
        }
        if due || closed || count >= BATCH_ITEMS || !flushes.is_empty() {
            store(&auth, &mut pending).await;
            held.fetch_sub(count, Ordering::Relaxed);
            count = 0;
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }
}

async fn store(auth: &Auth, pending: &mut HashMap<String, Batch>) {
    for (stream, b) in pending.drain() {
        if let Err(e) = auth
            .chat()
            .store_batch(&stream, &b.messages, &b.placements, &b.audit, &b.reports)
            .await
        {
            tracing::warn!(%stream, records = b.len(), error = %e, "chat records not stored");
        }
    }
}
