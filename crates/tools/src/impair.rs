//! A UDP impairment proxy for real-socket tests and benchmarks: the kernel
//! here has no `netem`, so a viewer's bottleneck is emulated in between.
//!
//! Clients send to the proxy's address (the server announces it, see
//! `lumen serve --public-port`); each client gets its own upstream socket, so
//! the server still sees one address per client. Traffic towards the server
//! passes untouched. Traffic towards each client goes through its own
//! bottleneck: a link of `down_bps` with a drop-tail buffer that holds at most
//! `queue` of sending time, like a home connection's downlink. The rate can
//! change while running, to emulate a drop in bandwidth. A `delay` adds a
//! fixed one-way latency in each direction (a path between regions: put a
//! proxy with 40 ms in front of a node and every packet to or from it
//! takes 40 ms longer each way).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The bottleneck towards each client.
#[derive(Debug, Clone, Copy)]
pub struct ImpairConfig {
    /// Downlink rate in bits per second; `None`: unlimited.
    pub down_bps: Option<u64>,
    /// The most sending time the downlink buffer holds; later packets drop.
    pub queue: Duration,
    /// One-way latency added in each direction.
    pub delay: Duration,
}

impl Default for ImpairConfig {
    fn default() -> Self {
        ImpairConfig {
            down_bps: None,
            queue: Duration::from_millis(100),
            delay: Duration::ZERO,
        }
    }
}

/// Packets and bytes through the proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImpairStats {
    /// Datagrams passed from clients to the server.
    pub up_packets: u64,
    /// Datagrams passed from the server to clients.
    pub down_packets: u64,
    /// Bytes passed from the server to clients.
    pub down_bytes: u64,
    /// Datagrams towards clients dropped because the buffer was full.
    pub down_dropped: u64,
}

#[derive(Default)]
struct Shared {
    /// 0: unlimited.
    down_bps: AtomicU64,
    queue_us: AtomicU64,
    up_packets: AtomicU64,
    down_packets: AtomicU64,
    down_bytes: AtomicU64,
    down_dropped: AtomicU64,
    delay_us: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct ImpairProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl ImpairProxy {
    /// Relays between clients sending to `socket` and the server at `upstream`.
    pub fn start(
        socket: std::net::UdpSocket,
        upstream: SocketAddr,
        config: ImpairConfig,
    ) -> std::io::Result<ImpairProxy> {
        socket.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(socket)?);
        let addr = socket.local_addr()?;
        let shared = Arc::new(Shared::default());
        shared
            .down_bps
            .store(config.down_bps.unwrap_or(0), Ordering::Relaxed);
        shared
            .queue_us
            .store(config.queue.as_micros() as u64, Ordering::Relaxed);
        shared
            .delay_us
            .store(config.delay.as_micros() as u64, Ordering::Relaxed);
        let task = tokio::spawn(relay(socket, upstream, shared.clone()));
        Ok(ImpairProxy { addr, shared, task })
    }

    /// Where clients send.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the downlink rate of every client from now on.
    pub fn set_down_rate(&self, bps: Option<u64>) {
        self.shared
            .down_bps
            .store(bps.unwrap_or(0), Ordering::Relaxed);
    }

    /// Counters so far.
    pub fn stats(&self) -> ImpairStats {
        let s = &self.shared;
        ImpairStats {
            up_packets: s.up_packets.load(Ordering::Relaxed),
            down_packets: s.down_packets.load(Ordering::Relaxed),
            down_bytes: s.down_bytes.load(Ordering::Relaxed),
            down_dropped: s.down_dropped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for ImpairProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client's path: the way up (datagrams with the time they are due at
/// the server) and the tasks serving it.
struct Flow {
    up: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    tasks: [JoinHandle<()>; 3],
}

impl Drop for Flow {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn relay(listen: Arc<UdpSocket>, server: SocketAddr, shared: Arc<Shared>) {
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, client)) = listen.recv_from(&mut buf).await else {
            // ICMP errors of a client that went away: keep serving the others.
            continue;
        };
        let flow = match flows.entry(client) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => match open_flow(&listen, client, server, &shared).await {
                Ok(flow) => e.insert(flow),
                Err(_) => continue,
            },
        };
        let due = Instant::now() + delay(&shared);
        let _ = flow.up.send((due, buf[..n].to_vec()));
    }
}

