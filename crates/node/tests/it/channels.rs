//! Data channels through the node over real UDP: a str0m client opens a
//! `chat` channel on its WHIP session, the node announces it, messages go
//! both ways (`NodeEvent::ChannelData` in, `NodeHandle::send_channel` out),
//! and a send on a closed session is refused with a reason.

use std::time::{Duration, Instant};

use lumen_node::{Node, NodeConfig, NodeError, NodeEvent, SessionRef};
use lumen_sfu::{ChannelId, SessionError};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;

#[tokio::test]
async fn a_chat_channel_carries_messages_both_ways() {
    let mut node = Node::start(&NodeConfig {
        rtc_addr: "127.0.0.1:0".parse().expect("addr"),
        workers: 1,
        ..NodeConfig::new()
    })
    .expect("node starts");
    let mut events = node.take_events().expect("events");
    let h = node.handle();

    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("socket");
    let local = sock.local_addr().expect("addr");
    let mut rtc: Rtc = RtcConfig::new().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let client_channel = api.add_channel("chat".to_string());
    let (offer, pending) = api.apply().expect("offer");
    let answer = h
        .publish("chatty", offer.to_sdp_string())
        .await
        .expect("publish");
    let sdp = SdpAnswer::from_sdp_string(&answer.answer_sdp).expect("answer parses");
    rtc.sdp_api()
        .accept_answer(pending, sdp)
        .expect("answer accepted");

    let mut buf = vec![0u8; 2048];
    let mut node_side: Option<(SessionRef, ChannelId)> = None;
    let mut client_open = false;
    let mut sent_up = false;
    let mut sent_down = false;
    let mut got_up: Option<Vec<u8>> = None;
    let mut got_down: Option<Vec<u8>> = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while got_up.is_none() || got_down.is_none() {
        assert!(
            Instant::now() < deadline,
            "no exchange in time: node side {node_side:?}, client open {client_open}, \
             up {got_up:?}, down {got_down:?}"
        );
        let next = loop {
            match rtc.poll_output().expect("client output") {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    sock.send_to(&t.contents, t.destination)
                        .await
                        .expect("send");
                }
                Output::Event(Event::ChannelOpen(id, label)) => {
                    assert_eq!(id, client_channel);
                    assert_eq!(label, "chat");
                    client_open = true;
                }
                Output::Event(Event::ChannelData(d)) => got_down = Some(d.data),
                Output::Event(_) => {}
            }
        };
        if client_open && !sent_up {
            let mut ch = rtc.channel(client_channel).expect("the client's channel");
            sent_up = ch
                .write(false, b"{\"type\":\"send\",\"text\":\"hi\"}")
                .expect("write");
        }
        if let Some((session, channel)) = node_side
            && !sent_down
        {
            h.send_channel(session, channel, false, b"{\"type\":\"notice\"}".to_vec())
                .await
                .expect("the node sends on the channel");
            sent_down = true;
        }
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(20));
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, from) = r.expect("recv");
                if let Ok(rcv) = Receive::new(Protocol::Udp, from, local, &buf[..n]) {
                    rtc.handle_input(Input::Receive(Instant::now(), rcv)).expect("input");
                }
            }
            Some(e) = events.recv() => match e {
                NodeEvent::ChannelOpen { session, channel, label, .. } => {
                    assert_eq!(label, "chat");
                    node_side = Some((session, channel));
                }
                NodeEvent::ChannelData { binary, data, .. } => {
                    assert!(!binary, "a text frame");
                    got_up = Some(data);
                }
                _ => {}
            },
            _ = tokio::time::sleep(wait) => {
                rtc.handle_input(Input::Timeout(Instant::now())).expect("timeout");
            }
        }
    }
    assert_eq!(
        got_up.as_deref(),
        Some(&b"{\"type\":\"send\",\"text\":\"hi\"}"[..])
    );
    assert_eq!(got_down.as_deref(), Some(&b"{\"type\":\"notice\"}"[..]));

    // A closed session's channel refuses, and says why.
    let (session, channel) = node_side.expect("the node saw the channel");
    assert!(h.close(session).await.expect("close"));
    let err = h
        .send_channel(session, channel, false, b"late".to_vec())
        .await
        .expect_err("the session is gone");
    assert!(
        matches!(err, NodeError::Session(SessionError::UnknownPeer)),
        "{err:?}"
    );
    // Many channels at once: each answered in order, per worker.
    let elsewhere = SessionRef {
        worker: 9,
        peer: session.peer,
    };
    let each = h
        .send_channels(
            &[(session, channel), (elsewhere, channel)],
            false,
            b"x".to_vec(),
        )
        .await;
    assert!(
        matches!(each[0], Err(NodeError::Session(SessionError::UnknownPeer))),
        "{each:?}"
    );
    assert_eq!(each[1], Err(NodeError::Unavailable));
    node.shutdown().await;
}
