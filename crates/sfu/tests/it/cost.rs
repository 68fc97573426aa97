//! What the SFU spends per forwarded packet, and what chat costs both
//! ends, counted in instructions: scenarios for `valgrind
//! --tool=callgrind`, whose counts repeat from run to run where this shared
//! machine's CPU times swing by 10–15 %. Ignored in the ordinary test run;
//! `benches/forward-cost.sh` runs the first and divides the SFU's
//! instructions in the measured window by the packets it forwarded there,
//! `benches/chat-cost.sh` the second.

use std::time::Duration;

use lumen_sfu::{ChannelId, PeerId, SessionError, Sfu, SfuEvent};

use crate::harness::{World, link};

/// A one-layer 2.5 Mbit/s publisher (30 fps of ~10.4 kB frames, a
/// keyframe every 2 s, and audio) and `LUMEN_COST_VIEWERS` viewers
/// (default 20) on clean links. Once every viewer has played for a while
/// (its receivers have reported, so its packets carry no `mid`), three
/// seconds of forwarding run inside [`measured_window`], the function the
/// script tells callgrind to count.
#[test]
#[ignore = "a measurement: benches/forward-cost.sh runs it under callgrind"]
fn forwarding_cost() {
    let viewers = viewers_from_env(20);
    let mut w = World::new(5);
    let p = w.publisher("cost", link()).expect("publish");
    w.browsers[p].frame_size = 10_400;
    w.browsers[p].keyframe_every = Some(60);
    let vs: Vec<usize> = (0..viewers)
        .map(|_| w.viewer("cost", link()).expect("watch"))
        .collect();
    // str0m's receivers report audio every 5 s, video every second.
    w.run_for(Duration::from_secs(6));

    let forwarded_before = w.sfu.metrics().rtp_forwarded;
    let frames_before: Vec<usize> = vs.iter().map(|v| w.browsers[*v].frames.len()).collect();
    let window = Duration::from_secs(3);
    measured_window(&mut w, window);
    let forwarded = w.sfu.metrics().rtp_forwarded - forwarded_before;

    for (v, before) in vs.iter().zip(frames_before) {
        let got = w.browsers[*v].frames.len() - before;
        // 90 frames were sent in the window; a few may still be in flight.
        assert!(got >= 85, "viewer {v} got {got} frames in the window");
    }
    // Video (about 9 packets a frame) and audio (50 a second) to each.
    assert!(
        forwarded as usize >= viewers * 3 * (30 * 9 + 50) * 9 / 10,
        "forwarded {forwarded}"
    );
    println!("forwarded {forwarded} packets to {viewers} viewers in {window:?}");
}

