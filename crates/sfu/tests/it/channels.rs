//! Data channels: a publisher and a viewer that offer a `chat` channel
//! beside their media get it answered; what they send comes out as events,
//! what the application sends reaches them, and media flows as without it.

use std::time::Duration;

use lumen_sfu::{ChannelId, PeerId, SessionError, SfuEvent};
use str0m_netem::NetemConfig;

use crate::harness::{World, gaps_and_reorders};

/// The channel the SFU reported open for `peer`, with its label.
fn opened(w: &World, peer: PeerId) -> Option<(ChannelId, String)> {
    w.sfu_events.iter().find_map(|e| match e {
        SfuEvent::ChannelOpen {
            peer: p,
            channel,
            label,
            ..
        } if *p == peer => Some((*channel, label.clone())),
        _ => None,
    })
}

/// Messages the SFU reported from `peer`: (channel, binary, data).
fn received(w: &World, peer: PeerId) -> Vec<(ChannelId, bool, Vec<u8>)> {
    w.sfu_events
        .iter()
        .filter_map(|e| match e {
            SfuEvent::ChannelData {
                peer: p,
                channel,
                binary,
                data,
            } if *p == peer => Some((*channel, *binary, data.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn chat_channels_carry_messages_both_ways_beside_the_media() {
    let mut w = World::new(81);
    let p = w
        .publisher_with("cam", NetemConfig::new(), Some("chat"))
        .expect("publish with a data channel");
    w.browsers[p].keyframe_every = Some(30);
    let v = w
        .viewer_with(0, "cam", NetemConfig::new(), Some("chat"))
        .expect("watch with a data channel");
    for i in [p, v] {
        assert!(
            w.browsers[i].answer_sdp.contains("m=application"),
            "the data channel was not answered"
        );
    }
    let pub_peer = w.browsers[p].session.expect("session");
    let view_peer = w.browsers[v].session.expect("session");

    // Open at the SFU (the peer's DCEP open arrived) and at the peer (the
    // SFU's acknowledgement arrived).
    let open = w.run_until(Duration::from_secs(3), |w| {
        opened(w, pub_peer).is_some()
            && opened(w, view_peer).is_some()
            && [p, v]
                .iter()
                .all(|&i| !w.browsers[i].channels_open.is_empty())
    });
    assert!(open, "no ChannelOpen: {:?}", w.sfu_events);
    for i in [p, v] {
        let b = &w.browsers[i];
        assert_eq!(
            b.channels_open,
            [(b.channel.expect("channel"), "chat".into())]
        );
    }
    let (pub_channel, label) = opened(&w, pub_peer).expect("open");
    assert_eq!(label, "chat");
    let (view_channel, label) = opened(&w, view_peer).expect("open");
    assert_eq!(label, "chat");

    // Peer -> SFU, text and binary, each with its own bytes.
    let text = "hello from the broadcaster, ünïcödé".as_bytes();
    assert!(w.send_on_channel(p, false, text));
    assert!(w.send_on_channel(v, true, &[0, 1, 2, 255]));
    let arrived = w.run_until(Duration::from_secs(1), |w| {
        !received(w, pub_peer).is_empty() && !received(w, view_peer).is_empty()
    });
    assert!(arrived, "no ChannelData");
    assert_eq!(
        received(&w, pub_peer),
        [(pub_channel, false, text.to_vec())]
    );
    assert_eq!(
        received(&w, view_peer),
        [(view_channel, true, vec![0, 1, 2, 255])]
    );

    // SFU -> peer.
    w.sfu
        .send_channel(view_peer, view_channel, false, b"welcome")
        .expect("send to the viewer");
    w.sfu
        .send_channel(pub_peer, pub_channel, true, &[7; 3000])
        .expect("send to the publisher");
    let delivered = w.run_until(Duration::from_secs(1), |w| {
        !w.browsers[v].channel_data.is_empty() && !w.browsers[p].channel_data.is_empty()
    });
    assert!(delivered, "send_channel did not reach the browsers");
    let own = |i: usize| w.browsers[i].channel.expect("channel");
    assert_eq!(
        w.browsers[v].channel_data,
        [(own(v), false, b"welcome".to_vec())]
    );
    assert_eq!(w.browsers[p].channel_data, [(own(p), true, vec![7; 3000])]);

    // Media flows as it does without a channel.
    w.run_for(Duration::from_secs(2));
    let frames = &w.browsers[v].frames;
    assert!(frames.len() > 50, "viewer got {} frames", frames.len());
    assert!(frames[0].keyframe);
    assert_eq!(gaps_and_reorders(frames), (0, 0));

    // Refusals.
    assert_eq!(
        w.sfu.send_channel(PeerId(999), view_channel, false, b"x"),
        Err(SessionError::UnknownPeer)
    );
    assert_eq!(
        w.sfu
            .send_channel(view_peer, view_channel, true, &vec![0; 1 << 20]),
        Err(SessionError::ChannelMessageTooLarge)
    );

    // The viewer closes its channel: the SFU says so and refuses to send.
    w.close_channel(v);
    let closed = w.run_until(Duration::from_secs(1), |w| {
        w.sfu_events.iter().any(|e| {
            matches!(e, SfuEvent::ChannelClose { peer, channel }
                if *peer == view_peer && *channel == view_channel)
        })
    });
    assert!(closed, "no ChannelClose");
    assert_eq!(
        w.sfu.send_channel(view_peer, view_channel, false, b"late"),
        Err(SessionError::ChannelClosed)
    );
    // The session itself goes on.
    let before = w.browsers[v].frames.len();
    w.run_for(Duration::from_secs(1));
    assert!(w.browsers[v].frames.len() > before + 20);
}

#[test]
fn media_only_offers_are_answered_without_a_data_channel() {
    let mut w = World::new(82);
    let p = w.publisher("cam", NetemConfig::new()).expect("publish");
    let v = w.viewer("cam", NetemConfig::new()).expect("watch");
    for i in [p, v] {
        let answer = &w.browsers[i].answer_sdp;
        assert!(!answer.contains("m=application"), "{answer}");
        assert_eq!(answer.matches("m=").count(), 2, "{answer}");
    }
    w.run_for(Duration::from_secs(1));
    assert!(!w.browsers[v].frames.is_empty());
    assert!(!w.sfu_events.iter().any(|e| matches!(
        e,
        SfuEvent::ChannelOpen { .. } | SfuEvent::ChannelData { .. }
    )));
}
