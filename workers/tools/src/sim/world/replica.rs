//! A replica in the simulation: its folder, and the processes that run it. Each process performs the engine's
//! own shell (`coffee_engine::runtime::Shell`), the plan the runtime performs on RabbitMQ, one step at a time,
//! and can be killed or cut off between any two. A process claims the folder as the engine's incarnation claim
//! does (`coffee_engine::incarnation`): it announces itself in the folder's counter, then waits for the folder's
//! lock; an older process that sees the counter pass its number (at the shell's step-aside checks, or at its
//! watch's tick) exits without touching anything.

use super::*;
use coffee_engine::heartbeat::Heartbeat;
use coffee_engine::runtime::{Retirement, Shell, Step};

/// How often (steps) a running process looks at its folder's counter in the background (the real watch: 250 ms).
const WATCH_EVERY: u64 = 25;

/// Where a process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Announced in the folder; waits, silent, for an older process to let go of the folder's lock.
    WaitingLock,
    /// Holds the lock: opens the folder next.
    Starting,
    /// Performs its shell's steps, takes groups and looks at its leases.
    Running,
}

/// One process of a replica.
pub(super) struct SimProcess {
    pub(super) pid: u32,
    /// Its number in the folder's incarnation counter.
    pub(super) number: u32,
    pub(super) shell: Shell<Box<dyn Protocol>>,
    pub(super) phase: Phase,
    /// The group of deliveries its shell is carrying out.
    pub(super) group: Vec<Message>,
    pub(super) next_lease_check: u64,
    pub(super) next_beat: u64,
    pub(super) next_watch: u64,
    /// Stopped (SIGSTOP) until then: it neither steps nor beats, and keeps what it was delivered.
    pub(super) paused_until: Option<u64>,
}

impl SimProcess {
    /// Its name on the broker, as a consumer and a publisher.
    pub(super) fn client(&self, replica: &str) -> String {
        format!("{replica}#{}", self.pid)
    }

    /// Whether it holds the folder and is not paused.
    pub(super) fn running(&self) -> bool {
        self.phase != Phase::WaitingLock && self.paused_until.is_none()
    }
}

/// A replica of a stage: its folder and its processes (one, or two while a newer one waits for the folder).
pub(super) struct SimReplica {
    pub(super) name: String,
    pub(super) queue: String,
    /// Builds the protocol a new process runs.
    pub(super) config: ReplicaConfig,
    pub(super) stage: coffee_model::node::StageKind,
    pub(super) disk: SimDisk,
    /// The folder's incarnation counter: the number of the newest process that announced itself.
    pub(super) announced: u32,
    /// The process its orchestrator started last, which a restart request is checked against.
    pub(super) child: u32,
    pub(super) processes: Vec<SimProcess>,
}

impl SimReplica {
    /// The process holding the folder (running or paused), if any.
    pub(super) fn holder(&self) -> Option<&SimProcess> {
        self.processes.iter().find(|p| p.phase != Phase::WaitingLock)
    }

