//! A str0m publisher on its own task, over real UDP to a real node: H.264
//! encoded live by openh264 (a moving gradient, 320x240, 30 fps, a
//! keyframe every 2 s and whenever the node asks) and Opus packets made by
//! ffmpeg (or opaque bytes when a test does not decode them), each track on
//! its own clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lumen_node::{NodeHandle, SessionRef};
use openh264::encoder::{Encoder, EncoderConfig};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use openh264::{OpenH264API, encoder};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::watch;

pub const WIDTH: usize = 320;
pub const HEIGHT: usize = 240;
pub const FPS: u64 = 30;
/// A keyframe every this many frames, besides those asked for.
const GOP: u64 = 60;

#[derive(Default)]
pub struct Seen {
    connected: AtomicBool,
    paused: AtomicBool,
    frames_sent: AtomicU64,
    keyframe_requests: AtomicU64,
}

pub struct Publisher {
    seen: Arc<Seen>,
    stop: watch::Sender<bool>,
    pub session: SessionRef,
}

impl Publisher {
    /// Publishes `stream` on the node; `opus`: the audio packets to send,
    /// every 20 ms, round and round.
    pub async fn start(h: &NodeHandle, stream: &str, opus: Vec<Vec<u8>>) -> Publisher {
        let pictures = tokio::task::spawn_blocking(|| (0..GOP).map(picture).collect())
            .await
            .expect("pictures");
        Publisher::start_with(h, stream, opus, Video::Encode(pictures)).await
    }

    /// Publishes `stream` with video from `video`.
    pub async fn start_with(
        h: &NodeHandle,
        stream: &str,
        opus: Vec<Vec<u8>>,
        video: Video,
    ) -> Publisher {
        let source = video;
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("socket");
        let local = sock.local_addr().expect("addr");
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_h264(true)
            .enable_opus(true, false)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
        let mut api = rtc.sdp_api();
        let video = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().expect("offer");
        let answer = h
            .publish(stream, offer.to_sdp_string())
            .await
            .expect("the node takes the offer");
        let sdp = SdpAnswer::from_sdp_string(&answer.answer_sdp).expect("answer parses");
        rtc.sdp_api()
            .accept_answer(pending, sdp)
            .expect("answer accepted");
        let seen = Arc::new(Seen::default());
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(drive(
            rtc,
            sock,
            local,
            (video, audio),
            (opus, source),
            seen.clone(),
            stop_rx,
        ));
        Publisher {
            seen,
            stop,
            session: answer.session,
        }
    }

    /// Video frames sent so far.
    pub fn sent(&self) -> u64 {
        self.seen.frames_sent.load(Ordering::Relaxed)
    }

    pub fn keyframe_requests(&self) -> u64 {
        self.seen.keyframe_requests.load(Ordering::Relaxed)
    }

    /// Stops sending at once (the node sees the media end).
    /// Stops making media but keeps the connection going, so what str0m
    /// still holds (its pacer queues frames) goes out; [`Publisher::sent`]
    /// is final from here. Returns after `drain`.
    pub async fn pause(&self, drain: Duration) -> u64 {
        self.seen.paused.store(true, Ordering::Relaxed);
        tokio::time::sleep(drain).await;
        self.sent()
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Opaque stand-ins for Opus packets (for tests that never decode audio).
pub fn fake_opus() -> Vec<Vec<u8>> {
    vec![vec![0xfc, 0xff, 0xfe]]
}

/// What the publisher sends as video.
pub enum Video {
    /// These pictures, in a loop, encoded live (keyframes when asked).
    Encode(Vec<YUVBuffer>),
    /// These access units (Annex B): `key` when a keyframe is due, else
    /// `delta`.
    Canned { key: Vec<u8>, delta: Vec<u8> },
}

fn encoder() -> Encoder {
    let config = EncoderConfig::new()
        .rate_control_mode(encoder::RateControlMode::Off)
        .max_frame_rate(encoder::FrameRate::from_hz(FPS as f32))
        .skip_frames(false);
    Encoder::with_api_config(OpenH264API::from_source(), config).expect("openh264 encoder")
}

/// A diagonal gradient that moves with `n` (the publisher cycles through
/// one GOP's worth, made before it starts).
fn picture(n: u64) -> YUVBuffer {
    let mut rgb = vec![0u8; WIDTH * HEIGHT * 3];
    for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
        let (x, y) = ((i % WIDTH) as u64, (i / WIDTH) as u64);
        px[0] = ((x + n * 4) % 256) as u8;
        px[1] = ((y + n * 2) % 256) as u8;
        px[2] = ((x + y + n) % 256) as u8;
    }
    YUVBuffer::from_rgb_source(RgbSliceU8::new(&rgb, (WIDTH, HEIGHT)))
}

async fn drive(
    mut rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    (video, audio): (Mid, Mid),
    (opus, source): (Vec<Vec<u8>>, Video),
    seen: Arc<Seen>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 2048];
    let mut enc = encoder();
    let mut start: Option<Instant> = None;
    let (mut n, mut k) = (0u64, 0u64);
    let mut force_key = true;
    let mut canned_key = false;
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
                    _ => {}
                },
                Err(_) => return,
            }
        };
        let next_video = start.map(|s| s + Duration::from_micros(n * 1_000_000 / FPS));
        let next_audio = start.map(|s| s + Duration::from_millis(k * 20));
        let wake = [Some(timeout), next_video, next_audio]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(timeout);
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
        if start.is_none() && seen.connected.load(Ordering::Relaxed) {
            start = Some(now);
        }
        if let Some(s) = start.filter(|_| !seen.paused.load(Ordering::Relaxed)) {
            // One frame at a time, so its packets go out before the next
            // is encoded.
            if s + Duration::from_micros(n * 1_000_000 / FPS) <= now {
                if force_key || n % GOP == 0 {
                    enc.force_intra_frame();
                    canned_key = true;
                    force_key = false;
                }
                let data = match &source {
                    Video::Encode(pictures) => {
                        let picture = &pictures[(n % GOP) as usize];
                        enc.encode(picture).expect("encode").to_vec()
                    }
                    Video::Canned { key, delta } => {
                        if std::mem::take(&mut canned_key) {
                            key.clone()
                        } else {
                            delta.clone()
                        }
                    }
                };
                let t = MediaTime::new(n * 90_000 / FPS, Frequency::NINETY_KHZ);
                if !data.is_empty() {
                    write(&mut rtc, video, Codec::H264, now, t, data);
                }
                n += 1;
                seen.frames_sent.store(n, Ordering::Relaxed);
            }
            if s + Duration::from_millis(k * 20) <= now {
                let packet = opus[(k as usize) % opus.len()].clone();
                let t = MediaTime::new(k * 960, Frequency::FORTY_EIGHT_KHZ);
                write(&mut rtc, audio, Codec::Opus, now, t, packet);
                k += 1;
            }
        }
        let _ = rtc.handle_input(Input::Timeout(Instant::now()));
    }
}

fn write(rtc: &mut Rtc, mid: Mid, codec: Codec, now: Instant, t: MediaTime, data: Vec<u8>) {
    let Some(w) = rtc.writer(mid) else { return };
    let pt = w
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt());
    if let Some(pt) = pt {
        let _ = w.write(pt, now, t, data);
    }
}
