//! A stage replica's protocol, with no broker, no clock and no process around it: admit an input (or drop it
//! as a duplicate, or set it aside as poison), apply it, number what the operator emits, finish a complete
//! session with its finals and EOFs, and make a group of inputs durable in the session logs. What to send comes
//! back as an outbox, in order; the caller publishes it, waits for the confirms, then commits.
//!
//! The runtime's shell ([`super`]) drives this over RabbitMQ; the simulator (`coffee sim`) drives the very same
//! code over a simulated broker and disk, crashing replicas between any two of these steps.

use crate::operators::{Emit, Operator};
use crate::state::disk::Disk;
use crate::state::{NodeStore, RecoveredSession};
use crate::topology::{inputs, outputs, Destination, Emitted, Target, Topology};
use crate::tracker::{Admission, InputTracker};
use coffee_model::message::Batch;
use coffee_model::node::{NodeId, Role, StageKind};
use coffee_model::wire::{Body, Envelope, SessionId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{debug, error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Broker(#[from] crate::amqp::BrokerError),
    #[error("state folder: {0}")]
    State(#[from] std::io::Error),
    #[error(
        "{replica} cannot read its state of session {session} ({what}: {error}), in {folder}. Another build wrote \
         it: run that build until the session ends, or delete the session's files ({session}.*) and run the \
         session again from its client"
    )]
    Unreadable { replica: NodeId, folder: String, session: SessionId, what: &'static str, error: String },
    #[error(
        "{replica}'s folder {folder} holds state in format {}, and this build reads format {reads}: run a build of \
         that format until the folder's sessions end, or delete the folder (its open sessions are lost: run them \
         again from their clients)", found.map_or_else(|| "unknown".to_owned(), |f| f.to_string())
    )]
    Format { replica: NodeId, folder: String, found: Option<u32>, reads: u32 },
    #[error(
        "{replica}'s state is in another folder (id {owner}) than this process's ({folder}, id {mine}): it will not \
         serve the replica. Run it on the folder that holds the state; if that folder is lost for good, delete the \
         broker's record of it (queue {record})"
    )]
    NotTheOwner { replica: NodeId, folder: String, mine: uuid::Uuid, owner: uuid::Uuid, record: String },
}

impl RuntimeError {
    /// Whether starting the replica again would meet this error again: the broker refused one of its queues for
    /// good, its folder is not the replica's, or its state is in another format or does not decode. Its process exits with
    /// [`crate::amqp::REFUSED_EXIT_CODE`].
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            RuntimeError::Broker(crate::amqp::BrokerError::Refused { .. })
                | RuntimeError::NotTheOwner { .. }
                | RuntimeError::Unreadable { .. }
                | RuntimeError::Format { .. }
        )
    }
}

impl From<lapin::Error> for RuntimeError {
    fn from(e: lapin::Error) -> Self {
        RuntimeError::Broker(e.into())
    }
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
    /// The most deliveries committed as one group, at most [`super::PREFETCH`] (1 logs, fsyncs and acks every
    /// message on its own: for measuring what group commit buys, see docs/benchmarks.md).
    pub group_max: usize,
    /// Bytes the state folder's disk must have free before a group is committed: below it, the replica holds
    /// the group (nothing written, nothing acked) until space is freed. 0 writes until the disk refuses.
    pub min_free_bytes: u64,
}

/// The (session, stream, sender) keys a stage replica waits for, from the topology.
pub fn expected_inputs(topology: &Topology, stage: StageKind) -> InputTracker {
    InputTracker::new(
        inputs(stage).flat_map(|edge| topology.senders(edge.from).into_iter().map(move |s| (edge.stream, s))),
    )
}

/// One session at this replica: what is snapshotted.
#[derive(Serialize, Deserialize)]
pub(super) struct Session<S> {
    inputs: InputTracker,
    state: S,
    /// Data messages sent per target, which each EOF announces.
    sent: BTreeMap<Target, u64>,
}

/// A message a group sends, in the order the group made it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// An output, a final or an EOF, to a stage replica's queue or the session's results queue.
    Send { to: Destination, envelope: Envelope },
    /// A poison input, for this stage's dead-letter queue, with why.
    SetAside { bytes: Vec<u8>, why: String },
}