async fn open_flow(
    listen: &Arc<UdpSocket>,
    client: SocketAddr,
    server: SocketAddr,
    shared: &Arc<Shared>,
) -> std::io::Result<Flow> {
    let upstream = Arc::new(UdpSocket::bind(SocketAddr::new(server.ip(), 0)).await?);
    upstream.connect(server).await?;
    // Departure times only grow, so a FIFO channel is the link's buffer.
    let (tx, rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let shaper = tokio::spawn(shape(upstream.clone(), tx, shared.clone()));
    let sender = tokio::spawn(deliver(listen.clone(), client, rx, shared.clone()));
    // The way up: constant delay, so due times only grow too.
    let (up, mut up_rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let shared_up = shared.clone();
    let uploader = tokio::spawn(async move {
        while let Some((at, data)) = up_rx.recv().await {
            tokio::time::sleep_until(at).await;
            if upstream.send(&data).await.is_ok() {
                shared_up.up_packets.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    Ok(Flow {
        up,
        tasks: [shaper, sender, uploader],
    })
}

fn delay(shared: &Shared) -> Duration {
    Duration::from_micros(shared.delay_us.load(Ordering::Relaxed))
}

/// Reads what the server sends this client and gives each datagram its
/// departure time on the bottleneck, or drops it when the buffer is full.
async fn shape(
    upstream: Arc<UdpSocket>,
    tx: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; 65_536];
    // When the link finishes sending what it holds.
    let mut link_free = Instant::now();
    loop {
        let Ok(n) = upstream.recv(&mut buf).await else {
            continue;
        };
        let now = Instant::now();
        let depart = match std::num::NonZeroU64::new(shared.down_bps.load(Ordering::Relaxed)) {
            None => now,
            Some(bps) => {
                let start = link_free.max(now);
                let queue = Duration::from_micros(shared.queue_us.load(Ordering::Relaxed));
                if start - now > queue {
                    shared.down_dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                // Bits on the wire: the datagram plus IP and UDP headers.
                let bits = (n as u64 + 28) * 8;
                link_free = start + Duration::from_micros(bits * 1_000_000 / bps);
                link_free
            }
        };
        if tx
            .send((depart + delay(&shared), buf[..n].to_vec()))
            .is_err()
        {
            return;
        }
    }
}

async fn deliver(
    listen: Arc<UdpSocket>,
    client: SocketAddr,
    mut rx: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    shared: Arc<Shared>,
) {
    while let Some((at, data)) = rx.recv().await {
        tokio::time::sleep_until(at).await;
        if listen.send_to(&data, client).await.is_ok() {
            shared.down_packets.fetch_add(1, Ordering::Relaxed);
            shared
                .down_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                // Ten answers per request: the downlink carries more.
                for _ in 0..10 {
                    let _ = s.send_to(&buf[..n], from).await;
                }
            }
        });
        (addr, task)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relays_both_ways_and_caps_the_downlink() {
        let (server, _echo) = echo_server().await;
        let listen = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let proxy = ImpairProxy::start(
            listen,
            server,
            ImpairConfig {
                down_bps: Some(1_000_000),
                queue: Duration::from_millis(50),
                ..ImpairConfig::default()
            },
        )
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(proxy.local_addr()).await.unwrap();
        // 200 requests of 1000 bytes → 2000 answers, 16 Mbit offered to a
        // 1 Mbit/s link with 50 ms of buffer: most must drop.
        for _ in 0..200 {
            client.send(&[7u8; 1000]).await.unwrap();
            // Paced a little, so no socket buffer on the way overflows.
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let mut buf = [0u8; 2048];
        let mut got = 0u64;
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf)).await
        {
            assert_eq!(&buf[..n], &[7u8; 1000][..]);
            got += 1;
        }
        let s = proxy.stats();
        assert_eq!(s.up_packets, 200);
        assert_eq!(s.down_packets, got);
        assert!(got > 0, "nothing came back");
        assert!(s.down_dropped > 0, "a full buffer dropped nothing");
        // (The kernel may drop some answers before the proxy reads them.)
        assert!(got + s.down_dropped <= 2000);

        // Unlimited again: everything passes.
        proxy.set_down_rate(None);
        let before = proxy.stats();
        for _ in 0..20 {
            client.send(&[8u8; 100]).await.unwrap();
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf)).await
        {}
        let after = proxy.stats();
        assert_eq!(after.down_packets - before.down_packets, 200);
        assert_eq!(after.down_dropped, before.down_dropped);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delay_is_added_each_way() {
        let (server, _echo) = echo_server().await;
        let delay = Duration::from_millis(60);
        let proxy = ImpairProxy::start(
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            server,
            ImpairConfig {
                delay,
                ..ImpairConfig::default()
            },
        )
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(proxy.local_addr()).await.unwrap();
        let mut buf = [0u8; 2048];
        let sent = Instant::now();
        client.send(&[9u8; 100]).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(&buf[..n], &[9u8; 100][..]);
        // A lower bound only: a round trip can take longer on a loaded
        // machine, never less than the two delays.
        let rtt = sent.elapsed();
        assert!(
            rtt >= 2 * delay,
            "round trip {rtt:?} with {delay:?} each way"
        );
        assert_eq!(proxy.stats().up_packets, 1);
    }
}
