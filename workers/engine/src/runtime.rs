//! The generic runtime around an [`Operator`]: consume the replica's queue, drop duplicates, apply, publish what
//! the operator emits, count ends of stream, persist, and ack.
//!
//! Deliveries are handled in groups (group commit). For each group, in this order:
//! 1. each input is admitted (duplicates dropped), applied in memory, and its outputs published;
//! 2. every publish of the group is confirmed by the broker;
//! 3. every applied input is appended to its session's log, and the logs are fsynced (one fsync per session);
//! 4. sessions that completed are marked finished and their files deleted;
//! 5. the group is acked with one `multiple` ack.
//!
//! Dying anywhere is safe. Before 3, the inputs are redelivered, re-applied and re-published with the same ids
//! (outputs reuse the input's seq, and finals are deterministic), and receivers drop the copies. After 3, a
//! redelivered input is found in the log and dropped, and its outputs were confirmed in 2. A session that
//! completed before 4 is found complete again at recovery and finished again, under the same ids.

use crate::amqp::{self, BrokerError, Publisher};
use crate::heartbeat;
use crate::incarnation::Incarnation;
use crate::lease::Leases;
use crate::metrics::Counters;
use crate::operators::{with_operator, Emit, Operator, WithOperator};
use crate::state::{NodeStore, RecoveredSession};
use crate::topology::{inputs, outputs, Destination, Emitted, Target, Topology};
use crate::tracker::{Admission, InputTracker};
use coffee_model::message::Batch;
use coffee_model::node::{NodeId, Role, StageKind};
use coffee_model::wire::{Body, Envelope, SessionId};
use futures::future::LocalBoxFuture;
use futures::{FutureExt, StreamExt};
use lapin::options::BasicAckOptions;
use lapin::PublisherConfirm;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::{debug, error, info, warn};

/// Unacked deliveries a replica holds at once (and so the largest group it commits together).
pub const PREFETCH: u16 = 256;

/// Inputs logged per session between two snapshots, unless `SNAPSHOT_INTERVAL` says otherwise.
pub const DEFAULT_SNAPSHOT_INTERVAL: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("state folder: {0}")]
    State(#[from] std::io::Error),
    #[error("a snapshot of session {0} does not decode: {1}")]
    Snapshot(SessionId, postcard::Error),
}

impl From<lapin::Error> for RuntimeError {
    fn from(e: lapin::Error) -> Self {
        RuntimeError::Broker(e.into())
    }
}

/// The (session, stream, sender) keys a stage replica waits for, from the topology.
pub fn expected_inputs(topology: &Topology, stage: StageKind) -> InputTracker {
    InputTracker::new(
        inputs(stage).flat_map(|edge| topology.senders(edge.from).into_iter().map(move |s| (edge.stream, s))),
    )
}

/// One session at this replica: what is snapshotted.
#[derive(Serialize, Deserialize)]
struct Session<S> {
    inputs: InputTracker,
    state: S,
    /// Data messages sent per target, which each EOF announces.
    sent: BTreeMap<Target, u64>,
}

/// What one group of deliveries did, to be made durable before it is acked.
#[derive(Default)]
struct Group {
    confirms: Vec<PublisherConfirm>,
    /// Applied inputs, as their raw bytes, per session.
    applied: Vec<(SessionId, Vec<u8>)>,
    completed: Vec<SessionId>,
}

/// How a stage replica runs, as its command line says.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub topology: Topology,
    pub replica: u16,
    pub state_dir: PathBuf,
    /// Inputs logged per session between two snapshots.
    pub snapshot_interval: u64,
    /// How long a session that no gateway announces and no input feeds is kept (see [`crate::lease`]).
    pub session_lease: std::time::Duration,
    /// The most deliveries committed as one group, at most [`PREFETCH`] (1 logs, fsyncs and acks every message
    /// on its own: for measuring what group commit buys, see docs/benchmarks.md).
    pub group_max: usize,
}

