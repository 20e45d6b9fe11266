//! A stage replica's shell as a plan without I/O: what the replica does with a group of deliveries, with the
//! sessions it found complete at recovery, and with sessions whose lease ran out, as [`Step`]s in the order its
//! guarantees need. The order lives here and nowhere else.
//!
//! For a group of deliveries:
//! 1. each delivery is handled (duplicates dropped, poison set aside, applied in memory), and what it sends is
//!    published before the next one is handled (the broker works while the replica does);
//! 2. every publish of the group is confirmed by the broker;
//! 3. a replica that a newer incarnation replaced stops here, having written and acked nothing;
//! 4. the applied inputs are logged and fsynced, due snapshots taken, completed sessions retired (the runtime
//!    first holds the group while the folder's disk has less free than its reserve, `STATE_MIN_FREE_MB`; a disk
//!    that refuses a write anyway ends the process here, like a crash);
//! 5. the group is acked with one `multiple` ack.
//!
//! Dying anywhere is safe. Before 4, the inputs are redelivered, applied again and published again under the
//! same ids (outputs reuse their input's seq, finals are deterministic), and receivers drop the copies. After 4,
//! a redelivered input is found in the log and dropped, and its outputs were confirmed in 2. A session that
//! completed is found complete again at recovery, and finished again under the same ids, one at a time.
//!
//! The runtime ([`super`]) performs the steps on RabbitMQ, the replica's folder and its incarnation claim; the
//! simulator (`coffee sim`) performs the very same steps on its broker and disks, one at a time, and can crash
//! the replica between any two. Two wrong orders are planted here (behind the tests-only `planted-bugs`
//! feature) for the simulator to find.

use super::core::{Committed, Outgoing, Protocol, Recovery, RuntimeError};
use crate::lease::Leases;
use crate::planted::{self, Bug};
use crate::state::disk::Disk;
use coffee_model::wire::SessionId;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One thing a replica's shell does.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Claim the replica before anything else ([`crate::ownership`]): hold its lock, then check that this
    /// process's folder ([`Protocol::folder_id`]) is the one the broker records as holding the replica's state
    /// (or record it, the first time). A process refused must stop without publishing or consuming anything.
    Claim,
    /// Open the folder: [`Shell::open`] (the runtime starts beating first).
    Open,
    /// Handle delivery `i` of the group: its bytes go to [`Shell::handle`], and what it sends comes next.
    Handle(usize),
    /// Publish one message; its confirm joins those in flight.
    Publish { queue: String, out: Outgoing },
    /// Wait until the broker has confirmed every publish in flight (a nack is an error: nothing is acked then).
    ConfirmAll,
    /// Stop at once, touching nothing, if a newer incarnation of this replica has announced itself: what the
    /// replica does before each step that writes its state or acks.
    StepAsideIfReplaced,
    /// Make the group durable: [`Shell::commit`].
    Commit,
    /// Ack the group: one `multiple` ack of its last delivery.
    Ack,
    /// Retire a session (its files deleted, it is remembered as finished): [`Shell::retire`].
    Retire { session: SessionId, why: Retirement },
    /// Start consuming the replica's queue, as its only consumer: once, after a start's recovered sessions are
    /// finished, before any new input.
    Consume,
}

/// Why a session is retired outside a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retirement {
    /// It was complete when the replica died; its finals were sent again.
    FinishedAgain,
    /// No gateway announced it and no input fed it for a whole lease: its client and gateway are gone.
    LeaseExpired,
}

/// A replica's protocol with its shell's plan: the steps to perform next, and its sessions' leases.
pub struct Shell<P> {
    protocol: P,
    lease: Duration,
    leases: Leases,
    steps: VecDeque<Step>,
}

impl<P: Protocol> Shell<P> {
    pub fn new(protocol: P, lease: Duration) -> Self {
        Shell { protocol, lease, leases: Leases::new(lease), steps: VecDeque::new() }
    }

    pub fn protocol(&self) -> &P {
        &self.protocol
    }

    /// A new process's start: it claims the replica (unless that fix is reverted on purpose, for the simulator
    /// to find), then opens its folder. Nothing before the claim publishes or consumes anything.
    pub fn start(&mut self) {
        self.steps.clear();
        self.leases = Leases::new(self.lease);
        if !planted::active(Bug::NoReplicaClaim) {
            self.steps.push_back(Step::Claim);
        }
        self.steps.push_back(Step::Open);
    }

    /// Performs a [`Step::Open`]: opens the folder on `disk`, rebuilds the sessions (each one's lease starting
    /// `now`), and plans finishing the sessions that were complete when the replica died, one at a time, before
    /// it consumes anything new.
    pub fn open(&mut self, disk: Arc<dyn Disk>, now: Instant) -> Result<Recovery, RuntimeError> {
        let recovery = self.protocol.open(disk)?;
        for (session, outbox) in self.protocol.complete_sessions() {
            self.steps.extend(outbox.into_iter().map(|(queue, out)| Step::Publish { queue, out }));
            let retire = Step::Retire { session, why: Retirement::FinishedAgain };
            self.steps.extend([Step::ConfirmAll, Step::StepAsideIfReplaced, retire]);
        }
        self.steps.push_back(Step::Consume);
        for session in self.protocol.sessions() {
            self.leases.renew(session, now);
        }
        Ok(recovery)
    }

