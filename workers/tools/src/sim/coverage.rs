//! "Sometimes" counters: which recovery paths a run reached, and how often. A simulator that never drives the
//! system down a path proves nothing about it; `coffee sim` prints each path as `reached PATH N`, and a path no
//! seed of a long run reaches is a gap in the simulator, not a proof.

use std::fmt;

/// A path the system takes only when something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Path {
    /// A replica's process rebuilt a session by applying its logged inputs again.
    ReplayFromLog,
    /// A replica's process rebuilt a session from a snapshot.
    ReplayFromSnapshot,
    /// An input that was applied already was dropped (a redelivery, a duplicate, a re-sent upload).
    DuplicateDropped,
    /// A message came back to a consumer after its first consumer died unacked.
    Redelivery,
    /// A session complete at a replica's death was finished again by its next process.
    FinishedAgain,
    /// A replica's process died halfway through its commit.
    DeathMidCommit,
    /// A client resumed its upload after its gateway restarted.
    Resume,
    /// A gateway resumed forwarding a session's results to a client that had some already.
    ResultsResumed,
    /// A replica purged an abandoned session at the gateway's word.
    Purge,
    /// A replica purged a session whose lease ran out.
    LeaseExpiry,
    /// The broker deleted a results queue nobody consumed for a lease.
    QueueExpired,
    /// A replica's process saw a newer incarnation and stepped aside.
    SteppedAside,
    /// An orchestrator restarted a node at a monitor's request.
    MonitorRestart,
    /// An orchestrator ignored a stale restart request (it named a process no longer running).
    StaleRestartIgnored,
    /// A process reached another broker node than the one it tried first (that one was down).
    Failover,
    /// The broker refused a declaration or a consumer (404: a classic queue's home node down).
    Refused,
    /// The broker dropped a publish and confirmed it (to a queue that cannot take it).
    DroppedPublish,
    /// The broker cancelled a consumer (its classic queue's node went down).
    ConsumerCancelled,
    /// A quorum queue dropped a message returned more often than its delivery limit.
    DeliveryLimit,
    /// A process on another folder than the replica's state was refused the replica.
    ClaimRefused,
    /// The broker closed a replica process's channel.
    ChannelClosed,
    /// The gateway's session announcer went on after a failed announcement.
    AnnouncerReopened,
    /// A replica process's main loop was stuck on the broker while it beat on.
    Stuck,
    /// The broker blocked every publisher for a while (an alarm).
    Alarm,
    /// A process was cut off from its broker node.
    Partition,
    /// A partition healed before either side noticed it.
    PartitionHealed,
    /// A process waited for its replica's lock, held by another connection.
    LockWaited,
    /// The broker nacked what a process had in flight: it exited to be restarted.
    Nacked,
    /// A purge the broker nacked was tried again.
    PurgeRetried,
    /// A process behind a partition published what never reached the broker (and waited for its confirm).
    PublishedIntoVoid,
}

impl Path {
    pub const ALL: [Path; 30] = [
        Path::ReplayFromLog,
        Path::ReplayFromSnapshot,
        Path::DuplicateDropped,
        Path::Redelivery,
        Path::FinishedAgain,
        Path::DeathMidCommit,
        Path::Resume,
        Path::ResultsResumed,
        Path::Purge,
        Path::LeaseExpiry,
        Path::QueueExpired,
        Path::SteppedAside,
        Path::MonitorRestart,
        Path::StaleRestartIgnored,
        Path::Failover,
        Path::Refused,
        Path::DroppedPublish,
        Path::ConsumerCancelled,
        Path::DeliveryLimit,
        Path::ClaimRefused,
        Path::ChannelClosed,
        Path::AnnouncerReopened,
        Path::Stuck,
        Path::Alarm,
        Path::Partition,
        Path::PartitionHealed,
        Path::LockWaited,
        Path::Nacked,
        Path::PurgeRetried,
        Path::PublishedIntoVoid,
    ];

    /// Its name in `coffee sim`'s output.
    pub fn name(self) -> &'static str {
        match self {
            Path::ReplayFromLog => "replay-from-log",
            Path::ReplayFromSnapshot => "replay-from-snapshot",
            Path::DuplicateDropped => "duplicate-dropped",
            Path::Redelivery => "redelivery",
            Path::FinishedAgain => "finished-again",
            Path::DeathMidCommit => "death-mid-commit",
            Path::Resume => "resume",
            Path::ResultsResumed => "results-resumed",
            Path::Purge => "purge",
            Path::LeaseExpiry => "lease-expiry",
            Path::QueueExpired => "queue-expired",
            Path::SteppedAside => "stepped-aside",
            Path::MonitorRestart => "monitor-restart",
            Path::StaleRestartIgnored => "stale-restart-ignored",
            Path::Failover => "failover",
            Path::Refused => "refused",
            Path::DroppedPublish => "dropped-publish",
            Path::ConsumerCancelled => "consumer-cancelled",
            Path::DeliveryLimit => "delivery-limit",
            Path::ClaimRefused => "claim-refused",
            Path::ChannelClosed => "channel-closed",
            Path::AnnouncerReopened => "announcer-reopened",
            Path::Stuck => "stuck",
            Path::Alarm => "alarm",
            Path::Partition => "partition",
            Path::PartitionHealed => "partition-healed",
            Path::LockWaited => "lock-waited",
            Path::Nacked => "nacked",
            Path::PurgeRetried => "purge-retried",
            Path::PublishedIntoVoid => "published-into-void",
        }
    }
}

/// How often each path was reached (in one seed, or summed over many).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    counts: [u64; Path::ALL.len()],
    /// Over many seeds: how many reached each path at least once.
    seeds: [u64; Path::ALL.len()],
}

impl Coverage {
    pub fn reach(&mut self, path: Path, times: u64) {
        self.counts[path as usize] += times;
    }

    pub fn count(&self, path: Path) -> u64 {
        self.counts[path as usize]
    }

    /// How many of the seeds added reached `path`.
    pub fn seeds(&self, path: Path) -> u64 {
        self.seeds[path as usize]
    }

    /// Adds one seed's coverage.
    pub fn add_seed(&mut self, seed: &Coverage) {
        for path in Path::ALL {
            let i = path as usize;
            self.counts[i] += seed.counts[i];
            self.seeds[i] += u64::from(seed.counts[i] > 0);
        }
    }

    /// The paths never reached.
    pub fn gaps(&self) -> Vec<Path> {
        Path::ALL.into_iter().filter(|p| self.count(*p) == 0).collect()
    }
}

/// One line a path: `reached PATH N (in S seeds)`.
impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for path in Path::ALL {
            writeln!(f, "reached {} {} (in {} seeds)", path.name(), self.count(path), self.seeds(path))?;
        }
        Ok(())
    }
}
