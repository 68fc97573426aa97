//! A WHIP or WHEP session of a webrtc-rs client: its peer connection and the
//! resource on the server it was negotiated with. The publisher and the
//! watcher differ in the media they add before the offer and in what they
//! run once connected; offering, connecting and ending are the same.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};

use super::peer::{Signals, rtt};
use crate::whip;

/// A negotiated session; [`Session::close`] ends it on both sides.
pub(super) struct Session {
    pc: Arc<dyn PeerConnection>,
    signals: Signals,
    http: reqwest::Client,
    token: Option<String>,
    url: String,
    posted_at: Instant,
    /// Where the POST landed (after redirects): the base of relative links.
    base_url: reqwest::Url,
    /// The raw `Link` header values of the 201.
    links: Vec<String>,
}

impl Session {
    /// Creates the offer from what `pc` has been given, waits for ICE
    /// gathering (non-trickle), POSTs the offer to `url` and applies the
    /// answer. Closes `pc` if any of it fails.
    pub(super) async fn open(
        pc: Arc<dyn PeerConnection>,
        mut signals: Signals,
        url: &str,
        token: Option<String>,
    ) -> anyhow::Result<Session> {
        let http = match whip::http_client() {
            Ok(http) => http,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        match negotiate(&pc, &mut signals, &http, url, token.as_deref()).await {
            Ok(answer) => Ok(Session {
                pc,
                signals,
                http,
                token,
                url: answer.session_url,
                posted_at: answer.posted_at,
                base_url: answer.base_url,
                links: answer.links,
            }),
            Err(e) => {
                let _ = pc.close().await;
                Err(e)
            }
        }
    }

    /// Absolute URL of the session (the resolved `Location`).
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// When the offer was POSTed.
    pub(super) fn posted_at(&self) -> Instant {
        self.posted_at
    }

    /// The target of the answer's `Link` with relation `rel`, resolved.
    pub(super) fn link(&self, rel: &str) -> Option<reqwest::Url> {
        whip::find_link(&self.links, rel, &self.base_url)
    }

    /// The HTTP client and token, for requests on the session's links.
    pub(super) fn http(&self) -> (&reqwest::Client, Option<&str>) {
        (&self.http, self.token.as_deref())
    }

    pub(super) fn pc(&self) -> &Arc<dyn PeerConnection> {
        &self.pc
    }

    /// Current peer connection state.
    pub(super) fn state(&self) -> RTCPeerConnectionState {
        self.signals.state()
    }

    /// Waits until ICE and DTLS have connected, or fails.
    pub(super) async fn connected(&mut self) -> anyhow::Result<()> {
        self.signals.connected().await
    }

    /// ICE round-trip time to the server, when measured.
    pub(super) async fn rtt(&self) -> Option<Duration> {
        rtt(self.pc.as_ref()).await
    }

    /// DELETEs the session and closes the peer connection, both whatever
    /// the other gives; returns the DELETE's status code.
    pub(super) async fn close(&self) -> anyhow::Result<u16> {
        let status = whip::delete_session(&self.http, &self.url, self.token.as_deref()).await;
        let closed = self.pc.close().await;
        let status = status?;
        closed.context("closing the peer connection")?;
        Ok(status)
    }
}

async fn negotiate(
    pc: &Arc<dyn PeerConnection>,
    signals: &mut Signals,
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<whip::Answer> {
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    signals.gathered().await?;
    let offer = pc
        .local_description()
        .await
        .context("no local description after gathering")?;
    let answer = whip::post_offer(http, url, token, offer.sdp).await?;
    let sdp = webrtc::peer_connection::RTCSessionDescription::answer(answer.sdp.clone())
        .context("the server's answer is not valid SDP")?;
    pc.set_remote_description(sdp)
        .await
        .context("applying the server's answer")?;
    Ok(answer)
}