    /// The next step to perform, if any.
    pub fn next_step(&mut self) -> Option<Step> {
        self.steps.pop_front()
    }

    /// The step [`Shell::next_step`] would give.
    pub fn peek_step(&self) -> Option<&Step> {
        self.steps.front()
    }

    /// Whether every planned step was performed: the replica may take a group or look at its leases.
    pub fn idle(&self) -> bool {
        self.steps.is_empty()
    }

    /// A group of `deliveries` taken from the queue (at least one), in the order they came.
    pub fn take_group(&mut self, deliveries: usize) {
        debug_assert!(self.idle() && deliveries > 0, "a group starts once the last one is done");
        self.steps.extend((0..deliveries).map(Step::Handle));
        let end = if planted::active(Bug::AckBeforeCommit) {
            [Step::ConfirmAll, Step::Ack, Step::StepAsideIfReplaced, Step::Commit]
        } else if planted::active(Bug::CommitBeforeConfirm) {
            [Step::StepAsideIfReplaced, Step::Commit, Step::ConfirmAll, Step::Ack]
        } else {
            [Step::ConfirmAll, Step::StepAsideIfReplaced, Step::Commit, Step::Ack]
        };
        self.steps.extend(end);
    }

    /// Handles the delivery of a [`Step::Handle`]: what it sends is published next, before the next delivery.
    pub fn handle(&mut self, bytes: &[u8]) {
        let outbox = self.protocol.handle(bytes);
        for (queue, out) in outbox.into_iter().rev() {
            self.steps.push_front(Step::Publish { queue, out });
        }
    }

    /// Whether the group under way completes a session (its finals are among its publishes).
    pub fn completing(&self) -> bool {
        self.protocol.completing()
    }

    /// Performs a [`Step::Commit`]: an input renews its session's lease; a session that ended has none.
    pub fn commit(&mut self, now: Instant) -> Result<Committed, RuntimeError> {
        let committed = self.protocol.commit()?;
        committed.applied.iter().for_each(|id| self.leases.renew(*id, now));
        committed.ended.iter().for_each(|id| self.leases.forget(*id));
        Ok(committed)
    }

    /// Performs a [`Step::Retire`].
    pub fn retire(&mut self, session: SessionId) -> Result<(), RuntimeError> {
        self.protocol.retire(session)?;
        self.leases.forget(session);
        Ok(())
    }

    /// A gateway announced the sessions it knows: their leases are renewed.
    pub fn announced(&mut self, sessions: &[SessionId], now: Instant) {
        self.leases.announced(sessions, now);
    }

