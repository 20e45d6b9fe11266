//! The deterministic simulator (`coffee sim`): the protocol holds under every fault on many seeds; a seed
//! replays exactly; and the simulator is not blind: with the shell's steps in a wrong order (each a classic
//! exactly-once mistake), some seed fails and says how.

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

/// The first seed that fails with `bug` under `faults`, and why.
fn caught(bug: Bug, faults: Faults) -> Option<(u64, String)> {
    let options = Options { faults, bug: Some(bug), ..Options::default() };
    let caught = (0..200).find_map(|seed| sim::run_seed(seed, datasets(), &options).failure.map(|why| (seed, why)));
    eprintln!("{bug:?} under {faults:?}: caught by {caught:?}");
    caught
}

#[test]
fn acking_before_the_commit_is_caught() {
    let crashes = Faults { crash: true, ..Faults::NONE };
    let (seed, why) =
        caught(Bug::AckBeforeCommit, crashes).expect("a crash between the ack and the commit loses input");
    assert!(why.contains("differs from the reference") || why.contains("not quiet"), "seed {seed}: {why}");
}

#[test]
fn committing_before_the_confirms_is_caught() {
    let restarts = Faults { broker: true, ..Faults::NONE };
    let (seed, why) =
        caught(Bug::CommitBeforeConfirm, restarts).expect("a broker restart before the confirms loses output");
    assert!(why.contains("differs from the reference") || why.contains("not quiet"), "seed {seed}: {why}");
}

#[test]
fn without_faults_nothing_is_injected_and_every_seed_is_exact() {
    let options = Options { faults: Faults::NONE, ..Options::default() };
    let summary = sim::run_seeds(0..5, datasets(), &options, |_, _| {});
    assert_eq!((summary.failed.len(), summary.faults), (0, 0), "{summary:?}");
}
