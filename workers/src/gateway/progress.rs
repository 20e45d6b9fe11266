//! How far each session's upload is durably in the pipeline, so a client resuming after a gateway restart sends
//! only what follows. One small log per session (`<session>.upload`): records of `(file kind, batches)`, each
//! written after every batch of that kind up to that count was confirmed by the broker.

use crate::message::SessionId;
use crate::model::FileKind;
use crate::state::log::RecordLog;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;

pub struct UploadLog {
    log: RecordLog,
}

impl UploadLog {
    /// Opens the session's log; returns it with the batches of each kind known to be in the pipeline.
    pub fn open(dir: &Path, session: SessionId) -> io::Result<(UploadLog, BTreeMap<FileKind, u64>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{session}.upload"));
        let (log, recovery) = RecordLog::open(&path)?;
        let mut done: BTreeMap<FileKind, u64> = BTreeMap::new();
        for record in recovery.records {
            if let Ok((kind, batches)) = postcard::from_bytes::<(FileKind, u64)>(&record) {
                let entry = done.entry(kind).or_default();
                *entry = (*entry).max(batches);
            }
        }
        Ok((UploadLog { log }, done))
    }

    /// Records, durably, that the first `batches` batches of `kind` are in the pipeline.
    pub fn record(&mut self, kind: FileKind, batches: u64) -> io::Result<()> {
        self.log.append(&postcard::to_allocvec(&(kind, batches)).expect("a record serializes"))?;
        self.log.sync()
    }

    /// The session is over: its log goes.
    pub fn remove(dir: &Path, session: SessionId) {
        let _ = std::fs::remove_file(dir.join(format!("{session}.upload")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_survives_reopening_and_keeps_the_furthest_count() {
        let dir = tempfile::tempdir().unwrap();
        let session = uuid::Uuid::from_u128(5);
        let (mut log, done) = UploadLog::open(dir.path(), session).unwrap();
        assert!(done.is_empty());
        log.record(FileKind::Users, 256).unwrap();
        log.record(FileKind::Users, 512).unwrap();
        log.record(FileKind::Stores, 1).unwrap();
        drop(log);
        let (_, done) = UploadLog::open(dir.path(), session).unwrap();
        assert_eq!(done, BTreeMap::from([(FileKind::Stores, 1), (FileKind::Users, 512)]));
        UploadLog::remove(dir.path(), session);
        assert!(UploadLog::open(dir.path(), session).unwrap().1.is_empty());
    }
}
