//! What a watcher does with its tracks: one task per track counts packets
//! and (for video) reassembles access units through a jitter buffer, asking
//! for a keyframe when it cannot go on; decoding runs on its own thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::shared::marshal::MarshalSize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::depacketize::{AccessUnit, JitterBuffer};
use super::sei::{access_unit_has_idr, find_timing_in_access_unit};
use super::stats::WatchState;

/// How often a viewer that waits for a keyframe may ask for one.
const PLI_INTERVAL: Duration = Duration::from_millis(500);
/// How long an access unit with a hole waits for its retransmission.
const JITTER_HOLD: Duration = Duration::from_millis(200);
/// Access units queued for the decoder; a full queue drops and resyncs.
const DECODE_QUEUE: usize = 16;

/// What the track tasks, the decoder thread and the watcher share.
pub(super) struct Shared {
    pub state: Mutex<WatchState>,
    /// When the WHEP POST went out: the origin of time-to-first-frame.
    posted_at: Mutex<Instant>,
    /// The decoder rejected a picture: resynchronise on a keyframe (asked
    /// for with a PLI), as a browser does, instead of feeding it more
    /// pictures that reference the lost one.
    decoder_failed: AtomicBool,
}

/// The receiving side of a watcher: the task that owns the track tasks,
/// and the decoder thread.
pub(super) struct Receiver {
    shared: Arc<Shared>,
    tracks: JoinHandle<()>,
    decoder_thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Starts the decoder thread and a task that receives every track
    /// `track_rx` yields.
    pub(super) fn start(
        mut track_rx: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    ) -> anyhow::Result<Receiver> {
        let shared = Arc::new(Shared {
            state: Mutex::new(WatchState::default()),
            posted_at: Mutex::new(Instant::now()),
            decoder_failed: AtomicBool::new(false),
        });
        let (au_tx, au_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(DECODE_QUEUE);
        let decoder_thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("lumen-watch-decoder".into())
                .spawn(move || decode_loop(&au_rx, &shared))
                .context("spawning the decoder thread")?
        };
        let tracks = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                // Owning the track tasks here means aborting this task ends
                // them too, which drops the last decoder senders.
                let mut track_tasks = tokio::task::JoinSet::new();
                while let Some(track) = track_rx.recv().await {
                    let shared = Arc::clone(&shared);
                    let au_tx = au_tx.clone();
                    track_tasks.spawn(async move {
                        match track.kind().await {
                            RtpCodecKind::Video => receive_video(track, shared, au_tx).await,
                            _ => receive_audio(track, shared).await,
                        }
                    });
                }
                drop(au_tx);
                track_tasks.join_all().await;
            })
        };
        Ok(Receiver {
            shared,
            tracks,
            decoder_thread: Some(decoder_thread),
        })
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Sets the origin of time-to-first-frame.
    pub(super) fn set_posted_at(&self, at: Instant) {
        *lock(&self.shared.posted_at) = at;
    }

    /// Stops the track tasks; the decoder thread then ends by itself.
    pub(super) fn abort(&self) {
        self.tracks.abort();
    }

    /// Stops the track tasks and waits (a little) for the decoder thread.
    pub(super) async fn finish(&mut self) {
        self.abort();
        if let Some(thread) = self.decoder_thread.take() {
            // The decoder ends when the last sender (held by the track
            // tasks) is gone.
            let joined = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::task::spawn_blocking(move || thread.join()),
            )
            .await;
            if joined.is_err() {
                tracing::debug!("decoder thread still busy after close");
            }
        }
    }
}

/// Locks a mutex, shrugging off poisoning: the counters stay usable even if
/// a task panicked while holding them.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn receive_video(
    track: Arc<dyn TrackRemote>,
    shared: Arc<Shared>,
    au_tx: std::sync::mpsc::SyncSender<Vec<u8>>,
) {
    let mut jitter = JitterBuffer::new(JITTER_HOLD);
    let mut media_ssrc = 0;
    let mut need_keyframe = true;
    let mut last_pli: Option<Instant> = None;
    loop {
        // Wake for the next packet, or when a hole in the buffer is given up.
        let event = match jitter.deadline() {
            Some(at) => tokio::time::timeout_at(at.into(), track.poll()).await.ok(),
            None => Some(track.poll().await),
        };
        let now = Instant::now();
        match event {
            Some(None | Some(TrackRemoteEvent::OnEnded)) => break,
            Some(Some(TrackRemoteEvent::OnRtpPacket(pkt))) => {
                media_ssrc = pkt.header.ssrc;
                let mut st = lock(&shared.state);
                st.video_seq.record(pkt.header.sequence_number);
                st.on_packet(now, pkt.header.marshal_size() + pkt.payload.len());
                jitter.push(
                    now,
                    pkt.header.sequence_number,
                    pkt.header.timestamp,
                    pkt.header.marker,
                    &pkt.payload,
                );
            }
            Some(Some(_)) => continue,
            None => {}
        }
        let units: Vec<AccessUnit> = std::iter::from_fn(|| jitter.pop(now)).collect();
        if shared.decoder_failed.swap(false, Ordering::Relaxed) {
            need_keyframe = true;
        }
        for unit in units {
            let (data, complete) = match unit {
                AccessUnit::Complete(data) => (data, true),
                AccessUnit::Incomplete { partial } => (partial, false),
            };
            let timing = find_timing_in_access_unit(&data);
            {
                let mut st = lock(&shared.state);
                if let Some(t) = timing {
                    st.on_timing(t, complete);
                }
                if !complete {
                    st.stats.incomplete_frames += 1;
                }
            }
            if complete && (!need_keyframe || access_unit_has_idr(&data)) {
                need_keyframe = false;
                // A full queue means the decoder is behind: drop and resync
                // on the next keyframe rather than queue up latency.
                if au_tx.try_send(data).is_err() {
                    need_keyframe = true;
                }
            } else {
                need_keyframe = true;
            }
            if need_keyframe && last_pli.is_none_or(|t| now.duration_since(t) >= PLI_INTERVAL) {
                last_pli = Some(now);
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
                if track.write_rtcp(vec![Box::new(pli)]).await.is_ok() {
                    lock(&shared.state).stats.keyframe_requests += 1;
                }
            }
        }
    }
}

async fn receive_audio(track: Arc<dyn TrackRemote>, shared: Arc<Shared>) {
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(pkt) => {
                let mut st = lock(&shared.state);
                st.audio_seq.record(pkt.header.sequence_number);
                st.stats.audio_packets += 1;
                st.on_packet(
                    Instant::now(),
                    pkt.header.marshal_size() + pkt.payload.len(),
                );
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

fn decode_loop(rx: &std::sync::mpsc::Receiver<Vec<u8>>, shared: &Shared) {
    let mut decoder = match Decoder::new() {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("openh264 decoder: {e}");
            return;
        }
    };
    while let Ok(au) = rx.recv() {
        let result = decoder.decode(&au).map(|pic| pic.map(|p| p.dimensions()));
        let mut st = lock(&shared.state);
        match result {
            Ok(Some((w, h))) => {
                st.stats.frames_decoded += 1;
                st.stats.width = w as u32;
                st.stats.height = h as u32;
                if st.stats.time_to_first_frame.is_none() {
                    st.stats.time_to_first_frame = Some(lock(&shared.posted_at).elapsed());
                }
            }
            Ok(None) => {}
            Err(_) => {
                st.stats.decode_errors += 1;
                shared.decoder_failed.store(true, Ordering::Relaxed);
            }
        }
    }
}
