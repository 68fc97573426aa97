//! What keeps a publisher sending once it is connected.
//!
//! Encoding runs on its own thread per layer (it is CPU work and paces itself
//! to the frame rate; all layers share one clock, so frame `n` carries the
//! same number in every layer); an async task per layer packetizes and writes
//! the access units, another sends audio every 20 ms, and a third turns
//! keyframe requests from the server into forced IDRs on the layer asked for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use rtc::media::Sample;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use super::micros_since_epoch;
use super::pattern::{EncodedFrame, PatternEncoder};
use super::tracks::{Layer, LocalMedia, MID_EXTENSION_URI, RID_EXTENSION_URI, SendParams};

/// An Opus packet of 20 ms of silence: TOC 0xF8 (CELT fullband, 20 ms, mono,
/// one frame) followed by the two-byte silent frame browsers themselves send.
///
/// The publisher sends only this: a real Opus encoder would mean a C library
/// built with cmake (libopus), which this project does not pull in. The
/// audio path (SSRC, packetization, forwarding, loss) is exercised all the
/// same, and decoders play it as silence.
const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

const AUDIO_FRAME: Duration = Duration::from_millis(20);

/// Publisher-wide counters (the per-layer ones are in [`Layer`]).
#[derive(Default)]
pub(super) struct Counters {
    pub keyframe_requests: AtomicU64,
    pub audio_packets: AtomicU64,
}

/// The encoder threads and writer tasks of one publisher.
#[derive(Default)]
pub(super) struct Pumps {
    stop: Arc<AtomicBool>,
    encoder_threads: Vec<std::thread::JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Pumps {
    /// Starts an encoder thread and a writer task per layer, the audio task
    /// and the keyframe request listener. What started before an error
    /// keeps running until [`Pumps::stop`].
    pub(super) fn start(
        &mut self,
        encoders: Vec<PatternEncoder>,
        media: LocalMedia,
        params: &SendParams,
        layers: &Arc<[Layer]>,
        counters: &Arc<Counters>,
        fps: u32,
    ) -> anyhow::Result<()> {
        let fps = fps.clamp(1, 120);
        let frame_duration = Duration::from_secs(1) / fps;
        // One clock for all layers: frame n is due at the same instant in
        // each, and carries the same number.
        let start = Instant::now();
        for (index, encoder) in encoders.into_iter().enumerate() {
            // Encoder thread -> async writer. Small: a stalled writer should
            // hold the encoder back, not queue seconds of video.
            let (frame_tx, frame_rx) = mpsc::channel::<EncodedFrame>(4);
            let stop = Arc::clone(&self.stop);
            let thread_layers = Arc::clone(layers);
            let layer_name = layers[index].rid.unwrap_or("video");
            self.encoder_threads.push(
                std::thread::Builder::new()
                    .name(format!("lumen-publish-encoder-{layer_name}"))
                    .spawn(move || {
                        encode_loop(
                            encoder,
                            &thread_layers[index],
                            start,
                            frame_duration,
                            &stop,
                            &frame_tx,
                        );
                    })
                    .context("spawning an encoder thread")?,
            );
            let tags = params.mid.clone().and_then(|mid| {
                layers[index]
                    .rid
                    .map(|rid| (mid, Bytes::from_static(rid.as_bytes())))
            });
            self.tasks.push(tokio::spawn(write_video(
                frame_rx,
                Arc::clone(&media.video),
                Arc::clone(layers),
                index,
                params.video_pt,
                tags,
                frame_duration,
            )));
        }
        self.tasks.push(tokio::spawn(send_audio(
            media.audio,
            media.audio_ssrc,
            params.audio_pt,
            Arc::clone(counters),
        )));
        let (counters, layers, video) = (Arc::clone(counters), Arc::clone(layers), media.video);
        self.tasks.push(tokio::spawn(async move {
            while let Some(event) = video.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(packets) = event {
                    // The forwarder lets only PLI and FIR through.
                    counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    route_keyframe_requests(&packets, &layers);
                }
            }
        }));
        Ok(())
    }

    /// Stops the tasks and waits for the encoder threads.
    pub(super) async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let threads = std::mem::take(&mut self.encoder_threads);
        if !threads.is_empty() {
            // The threads see the flag within one frame interval.
            let _ = tokio::task::spawn_blocking(move || {
                for thread in threads {
                    let _ = thread.join();
                }
            })
            .await;
        }
    }
}

