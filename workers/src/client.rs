//! The client library: sends a dataset folder through the gateway as one session and writes the session's results
//! to `OUT/client-<session>.ndjson` while they arrive. The CLI and the console both use it; they watch a session
//! through [`ClientEvent`]s.

use crate::dataset::{self, DatasetError, Row};
use crate::message::{Batch, Query, SessionId};
use crate::model::{FileKind, MenuItem, Store, Transaction, TransactionItem, User};
use crate::protocol::{ClientFrame, FrameReader, FrameWriter, GatewayFrame};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Rows per batch: large enough that the broker sees few messages, small enough to keep frames well under 1 MiB.
pub const BATCH_ROWS: usize = 2000;

/// Malformed-row messages kept per file for the summary.
const BAD_ROW_SAMPLES: usize = 5;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub gateway: String,
    pub data_dir: PathBuf,
    pub out_dir: PathBuf,
}

/// What happened to one input file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    pub kind: FileKind,
    pub rows_sent: u64,
    pub malformed: u64,
    /// A few of the malformed rows: `line N: why`.
    pub samples: Vec<String>,
    /// Set when the whole file was refused (a wrong header, unreadable).
    pub refused: Option<String>,
}

/// The end of a session, as the CLI prints it and the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientSummary {
    pub session: SessionId,
    pub output: PathBuf,
    pub files: Vec<FileReport>,
    /// Result lines per result kind (`Q1`, `Q2_QTY`, `Q2_PROFIT`, `Q3`, `Q4`).
    pub results: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl ClientSummary {
    pub fn rows_sent(&self) -> u64 {
        self.files.iter().map(|f| f.rows_sent).sum()
    }
    pub fn malformed(&self) -> u64 {
        self.files.iter().map(|f| f.malformed).sum()
    }
}

/// What a watcher of a session sees.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ClientEvent {
    Started {
        session: SessionId,
    },
    FileDone {
        session: SessionId,
        report: FileReport,
    },
    /// Input rows sent so far.
    Sent {
        session: SessionId,
        rows: u64,
    },
    Results {
        session: SessionId,
        lines: Vec<String>,
    },
    QueryDone {
        session: SessionId,
        query: Query,
    },
}

pub type Observer = Arc<dyn Fn(ClientEvent) + Send + Sync>;

/// Reads the files in the background thread pool and hands batches to the sender, at most a few ahead.
enum Input {
    Batch(FileKind, Batch),
    FileDone(FileReport),
    KindDone(FileKind),
}

fn read_kind<R: Row>(data_dir: &Path, wrap: fn(Vec<R>) -> Batch, tx: &mpsc::Sender<Input>) -> Result<(), DatasetError> {
    for path in dataset::files_of(data_dir, R::KIND)? {
        let mut report = FileReport {
            path: path.clone(),
            kind: R::KIND,
            rows_sent: 0,
            malformed: 0,
            samples: Vec::new(),
            refused: None,
        };
        let mut rows = Vec::with_capacity(BATCH_ROWS);
        let outcome = dataset::read_file::<R>(
            &path,
            |row| {
                rows.push(row);
                if rows.len() == BATCH_ROWS {
                    report.rows_sent += rows.len() as u64;
                    let batch = std::mem::replace(&mut rows, Vec::with_capacity(BATCH_ROWS));
                    let _ = tx.blocking_send(Input::Batch(R::KIND, wrap(batch)));
                }
            },
            |bad| {
                report.malformed += 1;
                if report.samples.len() < BAD_ROW_SAMPLES {
                    report.samples.push(format!("line {}: {}", bad.line, bad.error));
                }
            },
        );
        if !rows.is_empty() {
            report.rows_sent += rows.len() as u64;
            let _ = tx.blocking_send(Input::Batch(R::KIND, wrap(rows)));
        }
        if let Err(e) = outcome {
            // A refused file loses only itself: the session goes on with the others.
            report.refused = Some(e.to_string());
        }
        let _ = tx.blocking_send(Input::FileDone(report));
    }
    let _ = tx.blocking_send(Input::KindDone(R::KIND));
    Ok(())
}

