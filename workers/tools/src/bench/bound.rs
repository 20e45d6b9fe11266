//! The read-and-parse bound: how long reading every file of a dataset and parsing each row into the pipeline's
//! row types takes, with no query work at all, on one thread and on several (files dealt out to the threads,
//! biggest first). No engine that reads these files can beat it by much; the benchmark prints it beside the
//! pipeline, the reference and DuckDB.

use coffee_model::dataset::{self, ForRowType, Row};
use coffee_model::model::FileKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Reads and parses every file of `data` with `threads` threads; the time it took and the rows parsed.
pub fn read_and_parse(data: &Path, threads: usize) -> anyhow::Result<(Duration, u64)> {
    let mut files: Vec<(FileKind, PathBuf, u64)> = Vec::new();
    for kind in FileKind::ALL {
        for path in dataset::files_of(data, kind)? {
            let size = std::fs::metadata(&path)?.len();
            files.push((kind, path, size));
        }
    }
    // Biggest first, each to the thread with the least so far.
    files.sort_by_key(|(_, _, size)| std::cmp::Reverse(*size));
    let threads = threads.max(1);
    let mut shares: Vec<(u64, Vec<(FileKind, PathBuf)>)> = vec![(0, Vec::new()); threads];
    for (kind, path, size) in files {
        let least = shares.iter_mut().min_by_key(|(total, _)| *total).expect("one thread at least");
        least.0 += size;
        least.1.push((kind, path));
    }
    let started = Instant::now();
    let rows = std::thread::scope(|scope| {
        let workers: Vec<_> = shares
            .into_iter()
            .map(|(_, share)| {
                scope.spawn(move || -> anyhow::Result<u64> {
                    let mut rows = 0;
                    for (kind, path) in share {
                        rows += parse(kind, &path)?;
                    }
                    Ok(rows)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a parsing thread")).sum::<anyhow::Result<u64>>()
    })?;
    Ok((started.elapsed(), rows))
}

/// Parses one file into its rows (dropped at once); how many parsed.
fn parse(kind: FileKind, path: &Path) -> anyhow::Result<u64> {
    struct Count<'a>(&'a Path);
    impl ForRowType for Count<'_> {
        type Output = anyhow::Result<u64>;
        fn run<R: Row>(self) -> Self::Output {
            let mut rows = 0;
            dataset::read_file::<R>(self.0, |_: R| rows += 1, |_| {})?;
            Ok(rows)
        }
    }
    dataset::with_row_type(kind, Count(path))
}
