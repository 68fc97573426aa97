//! WHIP and WHEP command-line clients on an independent WebRTC stack
//! (webrtc-rs), for end-to-end tests, load scripts and humans.
//!
//! [`Publisher`] sends an openh264-encoded test pattern whose every access
//! unit carries its frame number and send time in an SEI; [`Watcher`] receives,
//! reassembles and decodes, and checks the frame numbers for gaps and order.
//! Both speak non-trickle WHIP/WHEP (RFC 9725): ICE gathering completes before
//! the offer is POSTed, and the session ends with a DELETE on `Location`.

mod depacketize;
mod pattern;
mod publish;
mod sei;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::sansio::Protocol;
use tokio::sync::{mpsc, watch as watch_chan};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCStatsReport,
    Registry, register_default_interceptors,
};

pub use pattern::{EncodedFrame, PatternEncoder, draw_pattern};
pub use publish::{
    LayerStats, PublishOptions, Publisher, SIMULCAST_LAYERS, SimulcastLayer, run_publish_cli,
};
pub use sei::{FrameTiming, LUMEN_SEI_UUID, find_timing_in_access_unit, parse_timing_sei};
pub use watch::{LAYER_LINK_REL, WatchOptions, WatchStats, Watcher, run_watch_cli};

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
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

fn h264_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: H264_FMTP.to_owned(),
        rtcp_feedback: vec![],
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// What the event handler reports to the session that owns it.
struct Signals {
    gathered: watch_chan::Receiver<bool>,
    state: watch_chan::Receiver<RTCPeerConnectionState>,
}