/// Runs replica `config.replica` of `stage`, with the operator the registry names for it
/// ([`crate::operators::with_operator`]), until the broker connection fails.
pub async fn serve_stage(stage: StageKind, config: ReplicaConfig, amqp_url: &str) -> Result<(), RuntimeError> {
    struct Serve<'a> {
        config: ReplicaConfig,
        amqp_url: &'a str,
    }
    impl<'a> WithOperator for Serve<'a> {
        type Output = LocalBoxFuture<'a, Result<(), RuntimeError>>;
        fn with<O: Operator>(self, operator: O) -> Self::Output {
            Box::pin(StageNode::new(operator, self.config).run(self.amqp_url))
        }
    }
    with_operator(stage, Serve { config, amqp_url }).await
}

/// What a running replica holds: its open sessions, their files, its way out to the broker, its counters, its
/// claim to be the node's live incarnation, and the leases of its sessions.
struct Replica<O: Operator> {
    sessions: HashMap<SessionId, Session<O::State>>,
    store: NodeStore,
    publisher: Publisher,
    counters: Arc<Counters>,
    incarnation: Arc<Incarnation>,
    leases: Leases,
}

/// One replica of a stage: its operator and how it runs.
pub struct StageNode<O: Operator> {
    pub operator: O,
    pub config: ReplicaConfig,
    /// The inputs every session waits for (what `new_session` starts from).
    template: InputTracker,
}

impl<O: Operator> StageNode<O> {
    pub fn new(operator: O, config: ReplicaConfig) -> Self {
        let template = expected_inputs(&config.topology, operator.stage());
        StageNode { operator, config, template }
    }
}

impl<O: Operator> StageNode<O> {
    fn me(&self) -> NodeId {
        NodeId { role: Role::Stage(self.operator.stage()), replica: self.config.replica }
    }

    /// Every target this stage must end each session on (all replicas of each output).
    fn all_targets(&self) -> Vec<Target> {
        outputs(self.operator.stage())
            .flat_map(|edge| {
                self.config.topology.destinations(edge.to).map(move |to| Target { stream: edge.stream, to })
            })
            .collect()
    }

    /// Spreads what the operator emitted along this stage's edges that are sent `when`: every replica of every
    /// such edge gets exactly one batch, an empty one where the operator emitted nothing, so its receiver can
    /// count what it must get (the emission rule holds whatever the operator does).
    fn route(&self, session: SessionId, mut emit: Emit, when: Emitted) -> Vec<(Target, Batch)> {
        let mut routed = Vec::new();
        for edge in outputs(self.operator.stage()).filter(|edge| edge.emitted == when) {
            // Every edge's stream carries rows (the topology's test checks it).
            let empty = || edge.stream.empty_batch().expect("an edge's stream carries rows");
            let batch = emit.take(edge.stream).unwrap_or_else(empty);
            let parts = self.config.topology.spread(edge, batch).unwrap_or_else(|e| {
                error!(%session, stream = ?edge.stream, error = %e, "an operator's rows do not fit their edge: dropped");
                debug_assert!(false, "{e}");
                self.config.topology.destinations(edge.to).map(|to| (to, empty())).collect()
            });
            routed.extend(parts.into_iter().map(|(to, batch)| (Target { stream: edge.stream, to }, batch)));
        }
        for stream in emit.streams() {
            error!(%session, ?stream, ?when, "an operator emitted on a stream this stage does not send then: dropped");
            debug_assert!(false, "{stream:?} is not sent {when:?} by {}", self.operator.stage());
        }
        routed
    }

    fn new_session(&self) -> Session<O::State> {
        Session { inputs: self.template.clone(), state: O::State::default(), sent: BTreeMap::new() }
    }

    /// Rebuilds a session from its snapshot and the inputs logged after it. Outputs are not published again:
    /// the log holds only inputs whose outputs were confirmed.
    fn recover(&self, id: SessionId, saved: RecoveredSession) -> Result<Session<O::State>, RuntimeError> {
        let mut session = match saved.snapshot {
            Some(bytes) => postcard::from_bytes(&bytes).map_err(|e| RuntimeError::Snapshot(id, e))?,
            None => self.new_session(),
        };
        for record in saved.records {
            match Envelope::decode(&record) {
                Ok(envelope) => {
                    self.apply(&mut session, envelope);
                }
                Err(e) => warn!(session = %id, error = %e, "skipping a logged input that does not decode"),
            }
        }
        Ok(session)
    }