fn read_dataset(data_dir: &Path, tx: mpsc::Sender<Input>) -> Result<(), DatasetError> {
    read_kind::<Store>(data_dir, Batch::Stores, &tx)?;
    read_kind::<MenuItem>(data_dir, Batch::MenuItems, &tx)?;
    read_kind::<User>(data_dir, Batch::Users, &tx)?;
    read_kind::<Transaction>(data_dir, Batch::Transactions, &tx)?;
    read_kind::<TransactionItem>(data_dir, Batch::TransactionItems, &tx)
}

/// Runs one session to its end.
pub async fn run_session(options: &ClientOptions, observer: Observer) -> anyhow::Result<ClientSummary> {
    let started = Instant::now();
    anyhow::ensure!(options.data_dir.is_dir(), "{} is not a dataset folder", options.data_dir.display());
    let socket = TcpStream::connect(&options.gateway).await.map_err(|e| {
        anyhow::anyhow!("cannot reach the gateway at {}: {e}. Is a cluster up (`coffee cluster up`)?", options.gateway)
    })?;
    socket.set_nodelay(true)?;
    let (read, write) = socket.into_split();
    let mut reader = FrameReader::<_, GatewayFrame>::new(read);
    let mut writer = FrameWriter::<_, ClientFrame>::new(write);
    writer.send(&ClientFrame::Hello).await?;
    let session = match reader.next().await? {
        GatewayFrame::Welcome { session } => session,
        GatewayFrame::Error { message } => anyhow::bail!("the gateway refused the session: {message}"),
        other => anyhow::bail!("unexpected first frame from the gateway: {other:?}"),
    };
    observer(ClientEvent::Started { session });
    std::fs::create_dir_all(&options.out_dir)?;
    let output = options.out_dir.join(format!("client-{session}.ndjson"));
    let receiving = tokio::spawn(receive_results(reader, output.clone(), session, observer.clone()));

    let (tx, mut rx) = mpsc::channel(8);
    let data_dir = options.data_dir.clone();
    let reading = tokio::task::spawn_blocking(move || read_dataset(&data_dir, tx));
    let mut seqs: BTreeMap<FileKind, u64> = BTreeMap::new();
    let mut files = Vec::new();
    let mut sent = 0u64;
    while let Some(input) = rx.recv().await {
        match input {
            Input::Batch(kind, batch) => {
                let seq = seqs.entry(kind).or_default();
                sent += batch.len() as u64;
                writer.send(&ClientFrame::Rows { kind, seq: *seq, batch }).await?;
                *seq += 1;
                observer(ClientEvent::Sent { session, rows: sent });
            }
            Input::FileDone(report) => {
                observer(ClientEvent::FileDone { session, report: report.clone() });
                files.push(report);
            }
            Input::KindDone(kind) => {
                let batches = seqs.get(&kind).copied().unwrap_or(0);
                writer.send(&ClientFrame::EndOfFile { kind, batches }).await?;
            }
        }
    }
    reading.await??;
    let results = receiving.await??;
    Ok(ClientSummary { session, output, files, results, elapsed: started.elapsed() })
}

/// Writes result lines as they arrive until the gateway says `Done`.
async fn receive_results(
    mut reader: FrameReader<tokio::net::tcp::OwnedReadHalf, GatewayFrame>,
    output: PathBuf,
    session: SessionId,
    observer: Observer,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(&output)?);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        match reader.next().await? {
            GatewayFrame::Results { rows } => {
                let mut lines = Vec::with_capacity(rows.len());
                for row in &rows {
                    let line = row.to_ndjson();
                    writeln!(file, "{line}")?;
                    *counts.entry(row.kind_name().to_owned()).or_default() += 1;
                    lines.push(line);
                }
                observer(ClientEvent::Results { session, lines });
            }
            GatewayFrame::QueryDone { query } => {
                file.flush()?;
                observer(ClientEvent::QueryDone { session, query });
            }
            GatewayFrame::Done => break,
            GatewayFrame::Error { message } => anyhow::bail!("the gateway ended the session: {message}"),
            GatewayFrame::Welcome { .. } => anyhow::bail!("a second Welcome from the gateway"),
        }
    }
    file.flush()?;
    file.into_inner()?.sync_all()?;
    Ok(counts)
}