/// What one group of deliveries did: what to send, then what to make durable before the group is acked.
#[derive(Default)]
pub struct Group {
    pub outbox: Vec<Outgoing>,
    /// Applied inputs, as their raw bytes, per session.
    pub applied: Vec<(SessionId, Vec<u8>)>,
    pub completed: Vec<SessionId>,
    /// Rows of the data inputs read (for the counters).
    pub rows_in: usize,
    /// Inputs dropped as copies of inputs already applied.
    pub duplicates: usize,
    /// Sessions purged (a gateway's purge; also among `completed`).
    pub purged: usize,
}

/// A replica's state: its open sessions (in id order, so that what it does after a restart does not depend on a
/// hash) and the folder that keeps them.
pub struct ReplicaState<S> {
    pub(super) sessions: BTreeMap<SessionId, Session<S>>,
    pub(super) store: NodeStore,
}

impl<S> ReplicaState<S> {
    pub fn open_sessions(&self) -> usize {
        self.sessions.len()
    }

    pub fn store(&self) -> &NodeStore {
        &self.store
    }
}

/// What a recovery read back.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recovery {
    pub sessions: u64,
    /// Sessions that started from a snapshot.
    pub snapshots: u64,
    /// Logged inputs applied again.
    pub records: u64,
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

    pub fn me(&self) -> NodeId {
        NodeId { role: Role::Stage(self.operator.stage()), replica: self.config.replica }
    }

    /// The folder of this replica's state.
    pub fn node_dir(&self) -> PathBuf {
        self.config.state_dir.join(self.me().to_string())
    }

    /// The queue this replica consumes.
    pub fn input_queue(&self) -> String {
        self.config.topology.queue(self.operator.stage(), self.config.replica)
    }

    /// The queue this stage sets poison aside in.
    pub fn dead_letters(&self) -> String {
        self.config.topology.dead_letter_queue(self.operator.stage().name())
    }

    /// The queue an outgoing message goes to.
    pub fn queue_of(&self, out: &Outgoing) -> String {
        match out {
            Outgoing::Send { to, envelope } => self.config.topology.queue_of(*to, envelope.session),
            Outgoing::SetAside { .. } => self.dead_letters(),
        }
    }

    /// Opens the replica's folder on `disk` and rebuilds its sessions.
    pub fn open_state(
        &self,
        disk: Arc<dyn Disk>,
        tombstones: usize,
    ) -> Result<(ReplicaState<O::State>, Recovery), RuntimeError> {
        let dir = self.node_dir();
        match crate::state::format_of(&*disk, &dir)? {
            Some(crate::state::FORMAT) => {}
            found => {
                let (replica, folder) = (self.me(), dir.display().to_string());
                return Err(RuntimeError::Format { replica, folder, found, reads: crate::state::FORMAT });
            }
        }
        let (store, recovered) = NodeStore::open_on(disk, &dir, tombstones)?;
        let mut sessions = BTreeMap::new();
        let mut recovery = Recovery { sessions: recovered.sessions.len() as u64, ..Recovery::default() };
        for (id, saved) in recovered.sessions {
            recovery.records += saved.records.len() as u64;
            recovery.snapshots += u64::from(saved.snapshot.is_some());
            sessions.insert(id, self.recover(id, saved)?);
        }
        Ok((ReplicaState { sessions, store }, recovery))
    }

    /// Sessions that were complete when the replica died, taken out of its state with their finals and EOFs: the
    /// caller publishes them, waits for the confirms, then retires each ([`StageNode::retire`]). Receivers drop
    /// what they already have.
    pub fn complete_sessions(&self, state: &mut ReplicaState<O::State>) -> Vec<(SessionId, Vec<Outgoing>)> {
        let complete: Vec<SessionId> =
            state.sessions.iter().filter(|(_, s)| s.inputs.is_complete()).map(|(id, _)| *id).collect();
        complete
            .into_iter()
            .map(|id| {
                let session = state.sessions.remove(&id).expect("present");
                (id, self.finish(id, session))
            })
            .collect()
    }

    /// Deletes a session's files and remembers it as finished (late messages of it are then dropped).
    pub fn retire(&self, state: &mut ReplicaState<O::State>, id: SessionId) -> Result<(), RuntimeError> {
        state.sessions.remove(&id);
        Ok(state.store.finish(id)?)
    }

    /// Every target this stage must end each session on (all replicas of each output).
    pub(super) fn all_targets(&self) -> Vec<Target> {
        outputs(self.operator.stage())
            .flat_map(|edge| {
                self.config.topology.destinations(edge.to).map(move |to| Target { stream: edge.stream, to })
            })
            .collect()
    }

    /// Spreads what the operator emitted along this stage's edges that are sent `when`: every replica of every
    /// such edge gets exactly one batch, an empty one where the operator emitted nothing, so its receiver can
    /// count what it must get (the emission rule holds whatever the operator does).
    pub(super) fn route(&self, session: SessionId, mut emit: Emit, when: Emitted) -> Vec<(Target, Batch)> {
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
    /// the log holds only inputs whose outputs were confirmed. A snapshot or a logged input that does not decode
    /// (its checksum held: another build wrote it) refuses the start: that input was acked, so skipping it would
    /// leave its stream one input short for good.
    fn recover(&self, id: SessionId, saved: RecoveredSession) -> Result<Session<O::State>, RuntimeError> {
        let unreadable = |what: &'static str, error: String| RuntimeError::Unreadable {
            replica: self.me(),
            folder: self.node_dir().display().to_string(),
            session: id,
            what,
            error,
        };
        let mut session = match saved.snapshot {
            Some(bytes) => postcard::from_bytes(&bytes).map_err(|e| unreadable("its snapshot", e.to_string()))?,
            None => self.new_session(),
        };
        for record in saved.records {
            let envelope = Envelope::decode(&record).map_err(|e| unreadable("a logged input", e.to_string()))?;
            self.apply(&mut session, envelope);
        }
        Ok(session)
    }

    /// Admits and applies one input; returns the admission and the numbered messages to send.
    fn apply(&self, session: &mut Session<O::State>, envelope: Envelope) -> (Admission, Vec<Outgoing>) {
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
    ) -> Vec<Outgoing> {
        routed
            .into_iter()
            .map(|(target, batch)| {
                let count = sent.entry(target).or_default();
                let seq = match input_seq {
                    Some(_) if crate::planted::active(crate::planted::Bug::FreshOutputSeq) => *count,
                    Some(seq) => seq,
                    None => *count,
                };
                *count += 1;
                let envelope =
                    Envelope { session, sender: self.me(), stream: target.stream, seq, body: Body::Data(batch) };
                Outgoing::Send { to: target.to, envelope }
            })
            .collect()
    }

    /// The final outputs of a complete session, then an EOF on every target counting what it was sent.
    fn finish(&self, id: SessionId, mut session: Session<O::State>) -> Vec<Outgoing> {
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
            messages.push(Outgoing::Send { to: target.to, envelope });
        }
        messages
    }

    /// Step 1 for one delivery: decode, drop or set aside, apply, and put what it sends in the group's outbox.
    pub fn handle(&self, state: &mut ReplicaState<O::State>, bytes: &[u8], group: &mut Group) {
        let ReplicaState { sessions, store } = state;
        let set_aside = |group: &mut Group, why: String| {
            warn!(node = %self.me(), reason = %why, bytes = bytes.len(), "poison message set aside");
            group.outbox.push(Outgoing::SetAside { bytes: bytes.to_vec(), why });
        };
        let envelope = match Envelope::decode(bytes) {
            Ok(envelope) => envelope,
            Err(e) => return set_aside(group, e.to_string()),
        };
        let (id, sender, stream, seq) = (envelope.session, envelope.sender, envelope.stream, envelope.seq);
        // Poison that decodes: rows that are not what the stream carries, or a sender or stream this stage does
        // not read. Set aside before it can open a session or use up a seq.
        if let Body::Data(batch) = &envelope.body {
            if !stream.carries(batch) {
                return set_aside(group, "rows of the wrong kind for their stream".to_owned());
            }
            group.rows_in += batch.len();
        }
        if envelope.body != Body::Purge && !self.template.expects(stream, sender) {
            return set_aside(group, "a sender or stream this stage does not read".to_owned());
        }
        if store.is_finished(id) || group.completed.contains(&id) {
            debug!(session = %id, %sender, seq, "late message of a finished session");
            return;
        }
        if envelope.body == Body::Purge {
            // Retired like a finished session: state and files go, and later messages of it are dropped.
            sessions.remove(&id);
            group.completed.push(id);
            group.purged += 1;
            info!(session = %id, node = %self.me(), "session purged");
            return;
        }
        let session = sessions.entry(id).or_insert_with(|| self.new_session());
        let (admission, messages) = self.apply(session, envelope);
        match admission {
            Admission::Apply => {
                debug!(session = %id, %sender, ?stream, seq, "applied");
                group.applied.push((id, bytes.to_vec()));
            }
            Admission::Duplicate => {
                group.duplicates += 1;
                debug!(session = %id, %sender, ?stream, seq, "duplicate dropped");
            }
            Admission::Unexpected | Admission::BeyondEof => {
                // Where it stood goes into the reason, kept with the dead letter.
                set_aside(
                    group,
                    format!("{admission:?}: an input past its stream's end (session {id}, {sender} {stream:?} #{seq})"),
                );
            }
        }
        group.outbox.extend(messages);
        if session.inputs.is_complete() {
            let session = sessions.remove(&id).expect("present");
            group.outbox.extend(self.finish(id, session));
            group.completed.push(id);
            info!(session = %id, node = %self.me(), "session finished here");
        }
    }

    /// Steps 3 and 4, once the group's outbox is confirmed: log the applied inputs, fsync, snapshot what is due,
    /// and retire completed sessions.
    pub fn commit(&self, state: &mut ReplicaState<O::State>, group: Group) -> Result<(), RuntimeError> {
        debug_assert!(group.outbox.is_empty(), "a group is committed once its outbox is sent and confirmed");
        let ReplicaState { store, sessions } = state;
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
            let bytes = snapshot_of(sessions.get_mut(&id).expect("due sessions are open"));
            crate::failpoint!("during-snapshot");
            store.snapshot(id, &bytes)?;
        }
        for id in group.completed {
            store.finish(id)?;
        }
        Ok(())
    }
}