    /// Admits and applies one input; returns the admission and the numbered messages to publish.
    fn apply(&self, session: &mut Session<O::State>, envelope: Envelope) -> (Admission, Vec<(Destination, Envelope)>) {
        let Envelope { session: id, sender, stream, seq, body } = envelope;
        match body {
            Body::Data(batch) => {
                let admission = session.inputs.admit_data(stream, sender, seq);
                if admission != Admission::Apply {
                    return (admission, Vec::new());
                }
                let mut emit = Emit::default();
                if let Err(e) = self.operator.apply(&mut session.state, stream, batch, &mut emit) {
                    // Its per-input outputs still go out, empty, so that every receiver's count holds.
                    warn!(session = %id, %sender, seq, error = %e, "dropping a batch");
                }
                let routed = self.route(id, emit, Emitted::PerInput);
                (admission, self.number(id, Some(seq), routed, &mut session.sent))
            }
            Body::Eof { count } => (session.inputs.admit_eof(stream, sender, count), Vec::new()),
            Body::Purge => (Admission::Apply, Vec::new()),
        }
    }

    /// Gives emitted batches their ids. Per-input outputs reuse the input's seq (so a re-run re-sends the same
    /// ids); final outputs are numbered from 0 on each target.
    fn number(
        &self,
        session: SessionId,
        input_seq: Option<u64>,
        routed: Vec<(Target, Batch)>,
        sent: &mut BTreeMap<Target, u64>,
    ) -> Vec<(Destination, Envelope)> {
        routed
            .into_iter()
            .map(|(target, batch)| {
                let count = sent.entry(target).or_default();
                let seq = input_seq.unwrap_or(*count);
                *count += 1;
                let envelope =
                    Envelope { session, sender: self.me(), stream: target.stream, seq, body: Body::Data(batch) };
                (target.to, envelope)
            })
            .collect()
    }

    /// The final outputs of a complete session, then an EOF on every target counting what it was sent.
    fn finish(&self, id: SessionId, mut session: Session<O::State>) -> Vec<(Destination, Envelope)> {
        let mut emit = Emit::default();
        self.operator.finish(session.state, &mut emit);
        let routed = self.route(id, emit, Emitted::AtEnd);
        let mut messages = self.number(id, None, routed, &mut session.sent);
        for target in self.all_targets() {
            let count = session.sent.get(&target).copied().unwrap_or(0);
            let envelope = Envelope {
                session: id,
                sender: self.me(),
                stream: target.stream,
                seq: count,
                body: Body::Eof { count },
            };
            messages.push((target.to, envelope));
        }
        messages
    }

    async fn publish_all(
        &self,
        publisher: &Publisher,
        messages: Vec<(Destination, Envelope)>,
        confirms: &mut Vec<PublisherConfirm>,
    ) -> Result<(), BrokerError> {
        for (to, envelope) in messages {
            confirms.push(publisher.publish(&self.config.topology.queue_of(to, envelope.session), &envelope).await?);
        }
        Ok(())
    }

