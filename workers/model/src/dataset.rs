//! A dataset on disk in the course layout (`DIR/<kind>/*.csv`): listing its files and reading them as typed rows.
//!
//! Reading streams record by record (one reused [`Record`]), so no file is ever held whole in memory. The CSV
//! layer is `simd-csv`: it finds quotes, delimiters and line ends many bytes at a time, about twice as fast as the
//! `csv` crate on our files, which mattered because the client's reading is the pipeline's largest single cost.
//! A malformed row is reported to the caller and skipped; a wrong header refuses the file with its name.

use crate::message::Batch;
use crate::model::{FileKind, MenuItem, Record, RowError, Store, Transaction, TransactionItem, User};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: wrong header for {kind} file: expected `{expected}`, found `{found}`")]
    Header { path: PathBuf, kind: FileKind, expected: String, found: String },
    #[error("{path}: {source}")]
    Csv { path: PathBuf, source: simd_csv::Error },
}

/// The CSV files of one kind in a dataset folder, sorted by name so every reader sees the same order.
pub fn files_of(data_dir: &Path, kind: FileKind) -> Result<Vec<PathBuf>, DatasetError> {
    let dir = data_dir.join(kind.dir_name());
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(&dir).map_err(|source| DatasetError::Io { path: dir.clone(), source })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")))
        .collect();
    files.sort();
    Ok(files)
}

/// A row type that can be parsed from a CSV record of its file kind.
pub trait Row: Sized {
    const KIND: FileKind;
    fn parse(record: &Record) -> Result<Self, RowError>;
    /// Rows of this type as the batch that carries them.
    fn batch(rows: Vec<Self>) -> Batch;
    /// At least the bytes this row takes on the wire (postcard), without encoding it.
    fn encoded_bound(&self) -> usize;
}

macro_rules! impl_row {
    ($ty:ty, $kind:expr, $batch:expr) => {
        impl Row for $ty {
            const KIND: FileKind = $kind;
            fn parse(record: &Record) -> Result<Self, RowError> {
                <$ty>::parse(record)
            }
            fn batch(rows: Vec<Self>) -> Batch {
                $batch(rows)
            }
            fn encoded_bound(&self) -> usize {
                <$ty>::encoded_bound(self)
            }
        }
    };
}
impl_row!(Store, FileKind::Stores, Batch::Stores);
impl_row!(MenuItem, FileKind::MenuItems, Batch::MenuItems);
impl_row!(User, FileKind::Users, Batch::Users);
impl_row!(Transaction, FileKind::Transactions, Batch::Transactions);
impl_row!(TransactionItem, FileKind::TransactionItems, Batch::TransactionItems);

/// Work on the rows of one kind, written once for every row type: [`with_row_type`] runs it with the type of a
/// kind known only at run time (the one place that maps a [`FileKind`] to its [`Row`]).
pub trait ForRowType {
    type Output;
    fn run<R: Row>(self) -> Self::Output;
}

/// Runs `work` with `kind`'s row type.
pub fn with_row_type<W: ForRowType>(kind: FileKind, work: W) -> W::Output {
    match kind {
        FileKind::Stores => work.run::<Store>(),
        FileKind::MenuItems => work.run::<MenuItem>(),
        FileKind::Users => work.run::<User>(),
        FileKind::Transactions => work.run::<Transaction>(),
        FileKind::TransactionItems => work.run::<TransactionItem>(),
    }
}

/// A malformed row: where it was and why it was skipped.
#[derive(Debug, Clone)]
pub struct BadRow {
    pub line: u64,
    pub error: String,
}

/// The CSV layer's read buffer: 256 KiB instead of its 8 KiB default read the `full` items 16 % faster (longer
/// stretches for its vectorized search, fewer reads); larger gained nothing.
const READ_BUFFER: usize = 256 * 1024;

fn csv_reader(file: File, has_headers: bool) -> simd_csv::Reader<File> {
    simd_csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(has_headers)
        .buffer_capacity(READ_BUFFER)
        .from_reader(file)
}

/// Opens a CSV file of `kind` and checks its header. CRLF, quoted fields and a byte-order mark are handled by the
/// CSV layer.
pub fn open_csv(path: &Path, kind: FileKind) -> Result<simd_csv::Reader<File>, DatasetError> {
    let file = File::open(path).map_err(|source| DatasetError::Io { path: path.to_owned(), source })?;
    let mut reader = csv_reader(file, true);
    let header = reader.byte_headers().map_err(|source| DatasetError::Csv { path: path.to_owned(), source })?;
    let found: Vec<String> =
        header.iter().map(|f| String::from_utf8_lossy(f).trim_start_matches('\u{feff}').trim().to_owned()).collect();
    if found != kind.header() {
        return Err(DatasetError::Header {
            path: path.to_owned(),
            kind,
            expected: kind.header().join(","),
            found: found.join(","),
        });
    }
    Ok(reader)
}

