//! A dataset on disk in the course layout (`DIR/<kind>/*.csv`): listing its files and reading them as typed rows.
//!
//! Reading streams record by record (one reused `csv::ByteRecord`), so no file is ever held whole in memory.
//! A malformed row is reported to the caller and skipped; a wrong header refuses the file with its name.

use crate::message::Batch;
use crate::model::{FileKind, MenuItem, RowError, Store, Transaction, TransactionItem, User};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: wrong header for {kind} file: expected `{expected}`, found `{found}`")]
    Header { path: PathBuf, kind: FileKind, expected: String, found: String },
    #[error("{path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
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
    fn parse(record: &csv::ByteRecord) -> Result<Self, RowError>;
    /// Rows of this type as the batch that carries them.
    fn batch(rows: Vec<Self>) -> Batch;
    /// At least the bytes this row takes on the wire (postcard), without encoding it.
    fn encoded_bound(&self) -> usize;
}

macro_rules! impl_row {
    ($ty:ty, $kind:expr, $batch:expr) => {
        impl Row for $ty {
            const KIND: FileKind = $kind;
            fn parse(record: &csv::ByteRecord) -> Result<Self, RowError> {
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

/// Opens a CSV file of `kind` and checks its header. CRLF and quoted fields are handled by the `csv` crate.
pub fn open_csv(path: &Path, kind: FileKind) -> Result<csv::Reader<std::fs::File>, DatasetError> {
    let file = std::fs::File::open(path).map_err(|source| DatasetError::Io { path: path.to_owned(), source })?;
    let mut reader = csv::ReaderBuilder::new().flexible(true).has_headers(true).from_reader(file);
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
    read_file_from(path, None, |row, _| on_row(row), on_bad)
}

/// Reads the rows of one file from `start` (a position this function gave, or the first row when `None`),
/// calling `on_row` with each good row and the position right after it (where the next row starts), and
/// `on_bad` with each malformed one. A resumed upload seeks to where it left off instead of parsing the file
/// again from its start.
pub fn read_file_from<R: Row>(
    path: &Path,
    start: Option<&csv::Position>,
    mut on_row: impl FnMut(R, &csv::Position),
    mut on_bad: impl FnMut(BadRow),
) -> Result<(), DatasetError> {
    let mut reader = open_csv(path, R::KIND)?;
    if let Some(start) = start {
        reader.seek(start.clone()).map_err(|source| DatasetError::Csv { path: path.to_owned(), source })?;
    }
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line() + 1;
        match reader.read_byte_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => match R::parse(&record) {
                Ok(row) => on_row(row, reader.position()),
                Err(e) => on_bad(BadRow { line, error: e.to_string() }),
            },
            // A record the CSV layer itself cannot read (bad quoting, invalid UTF-8 is not checked here) is a
            // malformed row too, unless it is an I/O error, which ends the file.
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                return Err(DatasetError::Csv { path: path.to_owned(), source: e })
            }
            Err(e) => on_bad(BadRow { line, error: e.to_string() }),
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
            |s, next| {
                all.push(s.store_id);
                if s.store_id == 2 {
                    after_second = Some(next.clone());
                }
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(all, vec![1, 2, 3, 4]);
        let mut rest = Vec::new();
        read_file_from::<Store>(&path, after_second.as_ref(), |s, _| rest.push(s.store_id), |_| {}).unwrap();
        assert_eq!(rest, vec![3, 4], "the quoted newline of row 2 does not confuse the seek");
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
