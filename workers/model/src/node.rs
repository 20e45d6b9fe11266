//! Who is who in the pipeline: the stages, and one node's identity (its role and replica). A node's name
//! (`gateway`, `tx_filter-0`) is how logs, queues, monitors and orchestrators refer to it; [`NodeId`] prints as
//! that name and parses back from it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One node: the gateway, a replica of a stage, or a health monitor. Messages name their sender by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    pub role: Role,
    pub replica: u16,
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.role {
            Role::Gateway => f.write_str("gateway"),
            Role::Stage(stage) => write!(f, "{}-{}", stage.name(), self.replica),
            Role::Monitor => write!(f, "monitor-{}", self.replica),
        }
    }
}

impl NodeId {
    pub const GATEWAY: NodeId = NodeId { role: Role::Gateway, replica: 0 };

    pub fn stage(stage: StageKind, replica: u16) -> NodeId {
        NodeId { role: Role::Stage(stage), replica }
    }

    pub fn monitor(replica: u16) -> NodeId {
        NodeId { role: Role::Monitor, replica }
    }
}

/// A name that is not a node's: not `gateway`, `monitor-N` or `STAGE-N`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` names no node (gateway, monitor-N, or STAGE-N with a stage of {stages})", stages = StageKind::names())]
pub struct UnknownNode(pub String);

/// Reads a node's name back (`gateway`, `monitor-2`, `q3_agg-1`): the inverse of its `Display`.
impl std::str::FromStr for NodeId {
    type Err = UnknownNode;

    fn from_str(name: &str) -> Result<NodeId, UnknownNode> {
        if name == "gateway" {
            return Ok(NodeId::GATEWAY);
        }
        let unknown = || UnknownNode(name.to_owned());
        let (role, replica) = name.rsplit_once('-').ok_or_else(unknown)?;
        // Digits only: `u16::from_str` would also take a leading `+`, and the name would not print back.
        if replica.is_empty() || !replica.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unknown());
        }
        let replica: u16 = replica.parse().map_err(|_| unknown())?;
        match role {
            "monitor" => Ok(NodeId::monitor(replica)),
            stage => StageKind::from_name(stage).map(|stage| NodeId::stage(stage, replica)).ok_or_else(unknown),
        }
    }
}

/// The role of a node in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Gateway,
    Stage(StageKind),
    /// A health monitor: it sends no pipeline message, but it is a node the orchestrators run and restart.
    /// Last, so the wire encoding of the other roles is unchanged.
    Monitor,
}

/// The stages of the pipeline (`coffee_engine::topology` says how they connect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StageKind {
    /// Transactions of 2024-2025: Q1 rows, and partial aggregates for Q3 and Q4.
    TxFilter,
    /// Transaction items of 2024-2025: partial aggregates for Q2.
    ItemFilter,
    /// Q2 per month, partitioned by month, joined with menu items.
    Q2Agg,
    /// Q3 per (semester, store), partitioned by store, joined with stores.
    Q3Agg,
    /// Q4 purchase counts per (store, user), partitioned by user, joined with users; local top 3 per store.
    Q4Count,
    /// Q4 final top 3 per store, partitioned by store, joined with stores.
    Q4Top,
    /// The tests' example query: transactions of 2024-2025 per store, partitioned by store, joined with stores.
    #[cfg(feature = "example-query")]
    Q5Count,
}

impl StageKind {
    #[cfg(not(feature = "example-query"))]
    pub const ALL: [StageKind; 6] = [
        StageKind::TxFilter,
        StageKind::ItemFilter,
        StageKind::Q2Agg,
        StageKind::Q3Agg,
        StageKind::Q4Count,
        StageKind::Q4Top,
    ];
    #[cfg(feature = "example-query")]
    pub const ALL: [StageKind; 7] = [
        StageKind::TxFilter,
        StageKind::ItemFilter,
        StageKind::Q2Agg,
        StageKind::Q3Agg,
        StageKind::Q4Count,
        StageKind::Q4Top,
        StageKind::Q5Count,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StageKind::TxFilter => "tx_filter",
            StageKind::ItemFilter => "item_filter",
            StageKind::Q2Agg => "q2_agg",
            StageKind::Q3Agg => "q3_agg",
            StageKind::Q4Count => "q4_count",
            StageKind::Q4Top => "q4_top",
            #[cfg(feature = "example-query")]
            StageKind::Q5Count => "q5_count",
        }
    }

    pub fn from_name(name: &str) -> Option<StageKind> {
        StageKind::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Every stage's name, comma separated, for messages that list them.
    pub fn names() -> String {
        StageKind::ALL.map(StageKind::name).join(", ")
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_name_parses_back() {
        let mut nodes = vec![NodeId::GATEWAY, NodeId::monitor(0), NodeId::monitor(12)];
        nodes.extend(StageKind::ALL.into_iter().flat_map(|s| [NodeId::stage(s, 0), NodeId::stage(s, 63)]));
        for node in nodes {
            assert_eq!(node.to_string().parse::<NodeId>(), Ok(node));
        }
    }

    #[test]
    fn names_of_no_node_are_refused() {
        for name in ["", "console", "gateway-0", "monitor", "monitor-", "monitor-+1", "tx_filter", "nope-1", "q2_agg-x"]
        {
            assert!(name.parse::<NodeId>().is_err(), "{name}");
        }
    }
}
