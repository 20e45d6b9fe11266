//! A deterministic simulation of the pipeline's stage protocol: every replica of every stage, the gateway's
//! input side and the results side of several sessions, on one thread, over a simulated broker
//! ([`broker::SimBroker`]) and a simulated disk per replica (`coffee_engine::state::disk::SimDisk`), with every
//! choice (which actor steps next, which message a queue hands out, which fault strikes, how much of an unsynced
//! write survives) drawn from one generator seeded by the run's seed. A seed that breaks an invariant replays
//! exactly: `coffee sim --seeds N..N+1 --trace`.
//!
//! The replicas run the engine's own shell and protocol (`coffee_engine::runtime::{Shell, core}`): the
//! simulator performs the shell's steps, the ones the runtime performs on RabbitMQ (take a group, handle each
//! delivery and publish what it sends, wait for the confirms, step aside if replaced, commit, ack), one at a
//! time, and can crash a replica's process between any two steps or halfway through a commit. The faults:
//! - a replica killed (its unacked input redelivered; what it buffered lost) or its machine cut off (what it
//!   wrote and did not fsync lost or torn);
//! - the broker restarted, or one node of three down for a while (unconfirmed publishes lost at random, the
//!   clients of that node reconnecting to another; the broker behaves as RabbitMQ does, [`broker`]);
//! - a message duplicated in its queue, and deliveries out of order within a few of the head;
//! - the gateway restarted (the client resumes its upload from an earlier mark, re-sending batches it had sent;
//!   the results side returns what it had not acked);
//! - a replica or a monitor paused for a while; a monitor killed, or its machine loaded so its clock ticks late;
//! - a second process of a replica started beside the first on its folder (the older one must step aside), or
//!   on a folder of its own (a stray: the replica's claim must refuse it);
//! - channels closed, consumers cancelled and publishes nacked by the broker; a main loop stuck on the broker;
//!   alarms that block every publisher; partitions between a process and its broker node;
//! - and, in every seed, a session whose client leaves partway, purged from every replica by the gateway or
//!   forgotten with it (the stages' leases must then purge it).
//!
//! Each seed draws its own mix of those faults and their rate (swarm testing) and the step they stop at
//! (liveness: the run must be quiet within a bound of it), and counts the recovery paths it reached
//! ([`coverage`]).
//!
//! Three health monitors run their real decision code (`coffee_ops::monitor::Watch`) on virtual time: a killed
//! replica comes back only when the leading monitor has it restarted, through the orchestrator's own rule.
//!
//! At the end of each seed, once every fault has stopped and the system is quiet: every session's results equal
//! the reference's exactly, no replica keeps a session's files, no queue holds a message, every process runs,
//! and no restart was asked for while the broker blocked publishers.
//!
//! Not simulated yet (see docs/simulation.md): the gateway's sockets and the client's connection loop (the sim
//! plays the client's frames and acks through the gateway's plans).

pub mod broker;
pub mod coverage;
mod world;

use coffee_model::dataset::{self, ForRowType, Row};
use coffee_model::message::Batch;
use coffee_model::model::FileKind;
use std::path::Path;
use std::time::Instant;

pub use world::Outcome;
use world::Tracing;

/// Which faults a run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// Replicas killed, or their machine cut off, at any step (mid-commit included).
    pub crash: bool,
    /// The broker restarted.
    pub broker: bool,
    /// Messages duplicated in their queues.
    pub duplicate: bool,
    /// The gateway restarted: uploads resumed from an earlier mark, results redelivered.
    pub gateway: bool,
    /// Replicas and monitors paused (stopped) for a while: the monitors restart a replica paused too long.
    pub pause: bool,
    /// Monitors killed, or their machine loaded so that their clock ticks late.
    pub monitor: bool,
    /// A second process of a replica started beside the first, on its folder.
    pub incarnation: bool,
    /// A process of a replica started on a folder of its own beside the replica's.
    pub stray: bool,
    /// Channels closed and consumers cancelled by the broker.
    pub channel: bool,
    /// A replica's main loop stuck on the broker for good, while it beats on.
    pub stuck: bool,
    /// The broker blocking every publisher for a while (a memory or disk alarm).
    pub alarm: bool,
    /// Network partitions between a replica's process and its broker node.
    pub partition: bool,
}

impl Faults {
    pub const ALL: Faults = Faults {
        crash: true,
        broker: true,
        duplicate: true,
        gateway: true,
        pause: true,
        monitor: true,
        incarnation: true,
        stray: true,
        channel: true,
        stuck: true,
        alarm: true,
        partition: true,
    };
    pub const NONE: Faults = Faults {
        crash: false,
        broker: false,
        duplicate: false,
        gateway: false,
        pause: false,
        monitor: false,
        incarnation: false,
        stray: false,
        channel: false,
        stuck: false,
        alarm: false,
        partition: false,
    };

