//! `GET /api/v1/cluster`: the nodes of this node's cluster and the relay
//! tree of each stream, as the directory shows them (admins only).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use super::openapi::{Forbidden, Unauthorized, Unavailable};
use super::{St, json, require_admin};
use crate::authn::Caller;
use crate::error::ApiError;

/// The cluster as the directory shows it.
#[derive(Serialize, ToSchema)]
pub(super) struct ClusterView {
    /// The node that answered.
    this_node: String,
    /// Every live node.
    nodes: Vec<NodeView>,
    /// Every stream with an origin, and its tree.
    streams: Vec<StreamTree>,
}

/// One node.
#[derive(Serialize, ToSchema)]
pub(super) struct NodeView {
    id: String,
    region: String,
    public_url: String,
    /// WHIP, WHEP and relay sessions it serves.
    sessions: u32,
    /// Relay links to child nodes it feeds, and how many it may.
    fanout_used: u32,
    fanout_limit: u32,
}

/// One stream's relay tree.
#[derive(Serialize, ToSchema)]
pub(super) struct StreamTree {
    name: String,
    /// The node its broadcaster publishes to.
    origin: Option<String>,
    /// The nodes carrying it: each with the node feeding it (none for the
    /// origin) and its depth (the origin is 0).
    carriers: Vec<CarrierView>,
}

/// A node carrying a stream.
#[derive(Serialize, ToSchema)]
pub(super) struct CarrierView {
    node: String,
    parent: Option<String>,
    depth: u32,
}

/// The cluster: nodes, streams and their relay trees.
#[utoipa::path(
    get,
    path = "/api/v1/cluster",
    operation_id = "cluster",
    tag = "cluster",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The cluster", body = ClusterView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn view(State(st): St, caller: Caller) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let c = &st.cluster;
    let unavailable = |e: lumen_cascade::DirectoryError| {
        tracing::warn!("cluster view: {e}");
        ApiError::Unavailable
    };
    let mut nodes = c.dir.nodes().await.map_err(unavailable)?;
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    let mut names: Vec<String> = nodes.iter().flat_map(|n| n.streams.clone()).collect();
    names.sort();
    names.dedup();
    let mut streams = Vec::with_capacity(names.len());
    for name in names {
        let origin = c.dir.origin(&name).await.map_err(unavailable)?;
        let mut carriers = c.dir.carriers(&name).await.map_err(unavailable)?;
        carriers.sort_by(|a, b| a.depth.cmp(&b.depth).then(a.node.cmp(&b.node)));
        streams.push(StreamTree {
            name,
            origin: origin.map(|o| o.to_string()),
            carriers: carriers
                .into_iter()
                .map(|k| CarrierView {
                    node: k.node.to_string(),
                    parent: k.parent.map(|p| p.to_string()),
                    depth: k.depth,
                })
                .collect(),
        });
    }
    let view = ClusterView {
        this_node: c.me.to_string(),
        nodes: nodes
            .into_iter()
            .map(|n| NodeView {
                id: n.id.to_string(),
                region: n.region,
                public_url: n.public_url,
                sessions: n.load.sessions,
                fanout_used: n.fanout_used,
                fanout_limit: n.fanout_limit,
            })
            .collect(),
        streams,
    };
    Ok(json(StatusCode::OK, &view))
}
