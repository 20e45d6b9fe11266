//! An append-only log of checksummed records: `[len: u32 LE][crc32: u32 LE][payload]` each.
//!
//! A node can die in the middle of an append, so recovery reads records until the first one that is torn (the
//! file ends inside it) or corrupt (its checksum does not match), and cuts the file there: everything before was
//! written whole, and what follows was never acknowledged to anyone.

use super::disk::{self, AppendFile, Disk, RealDisk};
use std::io;
use std::path::{Path, PathBuf};

const HEADER: usize = 8;

pub struct RecordLog {
    path: PathBuf,
    file: Box<dyn AppendFile>,
    dirty: bool,
}

/// What recovery found in a log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub records: Vec<Vec<u8>>,
    /// Bytes cut from the end (a torn or corrupt tail).
    pub dropped_bytes: u64,
}

impl RecordLog {
    /// Opens (creating if needed) the log at `path` on the machine's disk; see [`RecordLog::open_on`].
    pub fn open(path: &Path) -> io::Result<(RecordLog, Recovery)> {
        Self::open_on(&RealDisk, path)
    }

    /// Opens (creating if needed) the log at `path`, returns its intact records, and truncates a bad tail. A log
    /// this creates is durable by name only once its folder is synced.
    pub fn open_on(disk: &dyn Disk, path: &Path) -> io::Result<(RecordLog, Recovery)> {
        let bytes = disk.read(path)?.unwrap_or_default();
        let (records, good_len) = parse(&bytes);
        let dropped_bytes = (bytes.len() - good_len) as u64;
        let mut file = disk.open_append(path)?;
        if dropped_bytes > 0 {
            file.truncate(good_len as u64)?;
        }
        let log = RecordLog { path: path.to_owned(), file, dirty: false };
        Ok((log, Recovery { records, dropped_bytes }))
    }

    /// Appends one record (buffered: durable only after [`RecordLog::sync`]). A record is at most 4 GiB.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("a log record of {} bytes", payload.len()))
        })?;
        self.file.append(&len.to_le_bytes())?;
        self.file.append(&crc32fast::hash(payload).to_le_bytes())?;
        self.file.append(payload)?;
        self.dirty = true;
        Ok(())
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync()?;
            self.dirty = false;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The intact records of `bytes` and the length they span. A record's length is trusted only as far as the
/// file goes: one that runs past the end is a torn write, whatever length it claims.
fn parse(bytes: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break; // torn: the file ends inside this record
        };
        if crc32fast::hash(payload) != crc {
            break; // corrupt: nothing after it can be trusted
        }
        records.push(payload.to_vec());
        at += HEADER + len;
    }
    (records, at)
}

/// One record in the log's framing, for files that hold a single record.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The record of a single-record file, if it is whole and its checksum matches.
pub fn parse_single(bytes: &[u8]) -> Option<Vec<u8>> {
    let (mut records, len) = parse(bytes);
    (records.len() == 1 && len == bytes.len()).then(|| records.remove(0))
}

/// The framing of a file that holds one record of any size (a snapshot): `[len: u64 LE][crc32: u32 LE][payload]`.
pub fn frame_whole(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + payload.len());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The record of a [`frame_whole`] file, if it is whole and its checksum matches.
pub fn parse_whole(bytes: &[u8]) -> Option<&[u8]> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let crc = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?);
    let payload = bytes.get(12..)?;
    (payload.len() as u64 == len && crc32fast::hash(payload) == crc).then_some(payload)
}