    /// `all`, `none`, or a comma-separated list of `crash`, `broker`, `duplicate`, `gateway`, `pause`,
    /// `monitor`, `incarnation`, `stray`, `channel`, `stuck`, `alarm`, `partition`.
    pub fn parse(text: &str) -> anyhow::Result<Faults> {
        match text {
            "all" => return Ok(Faults::ALL),
            "none" => return Ok(Faults::NONE),
            _ => {}
        }
        let mut faults = Faults::NONE;
        for part in text.split(',').map(str::trim) {
            match part {
                "crash" => faults.crash = true,
                "broker" => faults.broker = true,
                "duplicate" => faults.duplicate = true,
                "gateway" => faults.gateway = true,
                "pause" => faults.pause = true,
                "monitor" => faults.monitor = true,
                "incarnation" => faults.incarnation = true,
                "stray" => faults.stray = true,
                "channel" => faults.channel = true,
                "stuck" => faults.stuck = true,
                "alarm" => faults.alarm = true,
                "partition" => faults.partition = true,
                other => anyhow::bail!(
                    "unknown fault `{other}`: all, none, or crash, broker, duplicate, gateway, pause, monitor, incarnation, stray, channel, stuck, alarm, partition"
                ),
            }
        }
        Ok(faults)
    }
}

/// A deliberate mistake, planted in the engine's own code (the replica's shell, its protocol, the gateway's
/// plans, the monitors' decisions) to prove that the simulator catches what it breaks: its tests run with each
/// and expect a seed to fail. Planting one needs coffee-engine's `planted-bugs` feature, which only the tests
/// enable.
pub use coffee_engine::planted::Bug;

/// How one run goes.
#[derive(Debug, Clone)]
pub struct Options {
    pub faults: Faults,
    /// Sessions per seed, each on one of the datasets.
    pub sessions: usize,
    /// Sessions more whose client leaves partway through its upload: the gateway purges them from every
    /// replica, and deletes their results queue.
    pub abandoned: usize,
    /// Steps before the faults stop (the rest of the run must then converge); in liveness mode, the mean of a
    /// step drawn per seed between 0 and twice this.
    pub fault_steps: u64,
    /// A fault strikes at each step with this probability (with swarm testing, times a factor each seed draws
    /// between a quarter and four).
    pub fault_rate: f64,
    /// A seed that has not converged this many steps after its faults stopped fails (a liveness bug).
    pub converge_steps: u64,
    /// Each seed draws its own mix of faults and their rate from those allowed (swarm testing).
    pub swarm: bool,
    /// The faults stop at a random step of each seed, not at `fault_steps`.
    pub liveness: bool,
    /// The stages' session lease, in steps (a step is a millisecond of virtual time).
    pub lease_steps: u64,
    /// Keep every event of the run (otherwise the last few hundred, shown when a seed fails).
    pub full_trace: bool,
    pub bug: Option<Bug>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            faults: Faults::ALL,
            sessions: 2,
            abandoned: 1,
            fault_steps: 4_000,
            fault_rate: 0.01,
            converge_steps: 40_000,
            swarm: true,
            liveness: true,
            lease_steps: 2_000,
            full_trace: false,
            bug: None,
        }
    }
}

/// A client's dataset as the simulated gateway sends it, and what the reference says it must give.
pub struct Dataset {
    pub name: String,
    /// Each kind's batches, in the order the client reads them.
    pub batches: Vec<(FileKind, Vec<Batch>)>,
    /// The reference's result lines on the same files.
    pub expected: Vec<String>,
    /// The same, sorted: a session whose lines, sorted, are these byte for byte is exact without the slower
    /// canonical comparison.
    pub expected_sorted: Vec<String>,
}

impl Dataset {
    /// Reads a dataset folder into batches of `batch_rows` rows, and runs the reference on it.
    pub fn load(dir: &Path, batch_rows: usize) -> anyhow::Result<Dataset> {
        let batch_rows = batch_rows.max(1);
        let batches = FileKind::ALL
            .iter()
            .map(|&kind| Ok((kind, read_batches(dir, kind, batch_rows)?)))
            .collect::<anyhow::Result<_>>()?;
        let expected = crate::reference::run(dir)?.lines;
        let mut expected_sorted = expected.clone();
        expected_sorted.sort_unstable();
        Ok(Dataset { name: dir.display().to_string(), batches, expected, expected_sorted })
    }
}

