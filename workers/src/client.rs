//! The client library: sends a dataset folder through the gateway as one session and writes the session's results
//! to `OUT/client-<session>.ndjson` while they arrive. The CLI and the console both use it; they watch a session
//! through [`ClientEvent`]s.

use crate::dataset::{self, DatasetError, Row};
use crate::message::{Batch, Query, SessionId};
use crate::model::{FileKind, MenuItem, Store, Transaction, TransactionItem, User};
use crate::protocol::{ClientFrame, FrameReader, FrameWriter, GatewayFrame, ResultId};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Rows per batch: large enough that the broker sees few messages, small enough to keep frames well under 1 MiB.
pub const BATCH_ROWS: usize = 2000;

/// Rows per batch: [`BATCH_ROWS`], or `COFFEE_BATCH_ROWS` (for measuring what batching buys, see
/// docs/benchmarks.md).
pub fn batch_rows() -> usize {
    std::env::var("COFFEE_BATCH_ROWS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(BATCH_ROWS)
}

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
        let batch_rows = batch_rows();
        let mut rows = Vec::with_capacity(batch_rows);
        let outcome = dataset::read_file::<R>(
            &path,
            |row| {
                rows.push(row);
                if rows.len() == batch_rows {
                    report.rows_sent += rows.len() as u64;
                    let batch = std::mem::replace(&mut rows, Vec::with_capacity(batch_rows));
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

/// How long a client keeps trying to reach its gateway again after losing it mid-session.
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(60);

/// Why one connection of a session ended.
enum Interruption {
    /// The connection or the gateway died: reconnect and resume.
    Lost(anyhow::Error),
    /// The session cannot go on (the gateway refused it, the data cannot be read).
    Fatal(anyhow::Error),
}

/// What a session keeps across its connections.
struct SessionState {
    /// Whether a gateway ever answered: until then, an unreachable gateway is an error, not a restart.
    reached: bool,
    session: Option<SessionId>,
    /// What proves to a gateway that this client owns the session.
    secret: u128,
    output: Option<std::io::BufWriter<std::fs::File>>,
    output_path: Option<PathBuf>,
    /// Every result message written, so a resumed connection writes nothing twice.
    received: Vec<ResultId>,
    seen: HashSet<ResultId>,
    counts: BTreeMap<String, u64>,
    queries_done: BTreeSet<Query>,
    files: Vec<FileReport>,
}

/// Runs one session to its end. If the connection or the gateway dies, it reconnects (for up to
/// [`RECONNECT_WINDOW`]), resumes the session with the results it already has, and sends its input again.
pub async fn run_session(options: &ClientOptions, observer: Observer) -> anyhow::Result<ClientSummary> {
    let started = Instant::now();
    anyhow::ensure!(options.data_dir.is_dir(), "{} is not a dataset folder", options.data_dir.display());
    let mut state = SessionState {
        reached: false,
        session: None,
        secret: 0,
        output: None,
        output_path: None,
        received: Vec::new(),
        seen: HashSet::new(),
        counts: BTreeMap::new(),
        queries_done: BTreeSet::new(),
        files: Vec::new(),
    };
    let mut lost_since: Option<Instant> = None;
    loop {
        match connect_once(options, &mut state, &observer).await {
            Ok(()) => break,
            Err(Interruption::Fatal(e)) => return Err(e),
            Err(Interruption::Lost(e)) => {
                let since = *lost_since.get_or_insert_with(Instant::now);
                if !state.reached || since.elapsed() > RECONNECT_WINDOW {
                    return Err(e);
                }
                tracing::warn!(session = ?state.session, error = %e, "connection to the gateway lost; reconnecting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let mut output = state.output.take().expect("a finished session has an output");
    output.flush()?;
    output.into_inner()?.sync_all()?;
    Ok(ClientSummary {
        session: state.session.expect("a finished session has an id"),
        output: state.output_path.expect("a finished session has an output"),
        files: state.files,
        results: state.counts,
        elapsed: started.elapsed(),
    })
}

/// One connection: handshake, then the input and the results at once, until `Done` or until it breaks.
async fn connect_once(
    options: &ClientOptions,
    state: &mut SessionState,
    observer: &Observer,
) -> Result<(), Interruption> {
    let lost = |e: anyhow::Error| Interruption::Lost(e);
    let socket = TcpStream::connect(&options.gateway).await.map_err(|e| {
        let e = anyhow::anyhow!(
            "cannot reach the gateway at {}: {e}. Is a cluster up (`coffee cluster up`)?",
            options.gateway
        );
        lost(e)
    })?;
    socket.set_nodelay(true).map_err(|e| lost(e.into()))?;
    state.reached = true;
    let (read, write) = socket.into_split();
    let mut reader = FrameReader::<_, GatewayFrame>::new(read);
    let mut writer = FrameWriter::<_, ClientFrame>::new(write);
    let hello = match state.session {
        None => ClientFrame::Hello,
        Some(session) => ClientFrame::Resume { session, secret: state.secret, received: state.received.clone() },
    };
    writer.send(&hello).await.map_err(|e| lost(e.into()))?;
    let (session, skip): (SessionId, BTreeMap<FileKind, u64>) = match reader.next().await.map_err(|e| lost(e.into()))? {
        GatewayFrame::Welcome { session, secret, resume_from } => {
            if state.session.is_none() {
                state.secret = secret;
            }
            (session, resume_from.into_iter().collect())
        }
        // The gateway forgot the session after this client acked every query's end: it ended before its Done
        // reached us, and every result is already written.
        GatewayFrame::Error { message }
            if message.starts_with("unknown session") && state.queries_done.len() == Query::ALL.len() =>
        {
            return Ok(());
        }
        GatewayFrame::Error { message } => {
            return Err(Interruption::Fatal(anyhow::anyhow!("the gateway refused the session: {message}")))
        }
        other => {
            return Err(Interruption::Fatal(anyhow::anyhow!("unexpected first frame from the gateway: {other:?}")))
        }
    };
    if state.session.is_none() {
        state.session = Some(session);
        observer(ClientEvent::Started { session });
        std::fs::create_dir_all(&options.out_dir).map_err(|e| Interruption::Fatal(e.into()))?;
        let path = options.out_dir.join(format!("client-{session}.ndjson"));
        let file = std::fs::File::create(&path).map_err(|e| Interruption::Fatal(e.into()))?;
        state.output = Some(std::io::BufWriter::new(file));
        state.output_path = Some(path);
    }

    // One writer task owns the socket's write half: the upload and the acks both go through it.
    let (frames_tx, mut frames_rx) = mpsc::channel::<ClientFrame>(16);
    let writing = tokio::spawn(async move {
        while let Some(frame) = frames_rx.recv().await {
            writer.send(&frame).await?;
        }
        Ok::<_, crate::protocol::FrameError>(())
    });
    let mut files = None;
    let outcome = {
        let upload = upload(options.data_dir.clone(), session, skip, frames_tx.clone(), observer.clone());
        let results = receive_results(&mut reader, state, session, frames_tx, observer);
        tokio::pin!(upload, results);
        loop {
            tokio::select! {
                uploaded = &mut upload, if files.is_none() => match uploaded {
                    Ok(reports) => files = Some(reports),
                    Err(e) => break Err(e),
                },
                done = &mut results => break done,
            }
        }
    };
    writing.abort();
    if let Some(files) = files {
        state.files = files;
    }
    outcome
}

/// Sends the dataset, but the first `skip[kind]` batches of each kind (on a resume, those already in the
/// pipeline). Returns the files' reports once every frame is handed to the writer.
async fn upload(
    data_dir: PathBuf,
    session: SessionId,
    skip: BTreeMap<FileKind, u64>,
    frames: mpsc::Sender<ClientFrame>,
    observer: Observer,
) -> Result<Vec<FileReport>, Interruption> {
    let (tx, mut rx) = mpsc::channel(8);
    let reading = tokio::task::spawn_blocking(move || read_dataset(&data_dir, tx));
    let mut seqs: BTreeMap<FileKind, u64> = BTreeMap::new();
    let mut files = Vec::new();
    let mut sent = 0u64;
    let gone = |_| Interruption::Lost(anyhow::anyhow!("the connection to the gateway closed"));
    while let Some(input) = rx.recv().await {
        match input {
            Input::Batch(kind, batch) => {
                let seq = seqs.entry(kind).or_default();
                sent += batch.len() as u64;
                if *seq >= skip.get(&kind).copied().unwrap_or(0) {
                    frames.send(ClientFrame::Rows { kind, seq: *seq, batch }).await.map_err(gone)?;
                }
                *seq += 1;
                observer(ClientEvent::Sent { session, rows: sent });
            }
            Input::FileDone(report) => {
                observer(ClientEvent::FileDone { session, report: report.clone() });
                files.push(report);
            }
            Input::KindDone(kind) => {
                let batches = seqs.get(&kind).copied().unwrap_or(0);
                frames.send(ClientFrame::EndOfFile { kind, batches }).await.map_err(gone)?;
            }
        }
    }
    match reading.await {
        Ok(Ok(())) => Ok(files),
        Ok(Err(e)) => Err(Interruption::Fatal(e.into())),
        Err(e) => Err(Interruption::Fatal(e.into())),
    }
}

/// Writes each new result message's rows, acks every result frame, and returns at `Done`.
async fn receive_results(
    reader: &mut FrameReader<tokio::net::tcp::OwnedReadHalf, GatewayFrame>,
    state: &mut SessionState,
    session: SessionId,
    frames: mpsc::Sender<ClientFrame>,
    observer: &Observer,
) -> Result<(), Interruption> {
    let lost = |e: anyhow::Error| Interruption::Lost(e);
    loop {
        match reader.next().await.map_err(|e| lost(e.into()))? {
            GatewayFrame::Result { n, id, rows } => {
                if state.seen.insert(id) {
                    let output = state.output.as_mut().expect("opened at the handshake");
                    let mut lines = Vec::with_capacity(rows.len());
                    for row in &rows {
                        let line = row.to_ndjson();
                        writeln!(output, "{line}").map_err(|e| Interruption::Fatal(e.into()))?;
                        *state.counts.entry(row.kind_name().to_owned()).or_default() += 1;
                        lines.push(line);
                    }
                    // Written to the file before the gateway may forget it.
                    output.flush().map_err(|e| Interruption::Fatal(e.into()))?;
                    state.received.push(id);
                    if !lines.is_empty() {
                        observer(ClientEvent::Results { session, lines });
                    }
                }
                frames.send(ClientFrame::Ack { upto: n }).await.map_err(|e| lost(anyhow::anyhow!("{e}")))?;
            }
            GatewayFrame::QueryDone { n, query } => {
                if state.queries_done.insert(query) {
                    observer(ClientEvent::QueryDone { session, query });
                }
                frames.send(ClientFrame::Ack { upto: n }).await.map_err(|e| lost(anyhow::anyhow!("{e}")))?;
            }
            GatewayFrame::Done => return Ok(()),
            GatewayFrame::Error { message } => {
                return Err(Interruption::Fatal(anyhow::anyhow!("the gateway ended the session: {message}")))
            }
            GatewayFrame::Welcome { .. } => return Err(Interruption::Fatal(anyhow::anyhow!("a second Welcome"))),
        }
    }
}