/// A session's snapshot.
fn snapshot_of<S: Serialize>(session: &mut Session<S>) -> Vec<u8> {
    if crate::planted::active(crate::planted::Bug::SnapshotWithoutDedup) {
        let whole = session.inputs.clone();
        session.inputs.forget_applied();
        let bytes = postcard::to_allocvec(&*session).expect("session state serializes");
        session.inputs = whole;
        return bytes;
    }
    postcard::to_allocvec(&*session).expect("session state serializes")
}

/// A stage replica's protocol behind one object-safe face, whatever its operator: what the simulator holds for
/// every replica of every stage. Each call is one of the shell's steps.
pub trait Protocol {
    fn me(&self) -> NodeId;
    fn input_queue(&self) -> String;
    /// Opens the folder and rebuilds the sessions (a start, or a restart after a crash).
    fn open(&mut self, disk: Arc<dyn Disk>) -> Result<Recovery, RuntimeError>;
    /// After [`Protocol::open`]: the finals of sessions that were complete, to send before anything else.
    fn complete_sessions(&mut self) -> Vec<(SessionId, Vec<(String, Outgoing)>)>;
    fn retire(&mut self, id: SessionId) -> Result<(), RuntimeError>;
    /// Handles one delivery into the current group; returns what it sends, with each message's queue.
    fn handle(&mut self, bytes: &[u8]) -> Vec<(String, Outgoing)>;
    /// Whether the current group completes a session (its finals are among what it sends).
    fn completing(&self) -> bool;
    /// Commits the current group (its outbox was sent and confirmed) and starts a new one; which sessions it
    /// fed and which ended (for their leases).
    fn commit(&mut self) -> Result<Committed, RuntimeError>;
    /// The id of its folder on `disk` ([`crate::state::FOLDER_ID`]), made if the folder has none yet.
    fn folder_id(&self, disk: &dyn Disk) -> std::io::Result<uuid::Uuid>;
    /// Sessions open here.
    fn open_sessions(&self) -> usize;
    /// Their ids, in order.
    fn sessions(&self) -> Vec<SessionId>;
}

