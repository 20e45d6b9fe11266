//! How the page sees the cluster: the pipeline's shape, and each node.

use coffee_engine::topology::Topology;
use coffee_model::node::{NodeId, Role, StageKind};
use coffee_types::{EdgeView, NodeView, StageView, TopologyView};

/// The pipeline as the page draws it: stages with their replicas, and the streams between them (and the gateway).
pub fn topology_view(topology: &Topology) -> TopologyView {
    use coffee_engine::topology::{Edge, Endpoint, EDGES};
    let name = |e: Endpoint| match e {
        Endpoint::Gateway => "gateway".to_owned(),
        Endpoint::Stage(s) => s.name().to_owned(),
    };
    let stages = StageKind::ALL
        .iter()
        .map(|&s| StageView { name: s.name().to_owned(), replicas: topology.replicas(s) })
        .collect();
    // The stages' edges, then the gateway's.
    let (from_gateway, from_stages): (Vec<&Edge>, Vec<&Edge>) = EDGES.iter().partition(|e| e.from == Endpoint::Gateway);
    let edges = from_stages
        .into_iter()
        .chain(from_gateway)
        .map(|e| EdgeView { from: name(e.from), to: name(e.to), stream: format!("{:?}", e.stream) })
        .collect();
    TopologyView { stages, edges }
}

/// A node's view; its role and replica come from its name (`tx_filter-1`; `gateway` is replica 0).
pub(super) fn node_view(
    name: String,
    up: bool,
    pid: Option<u32>,
    restarts: u32,
    heartbeat_age_ms: Option<u64>,
    detail: String,
) -> NodeView {
    let (role, replica) = match name.parse::<NodeId>() {
        Ok(NodeId { role: Role::Gateway, replica }) => ("gateway".to_owned(), replica),
        Ok(NodeId { role: Role::Monitor, replica }) => ("monitor".to_owned(), replica),
        Ok(NodeId { role: Role::Stage(stage), replica }) => (stage.name().to_owned(), replica),
        // Not a pipeline node (the console itself).
        Err(_) => (name.clone(), 0),
    };
    let (open_sessions, state, refused) = (None, None, None);
    NodeView { up, name, role, replica, pid, restarts, heartbeat_age_ms, detail, open_sessions, state, refused }
}
