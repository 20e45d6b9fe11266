//! A replica in the simulation: its folder, and the processes that run it. Each process performs the engine's
//! own shell (`coffee_engine::runtime::Shell`), the plan the runtime performs on RabbitMQ, one step at a time,
//! and can be killed or cut off between any two. A process claims the folder as the engine's incarnation claim
//! does (`coffee_engine::incarnation`): it announces itself in the folder's counter, then waits for the folder's
//! lock; an older process that sees the counter pass its number (at the shell's step-aside checks, or at its
//! watch's tick) exits without touching anything.

use super::super::broker::{QueueArgs, Refusal};
use super::*;
use coffee_engine::heartbeat::Heartbeat;
use coffee_engine::ownership::{self, Claim};
use coffee_engine::runtime::{Retirement, Shell, Step};
use coffee_ops::orchestrator::CrashLoop;

/// How often (steps) a running process looks at its folder's counter in the background (the real watch: 250 ms).
const WATCH_EVERY: u64 = 25;
/// How long a process takes to start (reach the broker, declare its queues) once it holds its folder.
const START_TIME: std::ops::RangeInclusive<u64> = 5..=50;
/// How long a process that found no broker node up waits before it tries again.
const CONNECT_RETRY: u64 = 20;
/// How long a process refused an exclusive consumer waits before it tries again (the runtime: 500 ms).
const CONSUME_RETRY: u64 = 50;
/// Real milliseconds a step stands for, for the supervisor's and the monitors' times (a tenth of the real).
pub(super) const MS_PER_STEP: u64 = 10;

/// Where a process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Announced in the folder; waits, silent, for an older process to let go of the folder's lock.
    WaitingLock,
    /// Holds the lock: reaches the broker, declares the queues and opens the folder at step `at` (a start takes
    /// a while).
    Starting { at: u64 },
    /// Performs its shell's steps, takes groups and looks at its leases.
    Running,
}

/// One process of a replica.
pub(super) struct SimProcess {
    pub(super) pid: u32,
    /// Its name on the broker.
    client: std::rc::Rc<str>,
    /// Its number in the folder's incarnation counter.
    pub(super) number: u32,
    pub(super) shell: Shell<Box<dyn Protocol>>,
    pub(super) phase: Phase,
    /// When it started (for its supervisor's crash-loop count).
    pub(super) started: u64,
    /// The group of deliveries its shell is carrying out.
    pub(super) group: Vec<Message>,
    /// A step the broker refused for now (another process holds the replica's lock, or its queue
    /// exclusively): it tries it again then.
    pub(super) again: Option<(u64, Step)>,
    /// Its heartbeat runs (from the shell's [`Step::Open`] on).
    pub(super) beating: bool,
    /// The broker cancelled its consumer: its main loop sees the consumer end when it next waits for input.
    pub(super) cancelled: bool,
    pub(super) next_lease_check: u64,
    pub(super) next_beat: u64,
    pub(super) next_watch: u64,
    /// Stopped (SIGSTOP) until then: it neither steps nor beats, and keeps what it was delivered.
    pub(super) paused_until: Option<u64>,
    /// Its main loop is stuck on the broker for good since then (a confirm never settled): it steps no more,
    /// while its heartbeat task beats on and says how long it has been stuck.
    pub(super) stuck_since: Option<u64>,
    /// Cut off from its broker node by a network partition.
    pub(super) cut: Option<Cut>,
    /// What it published behind a two-way cut: it reaches the broker if the partition heals in time.
    pub(super) held_back: Vec<(String, Outgoing)>,
    /// The broker nacked what it has in flight: its next wait for confirms fails, and it exits.
    pub(super) nacked: bool,
    /// A stray: a process of the replica on a folder of its own (another host's, or a state folder set apart),
    /// started by hand beside the replica's own; it ends by then unless something ends it sooner.
    pub(super) stray: Option<Stray>,
}

/// A partition between a process and its broker node. Each side notices on its own, when its heartbeat timeout
/// runs out: the process then exits to be restarted; the broker then drops the connection (its consumer, its
/// lock, its unacked deliveries), and until then a newer process of the replica waits for the lock. If the
/// partition heals before either side noticed, the process goes on as if nothing happened.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cut {
    /// Its own frames (heartbeats included) still reach the broker; only the broker's answers are lost.
    pub(super) one_way: bool,
    pub(super) since: u64,
    pub(super) heals_at: u64,
    pub(super) process_notices_at: u64,
    pub(super) broker_notices_at: u64,
    /// The broker dropped the connection already.
    pub(super) dropped: bool,
}

