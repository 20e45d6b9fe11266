//! The run history: every session that ended (done or failed) is kept on disk, one JSON record per session in
//! `<data>/history/`, beside its NDJSON in `<data>/results/`. A console started again on the same data folder
//! lists them as before, and they can be downloaded and compared like the sessions of this run. The history is
//! bounded: past its size, the oldest records go first, with their NDJSON.
//!
//! A record is written to a temporary file, fsynced and renamed, so a console killed while it writes leaves the
//! old record or the new one, never half of one; a record that does not read is skipped with a warning.

use coffee_types::SessionView;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use tracing::warn;
use uuid::Uuid;

/// Records kept by default.
pub const DEFAULT_MAX: usize = 100;

/// One ended session, as kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub view: SessionView,
    /// Its NDJSON.
    pub output: PathBuf,
}

pub struct History {
    dir: PathBuf,
    max: usize,
}

impl History {
    /// The history kept in `<data_dir>/history`, at most `max` records.
    pub fn open(data_dir: &Path, max: usize) -> std::io::Result<History> {
        let dir = data_dir.join("history");
        std::fs::create_dir_all(&dir)?;
        Ok(History { dir, max: max.max(1) })
    }

    /// Every record that reads, oldest first.
    pub fn load(&self) -> Vec<Record> {
        let mut records: Vec<Record> = self
            .record_files()
            .into_iter()
            .filter_map(|path| match std::fs::read(&path).map(|bytes| serde_json::from_slice::<Record>(&bytes)) {
                Ok(Ok(record)) => Some(record),
                Ok(Err(e)) => {
                    warn!(record = %path.display(), error = %e, "a history record does not read; skipped");
                    None
                }
                Err(e) => {
                    warn!(record = %path.display(), error = %e, "a history record cannot be read; skipped");
                    None
                }
            })
            .collect();
        records.sort_by_key(|r| r.view.started_ms);
        records
    }

    /// Keeps `record` (replacing an earlier record of the same session), then drops the oldest records past the
    /// bound, their NDJSON with them. Returns the sessions dropped.
    pub fn keep(&self, record: &Record) -> std::io::Result<Vec<Uuid>> {
        let path = self.path_of(record.view.id);
        let temporary = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        let records = self.load();
        let mut dropped = Vec::new();
        for old in records.iter().take(records.len().saturating_sub(self.max)) {
            // The NDJSON first: a record whose file is gone would still list, and fail to download.
            match std::fs::remove_file(&old.output) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            std::fs::remove_file(self.path_of(old.view.id))?;
            dropped.push(old.view.id);
        }
        Ok(dropped)
    }

    fn path_of(&self, session: Uuid) -> PathBuf {
        self.dir.join(format!("{session}.json"))
    }

    fn record_files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffee_types::SessionState;

    fn record(dir: &Path, started_ms: u64) -> Record {
        let id = Uuid::new_v4();
        let output = dir.join(format!("client-{id}.ndjson"));
        std::fs::write(&output, "{}\n").unwrap();
        let view = SessionView {
            id,
            dataset: "sample".into(),
            dataset_name: "Bundled sample".into(),
            state: SessionState::Done,
            rows_sent: 10,
            rows_total: 10,
            results: Default::default(),
            queries_done: vec![],
            malformed: 0,
            error: None,
            started_ms,
            elapsed_ms: 5,
            topology: "all=1".into(),
            faults: 2,
            matches_reference: Some(true),
            checked: true,
            files_with_issues: vec![],
        };
        Record { view, output }
    }

    #[test]
    fn records_outlive_the_history_and_the_oldest_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::open(dir.path(), 2).unwrap();
        let (a, b, c) = (record(dir.path(), 1), record(dir.path(), 2), record(dir.path(), 3));
        assert!(history.keep(&b).unwrap().is_empty());
        assert!(history.keep(&a).unwrap().is_empty());
        assert_eq!(history.keep(&c).unwrap(), [a.view.id], "the oldest started goes first");
        assert!(!a.output.exists(), "with its NDJSON");
        let reopened = History::open(dir.path(), 2).unwrap();
        let kept: Vec<Uuid> = reopened.load().iter().map(|r| r.view.id).collect();
        assert_eq!(kept, [b.view.id, c.view.id]);
        assert_eq!(reopened.load()[0].view.faults, 2);
        // A record that does not read is skipped, not fatal.
        std::fs::write(dir.path().join("history/broken.json"), "{").unwrap();
        assert_eq!(reopened.load().len(), 2);
    }
}
