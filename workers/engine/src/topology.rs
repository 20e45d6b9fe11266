//! The topology as data: which stages exist, how many replicas each runs, the edges between them (which stream,
//! from whom, to whom, how its rows spread over the receiving replicas, and when they are sent), and the queue
//! names. The launcher, every node and the gateway read the same value, so they agree on who sends what to whom
//! and who must send an EOF to whom. The gateway's routing and the stages' partitioning are both
//! [`Topology::spread`] over these edges.

use coffee_model::keys::Query;
use coffee_model::message::{Batch, Stream};
use coffee_model::node::{NodeId, Role, StageKind};
use coffee_model::wire::SessionId;
use serde::{Deserialize, Serialize};
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
    /// Under quorum queues, how many times a stage's input may be delivered without an ack before the broker
    /// sets it aside in the stage's dead-letter queue (`x-delivery-limit`, with a dead-letter route: never
    /// dropped in silence). Every node must agree, like the queue type.
    pub delivery_limit: u32,
}

/// The delivery limit of quorum queues unless `--delivery-limit` says otherwise: a kill returns a replica's whole
/// prefetch with one more delivery each, so only an input that kills its replica again and again (or a storm of
/// kills at one input) reaches it. RabbitMQ 4 sets 20 on every quorum queue, dropping what passes it.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 100;

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

/// Where a stream comes from or goes to: a party of the data flow, the gateway or a stage. (A node's
/// [`Role`] also covers the monitors, which send no data: an edge can never name one.)
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
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
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

    /// Every replica of every stage, in a stable order.
    pub fn stage_replicas(&self) -> impl Iterator<Item = (StageKind, u16)> + '_ {
        self.replicas.iter().flat_map(|(&stage, &n)| (0..n).map(move |replica| (stage, replica)))
    }

    /// Every stage node, in a stable order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.stage_replicas().map(|(stage, replica)| NodeId::stage(stage, replica))
    }

    pub fn queue(&self, stage: StageKind, replica: u16) -> String {
        format!("{}.{}.{}", self.namespace, stage, replica)
    }

    /// The queue whose exclusive holder is the replica's one live process ([`crate::ownership`]).
    pub fn lock_queue(&self, stage: StageKind, replica: u16) -> String {
        format!("{}.lock.{}.{}", self.namespace, stage, replica)
    }

    /// The queue that records which folder holds the replica's state ([`crate::ownership`]).
    pub fn owner_queue(&self, stage: StageKind, replica: u16) -> String {
        format!("{}.owner.{}.{}", self.namespace, stage, replica)
    }

    /// Every replica's owner queue (deleted with the cluster).
    pub fn owner_queues(&self) -> Vec<String> {
        self.stage_replicas().map(|(stage, replica)| self.owner_queue(stage, replica)).collect()
    }

    /// The queue of one session's results, declared by the gateway when the session opens and deleted when
    /// its client has them all (or the session is purged).
    pub fn results_queue(&self, session: uuid::Uuid) -> String {
        format!("{}.results.{session}", self.namespace)
    }

    /// The queue a destination reads (results go to their session's own queue).
    pub fn queue_of(&self, to: Destination, session: SessionId) -> String {
        match to {
            Destination::Gateway => self.results_queue(session),
            Destination::Stage(stage, replica) => self.queue(stage, replica),
        }
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
        self.dead_letter_queues_by_node().into_iter().map(|(_, queue)| queue).collect()
    }

    /// Every dead-letter queue with whose it is: the stage's name, or `gateway`.
    pub fn dead_letter_queues_by_node(&self) -> Vec<(&'static str, String)> {
        StageKind::ALL.iter().map(|s| s.name()).chain(["gateway"]).map(|n| (n, self.dead_letter_queue(n))).collect()
    }

    /// Every shared queue of this topology (per-session result queues aside).
    pub fn all_queues(&self) -> Vec<String> {
        let mut queues: Vec<String> =
            self.stage_replicas().map(|(stage, replica)| self.queue(stage, replica)).collect();
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

    /// Every receiver of an endpoint: the gateway, or each replica of a stage.
    pub fn destinations(&self, endpoint: Endpoint) -> impl Iterator<Item = Destination> {
        let (stage, n) = match endpoint {
            Endpoint::Gateway => (None, 1),
            Endpoint::Stage(stage) => (Some(stage), self.replicas(stage)),
        };
        (0..n).map(move |replica| stage.map_or(Destination::Gateway, |stage| Destination::Stage(stage, replica)))
    }

    /// Splits one batch sent on `edge` into what each receiving replica gets: one batch each, in replica order
    /// (an edge spread by key gives every replica its own rows, maybe none).
    pub fn spread(&self, edge: &Edge, batch: Batch) -> Result<Vec<(Destination, Batch)>, SpreadError> {
        let destinations = self.destinations(edge.to);
        match edge.spread {
            Spread::Broadcast => {
                let mut out: Vec<(Destination, Batch)> = destinations.map(|to| (to, batch.clone())).collect();
                // The last one takes the batch itself rather than a copy.
                if let Some(last) = out.last_mut() {
                    last.1 = batch;
                }
                Ok(out)
            }
            Spread::ByKey => {
                let parts = batch.split_by_key(self.width(edge.to)).ok_or(SpreadError::NotKeyed(edge.stream))?;
                Ok(destinations.zip(parts).collect())
            }
            Spread::RoundRobin => Err(SpreadError::RoundRobin(edge.stream)),
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

/// Where one emitted batch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    pub stream: Stream,
    pub to: Destination,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Destination {
    Gateway,
    Stage(StageKind, u16),
}

/// How the rows of an edge's stream spread over the replicas of its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// Batch `seq` goes whole to replica `seq % n`, as its seq `seq / n` there: the gateway's large inputs.
    RoundRobin,
    /// Every replica gets every batch: the small tables a join needs in full. To the gateway: its one receiver.
    Broadcast,
    /// Each row goes to the replica that owns its key ([`coffee_model::message::Keyed`]); every replica gets one batch
    /// per message, an empty one if no row is its.
    ByKey,
}

/// When a sender emits on an edge: once per input message it applies (reusing that input's seq), or once when
/// the session's inputs are complete. The runtime sends one batch to every replica of every edge at each of
/// these moments, so a receiver can count what it must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emitted {
    PerInput,
    AtEnd,
}

/// One stream between two endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub stream: Stream,
    pub from: Endpoint,
    pub to: Endpoint,
    pub spread: Spread,
    pub emitted: Emitted,
}

