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

pub mod tracker;

use crate::amqp::{self, BrokerError, Publisher};
use crate::heartbeat::{self, Counters};
use crate::message::{Body, Envelope, NodeId, Role, SessionId, StageKind};
use crate::operators::{Destination, Emit, Operator, Target};
use crate::state::{NodeStore, RecoveredSession};
use crate::topology::{inputs, outputs, Endpoint, Topology};
use futures::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::PublisherConfirm;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::{debug, info, warn};
use tracker::{Admission, InputTracker};

/// Unacked deliveries a replica holds at once (and so the largest group it commits together).
pub const PREFETCH: u16 = 256;

/// The most deliveries committed as one group: [`PREFETCH`], or `COFFEE_GROUP_MAX` (1 commits, fsyncs and acks
/// every message on its own; for measuring what group commit buys, see docs/benchmarks.md).
fn group_max() -> usize {
    let max = std::env::var("COFFEE_GROUP_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(usize::from(PREFETCH));
    max.clamp(1, usize::from(PREFETCH))
}

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
        inputs(stage).iter().flat_map(|&(stream, from)| topology.senders(from).into_iter().map(move |s| (stream, s))),
    )
}

/// The queue a destination reads (results go to their session's own queue).
pub fn queue_of(topology: &Topology, to: Destination, session: SessionId) -> String {
    match to {
        Destination::Gateway => topology.results_queue(session),
        Destination::Stage(stage, replica) => topology.queue(stage, replica),
    }
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

/// One replica of a stage: its identity, topology, operator and state folder.
pub struct StageNode<O: Operator> {
    pub operator: O,
    pub topology: Topology,
    pub replica: u16,
    pub state_dir: PathBuf,
    pub snapshot_interval: u64,
    /// The inputs every session waits for (what `new_session` starts from).
    template: InputTracker,
}

impl<O: Operator> StageNode<O> {
    pub fn new(operator: O, topology: Topology, replica: u16, state_dir: PathBuf, snapshot_interval: u64) -> Self {
        let template = expected_inputs(&topology, operator.stage());
        StageNode { operator, topology, replica, state_dir, snapshot_interval, template }
    }
}

impl<O: Operator> StageNode<O> {
    fn me(&self) -> NodeId {
        NodeId { role: Role::Stage(self.operator.stage()), replica: self.replica }
    }

    /// Every target this stage must end each session on (all replicas of each output).
    fn all_targets(&self) -> Vec<Target> {
        outputs(self.operator.stage())
            .iter()
            .flat_map(|&(stream, to)| {
                (0..self.topology.width(to)).map(move |replica| Target {
                    stream,
                    to: match to {
                        Endpoint::Gateway => Destination::Gateway,
                        Endpoint::Stage(stage) => Destination::Stage(stage, replica),
                    },
                })
            })
            .collect()
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
                let mut emit = Emit::default();
                if admission == Admission::Apply {
                    if let Err(e) = self.operator.apply(&mut session.state, stream, batch, &mut emit) {
                        warn!(session = %id, %sender, seq, error = %e, "dropping a batch");
                    }
                }
                (admission, self.number(id, Some(seq), emit, &mut session.sent))
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
        emit: Emit,
        sent: &mut BTreeMap<Target, u64>,
    ) -> Vec<(Destination, Envelope)> {
        emit.batches
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
        let mut messages = self.number(id, None, emit, &mut session.sent);
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
            confirms.push(publisher.publish(&queue_of(&self.topology, to, envelope.session), &envelope).await?);
        }
        Ok(())
    }

    /// Runs until the broker connection fails (the supervisor restarts the process then).
    pub async fn run(self, amqp_url: &str) -> Result<(), RuntimeError> {
        let me = self.me();
        let node_dir = self.state_dir.join(me.to_string());
        let (mut store, recovered) = NodeStore::open(&node_dir)?;
        let mut finished: HashSet<SessionId> = recovered.finished;
        let mut sessions: HashMap<SessionId, Session<O::State>> = HashMap::new();
        for (id, saved) in recovered.sessions {
            sessions.insert(id, self.recover(id, saved)?);
        }
        info!(node = %me, sessions = sessions.len(), finished = finished.len(), dir = %node_dir.display(), "state recovered");

        let connection = amqp::connect_patiently(amqp_url, &me.to_string(), amqp::NODE_PATIENCE).await?;
        let channel = amqp::consumer_channel(&connection, PREFETCH).await?;
        amqp::declare_queues(&channel, &self.topology).await?;
        let counters = Arc::new(Counters::default());
        counters.open_sessions.store(sessions.len() as u64, Ordering::Relaxed);
        let publisher = Publisher::new(&connection, counters.clone()).await?;
        heartbeat::start(&connection, &self.topology, me.to_string(), counters.clone()).await?;

        // Sessions that were complete when we died: finish them again (receivers drop what they already have).
        let complete: Vec<SessionId> =
            sessions.iter().filter(|(_, s)| s.inputs.is_complete()).map(|(id, _)| *id).collect();
        for id in complete {
            let mut confirms = Vec::new();
            let session = sessions.remove(&id).expect("present");
            self.publish_all(&publisher, self.finish(id, session), &mut confirms).await?;
            amqp::await_confirms(confirms).await?;
            store.finish(id)?;
            finished.insert(id);
            info!(session = %id, node = %me, "session finished again after recovery");
        }

        let queue = self.topology.queue(self.operator.stage(), self.replica);
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                me.to_string().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        info!(node = %me, %queue, "stage replica consuming");

        let group_max = group_max();
        while let Some(first) = consumer.next().await {
            // Take what is already here, up to the prefetch, as one group.
            let mut deliveries = vec![first?];
            while deliveries.len() < group_max {
                match consumer.next().now_or_never() {
                    Some(Some(delivery)) => deliveries.push(delivery?),
                    _ => break,
                }
            }
            let mut group = Group::default();
            for delivery in &deliveries {
                counters.consumed(delivery.data.len());
                self.handle(&delivery.data, &publisher, &mut sessions, &mut finished, &mut group).await?;
            }
            amqp::await_confirms(std::mem::take(&mut group.confirms)).await?;
            crate::failpoint!("after-publish-before-log");
            if !group.completed.is_empty() {
                crate::failpoint!("after-final-publish-before-log");
            }
            self.commit(&mut store, &sessions, group)?;
            crate::failpoint!("after-log-before-ack");
            counters.open_sessions.store(sessions.len() as u64, Ordering::Relaxed);
            let last = deliveries.last().expect("a group is never empty");
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
        Ok(())
    }

    /// Steps 3 and 4: log the applied inputs, fsync, snapshot what is due, and retire completed sessions.
    fn commit(
        &self,
        store: &mut NodeStore,
        sessions: &HashMap<SessionId, Session<O::State>>,
        group: Group,
    ) -> Result<(), RuntimeError> {
        let mut due = Vec::new();
        for (id, bytes) in &group.applied {
            if store.append(*id, bytes)? >= self.snapshot_interval && sessions.contains_key(id) {
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
        self.topology.dead_letter_queue(self.operator.stage().name())
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
        group.confirms.push(publisher.publish_bytes(&self.dead_letters(), bytes).await?);
        Ok(())
    }

    /// Step 1 for one delivery.
    async fn handle(
        &self,
        bytes: &[u8],
        publisher: &Publisher,
        sessions: &mut HashMap<SessionId, Session<O::State>>,
        finished: &mut HashSet<SessionId>,
        group: &mut Group,
    ) -> Result<(), BrokerError> {
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
        }
        if envelope.body != Body::Purge && !self.template.expects(stream, sender) {
            return self.set_aside(publisher, bytes, "a sender or stream this stage does not read", group).await;
        }
        if finished.contains(&id) {
            debug!(session = %id, %sender, seq, "late message of a finished session");
            return Ok(());
        }
        if envelope.body == Body::Purge {
            // Retired like a finished session: state and files go, and later messages of it are dropped.
            sessions.remove(&id);
            finished.insert(id);
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
                warn!(session = %id, %sender, ?stream, seq, ?admission, "setting aside an input past its stream's end");
                let confirm = publisher.publish_bytes(&self.dead_letters(), bytes).await?;
                group.confirms.push(confirm);
            }
        }
        self.publish_all(publisher, messages, &mut group.confirms).await?;
        if session.inputs.is_complete() {
            let session = sessions.remove(&id).expect("present");
            self.publish_all(publisher, self.finish(id, session), &mut group.confirms).await?;
            finished.insert(id);
            group.completed.push(id);
            info!(session = %id, node = %self.me(), "session finished here");
        }
        Ok(())
    }
}
