//! What the gateway keeps durably per session, so a client can resume after a gateway restart: the session's
//! secret (only its client knows it, so nobody else can resume the session and read its results), and how far
//! the upload is durably in the pipeline (a resumed client sends only what follows). One small log per session,
//! `<session>.upload`; a progress record is written after every batch of its kind up to that count was
//! confirmed by the broker.

use crate::state::disk::{Disk, RealDisk};
use crate::state::log::RecordLog;
use coffee_model::model::FileKind;
use coffee_model::wire::SessionId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
enum Record {
    Secret(u128),
    Progress(FileKind, u64),
    /// The session was abandoned and its purge began: it can no longer be resumed.
    Purging,
}

pub struct UploadLog {
    log: RecordLog,
}

/// What a session's log says.
pub struct Recovered {
    pub secret: Option<u128>,
    pub done: BTreeMap<FileKind, u64>,
    /// Its purge began (and may not have ended: a gateway that finds this finishes it).
    pub purging: bool,
}

fn path(dir: &Path, session: SessionId) -> PathBuf {
    dir.join(format!("{session}.upload"))
}

impl UploadLog {
    /// Starts the log of a new session with its secret.
    pub fn create(dir: &Path, session: SessionId, secret: u128) -> io::Result<UploadLog> {
        UploadLog::create_on(&RealDisk, dir, session, secret)
    }

    /// [`UploadLog::create`] on any disk: durable, by name too, when it returns.
    pub fn create_on(disk: &dyn Disk, dir: &Path, session: SessionId, secret: u128) -> io::Result<UploadLog> {
        disk.create_dir_all(dir)?;
        let (log, _) = RecordLog::open_on(disk, &path(dir, session))?;
        let mut log = UploadLog { log };
        log.append(&Record::Secret(secret))?;
        // The session exists durably, by name too, before its client is welcomed.
        disk.sync_dir(dir)?;
        Ok(log)
    }

    /// Opens the log of an existing session; `None` if the gateway never opened that session (or it ended).
    pub fn resume(dir: &Path, session: SessionId) -> io::Result<Option<(UploadLog, Recovered)>> {
        UploadLog::resume_on(&RealDisk, dir, session)
    }

    /// [`UploadLog::resume`] on any disk.
    pub fn resume_on(disk: &dyn Disk, dir: &Path, session: SessionId) -> io::Result<Option<(UploadLog, Recovered)>> {
        let path = path(dir, session);
        if disk.read(&path)?.is_none() {
            return Ok(None);
        }
        let (log, recovery) = RecordLog::open_on(disk, &path)?;
        let mut recovered = Recovered { secret: None, done: BTreeMap::new(), purging: false };
        for record in recovery.records {
            match postcard::from_bytes::<Record>(&record) {
                Ok(Record::Secret(secret)) => recovered.secret = Some(secret),
                Ok(Record::Progress(kind, batches)) => {
                    let entry = recovered.done.entry(kind).or_default();
                    *entry = (*entry).max(batches);
                }
                Ok(Record::Purging) => recovered.purging = true,
                Err(_) => {}
            }
        }
        Ok(Some((UploadLog { log }, recovered)))
    }

    fn append(&mut self, record: &Record) -> io::Result<()> {
        self.log.append(&postcard::to_allocvec(record).expect("a record serializes"))?;
        self.log.sync()
    }

    /// Records, durably, that the first `batches` batches of `kind` are in the pipeline.
    pub fn record(&mut self, kind: FileKind, batches: u64) -> io::Result<()> {
        self.append(&Record::Progress(kind, batches))
    }

    /// Records, durably, that the session's purge begins.
    pub fn record_purging(&mut self) -> io::Result<()> {
        self.append(&Record::Purging)
    }

    /// The sessions that have a log here (open, or left by a gateway that died), each with whether its purge
    /// had begun.
    pub fn sessions(dir: &Path) -> Vec<(SessionId, bool)> {
        UploadLog::sessions_on(&RealDisk, dir)
    }

