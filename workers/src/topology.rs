//! The topology as data: which stages exist, how many replicas each runs, what each consumes from whom, where
//! each output goes, and the queue names. The launcher, every node and the gateway read the same value, so they
//! agree on who must send an EOF to whom.

use crate::message::{NodeId, Query, Role, StageKind, Stream};
use std::collections::BTreeMap;
use std::fmt;

/// Replicas a stage runs when nothing else is said.
pub const DEFAULT_REPLICAS: u16 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Prefix of every queue name, so several clusters (tests) can share one broker.
    pub namespace: String,
    replicas: BTreeMap<StageKind, u16>,
    /// How the pipeline's durable queues are declared; every node must agree (the broker refuses a queue
    /// redeclared with another type).
    pub queue_type: QueueType,
}

/// The kind of the pipeline's durable queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum QueueType {
    /// Durable queues held by one broker node: for a single broker.
    #[default]
    Classic,
    /// Replicated by Raft over a RabbitMQ cluster: they survive the loss of a minority of its nodes.
    Quorum,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

/// Where a stream comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Gateway,
    Stage(StageKind),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopologyError {
    #[error("`{0}` is not STAGE=N (stages: tx_filter, item_filter, q2_agg, q3_agg, q4_count, q4_top, or all)")]
    Syntax(String),
    #[error("replica count for {0} must be between 1 and 64")]
    Count(String),
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            namespace: "coffee".into(),
            replicas: StageKind::ALL.into_iter().map(|s| (s, DEFAULT_REPLICAS)).collect(),
            queue_type: QueueType::Classic,
        }
    }
}

impl Topology {
    /// Parses `STAGE=N,...` (`all=N` sets every stage) over the defaults.
    pub fn with_replicas(namespace: &str, spec: &str) -> Result<Self, TopologyError> {
        let mut topology = Topology { namespace: namespace.to_owned(), ..Topology::default() };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, count) = part.split_once('=').ok_or_else(|| TopologyError::Syntax(part.into()))?;
            let count: u16 = count.trim().parse().map_err(|_| TopologyError::Syntax(part.into()))?;
            if !(1..=64).contains(&count) {
                return Err(TopologyError::Count(name.into()));
            }
            match name.trim() {
                "all" => topology.replicas.values_mut().for_each(|c| *c = count),
                stage => {
                    let stage = StageKind::from_name(stage).ok_or_else(|| TopologyError::Syntax(part.into()))?;
                    topology.replicas.insert(stage, count);
                }
            }
        }
        Ok(topology)
    }

    /// The `STAGE=N,...` text that [`Topology::with_replicas`] reads back.
    pub fn replicas_spec(&self) -> String {
        self.replicas.iter().map(|(s, n)| format!("{s}={n}")).collect::<Vec<_>>().join(",")
    }

    pub fn replicas(&self, stage: StageKind) -> u16 {
        self.replicas[&stage]
    }

    /// Every stage node, in a stable order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas
            .iter()
            .flat_map(|(&stage, &n)| (0..n).map(move |replica| NodeId { role: Role::Stage(stage), replica }))
    }

    pub fn queue(&self, stage: StageKind, replica: u16) -> String {
        format!("{}.{}.{}", self.namespace, stage, replica)
    }

    /// The queue of one session's results, declared by the gateway when the session opens and deleted when
    /// its client has them all (or the session is purged).
    pub fn results_queue(&self, session: uuid::Uuid) -> String {
        format!("{}.results.{session}", self.namespace)
    }

    /// Where health monitors send restart requests to the orchestrator.
    pub fn control_queue(&self) -> String {
        format!("{}.control", self.namespace)
    }

    /// Where a node sets aside the messages it cannot use (they do not decode, or hold the wrong rows), per
    /// stage and one for the gateway: never redelivered, visible in `coffee cluster status`.
    pub fn dead_letter_queue(&self, node: &str) -> String {
        format!("{}.dead.{node}", self.namespace)
    }

    /// Every dead-letter queue: one per stage, one for the gateway.
    pub fn dead_letter_queues(&self) -> Vec<String> {
        StageKind::ALL.iter().map(|s| s.name()).chain(["gateway"]).map(|n| self.dead_letter_queue(n)).collect()
    }

    /// Every shared queue of this topology (per-session result queues aside).
    pub fn all_queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self
            .nodes()
            .map(|n| match n.role {
                Role::Stage(stage) => self.queue(stage, n.replica),
                Role::Gateway => unreachable!("nodes() lists stages only"),
            })
            .collect();
        queues.push(self.control_queue());
        queues
    }

    /// The senders a receiver must hear an EOF from on `stream`, given where that stream comes from.
    pub fn senders(&self, from: Endpoint) -> Vec<NodeId> {
        match from {
            Endpoint::Gateway => vec![NodeId { role: Role::Gateway, replica: 0 }],
            Endpoint::Stage(stage) => {
                (0..self.replicas(stage)).map(|replica| NodeId { role: Role::Stage(stage), replica }).collect()
            }
        }
    }

    /// The replica count of an endpoint (the gateway is one).
    pub fn width(&self, endpoint: Endpoint) -> u16 {
        match endpoint {
            Endpoint::Gateway => 1,
            Endpoint::Stage(stage) => self.replicas(stage),
        }
    }
}

