//! What every handler shares: the node, the session table, the event hub.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use lumen_auth::Auth;
use lumen_node::NodeHandle;
use tokio::sync::watch;

use crate::chat::ChatHandle;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::limits::{CreationRate, Limits, Readers, Refusals};
use crate::sessions::{Kind, SessionEntry, Sessions};

pub(crate) struct AppState {
    pub node: NodeHandle,
    /// Accounts, keys, tokens.
    pub auth: Auth,
    pub sessions: Arc<Sessions>,
    pub hub: Arc<Hub>,
    /// Turns true when the server shuts down (event streams then say `reconnect`).
    pub stop: watch::Receiver<bool>,
    /// `Link: <…>; rel="ice-server"` values, made once.
    pub ice_links: Vec<HeaderValue>,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    pub limits: Limits,
    pub creation_rate: CreationRate,
    pub readers: Readers,
    pub refusals: Refusals,
    /// The chat rooms, for moderation through the API.
    pub chat: ChatHandle,
    /// The recorder (none in unit tests' apps).
    pub recorder: Option<lumen_recorder::Recorder>,
    /// The transcoder (none in unit tests' apps), for its figures.
    pub transcoder: Option<lumen_transcoder::Transcoder>,
    /// This node in its cluster (a cluster of one by default).
    pub cluster: Arc<crate::cluster::Cluster>,
}

impl AppState {
    pub fn new(
        node: NodeHandle,
        auth: Auth,
        sessions: Arc<Sessions>,
        hub: Arc<Hub>,
        stop: watch::Receiver<bool>,
        ice_servers: &[String],
    ) -> Self {
        let ice_links = ice_servers
            .iter()
            .filter_map(|u| HeaderValue::from_str(&format!("<{u}>; rel=\"ice-server\"")).ok())
            .collect();
        AppState {
            node,
            auth,
            sessions,
            hub,
            stop,
            ice_links,
            body_timeout: crate::DEFAULT_BODY_TIMEOUT,
            limits: Limits::new(),
            creation_rate: CreationRate::default(),
            readers: Readers::default(),
            refusals: Refusals::default(),
            chat: ChatHandle::default(),
            recorder: None,
            transcoder: None,
            cluster: Arc::new(crate::cluster::Cluster::alone()),
        }
    }

    /// The session `id` of `stream`, if it speaks `kind`.
    pub fn lookup(&self, kind: Kind, stream: &str, id: &str) -> Result<SessionEntry, ApiError> {
        self.sessions
            .get(id)
            .filter(|e| e.kind == kind && e.stream == stream)
            .ok_or_else(|| ApiError::NotFound("no such session".to_string()))
    }
}