/// `LUMEN_COST_VIEWERS`, or `default`.
fn viewers_from_env(default: usize) -> usize {
    std::env::var("LUMEN_COST_VIEWERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The window callgrind counts (`--toggle-collect=*measured_window*`).
#[inline(never)]
fn measured_window(w: &mut World, d: Duration) {
    w.run_for(d);
}

/// What chat costs both ends of a data channel, counted in instructions
/// (`benches/chat-cost.sh` runs it under callgrind, with and without the
/// chat, and takes the difference). A 200 kbit/s one-layer publisher and
/// `LUMEN_COST_VIEWERS` viewers (default 50) with a `chat` channel each.
/// With `LUMEN_COST_CHAT` not `0`, the measured three seconds carry what
/// `lumen load --chat-rate 1000` asks of a room of 500: every 20 ms a
/// round gives each viewer one 600-byte binary message (a compressed
/// round's size), and each viewer sends a 100-byte text every 25 rounds
/// (2 a second).
#[test]
#[ignore = "a measurement: benches/chat-cost.sh runs it under callgrind"]
fn chat_cost() {
    let viewers = viewers_from_env(50);
    let chat = std::env::var("LUMEN_COST_CHAT").map_or(true, |v| v != "0");
    let mut w = World::new(6);
    let p = w.publisher("cost", link()).expect("publish");
    w.browsers[p].frame_size = 800;
    w.browsers[p].keyframe_every = Some(60);
    let vs: Vec<usize> = (0..viewers)
        .map(|_| {
            w.viewer_with(0, "cost", link(), Some("chat"))
                .expect("watch")
        })
        .collect();
    let open = w.run_until(Duration::from_secs(5), |w| {
        vs.iter().all(|&v| !w.browsers[v].channels_open.is_empty())
    });
    assert!(open, "not every viewer's channel opened");
    let channels: Vec<(PeerId, ChannelId)> = vs
        .iter()
        .map(|&v| {
            let peer = w.browsers[v].session.expect("session");
            let channel = w
                .sfu_events
                .iter()
                .find_map(|e| match e {
                    SfuEvent::ChannelOpen {
                        peer: p, channel, ..
                    } if *p == peer => Some(*channel),
                    _ => None,
                })
                .expect("the SFU opened the viewer's channel");
            (peer, channel)
        })
        .collect();
    w.run_for(Duration::from_secs(6));

    let got_before: Vec<usize> = vs
        .iter()
        .map(|&v| w.browsers[v].channel_data.len())
        .collect();
    let data_events = |w: &World| {
        w.sfu_events
            .iter()
            .filter(|e| matches!(e, SfuEvent::ChannelData { .. }))
            .count()
    };
    let in_before = data_events(&w);
    let window = Duration::from_secs(3);
    let (rounds, sent) = measured_chat_window(&mut w, &channels, &vs, window, chat);
    // What is still in flight arrives (outside the counted window).
    w.run_for(Duration::from_millis(500));

    let delivered: usize = vs
        .iter()
        .zip(got_before)
        .map(|(&v, before)| w.browsers[v].channel_data.len() - before)
        .sum();
    let arrived = data_events(&w) - in_before;
    let frames = vs.iter().map(|&v| w.browsers[v].frames.len()).min();
    assert!(
        frames.is_some_and(|f| f > 200),
        "the video stalled: {frames:?}"
    );
    if chat {
        assert_eq!(
            delivered,
            rounds * viewers,
            "every round reached every viewer"
        );
        assert_eq!(arrived, sent, "every viewer's text reached the SFU");
    } else {
        assert_eq!((delivered, arrived), (0, 0));
    }
    println!(
        "chat {chat}: {rounds} rounds to {viewers} viewers, {delivered} messages delivered, {sent} sent"
    );
}

/// The window callgrind counts (`--toggle-collect`).
#[inline(never)]
fn measured_chat_window(
    w: &mut World,
    channels: &[(PeerId, ChannelId)],
    viewers: &[usize],
    d: Duration,
    chat: bool,
) -> (usize, usize) {
    let round_every = Duration::from_millis(20);
    let message = vec![0x5a; 600];
    let text = format!(r#"{{"type":"send","text":"{}"}}"#, "x".repeat(73));
    let (mut rounds, mut sent) = (0, 0);
    let end = w.now + d;
    while w.now < end {
        if chat {
            for (k, &(peer, channel)) in channels.iter().enumerate() {
                send_channel(&mut w.sfu, peer, channel, &message)
                    .expect("the round's message was taken");
                if (k + rounds) % 25 == 0 {
                    assert!(w.send_on_channel(viewers[k], false, text.as_bytes()));
                    sent += 1;
                }
            }
            rounds += 1;
        }
        w.run_for(round_every);
    }
    (rounds, sent)
}

/// `Sfu::send_channel` in a function of its own that does not end in the
/// call, counted by `benches/chat-cost.sh`.
#[inline(never)]
fn send_channel(
    sfu: &mut Sfu,
    peer: PeerId,
    channel: ChannelId,
    message: &[u8],
) -> Result<(), SessionError> {
    std::hint::black_box(sfu.send_channel(peer, channel, true, message))
}