/// Reads every row of one file, calling `on_row` for each good row and `on_bad` for each malformed one.
pub fn read_file<R: Row>(
    path: &Path,
    mut on_row: impl FnMut(R),
    on_bad: impl FnMut(BadRow),
) -> Result<(), DatasetError> {
    read_file_from(path, None, usize::MAX, |row, _| on_row(row), on_bad)
}

/// Reads the rows of one file from the byte offset `start` (one this function gave, or the first row when
/// `None`), calling `on_row` with each good row and the offset right after it (where the next row starts), and
/// `on_bad` with each malformed one. A row whose encoded bound passes `max_encoded` is malformed too (the client
/// could never send it). A resumed upload seeks to where it left off instead of parsing the file again from its
/// start.
pub fn read_file_from<R: Row>(
    path: &Path,
    start: Option<u64>,
    max_encoded: usize,
    mut on_row: impl FnMut(R, u64),
    mut on_bad: impl FnMut(BadRow),
) -> Result<(), DatasetError> {
    let io_error = |source| DatasetError::Io { path: path.to_owned(), source };
    let mut reader = open_csv(path, R::KIND)?;
    // Offsets are the reader's positions plus `base`: a reader opened past the header counts from there.
    let mut base = 0;
    if let Some(offset) = start {
        let mut file = reader.into_inner();
        file.seek(SeekFrom::Start(offset)).map_err(io_error)?;
        reader = csv_reader(file, false);
        base = offset;
    }
    let mut lines = LineNumbers::new(path);
    let mut record = Record::new();
    loop {
        let row_start = base + reader.position();
        let problem = match reader.read_byte_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => match R::parse(&record) {
                Ok(row) if row.encoded_bound() <= max_encoded => {
                    on_row(row, base + reader.position());
                    continue;
                }
                Ok(row) => format!("a row of {} bytes cannot fit in a frame", row.encoded_bound()),
                Err(e) => e.to_string(),
            },
            // A record the CSV layer itself cannot read is a malformed row too, unless it is an I/O error, which
            // ends the file.
            Err(e) if e.is_io_error() => return Err(DatasetError::Csv { path: path.to_owned(), source: e }),
            Err(e) => e.to_string(),
        };
        let line = lines.of_record_at(row_start).map_err(io_error)?;
        on_bad(BadRow { line, error: problem });
    }
}

/// Line numbers for the rows that need one (malformed rows, to report where they are). The CSV layer does not
/// count lines, and counting them for every row would cost a pass over bytes the parser otherwise skips many at a
/// time; so they are counted here, forward from where the last count stopped: a file with many bad rows is still
/// read once more at most.
struct LineNumbers<'p> {
    path: &'p Path,
    file: Option<File>,
    buf: Vec<u8>,
    /// Line breaks (`\n`) before `counted_to`.
    breaks: u64,
    counted_to: u64,
}

impl<'p> LineNumbers<'p> {
    fn new(path: &'p Path) -> Self {
        LineNumbers { path, file: None, buf: Vec::new(), breaks: 0, counted_to: 0 }
    }

    /// The line (from 1) of the record the reader read from `start`, the offset right after the record before it:
    /// the blank lines the reader skipped before the record are counted.
    fn of_record_at(&mut self, start: u64) -> std::io::Result<u64> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(File::open(self.path)?),
        };
        let buf = &mut self.buf;
        buf.resize(64 * 1024, 0);
        while self.counted_to < start {
            let want = (start - self.counted_to).min(buf.len() as u64) as usize;
            let n = file.read_at(&mut buf[..want], self.counted_to)?;
            if n == 0 {
                break;
            }
            self.breaks += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
            self.counted_to += n as u64;
        }
        // Blank lines are rare: look past them a few bytes at a time.
        let mut line = self.breaks + 1;
        let mut at = start;
        loop {
            let n = file.read_at(&mut buf[..64], at)?;
            for &b in &buf[..n] {
                match b {
                    b'\n' => line += 1,
                    b'\r' => {}
                    _ => return Ok(line),
                }
            }
            if n == 0 {
                return Ok(line);
            }
            at += n as u64;
        }
    }
}