    /// Runs until the broker connection fails (the process then exits, and its supervisor starts it again).
    pub async fn run(self, amqp_url: &str) -> Result<(), RuntimeError> {
        let me = self.me();
        let (mut replica, connection) = self.open(amqp_url).await?;

        // Sessions that were complete when we died: finish them again (receivers drop what they already have).
        let complete: Vec<SessionId> =
            replica.sessions.iter().filter(|(_, s)| s.inputs.is_complete()).map(|(id, _)| *id).collect();
        for id in complete {
            let mut confirms = Vec::new();
            let session = replica.sessions.remove(&id).expect("present");
            self.publish_all(&replica.publisher, self.finish(id, session), &mut confirms).await?;
            amqp::await_confirms(confirms).await?;
            replica.incarnation.step_aside_if_replaced();
            replica.store.finish(id)?;
            info!(session = %id, node = %me, "session finished again after recovery");
        }

        let queue = self.input_queue();
        // Exclusive: a second live consumer of this replica's queue (another host's process, say) is refused.
        let (_channel, mut consumer) =
            amqp::consume_exclusively(&connection, &queue, PREFETCH, &me.to_string()).await?;
        info!(node = %me, %queue, "stage replica consuming");

        let mut announcements = Box::pin(crate::lease::subscribe(&connection, &self.config.topology).await?);
        let mut lease_check = tokio::time::interval(crate::lease::announce_every(self.config.session_lease));
        let group_max = self.config.group_max.clamp(1, usize::from(PREFETCH));
        loop {
            let first = tokio::select! {
                delivery = consumer.next() => match delivery {
                    Some(delivery) => delivery,
                    None => break,
                },
                announced = announcements.next() => {
                    let Some(announced) = announced else { break };
                    replica.leases.announced(&announced, tokio::time::Instant::now());
                    continue;
                }
                _ = lease_check.tick() => {
                    self.purge_expired(&mut replica)?;
                    continue;
                }
            };
            // Take what is already here, up to the prefetch, as one group.
            let busy_since = std::time::Instant::now();
            let mut deliveries = vec![first?];
            while deliveries.len() < group_max {
                match consumer.next().now_or_never() {
                    Some(Some(delivery)) => deliveries.push(delivery?),
                    _ => break,
                }
            }
            let mut group = Group::default();
            for delivery in &deliveries {
                replica.counters.consumed(delivery.data.len());
                self.handle(&mut replica, &delivery.data, &mut group).await?;
            }
            amqp::await_confirms(std::mem::take(&mut group.confirms)).await?;
            crate::failpoint!("after-publish-before-log");
            if !group.completed.is_empty() {
                crate::failpoint!("after-final-publish-before-log");
            }
            // A newer incarnation may have started while this one was stopped: it must not write any more.
            replica.incarnation.step_aside_if_replaced();
            let now = tokio::time::Instant::now();
            group.applied.iter().for_each(|(id, _)| replica.leases.renew(*id, now));
            group.completed.iter().for_each(|id| replica.leases.forget(*id));
            self.commit(&mut replica, group)?;
            crate::failpoint!("after-log-before-ack");
            replica.counters.open_sessions.store(replica.sessions.len() as u64, Ordering::Relaxed);
            let last = deliveries.last().expect("a group is never empty");
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
            replica.counters.busy(busy_since.elapsed());
        }
        Err(BrokerError::Lost(format!("the consumer of {queue} ended (its channel or connection closed)")).into())
    }

    /// Becomes this replica's live incarnation, reaches the broker, starts beating, and recovers the sessions
    /// from disk.
    async fn open(&self, amqp_url: &str) -> Result<(Replica<O>, lapin::Connection), RuntimeError> {
        let me = self.me();
        let started = std::time::Instant::now();
        let node_dir = self.config.state_dir.join(me.to_string());
        // This process is the node's only live incarnation from here on (an older one steps aside first).
        let incarnation = Arc::new(Incarnation::claim(&node_dir).await?);
        incarnation.watch();
        // The broker next, then the heartbeat: a node is heard while it replays its logs, so the monitors do not
        // take a long recovery for a hang.
        let connection = amqp::connect_patiently(amqp_url, &me.to_string()).await;
        amqp::declare_queues(&connection.create_channel().await?, &self.config.topology).await?;
        let counters = Arc::new(Counters::default());
        // Each beat says what the folder holds, and, once known, how the recovery went.
        let recovery: Arc<std::sync::Mutex<coffee_types::ReplicaState>> = Arc::default();
        let (reported, folder) = (recovery.clone(), node_dir.clone());
        let annotate = move |beat: &mut heartbeat::Heartbeat| {
            let (log_bytes, snapshot_bytes, age) = crate::state::footprint(&folder);
            let last_snapshot_age_ms = age.map(|a| a.as_millis() as u64);
            let known = *reported.lock().expect("recovery lock");
            beat.state = Some(coffee_types::ReplicaState { log_bytes, snapshot_bytes, last_snapshot_age_ms, ..known });
        };
        heartbeat::start_with(&connection, &self.config.topology, me.to_string(), counters.clone(), annotate).await?;

        let recovering = std::time::Instant::now();
        let (store, recovered) = NodeStore::open(&node_dir)?;
        let mut sessions = HashMap::new();
        let (recovered_sessions, mut replayed) = (recovered.sessions.len() as u64, 0);
        for (id, saved) in recovered.sessions {
            replayed += saved.records.len() as u64;
            sessions.insert(id, self.recover(id, saved)?);
        }
        {
            let mut known = recovery.lock().expect("recovery lock");
            known.recovery_ms = recovering.elapsed().as_millis() as u64;
            known.replayed_records = replayed;
            known.recovered_sessions = recovered_sessions;
        }
        info!(node = %me, sessions = sessions.len(), tombstones = store.tombstones(), dir = %node_dir.display(), "state recovered");
        counters.open_sessions.store(sessions.len() as u64, Ordering::Relaxed);
        let publisher = Publisher::new(&connection, counters.clone()).await?;
        let mut leases = Leases::new(self.config.session_lease);
        for id in sessions.keys() {
            leases.renew(*id, tokio::time::Instant::now());
        }
        recovery.lock().expect("recovery lock").ready_ms = started.elapsed().as_millis() as u64;
        Ok((Replica { sessions, store, publisher, counters, incarnation, leases }, connection))
    }