/// Paces, draws and encodes one layer until `stop`.
fn encode_loop(
    mut encoder: PatternEncoder,
    layer: &Layer,
    start: Instant,
    frame_duration: Duration,
    stop: &AtomicBool,
    frame_tx: &mpsc::Sender<EncodedFrame>,
) {
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = start + frame_duration * (n as u32);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if layer.force_idr.swap(false, Ordering::Relaxed) {
            encoder.force_keyframe();
        }
        match encoder.encode(n, micros_since_epoch) {
            Ok(Some(frame)) => {
                if frame_tx.blocking_send(frame).is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!("encoder stopped: {e:#}");
                return;
            }
        }
        n += 1;
    }
}

/// Packetizes and writes one layer's access units, tagged with `(mid, rid)`
/// when simulcast.
async fn write_video(
    mut frame_rx: mpsc::Receiver<EncodedFrame>,
    track: Arc<TrackLocalStaticSample>,
    layers: Arc<[Layer]>,
    index: usize,
    pt: u8,
    tags: Option<(Bytes, Bytes)>,
    frame_duration: Duration,
) {
    let layer = &layers[index];
    while let Some(frame) = frame_rx.recv().await {
        let len = frame.data.len() as u64;
        let sample = Sample {
            data: Bytes::from(frame.data),
            duration: frame_duration,
            ..Sample::new(Instant::now())
        };
        let mut writer = track.sample_writer(layer.ssrc, pt);
        if let Some((mid, rid)) = &tags {
            writer = writer
                .with_extension(sdes_extension(MID_EXTENSION_URI, mid))
                .with_extension(sdes_extension(RID_EXTENSION_URI, rid));
        }
        match writer.write_sample(&sample).await {
            Ok(()) => {
                layer.frames_sent.fetch_add(1, Ordering::Relaxed);
                layer.bytes_sent.fetch_add(len, Ordering::Relaxed);
                if frame.keyframe {
                    layer.keyframes_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::debug!("video write failed: {e}"),
        }
    }
}

/// Sends [`OPUS_SILENCE`] every 20 ms.
async fn send_audio(
    audio: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    pt: u8,
    counters: Arc<Counters>,
) {
    let mut tick = tokio::time::interval(AUDIO_FRAME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sample = Sample {
            data: Bytes::from_static(&OPUS_SILENCE),
            duration: AUDIO_FRAME,
            ..Sample::new(Instant::now())
        };
        match audio.sample_writer(ssrc, pt).write_sample(&sample).await {
            Ok(()) => {
                counters.audio_packets.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!("audio write failed: {e}"),
        }
    }
}

/// Forces an IDR on each layer a PLI or FIR names; on every layer when none
/// matches (a request for an SSRC we do not know still wants a picture).
fn route_keyframe_requests(packets: &[Box<dyn rtc::rtcp::Packet>], layers: &[Layer]) {
    let mut ssrcs = Vec::new();
    for p in packets {
        let any = p.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            ssrcs.push(pli.media_ssrc);
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            ssrcs.extend(fir.fir.iter().map(|e| e.ssrc));
        }
    }
    let mut matched = false;
    for layer in layers.iter().filter(|l| ssrcs.contains(&l.ssrc)) {
        layer.request_keyframe();
        matched = true;
    }
    if !matched {
        for layer in layers {
            layer.request_keyframe();
        }
    }
}

/// An RTP header extension whose value is a string: the SDES `mid` and `rid`
/// extensions.
struct SdesExtension(Bytes);

impl rtc::shared::marshal::MarshalSize for SdesExtension {
    fn marshal_size(&self) -> usize {
        self.0.len()
    }
}

impl rtc::shared::marshal::Marshal for SdesExtension {
    fn marshal_to(&self, buf: &mut [u8]) -> Result<usize, rtc::shared::error::Error> {
        let out = buf
            .get_mut(..self.0.len())
            .ok_or(rtc::shared::error::Error::BufferTooShort)?;
        out.copy_from_slice(&self.0);
        Ok(self.0.len())
    }
}

fn sdes_extension(uri: &'static str, value: &Bytes) -> rtc::rtp::extension::HeaderExtension {
    rtc::rtp::extension::HeaderExtension::Custom {
        uri: uri.into(),
        extension: Box::new(SdesExtension(value.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tracks::tests::layers_for;

    #[test]
    fn keyframe_requests_go_to_the_layer_asked_for() {
        let layers = layers_for(true);
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: layers[2].ssrc,
        };
        route_keyframe_requests(&[Box::new(pli)], &layers);
        let forced: Vec<bool> = layers
            .iter()
            .map(|l| l.force_idr.load(Ordering::Relaxed))
            .collect();
        assert_eq!(forced, [false, false, true]);
        let unknown = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 7,
        };
        route_keyframe_requests(&[Box::new(unknown)], &layers);
        assert!(layers.iter().all(|l| l.force_idr.load(Ordering::Relaxed)));
    }
}