/// Reads every file of `R`'s kind in a dataset folder, in name order.
pub fn read_all<R: Row>(
    data_dir: &Path,
    mut on_row: impl FnMut(R),
    mut on_bad: impl FnMut(&Path, BadRow),
) -> Result<(), DatasetError> {
    for path in files_of(data_dir, R::KIND)? {
        read_file::<R>(&path, &mut on_row, |bad| on_bad(&path, bad))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, kind: FileKind, name: &str, body: &str) -> PathBuf {
        let d = dir.join(kind.dir_name());
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn malformed_rows_are_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let body = "transaction_id,store_id,payment_method_id,voucher_id,user_id,original_amount,discount_applied,final_amount,created_at\r\n\
            a,1,1,,17.0,10.0,0.0,10.0,2024-01-01 10:00:00\r\n\
            b,1,1,,,10.0\r\n\
            c,x,1,,,10.0,0.0,10.0,2024-01-01 10:00:00\r\n\
            \"d,1\",2,1,,,10.0,0.0,80.25,2025-07-01 23:00:00\r\n";
        write(dir.path(), FileKind::Transactions, "transactions_202401.csv", body);
        let mut good = Vec::new();
        let mut bad = Vec::new();
        read_all::<Transaction>(dir.path(), |t| good.push(t), |_, b| bad.push(b)).unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(good[1].transaction_id, "d,1");
        assert_eq!(good[1].final_amount, 8025);
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].line, 3);
        assert!(bad[1].error.contains("store_id"), "{}", bad[1].error);
    }

    #[test]
    fn reading_from_a_position_continues_where_it_was_taken() {
        let dir = tempfile::tempdir().unwrap();
        let body = "store_id,store_name,street,postal_code,city,state,latitude,longitude\n\
            1,a,,,,,,\n2,\"b,\nb\",,,,,,\n3,c,,,,,,\n4,d,,,,,,\n";
        let path = write(dir.path(), FileKind::Stores, "stores.csv", body);
        let mut all = Vec::new();
        let mut after_second = None;
        read_file_from::<Store>(
            &path,
            None,
            usize::MAX,
            |s, next| {
                all.push(s.store_id);
                if s.store_id == 2 {
                    after_second = Some(next);
                }
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(all, vec![1, 2, 3, 4]);
        let mut rest = Vec::new();
        read_file_from::<Store>(&path, after_second, usize::MAX, |s, _| rest.push(s.store_id), |_| {}).unwrap();
        assert_eq!(rest, vec![3, 4], "the quoted newline of row 2 does not confuse the seek");
    }

    /// Line numbers are counted only for malformed rows, from the bytes: they must still name the physical line
    /// a row starts on, past blank lines, CRLF line ends and a quoted field that spans lines, and after a seek.
    #[test]
    fn malformed_rows_are_reported_at_their_physical_line() {
        let dir = tempfile::tempdir().unwrap();
        let body = "\u{feff}store_id,store_name,street,postal_code,city,state,latitude,longitude\r\n\
            1,a,,,,,,\r\n\
            x,bad id,,,,,,\r\n\
            \r\n\
            \r\n\
            2,\"b\r\nb\",,,,,,\r\n\
            3,too few\r\n\
            4,d,,,,,,\r\n\
            y,last and unterminated,,,,,,";
        let path = write(dir.path(), FileKind::Stores, "stores.csv", body);
        let read_from = |start: Option<u64>| {
            let (mut good, mut bad, mut after_first) = (Vec::new(), Vec::new(), None);
            read_file_from::<Store>(
                &path,
                start,
                usize::MAX,
                |s, next| {
                    after_first.get_or_insert(next);
                    good.push(s.store_id);
                },
                |b| bad.push(b.line),
            )
            .unwrap();
            (good, bad, after_first)
        };
        let (good, bad, after_first) = read_from(None);
        assert_eq!(good, vec![1, 2, 4]);
        assert_eq!(bad, vec![3, 8, 10], "lines of `x`, `3` and `y`");
        let (good, bad, _) = read_from(after_first);
        assert_eq!((good, bad), (vec![2, 4], vec![3, 8, 10]), "the same lines after a seek past row 1");
    }

    #[test]
    fn rows_too_large_to_send_are_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let body = format!(
            "item_id,item_name,category,price,is_seasonal,available_from,available_to\n\
            1,short,,,,,\n2,{},,,,,\n3,short,,,,,\n",
            "x".repeat(500)
        );
        let path = write(dir.path(), FileKind::MenuItems, "menu_items.csv", &body);
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        read_file_from::<MenuItem>(&path, None, 100, |m, _| good.push(m.item_id), |b| bad.push(b)).unwrap();
        assert_eq!(good, vec![1, 3]);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 3);
        assert!(bad[0].error.contains("cannot fit in a frame"), "{}", bad[0].error);
    }

    #[test]
    fn wrong_header_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), FileKind::Stores, "stores.csv", "id,name\n1,a\n");
        let err = read_all::<Store>(dir.path(), |_| {}, |_, _| {}).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&p.display().to_string()) && msg.contains("wrong header"), "{msg}");
    }
}
