//! The child's end of the relay endpoint: the HTTP calls a node makes to
//! its parent's `/internal/v1/relay/{stream}` (served by lumen-signaling),
//! each with a node token as the Bearer credential. Plain HTTP on the
//! parent's public URL: node-to-node traffic stays on the private network.

use std::time::Duration;

/// Bound on each call but the link checks (which have their own).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for parents' relay endpoints. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct RelayClient {
    http: reqwest::Client,
}

/// A parent's offer for a link.
#[derive(Debug, Clone)]
pub struct Offered {
    /// The SDP offer, for this node's SFU.
    pub offer: String,
    /// The link's URL on the parent (for its answer, checks and end).
    pub link_url: String,
}

/// What a parent says of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    /// It runs.
    Running,
    /// The parent answers, the link is gone (the stream ended there).
    Gone,
    /// The parent does not answer in time, or drains.
    ParentDown,
}

impl RelayClient {
    /// A client with its own connection pool.
    pub fn new() -> RelayClient {
        RelayClient {
            http: reqwest::Client::builder()
                .timeout(CALL_TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }

    /// `POST {parent}/internal/v1/relay/{stream}`: the parent's offer.
    pub async fn request(
        &self,
        parent_url: &str,
        stream: &str,
        token: &str,
    ) -> Result<Offered, String> {
        let base = parent_url.trim_end_matches('/');
        let res = self
            .http
            .post(format!("{base}/internal/v1/relay/{stream}"))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if res.status() != reqwest::StatusCode::CREATED {
            return Err(format!("the parent answered {}", res.status()));
        }
        let link_url = res
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| res.url().join(l).ok())
            .map(String::from)
            .ok_or("the parent's answer has no Location")?;
        let offer = res.text().await.map_err(|e| e.to_string())?;
        Ok(Offered { offer, link_url })
    }

    /// `PATCH` the link with this node's SDP answer: the link starts.
    pub async fn answer(&self, link_url: &str, token: &str, answer: String) -> Result<(), String> {
        let res = self
            .http
            .patch(link_url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/sdp")
            .body(answer)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if res.status() == reqwest::StatusCode::NO_CONTENT {
            Ok(())
        } else {
            Err(format!("the parent refused the answer: {}", res.status()))
        }
    }

    /// `GET` the link, answered within `timeout`.
    pub async fn status(&self, link_url: &str, token: &str, timeout: Duration) -> LinkStatus {
        let res = self
            .http
            .get(link_url)
            .bearer_auth(token)
            .timeout(timeout)
            .send()
            .await;
        match res.map(|r| r.status()) {
            Ok(reqwest::StatusCode::OK) => LinkStatus::Running,
            Ok(reqwest::StatusCode::NOT_FOUND) => LinkStatus::Gone,
            // A draining parent (503) is leaving too.
            _ => LinkStatus::ParentDown,
        }
    }

    /// Whether the node at `base_url` takes sessions: its `/readyz`
    /// answers `200` within `timeout` (a node that died or drains does
    /// not).
    pub async fn ready(&self, base_url: &str, timeout: Duration) -> bool {
        let base = base_url.trim_end_matches('/');
        let res = self
            .http
            .get(format!("{base}/readyz"))
            .timeout(timeout)
            .send()
            .await;
        matches!(res.map(|r| r.status()), Ok(reqwest::StatusCode::OK))
    }

    /// `DELETE` the link (best effort, within `timeout`).
    pub async fn close(&self, link_url: &str, token: &str, timeout: Duration) {
        let _ = self
            .http
            .delete(link_url)
            .bearer_auth(token)
            .timeout(timeout)
            .send()
            .await;
    }
}