const fn edge(stream: Stream, from: Endpoint, to: Endpoint, spread: Spread, emitted: Emitted) -> Edge {
    Edge { stream, from, to, spread, emitted }
}

/// The pipeline. A query is added here (its edges), as an operator, in the reference and as a result row.
pub const EDGES: &[Edge] = {
    use Emitted::*;
    use Endpoint::{Gateway, Stage};
    use Spread::*;
    use StageKind::*;
    &[
        // The client's files, from the gateway.
        edge(Stream::Transactions, Gateway, Stage(TxFilter), RoundRobin, PerInput),
        edge(Stream::TransactionItems, Gateway, Stage(ItemFilter), RoundRobin, PerInput),
        edge(Stream::MenuItems, Gateway, Stage(Q2Agg), Broadcast, PerInput),
        edge(Stream::Stores, Gateway, Stage(Q3Agg), Broadcast, PerInput),
        // Users live with the purchases they join: keyed by user id, as tx_filter's Q4 partials are.
        edge(Stream::Users, Gateway, Stage(Q4Count), ByKey, PerInput),
        edge(Stream::Stores, Gateway, Stage(Q4Top), Broadcast, PerInput),
        // The filters: Q1 rows, and partial aggregates keyed to the aggregator that owns them.
        edge(Stream::Results(Query::Q1), Stage(TxFilter), Gateway, Broadcast, PerInput),
        edge(Stream::Q3Partial, Stage(TxFilter), Stage(Q3Agg), ByKey, PerInput),
        edge(Stream::Q4Partial, Stage(TxFilter), Stage(Q4Count), ByKey, PerInput),
        edge(Stream::Q2Partial, Stage(ItemFilter), Stage(Q2Agg), ByKey, PerInput),
        // The aggregators, once a session's inputs are complete.
        edge(Stream::Results(Query::Q2), Stage(Q2Agg), Gateway, Broadcast, AtEnd),
        edge(Stream::Results(Query::Q3), Stage(Q3Agg), Gateway, Broadcast, AtEnd),
        edge(Stream::Q4Candidates, Stage(Q4Count), Stage(Q4Top), ByKey, AtEnd),
        edge(Stream::Results(Query::Q4), Stage(Q4Top), Gateway, Broadcast, AtEnd),
        // The tests' example query, added by the recipe of docs/architecture.md.
        #[cfg(feature = "example-query")]
        edge(Stream::Transactions, Gateway, Stage(Q5Count), ByKey, PerInput),
        #[cfg(feature = "example-query")]
        edge(Stream::Stores, Gateway, Stage(Q5Count), Broadcast, PerInput),
        #[cfg(feature = "example-query")]
        edge(Stream::Results(Query::Q5), Stage(Q5Count), Gateway, Broadcast, AtEnd),
    ]
};

/// The edges into a stage.
pub fn inputs(stage: StageKind) -> impl Iterator<Item = &'static Edge> {
    EDGES.iter().filter(move |e| e.to == Endpoint::Stage(stage))
}

/// The edges out of a stage.
pub fn outputs(stage: StageKind) -> impl Iterator<Item = &'static Edge> {
    EDGES.iter().filter(move |e| e.from == Endpoint::Stage(stage))
}

