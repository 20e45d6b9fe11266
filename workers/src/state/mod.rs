//! Durable state of a stage replica, per session: a snapshot plus the log of the inputs applied since.
//!
//! Files in the replica's folder:
//! - `<session>.snap`: one checksummed record, `[generation: u64 LE][snapshot bytes]`, written atomically.
//! - `<session>.<generation>.log`: the inputs applied after that snapshot (generation 0: since the start).
//! - `finished.log`: the ids of the sessions that ended here, so a late duplicate cannot reopen one.
//!
//! A new snapshot takes the next generation and only then is the previous log deleted, so a crash at any point
//! leaves either the old snapshot with its log or the new one with an empty log.

pub mod log;

use crate::message::SessionId;
use log::{write_atomically, RecordLog};
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

/// A session as recovery found it.
#[derive(Debug, Default)]
pub struct RecoveredSession {
    pub snapshot: Option<Vec<u8>>,
    /// The inputs applied after the snapshot, in order.
    pub records: Vec<Vec<u8>>,
}

struct OpenLog {
    generation: u64,
    log: RecordLog,
    since_snapshot: u64,
}

/// The durable sessions of one stage replica.
pub struct NodeStore {
    dir: PathBuf,
    logs: HashMap<SessionId, OpenLog>,
    finished_log: RecordLog,
}

/// What a node's folder held when it started.
pub struct Recovered {
    pub finished: HashSet<SessionId>,
    pub sessions: HashMap<SessionId, RecoveredSession>,
}

fn session_of(name: &str) -> Option<SessionId> {
    name.split('.').next().and_then(|id| id.parse().ok())
}

impl NodeStore {
    /// Opens the folder, recovering every session and cleaning what a crash left half done.
    pub fn open(dir: &Path) -> io::Result<(NodeStore, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let (finished_log, recovery) = RecordLog::open(&dir.join("finished.log"))?;
        let finished: HashSet<SessionId> =
            recovery.records.iter().filter_map(|r| uuid::Uuid::from_slice(r).ok()).collect();
        let mut store = NodeStore { dir: dir.to_owned(), logs: HashMap::new(), finished_log };
        let mut ids: HashSet<SessionId> = HashSet::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(id) = session_of(&name) {
                ids.insert(id);
            }
        }
        let mut sessions = HashMap::new();
        for id in ids {
            if finished.contains(&id) {
                store.remove_files(id)?; // it ended, but the crash came before its files were deleted
                continue;
            }
            sessions.insert(id, store.recover(id)?);
        }
        Ok((store, Recovered { finished, sessions }))
    }

    fn snapshot_path(&self, id: SessionId) -> PathBuf {
        self.dir.join(format!("{id}.snap"))
    }

    fn log_path(&self, id: SessionId, generation: u64) -> PathBuf {
        self.dir.join(format!("{id}.{generation}.log"))
    }

    fn recover(&mut self, id: SessionId) -> io::Result<RecoveredSession> {
        let (generation, snapshot) = match std::fs::read(self.snapshot_path(id)) {
            Ok(bytes) => match log::parse_single(&bytes) {
                Some(record) if record.len() >= 8 => {
                    let generation = u64::from_le_bytes(record[..8].try_into().expect("8 bytes"));
                    (generation, Some(record[8..].to_vec()))
                }
                // A snapshot is written whole or not at all (atomic rename), so a bad one is disk corruption.
                _ => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("corrupt snapshot of {id}"))),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, None),
            Err(e) => return Err(e),
        };
        self.remove_logs_except(id, generation)?;
        let (log, recovery) = RecordLog::open(&self.log_path(id, generation))?;
        if recovery.dropped_bytes > 0 {
            tracing::warn!(session = %id, dropped = recovery.dropped_bytes, "cut a torn or corrupt log tail");
        }
        let since_snapshot = recovery.records.len() as u64;
        self.logs.insert(id, OpenLog { generation, log, since_snapshot });
        Ok(RecoveredSession { snapshot, records: recovery.records })
    }

    fn remove_logs_except(&self, id: SessionId, keep: u64) -> io::Result<()> {
        let prefix = format!("{id}.");
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(".log") && name != format!("{id}.{keep}.log") {
                std::fs::remove_file(self.dir.join(&name))?;
            }
        }
        Ok(())
    }

    fn remove_files(&mut self, id: SessionId) -> io::Result<()> {
        self.logs.remove(&id);
        let prefix = format!("{id}.");
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                std::fs::remove_file(self.dir.join(&name))?;
            }
        }
        Ok(())
    }

    /// Appends one applied input of `id` (durable after [`NodeStore::sync`]); returns how many inputs its log holds.
    pub fn append(&mut self, id: SessionId, record: &[u8]) -> io::Result<u64> {
        if !self.logs.contains_key(&id) {
            let (log, _) = RecordLog::open(&self.log_path(id, 0))?;
            self.logs.insert(id, OpenLog { generation: 0, log, since_snapshot: 0 });
        }
        let open = self.logs.get_mut(&id).expect("just opened");
        open.log.append(record)?;
        open.since_snapshot += 1;
        Ok(open.since_snapshot)
    }

    /// Makes every append durable (one fsync per session log written since the last call).
    pub fn sync(&mut self) -> io::Result<()> {
        self.logs.values_mut().try_for_each(|open| open.log.sync())
    }

    /// Replaces `id`'s snapshot and log with `snapshot` (the state after every input logged so far).
    pub fn snapshot(&mut self, id: SessionId, snapshot: &[u8]) -> io::Result<()> {
        self.sync()?;
        let generation = self.logs.get(&id).map_or(0, |o| o.generation) + 1;
        let mut record = generation.to_le_bytes().to_vec();
        record.extend_from_slice(snapshot);
        write_atomically(&self.snapshot_path(id), &log::frame(&record))?;
        let (log, _) = RecordLog::open(&self.log_path(id, generation))?;
        self.logs.insert(id, OpenLog { generation, log, since_snapshot: 0 });
        self.remove_logs_except(id, generation)
    }

    /// Records that `id` ended here and deletes its files.
    pub fn finish(&mut self, id: SessionId) -> io::Result<()> {
        self.finished_log.append(id.as_bytes())?;
        self.finished_log.sync()?;
        self.remove_files(id)
    }

    /// Session files on disk (for tests and status).
    pub fn session_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut files = Vec::new();
        for entry in walk(dir)? {
            if entry.file_name().is_some_and(|n| n != "finished.log") {
                files.push(entry);
            }
        }
        Ok(files)
    }
}

