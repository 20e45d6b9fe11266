//! Reading a dataset folder into numbered batches for one session, on a blocking thread, a few batches ahead of
//! the connection. Where each batch began is remembered ([`Marks`]), so a resumed upload seeks straight to the
//! first batch the gateway does not have, instead of parsing every file again from its start (on large data that
//! took longer than the gateway waits between two frames).

use super::{FileReport, BAD_ROW_SAMPLES};
use coffee_model::dataset::{self, DatasetError, ForRowType, Row};
use coffee_model::message::Batch;
use coffee_model::model::FileKind;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// What the reading thread hands to the connection.
pub(super) enum Input {
    Batch {
        kind: FileKind,
        seq: u64,
        batch: Batch,
        /// Rows read from the dataset so far, this batch included.
        sent: u64,
    },
    /// A file read to its end (or refused).
    FileDone(FileReport),
    KindDone {
        kind: FileKind,
        batches: u64,
    },
}

/// Where one batch of a kind begins.
#[derive(Debug, Clone)]
struct Mark {
    /// Its file, as an index in the kind's files (sorted by name).
    file: usize,
    /// The byte offset of its first row in that file; `None` for the file's first row.
    position: Option<u64>,
    /// The file's report as it stood before this batch.
    report: FileReport,
    /// Rows read from the dataset before this batch.
    sent: u64,
}

#[derive(Debug, Default)]
struct KindMarks {
    /// `marks[seq]`: where batch `seq` begins (recorded the first time a pass gets there).
    marks: Vec<Mark>,
    /// Once a pass read the kind to its end: its number of batches, and the dataset rows read by then.
    end: Option<(u64, u64)>,
}

/// The marks of every kind, shared by the passes over one dataset (one per connection of a session).
#[derive(Debug, Clone, Default)]
pub(super) struct Marks(Arc<Mutex<BTreeMap<FileKind, KindMarks>>>);

impl Marks {
    fn with<T>(&self, kind: FileKind, f: impl FnOnce(&mut KindMarks) -> T) -> T {
        f(self.0.lock().expect("marks lock").entry(kind).or_default())
    }

    /// Records where batch `seq` of `kind` begins, unless an earlier pass did.
    fn record(&self, kind: FileKind, seq: u64, mark: impl FnOnce() -> Mark) {
        self.with(kind, |k| {
            if k.marks.len() as u64 == seq {
                k.marks.push(mark());
            }
        });
    }
}

fn fresh_report(path: PathBuf, kind: FileKind) -> FileReport {
    FileReport { path, kind, rows_sent: 0, malformed: 0, samples: Vec::new(), refused: None }
}

/// Reads the dataset's kinds in order, skipping the first `skip[kind]` batches of each (those the gateway
/// already has), and hands everything else to `tx`. Stops early if `tx` closes.
pub(super) fn read_dataset(
    source: &Source,
    skip: &BTreeMap<FileKind, u64>,
    marks: &Marks,
    tx: mpsc::Sender<Input>,
) -> Result<(), DatasetError> {
    let mut sent = 0;
    for kind in FileKind::ALL {
        let skip = skip.get(&kind).copied().unwrap_or(0);
        dataset::with_row_type(kind, ReadKind { source, skip, marks, sent: &mut sent, tx: &tx })?;
    }
    Ok(())
}

/// What a pass reads: the dataset's folder, cut into batches of at most `batch_rows` rows whose encoded bounds
/// add up to at most `batch_bytes`.
#[derive(Debug, Clone)]
pub(super) struct Source {
    pub data_dir: PathBuf,
    pub batch_rows: usize,
    pub batch_bytes: usize,
}

/// One kind's files, read from `skip` on: each batch sent down `tx` with its mark recorded in `marks`.
struct ReadKind<'a> {
    source: &'a Source,
    skip: u64,
    marks: &'a Marks,
    sent: &'a mut u64,
    tx: &'a mpsc::Sender<Input>,
}

impl ForRowType for ReadKind<'_> {
    type Output = Result<(), DatasetError>;
    fn run<R: Row>(self) -> Self::Output {
        let ReadKind { source, skip, marks, sent, tx } = self;
        read_kind::<R>(source, skip, marks, sent, tx)
    }
}

