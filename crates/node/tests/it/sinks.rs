//! External sinks on a running node: str0m clients publish and watch over
//! real UDP, `NodeHandle::attach_sink` feeds a consumer the stream
//! (description, a keyframe, packets), a feed nobody reads loses batches
//! (reported as a gap) without holding back the viewers, and a feed that
//! is detached or dropped gets nothing more.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lumen_node::{FeedEvent, Node, NodeConfig, NodeError, NodeHandle, SinkFeed};
use lumen_sfu::{MediaPacket, SessionError, VideoCodec, is_keyframe_start};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// A bound on every wait: generous, only there so a broken build fails
/// instead of hanging. No assertion is about how long anything took.
const PATIENCE: Duration = Duration::from_secs(20);

/// What a client saw, shared with the test.
#[derive(Default)]
struct Seen {
    connected: AtomicBool,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    keyframe_requests: AtomicU64,
}

/// A str0m client on its own task: a publisher sends 30 H.264 frames a
/// second (a keyframe every 10th and when asked) and Opus; a viewer counts
/// the frames it receives.
struct Client {
    seen: Arc<Seen>,
    stop: watch::Sender<bool>,
}

impl Client {
    async fn publish(h: &NodeHandle, stream: &str) -> (Client, lumen_node::SessionRef) {
        Client::start(h, stream, Direction::SendOnly).await
    }

    async fn watch(h: &NodeHandle, stream: &str) -> (Client, lumen_node::SessionRef) {
        Client::start(h, stream, Direction::RecvOnly).await
    }

    async fn start(
        h: &NodeHandle,
        stream: &str,
        dir: Direction,
    ) -> (Client, lumen_node::SessionRef) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("socket");
        let local = sock.local_addr().expect("addr");
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_h264(true)
            .enable_opus(true, false)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
        let mut api = rtc.sdp_api();
        let video = api.add_media(MediaKind::Video, dir, None, None, None);
        let audio = api.add_media(MediaKind::Audio, dir, None, None, None);
        let (offer, pending) = api.apply().expect("offer");
        let answer = if dir == Direction::SendOnly {
            h.publish(stream, offer.to_sdp_string()).await
        } else {
            h.subscribe(stream, offer.to_sdp_string()).await
        }
        .expect("the node takes the offer");
        let sdp = SdpAnswer::from_sdp_string(&answer.answer_sdp).expect("answer parses");
        rtc.sdp_api()
            .accept_answer(pending, sdp)
            .expect("answer accepted");
        let seen = Arc::new(Seen::default());
        let (stop, stop_rx) = watch::channel(false);
        let publishing = dir == Direction::SendOnly;
        tokio::spawn(drive(
            rtc,
            sock,
            local,
            (video, audio),
            publishing,
            seen.clone(),
            stop_rx,
        ));
        (Client { seen, stop }, answer.session)
    }

    fn connected(&self) -> bool {
        self.seen.connected.load(Ordering::Relaxed)
    }

    fn sent(&self) -> u64 {
        self.seen.frames_sent.load(Ordering::Relaxed)
    }

    fn received(&self) -> u64 {
        self.seen.frames_received.load(Ordering::Relaxed)
    }

    fn keyframe_requests(&self) -> u64 {
        self.seen.keyframe_requests.load(Ordering::Relaxed)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn drive(
    mut rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    (video, audio): (Mid, Mid),
    publishing: bool,
    seen: Arc<Seen>,
    mut stop: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let mut buf = vec![0u8; 2048];
    let mut next_frame = start;
    let mut n: u64 = 0;
    let mut force_key = true;
    loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = sock.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => seen.connected.store(true, Ordering::Relaxed),
                    Event::KeyframeRequest(_) => {
                        seen.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                        force_key = true;
                    }
                    Event::MediaData(d) if d.mid == video => {
                        seen.frames_received.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                },
                Err(_) => return,
            }
        };
        let wake = if publishing {
            timeout.min(next_frame)
        } else {
            timeout
        };
        tokio::select! {
            _ = stop.changed() => return,
            r = sock.recv_from(&mut buf) => {
                if let Ok((len, source)) = r
                    && let Ok(r) = Receive::new(Protocol::Udp, source, local, &buf[..len])
                {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), r));
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
        let now = Instant::now();
        if publishing && now >= next_frame {
            next_frame = now + Duration::from_millis(33);
            if seen.connected.load(Ordering::Relaxed) {
                let key = force_key || n.is_multiple_of(10);
                force_key = false;
                write_frame(&mut rtc, (video, audio), now, start, n, key);
                n += 1;
                seen.frames_sent.store(n, Ordering::Relaxed);
            }
        }
        let _ = rtc.handle_input(Input::Timeout(Instant::now()));
    }
}