/// The way from a process to the broker.
enum Link {
    Open,
    /// Behind a partition, TCP holds what it sends until the link heals (then it arrives) or the connection dies.
    HeldBack,
    Closed,
}

/// What a stray process has of its own.
pub(super) struct Stray {
    pub(super) disk: SimDisk,
    /// Its operator stops it then.
    pub(super) until: u64,
}

impl SimProcess {
    /// Its name on the broker, as a consumer and a publisher (`q3_agg-0#17`).
    pub(super) fn client(&self) -> std::rc::Rc<str> {
        self.client.clone()
    }

    /// Whether it holds the folder and is not paused.
    pub(super) fn running(&self) -> bool {
        self.phase != Phase::WaitingLock && self.paused_until.is_none()
    }

    /// Whether it is cut off and its next step needs an answer from the broker, which the partition withholds
    /// (a confirm, a delivery, a declaration or a consumer): its main loop waits there until it notices.
    pub(super) fn waits_on_cut_link(&self) -> bool {
        if self.cut.is_none() {
            return false;
        }
        if self.again.is_some() {
            return true;
        }
        matches!(self.shell.peek_step(), None | Some(Step::ConfirmAll | Step::Claim | Step::Consume))
    }

    /// What becomes of what it sends now: it reaches the broker, unless a two-way cut holds it back (in its
    /// socket's buffer, until the partition heals) or the broker dropped the connection (lost).
    fn link(&self) -> Link {
        match self.cut {
            None => Link::Open,
            Some(cut) if cut.dropped => Link::Closed,
            Some(cut) if cut.one_way => Link::Open,
            Some(_) => Link::HeldBack,
        }
    }

    /// Whether it has something to do at `step`.
    pub(super) fn due(&self, step: u64) -> bool {
        match self.phase {
            Phase::WaitingLock => false,
            Phase::Starting { at } => step >= at,
            Phase::Running if self.stuck_since.is_some() || self.waits_on_cut_link() => false,
            Phase::Running => match &self.again {
                Some((at, _)) => step >= *at,
                None => !self.shell.idle() || self.cancelled,
            },
        }
    }
}

/// A replica of a stage: its folder and its processes (one, or two while a newer one waits for the folder).
pub(super) struct SimReplica {
    pub(super) name: std::rc::Rc<str>,
    pub(super) queue: String,
    /// Builds the protocol a new process runs.
    pub(super) config: ReplicaConfig,
    pub(super) stage: coffee_model::node::StageKind,
    pub(super) disk: SimDisk,
    /// The folder's incarnation counter: the number of the newest process that announced itself.
    pub(super) announced: u32,
    /// The process its orchestrator started last, which a restart request is checked against.
    pub(super) child: u32,
    /// A process of its own (not a stray) opened its folder once.
    pub(super) opened: bool,
    /// Its supervisor starts it again then: it exited by itself after losing the broker.
    pub(super) restart_at: Option<u64>,
    pub(super) crash_loop: CrashLoop,
    pub(super) processes: Vec<SimProcess>,
}

impl SimReplica {
    /// The process holding the replica's folder (running or paused), if any.
    pub(super) fn holder(&self) -> Option<&SimProcess> {
        self.processes.iter().find(|p| p.stray.is_none() && p.phase != Phase::WaitingLock)
    }

    /// Whether exactly one process runs it, started, holding its folder, and none is paused or waiting.
    pub(super) fn running(&self) -> bool {
        self.processes.len() == 1 && self.processes[0].running() && self.processes[0].phase == Phase::Running
    }

    /// Whether its process is down (none holds or waits for its folder).
    pub(super) fn down(&self) -> bool {
        self.processes.is_empty()
    }

    /// Sessions open in the process holding the folder.
    pub(super) fn open_sessions(&self) -> usize {
        self.holder().map_or(0, |p| p.shell.protocol().open_sessions())
    }

