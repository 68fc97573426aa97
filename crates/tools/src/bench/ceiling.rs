//! The ceiling: how many packets per second one thread can encrypt with
//! AES-128-GCM (as SRTP AEAD does) and hand to the kernel with `sendmmsg`
//! on loopback, and nothing else. No SFU can forward faster than this on one
//! core, so lumen's forwarding rate is reported as a fraction of it.
//!
//! The cipher is the SFU's own (`ring`'s AES-GCM, as lumen-sfu's
//! `crypto_provider` seals SRTP), so a faster cipher in the SFU raises
//! the ceiling with it rather than the ratio.
//!
//! Each phase (encrypt only, send only, both) runs for a fixed wall-clock
//! time on the calling thread; a second thread drains the receiving socket so
//! the kernel buffer does not fill (drops there would not slow the sender,
//! but a drained socket is what a real peer looks like).

use std::io::IoSlice;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrIn, sendmmsg};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::Serialize;

/// Datagrams per `sendmmsg` call.
pub const BATCH: usize = 32;
/// Bytes of an RTP header in front of the encrypted payload.
const RTP_HEADER_LEN: usize = 12;
/// Bytes of the GCM authentication tag after it.
const TAG_LEN: usize = 16;

/// How to measure.
#[derive(Clone, Debug)]
pub struct CeilingOptions {
    /// Encrypted payload bytes per packet (the datagram adds a 12-byte RTP
    /// header and the 16-byte tag).
    pub payload_len: usize,
    /// Wall-clock time of each of the three phases.
    pub phase: Duration,
}

impl Default for CeilingOptions {
    fn default() -> Self {
        Self {
            payload_len: 1200,
            phase: Duration::from_secs(2),
        }
    }
}

/// Packets done in some time.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Rate {
    /// Packets processed.
    pub packets: u64,
    /// Time they took.
    #[serde(serialize_with = "serialize_secs")]
    pub elapsed: Duration,
}

impl Rate {
    /// Packets per second.
    pub fn packets_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.packets as f64 / s
        } else {
            0.0
        }
    }

    /// Nanoseconds per packet.
    pub fn ns_per_packet(&self) -> f64 {
        if self.packets > 0 {
            self.elapsed.as_nanos() as f64 / self.packets as f64
        } else {
            0.0
        }
    }
}

/// What [`run_ceiling`] measured.
#[derive(Clone, Debug, Serialize)]
pub struct CeilingReport {
    /// Encrypted payload bytes per packet.
    pub payload_len: usize,
    /// Datagram bytes on the wire (header + payload + tag).
    pub datagram_len: usize,
    /// Datagrams per `sendmmsg` call.
    pub batch: usize,
    /// AES-128-GCM sealing only.
    pub encrypt: Rate,
    /// `sendmmsg` of ready datagrams only.
    pub send: Rate,
    /// Both, per packet: the ceiling.
    pub encrypt_and_send: Rate,
    /// Datagrams the draining thread saw (a check that the sends were real).
    pub received: u64,
}

impl CeilingReport {
    /// The ceiling in packets per second per core.
    pub fn ceiling_pps(&self) -> f64 {
        self.encrypt_and_send.packets_per_sec()
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        let row = |name: &str, r: &Rate| {
            format!(
                "{name:<18} {:>12.0} pkt/s {:>9.1} ns/pkt  ({} packets in {:.2} s)\n",
                r.packets_per_sec(),
                r.ns_per_packet(),
                r.packets,
                r.elapsed.as_secs_f64()
            )
        };
        let mut s = format!(
            "ceiling on one thread: {} B datagrams ({} B AES-128-GCM payload), sendmmsg batches of {}\n",
            self.datagram_len, self.payload_len, self.batch
        );
        s.push_str(&row("encrypt only", &self.encrypt));
        s.push_str(&row("send only", &self.send));
        s.push_str(&row("encrypt + send", &self.encrypt_and_send));
        s.push_str(&format!(
            "(the draining thread received {} datagrams)\n",
            self.received
        ));
        s
    }
}

/// Measures the three phases on the calling thread.
pub fn run_ceiling(opts: &CeilingOptions) -> anyhow::Result<CeilingReport> {
    if opts.payload_len == 0 || opts.payload_len > 65_000 {
        bail!("payload length must be between 1 and 65000 bytes");
    }
    let receiver = UdpSocket::bind("127.0.0.1:0").context("binding the draining socket")?;
    receiver
        .set_read_timeout(Some(Duration::from_millis(50)))
        .context("setting a read timeout")?;
    let dest = match receiver.local_addr()? {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => bail!("loopback bind gave an IPv6 address"),
    };
    let sender = UdpSocket::bind("127.0.0.1:0").context("binding the sending socket")?;

    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let drain = {
        let stop = stop.clone();
        let received = received.clone();
        std::thread::Builder::new()
            .name("ceiling-drain".into())
            .spawn(move || drain_loop(&receiver, &stop, &received))
            .context("spawning the draining thread")?
    };

    let result = (|| {
        let mut bench = Bench::new(opts.payload_len, sender, dest)?;
        let encrypt = bench.phase(opts.phase, true, false)?;
        let send = bench.phase(opts.phase, false, true)?;
        let encrypt_and_send = bench.phase(opts.phase, true, true)?;
        Ok::<_, anyhow::Error>((encrypt, send, encrypt_and_send))
    })();
    // Let the last datagrams land before counting them.
    std::thread::sleep(Duration::from_millis(60));
    stop.store(true, Ordering::Relaxed);
    let _ = drain.join();
    let (encrypt, send, encrypt_and_send) = result?;
    Ok(CeilingReport {
        payload_len: opts.payload_len,
        datagram_len: RTP_HEADER_LEN + opts.payload_len + TAG_LEN,
        batch: BATCH,
        encrypt,
        send,
        encrypt_and_send,
        received: received.load(Ordering::Relaxed),
    })
}