/// One H.264 access unit (SPS, PPS and IDR for a keyframe, else one slice)
/// of about 1.5 kB, and a 20 ms Opus packet.
fn write_frame(
    rtc: &mut Rtc,
    (video, audio): (Mid, Mid),
    now: Instant,
    start: Instant,
    n: u64,
    key: bool,
) {
    let mut data = Vec::new();
    if key {
        data.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0x8c]);
        data.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
        data.extend_from_slice(&[0, 0, 0, 1, 0x65]);
    } else {
        data.extend_from_slice(&[0, 0, 0, 1, 0x41]);
    }
    data.extend_from_slice(format!("F{n:010}").as_bytes());
    data.extend(std::iter::repeat_n(0x5a, 1500));
    let micros = (now - start).as_micros() as u64;
    if let Some(w) = rtc.writer(video) {
        let pt = w
            .payload_params()
            .find(|p| p.spec().codec == Codec::H264)
            .map(|p| p.pt());
        if let Some(pt) = pt {
            let t = MediaTime::new(micros * 90 / 1000, Frequency::NINETY_KHZ);
            w.write(pt, now, t, data).expect("video write");
        }
    }
    if let Some(w) = rtc.writer(audio) {
        let pt = w
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt());
        if let Some(pt) = pt {
            let t = MediaTime::new(micros * 48 / 1000, Frequency::FORTY_EIGHT_KHZ);
            w.write(pt, now, t, vec![0xf8, 0xff, 0xfe])
                .expect("audio write");
        }
    }
}

/// Waits until `f` holds (checked every few ms), within [`PATIENCE`].
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The feed's next event, within [`PATIENCE`].
async fn next(feed: &mut SinkFeed) -> FeedEvent {
    tokio::time::timeout(PATIENCE, feed.recv())
        .await
        .expect("an event in time")
        .expect("the feed is attached")
}

/// Reads the feed until a `Source` comes; returns it and the packets before it.
async fn next_source(feed: &mut SinkFeed) -> (FeedEvent, Vec<MediaPacket>) {
    let mut packets = Vec::new();
    loop {
        match next(feed).await {
            FeedEvent::Packets(p) => packets.extend(p),
            e @ FeedEvent::Source { .. } => return (e, packets),
            e => panic!("unexpected {e:?}"),
        }
    }
}

/// The video mid of a `Source`.
fn video_mid(source: &FeedEvent) -> Mid {
    let FeedEvent::Source { tracks, .. } = source else {
        panic!("not a source: {source:?}");
    };
    tracks
        .iter()
        .find(|t| t.kind == MediaKind::Video)
        .expect("a video track")
        .mid
}

/// Reads `count` video packets (and whatever comes between them).
async fn video_packets(feed: &mut SinkFeed, mid: Mid, count: usize) -> Vec<MediaPacket> {
    let mut v = Vec::new();
    while v.len() < count {
        match next(feed).await {
            FeedEvent::Packets(p) => v.extend(p.into_iter().filter(|p| p.mid == mid)),
            e => panic!("unexpected {e:?}"),
        }
    }
    v
}

async fn to_sinks(h: &NodeHandle) -> u64 {
    h.snapshot()
        .await
        .iter()
        .map(|s| s.metrics.rtp_to_sinks)
        .sum()
}

fn config(workers: usize) -> NodeConfig {
    NodeConfig {
        rtc_addr: "127.0.0.1:0".parse().expect("addr"),
        workers,
        ..NodeConfig::new()
    }
}

