//! The media loop: viewers' str0m `Rtc`s driven from one thread. A run has
//! one loop per `--threads`, each with its share of the viewers (`shared`
//! adds their counts up).
//!
//! Each viewer owns one UDP socket on 127.0.0.1 (a WHEP server tells its
//! sessions apart by the remote address, so viewers cannot share a port);
//! one `mio` poll waits on all of them at once, and a min-heap of str0m
//! timeouts (with lazy deletion) says when a viewer wants its clock ticked.
//! Per datagram: `handle_input`, then drain `poll_output` until `Timeout`.
//! In RTP mode str0m keeps only one received packet until the next poll, so
//! the drain after every input is what makes the packet counts right.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use lumen_udp::gro;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use str0m::channel::ChannelId;
use str0m::media::{Frequency, KeyframeRequestKind};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use super::chat::{ChatLoad, ChatSlot, ChatTotals, Pacer};
use super::plan::Plan;
use super::procfs::{ProcSample, process_udp_drops, udp_drops_for_ports};
use super::report::{Percentiles, TimelinePoint};
use super::viewer::{RtpIn, ViewerStats};
use crate::client::micros_since_epoch;

mod chat;
mod shared;

use shared::Pending;
pub use shared::{Shared, merge};

/// The waker's token; viewer `i` has token `i + 1`.
const WAKER: Token = Token(0);
/// How long a viewer may take from its POST to DTLS done.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a connected viewer without a keyframe asks for one.
const PLI_INTERVAL: Duration = Duration::from_secs(1);

/// A negotiated viewer handed to the loop.
pub struct NewViewer {
    /// Index in start order.
    pub id: usize,
    /// The Rtc with the server's answer applied.
    pub rtc: Rtc,
    /// Its socket, non-blocking, bound to 127.0.0.1.
    pub socket: std::net::UdpSocket,
    /// When the WHEP POST went out.
    pub posted_at: Instant,
    /// The WHEP session (resolved `Location`), for the DELETE at the end.
    pub session_url: String,
    /// The `chat` data channel of the offer, with `--chat-rate`.
    pub chat: Option<ChannelId>,
}

/// Where a loop stands in the run.
pub struct Place {
    /// Its index; loop 0 samples `/proc`, draws the timeline and prints
    /// the progress for all.
    pub index: usize,
    /// The run's schedule (which viewer belongs to which loop).
    pub plan: Plan,
    /// The run's zero: the first viewer's due time.
    pub started: Instant,
    /// The sums of all loops.
    pub shared: Arc<Shared>,
}

/// What the orchestrating task tells the loop.
pub enum Command {
    /// Start driving a viewer.
    Add(Box<NewViewer>),
    /// Stop counting rates and latency; keep running so NACKs can repair
    /// the last gaps.
    Freeze,
    /// Return.
    Stop,
}

/// The loop's view of one viewer.
pub struct ViewerSlot {
    /// Index in start order.
    pub id: usize,
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    /// Earliest heap entry still pending for this viewer.
    scheduled: Option<Instant>,
    next_timeout: Instant,
    last_pli: Option<Instant>,
    /// The counters.
    pub stats: ViewerStats,
    /// Chat, with `--chat-rate`.
    pub chat: Option<ChatSlot>,
    /// Closed, timed out or disconnected.
    pub dead: bool,
    /// Why, if dead.
    pub failure: Option<String>,
}

impl ViewerSlot {
    /// Marks the viewer dead, keeping the first reason.
    fn fail(&mut self, why: &str) {
        if !self.dead {
            self.dead = true;
            self.failure = Some(why.to_owned());
        }
    }
}

/// One timing SEI read by one viewer.
#[derive(Clone, Copy, Debug)]
pub struct LatencySample {
    /// The publisher's frame number.
    pub frame: u64,
    /// Publisher send time to arrival here.
    pub latency_us: u64,
    /// Arrival.
    pub at: Instant,
}