fn walk(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_recover_from_snapshot_plus_log_and_finished_ones_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
        {
            let (mut store, recovered) = NodeStore::open(dir.path()).unwrap();
            assert!(recovered.sessions.is_empty());
            store.append(a, b"a1").unwrap();
            store.append(a, b"a2").unwrap();
            store.snapshot(a, b"state after a2").unwrap();
            store.append(a, b"a3").unwrap();
            store.append(b, b"b1").unwrap();
            store.sync().unwrap();
        }
        let (mut store, recovered) = NodeStore::open(dir.path()).unwrap();
        let ra = &recovered.sessions[&a];
        assert_eq!(ra.snapshot.as_deref(), Some(&b"state after a2"[..]));
        assert_eq!(ra.records, vec![b"a3".to_vec()]);
        assert_eq!(recovered.sessions[&b].records, vec![b"b1".to_vec()]);
        store.finish(b).unwrap();
        drop(store);
        let (_, recovered) = NodeStore::open(dir.path()).unwrap();
        assert!(recovered.finished.contains(&b) && !recovered.sessions.contains_key(&b));
        let files = NodeStore::session_files(dir.path()).unwrap();
        assert!(files.iter().all(|f| f.to_string_lossy().contains(&a.to_string())), "{files:?}");
    }

    #[test]
    fn a_crash_between_snapshot_and_log_rotation_keeps_the_newest_pair() {
        let dir = tempfile::tempdir().unwrap();
        let id = uuid::Uuid::from_u128(9);
        {
            let (mut store, _) = NodeStore::open(dir.path()).unwrap();
            store.append(id, b"x").unwrap();
            store.snapshot(id, b"snap").unwrap();
        }
        // As if the old log had not been deleted yet.
        std::fs::write(dir.path().join(format!("{id}.0.log")), log::frame(b"stale")).unwrap();
        let (_, recovered) = NodeStore::open(dir.path()).unwrap();
        assert_eq!(recovered.sessions[&id].records, Vec::<Vec<u8>>::new());
        assert!(!dir.path().join(format!("{id}.0.log")).exists());
    }
}