/// What a stage consumes: each stream and who sends it.
pub fn inputs(stage: StageKind) -> &'static [(Stream, Endpoint)] {
    use Endpoint::*;
    match stage {
        StageKind::TxFilter => &[(Stream::Transactions, Gateway)],
        StageKind::ItemFilter => &[(Stream::TransactionItems, Gateway)],
        StageKind::Q2Agg => &[(Stream::Q2Partial, Stage(StageKind::ItemFilter)), (Stream::MenuItems, Gateway)],
        StageKind::Q3Agg => &[(Stream::Q3Partial, Stage(StageKind::TxFilter)), (Stream::Stores, Gateway)],
        StageKind::Q4Count => &[(Stream::Q4Partial, Stage(StageKind::TxFilter)), (Stream::Users, Gateway)],
        StageKind::Q4Top => &[(Stream::Q4Candidates, Stage(StageKind::Q4Count)), (Stream::Stores, Gateway)],
    }
}

/// What a stage produces: each stream and where it goes.
pub fn outputs(stage: StageKind) -> &'static [(Stream, Endpoint)] {
    use Endpoint::*;
    match stage {
        StageKind::TxFilter => &[
            (Stream::Results(Query::Q1), Gateway),
            (Stream::Q3Partial, Stage(StageKind::Q3Agg)),
            (Stream::Q4Partial, Stage(StageKind::Q4Count)),
        ],
        StageKind::ItemFilter => &[(Stream::Q2Partial, Stage(StageKind::Q2Agg))],
        StageKind::Q2Agg => &[(Stream::Results(Query::Q2), Gateway)],
        StageKind::Q3Agg => &[(Stream::Results(Query::Q3), Gateway)],
        StageKind::Q4Count => &[(Stream::Q4Candidates, Stage(StageKind::Q4Top))],
        StageKind::Q4Top => &[(Stream::Results(Query::Q4), Gateway)],
    }
}

/// Which stage answers a query to the gateway.
pub fn result_source(query: Query) -> StageKind {
    match query {
        Query::Q1 => StageKind::TxFilter,
        Query::Q2 => StageKind::Q2Agg,
        Query::Q3 => StageKind::Q3Agg,
        Query::Q4 => StageKind::Q4Top,
    }
}

/// The replica that owns `key` among `replicas`. Stable across processes and runs (no random hasher seed).
pub fn partition(key: u64, replicas: u16) -> u16 {
    // Fibonacci hashing spreads consecutive ids (store 1, 2, 3...) evenly.
    let mixed = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) % u64::from(replicas)) as u16
}

/// How many of `batches` round-robin batches replica `replica` of `replicas` receives.
pub fn round_robin_count(batches: u64, replica: u16, replicas: u16) -> u64 {
    let (r, n) = (u64::from(replica), u64::from(replicas));
    batches / n + u64::from(batches % n > r)
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.namespace, self.replicas_spec())?;
        match self.queue_type {
            QueueType::Classic => Ok(()),
            other => write!(f, " ({} queues)", other.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_spec_round_trips() {
        let t = Topology::with_replicas("ns", "all=3,q4_top=1").unwrap();
        assert_eq!(t.replicas(StageKind::TxFilter), 3);
        assert_eq!(t.replicas(StageKind::Q4Top), 1);
        assert_eq!(Topology::with_replicas("ns", &t.replicas_spec()).unwrap(), t);
        assert!(Topology::with_replicas("ns", "nope=2").is_err());
        assert!(Topology::with_replicas("ns", "tx_filter=0").is_err());
        assert_eq!(t.nodes().count(), 16);
    }

    #[test]
    fn every_input_is_someones_output() {
        for stage in StageKind::ALL {
            for &(stream, from) in inputs(stage) {
                if let Endpoint::Stage(up) = from {
                    assert!(outputs(up).contains(&(stream, Endpoint::Stage(stage))), "{stage} {stream:?}");
                }
            }
        }
    }

    #[test]
    fn partitions_cover_and_round_robin_counts_add_up() {
        let mut seen = [0u32; 3];
        for key in 0..300 {
            seen[usize::from(partition(key, 3))] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "{seen:?}");
        for batches in 0..10 {
            let total: u64 = (0..3).map(|r| round_robin_count(batches, r, 3)).sum();
            assert_eq!(total, batches);
        }
    }
}