/// The sessions a committed group fed, and those it ended.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    pub applied: Vec<SessionId>,
    pub ended: Vec<SessionId>,
    /// Rows of the data inputs it read (for the counters).
    pub rows_in: usize,
    /// Inputs it dropped as copies of inputs already applied.
    pub duplicates: usize,
    /// Sessions it purged.
    pub purged: usize,
}

/// A [`StageNode`] with its state, as a [`Protocol`].
pub struct Replica<O: Operator> {
    node: StageNode<O>,
    state: Option<ReplicaState<O::State>>,
    group: Group,
}

impl<O: Operator> Replica<O> {
    pub fn new(node: StageNode<O>) -> Self {
        Replica { node, state: None, group: Group::default() }
    }

    fn addressed(&self, outbox: Vec<Outgoing>) -> Vec<(String, Outgoing)> {
        outbox.into_iter().map(|out| (self.node.queue_of(&out), out)).collect()
    }
}

impl<O: Operator> Protocol for Replica<O> {
    fn me(&self) -> NodeId {
        self.node.me()
    }

    fn input_queue(&self) -> String {
        self.node.input_queue()
    }

    fn open(&mut self, disk: Arc<dyn Disk>) -> Result<Recovery, RuntimeError> {
        let (state, recovery) = self.node.open_state(disk, crate::state::DEFAULT_TOMBSTONES)?;
        (self.state, self.group) = (Some(state), Group::default());
        Ok(recovery)
    }