/// What the loop hands back.
pub struct DriverResult {
    /// Every viewer the loop drove.
    pub viewers: Vec<ViewerSlot>,
    /// Forwarding latencies of all viewers.
    pub latencies: Vec<LatencySample>,
    /// One point per second.
    pub timeline: Vec<TimelinePoint>,
    /// Server samples taken with the timeline, with their time.
    pub server_samples: Vec<(Instant, ProcSample)>,
    /// Own samples taken with the timeline.
    pub own_samples: Vec<(Instant, ProcSample)>,
    /// Datagrams the kernel dropped on the viewers' sockets (receive
    /// buffers full: the generator fell behind), from `/proc/net/udp`.
    pub socket_drops: Option<u64>,
    /// Datagrams the kernel dropped on the server's sockets during the
    /// run (its receive buffers were full), with `--server-pid`.
    pub server_socket_drops: Option<u64>,
    /// Datagrams the kernel refused.
    pub send_errors: u64,
    /// When the loop started (the timeline's zero).
    pub started: Instant,
    /// When measurement stopped.
    pub frozen_at: Option<Instant>,
    /// Per timeline point: cumulative unique packets, for the steady window.
    pub cumulative_packets: Vec<(Instant, u64)>,
    /// Chat counters (all zero without `--chat-rate`).
    pub chat: ChatTotals,
}

/// The loop's state.
pub struct Driver {
    poll: Poll,
    commands: Receiver<Command>,
    viewers: Vec<ViewerSlot>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    buf: Vec<u8>,
    cmsg: Vec<u8>,
    /// The kernel's receive time of the read being handled, µs since the
    /// epoch.
    arrived_us: Option<u64>,
    latencies: Vec<LatencySample>,
    place: Place,
    /// Counted since the last flush into `place.shared`.
    pending: Pending,
    send_errors: u64,
    started: Instant,
    frozen_at: Option<Instant>,
    server_pid: Option<u32>,
    server_drops_at_start: Option<u64>,
    progress: bool,
    timeline: Vec<TimelinePoint>,
    server_samples: Vec<(Instant, ProcSample)>,
    own_samples: Vec<(Instant, ProcSample)>,
    cumulative_packets: Vec<(Instant, u64)>,
    last_tick: Instant,
    last_packets: u64,
    last_bytes: u64,
    /// Total rate and chatters of `--chat-rate`.
    chat_plan: Option<(f64, usize)>,
    pacer: Option<Pacer>,
    /// Per chatter (viewer id below the chatter count): its viewer index.
    chatter_slots: Vec<Option<usize>>,
    chat: ChatTotals,
}

