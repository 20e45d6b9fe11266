//! DuckDB on the same files, for the benchmark to compare with (issue 15): the four queries in SQL
//! (`duckdb_queries.py`, embedded here and written out at run time), run by the Python of the virtual environment
//! `scripts/duckdb-setup.sh` makes. DuckDB times itself, from its first read to its last line written, so the
//! interpreter's start and the import are not counted; its lines are checked against the reference's.

use std::path::{Path, PathBuf};

const QUERIES: &str = include_str!("duckdb_queries.py");

/// DuckDB's run on one dataset.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DuckDbRun {
    pub threads: usize,
    /// From its first read to its last line written, as DuckDB's process measured it.
    pub secs: f64,
    /// The CPU time of DuckDB's threads over the same span (core-seconds).
    pub cpu_secs: f64,
    /// Whether its lines equal the reference's.
    pub exact: bool,
}

/// The Python that has DuckDB: `COFFEE_DUCKDB_PYTHON` if set, else `target/duckdb-venv/bin/python` under the
/// current folder or under this source tree's workspace; `None` if there is none (the benchmark then says how to
/// set it up).
pub fn python() -> Option<PathBuf> {
    if let Some(given) = std::env::var_os("COFFEE_DUCKDB_PYTHON") {
        return Some(PathBuf::from(given)).filter(|p| p.is_file());
    }
    let venv = "target/duckdb-venv/bin/python";
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    [PathBuf::from(venv), workspace.join(venv)].into_iter().find(|p| p.is_file())
}

/// Runs the four queries in DuckDB on `data` with `threads` threads, writing its lines to `out`, and checks
/// them against the reference's lines in `reference`.
pub fn run(python: &Path, data: &Path, out: &Path, threads: usize, reference: &Path) -> anyhow::Result<DuckDbRun> {
    // Not `duckdb.py` beside it: the script would import itself instead of DuckDB.
    let script = out.with_file_name("coffee_duckdb_queries.py");
    std::fs::write(&script, QUERIES)?;
    let output = std::process::Command::new(python)
        .arg(&script)
        .arg(data)
        .arg(out)
        .arg(threads.to_string())
        .output()
        .map_err(|e| anyhow::anyhow!("{}: {e}", python.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "DuckDB's queries failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    #[derive(serde::Deserialize)]
    struct Timing {
        seconds: f64,
        cpu_seconds: f64,
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let timing: Timing = serde_json::from_str(stdout.trim())
        .map_err(|e| anyhow::anyhow!("DuckDB's queries printed `{}`: {e}", stdout.trim()))?;
    let exact = crate::compare::compare_files(reference, out)?.all_equal();
    Ok(DuckDbRun { threads, secs: timing.seconds, cpu_secs: timing.cpu_seconds, exact })
}
