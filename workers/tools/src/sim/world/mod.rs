//! One seed's world: the replicas (the engine's protocol, stepped as its shell would), the gateway's input side
//! and the results side of each session, the broker, and the scheduler that picks who steps next and which
//! fault strikes.

use super::broker::{Message, QueueArgs, SimBroker};
use super::coverage::{Coverage, Path as Reached};
use super::{Dataset, Options, SHAPES};
use crate::compare::compare_lines;
use coffee_engine::gateway::progress::UploadLog;
use coffee_engine::gateway::results::Forward;
use coffee_engine::gateway::upload::Upload;
use coffee_engine::lease::results_queue_expiry;
use coffee_engine::operators::{with_operator, Operator, WithOperator};
use coffee_engine::runtime::{Outgoing, Protocol, Replica, ReplicaConfig, StageNode};
use coffee_engine::state::disk::{SimDisk, Tear};
use coffee_engine::topology::{QueueType, Topology};
use coffee_engine::tracker::Admission;
use coffee_model::model::FileKind;
use coffee_model::wire::{Body, Envelope, SessionId};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Records an event in the run's trace, formatting it only if the run keeps a trace (most runs do not: a
/// failing seed is run again with its trace on, and replays exactly).
macro_rules! note {
    ($world:expr, $($event:tt)+) => {
        if $world.tracing != Tracing::Off {
            let event = format!($($event)+);
            $world.record(event);
        }
    };
}

mod faults;
mod gateway;
mod monitors;
mod replica;

use gateway::{ClientFile, Purge, SimSession};
use monitors::SimMonitor;
use replica::{Exit, Phase, SimReplica};

/// The most deliveries a simulated replica takes as one group (small, so groups end often and faults land
/// between many of them).
const GROUP_MAX: usize = 8;
/// Events kept for a failing seed's trace (all of them with `full_trace`).
const TRACE_TAIL: usize = 300;

/// Which events a run keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tracing {
    Off,
    /// The last [`TRACE_TAIL`].
    Tail,
    All,
}

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
    /// The broker it ran on: its nodes and its queues' type.
    pub broker: String,
    /// The faults it injected.
    pub mix: String,
    /// How many steps it took to be quiet once the faults stopped.
    pub converged_after: u64,
    /// The run's events (the last few hundred, or all of them with `full_trace`).
    pub trace: Vec<String>,
    /// The recovery paths it reached.
    pub coverage: Coverage,
}

