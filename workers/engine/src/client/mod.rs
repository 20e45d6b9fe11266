//! The client library: sends a dataset folder through the gateway as one session and writes the session's results
//! to `OUT/client-<session>.ndjson` while they arrive. The CLI and the console both use it; they watch a session
//! through [`ClientEvent`]s.

mod reading;

use coffee_model::keys::Query;

use coffee_model::node::NodeId;

use crate::protocol::{ClientFrame, ErrorCode, FrameReader, FrameWriter, GatewayFrame, ReceivedStream, ResultId};
use crate::tracker::SeqSet;
use coffee_model::model::FileKind;
use coffee_model::results::ResultKind;
use coffee_model::wire::SessionId;
use reading::Input;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The most rows in a batch. Large, because every message costs the broker and each stage a fixed amount of work
/// (routing, persisting, confirming, logging, acking) whatever its size: on `reduced`, batches of 32,000 rows
/// instead of 2,000 took the pipeline from 2.5 s to 1.4 s (`docs/benchmarks.md`). A batch is also cut at
/// [`BATCH_BYTES`], so it always fits a frame.
pub const BATCH_ROWS: usize = 32_000;

/// The most bytes a batch's rows take on the wire, by their [`Row::encoded_bound`]: a frame's limit less room
/// for the frame's own fields (kind, seq, the batch's tag and length).
///
/// [`Row::encoded_bound`]: coffee_model::dataset::Row::encoded_bound
pub const BATCH_BYTES: usize = crate::protocol::MAX_FRAME_BYTES - 1024;

/// Malformed-row messages kept per file for the summary.
const BAD_ROW_SAMPLES: usize = 5;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The gateway's address, or several separated by commas (the hosts a gateway may run on): a connection
    /// that cannot be made moves on to the next.
    pub gateway: String,
    pub data_dir: PathBuf,
    pub out_dir: PathBuf,
    /// How long the client keeps trying to reach its gateway again each time it loses it mid-session.
    pub reconnect_window: Duration,
    /// How long a new session keeps trying to reach the gateway at all (one being restarted refuses connections
    /// for a moment) before it says none runs.
    pub connect_patience: Duration,
    /// The most rows per batch: [`BATCH_ROWS`] unless a measurement of what batching buys asks otherwise (a
    /// batch is cut at [`BATCH_BYTES`] too).
    pub batch_rows: usize,
    /// How long the gateway may leave the connection unanswered before the client takes it for lost and
    /// resumes ([`crate::protocol::detect_dead_peer`]).
    pub dead_peer_after: Duration,
}

impl ClientOptions {
    /// A session of `data_dir` through `gateway`, its results written to `out_dir`, with the default
    /// [`RECONNECT_WINDOW`].
    pub fn new(gateway: impl Into<String>, data_dir: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> Self {
        ClientOptions {
            gateway: gateway.into(),
            data_dir: data_dir.into(),
            out_dir: out_dir.into(),
            reconnect_window: RECONNECT_WINDOW,
            connect_patience: CONNECT_PATIENCE,
            batch_rows: BATCH_ROWS,
            dead_peer_after: crate::protocol::DEAD_PEER_AFTER,
        }
    }
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
    /// Result lines per result kind.
    pub results: BTreeMap<ResultKind, u64>,
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
    /// Result lines as written to the output, each with its kind.
    Results {
        session: SessionId,
        lines: Vec<(ResultKind, String)>,
    },
    QueryDone {
        session: SessionId,
        query: Query,
    },
    /// The session cannot be resumed (the gateway no longer knows it: its state was lost with its host, or
    /// another gateway took its place), so it runs again from the start as a new session, whose `Started`
    /// follows. What `session` wrote is discarded.
    Rerun {
        session: SessionId,
        reason: String,
    },
}

pub type Observer = Arc<dyn Fn(ClientEvent) + Send + Sync>;

/// How long a client keeps trying to reach its gateway again after losing it mid-session (counted from each
/// loss: a session may lose its gateway any number of times).
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(60);

/// How long a client told `Busy` waits before it tries again (besides the pause of every retry).
const BUSY_RETRY: Duration = Duration::from_millis(800);

/// How long a new session tries to reach its gateway before it gives up.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// How long one attempt to connect to a gateway may take: a host that is gone answers nothing, and the kernel
/// would try for minutes before the next address is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times a session runs again from the start (its gateway lost it) before the client gives up.
const MAX_RERUNS: u32 = 3;

/// Why one connection of a session ended.
enum Interruption {
    /// The connection or the gateway died: reconnect and resume.
    Lost(anyhow::Error),
    /// The gateway no longer knows the session, and the client lacks results: run it again from the start.
    Rerun(String),
    /// The session cannot go on (the gateway refused it, the data cannot be read).
    Fatal(anyhow::Error),
}

/// The result messages a client has written, per result stream (query, sender): what a `Resume` tells the
/// gateway, and what keeps a resumed connection from writing anything twice. The simulator's clients keep theirs
/// with it too.
#[derive(Debug, Default)]
pub struct ReceivedResults {
    streams: BTreeMap<(Query, NodeId), (SeqSet, Option<u64>)>,
}

impl ReceivedResults {
    /// Records `id`; false when it was already written.
    pub fn insert(&mut self, id: &ResultId) -> bool {
        let (seqs, eof) = self.streams.entry((id.query, id.sender)).or_default();
        match id.eof {
            Some(count) => eof.replace(count).is_none(),
            None => seqs.insert(id.seq),
        }
    }