    /// The process `pid`'s place in the list.
    fn at(&self, pid: u32) -> Option<usize> {
        self.processes.iter().position(|p| p.pid == pid)
    }
}

impl World<'_> {
    /// One step of the process `pid` of replica `i`.
    pub(super) fn step_process(&mut self, i: usize, pid: u32) {
        let Some(p) = self.replicas[i].at(pid) else { return };
        match self.replicas[i].processes[p].phase {
            Phase::WaitingLock => {}
            Phase::Starting { .. } => self.start(i, p),
            Phase::Running => self.step_running(i, p),
        }
    }

    /// A process that holds its folder starts: it reaches a broker node (the one it picks first, else the next
    /// one up) and declares every queue of the topology; then its shell plans the rest (claim the replica, open
    /// the folder). A broker that refuses a declaration (a classic queue whose home node is down) makes it exit
    /// to be restarted.
    fn start(&mut self, i: usize, p: usize) {
        let (name, pid) = (self.replicas[i].name.clone(), self.replicas[i].processes[p].pid);
        let client = self.replicas[i].processes[p].client();
        let first = self.rng.gen_range(0..self.broker.nodes());
        let Some(node) = self.broker.connect(&client, first) else {
            // No broker node answers: it tries again, for as long as it takes.
            self.replicas[i].processes[p].phase = Phase::Starting { at: self.step + CONNECT_RETRY };
            return;
        };
        if node != first {
            self.coverage.reach(Reached::Failover, 1);
        }
        for queue in self.topology.all_queues().into_iter().chain(self.topology.dead_letter_queues()) {
            if let Err(refusal) = self.broker.declare(&client, &queue, QueueArgs::default(), self.step) {
                note!(self, "{name} (process {pid}) is refused declaring {queue}: {refusal:?}; it exits");
                self.coverage.reach(Reached::Refused, 1);
                return self.end_process(i, pid, Exit::LostBroker);
            }
        }
        let process = &mut self.replicas[i].processes[p];
        process.phase = Phase::Running;
        process.shell.start();
        note!(self, "{name} (process {pid}) reached broker node {node}");
    }

    /// The folder a process runs on: the replica's, or a stray's own.
    fn disk_of(&self, i: usize, p: usize) -> SimDisk {
        match &self.replicas[i].processes[p].stray {
            Some(stray) => stray.disk.clone(),
            None => self.replicas[i].disk.clone(),
        }
    }

    /// Claims the replica as the runtime does (`coffee_engine::ownership`): its lock (an exclusive queue; a
    /// process waits while another holds it), then the record of the folder that holds its state, decided by
    /// the same rule. A process refused exits without publishing or consuming anything.
    fn claim(&mut self, i: usize, p: usize) {
        let (name, pid) = (self.replicas[i].name.clone(), self.replicas[i].processes[p].pid);
        let client = self.replicas[i].processes[p].client();
        let (stage, replica) = (self.replicas[i].stage, self.replicas[i].config.replica);
        let lock = self.topology.lock_queue(stage, replica);
        if let Err(refusal) = self.broker.declare_exclusive(&client, &lock) {
            self.coverage.reach(Reached::LockWaited, 1);
            note!(self, "{name} (process {pid}) waits for the replica's lock: {refusal:?}");
            self.replicas[i].processes[p].again = Some((self.step + CONSUME_RETRY, Step::Claim));
            return;
        }
        self.replicas[i].processes[p].again = None;
        let folder = match self.replicas[i].processes[p].shell.protocol().folder_id(&self.disk_of(i, p)) {
            Ok(folder) => folder,
            Err(e) => {
                note!(self, "{name} (process {pid}) cannot read its folder's id: {e}");
                return self.end_process(i, pid, Exit::Killed);
            }
        };
        let record = self.topology.owner_queue(stage, replica);
        match ownership::decide(self.broker.owner(&record), folder) {
            Claim::Recorded => self.broker.record_owner(&record, folder),
            Claim::Owner => {}
            Claim::Refused { .. } => {
                note!(self, "{name} (process {pid}) is refused: the replica's state is in another folder");
                self.coverage.reach(Reached::ClaimRefused, 1);
                self.end_process(i, pid, Exit::Refused);
            }
        }
    }

    /// Opens the folder (after its heartbeat started).
    fn open(&mut self, i: usize, p: usize) {
        let (name, pid) = (self.replicas[i].name.clone(), self.replicas[i].processes[p].pid);
        let (now, every, disk) = (self.now(), self.announce_every(), Arc::new(self.disk_of(i, p)));
        let r = &mut self.replicas[i];
        let process = &mut r.processes[p];
        r.opened |= process.stray.is_none();
        process.beating = true;
        match process.shell.open(disk, now) {
            Ok(recovery) => {
                process.next_lease_check = self.step + every;
                self.coverage.reach(Reached::ReplayFromLog, recovery.records);
                self.coverage.reach(Reached::ReplayFromSnapshot, recovery.snapshots);
                let (sessions, records) = (recovery.sessions, recovery.records);
                note!(
                    self,
                    "{name} (process {pid}) opened its folder: {sessions} sessions, {records} records replayed"
                );
            }
            Err(e) => {
                note!(self, "{name} (process {pid}) failed to open its folder: {e}");
                self.end_process(i, pid, Exit::Killed);
            }
        }
    }

    /// Tries to consume the replica's queue as its only consumer (the runtime's `consume_exclusively`): a
    /// refusal because another consumer holds it waits and tries again; one because the queue cannot serve
    /// makes the process exit to be restarted.
    fn consume(&mut self, i: usize, p: usize) {
        let (name, pid) = (self.replicas[i].name.clone(), self.replicas[i].processes[p].pid);
        let (client, queue) = (self.replicas[i].processes[p].client(), self.replicas[i].queue.clone());
        match self.broker.consume(&client, &queue, true) {
            Ok(()) => self.replicas[i].processes[p].again = None,
            Err(Refusal::AccessRefused(why)) => {
                note!(self, "{name} (process {pid}) waits to consume: {why}");
                self.replicas[i].processes[p].again = Some((self.step + CONSUME_RETRY, Step::Consume));
            }
            Err(refusal) => {
                note!(self, "{name} (process {pid}) cannot consume ({refusal:?}): it exits");
                self.coverage.reach(Reached::Refused, 1);
                self.end_process(i, pid, Exit::LostBroker);
            }
        }
    }

    /// The next step of a running process's shell; with none planned, a look at its leases when due, or a
    /// group of deliveries.
    fn step_running(&mut self, i: usize, p: usize) {
        let (name, pid) = (self.replicas[i].name.clone(), self.replicas[i].processes[p].pid);
        let client = self.replicas[i].processes[p].client();
        if self.replicas[i].processes[p].waits_on_cut_link() {
            // Behind a partition its main loop goes on with what it holds (handling, publishing into the void,
            // writing its folder) and stops at the first step that needs the broker's answer.
            return;
        }
        if let Some((_, again)) = self.replicas[i].processes[p].again.take() {
            return match again {
                Step::Claim => self.claim(i, p),
                _ => self.consume(i, p),
            };
        }
        if self.replicas[i].processes[p].shell.idle() && self.replicas[i].processes[p].cancelled {
            // Its consumer ended: the main loop returns, and the process exits to be restarted.
            note!(self, "{name} (process {pid}) sees its consumer cancelled: it exits");
            return self.end_process(i, pid, Exit::LostBroker);
        }
        let Some(step) = self.replicas[i].processes[p].shell.next_step() else {
            let (now, step, every) = (self.now(), self.step, self.announce_every());
            let process = &mut self.replicas[i].processes[p];
            if step >= process.next_lease_check {
                process.next_lease_check = step + every;
                process.shell.check_leases(now);
                return;
            }
            let max = self.rng.gen_range(1..=GROUP_MAX);
            let queue = self.replicas[i].queue.clone();
            let group = self.broker.deliver(&client, &queue, max, &mut self.rng);
            if !group.is_empty() {
                let process = &mut self.replicas[i].processes[p];
                process.shell.take_group(group.len());
                process.group = group;
            }
            return;
        };
        match step {
            Step::Handle(d) => {
                let process = &mut self.replicas[i].processes[p];
                let message = process.group[d].clone();
                process.shell.handle(&message.bytes);
                // What it sends is published in the same step, as the runtime publishes it straight after
                // handling; now and then the process dies between two of those publishes.
                let mut outbox = Vec::new();
                while let Some(Step::Publish { .. }) = process.shell.peek_step() {
                    let Some(Step::Publish { queue, out }) = process.shell.next_step() else { unreachable!() };
                    outbox.push((queue, out));
                }
                self.coverage.reach(Reached::Redelivery, u64::from(message.redelivered));
                let redelivered = if message.redelivered { " (redelivered)" } else { "" };
                note!(self, "{name} handles {}{redelivered}: {} out", describe(&message.bytes), outbox.len());
                if outbox.len() > 1 && self.faulting() && self.mix.crashes() && self.rng.gen_bool(0.02) {
                    let sent = self.rng.gen_range(0..outbox.len());
                    self.faults += 1;
                    note!(self, "{name} dies after publishing {sent} of them");
                    self.publish_from(i, p, outbox.into_iter().take(sent).collect());
                    return self.end_process(i, pid, Exit::Killed);
                }
                self.publish_from(i, p, outbox);
            }
            Step::Publish { queue, out } => self.publish_from(i, p, vec![(queue, out)]),
            Step::ConfirmAll if self.replicas[i].processes[p].nacked => {
                // The runtime's wait for confirms fails with a nack: the process exits, to be restarted.
                self.broker.nack(&client, &mut self.rng);
                self.coverage.reach(Reached::Nacked, 1);
                note!(self, "{name} (process {pid}) is nacked: it exits");
                self.end_process(i, pid, Exit::LostBroker);
            }
            Step::ConfirmAll if self.broker.connection(&client).is_none() => {
                // The broker closed its connection: the wait for confirms fails, and the process exits.
                note!(self, "{name} (process {pid}) waits for confirms on a closed connection: it exits");
                self.end_process(i, pid, Exit::LostBroker);
            }
            Step::ConfirmAll => self.broker.confirm(&client),
            Step::StepAsideIfReplaced => {
                if self.replaced(i, p) {
                    self.coverage.reach(Reached::SteppedAside, 1);
                    note!(self, "{name} (process {pid}) sees a newer incarnation: it steps aside");
                    self.end_process(i, pid, Exit::SteppedAside);
                }
            }
            Step::Commit => {
                // Now and then the process dies halfway through the commit, after a few disk operations.
                let halfway = self.faulting() && self.mix.crashes() && self.rng.gen_bool(0.05);
                if halfway {
                    let ops = self.rng.gen_range(0..6);
                    self.replicas[i].disk.fail_after(Some(ops));
                }
                let now = self.now();
                // (A commit that did fewer operations leaves the rest armed: the process dies at a later one.)
                let committed = self.replicas[i].processes[p].shell.commit(now);
                if let Ok(committed) = &committed {
                    self.coverage.reach(Reached::DuplicateDropped, committed.duplicates as u64);
                    self.coverage.reach(Reached::Purge, committed.purged as u64);
                }
                if let Err(e) = committed {
                    self.faults += 1;
                    self.coverage.reach(Reached::DeathMidCommit, 1);
                    note!(self, "{name} dies halfway through its commit ({e})");
                    let exit = if self.rng.gen_bool(0.5) { Exit::PowerCut } else { Exit::Killed };
                    self.end_process(i, pid, exit);
                }
            }
            Step::Ack => {
                self.broker.ack_all(&client);
                self.replicas[i].processes[p].group.clear();
            }
            Step::Claim => self.claim(i, p),
            Step::Open => self.open(i, p),
            Step::Consume => self.consume(i, p),
            Step::Retire { session, why } => {
                if let Err(e) = self.replicas[i].processes[p].shell.retire(session) {
                    note!(self, "{name} died retiring {}: {e}", short(session));
                    return self.end_process(i, pid, Exit::Killed);
                }
                let path = match why {
                    Retirement::FinishedAgain => Reached::FinishedAgain,
                    Retirement::LeaseExpired => Reached::LeaseExpiry,
                };
                self.coverage.reach(path, 1);
                note!(self, "{name} retired {} ({why:?})", short(session));
            }
        }
    }

    /// Whether process `p` of replica `i` was replaced: a newer one announced itself in its folder (a stray's
    /// folder is its own: nobody else announces there).
    fn replaced(&self, i: usize, p: usize) -> bool {
        let process = &self.replicas[i].processes[p];
        process.stray.is_none() && process.number < self.replicas[i].announced
    }

    /// What process `p` of replica `i` publishes: held back behind a two-way cut, lost (and never confirmed)
    /// once the broker closed its connection.
    fn publish_from(&mut self, i: usize, p: usize, outbox: Vec<(String, Outgoing)>) {
        let process = &mut self.replicas[i].processes[p];
        let publisher = process.client();
        let link = match process.link() {
            Link::Open if self.broker.connection(&publisher).is_none() => Link::Closed,
            link => link,
        };
        match link {
            Link::Open => self.publish(&publisher, outbox),
            Link::HeldBack => process.held_back.extend(outbox),
            Link::Closed if outbox.is_empty() => {}
            Link::Closed => {
                self.coverage.reach(Reached::PublishedIntoVoid, 1);
                note!(self, "{publisher} publishes {} message(s) that never reach the broker", outbox.len());
            }
        }
    }

    pub(super) fn publish(&mut self, publisher: &str, outbox: Vec<(String, Outgoing)>) {
        for (queue, out) in outbox {
            let bytes = match out {
                Outgoing::Send { envelope, .. } => envelope.encode(),
                Outgoing::SetAside { bytes, why } => {
                    note!(self, "{publisher} sets a message aside: {why}");
                    bytes
                }
            };
            self.broker.publish(publisher, &queue, bytes);
        }
    }

    /// A new process of replica `i`: it announces itself in the folder and waits for its lock. Returns its pid.
    pub(super) fn start_process(&mut self, i: usize) -> u32 {
        self.next_pid += 1;
        let pid = self.next_pid;
        let r = &mut self.replicas[i];
        r.announced += 1;
        let protocol = with_operator(r.stage, Build(r.config.clone()));
        let lease = Duration::from_millis(self.options.lease_steps);
        r.processes.push(SimProcess {
            pid,
            client: format!("{}#{pid}", r.name).into(),
            number: r.announced,
            shell: Shell::new(protocol, lease),
            phase: Phase::WaitingLock,
            started: self.step,
            group: Vec::new(),
            again: None,
            cancelled: false,
            beating: false,
            next_lease_check: 0,
            next_beat: self.step,
            next_watch: self.step + WATCH_EVERY,
            paused_until: None,
            stuck_since: None,
            cut: None,
            held_back: Vec::new(),
            nacked: false,
            stray: None,
        });
        self.take_lock(i);
        pid
    }

    /// A stray process of replica `i`, on an empty folder of its own, started beside the replica's own
    /// process; its operator stops it after `lifetime` steps. Returns its pid.
    pub(super) fn start_stray(&mut self, i: usize, lifetime: u64) -> u32 {
        self.next_pid += 1;
        let pid = self.next_pid;
        let at = self.step + self.rng.gen_range(START_TIME);
        let r = &mut self.replicas[i];
        let protocol = with_operator(r.stage, Build(r.config.clone()));
        let lease = Duration::from_millis(self.options.lease_steps);
        r.processes.push(SimProcess {
            pid,
            client: format!("{}#{pid}", r.name).into(),
            number: 1,
            shell: Shell::new(protocol, lease),
            phase: Phase::Starting { at },
            started: self.step,
            group: Vec::new(),
            again: None,
            cancelled: false,
            beating: false,
            next_lease_check: 0,
            next_beat: self.step,
            next_watch: self.step + WATCH_EVERY,
            paused_until: None,
            stuck_since: None,
            cut: None,
            held_back: Vec::new(),
            nacked: false,
            stray: Some(Stray { disk: SimDisk::new(), until: self.step + lifetime }),
        });
        pid
    }

    /// Whoever waits longest gets the folder's lock once nobody holds it, and starts.
    fn take_lock(&mut self, i: usize) {
        let at = self.step + self.rng.gen_range(START_TIME);
        let r = &mut self.replicas[i];
        if r.holder().is_none() {
            if let Some(next) = r.processes.iter_mut().find(|p| p.stray.is_none()) {
                next.phase = Phase::Starting { at };
            }
        }
    }

    /// The process `pid` of replica `i` ends: its unacked deliveries return to the queue, and, on a power cut,
    /// what its folder had not fsynced may be lost or torn. A process waiting for the folder gets it.
    pub(super) fn end_process(&mut self, i: usize, pid: u32, exit: Exit) {
        let Some(p) = self.replicas[i].at(pid) else { return };
        let r = &mut self.replicas[i];
        let process = r.processes.remove(p);
        let disk = process.stray.as_ref().map_or(&r.disk, |stray| &stray.disk);
        disk.fail_after(None);
        if exit == Exit::PowerCut {
            let rng = &mut self.rng;
            disk.crash(|_| match rng.gen_range(0..3) {
                0 => Tear::Nothing,
                1 => Tear::Everything,
                _ => Tear::Prefix(rng.gen_range(0..64)),
            });
        }
        let client = process.client();
        let name = r.name.clone();
        // Its supervisor counts the exits it made by itself soon after a start, and restarts its own child at
        // once when it lost the broker (backing off a crash loop); the others are left to the monitors.
        let ran_for = Duration::from_millis((self.step - process.started) * MS_PER_STEP);
        r.crash_loop.exited(matches!(exit, Exit::LostBroker | Exit::SteppedAside), ran_for);
        if exit == Exit::LostBroker && pid == r.child {
            let backoff = r.crash_loop.backoff().as_millis() as u64 / MS_PER_STEP;
            r.restart_at = Some(self.step + backoff);
        }
        // Behind a partition the broker learns of it only when its own heartbeat timeout runs out: until then
        // the connection, its consumer, its lock and its unacked deliveries live on.
        match process.cut.filter(|cut| !cut.dropped) {
            Some(cut) => self.zombies.push((cut.broker_notices_at, client.to_string())),
            None => self.drop_connection(&client),
        }
        let how = match exit {
            Exit::Killed => "killed",
            Exit::PowerCut => "killed, its machine cut off",
            Exit::SteppedAside => "gone",
            Exit::LostBroker => "exits: it lost the broker",
            Exit::Stopped => "stopped by its operator",
            Exit::Refused => "exits: refused the replica",
        };
        note!(self, "{name} (process {pid}) {how}");
        self.take_lock(i);
    }

    /// The broker drops a client's connection: its consumers detach, its lock is freed, and what it had not
    /// acked returns. (What it published and had not had confirmed stays at the broker's mercy.)
    pub(super) fn drop_connection(&mut self, client: &str) {
        for queue in self.broker.disconnect(client, self.step, &mut self.rng) {
            self.coverage.reach(Reached::DeliveryLimit, 1);
            note!(self, "a message of {queue} was returned once too often: past its delivery limit");
        }
    }

    /// Partitions that heal or that a side notices now, and connections of processes gone behind one that the
    /// broker notices now.
    fn keep_partitions(&mut self, i: usize) {
        if self.replicas[i].processes.iter().all(|p| p.cut.is_none()) {
            return;
        }
        let step = self.step;
        let name = self.replicas[i].name.clone();
        let cut: Vec<(u32, Cut)> =
            self.replicas[i].processes.iter().filter_map(|p| p.cut.map(|c| (p.pid, c))).collect();
        for (pid, cut) in cut {
            let client = format!("{name}#{pid}");
            if !cut.dropped && step >= cut.broker_notices_at.min(cut.heals_at).min(cut.process_notices_at) {
                if step >= cut.heals_at && step < cut.broker_notices_at.min(cut.process_notices_at) {
                    self.coverage.reach(Reached::PartitionHealed, 1);
                    note!(self, "{name} (process {pid}): the partition heals before either side noticed it");
                    self.set_cut(i, pid, None);
                    // What TCP held back arrives now, late but whole.
                    if let Some(p) = self.replicas[i].at(pid) {
                        let held_back = std::mem::take(&mut self.replicas[i].processes[p].held_back);
                        self.publish(&client, held_back);
                    }
                    continue;
                }
                if step >= cut.broker_notices_at && step < cut.process_notices_at {
                    note!(self, "the broker drops the connection of {name} (process {pid}), cut off");
                    self.drop_connection(&client);
                    self.set_cut(i, pid, Some(Cut { dropped: true, ..cut }));
                    if let Some(p) = self.replicas[i].at(pid) {
                        let lost = std::mem::take(&mut self.replicas[i].processes[p].held_back);
                        if !lost.is_empty() {
                            self.coverage.reach(Reached::PublishedIntoVoid, 1);
                            note!(self, "{client}: {} message(s) it published die with the connection", lost.len());
                        }
                    }
                    continue;
                }
            }
            // The process notices (its heartbeat timeout, or a healed link to a connection the broker dropped).
            if step >= cut.process_notices_at || (cut.dropped && step >= cut.heals_at) {
                note!(self, "{name} (process {pid}) notices it lost the broker");
                self.end_process(i, pid, Exit::LostBroker);
            }
        }
    }

    fn set_cut(&mut self, i: usize, pid: u32, cut: Option<Cut>) {
        if let Some(p) = self.replicas[i].at(pid) {
            self.replicas[i].processes[p].cut = cut;
        }
    }

    /// The processes' background work at every step: the supervisor's restarts that are due, beats, pauses
    /// that end, partitions, and the incarnation watch.
    pub(super) fn keep_replicas(&mut self) {
        let step = self.step;
        let due: Vec<String> = self.zombies.iter().filter(|(at, _)| step >= *at).map(|(_, c)| c.clone()).collect();
        self.zombies.retain(|(at, _)| step < *at);
        for client in due {
            note!(self, "the broker drops the connection of {client}, gone behind a partition");
            self.drop_connection(&client);
        }
        for i in 0..self.replicas.len() {
            if self.replicas[i].restart_at.is_some_and(|at| step >= at) {
                self.replicas[i].restart_at = None;
                let pid = self.start_process(i);
                self.replicas[i].child = pid;
                note!(
                    self,
                    "{} restarted by its supervisor (process {pid}): it had lost the broker",
                    self.replicas[i].name
                );
            }
            let mut beats = Vec::new();
            let mut stepping_aside = Vec::new();
            let stopped = |r: &SimReplica| {
                r.processes.iter().find(|p| p.stray.as_ref().is_some_and(|s| step >= s.until)).map(|p| p.pid)
            };
            while let Some(pid) = stopped(&self.replicas[i]) {
                self.end_process(i, pid, Exit::Stopped);
            }
            self.keep_partitions(i);
            let r = &mut self.replicas[i];
            for process in &mut r.processes {
                if process.paused_until.is_some_and(|until| step >= until) {
                    process.paused_until = None;
                }
                if !process.running() {
                    continue;
                }
                // Beats come from their own task, once the process opens its folder; behind a partition they reach
                // the broker only one way out.
                let cut_off = process.cut.is_some_and(|cut| !cut.one_way || cut.dropped);
                if process.beating && step >= process.next_beat && !cut_off {
                    process.next_beat = step + monitors::BEAT_EVERY;
                    let mut beat = Heartbeat::quiet(&r.name, process.pid, 0);
                    // Its main loop waits on the broker when a cut falls mid-group.
                    let mid_group = !process.shell.idle();
                    let waiting = process.stuck_since.or(process.cut.filter(|_| mid_group).map(|cut| cut.since));
                    beat.stuck_ms = waiting.map(|since| step.saturating_sub(since));
                    beats.push(beat);
                }
                if step >= process.next_watch {
                    process.next_watch = step + WATCH_EVERY;
                    if process.stray.is_none() && process.number < r.announced {
                        stepping_aside.push(process.pid);
                    }
                }
            }
            beats.into_iter().for_each(|beat| self.send_beat(beat));
            for pid in stepping_aside {
                self.coverage.reach(Reached::SteppedAside, 1);
                note!(self, "{} (process {pid}) sees a newer incarnation at its watch's tick", self.replicas[i].name);
                self.end_process(i, pid, Exit::SteppedAside);
            }
        }
    }
}

/// How a process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exit {
    /// SIGKILL: what it buffered is lost; its unacked input returns.
    Killed,
    /// Its machine cut off: what it wrote and did not fsync is lost or torn, too.
    PowerCut,
    /// It saw a newer incarnation and exited without touching anything.
    SteppedAside,
    /// It lost the broker and exited (code 75) to be restarted at once.
    LostBroker,
    /// Its operator stopped it (a stray).
    Stopped,
    /// The replica's state is in another folder: it exited without serving it.
    Refused,
}