    /// Drops the sessions no gateway has announced for a whole lease (their client and gateway are gone).
    fn purge_expired(&self, replica: &mut Replica<O>) -> Result<(), RuntimeError> {
        for id in replica.leases.expired(tokio::time::Instant::now()) {
            if replica.sessions.remove(&id).is_some() {
                replica.incarnation.step_aside_if_replaced();
                replica.store.finish(id)?;
                warn!(session = %id, node = %self.me(), lease = ?self.config.session_lease, "no gateway announces this session any more: purged");
            }
        }
        replica.counters.open_sessions.store(replica.sessions.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Steps 3 and 4: log the applied inputs, fsync, snapshot what is due, and retire completed sessions.
    fn commit(&self, replica: &mut Replica<O>, group: Group) -> Result<(), RuntimeError> {
        let Replica { store, sessions, .. } = replica;
        let mut due = Vec::new();
        for (id, bytes) in &group.applied {
            if store.append(*id, bytes)? >= self.config.snapshot_interval && sessions.contains_key(id) {
                due.push(*id);
            }
        }
        store.sync()?;
        due.sort();
        due.dedup();
        for id in due {
            let bytes = postcard::to_allocvec(&sessions[&id]).expect("session state serializes");
            crate::failpoint!("during-snapshot");
            store.snapshot(id, &bytes)?;
        }
        for id in group.completed {
            store.finish(id)?;
        }
        Ok(())
    }

    fn dead_letters(&self) -> String {
        self.config.topology.dead_letter_queue(self.operator.stage().name())
    }

    /// The queue this replica consumes.
    fn input_queue(&self) -> String {
        self.config.topology.queue(self.operator.stage(), self.config.replica)
    }

    /// Moves a poison message to this stage's dead-letter queue (acked with its group, never redelivered).
    async fn set_aside(
        &self,
        publisher: &Publisher,
        bytes: &[u8],
        why: &str,
        group: &mut Group,
    ) -> Result<(), BrokerError> {
        warn!(node = %self.me(), reason = why, bytes = bytes.len(), "poison message set aside");
        let (dead_letters, input) = (self.dead_letters(), self.input_queue());
        group.confirms.push(crate::dead_letters::set_aside(publisher, &dead_letters, &input, bytes, why).await?);
        Ok(())
    }

    /// Step 1 for one delivery.
    async fn handle(&self, replica: &mut Replica<O>, bytes: &[u8], group: &mut Group) -> Result<(), BrokerError> {
        let Replica { sessions, store, publisher, .. } = replica;
        let envelope = match Envelope::decode(bytes) {
            Ok(envelope) => envelope,
            Err(e) => return self.set_aside(publisher, bytes, &e.to_string(), group).await,
        };
        let (id, sender, stream, seq) = (envelope.session, envelope.sender, envelope.stream, envelope.seq);
        // Poison that decodes: rows that are not what the stream carries, or a sender or stream this stage does
        // not read. Set aside before it can open a session or use up a seq.
        if let Body::Data(batch) = &envelope.body {
            if !stream.carries(batch) {
                return self.set_aside(publisher, bytes, "rows of the wrong kind for their stream", group).await;
            }
            replica.counters.consumed_rows(batch.len());
        }
        if envelope.body != Body::Purge && !self.template.expects(stream, sender) {
            return self.set_aside(publisher, bytes, "a sender or stream this stage does not read", group).await;
        }
        if store.is_finished(id) || group.completed.contains(&id) {
            debug!(session = %id, %sender, seq, "late message of a finished session");
            return Ok(());
        }
        if envelope.body == Body::Purge {
            // Retired like a finished session: state and files go, and later messages of it are dropped.
            sessions.remove(&id);
            group.completed.push(id);
            info!(session = %id, node = %self.me(), "session purged");
            return Ok(());
        }
        let session = sessions.entry(id).or_insert_with(|| self.new_session());
        let (admission, messages) = self.apply(session, envelope);
        match admission {
            Admission::Apply => {
                debug!(session = %id, %sender, ?stream, seq, "applied");
                group.applied.push((id, bytes.to_vec()));
            }
            Admission::Duplicate => debug!(session = %id, %sender, ?stream, seq, "duplicate dropped"),
            Admission::Unexpected | Admission::BeyondEof => {
                // Where it stood goes into the reason, kept with the dead letter.
                let why =
                    format!("{admission:?}: an input past its stream's end (session {id}, {sender} {stream:?} #{seq})");
                self.set_aside(publisher, bytes, &why, group).await?;
            }
        }
        self.publish_all(publisher, messages, &mut group.confirms).await?;
        if session.inputs.is_complete() {
            let session = sessions.remove(&id).expect("present");
            self.publish_all(publisher, self.finish(id, session), &mut group.confirms).await?;
            group.completed.push(id);
            info!(session = %id, node = %self.me(), "session finished here");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::filters::TxFilter;
    use crate::operators::q4::Q4Count;
    use coffee_model::message::Stream;
    use coffee_model::node::StageKind;

    fn node<O: Operator>(operator: O, replicas: &str) -> StageNode<O> {
        let config = ReplicaConfig {
            topology: Topology::with_replicas("t", replicas).unwrap(),
            replica: 0,
            state_dir: PathBuf::from("/nonexistent"),
            snapshot_interval: 10,
            session_lease: crate::lease::DEFAULT_LEASE,
            group_max: usize::from(PREFETCH),
        };
        StageNode::new(operator, config)
    }

    #[test]
    fn every_replica_of_every_edge_gets_one_batch_per_input_even_an_empty_one() {
        let node = node(TxFilter, "all=3,q3_agg=2");
        // The operator emitted nothing at all for this input.
        let routed = node.route(SessionId::nil(), Emit::default(), Emitted::PerInput);
        let targets: Vec<Target> = routed.iter().map(|(t, _)| *t).collect();
        assert_eq!(targets, node.all_targets(), "the gateway (Q1), 2 q3_agg and 3 q4_count replicas");
        assert_eq!(targets.len(), 1 + 2 + 3);
        assert!(routed.iter().all(|(target, batch)| batch.is_empty() && target.stream.carries(batch)));
        // Nothing is sent at the end of a session by a stage that sends per input.
        assert!(node.route(SessionId::nil(), Emit::default(), Emitted::AtEnd).is_empty());
    }

    #[test]
    fn finals_reach_every_replica_of_their_edge() {
        let node = node(Q4Count, "q4_top=4");
        let routed = node.route(SessionId::nil(), Emit::default(), Emitted::AtEnd);
        let to: Vec<Destination> = routed.iter().map(|(t, _)| t.to).collect();
        assert_eq!(to, (0..4).map(|r| Destination::Stage(StageKind::Q4Top, r)).collect::<Vec<_>>());
    }

    #[test]
    #[should_panic(expected = "is not sent")]
    fn an_operator_emitting_off_its_edges_is_caught_in_tests() {
        let node = node(TxFilter, "all=1");
        let mut emit = Emit::default();
        emit.send(Stream::Q4Candidates, Batch::Candidates(vec![]));
        node.route(SessionId::nil(), emit, Emitted::PerInput);
    }
}