fn read_batches(dir: &Path, kind: FileKind, batch_rows: usize) -> anyhow::Result<Vec<Batch>> {
    struct Read<'a> {
        dir: &'a Path,
        batch_rows: usize,
    }
    impl ForRowType for Read<'_> {
        type Output = anyhow::Result<Vec<Batch>>;
        fn run<R: Row>(self) -> Self::Output {
            let mut rows = Vec::new();
            dataset::read_all::<R>(self.dir, |row| rows.push(row), |_, _| {})?;
            let mut batches = Vec::new();
            while !rows.is_empty() {
                let rest = rows.split_off(rows.len().min(self.batch_rows));
                batches.push(R::batch(std::mem::replace(&mut rows, rest)));
            }
            Ok(batches)
        }
    }
    dataset::with_row_type(kind, Read { dir, batch_rows })
}

/// The datasets a simulation runs on: two small generated ones (tiny scale, generator seeds 7 and 8), written
/// under `cache` the first time and read from there after, cut into batches of `batch_rows` rows.
pub fn datasets(cache: &Path, batch_rows: usize) -> anyhow::Result<Vec<Dataset>> {
    [7, 8]
        .into_iter()
        .map(|seed| {
            let dir = cache.join(format!("tiny-{seed}"));
            let complete = dir.join(".complete");
            if !complete.exists() {
                let options = crate::gen::GenOptions { scale: crate::gen::Scale::Tiny, seed, out: dir.clone() };
                crate::gen::generate(&options)?;
                std::fs::write(&complete, b"")?;
            }
            Dataset::load(&dir, batch_rows)
        })
        .collect()
}

/// Seeds as `A..B` (B excluded) or one seed `A`.
pub fn parse_seeds(text: &str) -> anyhow::Result<std::ops::Range<u64>> {
    let parse = |s: &str| s.trim().parse::<u64>().map_err(|_| anyhow::anyhow!("`{text}`: seeds are A..B or A"));
    match text.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b)?);
            anyhow::ensure!(a < b, "`{text}`: an empty range of seeds");
            Ok(a..b)
        }
        None => {
            let a = parse(text)?;
            Ok(a..a + 1)
        }
    }
}

/// The replica counts a seed picks from: one replica each, the default two, and uneven widths.
pub const SHAPES: [&str; 4] = ["all=1", "all=2", "all=1,tx_filter=3,q4_count=2", "all=2,q3_agg=3,q4_top=1"];

/// Runs one seed.
pub fn run_seed(seed: u64, datasets: &[Dataset], options: &Options) -> Outcome {
    let _plant = coffee_engine::planted::Plant::new(options.bug);
    if options.full_trace {
        return world::World::new(seed, datasets, options, Tracing::All).run();
    }
    // Formatting every event costs more than the run itself, so a seed runs without a trace; one that fails
    // runs again, the same way, keeping the events that led to its failure.
    let outcome = world::World::new(seed, datasets, options, Tracing::Off).run();
    match outcome.failure {
        None => outcome,
        Some(_) => world::World::new(seed, datasets, options, Tracing::Tail).run(),
    }
}

/// What many seeds gave.
#[derive(Debug, Default)]
pub struct Summary {
    pub seeds: u64,
    pub failed: Vec<(u64, String)>,
    pub steps: u64,
    /// The most steps one seed took.
    pub longest: u64,
    /// The most steps one seed took to converge once its faults stopped (how close it came to
    /// `converge_steps`).
    pub slowest_convergence: u64,
    pub faults: u64,
    /// The recovery paths the seeds reached.
    pub coverage: coverage::Coverage,
    pub elapsed: std::time::Duration,
}

/// Runs every seed of `seeds`, calling `on_failure` with each failing seed's outcome as it is found.
pub fn run_seeds(
    seeds: std::ops::Range<u64>,
    datasets: &[Dataset],
    options: &Options,
    mut on_failure: impl FnMut(u64, &Outcome),
) -> Summary {
    let started = Instant::now();
    let mut summary = Summary::default();
    for seed in seeds {
        let outcome = run_seed(seed, datasets, options);
        summary.seeds += 1;
        summary.steps += outcome.steps;
        summary.longest = summary.longest.max(outcome.steps);
        summary.slowest_convergence = summary.slowest_convergence.max(outcome.converged_after);
        summary.faults += outcome.faults;
        summary.coverage.add_seed(&outcome.coverage);
        if let Some(why) = &outcome.failure {
            on_failure(seed, &outcome);
            summary.failed.push((seed, why.clone()));
        }
    }
    summary.elapsed = started.elapsed();
    summary
}
