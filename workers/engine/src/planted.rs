//! Bugs planted on purpose, to prove that the simulator (`coffee sim`) finds what each one breaks: classic
//! exactly-once mistakes, and reverts of fixes that real faults called for. Each site (in the engine, and in the
//! monitors' decisions in coffee-ops) asks [`active`] whether its bug is planted and, if so, does the wrong
//! thing.
//!
//! Planted per thread, by an explicit call ([`Plant::new`]), never by the environment or the command line: the
//! simulator runs a seed on one thread, and a test binary runs other tests on other threads at the same time.
//! Without the `planted-bugs` feature (every binary a user builds) [`active`] is a constant `false` and every
//! site compiles away.

/// A bug the engine can be made to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// The replica's shell acks a group before its inputs are logged: a crash in between loses them.
    AckBeforeCommit,
    /// The replica's shell logs a group before its outputs are confirmed: a broker restart in between loses
    /// outputs for good.
    CommitBeforeConfirm,
    /// Duplicates are applied again: the dedup check always admits.
    DedupOff,
    /// A stream counts as complete once its EOF is in, whether or not the data it counts has all been applied.
    EofBeforeData,
    /// A snapshot keeps the operator's state but not which inputs were applied (the dedup record).
    SnapshotWithoutDedup,
    /// A per-input output takes the next number on its target instead of its input's seq, so the same input
    /// handled again after a crash is sent under a new id.
    FreshOutputSeq,
    /// The session logs are never fsynced, so a group is acked before its inputs are on disk.
    AckBeforeFsync,
    /// Revert of a real-faults fix: the state folder is not fsynced after a session's files are created or
    /// removed, so their names may not survive a power cut.
    NoDirFsync,
    /// Revert of a real-faults fix: session leases never run out, so a session whose gateway vanished with its
    /// folder stays at the stages for good.
    NoLease,
    /// Revert of a real-faults fix: results queues do not expire, so one whose session was forgotten stays on
    /// the broker for good.
    NoResultsExpiry,
    /// Revert of a real-faults fix: a replica's process consumes without claiming the replica first (its lock
    /// and the record of the folder that holds its state), so a process on another folder takes its input too.
    NoReplicaClaim,
    /// Revert of a fix the simulator's swarm testing called for: a failed announcement waits for the announcer's
    /// next tick on a new channel instead of being made again at once, so a few closed channels in a row let a
    /// live session's lease run out at a stage that has nothing else to renew it.
    AnnouncementNotRetried,
    /// Revert of a real-faults fix: the gateway tries a purge once; one that fails leaves the session's log, so
    /// the gateway announces it and the stages keep it for as long as that gateway lives.
    PurgeTriedOnce,
    /// Revert of a real-faults fix: the monitors judge nodes by their silence only, so a node whose main loop is
    /// stuck on the broker while its heartbeat task beats on is never restarted.
    StuckNodesBeatOn,
    /// Revert of a real-faults fix: the monitors judge nodes silent while the broker blocks every publisher
    /// (an alarm), and have every node restarted.
    MonitorsBlindToAlarms,
    /// Revert of a real-faults fix: the gateway's session announcer stops at its first failed announcement (a
    /// channel the broker closed), and nothing notices; the stages purge the gateway's live sessions once their
    /// lease runs out.
    AnnouncerStops,
    /// Revert of a real-faults fix: classic queues are allowed on several broker nodes, where a queue whose home
    /// node is down drops what is published to it and still confirms it.
    ClassicQueuesOnSeveralBrokers,
    /// The gateway records an upload's progress before the batches it counts are confirmed: a broker restart
    /// may lose them, and a resume then starts after them.
    ProgressBeforeConfirm,
    /// The gateway acks every result it has sent when the client acks one frame (a `multiple` ack of the newest
    /// delivery): results the client has not written yet are acked, and a gateway restart loses them.
    ResultsAckedPastTheClient,
    /// A health monitor asks for a node's restart once and never again, so a node killed a second time (or
    /// killed again before its first beat) stays down.
    MonitorAsksOnce,
    /// Revert of a fix CI called for: a monitor takes a tick late by a third of its timeout for its own pause,
    /// so on a loaded machine it forgives every silence and restarts nobody.
    MonitorForgivesLateTicks,
}

impl Bug {
    pub const ALL: [Bug; 21] = [
        Bug::AckBeforeCommit,
        Bug::CommitBeforeConfirm,
        Bug::DedupOff,
        Bug::EofBeforeData,
        Bug::SnapshotWithoutDedup,
        Bug::FreshOutputSeq,
        Bug::AckBeforeFsync,
        Bug::NoDirFsync,
        Bug::NoLease,
        Bug::NoResultsExpiry,
        Bug::ClassicQueuesOnSeveralBrokers,
        Bug::NoReplicaClaim,
        Bug::AnnouncerStops,
        Bug::AnnouncementNotRetried,
        Bug::PurgeTriedOnce,
        Bug::StuckNodesBeatOn,
        Bug::MonitorsBlindToAlarms,
        Bug::ProgressBeforeConfirm,
        Bug::ResultsAckedPastTheClient,
        Bug::MonitorAsksOnce,
        Bug::MonitorForgivesLateTicks,
    ];
}

#[cfg(feature = "planted-bugs")]
thread_local! {
    static PLANTED: std::cell::Cell<Option<Bug>> = const { std::cell::Cell::new(None) };
}

/// Whether `bug` is planted on this thread.
#[inline(always)]
pub fn active(bug: Bug) -> bool {
    #[cfg(feature = "planted-bugs")]
    return PLANTED.with(|planted| planted.get() == Some(bug));
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = bug;
        false
    }
}

/// A bug planted on this thread for as long as the value lives.
pub struct Plant(());

impl Plant {
    /// Plants `bug` (none: plants nothing). Panics if a bug is asked of a build without the `planted-bugs`
    /// feature: a test that plants a bug and sees nothing break must not pass for the wrong reason.
    pub fn new(bug: Option<Bug>) -> Plant {
        #[cfg(feature = "planted-bugs")]
        PLANTED.with(|planted| planted.set(bug));
        #[cfg(not(feature = "planted-bugs"))]
        assert!(bug.is_none(), "planting {bug:?} needs coffee-engine's `planted-bugs` feature");
        Plant(())
    }
}

impl Drop for Plant {
    fn drop(&mut self) {
        #[cfg(feature = "planted-bugs")]
        PLANTED.with(|planted| planted.set(None));
    }
}