pub(super) struct World<'a> {
    seed: u64,
    rng: ChaCha8Rng,
    options: &'a Options,
    datasets: &'a [Dataset],
    shape: &'static str,
    topology: Topology,
    broker: SimBroker,
    /// The gateway's state folder (the sessions' upload logs).
    gateway_disk: SimDisk,
    replicas: Vec<SimReplica>,
    /// The last process id given (every process of every replica gets its own).
    next_pid: u32,
    /// Broker nodes that are down, and when each comes back.
    broker_back: BTreeMap<usize, u64>,
    /// The faults this seed injects.
    mix: faults::Mix,
    /// Connections of processes gone behind a partition, and when the broker notices each and drops it.
    zombies: Vec<(u64, String)>,
    /// The broker blocks every publisher until then (a memory or disk alarm).
    alarm_until: Option<u64>,
    /// Nodes the monitors asked to restart while the broker blocked publishers (none may be).
    restarts_in_alarm: Vec<String>,
    /// The gateway could not start (the broker refused it): it starts again then.
    gateway_down_until: Option<u64>,
    /// The broker nacks what the gateway has in flight: its next wait for confirms fails.
    gateway_nacked: bool,
    /// Who may step, found anew at every step (kept to spare an allocation a step).
    runnable: Vec<Actor>,
    announcer: gateway::Announcer,
    monitors: Vec<SimMonitor>,
    sessions: Vec<SimSession>,
    step: u64,
    faults: u64,
    coverage: Coverage,
    tracing: Tracing,
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
    pub(super) fn new(seed: u64, datasets: &'a [Dataset], options: &'a Options, tracing: Tracing) -> World<'a> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mix = faults::Mix::draw(options, &mut rng);
        let shape = SHAPES[rng.gen_range(0..SHAPES.len())];
        let mut topology = Topology::with_replicas("sim", shape).expect("a valid shape");
        // The broker: one node or a cluster of three, its queues classic or quorum, as the nodes accept them.
        let broker_nodes = if rng.gen_bool(0.5) { 1 } else { 3 };
        let mut queue_type = if rng.gen_bool(0.5) { QueueType::Classic } else { QueueType::Quorum };
        if coffee_engine::amqp::check_queue_type(broker_nodes, queue_type).is_err() {
            queue_type = QueueType::Quorum;
        }
        topology.queue_type = queue_type;
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
                    session_lease: lease,
                    group_max: GROUP_MAX,
                    min_free_bytes: 0,
                };
                let protocol = with_operator(stage, Build(config.clone()));
                SimReplica {
                    name: protocol.me().to_string().into(),
                    queue: protocol.input_queue(),
                    config,
                    stage,
                    disk: SimDisk::new(),
                    announced: 0,
                    child: 0,
                    opened: false,
                    restart_at: None,
                    crash_loop: Default::default(),
                    processes: Vec::new(),
                }
            })
            .collect();
        let sessions = (0..options.sessions + options.abandoned)
            .map(|i| {
                let id = SessionId::from_u128(rng.gen());
                let dataset = i % datasets.len();
                let files: Vec<ClientFile> = datasets[dataset]
                    .batches
                    .iter()
                    .map(|(kind, batches)| ClientFile {
                        kind: *kind,
                        batches: batches.len() as u64,
                        next: 0,
                        ended: false,
                    })
                    .collect();
                // Every batch, and each file's end.
                let frames: u64 = files.iter().map(|f| f.batches + 1).sum();
                let leaves_after = (i >= options.sessions).then(|| rng.gen_range(0..frames as usize));
                let forgotten = leaves_after.is_some() && rng.gen_bool(0.5);
                SimSession {
                    id,
                    dataset,
                    files,
                    upload: Upload::new(id, BTreeMap::new(), gateway::PROGRESS_EVERY),
                    pending: VecDeque::new(),
                    frames_sent: 0,
                    leaves_after,
                    forgotten,
                    purge: Purge::No,
                    results_queue: topology.results_queue(id),
                    forward: Forward::new(&topology, Vec::new()),
                    to_client: VecDeque::new(),
                    client_ack: None,
                    lines: Vec::new(),
                    received: Default::default(),
                    log: None,
                    ended: false,
                }
            })
            .collect();
        World {
            seed,
            rng,
            options,
            datasets,
            shape,
            topology,
            broker: SimBroker::new(broker_nodes, queue_type),
            gateway_disk: SimDisk::new(),
            replicas,
            next_pid: 0,
            broker_back: BTreeMap::new(),
            mix,
            zombies: Vec::new(),
            alarm_until: None,
            restarts_in_alarm: Vec::new(),
            gateway_down_until: None,
            gateway_nacked: false,
            runnable: Vec::new(),
            announcer: gateway::Announcer::Open,
            monitors: (0..monitors::MONITORS).map(SimMonitor::new).collect(),
            sessions,
            step: 0,
            faults: 0,
            coverage: Coverage::default(),
            tracing,
            trace: VecDeque::new(),
            base: tokio::time::Instant::from_std(std::time::Instant::now()),
        }
        .declared()
        .started()
        .watched()
    }

    /// A process of every replica, started by its orchestrator.
    fn started(mut self) -> Self {
        for i in 0..self.replicas.len() {
            self.replicas[i].child = self.start_process(i);
        }
        self
    }

    /// The monitors, started.
    fn watched(mut self) -> Self {
        (0..self.monitors.len()).for_each(|m| self.start_monitor(m));
        self
    }

    /// The gateway on the broker, and each session's results queue, declared as the gateway declares it
    /// (expiring once unused for the lease), with the gateway's consumer on it.
    fn declared(mut self) -> Self {
        let expiry = results_queue_expiry(Duration::from_millis(self.options.lease_steps)).as_millis() as u64;
        // The gateway starts first, and declares every queue of the topology.
        self.connect_gateway();
        for session in &mut self.sessions {
            let args = QueueArgs { expires: Some(expiry), ..QueueArgs::default() };
            let declared = self.broker.declare(gateway::GATEWAY, &session.results_queue, args, 0);
            declared.expect("every broker node is up at the start");
            // The gateway welcomes a client only once its session's log is durable.
            let log = UploadLog::create_on(&self.gateway_disk, Path::new(gateway::GATEWAY_DIR), session.id, 0);
            session.log = Some(log.expect("the gateway's simulated disk does not fail"));
        }
        (0..self.sessions.len()).for_each(|s| self.consume_results(s));
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

    /// Whether faults may still strike.
    fn faulting(&self) -> bool {
        self.step <= self.mix.until
    }

    fn record(&mut self, event: String) {
        if self.tracing == Tracing::Tail && self.trace.len() == TRACE_TAIL {
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
            broker: format!("{} broker node(s), {} queues", self.broker.nodes(), self.broker.queue_type().as_str()),
            mix: self.mix.to_string(),
            converged_after: self.step.saturating_sub(self.mix.until),
            trace: self.trace.into_iter().collect(),
            coverage: self.coverage,
        }
    }

    /// Steps until the sessions are done and the system is quiet, then checks the invariants.
    fn simulate(&mut self) -> Result<(), String> {
        let shape = self.shape;
        let sessions: Vec<String> = self.sessions.iter().map(|s| short(s.id)).collect();
        let broker = format!("{} broker node(s), {} queues", self.broker.nodes(), self.broker.queue_type().as_str());
        note!(self, "seed {} · shape {shape} · {broker} · sessions {}", self.seed, sessions.join(", "));
        note!(self, "faults: {}", self.mix);
        loop {
            if self.step >= self.mix.until + self.options.converge_steps {
                let (after, progress) = (self.options.converge_steps, self.progress());
                return Err(format!("not quiet {after} steps after the faults stopped (a liveness bug?): {progress}"));
            }
            self.step += 1;
            if self.step.is_multiple_of(self.announce_every()) {
                self.announce();
            }
            for queue in self.broker.expire(self.step) {
                self.coverage.reach(Reached::QueueExpired, 1);
                note!(self, "{queue} expired: nobody consumed it for a whole lease");
            }
            if self.alarm_until.is_some_and(|until| self.step >= until) {
                self.alarm_until = None;
                note!(self, "the broker's alarm clears: publishers go on");
            }
            self.keep_time();
            self.brokers_back();
            if self.faulting() && self.rng.gen_bool(self.mix.rate.min(1.0)) {
                self.fault()?;
                continue;
            }
            let mut runnable = std::mem::take(&mut self.runnable);
            self.runnable_into(&mut runnable);
            let chosen = runnable.choose(&mut self.rng).copied();
            self.runnable = runnable;
            let Some(actor) = chosen else { break };
            match actor {
                Actor::Wait => {}
                Actor::Monitor(m) => self.step_monitor(m),
                Actor::Process(i, pid) => self.step_process(i, pid),
                Actor::Upload(s) => self.step_upload(s)?,
                Actor::Results(s) => self.step_results(s)?,
            }
        }
        self.check()
    }

    /// What each session has received so far (and, for one still live, the queries it lacks), and which
    /// replicas still hold sessions, for a run that did not finish.
    fn progress(&self) -> String {
        let sessions: Vec<String> = self
            .sessions
            .iter()
            .map(|s| {
                let mut line = format!("{} ended={} lines={}", short(s.id), s.ended, s.lines.len());
                if !s.ended && s.leaves_after.is_none() {
                    let comparison = compare_lines(&self.datasets[s.dataset].expected, &s.lines);
                    for query in comparison.queries.iter().filter(|q| !q.equal) {
                        let _ = write!(line, " {} lacks {}", query.name, query.missing_from_right_total);
                    }
                }
                line
            })
            .collect();
        let holders: Vec<String> = self
            .replicas
            .iter()
            .filter(|r| r.open_sessions() > 0)
            .map(|r| format!("{} ({})", r.name, r.open_sessions()))
            .collect();
        let broker = self.broker.holding();
        format!("{}; broker holds {broker:?}; sessions open at {holders:?}", sessions.join(", "))
    }

    /// Who may step now; none once the run is over (no work left, nothing waiting, every process running).
    fn runnable_into(&self, actors: &mut Vec<Actor>) {
        actors.clear();
        let mut waiting = self.broker.expiring_idle() || !self.all_running() || !self.broker_back.is_empty();
        waiting |= !self.zombies.is_empty();
        if self.alarm_until.is_some() {
            // Every connection is blocked: nothing moves but time (and the monitors, blocked too).
            actors.push(Actor::Wait);
            actors.extend((0..self.monitors.len()).filter(|&m| self.monitor_due(m)).map(Actor::Monitor));
            return;
        }
        for (i, r) in self.replicas.iter().enumerate() {
            for process in r.processes.iter().filter(|p| p.running()) {
                // A process stuck on the broker, or cut off from it, waits for someone to notice.
                waiting |= process.stuck_since.is_some() || process.cut.is_some();
                let work = match process.phase {
                    Phase::WaitingLock => false,
                    Phase::Starting { at } => {
                        // Starting takes a while: time passes meanwhile.
                        waiting |= self.step < at;
                        self.step >= at
                    }
                    Phase::Running => match &process.again {
                        // Refused for now (a lock or a queue held): it tries again later.
                        Some((at, _)) => {
                            waiting |= self.step < *at;
                            self.step >= *at
                        }
                        None if process.waits_on_cut_link() => false,
                        None => {
                            let sessions = process.shell.protocol().open_sessions() > 0;
                            let lease_check = sessions && self.step >= process.next_lease_check;
                            process.due(self.step) || self.broker.ready(&r.queue) > 0 || lease_check
                        }
                    },
                };
                if work {
                    actors.push(Actor::Process(i, process.pid));
                }
            }
            // A replica holding a session is waiting, at least, for its lease to run out.
            waiting |= r.open_sessions() > 0;
        }
        for (s, session) in self.sessions.iter().enumerate() {
            let publishing = !session.pending.is_empty() || session.files.iter().any(|f| !f.ended);
            let purging = match session.purge {
                Purge::Due { at, .. } => {
                    waiting |= self.step < at;
                    self.step >= at
                }
                Purge::Running { .. } => true,
                _ => false,
            };
            if (publishing && matches!(session.purge, Purge::No)) || purging {
                actors.push(Actor::Upload(s));
            }
            // Nobody forwards the results of a session whose client left, or that is over.
            let forwarding = session.leaves_after.is_none() && !session.ended;
            let results_moving = !session.to_client.is_empty() || session.client_ack.is_some();
            if forwarding && (results_moving || self.broker.ready(&session.results_queue) > 0) {
                actors.push(Actor::Results(s));
            }
        }
        if waiting {
            actors.push(Actor::Wait);
        }
        // The monitors' clocks tick while anything goes on; they are not work that keeps the run going.
        if !actors.is_empty() {
            actors.extend((0..self.monitors.len()).filter(|&m| self.monitor_due(m)).map(Actor::Monitor));
        }
    }

    fn check(&mut self) -> Result<(), String> {
        let mut problems = String::new();
        for session in &self.sessions {
            if session.leaves_after.is_some() {
                if !matches!(session.purge, Purge::Done) {
                    let _ = write!(problems, "abandoned session {} was never purged ", short(session.id));
                }
                continue;
            }
            let dataset = &self.datasets[session.dataset];
            let mut lines = session.lines.clone();
            lines.sort_unstable();
            if lines == dataset.expected_sorted {
                continue;
            }
            let comparison = compare_lines(&dataset.expected, &session.lines);
            if !comparison.all_equal() {
                let _ = write!(problems, "session {} differs from the reference: ", short(session.id));
                for query in comparison.queries.iter().filter(|q| !q.equal) {
                    let (missing, extra) = (query.missing_from_right_total, query.extra_in_right_total);
                    let _ = write!(problems, "{} ({missing} missing, {extra} extra) ", query.name);
                }
            }
        }
        if !self.restarts_in_alarm.is_empty() {
            let _ = write!(
                problems,
                "restarts asked for while the broker blocked publishers: {:?} ",
                self.restarts_in_alarm
            );
        }
        let logs = UploadLog::ids_on(&self.gateway_disk, Path::new(gateway::GATEWAY_DIR));
        if !logs.is_empty() {
            let logs: Vec<String> = logs.into_iter().map(short).collect();
            let _ = write!(problems, "the gateway keeps upload logs of {logs:?} ");
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
                .filter(|name| !coffee_engine::state::BOOKKEEPING.contains(&name.as_str()))
                .collect();
            if !left.is_empty() || r.open_sessions() > 0 {
                let _ = write!(problems, "{} keeps session state: {left:?} ", r.name);
            }
        }
        if problems.is_empty() {
            note!(self, "every session equals the reference; no queue holds a message; no session state is left");
            Ok(())
        } else {
            Err(problems.trim_end().to_owned())
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Actor {
    /// Nothing but time passes (leases run out, unused queues expire, monitors tick).
    Wait,
    Monitor(usize),
    /// A process of a replica: (replica, pid).
    Process(usize, u32),
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