    /// What a `Resume` says the client has.
    pub fn streams(&self) -> Vec<ReceivedStream> {
        self.streams
            .iter()
            .map(|(&(query, sender), (seqs, eof))| ReceivedStream { query, sender, seqs: seqs.ranges(), eof: *eof })
            .collect()
    }
}

/// What a session keeps across its connections.
struct SessionState {
    /// Whether a gateway ever answered: until then, an unreachable gateway is tried for the connect patience
    /// only (none may run), not the reconnect window.
    reached: bool,
    /// Whether the last connection got as far as the gateway's `Welcome`: the reconnect window then starts
    /// again from the next loss.
    welcomed: bool,
    session: Option<SessionId>,
    /// What proves to a gateway that this client owns the session.
    secret: u128,
    output: Option<std::io::BufWriter<std::fs::File>>,
    output_path: Option<PathBuf>,
    /// Every result message written, so a resumed connection writes nothing twice.
    received: ReceivedResults,
    counts: BTreeMap<ResultKind, u64>,
    queries_done: BTreeSet<Query>,
    files: Vec<FileReport>,
    /// Where each batch began, so a resumed upload seeks past what the gateway has.
    marks: reading::Marks,
    /// Which of the gateway addresses the next connection tries: the one that last answered, until a
    /// connection to it cannot be made.
    gateway: usize,
}

impl SessionState {
    fn new() -> SessionState {
        SessionState {
            reached: false,
            welcomed: false,
            session: None,
            secret: 0,
            output: None,
            output_path: None,
            received: ReceivedResults::default(),
            counts: BTreeMap::new(),
            queries_done: BTreeSet::new(),
            files: Vec::new(),
            marks: reading::Marks::default(),
            gateway: 0,
        }
    }
}

/// Runs one session to its end. If the connection or the gateway dies, it reconnects (for up to the reconnect
/// window after each loss), resumes the session with the results it already has, and sends its input again.
pub async fn run_session(options: &ClientOptions, observer: Observer) -> anyhow::Result<ClientSummary> {
    let started = Instant::now();
    anyhow::ensure!(options.data_dir.is_dir(), "{} is not a dataset folder", options.data_dir.display());
    let mut state = SessionState::new();
    let mut lost_since: Option<Instant> = None;
    let mut reruns = 0;
    loop {
        match connect_once(options, &mut state, &observer).await {
            Ok(()) => break,
            Err(Interruption::Fatal(e)) => return Err(e),
            Err(Interruption::Rerun(reason)) => {
                let session = state.session.expect("a session that was resumed has an id");
                reruns += 1;
                if reruns > MAX_RERUNS {
                    anyhow::bail!("session {session}: its gateway lost it {reruns} times, the last: {reason}");
                }
                tracing::warn!(%session, reason, "the session cannot be resumed: running it again from the start");
                if let Some(path) = &state.output_path {
                    let _ = std::fs::remove_file(path);
                }
                observer(ClientEvent::Rerun { session, reason });
                // The address that answered stays first; everything else starts anew.
                state = SessionState { reached: true, gateway: state.gateway, ..SessionState::new() };
                lost_since = None;
            }
            Err(Interruption::Lost(e)) => {
                if std::mem::take(&mut state.welcomed) {
                    lost_since = None; // the session was back: this is a new loss
                }
                let since = *lost_since.get_or_insert_with(Instant::now);
                let window = if state.reached { options.reconnect_window } else { options.connect_patience };
                if since.elapsed() > window {
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
    let addresses: Vec<&str> = options.gateway.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    let address = addresses.get(state.gateway % addresses.len().max(1)).copied().unwrap_or_default();
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await;
    let socket = match connected {
        Ok(Ok(socket)) => socket,
        failed => {
            // This address is down (or gone): the next attempt tries the next one.
            state.gateway += 1;
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {CONNECT_TIMEOUT:?}"),
            };
            let e =
                anyhow::anyhow!("cannot reach the gateway at {address}: {why}. Is a cluster up (`coffee cluster up`)?");
            return Err(lost(e));
        }
    };
    socket.set_nodelay(true).map_err(|e| lost(e.into()))?;
    crate::protocol::detect_dead_peer(&socket, options.dead_peer_after).map_err(|e| lost(e.into()))?;
    state.reached = true;
    let (read, write) = socket.into_split();
    let mut reader = FrameReader::<_, GatewayFrame>::new(read);
    let mut writer = FrameWriter::<_, ClientFrame>::new(write);
    let hello = match state.session {
        None => ClientFrame::Hello,
        Some(session) => ClientFrame::Resume { session, secret: state.secret, received: state.received.streams() },
    };
    writer.send(&hello).await.map_err(|e| lost(e.into()))?;
    let (session, skip): (SessionId, BTreeMap<FileKind, u64>) = match reader.next().await.map_err(|e| lost(e.into()))? {
        GatewayFrame::Welcome { session, secret, resume_from } => {
            state.welcomed = true;
            if state.session.is_none() {
                state.secret = secret;
            }
            (session, resume_from.into_iter().collect())
        }
        // The gateway forgot the session after this client acked every query's end: it ended before its Done
        // reached us, and every result is already written.
        GatewayFrame::Error { code: ErrorCode::UnknownSession, .. } if state.queries_done.len() == Query::ALL.len() => {
            return Ok(());
        }
        // Without every result: the gateway lost the session (its state went with its host, or this is another
        // gateway), and nothing can resume it. It runs again, from the client's files.
        GatewayFrame::Error { code: ErrorCode::UnknownSession, message } => {
            return Err(Interruption::Rerun(format!("the gateway at {address} no longer knows it ({message})")));
        }
        // Full for now (its sessions, or this address's): a slot frees as sessions end or are purged, so the
        // client waits and tries again within its window rather than giving up.
        GatewayFrame::Error { code: ErrorCode::Busy, message } => {
            tokio::time::sleep(BUSY_RETRY).await;
            return Err(Interruption::Lost(anyhow::anyhow!("the gateway is busy: {message}")));
        }
        GatewayFrame::Error { code, message } => {
            return Err(Interruption::Fatal(anyhow::anyhow!("the gateway refused the session ({code}): {message}")))
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
    // The reports of the files this pass read to their end, kept even if the connection breaks before the
    // upload is over: a resumed pass reads only from where it resumed, so they would not come again.
    let mut files = Vec::new();
    let outcome = {
        let reports = FileReports { told: state.files.iter().map(|f| f.path.clone()).collect(), read: &mut files };
        let marks = state.marks.clone();
        let source = reading::Source {
            data_dir: options.data_dir.clone(),
            batch_rows: options.batch_rows,
            batch_bytes: BATCH_BYTES,
        };
        let upload = upload(source.clone(), session, skip, marks, reports, frames_tx.clone(), observer.clone());
        let results = receive_results(&mut reader, state, session, frames_tx, observer);
        tokio::pin!(upload, results);
        let mut uploaded = false;
        loop {
            tokio::select! {
                done = &mut upload, if !uploaded => match done {
                    Ok(()) => uploaded = true,
                    Err(e) => break Err(e),
                },
                done = &mut results => break done,
            }
        }
    };
    writing.abort();
    // Reports of this pass replace those of earlier passes, file by file.
    for report in files {
        match state.files.iter_mut().find(|f| f.path == report.path) {
            Some(known) => *known = report,
            None => state.files.push(report),
        }
    }
    outcome
}

/// The file reports of one pass of the upload.
struct FileReports<'a> {
    /// Files whose report the observer was told in an earlier pass (told once per session).
    told: BTreeSet<PathBuf>,
    /// The reports of the files this pass read to their end.
    read: &'a mut Vec<FileReport>,
}

/// Sends the dataset, but the first `skip[kind]` batches of each kind (on a resume, those already in the
/// pipeline: the reading seeks past them), and keeps the report of each file read to its end. Returns once
/// every frame is handed to the writer.
async fn upload(
    source: reading::Source,
    session: SessionId,
    skip: BTreeMap<FileKind, u64>,
    marks: reading::Marks,
    reports: FileReports<'_>,
    frames: mpsc::Sender<ClientFrame>,
    observer: Observer,
) -> Result<(), Interruption> {
    let (tx, mut rx) = mpsc::channel(8);
    let reading = tokio::task::spawn_blocking(move || reading::read_dataset(&source, &skip, &marks, tx));
    let gone = |_| Interruption::Lost(anyhow::anyhow!("the connection to the gateway closed"));
    while let Some(input) = rx.recv().await {
        match input {
            Input::Batch { kind, seq, batch, sent } => {
                frames.send(ClientFrame::Rows { kind, seq, batch }).await.map_err(gone)?;
                observer(ClientEvent::Sent { session, rows: sent });
            }
            Input::FileDone(report) => {
                if !reports.told.contains(&report.path) {
                    observer(ClientEvent::FileDone { session, report: report.clone() });
                }
                reports.read.push(report);
            }
            Input::KindDone { kind, batches } => {
                frames.send(ClientFrame::EndOfFile { kind, batches }).await.map_err(gone)?;
            }
        }
    }
    match reading.await {
        Ok(Ok(())) => Ok(()),
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
                if state.received.insert(&id) {
                    let output = state.output.as_mut().expect("opened at the handshake");
                    let mut lines = Vec::with_capacity(rows.len());
                    for row in &rows {
                        let line = row.to_ndjson();
                        writeln!(output, "{line}").map_err(|e| Interruption::Fatal(e.into()))?;
                        *state.counts.entry(row.kind()).or_default() += 1;
                        lines.push((row.kind(), line));
                    }
                    // Written to the file before the gateway may forget it.
                    output.flush().map_err(|e| Interruption::Fatal(e.into()))?;
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
            GatewayFrame::Error { code, message } => {
                return Err(Interruption::Fatal(anyhow::anyhow!("the gateway ended the session ({code}): {message}")))
            }
            GatewayFrame::Welcome { .. } => return Err(Interruption::Fatal(anyhow::anyhow!("a second Welcome"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MAX_FRAME_BYTES;
    use coffee_model::node::{Role, StageKind};

    /// A million results, arriving nearly in order (every 5,000th one late, as after a redelivery): the resume
    /// frame that lists them stays a few kilobytes, where a list of their ids would pass the frame cap several
    /// times over.
    #[test]
    fn a_resume_stays_small_whatever_the_sessions_size() {
        let mut received = ReceivedResults::default();
        let mut ids = Vec::new();
        for (query, stage) in [(Query::Q1, StageKind::TxFilter), (Query::Q4, StageKind::Q4Top)] {
            for replica in 0..2 {
                let sender = NodeId { role: Role::Stage(stage), replica };
                let mut seqs: Vec<u64> = (0..250_000).collect();
                for i in (4_999..seqs.len() - 1).step_by(5_000) {
                    seqs.swap(i, i + 1);
                }
                ids.extend(seqs.into_iter().map(|seq| ResultId { query, sender, seq, eof: None }));
                ids.push(ResultId { query, sender, seq: 250_000, eof: Some(250_000) });
            }
        }
        for id in &ids {
            assert!(received.insert(id));
        }
        assert!(!received.insert(&ids[17]), "a duplicate is recognised");

        let resume = ClientFrame::Resume { session: uuid::Uuid::nil(), secret: 1, received: received.streams() };
        let size = crate::protocol::encode(&resume).len();
        assert!(size < 4096, "a resume of a million results takes {size} bytes");
        let as_ids = crate::protocol::encode(&ids).len();
        assert!(as_ids > MAX_FRAME_BYTES, "listing every id ({as_ids} bytes) would not fit in a frame");

        // The gateway learns exactly what the client has: every stream complete.
        let ClientFrame::Resume { received, .. } = resume else { unreachable!() };
        let senders = received.iter().map(|s| (coffee_model::message::Stream::Results(s.query), s.sender));
        let mut tracker = crate::tracker::InputTracker::new(senders.collect::<Vec<_>>());
        for stream in received {
            let seqs = SeqSet::from_ranges(stream.seqs);
            assert_eq!(seqs.len(), 250_000);
            tracker.absorb(coffee_model::message::Stream::Results(stream.query), stream.sender, seqs, stream.eof);
        }
        assert!(tracker.is_complete());
    }
}