    /// Whether exactly one process runs it, holding its folder, and none is paused or waiting.
    pub(super) fn running(&self) -> bool {
        self.processes.len() == 1 && self.processes[0].running()
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
        let name = self.replicas[i].name.clone();
        match self.replicas[i].processes[p].phase {
            Phase::WaitingLock => {}
            Phase::Starting => {
                let (now, every, disk) = (self.now(), self.announce_every(), Arc::new(self.replicas[i].disk.clone()));
                let process = &mut self.replicas[i].processes[p];
                match process.shell.open(disk, now) {
                    Ok(recovery) => {
                        process.phase = Phase::Running;
                        self.coverage.reach(Reached::ReplayFromLog, recovery.records);
                        self.coverage.reach(Reached::ReplayFromSnapshot, recovery.snapshots);
                        process.next_lease_check = self.step + every;
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
            Phase::Running => self.step_running(i, p),
        }
    }

    /// The next step of a running process's shell; with none planned, a look at its leases when due, or a
    /// group of deliveries.
    fn step_running(&mut self, i: usize, p: usize) {
        let (name, pid) = (self.replicas[i].name.clone(), self.replicas[i].processes[p].pid);
        let client = self.replicas[i].processes[p].client(&name);
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
                if outbox.len() > 1 && self.faulting() && self.options.faults.crash && self.rng.gen_bool(0.02) {
                    let sent = self.rng.gen_range(0..outbox.len());
                    self.faults += 1;
                    note!(self, "{name} dies after publishing {sent} of them");
                    self.publish(&client, outbox.into_iter().take(sent).collect());
                    return self.end_process(i, pid, Exit::Killed);
                }
                self.publish(&client, outbox);
            }
            Step::Publish { queue, out } => self.publish(&client, vec![(queue, out)]),
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
                let halfway = self.faulting() && self.options.faults.crash && self.rng.gen_bool(0.05);
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

    /// Whether process `p` of replica `i` was replaced: a newer one announced itself in the folder.
    fn replaced(&self, i: usize, p: usize) -> bool {
        self.replicas[i].processes[p].number < self.replicas[i].announced
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
            number: r.announced,
            shell: Shell::new(protocol, lease),
            phase: Phase::WaitingLock,
            group: Vec::new(),
            next_lease_check: 0,
            next_beat: self.step,
            next_watch: self.step + WATCH_EVERY,
            paused_until: None,
        });
        self.take_lock(i);
        pid
    }

    /// Whoever waits longest gets the folder's lock once nobody holds it.
    fn take_lock(&mut self, i: usize) {
        let r = &mut self.replicas[i];
        if r.holder().is_none() {
            if let Some(next) = r.processes.first_mut() {
                next.phase = Phase::Starting;
            }
        }
    }

    /// The process `pid` of replica `i` ends: its unacked deliveries return to the queue, and, on a power cut,
    /// what its folder had not fsynced may be lost or torn. A process waiting for the folder gets it.
    pub(super) fn end_process(&mut self, i: usize, pid: u32, exit: Exit) {
        let Some(p) = self.replicas[i].at(pid) else { return };
        let r = &mut self.replicas[i];
        let process = r.processes.remove(p);
        r.disk.fail_after(None);
        if exit == Exit::PowerCut {
            let rng = &mut self.rng;
            r.disk.crash(|_| match rng.gen_range(0..3) {
                0 => Tear::Nothing,
                1 => Tear::Everything,
                _ => Tear::Prefix(rng.gen_range(0..64)),
            });
        }
        let client = process.client(&r.name);
        let name = r.name.clone();
        // What it published and had not had confirmed stays at the broker's mercy (a restart may lose it).
        self.broker.consumer_lost(&client, &mut self.rng);
        let how = match exit {
            Exit::Killed => "killed",
            Exit::PowerCut => "killed, its machine cut off",
            Exit::SteppedAside => "gone",
            Exit::LostBroker => "exits: it lost the broker",
        };
        note!(self, "{name} (process {pid}) {how}");
        self.take_lock(i);
    }

    /// The processes' background work at every step: beats, pauses that end, and the incarnation watch.
    pub(super) fn keep_replicas(&mut self) {
        let step = self.step;
        for i in 0..self.replicas.len() {
            let mut beats = Vec::new();
            let mut stepping_aside = Vec::new();
            let r = &mut self.replicas[i];
            for process in &mut r.processes {
                if process.paused_until.is_some_and(|until| step >= until) {
                    process.paused_until = None;
                }
                if !process.running() {
                    continue;
                }
                if step >= process.next_beat {
                    process.next_beat = step + monitors::BEAT_EVERY;
                    beats.push(Heartbeat::quiet(&r.name, process.pid, 0));
                }
                if step >= process.next_watch {
                    process.next_watch = step + WATCH_EVERY;
                    if process.number < r.announced {
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
}