fn read_kind<R: Row>(
    source: &Source,
    skip: u64,
    marks: &Marks,
    sent: &mut u64,
    tx: &mpsc::Sender<Input>,
) -> Result<(), DatasetError> {
    let kind = R::KIND;
    let files = dataset::files_of(&source.data_dir, kind)?;
    let report_of = |i: usize| fresh_report(files.get(i).cloned().unwrap_or_default(), kind);
    let (known_end, known_start) = marks.with(kind, |k| (k.end, k.marks.get(skip as usize).cloned()));
    if let Some((batches, sent_after)) = known_end.filter(|&(batches, _)| skip >= batches) {
        // The gateway has every batch of this kind: only its end is said again.
        *sent = sent_after;
        let _ = tx.blocking_send(Input::KindDone { kind, batches });
        return Ok(());
    }
    // Where to start: the mark of the first batch to send, else (no pass got there) the first row, reading
    // and dropping the batches below `skip`.
    let (mut seq, start) = match known_start {
        Some(mark) if skip > 0 => (skip, mark),
        _ => (0, Mark { file: 0, position: None, report: report_of(0), sent: *sent }),
    };
    *sent = start.sent;
    marks.record(kind, seq, || start.clone());
    let batch_rows = source.batch_rows;
    for (i, path) in files.iter().enumerate().skip(start.file) {
        let (position, report) =
            if i == start.file { (start.position, start.report.clone()) } else { (None, report_of(i)) };
        // Shared by the row and bad-row callbacks.
        let report = std::cell::RefCell::new(report);
        let mut rows = Vec::with_capacity(batch_rows);
        // Hands a batch over and records where the next one begins: `next` in this file, or the next file.
        let mut emit = |rows: Vec<R>, seq: &mut u64, next: Option<u64>| {
            let mut report = report.borrow_mut();
            report.rows_sent += rows.len() as u64;
            *sent += rows.len() as u64;
            if *seq >= skip {
                let _ = tx.blocking_send(Input::Batch { kind, seq: *seq, batch: R::batch(rows), sent: *sent });
            }
            *seq += 1;
            let mark = match next {
                Some(position) => Mark { file: i, position: Some(position), report: report.clone(), sent: *sent },
                None => Mark { file: i + 1, position: None, report: report_of(i + 1), sent: *sent },
            };
            marks.record(kind, *seq, || mark);
        };
        // The bytes the rows of `rows` take on the wire at most, and where the row after the last one begins.
        let mut bytes = 0;
        let mut row_start = position;
        let outcome = dataset::read_file_from::<R>(
            path,
            position,
            source.batch_bytes,
            |row, next| {
                let bound = row.encoded_bound();
                if bytes + bound > source.batch_bytes {
                    // `rows` is not empty (one row fits), so a row before this one set `row_start`.
                    let batch = std::mem::replace(&mut rows, Vec::with_capacity(batch_rows));
                    emit(batch, &mut seq, row_start);
                    bytes = 0;
                }
                rows.push(row);
                bytes += bound;
                if rows.len() == batch_rows {
                    let batch = std::mem::replace(&mut rows, Vec::with_capacity(batch_rows));
                    emit(batch, &mut seq, Some(next));
                    bytes = 0;
                }
                row_start = Some(next);
            },
            |bad| {
                let mut report = report.borrow_mut();
                report.malformed += 1;
                if report.samples.len() < BAD_ROW_SAMPLES {
                    report.samples.push(format!("line {}: {}", bad.line, bad.error));
                }
            },
        );
        if !rows.is_empty() {
            emit(rows, &mut seq, None);
        }
        let mut report = report.into_inner();
        if let Err(e) = outcome {
            // A refused file loses only itself: the session goes on with the others.
            report.refused = Some(e.to_string());
        }
        if tx.blocking_send(Input::FileDone(report)).is_err() {
            return Ok(()); // the connection is gone
        }
    }
    marks.with(kind, |k| k.end = Some((seq, *sent)));
    let _ = tx.blocking_send(Input::KindDone { kind, batches: seq });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffee_model::model::Store;

    /// Every input the reading thread hands over, read into a vector (the channel is sized to hold all of it).
    fn read(source: &Source, skip: u64, marks: &Marks) -> Vec<Input> {
        let (tx, mut rx) = mpsc::channel(1024);
        read_dataset(source, &BTreeMap::from([(FileKind::Stores, skip)]), marks, tx).unwrap();
        let mut inputs = Vec::new();
        while let Ok(input) = rx.try_recv() {
            inputs.push(input);
        }
        inputs
    }

    fn batches(inputs: &[Input]) -> Vec<(u64, Vec<Store>)> {
        inputs
            .iter()
            .filter_map(|input| match input {
                Input::Batch { seq, batch: Batch::Stores(rows), .. } => Some((*seq, rows.clone())),
                _ => None,
            })
            .collect()
    }

    /// Batches are cut where their rows' encoded bounds would pass the budget, a row that could never fit a frame
    /// is reported as malformed and skipped, and a resumed pass starts at a batch cut by bytes exactly where the
    /// first pass cut it.
    #[test]
    fn batches_are_cut_by_bytes_and_resume_at_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let stores = dir.path().join(FileKind::Stores.dir_name());
        std::fs::create_dir_all(&stores).unwrap();
        let mut csv = format!("{}\n", FileKind::Stores.header().join(","));
        for i in 0..10 {
            let name = if i == 4 { "x".repeat(5000) } else { format!("{i:0>100}") };
            csv.push_str(&format!("{i},{name},street,1,city,state,0,0\n"));
        }
        std::fs::write(stores.join("stores.csv"), csv).unwrap();
        // A store of a 100-byte name is bounded at 115 bytes: three fit in 400.
        let source = Source { data_dir: dir.path().to_owned(), batch_rows: 1000, batch_bytes: 400 };
        let marks = Marks::default();

        let first = read(&source, 0, &marks);
        let cut = batches(&first);
        let ids: Vec<Vec<u32>> = cut.iter().map(|(_, rows)| rows.iter().map(|s| s.store_id).collect()).collect();
        assert_eq!(ids, [vec![0, 1, 2], vec![3, 5, 6], vec![7, 8, 9]]);
        assert_eq!(cut.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [0, 1, 2]);
        for (_, rows) in &cut {
            let encoded = postcard::to_allocvec(rows).unwrap().len();
            assert!(encoded <= 400, "a batch of {encoded} bytes");
        }
        let report = first.iter().find_map(|i| if let Input::FileDone(r) = i { Some(r.clone()) } else { None });
        let report = report.expect("the file's report");
        assert_eq!((report.rows_sent, report.malformed), (9, 1));
        assert!(
            report.samples[0].contains("line 6: a row of 5015 bytes cannot fit in a frame"),
            "{:?}",
            report.samples
        );

        let resumed = read(&source, 1, &marks);
        assert_eq!(batches(&resumed), cut[1..]);
    }
}
