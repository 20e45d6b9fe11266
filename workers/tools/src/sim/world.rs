//! One seed's world: the replicas (the engine's protocol, stepped as its shell would), the gateway's input side
//! and the results side of each session, the broker, and the scheduler that picks who steps next and which
//! fault strikes.

use super::broker::{Message, SimBroker};
use super::{Bug, Dataset, Options, SHAPES};
use crate::compare::compare_lines;
use coffee_engine::gateway::result_tracker;
use coffee_engine::lease::{results_queue_expiry, Leases};
use coffee_engine::operators::{with_operator, Operator, WithOperator};
use coffee_engine::runtime::{Outgoing, Protocol, Replica, ReplicaConfig, StageNode};
use coffee_engine::state::disk::{SimDisk, Tear};
use coffee_engine::topology::Topology;
use coffee_engine::tracker::{Admission, InputTracker};
use coffee_model::message::{Batch, Stream};
use coffee_model::model::FileKind;
use coffee_model::wire::{Body, Envelope, SessionId};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The most deliveries a simulated replica takes as one group (small, so groups end often and faults land
/// between many of them).
const GROUP_MAX: usize = 8;
/// Events kept for a failing seed's trace (all of them with `full_trace`).
const TRACE_TAIL: usize = 300;

/// How one seed went.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    /// Why the seed failed, if it did.
    pub failure: Option<String>,
    pub steps: u64,
    pub faults: u64,
    /// The replicas' shape this seed ran.
    pub shape: &'static str,
    /// The run's events (the last few hundred, or all of them with `full_trace`).
    pub trace: Vec<String>,
}

/// Where a replica stands in its shell's loop.
enum Phase {
    /// Killed, waiting for its supervisor.
    Down,
    /// Restarted: opens its folder next, and sends the finals of sessions it had completed.
    Starting,
    /// Those finals are published: confirm them next.
    RecoveredPublished(Vec<SessionId>),
    /// Confirmed: retire those sessions next.
    RecoveredConfirmed(Vec<SessionId>),
    Idle,
    /// A group taken from its queue: handle the next delivery.
    Handling {
        group: Vec<Message>,
        next: usize,
    },
    Confirming,
    Committing,
    Acking,
}

struct SimReplica {
    name: String,
    queue: String,
    protocol: Box<dyn Protocol>,
    disk: SimDisk,
    phase: Phase,
    /// With [`Bug::AckBeforeCommit`]: the group was acked and still has to be committed.
    acked_early: bool,
    /// Its sessions' leases, renewed by inputs and the gateway's announcements (in memory: lost at a crash).
    leases: Leases,
    /// When it next looks for expired leases.
    next_lease_check: u64,
}

/// One session's upload, as the gateway publishes it.
pub(super) struct Feed {
    pub(super) kind: FileKind,
    /// (queue, bytes) of each message.
    pub(super) messages: Vec<(String, Vec<u8>)>,
    /// Where the EOFs begin: they go out only once every data message before them is confirmed.
    pub(super) eofs_from: usize,
    pub(super) sent: usize,
    pub(super) confirmed: usize,
}

/// Where an abandoned session's purge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purge {
    /// Not abandoned, or its client still uploading.
    No,
    /// The client left: the gateway publishes a purge to every replica next.
    Due,
    /// Published: confirmed (and the results queue deleted) next.
    Published,
    Done,
}

/// One session: its upload, and its results as the gateway forwards them and the client keeps them.
struct SimSession {
    id: SessionId,
    dataset: usize,
    feeds: Vec<Feed>,
    /// For a session whose client leaves: how many messages it publishes before it does.
    leaves_after: Option<usize>,
    /// The gateway vanishes with its folder when that client leaves: nobody purges the session or deletes its
    /// results queue; the stages' leases and the queue's expiry must clean up.
    forgotten: bool,
    purge: Purge,
    results_queue: String,
    tracker: InputTracker,
    lines: Vec<String>,
    /// Results delivered to the gateway and not yet acked (the client has them).
    holding: bool,
}

