//! The publisher's side of the offer and the answer: one sendonly audio and
//! one sendonly video track, the video with one encoding per layer, and the
//! payload types and header extensions the server's answer settled on.
//!
//! Simulcast uses webrtc-rs's own support: one local track whose encodings
//! carry a rid and an SSRC each makes the offer say `a=rid:h send`, …,
//! `a=simulcast:send h;m;l`; the packets are tagged with the `mid` and `rid`
//! header extensions by [`super::send`], as webrtc-rs does not add them by
//! itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpTransceiver;

use super::peer::{h264_codec, opus_codec};
use super::publish::LayerStats;

/// The SDES `mid` RTP header extension (RFC 8843).
pub(super) const MID_EXTENSION_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
/// The SDES `rtp-stream-id` (rid) RTP header extension (RFC 8852).
pub(super) const RID_EXTENSION_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// One video encoding: its identity and counters.
pub(super) struct Layer {
    pub rid: Option<&'static str>,
    pub ssrc: u32,
    pub width: u32,
    pub height: u32,
    pub bitrate_bps: u32,
    pub frames_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub keyframes_sent: AtomicU64,
    pub keyframe_requests: AtomicU64,
    /// Set by a keyframe request, taken by the layer's encoder thread.
    pub force_idr: AtomicBool,
}

impl Layer {
    pub(super) fn new(
        rid: Option<&'static str>,
        ssrc: u32,
        width: u32,
        height: u32,
        bitrate_bps: u32,
    ) -> Layer {
        Layer {
            rid,
            ssrc,
            width,
            height,
            bitrate_bps,
            frames_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            keyframes_sent: AtomicU64::new(0),
            keyframe_requests: AtomicU64::new(0),
            force_idr: AtomicBool::new(false),
        }
    }

    pub(super) fn stats(&self) -> LayerStats {
        LayerStats {
            rid: self.rid.map(str::to_owned),
            ssrc: self.ssrc,
            width: self.width,
            height: self.height,
            bitrate_bps: self.bitrate_bps,
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            keyframes_sent: self.keyframes_sent.load(Ordering::Relaxed),
            keyframe_requests: self.keyframe_requests.load(Ordering::Relaxed),
        }
    }

    pub(super) fn request_keyframe(&self) {
        self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        self.force_idr.store(true, Ordering::Relaxed);
    }
}

/// The local tracks and transceivers of a publisher's offer.
pub(super) struct LocalMedia {
    pub video: Arc<TrackLocalStaticSample>,
    pub audio: Arc<TrackLocalStaticSample>,
    pub audio_ssrc: u32,
    /// Audio, then video.
    transceivers: Vec<Arc<dyn RtpTransceiver>>,
}

/// What the answer settled for sending.
pub(super) struct SendParams {
    pub audio_pt: u8,
    pub video_pt: u8,
    /// The video m-line's mid, with simulcast (every packet carries it and
    /// its layer's rid).
    pub mid: Option<Bytes>,
}

/// Adds the sendonly audio and video transceivers (audio first). With more
/// than one layer, the video track carries one encoding per layer, each with
/// its rid and SSRC: webrtc-rs then offers `a=rid:… send` and
/// `a=simulcast:send …`.
pub(super) async fn add_local_media(
    pc: &Arc<dyn PeerConnection>,
    layers: &[Layer],
    audio_ssrc: u32,
) -> anyhow::Result<LocalMedia> {
    let video = Arc::new(video_track(layers)?);
    let audio = Arc::new(audio_track(audio_ssrc)?);
    let mut transceivers = Vec::new();
    for track in [&audio, &video] {
        let t = pc
            .add_transceiver_from_track(
                Arc::clone(track) as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await
            .context("adding a sendonly transceiver")?;
        transceivers.push(t);
    }
    Ok(LocalMedia {
        video,
        audio,
        audio_ssrc,
        transceivers,
    })
}

/// Reads the payload types (and with `simulcast`, the video mid) from the
/// negotiated senders, and checks that the answer took what simulcast
/// needs.
pub(super) async fn send_params(
    pc: &Arc<dyn PeerConnection>,
    media: &LocalMedia,
    simulcast: bool,
) -> anyhow::Result<SendParams> {
    let mut pts = Vec::new();
    let mut video_extensions = Vec::new();
    for t in &media.transceivers {
        let sender = t.sender().await?.context("transceiver without a sender")?;
        let params = sender.get_parameters().await?;
        let pt = params
            .rtp_parameters
            .codecs
            .first()
            .map(|c| c.payload_type)
            .context("the server accepted no codec for a sender")?;
        pts.push(pt);
        video_extensions = params.rtp_parameters.header_extensions;
    }
    let (audio_pt, video_pt) = match pts[..] {
        [a, v] => (a, v),
        _ => anyhow::bail!("expected an audio and a video sender"),
    };
    // With simulcast every video packet says which m-line and which
    // layer it belongs to; a server that did not accept the extensions
    // could not tell the layers apart.
    let mid = if simulcast {
        for uri in [MID_EXTENSION_URI, RID_EXTENSION_URI] {
            anyhow::ensure!(
                video_extensions.iter().any(|e| e.uri == uri),
                "the server's answer did not accept the {uri} header extension, \
                 which simulcast needs"
            );
        }
        let answer = pc
            .remote_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or_default();
        let video_answer = answer.find("m=video").map_or("", |i| &answer[i..]);
        anyhow::ensure!(
            video_answer.contains("a=simulcast:recv"),
            "the server's answer does not accept simulcast (no a=simulcast:recv on video)"
        );
        let video = media.transceivers.get(1).context("no video transceiver")?;
        Some(Bytes::from(
            video
                .mid()
                .await?
                .context("the video m-line has no mid after negotiation")?,
        ))
    } else {
        None
    };
    Ok(SendParams {
        audio_pt,
        video_pt,
        mid,
    })
}

/// `n` random, distinct, non-zero SSRCs.
pub(super) fn distinct_ssrcs(n: usize) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::with_capacity(n);
    while out.len() < n {
        let ssrc = rand::random::<u32>();
        if ssrc != 0 && !out.contains(&ssrc) {
            out.push(ssrc);
        }
    }
    out
}

