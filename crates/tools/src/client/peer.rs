//! The webrtc-rs peer connection both clients use: one H.264 and one Opus
//! codec, NACK/PLI feedback, RTCP reports and TWCC, bound to 127.0.0.1,
//! with its events turned into watch channels ([`Signals`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::sansio::Protocol;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCStatsReport,
    Registry, StatsSelector, register_default_interceptors,
};

/// RTP payload type offered for H.264.
const H264_PT: u8 = 102;
/// RTP payload type offered by the watcher for H.264 retransmissions (RFC 4588).
const H264_RTX_PT: u8 = 103;
/// RTP payload type offered for Opus.
const OPUS_PT: u8 = 111;
/// The H.264 format every lumen client speaks: constrained baseline 3.1,
/// non-interleaved packetization.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the event handler reports to the session that owns it.
pub(super) struct Signals {
    gathered: watch::Receiver<bool>,
    state: watch::Receiver<RTCPeerConnectionState>,
}

impl Signals {
    /// The peer connection's current state.
    pub(super) fn state(&self) -> RTCPeerConnectionState {
        *self.state.borrow()
    }

    /// Waits until ICE gathering has completed.
    pub(super) async fn gathered(&mut self) -> anyhow::Result<()> {
        tokio::time::timeout(GATHER_TIMEOUT, self.gathered.wait_for(|g| *g))
            .await
            .context("ICE gathering did not complete")?
            .context("peer connection dropped while gathering")?;
        Ok(())
    }

    /// Waits until the peer connection is connected, or fails.
    pub(super) async fn connected(&mut self) -> anyhow::Result<()> {
        let state = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.state.wait_for(|s| {
                matches!(
                    s,
                    RTCPeerConnectionState::Connected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                )
            }),
        )
        .await
        .context("ICE/DTLS did not connect in time")?
        .context("peer connection dropped while connecting")?
        .to_owned();
        if state != RTCPeerConnectionState::Connected {
            bail!("peer connection {state} before connecting");
        }
        Ok(())
    }
}

/// What a client's peer connection does besides the common setup.
#[derive(Default)]
pub(super) struct PeerRole {
    /// Where remote tracks go (the watcher).
    pub tracks: Option<mpsc::UnboundedSender<Arc<dyn TrackRemote>>>,
    /// Hand inbound PLI/FIR to the local tracks (the publisher).
    pub forward_keyframe_requests: bool,
    /// Offer H.264 retransmissions on their own SSRC (the watcher: repairs
    /// arrive there, and so do the server's bandwidth probes, which then
    /// get transport-wide feedback like any packet).
    pub rtx: bool,
}

/// Builds a peer connection on 127.0.0.1 with exactly one H.264 and one Opus
/// codec, NACK/PLI feedback and RTCP reports, set up for `role`. The
/// default interceptors also offer the `mid`, `rid` and `repaired-rid` header
/// extensions on video (which a simulcast sender tags its packets with) and
/// send TWCC feedback.
pub(super) async fn build_peer(
    role: PeerRole,
) -> anyhow::Result<(Arc<dyn PeerConnection>, Signals)> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus_codec(),
            payload_type: OPUS_PT,
        },
        RtpCodecKind::Audio,
    )?;
    media_engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: h264_codec(),
            payload_type: H264_PT,
        },
        RtpCodecKind::Video,
    )?;
    if role.rtx {
        media_engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_RTX.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={H264_PT}"),
                    rtcp_feedback: vec![],
                },
                payload_type: H264_RTX_PT,
            },
            RtpCodecKind::Video,
        )?;
    }
    let mut registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
    if role.forward_keyframe_requests {
        // Last in the chain, so the stock interceptors have seen everything.
        registry = registry.with(Slot::from(14_000), KeyframeRequestForwarder::default());
    }

    let (gathered_tx, gathered) = watch::channel(false);
    let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
    let handler = Arc::new(Handler {
        gathered: Arc::new(gathered_tx),
        state: Arc::new(state_tx),
        tracks: role.tracks,
    });
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        // The server is ICE-lite on loopback; a wildcard bind would skip
        // loopback candidates.
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await
        .context("building the peer connection")?;
    Ok((Arc::new(pc), Signals { gathered, state }))
}

/// The ICE round-trip time of the selected (or any answered) candidate pair.
pub(super) async fn rtt(pc: &dyn PeerConnection) -> Option<Duration> {
    let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
    rtt_from_stats(&report)
}

pub(super) fn h264_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: H264_FMTP.to_owned(),
        rtcp_feedback: vec![],
    }
}

pub(super) fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn rtt_from_stats(report: &RTCStatsReport) -> Option<Duration> {
    report
        .candidate_pairs()
        .filter(|p| p.current_round_trip_time > 0.0)
        .max_by_key(|p| p.nominated)
        .and_then(|p| Duration::try_from_secs_f64(p.current_round_trip_time).ok())
}

#[derive(Clone)]
struct Handler {
    gathered: Arc<watch::Sender<bool>>,
    state: Arc<watch::Sender<RTCPeerConnectionState>>,
    tracks: Option<mpsc::UnboundedSender<Arc<dyn TrackRemote>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(%state, "peer connection state");
        self.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if let Some(tx) = &self.tracks {
            let _ = tx.send(track);
        }
    }
}

/// Lets inbound PLI and FIR reach the application (`TrackLocal::poll`), so the
/// publisher can answer a keyframe request with an IDR; all other inbound
/// RTCP stops at the end of the interceptor chain as usual.
#[derive(Default)]
struct KeyframeRequestForwarder {
    read: std::collections::VecDeque<TaggedPacket>,
    write: std::collections::VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| {
                    let any = p.as_any();
                    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
                })
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