    fn complete_sessions(&mut self) -> Vec<(SessionId, Vec<(String, Outgoing)>)> {
        let Replica { node, state, .. } = self;
        let complete = node.complete_sessions(state.as_mut().expect("opened"));
        complete.into_iter().map(|(id, outbox)| (id, self.addressed(outbox))).collect()
    }

    fn retire(&mut self, id: SessionId) -> Result<(), RuntimeError> {
        let state = self.state.as_mut().expect("opened");
        self.node.retire(state, id)
    }

    fn handle(&mut self, bytes: &[u8]) -> Vec<(String, Outgoing)> {
        let Replica { node, state, group } = self;
        node.handle(state.as_mut().expect("opened"), bytes, group);
        let outbox = std::mem::take(&mut group.outbox);
        self.addressed(outbox)
    }

    fn commit(&mut self) -> Result<Committed, RuntimeError> {
        let group = std::mem::take(&mut self.group);
        let mut applied: Vec<SessionId> = group.applied.iter().map(|(id, _)| *id).collect();
        applied.dedup();
        let committed = Committed {
            applied,
            ended: group.completed.clone(),
            rows_in: group.rows_in,
            duplicates: group.duplicates,
            purged: group.purged,
        };
        let state = self.state.as_mut().expect("opened");
        self.node.commit(state, group)?;
        Ok(committed)
    }

    fn completing(&self) -> bool {
        !self.group.completed.is_empty()
    }

    fn folder_id(&self, disk: &dyn Disk) -> std::io::Result<uuid::Uuid> {
        crate::state::folder_id(disk, &self.node.node_dir())
    }

    fn open_sessions(&self) -> usize {
        self.state.as_ref().map_or(0, ReplicaState::open_sessions)
    }

    fn sessions(&self) -> Vec<SessionId> {
        self.state.as_ref().map_or_else(Vec::new, |s| s.sessions.keys().copied().collect())
    }
}

/// Any replica's protocol, whatever its operator (the simulator holds one of these per process).
impl Protocol for Box<dyn Protocol> {
    fn me(&self) -> NodeId {
        (**self).me()
    }
    fn input_queue(&self) -> String {
        (**self).input_queue()
    }
    fn open(&mut self, disk: Arc<dyn Disk>) -> Result<Recovery, RuntimeError> {
        (**self).open(disk)
    }
    fn complete_sessions(&mut self) -> Vec<(SessionId, Vec<(String, Outgoing)>)> {
        (**self).complete_sessions()
    }
    fn retire(&mut self, id: SessionId) -> Result<(), RuntimeError> {
        (**self).retire(id)
    }
    fn handle(&mut self, bytes: &[u8]) -> Vec<(String, Outgoing)> {
        (**self).handle(bytes)
    }
    fn completing(&self) -> bool {
        (**self).completing()
    }
    fn folder_id(&self, disk: &dyn Disk) -> std::io::Result<uuid::Uuid> {
        (**self).folder_id(disk)
    }
    fn commit(&mut self) -> Result<Committed, RuntimeError> {
        (**self).commit()
    }
    fn open_sessions(&self) -> usize {
        (**self).open_sessions()
    }
    fn sessions(&self) -> Vec<SessionId> {
        (**self).sessions()
    }
}
