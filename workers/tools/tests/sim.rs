//! The deterministic simulator (`coffee sim`): the protocol holds under every fault on many seeds; a seed
//! replays exactly; and the simulator is not blind: with a bug planted (the shell's steps in a wrong order, a
//! classic exactly-once mistake in the engine, or a real-faults fix reverted), some seed fails and says how.

use coffee_tools::sim::{self, Bug, Dataset, Faults, Options};
use std::sync::OnceLock;

/// Seeds per run of the tests (`SIM_SEEDS` raises it; `coffee sim` runs any range).
fn seeds() -> std::ops::Range<u64> {
    let n = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    0..n
}

fn datasets() -> &'static [Dataset] {
    static DATASETS: OnceLock<(tempfile::TempDir, Vec<Dataset>)> = OnceLock::new();
    let (_, datasets) = DATASETS.get_or_init(|| {
        let cache = tempfile::tempdir().expect("tempdir");
        let datasets = sim::datasets(cache.path(), 40).expect("the simulation's datasets");
        (cache, datasets)
    });
    datasets
}

#[test]
fn every_seed_ends_exact_clean_and_quiet_under_every_fault() {
    let options = Options::default();
    let summary = sim::run_seeds(seeds(), datasets(), &options, |seed, outcome| {
        eprintln!("seed {seed} failed: {:?}\n{}", outcome.failure, outcome.trace.join("\n"));
    });
    assert!(summary.failed.is_empty(), "failing seeds: {:?}", summary.failed);
    assert!(summary.faults >= summary.seeds * 10, "too few faults to prove anything: {summary:?}");
}

#[test]
fn a_seed_replays_exactly() {
    let options = Options { full_trace: true, ..Options::default() };
    let first = sim::run_seed(11, datasets(), &options);
    let again = sim::run_seed(11, datasets(), &options);
    assert!(first.faults > 0 && first.trace.len() > 100, "{first:?}");
    assert_eq!(first.trace, again.trace);
    assert_ne!(first.trace, sim::run_seed(12, datasets(), &options).trace);
}

/// How many seeds the search for a planted bug's first failing seed may take.
const BUG_BUDGET: u64 = 400;

/// A run with `bug` planted (many bugs show as a run that never converges: the default bound after the faults
/// stop, 40,000 steps, is four times the slowest correct seed of many thousands).
fn bug_options(bug: Bug) -> Options {
    // Every fault, except for bugs only the broker's channel faults bring out (many closed channels in a row, a
    // nack while a purge waits for its confirms): a mix of all faults draws them too seldom for a short search.
    let faults = match bug {
        Bug::AnnouncementNotRetried | Bug::PurgeTriedOnce => Faults::parse("channel").expect("a fault"),
        _ => Faults::ALL,
    };
    Options { bug: Some(bug), faults, ..Options::default() }
}

/// The first seed that fails with `bug` planted, under every fault, and why.
fn caught(bug: Bug) -> Option<(u64, String)> {
    let options = bug_options(bug);
    (0..BUG_BUDGET).find_map(|seed| sim::run_seed(seed, datasets(), &options).failure.map(|why| (seed, why)))
}

/// Every planted bug (exactly-once mistakes, and reverts of fixes real faults called for) is found within the
/// budget, by a violated invariant (results not equal to the reference's, a run that does not converge, a queue
/// or a replica's folder left holding something, a result admitted wrongly). Prints the first seed that finds
/// each, and with `SIM_BUG_SEEDS=N` how many of the first N seeds do (docs/simulation.md).
#[test]
fn every_planted_bug_is_found() {
    let mut missed = Vec::new();
    for bug in Bug::ALL {
        match caught(bug) {
            Some((seed, why)) => {
                eprintln!("{bug:?}: first found by seed {seed}: {}", why.lines().next().unwrap_or(""));
                if let Some(n) = std::env::var("SIM_BUG_SEEDS").ok().and_then(|n| n.parse::<u64>().ok()) {
                    let options = bug_options(bug);
                    let found = (0..n).filter(|&s| sim::run_seed(s, datasets(), &options).failure.is_some()).count();
                    eprintln!("{bug:?}: found by {found} of seeds 0..{n}");
                }
            }
            None => missed.push(bug),
        }
    }
    assert!(missed.is_empty(), "no seed of 0..{BUG_BUDGET} found {missed:?}");
}

#[test]
fn without_faults_nothing_is_injected_and_every_seed_is_exact() {
    let options = Options { faults: Faults::NONE, ..Options::default() };
    let summary = sim::run_seeds(0..5, datasets(), &options, |_, _| {});
    assert_eq!((summary.failed.len(), summary.faults), (0, 0), "{summary:?}");
}