/// The edges that carry a client's `stream` from the gateway.
pub fn from_gateway(stream: Stream) -> impl Iterator<Item = &'static Edge> {
    EDGES.iter().filter(move |e| e.from == Endpoint::Gateway && e.stream == stream)
}

/// Which stage answers a query to the gateway.
pub fn result_source(query: Query) -> StageKind {
    EDGES
        .iter()
        .find_map(|e| match (e.stream, e.from) {
            (Stream::Results(q), Endpoint::Stage(stage)) if q == query => Some(stage),
            _ => None,
        })
        .expect("every query has a result edge")
}

/// A batch that an edge cannot spread.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpreadError {
    #[error("{0:?} holds rows without a partition key, but its edge spreads by key")]
    NotKeyed(Stream),
    #[error("{0:?} is spread round robin, which only the gateway does (it needs the client's seq)")]
    RoundRobin(Stream),
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
    use coffee_model::keys::partition;

    #[test]
    fn replicas_spec_round_trips() {
        let t = Topology::with_replicas("ns", "all=3,q4_top=1").unwrap();
        assert_eq!(t.replicas(StageKind::TxFilter), 3);
        assert_eq!(t.replicas(StageKind::Q4Top), 1);
        assert_eq!(Topology::with_replicas("ns", &t.replicas_spec()).unwrap(), t);
        assert!(Topology::with_replicas("ns", "nope=2").is_err());
        assert!(Topology::with_replicas("ns", "tx_filter=0").is_err());
        assert_eq!(t.nodes().count(), (StageKind::ALL.len() - 1) * 3 + 1);
    }

    #[test]
    fn the_edges_make_a_pipeline_the_runtime_can_drive() {
        for stage in StageKind::ALL {
            assert!(inputs(stage).next().is_some(), "{stage} has no input");
            assert!(outputs(stage).next().is_some(), "{stage} has no output");
            let streams: Vec<Stream> = outputs(stage).map(|e| e.stream).collect();
            let mut unique = streams.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(streams.len(), unique.len(), "{stage} sends one stream on two edges: {streams:?}");
            // Per-input outputs reuse the input's seq: two input streams would give two messages one id.
            if outputs(stage).any(|e| e.emitted == Emitted::PerInput) {
                assert_eq!(inputs(stage).count(), 1, "{stage} sends per input, so it reads one stream");
            }
            for e in outputs(stage) {
                assert_ne!(e.spread, Spread::RoundRobin, "only the gateway spreads round robin: {e:?}");
                if e.spread == Spread::ByKey {
                    let keyed = e.stream.empty_batch().and_then(|b| b.split_by_key(2));
                    assert!(keyed.is_some(), "{e:?} carries rows with no key");
                }
            }
        }
        for e in EDGES {
            assert!(e.stream.empty_batch().is_some(), "{e:?}: an edge's stream carries rows");
        }
        for e in EDGES.iter().filter(|e| e.from == Endpoint::Gateway) {
            assert_eq!(e.emitted, Emitted::PerInput, "the gateway routes each client batch: {e:?}");
        }
        for query in Query::ALL {
            let answers = EDGES.iter().filter(|e| e.stream == Stream::Results(query)).count();
            assert_eq!(answers, 1, "{query} is answered by one stage");
            assert!(EDGES.iter().any(|e| e.stream == Stream::Results(query) && e.to == Endpoint::Gateway));
        }
    }

    #[test]
    fn spreading_by_key_gives_every_replica_one_batch_and_keeps_row_order() {
        use coffee_model::keys::YearHalf;
        use coffee_model::message::StoreTpv;
        let t = Topology::with_replicas("t", "q3_agg=3").unwrap();
        let edge = outputs(StageKind::TxFilter).find(|e| e.stream == Stream::Q3Partial).unwrap();
        let half = YearHalf { year: 2024, half: 1 };
        let rows: Vec<StoreTpv> = (0..30).map(|store_id| StoreTpv { half, store_id, cents: 1 }).collect();
        let parts = t.spread(edge, Batch::StoreTpv(rows)).unwrap();
        assert_eq!(parts.iter().map(|(to, _)| *to).collect::<Vec<_>>(), t.destinations(edge.to).collect::<Vec<_>>());
        for (to, batch) in &parts {
            let Batch::StoreTpv(rows) = batch else { panic!() };
            assert!(rows.windows(2).all(|w| w[0].store_id < w[1].store_id));
            let Destination::Stage(_, replica) = to else { panic!() };
            assert!(rows.iter().all(|r| partition(r.store_id.into(), 3) == *replica));
        }
        assert_eq!(parts.iter().map(|(_, b)| b.len()).sum::<usize>(), 30);
        let empty = t.spread(edge, Batch::StoreTpv(vec![])).unwrap();
        assert_eq!(empty.len(), 3, "an empty input still reaches every replica");
        assert_eq!(t.spread(edge, Batch::Stores(vec![])), Err(SpreadError::NotKeyed(Stream::Q3Partial)));
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
