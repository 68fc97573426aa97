//! Sessions land where the placement policy says, commands reach the worker
//! that owns them, and the node's events say what happened.

use std::time::{Duration, Instant};

use lumen_node::{Node, NodeConfig, NodeError, NodeEvent, SessionRef};
use lumen_sfu::{CloseReason, PeerId, SessionError};
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc, RtcConfig};
use tokio::sync::mpsc::UnboundedReceiver;

fn offer(dir: Direction) -> String {
    let mut rtc: Rtc = RtcConfig::new().build(Instant::now());
    rtc.add_local_candidate(
        Candidate::host("127.0.0.1:5000".parse().expect("addr"), "udp").expect("candidate"),
    );
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    let (offer, _pending) = api.apply().expect("offer");
    offer.to_sdp_string()
}

fn config(workers: usize, spread: usize) -> NodeConfig {
    NodeConfig {
        rtc_addr: "127.0.0.1:0".parse().expect("addr"),
        workers,
        worker_spread: spread,
        ..NodeConfig::new()
    }
}

/// The next event matching `f`, within a generous bound (events are
/// produced by other tasks).
async fn next_event(
    rx: &mut UnboundedReceiver<NodeEvent>,
    mut f: impl FnMut(&NodeEvent) -> bool,
) -> NodeEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("the event in time")
            .expect("the node is running");
        if f(&e) {
            return e;
        }
    }
}

#[tokio::test]
async fn viewers_spread_over_workers_through_a_mirror() {
    let mut node = Node::start(&config(2, 0)).expect("node starts");
    let mut events = node.take_events().expect("events");
    assert!(node.take_events().is_none(), "one event stream per node");
    let h = node.handle();
    assert_eq!(h.workers(), 2);
    assert_eq!(h.local_addrs().len(), 2);

    let publisher = h
        .publish("cam", offer(Direction::SendOnly))
        .await
        .expect("publish");
    assert!(publisher.answer_sdp.starts_with("v=0"));
    assert_eq!(
        Some(publisher.announced),
        h.announced(publisher.session.worker)
    );
    // A second publisher of the same name is refused and changes nothing.
    assert_eq!(
        h.publish("cam", offer(Direction::SendOnly)).await.err(),
        Some(NodeError::Session(SessionError::StreamBusy("cam".into())))
    );

    // Spread 0: the first viewer goes to the idle worker (the origin has the
    // publisher), fed by a mirror; the second one to the origin (a tie
    // stays home).
    let v1 = h
        .subscribe("cam", offer(Direction::RecvOnly))
        .await
        .expect("v1");
    let v2 = h
        .subscribe("cam", offer(Direction::RecvOnly))
        .await
        .expect("v2");
    let origin = publisher.session.worker;
    assert_ne!(v1.session.worker, origin, "the first viewer is mirrored");
    assert_eq!(v2.session.worker, origin);

    // The node's merged view: one stream over two workers, but not live and
    // without viewers: none of these sessions connects (no ICE here), and a
    // half-open session is not counted.
    let streams = h.streams().await;
    assert_eq!(streams.len(), 1);
    assert!(!streams[0].live);
    assert_eq!(streams[0].viewers, 0);
    let snaps = h.snapshot().await;
    assert_eq!(snaps.len(), 2);
    assert!(
        snaps
            .iter()
            .all(|s| s.streams.iter().any(|i| i.name == "cam"))
    );

    // A viewer's state comes from its own worker: the mirror knows the
    // stream, and that its publisher has not connected.
    let state = h
        .viewer_state(v1.session, "cam")
        .await
        .expect("worker answers")
        .expect("v1 exists");
    assert!(state.stream.is_some_and(|s| !s.live));

    // Commands reach the worker that owns the session.
    assert_eq!(h.close(v2.session).await, Ok(true));
    assert_eq!(h.close(v2.session).await, Ok(false), "closed once");
    let closed = next_event(
        &mut events,
        |e| matches!(e, NodeEvent::Closed { session, .. } if *session == v2.session),
    )
    .await;
    assert!(matches!(
        closed,
        NodeEvent::Closed {
            reason: CloseReason::Requested,
            ..
        }
    ));
    // A session no worker has is unknown, and nothing changes.
    let ghost = SessionRef {
        worker: 0,
        peer: PeerId(999_999),
    };
    assert_eq!(h.close(ghost).await, Ok(false));
    assert_eq!(
        h.candidates(
            ghost,
            vec!["candidate:1 1 udp 1 127.0.0.1 9 typ host".into()]
        )
        .await,
        Err(NodeError::Session(SessionError::UnknownPeer))
    );
    assert_eq!(h.streams().await[0].viewers, 0, "v1 has not connected");

    // The publisher leaves; the stream is not live on any worker.
    assert_eq!(h.close(publisher.session).await, Ok(true));
    next_event(
        &mut events,
        |e| matches!(e, NodeEvent::Closed { session, .. } if *session == publisher.session),
    )
    .await;
    assert!(h.streams().await.iter().all(|s| !s.live));
    node.shutdown().await;
    // Shutdown closed the remaining viewer.
    next_event(
        &mut events,
        |e| matches!(e, NodeEvent::Closed { session, .. } if *session == v1.session),
    )
    .await;
}

#[tokio::test]
async fn a_viewer_of_a_stream_that_is_not_live_is_refused() {
    let node = Node::start(&config(2, 0)).expect("node starts");
    let h = node.handle();
    assert_eq!(
        h.subscribe("nobody", offer(Direction::RecvOnly))
            .await
            .err(),
        Some(NodeError::Session(SessionError::NotLive("nobody".into())))
    );
    assert!(h.streams().await.iter().all(|s| !s.live));
    node.shutdown().await;
}

#[tokio::test]
async fn a_stopped_node_answers_unavailable() {
    let node = Node::start(&config(1, 32)).expect("node starts");
    let h = node.handle();
    node.shutdown().await;
    assert_eq!(
        h.publish("cam", offer(Direction::SendOnly)).await.err(),
        Some(NodeError::Unavailable)
    );
    assert!(h.snapshot().await.is_empty());
}