pub(super) struct World<'a> {
    seed: u64,
    rng: ChaCha8Rng,
    options: &'a Options,
    datasets: &'a [Dataset],
    shape: &'static str,
    broker: SimBroker,
    replicas: Vec<SimReplica>,
    sessions: Vec<SimSession>,
    step: u64,
    faults: u64,
    trace: VecDeque<String>,
    /// Virtual time: `base` plus a millisecond a step.
    base: tokio::time::Instant,
}

/// Builds a replica's protocol for any stage, with its operator.
struct Build(ReplicaConfig);

impl WithOperator for Build {
    type Output = Box<dyn Protocol>;
    fn with<O: Operator>(self, operator: O) -> Box<dyn Protocol> {
        Box::new(Replica::new(StageNode::new(operator, self.0)))
    }
}

impl<'a> World<'a> {
    pub(super) fn new(seed: u64, datasets: &'a [Dataset], options: &'a Options) -> World<'a> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shape = SHAPES[rng.gen_range(0..SHAPES.len())];
        let topology = Topology::with_replicas("sim", shape).expect("a valid shape");
        let lease = Duration::from_millis(options.lease_steps);
        let replicas = topology
            .stage_replicas()
            .map(|(stage, replica)| {
                let config = ReplicaConfig {
                    topology: topology.clone(),
                    replica,
                    state_dir: PathBuf::from("/sim/state"),
                    // Small, so snapshots are taken and recovered from.
                    snapshot_interval: 5,
                    session_lease: coffee_engine::lease::DEFAULT_LEASE,
                    group_max: GROUP_MAX,
                };
                let protocol = with_operator(stage, Build(config));
                let name = protocol.me().to_string();
                let queue = protocol.input_queue();
                SimReplica {
                    name,
                    queue,
                    protocol,
                    disk: SimDisk::new(),
                    phase: Phase::Starting,
                    acked_early: false,
                    leases: Leases::new(lease),
                    next_lease_check: 0,
                }
            })
            .collect();
        let sessions = (0..options.sessions + options.abandoned)
            .map(|i| {
                let id = SessionId::from_u128(rng.gen());
                let dataset = i % datasets.len();
                let feeds = datasets[dataset].uploads(&topology, id);
                let total: usize = feeds.iter().map(|f| f.messages.len()).sum();
                let leaves_after = (i >= options.sessions).then(|| rng.gen_range(0..total));
                let forgotten = leaves_after.is_some() && rng.gen_bool(0.5);
                SimSession {
                    id,
                    dataset,
                    feeds,
                    leaves_after,
                    forgotten,
                    purge: Purge::No,
                    results_queue: topology.results_queue(id),
                    tracker: result_tracker(&topology),
                    lines: Vec::new(),
                    holding: false,
                }
            })
            .collect();
        World {
            seed,
            rng,
            options,
            datasets,
            shape,
            broker: SimBroker::default(),
            replicas,
            sessions,
            step: 0,
            faults: 0,
            trace: VecDeque::new(),
            base: tokio::time::Instant::from_std(std::time::Instant::now()),
        }
        .declared()
    }

    /// Each session's results queue, declared as the gateway declares it (expiring once unused for the
    /// lease), with the gateway's consumer on it.
    fn declared(mut self) -> Self {
        let expiry = results_queue_expiry(Duration::from_millis(self.options.lease_steps)).as_millis() as u64;
        for session in &self.sessions {
            self.broker.declare_expiring(&session.results_queue, expiry, 0);
            self.broker.attach(&session.results_queue);
        }
        self
    }

    /// Virtual time: a millisecond a step.
    fn now(&self) -> tokio::time::Instant {
        self.base + Duration::from_millis(self.step)
    }

    /// How often (in steps) the gateway announces its sessions and the replicas look for expired leases.
    fn announce_every(&self) -> u64 {
        coffee_engine::lease::announce_every(Duration::from_millis(self.options.lease_steps)).as_millis() as u64
    }

    /// The gateway announces the sessions it knows; every replica that runs hears it.
    fn announce(&mut self) {
        let known: Vec<SessionId> =
            self.sessions.iter().filter(|s| s.purge == Purge::No && !s.tracker.is_complete()).map(|s| s.id).collect();
        let now = self.now();
        for r in self.replicas.iter_mut().filter(|r| !matches!(r.phase, Phase::Down)) {
            r.leases.announced(&known, now);
        }
    }

    fn note(&mut self, event: String) {
        if !self.options.full_trace && self.trace.len() == TRACE_TAIL {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("{:>7} {event}", self.step));
    }

    pub(super) fn run(mut self) -> Outcome {
        let failure = self.simulate().err();
        Outcome {
            seed: self.seed,
            failure,
            steps: self.step,
            faults: self.faults,
            shape: self.shape,
            trace: self.trace.into_iter().collect(),
        }
    }

    /// Steps until the sessions are done and the system is quiet, then checks the invariants.
    fn simulate(&mut self) -> Result<(), String> {
        let shape = self.shape;
        let sessions: Vec<String> = self.sessions.iter().map(|s| short(s.id)).collect();
        self.note(format!("seed {} · shape {shape} · sessions {}", self.seed, sessions.join(", ")));
        loop {
            if self.step >= self.options.max_steps {
                return Err(format!("not quiet after {} steps (a liveness bug?): {}", self.step, self.progress()));
            }
            self.step += 1;
            if self.step.is_multiple_of(self.announce_every()) {
                self.announce();
            }
            for queue in self.broker.expire(self.step) {
                self.note(format!("{queue} expired: nobody consumed it for a whole lease"));
            }
            if self.faulting() && self.rng.gen_bool(self.options.fault_rate) {
                self.fault();
                continue;
            }
            let runnable = self.runnable();
            let Some(&actor) = runnable.choose(&mut self.rng) else { break };
            match actor {
                Actor::Wait => {}
                Actor::Replica(i) => self.step_replica(i),
                Actor::Upload(s) => self.step_upload(s),
                Actor::Results(s) => self.step_results(s)?,
            }
        }
        self.check()
    }

    /// What each session has received so far, for a run that did not finish.
    fn progress(&self) -> String {
        let sessions: Vec<String> = self
            .sessions
            .iter()
            .map(|s| format!("{} complete={} lines={}", short(s.id), s.tracker.is_complete(), s.lines.len()))
            .collect();
        format!("{}; broker holds {:?}", sessions.join(", "), self.broker.holding())
    }

    fn runnable(&self) -> Vec<Actor> {
        let mut actors = Vec::new();
        let mut waiting = self.broker.expiring_idle();
        for (i, r) in self.replicas.iter().enumerate() {
            let lease_check = r.protocol.open_sessions() > 0 && self.step >= r.next_lease_check;
            if !matches!(r.phase, Phase::Idle) || self.broker.ready(&r.queue) > 0 || lease_check {
                actors.push(Actor::Replica(i));
            }
            // A replica holding a session is waiting, at least, for its lease to run out.
            waiting |= r.protocol.open_sessions() > 0;
        }
        if waiting {
            actors.push(Actor::Wait);
        }
        for (s, session) in self.sessions.iter().enumerate() {
            let publishing = session.feeds.iter().any(|f| f.sent < f.messages.len() || f.confirmed < f.sent);
            let purging = matches!(session.purge, Purge::Due | Purge::Published);
            if (publishing && session.purge == Purge::No) || purging {
                actors.push(Actor::Upload(s));
            }
            // Nobody forwards the results of a session whose client left.
            let forwarding = session.leaves_after.is_none();
            if forwarding && (session.holding || self.broker.ready(&session.results_queue) > 0) {
                actors.push(Actor::Results(s));
            }
        }
        actors
    }

    // --- The replicas, one shell step at a time ------------------------------------------------------------

    fn step_replica(&mut self, i: usize) {
        let phase = std::mem::replace(&mut self.replicas[i].phase, Phase::Idle);
        let name = self.replicas[i].name.clone();
        let next = match phase {
            Phase::Down => {
                self.note(format!("{name} restarted by its supervisor"));
                Phase::Starting
            }
            Phase::Starting => {
                let r = &mut self.replicas[i];
                match r.protocol.open(Arc::new(r.disk.clone())) {
                    Ok(recovery) => {
                        let complete = r.protocol.complete_sessions();
                        let ids: Vec<SessionId> = complete.iter().map(|(id, _)| *id).collect();
                        for (_, outbox) in complete {
                            self.publish(&name, outbox);
                        }
                        // A new process: every recovered session's lease starts now.
                        let (now, every) = (self.now(), self.announce_every());
                        let r = &mut self.replicas[i];
                        r.leases = Leases::new(Duration::from_millis(self.options.lease_steps));
                        r.protocol.sessions().into_iter().for_each(|id| r.leases.renew(id, now));
                        r.next_lease_check = self.step + every;
                        let (sessions, records) = (recovery.sessions, recovery.records);
                        self.note(format!(
                            "{name} opened its folder: {sessions} sessions, {records} records replayed, {} complete",
                            ids.len()
                        ));
                        Phase::RecoveredPublished(ids)
                    }
                    Err(e) => {
                        self.note(format!("{name} failed to open its folder: {e}"));
                        return self.crash_replica(i, false);
                    }
                }
            }
            Phase::RecoveredPublished(ids) => {
                self.broker.confirm(&name);
                Phase::RecoveredConfirmed(ids)
            }
            Phase::RecoveredConfirmed(ids) => {
                for id in ids {
                    if let Err(e) = self.replicas[i].protocol.retire(id) {
                        self.note(format!("{name} died retiring {}: {e}", short(id)));
                        return self.crash_replica(i, false);
                    }
                    self.note(format!("{name} finished {} again after its restart", short(id)));
                }
                Phase::Idle
            }
            Phase::Idle if self.step >= self.replicas[i].next_lease_check => {
                self.replicas[i].next_lease_check = self.step + self.announce_every();
                let now = self.now();
                for id in self.replicas[i].leases.expired(now) {
                    if !self.replicas[i].protocol.sessions().contains(&id) {
                        continue;
                    }
                    if let Err(e) = self.replicas[i].protocol.retire(id) {
                        self.note(format!("{name} died purging {}: {e}", short(id)));
                        return self.crash_replica(i, false);
                    }
                    self.note(format!("{name} purged {}: no gateway announced it for a whole lease", short(id)));
                }
                Phase::Idle
            }
            Phase::Idle => {
                let max = self.rng.gen_range(1..=GROUP_MAX);
                let queue = self.replicas[i].queue.clone();
                let group = self.broker.deliver(&name, &queue, max, &mut self.rng);
                if group.is_empty() {
                    Phase::Idle
                } else {
                    Phase::Handling { group, next: 0 }
                }
            }
            Phase::Handling { group, next } => {
                let message = &group[next];
                let outbox = self.replicas[i].protocol.handle(&message.bytes);
                let what = describe(&message.bytes);
                let redelivered = if message.redelivered { " (redelivered)" } else { "" };
                self.note(format!("{name} handles {what}{redelivered}: {} out", outbox.len()));
                // Now and then the process dies between two of its publishes.
                if outbox.len() > 1 && self.faulting() && self.options.faults.crash && self.rng.gen_bool(0.02) {
                    let sent = self.rng.gen_range(0..outbox.len());
                    self.faults += 1;
                    self.note(format!("{name} dies after publishing {sent} of them"));
                    self.publish(&name, outbox.into_iter().take(sent).collect());
                    return self.crash_replica(i, false);
                }
                self.publish(&name, outbox);
                if next + 1 < group.len() {
                    Phase::Handling { group, next: next + 1 }
                } else if self.options.bug == Some(Bug::CommitBeforeConfirm) {
                    Phase::Committing
                } else {
                    Phase::Confirming
                }
            }
            Phase::Confirming => {
                self.broker.confirm(&name);
                match self.options.bug {
                    Some(Bug::AckBeforeCommit) => {
                        self.broker.ack_all(&name);
                        self.replicas[i].acked_early = true;
                        Phase::Committing
                    }
                    Some(Bug::CommitBeforeConfirm) => Phase::Acking,
                    None => Phase::Committing,
                }
            }
            Phase::Committing => {
                // Now and then the process dies halfway through the commit, after a few disk operations.
                let halfway = self.faulting() && self.options.faults.crash && self.rng.gen_bool(0.05);
                if halfway {
                    let ops = self.rng.gen_range(0..6);
                    self.replicas[i].disk.fail_after(Some(ops));
                }
                match self.replicas[i].protocol.commit() {
                    Ok(committed) => {
                        // As the shell does: an input renews its session's lease; a session that ended has none.
                        let now = self.now();
                        let leases = &mut self.replicas[i].leases;
                        committed.applied.iter().for_each(|id| leases.renew(*id, now));
                        committed.ended.iter().for_each(|id| leases.forget(*id));
                        if std::mem::take(&mut self.replicas[i].acked_early) {
                            Phase::Idle
                        } else if self.options.bug == Some(Bug::CommitBeforeConfirm) {
                            Phase::Confirming
                        } else {
                            Phase::Acking
                        }
                    }
                    Err(e) => {
                        self.faults += 1;
                        self.note(format!("{name} dies halfway through its commit ({e})"));
                        let power_cut = self.rng.gen_bool(0.5);
                        return self.crash_replica(i, power_cut);
                    }
                }
            }
            Phase::Acking => {
                self.broker.ack_all(&name);
                Phase::Idle
            }
        };
        self.replicas[i].phase = next;
    }

    /// Whether faults may still strike.
    fn faulting(&self) -> bool {
        self.step <= self.options.fault_steps
    }

    fn publish(&mut self, publisher: &str, outbox: Vec<(String, Outgoing)>) {
        for (queue, out) in outbox {
            let bytes = match out {
                Outgoing::Send { envelope, .. } => envelope.encode(),
                Outgoing::SetAside { bytes, why } => {
                    self.note(format!("{publisher} sets a message aside: {why}"));
                    bytes
                }
            };
            self.broker.publish(publisher, &queue, bytes);
        }
    }

    /// The replica's process is gone (and, on a power cut, what it had not fsynced may be too); its
    /// supervisor starts it again later.
    fn crash_replica(&mut self, i: usize, power_cut: bool) {
        let r = &mut self.replicas[i];
        r.disk.fail_after(None);
        if power_cut {
            let rng = &mut self.rng;
            r.disk.crash(|_| match rng.gen_range(0..3) {
                0 => Tear::Nothing,
                1 => Tear::Everything,
                _ => Tear::Prefix(rng.gen_range(0..64)),
            });
        }
        r.phase = Phase::Down;
        r.acked_early = false;
        let name = r.name.clone();
        self.broker.consumer_lost(&name, &mut self.rng);
        let how = if power_cut { "its machine cut off" } else { "killed" };
        self.note(format!("{name} {how}"));
    }

    // --- The gateway's two sides ---------------------------------------------------------------------------

    /// The gateway publishes the next message of one of the session's files, or has what it published
    /// confirmed.
    fn step_upload(&mut self, s: usize) {
        match self.sessions[s].purge {
            Purge::Due => return self.publish_purge(s),
            Purge::Published => {
                // Confirmed: the purge is in every replica's queue; the results queue goes.
                self.broker.confirm("gateway");
                let (id, queue) = (self.sessions[s].id, self.sessions[s].results_queue.clone());
                self.broker.delete_queue(&queue);
                self.sessions[s].purge = Purge::Done;
                self.note(format!("the gateway purged {} and deleted its results queue", short(id)));
                return;
            }
            Purge::No | Purge::Done => {}
        }
        let sent: usize = self.sessions[s].feeds.iter().map(|f| f.sent).sum();
        if self.sessions[s].leaves_after.is_some_and(|n| sent >= n) {
            let session = &mut self.sessions[s];
            if session.forgotten {
                // The gateway vanishes with its folder: no purge, no announcement, no consumer any more.
                session.purge = Purge::Done;
                let (id, queue) = (session.id, session.results_queue.clone());
                self.broker.detach(&queue, self.step);
                self.note(format!(
                    "the client of {} left after {sent} messages; its gateway vanished with its folder",
                    short(id)
                ));
            } else {
                // The client is gone; the gateway, past its grace, purges the session everywhere.
                session.purge = Purge::Due;
                let id = session.id;
                self.note(format!("the client of {} left after {sent} messages", short(id)));
            }
            return;
        }
        let publishable: Vec<usize> = self.sessions[s]
            .feeds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.sent < f.messages.len() && (f.sent < f.eofs_from || f.confirmed >= f.eofs_from))
            .map(|(k, _)| k)
            .collect();
        let unconfirmed = self.sessions[s].feeds.iter().any(|f| f.confirmed < f.sent);
        let confirm = publishable.is_empty() || (unconfirmed && self.rng.gen_bool(0.2));
        if confirm {
            self.broker.confirm("gateway");
            self.sessions[s].feeds.iter_mut().for_each(|f| f.confirmed = f.sent);
            return;
        }
        let k = publishable[self.rng.gen_range(0..publishable.len())];
        let feed = &mut self.sessions[s].feeds[k];
        let (queue, bytes) = feed.messages[feed.sent].clone();
        feed.sent += 1;
        self.broker.publish("gateway", &queue, bytes);
    }

    /// The gateway tells every replica of every stage to drop an abandoned session.
    fn publish_purge(&mut self, s: usize) {
        let id = self.sessions[s].id;
        for r in 0..self.replicas.len() {
            let envelope = Envelope {
                session: id,
                sender: coffee_engine::gateway::GATEWAY,
                stream: Stream::Session,
                seq: 0,
                body: Body::Purge,
            };
            let queue = self.replicas[r].queue.clone();
            self.broker.publish("gateway", &queue, envelope.encode());
        }
        self.sessions[s].purge = Purge::Published;
    }

    /// The gateway forwards a few results to the client, or acks what the client has written.
    fn step_results(&mut self, s: usize) -> Result<(), String> {
        let consumer = format!("gateway-results-{s}");
        if self.sessions[s].holding {
            self.broker.ack_all(&consumer);
            self.sessions[s].holding = false;
            return Ok(());
        }
        let queue = self.sessions[s].results_queue.clone();
        let max = self.rng.gen_range(1..=GROUP_MAX);
        let delivered = self.broker.deliver(&consumer, &queue, max, &mut self.rng);
        for message in &delivered {
            let envelope =
                Envelope::decode(&message.bytes).map_err(|e| format!("a result that does not decode: {e}"))?;
            let session = &mut self.sessions[s];
            let Stream::Results(_) = envelope.stream else {
                return Err(format!("a {:?} message on the results queue of {}", envelope.stream, short(session.id)));
            };
            let admission = match &envelope.body {
                Body::Eof { count } => session.tracker.admit_eof(envelope.stream, envelope.sender, *count),
                Body::Data(_) => session.tracker.admit_data(envelope.stream, envelope.sender, envelope.seq),
                Body::Purge => return Err("a purge on a results queue".to_owned()),
            };
            match (admission, envelope.body) {
                (Admission::Apply, Body::Data(Batch::Results(rows))) => {
                    session.lines.extend(rows.iter().map(|r| r.to_ndjson()));
                }
                (Admission::Apply | Admission::Duplicate, _) => {}
                (other, _) => {
                    return Err(format!(
                        "result {:?} #{} from {} of {} admitted as {other:?}",
                        envelope.stream,
                        envelope.seq,
                        envelope.sender,
                        short(session.id)
                    ))
                }
            }
        }
        self.sessions[s].holding = !delivered.is_empty();
        Ok(())
    }

    // --- Faults --------------------------------------------------------------------------------------------

    fn fault(&mut self) {
        let faults = self.options.faults;
        let mut kinds = Vec::new();
        if faults.crash {
            kinds.extend(["kill", "kill", "kill", "power"]);
        }
        if faults.broker {
            kinds.push("broker");
        }
        if faults.duplicate {
            kinds.extend(["duplicate", "duplicate"]);
        }
        if faults.gateway {
            kinds.push("gateway");
        }
        let Some(&kind) = kinds.choose(&mut self.rng) else { return };
        self.faults += 1;
        match kind {
            "kill" | "power" => {
                let i = self.rng.gen_range(0..self.replicas.len());
                if !matches!(self.replicas[i].phase, Phase::Down) {
                    self.crash_replica(i, kind == "power");
                }
            }
            "broker" => {
                self.note("the broker restarts: every replica loses it and exits".to_owned());
                self.broker.restart(&mut self.rng);
                for i in 0..self.replicas.len() {
                    if !matches!(self.replicas[i].phase, Phase::Down) {
                        self.crash_replica(i, false);
                    }
                }
                // The gateway saw no confirm for what it had not had confirmed: it publishes that again (a
                // purge too: the gateway records it before it starts, and finishes it when it starts again).
                for session in &mut self.sessions {
                    session.holding = false;
                    session.feeds.iter_mut().for_each(|f| f.sent = f.confirmed);
                    if session.purge == Purge::Published {
                        session.purge = Purge::Due;
                    }
                }
            }
            "duplicate" => {
                if let Some(queue) = self.broker.duplicate_one(&mut self.rng) {
                    self.note(format!("a message of {queue} duplicated"));
                }
            }
            _ => {
                // The gateway restarts: results it had not acked come back; each client resumes its upload
                // from an earlier mark of each file and sends the batches after it again.
                let mut marks = Vec::new();
                for (s, session) in self.sessions.iter_mut().enumerate() {
                    session.holding = false;
                    if session.purge == Purge::Published {
                        session.purge = Purge::Due;
                    }
                    self.broker.consumer_lost(&format!("gateway-results-{s}"), &mut self.rng);
                    for feed in &mut session.feeds {
                        let mark = self.rng.gen_range(0..=feed.confirmed.min(feed.eofs_from));
                        marks.push(format!("{} {}: {} of {}", short(session.id), feed.kind, mark, feed.sent));
                        (feed.sent, feed.confirmed) = (mark, mark);
                    }
                }
                self.note(format!("the gateway restarts; uploads resume from: {}", marks.join(", ")));
            }
        }
    }

    // --- The end -------------------------------------------------------------------------------------------

    fn check(&mut self) -> Result<(), String> {
        let mut problems = String::new();
        for session in &self.sessions {
            if session.leaves_after.is_some() {
                if session.purge != Purge::Done {
                    let _ = write!(problems, "abandoned session {} was never purged ", short(session.id));
                }
                continue;
            }
            let expected = &self.datasets[session.dataset].expected;
            let comparison = compare_lines(expected, &session.lines);
            if !comparison.all_equal() {
                let _ = write!(problems, "session {} differs from the reference: ", short(session.id));
                for query in comparison.queries.iter().filter(|q| !q.equal) {
                    let (missing, extra) = (query.missing_from_right_total, query.extra_in_right_total);
                    let _ = write!(problems, "{} ({missing} missing, {extra} extra) ", query.name);
                }
            }
        }
        let holding = self.broker.holding();
        if !holding.is_empty() {
            let _ = write!(problems, "queues still hold messages: {holding:?} ");
        }
        for r in &self.replicas {
            let left: Vec<String> = r
                .disk
                .paths()
                .into_iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .filter(|name| name != "finished.log")
                .collect();
            if !left.is_empty() || r.protocol.open_sessions() > 0 {
                let _ = write!(problems, "{} keeps session state: {left:?} ", r.name);
            }
        }
        if problems.is_empty() {
            self.note(
                "every session equals the reference; no queue holds a message; no session state is left".to_owned(),
            );
            Ok(())
        } else {
            Err(problems.trim_end().to_owned())
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Actor {
    /// Nothing but time passes (leases run out, unused queues expire).
    Wait,
    Replica(usize),
    Upload(usize),
    Results(usize),
}

fn short(id: SessionId) -> String {
    id.to_string().chars().take(8).collect()
}

/// A message as the trace shows it.
fn describe(bytes: &[u8]) -> String {
    match Envelope::decode(bytes) {
        Ok(e) => {
            let body = match &e.body {
                Body::Data(batch) => format!("{} rows", batch.len()),
                Body::Eof { count } => format!("EOF after {count}"),
                Body::Purge => "purge".to_owned(),
            };
            format!("{} {:?} #{} of {} ({body})", e.sender, e.stream, e.seq, short(e.session))
        }
        Err(e) => format!("undecodable ({e})"),
    }
}