fn video_track(layers: &[Layer]) -> anyhow::Result<TrackLocalStaticSample> {
    let encodings = layers
        .iter()
        .map(|layer| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: layer.rid.unwrap_or_default().to_owned(),
                ssrc: Some(layer.ssrc),
                ..Default::default()
            },
            codec: h264_codec(),
            ..Default::default()
        })
        .collect();
    let track = MediaStreamTrack::new(
        "lumen-test-pattern".to_owned(),
        "lumen-video".to_owned(),
        "lumen video".to_owned(),
        RtpCodecKind::Video,
        encodings,
    );
    Ok(TrackLocalStaticSample::new(Instant::now(), track)?)
}

fn audio_track(ssrc: u32) -> anyhow::Result<TrackLocalStaticSample> {
    let track = MediaStreamTrack::new(
        "lumen-test-pattern".to_owned(),
        "lumen-audio".to_owned(),
        "lumen audio".to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: opus_codec(),
            ..Default::default()
        }],
    );
    Ok(TrackLocalStaticSample::new(Instant::now(), track)?)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::client::peer::{PeerRole, build_peer};
    use crate::client::publish::SIMULCAST_LAYERS;

    /// The layers of a publisher, with or without simulcast.
    pub(in crate::client) fn layers_for(simulcast: bool) -> Vec<Layer> {
        let ladder: Vec<(Option<&'static str>, u32, u32)> = if simulcast {
            SIMULCAST_LAYERS
                .iter()
                .map(|l| (Some(l.rid), l.width, l.height))
                .collect()
        } else {
            vec![(None, 640, 360)]
        };
        ladder
            .into_iter()
            .zip(distinct_ssrcs(3))
            .map(|((rid, width, height), ssrc)| Layer::new(rid, ssrc, width, height, 0))
            .collect()
    }

    async fn offer(simulcast: bool) -> String {
        let (pc, _signals) = build_peer(PeerRole {
            forward_keyframe_requests: true,
            ..PeerRole::default()
        })
        .await
        .expect("peer");
        let layers = layers_for(simulcast);
        add_local_media(&pc, &layers, 1234).await.expect("media");
        let offer = pc.create_offer(None).await.expect("offer");
        let _ = pc.close().await;
        offer.sdp
    }

    fn video_section(sdp: &str) -> &str {
        let start = sdp.find("m=video").expect("a video m-line");
        &sdp[start..]
    }

    #[tokio::test]
    async fn simulcast_offer_declares_three_rids() {
        let sdp = offer(true).await;
        let video = video_section(&sdp);
        for line in [
            "a=rid:h send",
            "a=rid:m send",
            "a=rid:l send",
            "a=simulcast:send h;m;l",
            "urn:ietf:params:rtp-hdrext:sdes:mid",
            "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            "a=sendonly",
        ] {
            assert!(video.contains(line), "no {line:?} in\n{video}");
        }
        assert_eq!(video.matches("a=simulcast").count(), 1, "{video}");
    }

    #[tokio::test]
    async fn single_layer_offer_has_no_simulcast() {
        let sdp = offer(false).await;
        let video = video_section(&sdp);
        assert!(!video.contains("a=rid"), "{video}");
        assert!(!video.contains("a=simulcast"), "{video}");
        assert!(video.contains("a=ssrc:"), "{video}");
    }
}
