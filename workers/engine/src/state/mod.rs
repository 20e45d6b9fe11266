//! Durable state of a stage replica, per session: a snapshot plus the log of the inputs applied since.
//!
//! Files in the replica's folder:
//! - `<session>.snap`: one checksummed record of any size ([`log::frame_whole`]), `[generation: u64 LE][snapshot
//!   bytes]`, written atomically.
//! - `<session>.<generation>.log`: the inputs applied after that snapshot (generation 0: since the start).
//! - `finished.log`: the ids of the sessions that ended here, so a late duplicate cannot reopen one. Only the
//!   newest [`DEFAULT_TOMBSTONES`] are kept (the file is compacted past twice that): a session's messages stop
//!   coming soon after it ends, and a session reopened by a very late one is purged when its lease runs out.
//!
//! A new snapshot takes the next generation and only then is the previous log deleted, so a crash at any point
//! leaves either the old snapshot with its log or the new one with an empty log. Creating and deleting files is
//! made durable (the folder synced) in [`NodeStore::sync`] and [`NodeStore::finish`], before the input that
//! caused it is acked.

pub mod disk;
pub mod log;

use coffee_model::wire::SessionId;
use disk::{Disk, RealDisk};
use log::RecordLog;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Tombstones of ended sessions a replica keeps, unless told otherwise.
pub const DEFAULT_TOMBSTONES: usize = 10_000;

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

/// The ids of the newest sessions that ended here, oldest first, at most `cap`.
struct Tombstones {
    order: VecDeque<SessionId>,
    set: HashSet<SessionId>,
    cap: usize,
}

impl Tombstones {
    fn new(cap: usize) -> Tombstones {
        Tombstones { order: VecDeque::new(), set: HashSet::new(), cap: cap.max(1) }
    }

    fn insert(&mut self, id: SessionId) {
        if self.set.insert(id) {
            self.order.push_back(id);
        }
        while self.order.len() > self.cap {
            let oldest = self.order.pop_front().expect("over the cap");
            self.set.remove(&oldest);
        }
    }
}

/// The durable sessions of one stage replica.
pub struct NodeStore {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    /// The folder's id ([`FOLDER_ID`]).
    folder_id: uuid::Uuid,
    logs: HashMap<SessionId, OpenLog>,
    finished_log: RecordLog,
    /// Records in `finished.log`: past twice the cap, it is rewritten with the tombstones kept.
    finished_records: usize,
    tombstones: Tombstones,
    /// Files were created or deleted since the folder was last synced.
    dir_dirty: bool,
}

/// The file that names a state folder: a random id, written (durably) the first time the folder is opened. The
/// broker records which folder holds a replica's state by this id ([`crate::ownership`]), so that a process on
/// another folder (another host's, or a folder set apart) never serves the replica.
pub const FOLDER_ID: &str = "folder-id";

/// The file that says which format a folder's state is in: [`FORMAT`], as text. A build reads only its own
/// format, and refuses a folder of another rather than misread it. A folder without the file was written
/// before formats were numbered, in format 1.
pub const FORMAT_FILE: &str = "format";

/// The format of the state this build writes and reads: the layout of this module's files, the snapshot's
/// encoding (postcard of the replica's session) and the logged inputs' (the wire's envelopes). Raise it with any
/// change to one of them.
pub const FORMAT: u32 = 1;

/// The files of a node's folder that are not a session's: what the folder keeps once every session ended.
pub const BOOKKEEPING: [&str; 5] =
    ["finished.log", crate::incarnation::LOCK_FILE, crate::incarnation::COUNTER_FILE, FOLDER_ID, FORMAT_FILE];

/// The format of the state in `dir`, as its [`FORMAT_FILE`] says; recorded as this build's [`FORMAT`] (and the
/// folder made) when the folder has no such file. A file that does not parse is no format this build knows.
pub fn format_of(disk: &dyn Disk, dir: &Path) -> io::Result<Option<u32>> {
    disk.create_dir_all(dir)?;
    let path = dir.join(FORMAT_FILE);
    match disk.read(&path)? {
        Some(bytes) => Ok(std::str::from_utf8(&bytes).ok().and_then(|text| text.trim().parse().ok())),
        None => {
            disk::write_atomically(disk, &path, format!("{FORMAT}\n").as_bytes())?;
            Ok(Some(FORMAT))
        }
    }
}