/// Writes `bytes` to `path` atomically on the machine's disk (see [`disk::write_atomically`]).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    disk::write_atomically(&RealDisk, path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn log_with(dir: &Path, records: &[&[u8]]) -> PathBuf {
        let path = dir.join("x.log");
        let (mut log, recovery) = RecordLog::open(&path).unwrap();
        assert_eq!(recovery, Recovery::default());
        for r in records {
            log.append(r).unwrap();
        }
        log.sync().unwrap();
        path
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), &[b"one", b"", b"three"]);
        let (mut log, recovery) = RecordLog::open(&path).unwrap();
        assert_eq!(recovery.records, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        log.append(b"four").unwrap();
        log.sync().unwrap();
        assert_eq!(RecordLog::open(&path).unwrap().1.records.len(), 4);
    }

    #[test]
    fn an_empty_file_is_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.log");
        std::fs::write(&path, b"").unwrap();
        assert_eq!(RecordLog::open(&path).unwrap().1, Recovery::default());
    }

    #[test]
    fn a_truncated_record_is_dropped_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), &[b"whole", b"torn record"]);
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 3).unwrap();
        let (mut log, recovery) = RecordLog::open(&path).unwrap();
        assert_eq!(recovery.records, vec![b"whole".to_vec()]);
        assert_eq!(recovery.dropped_bytes, (HEADER + 11 - 3) as u64);
        // Appending after recovery continues from the cut, so the log stays readable.
        log.append(b"next").unwrap();
        log.sync().unwrap();
        assert_eq!(RecordLog::open(&path).unwrap().1.records, vec![b"whole".to_vec(), b"next".to_vec()]);
    }

    #[test]
    fn a_corrupt_checksum_ends_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), &[b"good", b"flipped", b"after"]);
        let mut bytes = std::fs::read(&path).unwrap();
        let second_payload = HEADER + 4 + HEADER;
        bytes[second_payload] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, recovery) = RecordLog::open(&path).unwrap();
        assert_eq!(recovery.records, vec![b"good".to_vec()]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), (HEADER + 4) as u64);
    }

    #[test]
    fn whole_files_of_any_size_round_trip_and_a_bit_flip_is_refused() {
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut framed = frame_whole(&payload);
        assert_eq!(parse_whole(&framed), Some(&payload[..]));
        assert_eq!(parse_whole(&framed[..framed.len() - 1]), None, "torn");
        framed[100] ^= 1;
        assert_eq!(parse_whole(&framed), None, "corrupt");
        assert_eq!(parse_whole(b"short"), None);
    }

    #[test]
    fn a_header_only_tail_and_a_huge_length_are_torn() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), &[b"ok"]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(RecordLog::open(&path).unwrap().1.records, vec![b"ok".to_vec()]);
    }

    #[test]
    fn atomic_writes_replace_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(!path.with_extension("tmp").exists());
    }
}

/// Property tests: recovery of any file never panics and keeps only whole records, and what is appended is what
/// a reopening reads.
#[cfg(test)]
mod prop_tests {
    use super::*;
    use proptest::prelude::*;

    fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8)
    }

    /// Arbitrary bytes, or a valid log with a random tail (so the checksum path is reached too).
    fn file() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..128),
            (payloads(), prop::collection::vec(any::<u8>(), 0..16)).prop_map(|(records, tail)| records
                .iter()
                .flat_map(|r| frame(r))
                .chain(tail)
                .collect()),
        ]
    }

    proptest! {
        #[test]
        fn any_file_recovers_to_a_prefix_of_whole_records(bytes in file()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p.log");
            std::fs::write(&path, &bytes).unwrap();
            let (_, recovery) = RecordLog::open(&path).unwrap();
            let kept: Vec<u8> = recovery.records.iter().flat_map(|r| frame(r)).collect();
            prop_assert_eq!(&bytes[..kept.len()], kept.as_slice());
            prop_assert_eq!(kept.len() as u64 + recovery.dropped_bytes, bytes.len() as u64);
            prop_assert_eq!(std::fs::read(&path).unwrap(), kept);
        }

        #[test]
        fn append_then_reopen_is_identity(first in payloads(), second in payloads()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.log");
            for batch in [&first, &second] {
                let (mut log, _) = RecordLog::open(&path).unwrap();
                for payload in batch {
                    log.append(payload).unwrap();
                }
                log.sync().unwrap();
            }
            let (_, recovery) = RecordLog::open(&path).unwrap();
            prop_assert_eq!(recovery.records, [first, second].concat());
            prop_assert_eq!(recovery.dropped_bytes, 0);
        }

        #[test]
        fn single_records_round_trip(payload in prop::collection::vec(any::<u8>(), 0..256), junk in any::<Vec<u8>>()) {
            let framed = frame(&payload);
            prop_assert_eq!(parse_single(&framed), Some(payload));
            prop_assert_eq!(parse_single(&framed[..framed.len() - 1]), None);
            let _ = parse_single(&junk);
        }
    }
}
