//! A relay link's chat channel on a virtual clock: the parent's link opens
//! it beside the media, the child's SFU (which takes the link as the
//! stream's publisher) sees it under its own label, never `chat`, and
//! messages cross both ways unchanged, in order.

use std::time::Duration;

use lumen_cascade::relay::{CHAT_LABEL, LinkChat};
use lumen_sfu::SfuEvent;
use str0m_netem::NetemConfig;

use crate::harness::Tree;

#[test]
fn a_relay_link_carries_chat_both_ways_on_its_own_channel() {
    let mut t = Tree::new(7);
    let (origin, edge) = (t.add_node(), t.add_node());
    t.simulcast_publisher(
        origin,
        "talk",
        NetemConfig::new().latency(Duration::from_millis(5)),
    );
    t.run_for(Duration::from_millis(500));
    let l = t.relay(
        origin,
        edge,
        "talk",
        NetemConfig::new().latency(Duration::from_millis(20)),
    );
    let peer = t.links[l].child_peer;
    let opened = |t: &Tree| {
        t.nodes[edge].events.iter().find_map(|e| match e {
            SfuEvent::ChannelOpen {
                peer: p,
                channel,
                label,
                ..
            } if *p == peer => Some((*channel, label.clone())),
            _ => None,
        })
    };
    assert!(
        t.run_until(Duration::from_secs(5), |t| opened(t).is_some()),
        "the child never saw the link's channel"
    );
    let (channel, label) = opened(&t).expect("opened");
    assert_eq!(label, CHAT_LABEL);
    assert_ne!(
        label, "chat",
        "a link must never get the broadcaster's chat"
    );
    assert!(
        t.run_until(Duration::from_secs(1), |t| t.links[l]
            .chat
            .contains(&LinkChat::Open)),
        "the parent's end never reported the channel open: {:?}",
        t.links[l].chat
    );

    // Down: in order, byte for byte.
    let down = [r#"{"t":"all","frame":"{\"type\":\"cleared\"}"}"#, "second"];
    for d in down {
        t.links[l].sender.send_chat(d.to_string());
    }
    let received = |t: &Tree| -> Vec<String> {
        t.nodes[edge]
            .events
            .iter()
            .filter_map(|e| match e {
                SfuEvent::ChannelData {
                    peer: p,
                    channel: c,
                    binary: false,
                    data,
                } if *p == peer && *c == channel => {
                    Some(String::from_utf8_lossy(data).into_owned())
                }
                _ => None,
            })
            .collect()
    };
    assert!(
        t.run_until(Duration::from_secs(2), |t| received(t).len() == 2),
        "{:?}",
        received(&t)
    );
    assert_eq!(received(&t), down);

    // Up: what the child's node writes comes out of the parent's end.
    t.nodes[edge]
        .sfu
        .send_channel(peer, channel, false, br#"{"t":"leave","m":1}"#)
        .expect("the channel takes it");
    let up = LinkChat::Message {
        binary: false,
        data: br#"{"t":"leave","m":1}"#.to_vec(),
    };
    assert!(
        t.run_until(Duration::from_secs(2), |t| t.links[l].chat.contains(&up)),
        "{:?}",
        t.links[l].chat
    );
}