/// The id of the folder `dir`, made (and the folder with it) the first time it is asked for.
pub fn folder_id(disk: &dyn Disk, dir: &Path) -> io::Result<uuid::Uuid> {
    disk.create_dir_all(dir)?;
    let path = dir.join(FOLDER_ID);
    if let Some(id) = disk.read(&path)?.and_then(|bytes| uuid::Uuid::from_slice(&bytes).ok()) {
        return Ok(id);
    }
    let id = uuid::Uuid::new_v4();
    disk::write_atomically(disk, &path, id.as_bytes())?;
    Ok(id)
}

/// What a node's folder held when it started.
pub struct Recovered {
    pub sessions: HashMap<SessionId, RecoveredSession>,
}

fn session_of(name: &str) -> Option<SessionId> {
    name.split('.').next().and_then(|id| id.parse().ok())
}

impl NodeStore {
    /// Opens the folder on the machine's disk, keeping the default number of tombstones.
    pub fn open(dir: &Path) -> io::Result<(NodeStore, Recovered)> {
        Self::open_on(Arc::new(RealDisk), dir, DEFAULT_TOMBSTONES)
    }

    /// Opens the folder, recovering every session and cleaning what a crash left half done.
    pub fn open_on(disk: Arc<dyn Disk>, dir: &Path, tombstones: usize) -> io::Result<(NodeStore, Recovered)> {
        disk.create_dir_all(dir)?;
        let folder_id = folder_id(&*disk, dir)?;
        let finished_path = dir.join("finished.log");
        let (finished_log, recovery) = RecordLog::open_on(&*disk, &finished_path)?;
        let mut kept = Tombstones::new(tombstones);
        for id in recovery.records.iter().filter_map(|r| uuid::Uuid::from_slice(r).ok()) {
            kept.insert(id);
        }
        let mut store = NodeStore {
            disk,
            dir: dir.to_owned(),
            folder_id,
            logs: HashMap::new(),
            finished_log,
            finished_records: recovery.records.len(),
            tombstones: kept,
            dir_dirty: true, // finished.log may have just been created
        };
        let ids: HashSet<SessionId> = store.disk.list(dir)?.iter().filter_map(|n| session_of(n)).collect();
        let mut sessions = HashMap::new();
        for id in ids {
            if store.is_finished(id) {
                store.remove_files(id)?; // it ended, but the crash came before its files were deleted
                continue;
            }
            sessions.insert(id, store.recover(id)?);
        }
        store.compact_tombstones()?;
        store.sync_dir()?;
        Ok((store, Recovered { sessions }))
    }

    /// The folder's id ([`FOLDER_ID`]).
    pub fn folder_id(&self) -> uuid::Uuid {
        self.folder_id
    }

    /// Whether `id` ended here (as far as the kept tombstones go).
    pub fn is_finished(&self, id: SessionId) -> bool {
        self.tombstones.set.contains(&id)
    }

    /// How many tombstones are kept in memory.
    pub fn tombstones(&self) -> usize {
        self.tombstones.order.len()
    }

    fn snapshot_path(&self, id: SessionId) -> PathBuf {
        self.dir.join(format!("{id}.snap"))
    }

    fn log_path(&self, id: SessionId, generation: u64) -> PathBuf {
        self.dir.join(format!("{id}.{generation}.log"))
    }