    /// [`UploadLog::sessions`] on any disk.
    pub fn sessions_on(disk: &dyn Disk, dir: &Path) -> Vec<(SessionId, bool)> {
        UploadLog::ids_on(disk, dir)
            .into_iter()
            .filter_map(|id| Some((id, UploadLog::resume_on(disk, dir, id).ok()??.1.purging)))
            .collect()
    }

    /// The sessions that have a log here (a listing of the folder, nothing read).
    pub fn ids(dir: &Path) -> Vec<SessionId> {
        UploadLog::ids_on(&RealDisk, dir)
    }

    /// [`UploadLog::ids`] on any disk.
    pub fn ids_on(disk: &dyn Disk, dir: &Path) -> Vec<SessionId> {
        let Ok(names) = disk.list(dir) else { return Vec::new() };
        names.iter().filter_map(|name| name.strip_suffix(".upload")?.parse().ok()).collect()
    }

    /// The session is over: its log goes (durably: a power cut must not bring the session back).
    pub fn remove(dir: &Path, session: SessionId) {
        UploadLog::remove_on(&RealDisk, dir, session)
    }

    /// [`UploadLog::remove`] on any disk.
    pub fn remove_on(disk: &dyn Disk, dir: &Path, session: SessionId) {
        let _ = disk.remove(&path(dir, session));
        let _ = disk.sync_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_and_progress_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let session = uuid::Uuid::from_u128(5);
        assert!(UploadLog::resume(dir.path(), session).unwrap().is_none(), "unknown session");
        let mut log = UploadLog::create(dir.path(), session, 42).unwrap();
        log.record(FileKind::Users, 128).unwrap();
        log.record(FileKind::Users, 256).unwrap();
        log.record(FileKind::Stores, 1).unwrap();
        drop(log);
        let (_, recovered) = UploadLog::resume(dir.path(), session).unwrap().unwrap();
        assert_eq!(recovered.secret, Some(42));
        assert_eq!(recovered.done, BTreeMap::from([(FileKind::Stores, 1), (FileKind::Users, 256)]));
        UploadLog::remove(dir.path(), session);
        assert!(UploadLog::resume(dir.path(), session).unwrap().is_none());
    }

    /// On a disk that loses at a power cut whatever was not fsynced (file contents and folder entries alike),
    /// cut at the worst moment after each step.
    #[test]
    fn what_the_log_said_survives_a_power_cut_and_a_removal_stays_removed() {
        use crate::state::disk::{SimDisk, Tear};
        let (disk, dir) = (SimDisk::new(), Path::new("/gateway/state"));
        let session = uuid::Uuid::from_u128(9);
        let log = UploadLog::create_on(&disk, dir, session, 42).unwrap();
        drop(log);
        disk.crash(|_| Tear::Nothing);
        let (mut log, recovered) =
            UploadLog::resume_on(&disk, dir, session).unwrap().expect("a welcomed session exists");
        assert_eq!(recovered.secret, Some(42));
        log.record(FileKind::Users, 128).unwrap();
        log.record_purging().unwrap();
        drop(log);
        disk.crash(|_| Tear::Nothing);
        let (_, recovered) = UploadLog::resume_on(&disk, dir, session).unwrap().unwrap();
        assert_eq!(recovered.done, BTreeMap::from([(FileKind::Users, 128)]), "recorded progress is durable");
        assert!(recovered.purging, "a purge that began is durable");
        assert_eq!(UploadLog::sessions_on(&disk, dir), vec![(session, true)]);
        UploadLog::remove_on(&disk, dir, session);
        disk.crash(|_| Tear::Everything);
        assert!(UploadLog::resume_on(&disk, dir, session).unwrap().is_none(), "an ended session stays ended");
        assert!(UploadLog::ids_on(&disk, dir).is_empty());
    }
}