impl Driver {
    /// A loop with no viewers yet, and the waker that interrupts its poll
    /// when a command is sent. Only loop 0 uses `server_pid` and
    /// `progress`.
    pub fn new(
        commands: Receiver<Command>,
        place: Place,
        server_pid: Option<u32>,
        progress: bool,
        chat: Option<&ChatLoad>,
    ) -> std::io::Result<(Self, Waker)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let now = place.started;
        let first = place.index == 0;
        Ok((
            Self {
                poll,
                commands,
                viewers: Vec::new(),
                timers: BinaryHeap::new(),
                buf: vec![0u8; gro::TRAIN_BUF],
                cmsg: gro::cmsg_buffer(),
                arrived_us: None,
                latencies: Vec::new(),
                place,
                pending: Pending::default(),
                send_errors: 0,
                started: now,
                frozen_at: None,
                server_pid: server_pid.filter(|_| first),
                server_drops_at_start: None,
                progress: progress && first,
                timeline: Vec::new(),
                server_samples: Vec::new(),
                own_samples: Vec::new(),
                cumulative_packets: Vec::new(),
                last_tick: now,
                last_packets: 0,
                last_bytes: 0,
                chat_plan: chat.map(|c| (c.rate_per_sec, c.chatters)),
                pacer: None,
                chatter_slots: vec![None; chat.map_or(0, |c| c.chatters)],
                chat: ChatTotals::default(),
            },
            waker,
        ))
    }

    /// Runs until [`Command::Stop`] (or the command channel closes).
    pub fn run(mut self) -> DriverResult {
        let mut events = Events::with_capacity(1024);
        self.last_tick = Instant::now();
        if self.first() {
            self.sample_procs(self.last_tick);
        }
        self.server_drops_at_start = self.server_pid.and_then(process_udp_drops);
        self.pacer = self
            .chat_plan
            .and_then(|(rate, chatters)| Pacer::new(rate, chatters, self.started));
        loop {
            let now = Instant::now();
            self.fire_timers(now);
            self.fire_chat(now);
            let next_tick = self.last_tick + Duration::from_secs(1);
            if now >= next_tick {
                self.tick(now);
            }
            let next_chat = self.pacer.as_ref().map_or(next_tick, Pacer::next_due);
            let wake = self
                .timers
                .peek()
                .map_or(next_tick, |Reverse((t, _))| (*t).min(next_tick))
                .min(next_chat);
            let timeout = wake.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != ErrorKind::Interrupted
            {
                tracing::error!("poll failed: {e}");
                break;
            }
            for ev in events.iter() {
                match ev.token() {
                    // The waker only ends the poll early; the commands are
                    // read below on every pass, so a wake-up coalesced or
                    // lost under load delays one by a tick at most instead
                    // of leaving the loop deaf to `Stop`.
                    WAKER => {}
                    Token(t) => self.read_socket(t - 1),
                }
            }
            let stop = self.handle_commands();
            self.place.shared.flush(&mut self.pending, &mut self.chat);
            if stop {
                break;
            }
        }
        let ports: Vec<u16> = self.viewers.iter().map(|v| v.local.port()).collect();
        let socket_drops = std::fs::read_to_string("/proc/self/net/udp")
            .ok()
            .map(|table| udp_drops_for_ports(&table, &ports));
        let server_socket_drops = self
            .server_pid
            .and_then(process_udp_drops)
            .zip(self.server_drops_at_start)
            .map(|(end, start)| end.saturating_sub(start));
        DriverResult {
            server_socket_drops,
            socket_drops,
            viewers: self.viewers,
            latencies: self.latencies,
            timeline: self.timeline,
            server_samples: self.server_samples,
            own_samples: self.own_samples,
            send_errors: self.send_errors,
            started: self.started,
            frozen_at: self.frozen_at,
            cumulative_packets: self.cumulative_packets,
            chat: self.chat,
        }
    }

    /// Loop 0 speaks for the run.
    fn first(&self) -> bool {
        self.place.index == 0
    }

    /// Returns whether to stop.
    fn handle_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Add(v)) => self.add(*v),
                Ok(Command::Freeze) if self.frozen_at.is_none() => {
                    let now = Instant::now();
                    // The last (partial) timeline point, then stop counting.
                    self.tick(now);
                    self.frozen_at = Some(now);
                    // Messages in flight still count during the grace.
                    self.pacer = None;
                    for v in &mut self.viewers {
                        v.stats.freeze(now);
                    }
                }
                Ok(Command::Freeze) => {}
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return true,
                Err(TryRecvError::Empty) => return false,
            }
        }
    }

    fn add(&mut self, v: NewViewer) {
        let i = self.viewers.len();
        let local = v.socket.local_addr();
        // Trains from a server sending with UDP_SEGMENT arrive whole.
        gro::enable(&v.socket);
        let socket = UdpSocket::from_std(v.socket);
        let mut slot = ViewerSlot {
            id: v.id,
            rtc: v.rtc,
            socket,
            local: *local
                .as_ref()
                .unwrap_or(&SocketAddr::from(([127, 0, 0, 1], 0))),
            scheduled: None,
            next_timeout: Instant::now(),
            last_pli: None,
            stats: ViewerStats {
                posted_at: Some(v.posted_at),
                ..ViewerStats::default()
            },
            chat: v.chat.map(|channel| ChatSlot {
                channel: Some(channel),
                ..ChatSlot::default()
            }),
            dead: false,
            failure: None,
        };
        if let Err(e) = local {
            slot.dead = true;
            slot.failure = Some(format!("socket address: {e}"));
        } else if let Err(e) =
            self.poll
                .registry()
                .register(&mut slot.socket, Token(i + 1), Interest::READABLE)
        {
            slot.dead = true;
            slot.failure = Some(format!("registering the socket: {e}"));
        }
        if self.frozen_at.is_some() {
            slot.stats.freeze(Instant::now());
        }
        let dead = slot.dead;
        if let Some(c) = self.chatter_slots.get_mut(v.id) {
            *c = Some(i);
        }
        self.viewers.push(slot);
        self.pending.added += 1;
        if !dead {
            let now = Instant::now();
            self.input(i, Input::Timeout(now), now);
        }
    }

    /// Reads the socket of viewer `i` until it would block (mio is
    /// edge-triggered).
    fn read_socket(&mut self, i: usize) {
        loop {
            let Some(v) = self.viewers.get_mut(i) else {
                return;
            };
            if v.dead {
                // Drain and drop: the socket stays registered until the end.
                match v.socket.recv_from(&mut self.buf) {
                    Ok(_) => continue,
                    Err(_) => return,
                }
            }
            match gro::recv(&v.socket, &mut self.buf, &mut self.cmsg) {
                Ok(read) => {
                    let now = Instant::now();
                    let local = v.local;
                    // Latency counts to the kernel's receive time, not to
                    // when this one thread got round to the socket.
                    self.arrived_us = read.arrived_us;
                    // Take the buffer out so `input` can borrow `self`.
                    let buf = std::mem::take(&mut self.buf);
                    for d in gro::segments(&buf[..read.len], read.segment) {
                        if let Ok(r) = Receive::new(Protocol::Udp, read.source, local, d) {
                            self.input(i, Input::Receive(now, r), now);
                        }
                    }
                    self.buf = buf;
                    self.arrived_us = None;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ICMP errors (the server went away) surface here; keep
                // going, the str0m timeouts decide when the viewer is dead.
                Err(_) => return,
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((t, i))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(v) = self.viewers.get_mut(i) else {
                continue;
            };
            if v.scheduled != Some(t) || v.dead {
                continue; // superseded by an earlier entry
            }
            v.scheduled = None;
            if v.next_timeout <= now {
                self.input(i, Input::Timeout(now), now);
            } else {
                let next = v.next_timeout;
                self.schedule(i, next);
            }
        }
    }

    fn schedule(&mut self, i: usize, t: Instant) {
        let v = &mut self.viewers[i];
        v.next_timeout = t;
        if v.scheduled.is_none_or(|s| t < s) {
            v.scheduled = Some(t);
            self.timers.push(Reverse((t, i)));
        }
    }

    /// Feeds one input to viewer `i` and drains everything it has to say.
    fn input(&mut self, i: usize, input: Input<'_>, now: Instant) {
        let v = &mut self.viewers[i];
        if let Err(e) = v.rtc.handle_input(input) {
            // Bad network input is counted by str0m and dropped; an error
            // here means the Rtc itself gave up.
            tracing::debug!(viewer = v.id, "handle_input: {e}");
        }
        self.drain(i, now);
    }

    fn drain(&mut self, i: usize, now: Instant) {
        let mut wallclock: Option<u64> = None;
        loop {
            let v = &mut self.viewers[i];
            match v.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.schedule(i, t);
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    if v.socket.send_to(&t.contents, t.destination).is_err() {
                        self.send_errors += 1;
                    }
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        if v.stats.connected_at.is_none() {
                            v.stats.connected_at = Some(now);
                            self.pending.connected += 1;
                        }
                        v.stats
                            .connected_wall_us
                            .get_or_insert_with(micros_since_epoch);
                    }
                    // ICE may come back (consent checks late under load),
                    // so a disconnect is counted, not fatal.
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        v.stats.ice_disconnects += 1;
                    }
                    Event::RtpPacket(p) => {
                        let video = p.time.frequency() == Frequency::NINETY_KHZ;
                        let wire = p.header.header_len + p.payload.len();
                        let rtp = RtpIn {
                            ssrc: *p.header.ssrc,
                            seq: *p.seq_no,
                            video,
                            wire_len: wire,
                            payload: &p.payload,
                        };
                        let arrived = self.arrived_us;
                        let info = v.stats.on_rtp(now, &rtp, || {
                            *wallclock
                                .get_or_insert_with(|| arrived.unwrap_or_else(micros_since_epoch))
                        });
                        if info.new && v.stats.frozen_at.is_none() {
                            self.pending.packets += 1;
                            self.pending.bytes += wire as u64;
                            if let Some(t) = info.timing {
                                let lat = wallclock
                                    .unwrap_or_else(micros_since_epoch)
                                    .saturating_sub(t.sent_at_micros);
                                self.latencies.push(LatencySample {
                                    frame: t.frame_number,
                                    latency_us: lat,
                                    at: now,
                                });
                                self.pending.latencies_us.push(lat);
                            }
                        }
                    }
                    e @ (Event::ChannelOpen(..)
                    | Event::ChannelData(_)
                    | Event::ChannelClose(_)) => self.channel_event(i, e),
                    Event::Closed => v.fail("closed by the server"),
                    _ => {}
                },
                Err(e) => {
                    tracing::debug!(viewer = v.id, "poll_output: {e}");
                    self.schedule(i, now + Duration::from_millis(10));
                    break;
                }
            }
        }
        let v = &mut self.viewers[i];
        if !v.rtc.is_alive() {
            v.fail("the Rtc stopped");
        }
    }

    /// Once a second: viewers that never connect, keyframe requests for
    /// viewers still waiting for a picture; on loop 0 the timeline point
    /// and the progress line, for all loops.
    fn tick(&mut self, now: Instant) {
        for i in 0..self.viewers.len() {
            let v = &mut self.viewers[i];
            if v.dead {
                if let Some(c) = &mut v.chat {
                    self.chat.left(c);
                }
                continue;
            }
            if v.stats.connected_at.is_none()
                && v.stats
                    .posted_at
                    .is_some_and(|p| now.duration_since(p) > CONNECT_TIMEOUT)
            {
                v.dead = true;
                v.failure = Some("ICE/DTLS did not complete in 10 s".into());
                continue;
            }
            if v.stats.first_keyframe_at.is_none()
                && let Some(ssrc) = v.stats.video_ssrc
                && v.last_pli
                    .is_none_or(|t| now.duration_since(t) >= PLI_INTERVAL)
                && v.stats
                    .first_packet_at
                    .is_some_and(|t| now.duration_since(t) >= PLI_INTERVAL)
            {
                v.last_pli = Some(now);
                if let Some(rx) = v.rtc.direct_api().stream_rx(&ssrc.into()) {
                    rx.request_keyframe(KeyframeRequestKind::Pli);
                    v.stats.plis_sent += 1;
                }
                self.drain(i, now);
            }
        }
        if self.frozen_at.is_some() || !self.first() {
            // After the freeze there is nothing left to report; the other
            // loops report through loop 0.
            self.last_tick = now;
            return;
        }
        let secs = now.duration_since(self.last_tick).as_secs_f64().max(1e-3);
        let (server, own) = self.sample_procs(now);
        let shared = &self.place.shared;
        shared.flush(&mut self.pending, &mut self.chat);
        let (packets, bytes) = shared.packets_and_bytes();
        let (connected, added) = shared.connected_and_added();
        // Every loop's receipts of the second, this one's included.
        self.chat.window = shared.take_chat_window();
        let point = TimelinePoint {
            t_s: now.duration_since(self.started).as_secs_f64(),
            viewers_connected: connected,
            rx_packets_per_s: (packets - self.last_packets) as f64 / secs,
            rx_mbps: (bytes - self.last_bytes) as f64 * 8.0 / secs / 1e6,
            latency: Percentiles::from_micros(&mut shared.take_latencies()),
            server_cpu_percent: server.map(|(cpu, _)| cpu),
            server_rss_mib: server.map(|(_, rss)| rss),
            generator_cpu_percent: own.map(|(cpu, _)| cpu),
            chat_latency: self.chat.tick(now),
        };
        self.last_packets = packets;
        self.last_bytes = bytes;
        self.last_tick = now;
        self.cumulative_packets.push((now, packets));
        // The freeze may come right after a tick: rates over a few
        // milliseconds are noise, so such a point only closes the window.
        if secs >= 0.3 {
            if self.progress {
                eprintln!("{}", progress_line(&point, added));
            }
            self.timeline.push(point);
        }
    }

    /// Samples the server and this process; returns (CPU % over the last
    /// interval, RSS MiB) for each.
    #[allow(clippy::type_complexity)]
    fn sample_procs(&mut self, now: Instant) -> (Option<(f64, f64)>, Option<(f64, f64)>) {
        let sample = |pid: u32, list: &mut Vec<(Instant, ProcSample)>| {
            let s = ProcSample::read(pid)?;
            let out = list.last().map(|(t, prev)| {
                let secs = now.duration_since(*t).as_secs_f64().max(1e-3);
                (
                    s.cpu_secs_since(prev) / secs * 100.0,
                    s.rss_kib as f64 / 1024.0,
                )
            });
            list.push((now, s));
            out
        };
        let server = match self.server_pid {
            Some(pid) => sample(pid, &mut self.server_samples),
            None => None,
        };
        let own = sample(std::process::id(), &mut self.own_samples);
        (server, own)
    }
}

fn progress_line(p: &TimelinePoint, started: usize) -> String {
    let mut s = format!(
        "[{:>5.1}s] viewers {}/{} | rx {:.1} Mbit/s {:.0} pkt/s",
        p.t_s, p.viewers_connected, started, p.rx_mbps, p.rx_packets_per_s
    );
    if let Some(l) = &p.latency {
        s.push_str(&format!(
            " | latency p50 {:.1} ms p99 {:.1} ms",
            l.p50_ms, l.p99_ms
        ));
    }
    if let (Some(cpu), Some(rss)) = (p.server_cpu_percent, p.server_rss_mib) {
        s.push_str(&format!(" | server {cpu:.0} % CPU {rss:.0} MiB"));
    }
    if let Some(cpu) = p.generator_cpu_percent {
        s.push_str(&format!(" | generator {cpu:.0} % CPU"));
    }
    if let Some(l) = &p.chat_latency {
        s.push_str(&format!(
            " | chat {} rx p50 {:.1} ms p99 {:.1} ms",
            l.count, l.p50_ms, l.p99_ms
        ));
    }
    s
}