    /// Plans purging the sessions whose lease ran out by `now` (between groups).
    pub fn check_leases(&mut self, now: Instant) {
        debug_assert!(self.idle(), "leases are checked between groups");
        let open = self.protocol.sessions();
        for session in self.leases.expired(now).into_iter().filter(|id| open.contains(id)) {
            let retire = Step::Retire { session, why: Retirement::LeaseExpired };
            self.steps.extend([Step::StepAsideIfReplaced, retire]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::q3::Q3Agg;
    use crate::runtime::{Replica, ReplicaConfig, StageNode};
    use crate::state::disk::SimDisk;
    use crate::topology::Topology;
    use coffee_model::message::{Batch, Stream};
    use coffee_model::node::{NodeId, Role, StageKind};
    use coffee_model::wire::{Body, Envelope};
    use std::path::PathBuf;

    fn shell() -> Shell<Replica<Q3Agg>> {
        let config = ReplicaConfig {
            topology: Topology::with_replicas("t", "all=1").unwrap(),
            replica: 0,
            state_dir: PathBuf::from("/state"),
            snapshot_interval: 10,
            session_lease: Duration::from_secs(10),
            group_max: 8,
            min_free_bytes: 0,
        };
        Shell::new(Replica::new(StageNode::new(Q3Agg, config)), Duration::from_secs(10))
    }

    fn eof(session: SessionId, sender: NodeId, stream: Stream, count: u64) -> Vec<u8> {
        Envelope { session, sender, stream, seq: count, body: Body::Eof { count } }.encode()
    }

    /// Every step until the shell is idle, handling deliveries from `group`.
    fn run(shell: &mut Shell<Replica<Q3Agg>>, group: &[Vec<u8>], now: Instant) -> Vec<Step> {
        let mut steps = Vec::new();
        while let Some(step) = shell.next_step() {
            match &step {
                Step::Handle(i) => shell.handle(&group[*i]),
                Step::Commit => drop(shell.commit(now).unwrap()),
                Step::Retire { session, .. } => shell.retire(*session).unwrap(),
                _ => {}
            }
            steps.push(step);
        }
        steps
    }

    fn kinds(steps: &[Step]) -> String {
        let kind = |step: &Step| match step {
            Step::Handle(_) => "handle",
            Step::Publish { .. } => "publish",
            Step::ConfirmAll => "confirm",
            Step::StepAsideIfReplaced => "step-aside?",
            Step::Commit => "commit",
            Step::Ack => "ack",
            Step::Retire { .. } => "retire",
            Step::Consume => "consume",
            Step::Claim => "claim",
            Step::Open => "open",
        };
        let mut out: Vec<&str> = steps.iter().map(kind).collect();
        out.dedup();
        out.join(" ")
    }

    #[test]
    fn a_group_is_published_as_handled_then_confirmed_checked_committed_and_acked() {
        let mut shell = shell();
        let t0 = Instant::now();
        let disk = Arc::new(SimDisk::new());
        shell.start();
        assert_eq!(shell.next_step(), Some(Step::Claim), "a start claims the replica first");
        assert_eq!(shell.next_step(), Some(Step::Open));
        shell.open(disk, t0).unwrap();
        assert_eq!(run(&mut shell, &[], t0), vec![Step::Consume], "nothing to finish again: it consumes");
        let session = SessionId::from_u128(7);
        let gateway = crate::gateway::GATEWAY;
        let tx_filter = NodeId { role: Role::Stage(StageKind::TxFilter), replica: 0 };
        // Every input's end: the session completes on the last one, and its finals and EOFs go out.
        let group = [
            eof(session, gateway, Stream::Stores, 0),
            eof(session, tx_filter, Stream::Q3Partial, 0),
            Envelope {
                session,
                sender: gateway,
                stream: Stream::Stores,
                seq: 0,
                body: Body::Data(Batch::Stores(vec![])),
            }
            .encode(),
        ];
        shell.take_group(2);
        let steps = run(&mut shell, &group[..2], t0);
        assert_eq!(kinds(&steps), "handle publish confirm step-aside? commit ack", "{steps:?}");
        assert_eq!(steps.iter().filter(|s| matches!(s, Step::Handle(_))).count(), 2);
        assert!(matches!(steps[1], Step::Handle(1)), "the first input sends nothing: {steps:?}");
        assert_eq!(shell.protocol().open_sessions(), 0, "the session ended with the group");
        // A late copy is dropped: it sends nothing.
        shell.take_group(1);
        assert_eq!(kinds(&run(&mut shell, &group[2..], t0)), "handle confirm step-aside? commit ack");
    }

    #[test]
    fn a_session_nobody_announces_is_purged_once_its_lease_runs_out() {
        let mut shell = shell();
        let t0 = Instant::now();
        shell.open(Arc::new(SimDisk::new()), t0).unwrap();
        run(&mut shell, &[], t0);
        let (kept, dropped) = (SessionId::from_u128(1), SessionId::from_u128(2));
        let gateway = crate::gateway::GATEWAY;
        let group = [eof(kept, gateway, Stream::Stores, 0), eof(dropped, gateway, Stream::Stores, 0)];
        shell.take_group(2);
        run(&mut shell, &group, t0);
        shell.announced(&[kept], t0 + Duration::from_secs(8));
        shell.check_leases(t0 + Duration::from_secs(11));
        let steps = run(&mut shell, &[], t0);
        let retire = Step::Retire { session: dropped, why: Retirement::LeaseExpired };
        assert_eq!(steps, vec![Step::StepAsideIfReplaced, retire]);
        assert_eq!(shell.protocol().sessions(), vec![kept]);
    }

    /// A state folder that another build wrote is refused at open, naming what it cannot read, rather than
    /// misread or skipped (an acked input skipped would leave its stream short for good).
    #[test]
    fn state_in_another_format_or_that_does_not_decode_refuses_the_start() {
        use crate::state::{NodeStore, FORMAT_FILE};
        let dir = std::path::Path::new("/state/q3_agg-0");
        let t0 = Instant::now();

        let newer = Arc::new(SimDisk::new());
        crate::state::disk::write_atomically(&*newer, &dir.join(FORMAT_FILE), b"2\n").unwrap();
        let refused = shell().open(newer, t0).expect_err("format 2 refused");
        assert!(matches!(refused, RuntimeError::Format { found: Some(2), reads: 1, .. }), "{refused}");
        assert!(refused.is_refusal());
        assert!(refused.to_string().contains("delete the folder"), "{refused}");

        // A folder of before formats were numbered (no format file), with a logged input this build cannot
        // decode (its checksum holds).
        let older = Arc::new(SimDisk::new());
        let session = SessionId::from_u128(9);
        let (mut store, _) = NodeStore::open_on(older.clone(), dir, 10).unwrap();
        store.append(session, b"not an envelope").unwrap();
        store.sync().unwrap();
        let refused = shell().open(older.clone(), t0).expect_err("an undecodable input refused");
        assert!(matches!(refused, RuntimeError::Unreadable { what: "a logged input", .. }), "{refused}");
        assert!(refused.is_refusal() && refused.to_string().contains(&session.to_string()), "{refused}");
        assert_eq!(older.read(&dir.join(FORMAT_FILE)).unwrap().as_deref(), Some(&b"1\n"[..]), "read as format 1");
    }
}