/// The sending side: a key, a batch of datagram buffers, a socket.
struct Bench {
    key: LessSafeKey,
    bufs: Vec<Vec<u8>>,
    payload_len: usize,
    seq: u64,
    socket: UdpSocket,
    dest: SockaddrIn,
    headers: MultiHeaders<SockaddrIn>,
}

impl Bench {
    fn new(payload_len: usize, socket: UdpSocket, dest: SocketAddrV4) -> anyhow::Result<Self> {
        let mut key_bytes = [0u8; 16];
        rand::fill(&mut key_bytes);
        let key = UnboundKey::new(&AES_128_GCM, &key_bytes)
            .map_err(|_| anyhow::anyhow!("AES-128-GCM key setup failed"))?;
        let bufs = (0..BATCH)
            .map(|i| {
                let mut b = vec![0u8; RTP_HEADER_LEN + payload_len + TAG_LEN];
                b[0] = 0x80;
                b[1] = 102;
                b[RTP_HEADER_LEN..RTP_HEADER_LEN + payload_len].fill(i as u8 ^ 0x5a);
                b
            })
            .collect();
        Ok(Self {
            key: LessSafeKey::new(key),
            bufs,
            payload_len,
            seq: 0,
            socket,
            dest: SockaddrIn::from(dest),
            headers: MultiHeaders::preallocate(BATCH, None),
        })
    }

    /// Runs batches for `len`; returns how many packets went through.
    fn phase(&mut self, len: Duration, encrypt: bool, send: bool) -> anyhow::Result<Rate> {
        let start = Instant::now();
        let mut packets = 0u64;
        loop {
            if encrypt {
                self.encrypt_batch()?;
            }
            let n = if send { self.send_batch()? } else { BATCH };
            packets += n as u64;
            let elapsed = start.elapsed();
            if elapsed >= len {
                return Ok(Rate { packets, elapsed });
            }
        }
    }

    /// Seals every buffer of the batch in place, as SRTP AEAD does: the RTP
    /// header is the associated data, the nonce comes from SSRC and index.
    fn encrypt_batch(&mut self) -> anyhow::Result<()> {
        for buf in &mut self.bufs {
            self.seq += 1;
            let seq = self.seq;
            buf[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
            let mut nonce = [0u8; 12];
            nonce[6..12].copy_from_slice(&seq.to_be_bytes()[2..8]);
            let (header, rest) = buf.split_at_mut(RTP_HEADER_LEN);
            let (payload, tag_out) = rest.split_at_mut(self.payload_len);
            let tag = self
                .key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&*header),
                    payload,
                )
                .map_err(|_| anyhow::anyhow!("AES-GCM seal failed"))?;
            tag_out.copy_from_slice(tag.as_ref());
        }
        Ok(())
    }

    /// One `sendmmsg` of the whole batch; returns the datagrams the kernel
    /// took.
    fn send_batch(&mut self) -> anyhow::Result<usize> {
        let slices: [[IoSlice<'_>; 1]; BATCH] =
            std::array::from_fn(|i| [IoSlice::new(&self.bufs[i])]);
        let addrs = [Some(self.dest); BATCH];
        let sent = sendmmsg(
            self.socket.as_raw_fd(),
            &mut self.headers,
            &slices,
            addrs,
            [],
            MsgFlags::empty(),
        )
        .context("sendmmsg")?;
        Ok(sent.count())
    }
}

fn drain_loop(socket: &UdpSocket, stop: &AtomicBool, received: &AtomicU64) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        if socket.recv_from(&mut buf).is_ok() {
            received.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The CPU's model name from `/proc/cpuinfo` ("unknown CPU" where there is
/// none): runs on different machines are compared through the ceiling,
/// and the model says which machine a ceiling belongs to.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| parse_cpu_model(&info))
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// The first `model name` of a `/proc/cpuinfo` text (ARM kernels may have
/// none).
pub fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        let value = value.trim();
        (key.trim() == "model name" && !value.is_empty()).then(|| value.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ceiling_run_gives_positive_rates() {
        let report = run_ceiling(&CeilingOptions {
            payload_len: 1200,
            phase: Duration::from_millis(30),
        })
        .expect("the ceiling runs");
        assert!(report.encrypt.packets_per_sec() > 0.0);
        assert!(report.send.packets_per_sec() > 0.0);
        assert!(report.ceiling_pps() > 0.0);
        assert!(report.received > 0);
    }

    #[test]
    fn reads_the_cpu_model() {
        let info = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu\n\nprocessor\t: 1\nmodel name\t: other\n";
        assert_eq!(
            parse_cpu_model(info).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        assert_eq!(parse_cpu_model("processor\t: 0\nmodel name\t:\n"), None);
        assert_eq!(parse_cpu_model(""), None);
        assert!(!cpu_model().is_empty());
    }
}
