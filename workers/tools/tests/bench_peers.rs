//! What `coffee bench` compares the pipeline with besides the reference: the read-and-parse bound parses every
//! row of a dataset once, on one thread or several; and DuckDB's SQL of the four queries gives the reference's
//! lines exactly, on generated data and on the sample of the real dataset. DuckDB comes from PyPI through
//! `scripts/duckdb-setup.sh` (run by `scripts/test.sh`); where it could not be installed, that test says so and
//! checks nothing else.

use coffee_tools::bench::bound;
use coffee_tools::gen::{generate, GenOptions, Scale};
use std::path::{Path, PathBuf};

fn generated(dir: &Path, seed: u64) -> (PathBuf, u64) {
    let out = dir.join(format!("tiny-{seed}"));
    let summary = generate(&GenOptions { scale: Scale::Tiny, seed, out: out.clone() }).expect("generate");
    (out, summary.total_rows())
}

#[test]
fn the_bound_parses_every_row_once_on_any_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (data, rows) = generated(dir.path(), 5);
    for threads in [1, 2, 3] {
        let (_, parsed) = bound::read_and_parse(&data, threads).unwrap();
        assert_eq!(parsed, rows, "{threads} threads");
    }
}

#[test]
// The tests' fifth query has no SQL: with it, the reference has lines DuckDB does not compute.
#[cfg(not(feature = "example-query"))]
fn duckdb_gives_the_reference_lines_exactly() {
    use coffee_tools::bench::duckdb;
    let Some(python) = duckdb::python() else {
        eprintln!("DuckDB is not set up here (scripts/duckdb-setup.sh could not install it): not compared");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../../shared/peer-data/MateAlv__Sistemas-Distribuidos-TP-Grupo13/data/data-test.zip.extracted/.data-test",
    );
    assert!(sample.is_dir(), "the real-data sample is missing: {} (read in place from ../shared)", sample.display());
    let mut datasets: Vec<PathBuf> = [7, 8].iter().map(|&seed| generated(dir.path(), seed).0).collect();
    datasets.push(sample);
    for (i, data) in datasets.iter().enumerate() {
        let reference = dir.path().join(format!("reference-{i}.ndjson"));
        coffee_tools::reference::write(data, &reference).unwrap();
        let out = dir.path().join(format!("duckdb-{i}.ndjson"));
        let run = duckdb::run(&python, data, &out, 2, &reference).unwrap();
        assert!(run.exact, "DuckDB differs from the reference on {}", data.display());
    }
}