    fn recover(&mut self, id: SessionId) -> io::Result<RecoveredSession> {
        let (generation, snapshot) = match self.disk.read(&self.snapshot_path(id))? {
            Some(bytes) => match log::parse_whole(&bytes) {
                Some(record) if record.len() >= 8 => {
                    let generation = u64::from_le_bytes(record[..8].try_into().expect("8 bytes"));
                    (generation, Some(record[8..].to_vec()))
                }
                // A snapshot is written whole or not at all (atomic rename), so a bad one is disk corruption.
                _ => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("corrupt snapshot of {id}"))),
            },
            None => (0, None),
        };
        self.remove_logs_except(id, generation)?;
        let (log, recovery) = RecordLog::open_on(&*self.disk, &self.log_path(id, generation))?;
        self.dir_dirty = true;
        if recovery.dropped_bytes > 0 {
            tracing::warn!(session = %id, dropped = recovery.dropped_bytes, "cut a torn or corrupt log tail");
        }
        let since_snapshot = recovery.records.len() as u64;
        self.logs.insert(id, OpenLog { generation, log, since_snapshot });
        Ok(RecoveredSession { snapshot, records: recovery.records })
    }

    fn remove_logs_except(&mut self, id: SessionId, keep: u64) -> io::Result<()> {
        let prefix = format!("{id}.");
        let keep = format!("{id}.{keep}.log");
        for name in self.disk.list(&self.dir)? {
            if name.starts_with(&prefix) && name.ends_with(".log") && name != keep {
                self.disk.remove(&self.dir.join(&name))?;
                self.dir_dirty = true;
            }
        }
        Ok(())
    }

    fn remove_files(&mut self, id: SessionId) -> io::Result<()> {
        self.logs.remove(&id);
        let prefix = format!("{id}.");
        for name in self.disk.list(&self.dir)? {
            if name.starts_with(&prefix) {
                self.disk.remove(&self.dir.join(&name))?;
                self.dir_dirty = true;
            }
        }
        Ok(())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        if self.dir_dirty && !crate::planted::active(crate::planted::Bug::NoDirFsync) {
            self.disk.sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Appends one applied input of `id` (durable after [`NodeStore::sync`]); returns how many inputs its log holds.
    pub fn append(&mut self, id: SessionId, record: &[u8]) -> io::Result<u64> {
        if !self.logs.contains_key(&id) {
            let (log, _) = RecordLog::open_on(&*self.disk, &self.log_path(id, 0))?;
            self.dir_dirty = true;
            self.logs.insert(id, OpenLog { generation: 0, log, since_snapshot: 0 });
        }
        let open = self.logs.get_mut(&id).expect("just opened");
        open.log.append(record)?;
        open.since_snapshot += 1;
        Ok(open.since_snapshot)
    }

    /// Makes every append durable (one fsync per session log written since the last call), and the logs
    /// created since by name (one fsync of the folder).
    pub fn sync(&mut self) -> io::Result<()> {
        if !crate::planted::active(crate::planted::Bug::AckBeforeFsync) {
            self.logs.values_mut().try_for_each(|open| open.log.sync())?;
        }
        self.sync_dir()
    }

    /// Replaces `id`'s snapshot and log with `snapshot` (the state after every input logged so far).
    pub fn snapshot(&mut self, id: SessionId, snapshot: &[u8]) -> io::Result<()> {
        self.sync()?;
        let generation = self.logs.get(&id).map_or(0, |o| o.generation) + 1;
        let mut record = generation.to_le_bytes().to_vec();
        record.extend_from_slice(snapshot);
        disk::write_atomically(&*self.disk, &self.snapshot_path(id), &log::frame_whole(&record))?;
        let (log, _) = RecordLog::open_on(&*self.disk, &self.log_path(id, generation))?;
        self.dir_dirty = true;
        self.logs.insert(id, OpenLog { generation, log, since_snapshot: 0 });
        self.remove_logs_except(id, generation)?;
        self.sync_dir()
    }

    /// Records, durably, that `id` ended here, and deletes its files (durably too).
    pub fn finish(&mut self, id: SessionId) -> io::Result<()> {
        self.finished_log.append(id.as_bytes())?;
        self.finished_log.sync()?;
        self.finished_records += 1;
        self.tombstones.insert(id);
        self.remove_files(id)?;
        self.compact_tombstones()?;
        self.sync_dir()
    }

    /// Rewrites `finished.log` with the kept tombstones once it holds twice as many records.
    fn compact_tombstones(&mut self) -> io::Result<()> {
        if self.finished_records <= 2 * self.tombstones.cap {
            return Ok(());
        }
        let path = self.dir.join("finished.log");
        let kept: Vec<u8> = self.tombstones.order.iter().flat_map(|id| log::frame(id.as_bytes())).collect();
        disk::write_atomically(&*self.disk, &path, &kept)?;
        self.finished_log = RecordLog::open_on(&*self.disk, &path)?.0;
        self.finished_records = self.tombstones.order.len();
        Ok(())
    }

    /// Session files on disk (for tests and status).
    pub fn session_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut files = Vec::new();
        for entry in walk(dir)? {
            if entry.file_name().is_some_and(|n| !BOOKKEEPING.iter().any(|b| n == *b)) {
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

/// Bytes free for an unprivileged writer on the file system that holds `dir` (`statvfs`).
pub fn available_bytes(dir: &Path) -> std::io::Result<u64> {
    let stats = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(stats.blocks_available().saturating_mul(stats.fragment_size()))
}

/// What a replica's folder holds now: bytes of session logs, bytes of snapshots, and how long ago the newest
/// snapshot was written. Read from the file system (for the heartbeat), not through the store.
pub fn footprint(dir: &Path) -> (u64, u64, Option<std::time::Duration>) {
    let (mut logs, mut snapshots, mut newest) = (0, 0, None::<std::time::SystemTime>);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.metadata() else { continue };
        if session_of(&name).is_none() {
            continue; // finished.log, the lock, the incarnation counter
        }
        if name.ends_with(".snap") {
            snapshots += meta.len();
            newest = newest.max(meta.modified().ok());
        } else if name.ends_with(".log") {
            logs += meta.len();
        }
    }
    (logs, snapshots, newest.and_then(|at| at.elapsed().ok()))
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
        let (store, recovered) = NodeStore::open(dir.path()).unwrap();
        assert!(store.is_finished(b) && !recovered.sessions.contains_key(&b));
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

    /// A snapshot past 64 MiB (the old limit of a log record, which snapshots shared) is read back whole.
    #[test]
    fn a_snapshot_of_any_size_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let id = uuid::Uuid::from_u128(3);
        let state: Vec<u8> = (0..70 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
        {
            let (mut store, _) = NodeStore::open(dir.path()).unwrap();
            store.append(id, b"x").unwrap();
            store.snapshot(id, &state).unwrap();
            store.append(id, b"after").unwrap();
            store.sync().unwrap();
        }
        let (_, recovered) = NodeStore::open(dir.path()).unwrap();
        let session = &recovered.sessions[&id];
        assert!(session.snapshot.as_deref() == Some(&state[..]), "the snapshot comes back whole");
        assert_eq!(session.records, vec![b"after".to_vec()]);
    }

    fn sim_store(disk: &disk::SimDisk, tombstones: usize) -> (NodeStore, Recovered) {
        NodeStore::open_on(Arc::new(disk.clone()), Path::new("/sim/q3_agg-0"), tombstones).unwrap()
    }

    /// What `sync` and `finish` return from is what a power cut keeps: a new session's log, and a session's
    /// files gone, survive by name too (the folder is synced), not only by content.
    #[test]
    fn creations_and_removals_are_durable_once_synced() {
        let disk = disk::SimDisk::new();
        let (a, b) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
        {
            let (mut store, _) = sim_store(&disk, 10);
            store.append(a, b"a1").unwrap();
            store.append(b, b"b1").unwrap();
            store.sync().unwrap(); // the inputs are acked after this
            store.finish(b).unwrap();
        }
        disk.crash(|_| disk::Tear::Nothing);
        let (store, recovered) = sim_store(&disk, 10);
        assert_eq!(recovered.sessions.get(&a).map(|s| s.records.clone()), Some(vec![b"a1".to_vec()]));
        assert!(store.is_finished(b) && !recovered.sessions.contains_key(&b));
        assert!(disk.paths().iter().all(|p| !p.to_string_lossy().contains(&b.to_string())), "{:?}", disk.paths());
    }

    /// A crash anywhere in a snapshot leaves a session whole: every input logged before it is in the snapshot
    /// or the log that recovery reads.
    #[test]
    fn a_crash_at_any_step_of_a_snapshot_loses_nothing() {
        for tear in [disk::Tear::Nothing, disk::Tear::Everything, disk::Tear::Prefix(5)] {
            let disk = disk::SimDisk::new();
            let id = uuid::Uuid::from_u128(4);
            {
                let (mut store, _) = sim_store(&disk, 10);
                store.append(id, b"one").unwrap();
                store.append(id, b"two").unwrap();
                store.sync().unwrap();
                store.snapshot(id, b"after two").unwrap();
                store.append(id, b"three").unwrap(); // never synced: may be lost
            }
            disk.crash(|_| tear);
            let (_, recovered) = sim_store(&disk, 10);
            let session = &recovered.sessions[&id];
            assert_eq!(session.snapshot.as_deref(), Some(&b"after two"[..]));
            assert!(session.records.is_empty() || session.records == vec![b"three".to_vec()], "{:?}", session.records);
        }
    }

    /// Tombstones are bounded in memory and on disk: the newest are kept, across restarts.
    #[test]
    fn tombstones_keep_the_newest_and_the_file_stays_bounded() {
        let disk = disk::SimDisk::new();
        let ids: Vec<SessionId> = (0..350u128).map(uuid::Uuid::from_u128).collect();
        {
            let (mut store, _) = sim_store(&disk, 100);
            for &id in &ids {
                store.append(id, b"input").unwrap();
                store.sync().unwrap();
                store.finish(id).unwrap();
                assert!(store.tombstones() <= 100);
            }
            assert!(store.is_finished(ids[349]) && store.is_finished(ids[250]) && !store.is_finished(ids[249]));
        }
        let finished = disk.read(Path::new("/sim/q3_agg-0/finished.log")).unwrap().unwrap();
        assert!(finished.len() <= 2 * 100 * 24, "finished.log holds {} bytes", finished.len());
        disk.crash(|_| disk::Tear::Nothing);
        let (store, _) = sim_store(&disk, 100);
        assert_eq!(store.tombstones(), 100);
        assert!(store.is_finished(ids[349]) && store.is_finished(ids[250]) && !store.is_finished(ids[249]));
    }
}