#[derive(Clone)]
struct Handler {
    gathered: Arc<watch_chan::Sender<bool>>,
    state: Arc<watch_chan::Sender<RTCPeerConnectionState>>,
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

/// The SDES `mid` RTP header extension (RFC 8843).
const MID_EXTENSION_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
/// The SDES `rtp-stream-id` (rid) RTP header extension (RFC 8852).
const RID_EXTENSION_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// Builds a peer connection on 127.0.0.1 with exactly one H.264 and one Opus
/// codec, NACK/PLI feedback and RTCP reports. `forward_keyframe_requests`
/// hands inbound PLI/FIR to the local tracks (for the publisher). `rtx`
/// offers H.264 retransmissions on their own SSRC (for the watcher: repairs
/// arrive there, and so do the server's bandwidth probes, which then get
/// transport-wide feedback like any packet). The
/// default interceptors also offer the `mid`, `rid` and `repaired-rid` header
/// extensions on video (which a simulcast sender tags its packets with) and
/// send TWCC feedback.
async fn build_peer(
    tracks: Option<mpsc::UnboundedSender<Arc<dyn TrackRemote>>>,
    forward_keyframe_requests: bool,
    rtx: bool,
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
    if rtx {
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
    if forward_keyframe_requests {
        // Last in the chain, so the stock interceptors have seen everything.
        registry = registry.with(Slot::from(14_000), KeyframeRequestForwarder::default());
    }

    let (gathered_tx, gathered) = watch_chan::channel(false);
    let (state_tx, state) = watch_chan::channel(RTCPeerConnectionState::New);
    let handler = Arc::new(Handler {
        gathered: Arc::new(gathered_tx),
        state: Arc::new(state_tx),
        tracks,
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

/// What a successful WHIP/WHEP POST gave back.
struct Negotiated {
    /// Absolute URL of the session (the resolved `Location`).
    session_url: String,
    /// When the POST went out.
    posted_at: std::time::Instant,
    /// The URL the POST landed on (after redirects): the base for relative
    /// links.
    base_url: reqwest::Url,
    /// The raw `Link` header values of the 201.
    links: Vec<String>,
}

/// Creates the offer, waits for ICE gathering, POSTs it and applies the
/// answer.
async fn negotiate(
    pc: &Arc<dyn PeerConnection>,
    signals: &mut Signals,
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<Negotiated> {
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    tokio::time::timeout(GATHER_TIMEOUT, signals.gathered.wait_for(|g| *g))
        .await
        .context("ICE gathering did not complete")?
        .context("peer connection dropped while gathering")?;
    let offer = pc
        .local_description()
        .await
        .context("no local description after gathering")?;

    let mut req = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/sdp")
        .body(offer.sdp);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let posted_at = std::time::Instant::now();
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    // After a 307 to another node, Location is relative to where we landed.
    let base_url = resp.url().clone();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let links: Vec<String> = resp
        .headers()
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let body = resp.text().await.unwrap_or_default();
    if status == reqwest::StatusCode::CONFLICT && url.contains("/whep/") {
        bail!(
            "no live publisher on this stream (409 from {url}): {}",
            clip(&body)
        );
    }
    if status != reqwest::StatusCode::CREATED {
        bail!("POST {url} answered {status}: {}", clip(&body));
    }
    let location = location.context("201 without a Location header")?;
    let session_url = base_url
        .join(&location)
        .with_context(|| format!("resolving Location {location:?}"))?
        .to_string();
    let answer = webrtc::peer_connection::RTCSessionDescription::answer(body)
        .context("the server's answer is not valid SDP")?;
    pc.set_remote_description(answer)
        .await
        .context("applying the server's answer")?;
    Ok(Negotiated {
        session_url,
        posted_at,
        base_url,
        links,
    })
}

/// Finds the target of the link with relation `rel` among `Link` header
/// values (RFC 8288: `<uri>; rel="..."`, several per header separated by
/// commas) and resolves it against `base`.
fn find_link(links: &[String], rel: &str, base: &reqwest::Url) -> Option<reqwest::Url> {
    links
        .iter()
        .flat_map(|header| parse_link_header(header))
        .find(|(_, rels)| rels.split_ascii_whitespace().any(|r| r == rel))
        .and_then(|(target, _)| base.join(&target).ok())
}

/// Splits one `Link` header value into (target, rel) pairs.
fn parse_link_header(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else { break };
        let target = after[..close].trim().to_owned();
        let params_and_more = &after[close + 1..];
        // The parameters run to the next comma outside quotes.
        let mut in_quotes = false;
        let mut end = params_and_more.len();
        for (i, c) in params_and_more.char_indices() {
            match c {
                '"' => in_quotes = !in_quotes,
                ',' if !in_quotes => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let params = &params_and_more[..end];
        let rel = params
            .split(';')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("rel"))
            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
            .unwrap_or_default();
        out.push((target, rel));
        rest = &params_and_more[end..];
    }
    out
}

/// An RTP header extension whose value is a string: the SDES `mid` and `rid`
/// extensions.
struct SdesExtension(bytes::Bytes);

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

fn sdes_extension(uri: &'static str, value: &bytes::Bytes) -> rtc::rtp::extension::HeaderExtension {
    rtc::rtp::extension::HeaderExtension::Custom {
        uri: uri.into(),
        extension: Box::new(SdesExtension(value.clone())),
    }
}

/// Waits until the peer connection is connected, or fails.
async fn wait_connected(signals: &mut Signals) -> anyhow::Result<()> {
    let state = tokio::time::timeout(
        CONNECT_TIMEOUT,
        signals.state.wait_for(|s| {
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

/// DELETEs a WHIP/WHEP session and returns the status code.
async fn delete_session(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<u16> {
    let mut req = http.delete(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.with_context(|| format!("DELETE {url}"))?;
    Ok(resp.status().as_u16())
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .context("building the HTTP client")
}

/// The ICE round-trip time of the selected (or any answered) candidate pair.
fn rtt_from_stats(report: &RTCStatsReport) -> Option<Duration> {
    report
        .candidate_pairs()
        .filter(|p| p.current_round_trip_time > 0.0)
        .max_by_key(|p| p.nominated)
        .and_then(|p| Duration::try_from_secs_f64(p.current_round_trip_time).ok())
}

fn clip(body: &str) -> &str {
    let end = body.char_indices().nth(300).map_or(body.len(), |(i, _)| i);
    body[..end].trim()
}

/// The wall clock in µs since the Unix epoch (what timing SEIs carry).
pub(crate) fn micros_since_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_layer_link_among_several() {
        let base = reqwest::Url::parse("http://127.0.0.1:8080/whep/s").expect("url");
        let links = vec![
            r#"<stun:stun.example.net>; rel="ice-server""#.to_owned(),
            concat!(
                r#"</whep/s/sessions/ab/sse>; rel="urn:ietf:params:whep:ext:core:server-sent-events"; events="active,layers", "#,
                r#"<sessions/ab/layer>; rel="urn:ietf:params:whep:ext:core:layer""#
            )
            .to_owned(),
        ];
        let url = find_link(&links, "urn:ietf:params:whep:ext:core:layer", &base);
        assert_eq!(
            url.map(|u| u.to_string()).as_deref(),
            Some("http://127.0.0.1:8080/whep/sessions/ab/layer")
        );
        let sse = find_link(
            &links,
            "urn:ietf:params:whep:ext:core:server-sent-events",
            &base,
        );
        assert_eq!(
            sse.map(|u| u.to_string()).as_deref(),
            Some("http://127.0.0.1:8080/whep/s/sessions/ab/sse")
        );
        assert!(find_link(&links, "nope", &base).is_none());
        assert!(find_link(&[], "ice-server", &base).is_none());
    }

    #[test]
    fn link_parsing_survives_garbage() {
        for junk in [
            "",
            "<",
            ">",
            "<a",
            "<a>;rel",
            "<a>; rel=\"x, <b>; rel=y",
            ",,,<>",
        ] {
            let _ = parse_link_header(junk);
        }
        assert_eq!(
            parse_link_header("<a>;REL=x"),
            vec![("a".to_owned(), "x".to_owned())]
        );
    }
}