#[tokio::test]
async fn a_sink_gets_the_stream_and_follows_it_offline_and_back() {
    let node = Node::start(&config(2)).expect("node starts");
    let h = node.handle();
    assert_eq!(
        h.attach_sink("cam").await.err(),
        Some(NodeError::Session(SessionError::NotLive("cam".into())))
    );
    let (publisher, session) = Client::publish(&h, "cam").await;
    until("the publisher sends", || publisher.sent() > 15).await;

    // Description, then video from a keyframe, in order.
    let mut feed = h.attach_sink("cam").await.expect("attach");
    assert_eq!(feed.stream(), "cam");
    let source = next(&mut feed).await;
    assert!(
        matches!(&source, FeedEvent::Source { tracks, live: true, .. } if tracks.len() == 2),
        "{source:?}"
    );
    let mid = video_mid(&source);
    let v = video_packets(&mut feed, mid, 40).await;
    assert!(is_keyframe_start(VideoCodec::H264, &v[0].payload));
    assert!(v.windows(2).all(|p| p[1].seq == p[0].seq + 1));
    assert_eq!(feed.dropped(), 0);

    // A keyframe request reaches the publisher.
    let asked = publisher.keyframe_requests();
    feed.request_keyframe(None).await.expect("asked");
    until("the publisher is asked for a keyframe", || {
        publisher.keyframe_requests() > asked
    })
    .await;

    // The publisher leaves: a description without tracks; the feed stays
    // attached and gets the next publisher, fresh, from a keyframe.
    assert_eq!(h.close(session).await, Ok(true));
    drop(publisher);
    let (offline, _) = next_source(&mut feed).await;
    assert!(
        matches!(&offline, FeedEvent::Source { tracks, live: false, .. } if tracks.is_empty()),
        "{offline:?}"
    );
    let (publisher, _) = Client::publish(&h, "cam").await;
    let (fresh, _) = next_source(&mut feed).await;
    assert!(
        matches!(&fresh, FeedEvent::Source { fresh: true, .. }),
        "{fresh:?}"
    );
    let (live, before) = next_source(&mut feed).await;
    assert!(matches!(live, FeedEvent::Source { live: true, .. }));
    assert!(before.is_empty(), "packets before the publisher connected");
    let mid = video_mid(&live);
    let v = video_packets(&mut feed, mid, 20).await;
    assert!(is_keyframe_start(VideoCodec::H264, &v[0].payload));

    // Detached: nothing more is handed to it.
    feed.detach().await;
    let sent = to_sinks(&h).await;
    let frames = publisher.sent();
    until("the publisher sends more", || {
        publisher.sent() > frames + 15
    })
    .await;
    assert_eq!(to_sinks(&h).await, sent);
    node.shutdown().await;
}

#[tokio::test]
async fn a_full_feed_loses_batches_not_viewers_and_a_dropped_one_detaches() {
    let node = Node::start(&config(1)).expect("node starts");
    let h = node.handle();
    let (publisher, _) = Client::publish(&h, "cam").await;
    until("the publisher connects", || publisher.connected()).await;
    let (viewer, _) = Client::watch(&h, "cam").await;
    until("the viewer gets frames", || viewer.received() > 5).await;

    // A feed of four batches that nobody reads for a while.
    let mut slow = h.attach_sink_with_queue("cam", 4).await.expect("attach");
    until("the worker drops batches for the feed", || {
        slow.dropped() > 0
    })
    .await;
    assert!(slow.queued() <= 4, "{slow:?}");
    let snap: u64 = h.snapshot().await.iter().map(|s| s.sink_dropped).sum();
    assert!(snap > 0);
    // The viewer goes on meanwhile.
    let frames = viewer.received();
    until("the viewer gets more frames", || {
        viewer.received() > frames + 15
    })
    .await;
    // One feed on one worker: the worker's count is the feed's.
    assert!(slow.dropped() >= snap);

    // Read now: what was queued, then the gap, then packets again.
    let source = next(&mut slow).await;
    assert!(matches!(source, FeedEvent::Source { .. }), "{source:?}");
    let mut gaps = 0;
    loop {
        match next(&mut slow).await {
            FeedEvent::Packets(_) => {}
            FeedEvent::Gap { batches } => {
                assert!(batches > 0);
                gaps += batches;
                break;
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    assert!(gaps <= slow.dropped());
    assert!(matches!(next(&mut slow).await, FeedEvent::Packets(_)));

    // Dropped: detached (the snapshot's command queues behind the detach).
    drop(slow);
    let sent = to_sinks(&h).await;
    let frames = viewer.received();
    until("the viewer gets more frames", || {
        viewer.received() > frames + 15
    })
    .await;
    assert_eq!(to_sinks(&h).await, sent);
    node.shutdown().await;
}
