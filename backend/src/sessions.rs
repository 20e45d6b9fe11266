//! Client sessions launched from the console: each runs `coffee::client::run_session` against the cluster's
//! gateway in its own task; the registry keeps its progress, result counts and the first result lines of each
//! query (for the page's tables and charts), and every change is broadcast as an event.
//!
//! A session is known by the gateway's random UUID, so its results cannot be guessed by id.

use crate::events::{Event, Events, MAX_LINES_PER_EVENT};
use coffee::client::{ClientEvent, ClientOptions};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{info, warn};
use uuid::Uuid;

/// Result lines kept in memory per session and result kind; the NDJSON file has them all.
pub const MAX_KEPT_LINES: usize = 1000;
/// Progress events per session at most this often (a big dataset sends a batch every few milliseconds).
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// How long a launch waits for the gateway to welcome each session.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);
/// Sessions launched in one request at most.
pub const MAX_LAUNCH: usize = 16;

pub use coffee_types::{SessionResults, SessionState, SessionView};

struct Session {
    view: SessionView,
    started: Instant,
    output: PathBuf,
    /// The first [`MAX_KEPT_LINES`] lines of each result kind.
    lines: BTreeMap<String, Vec<String>>,
    last_progress: Option<Instant>,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<Uuid, Session>>,
}

impl Sessions {
    /// Every session, oldest first.
    pub fn list(&self) -> Vec<SessionView> {
        let map = self.map.lock().expect("lock");
        let mut all: Vec<SessionView> = map.values().map(live_view).collect();
        all.sort_by_key(|s| s.started_ms);
        all
    }

    pub fn get(&self, id: Uuid) -> Option<SessionView> {
        self.map.lock().expect("lock").get(&id).map(live_view)
    }

    pub fn results(&self, id: Uuid) -> Option<SessionResults> {
        let map = self.map.lock().expect("lock");
        let session = map.get(&id)?;
        Some(SessionResults { session: live_view(session), lines: session.lines.clone() })
    }

    /// The NDJSON file of a finished session.
    pub fn output(&self, id: Uuid) -> Option<(SessionState, PathBuf)> {
        self.map.lock().expect("lock").get(&id).map(|s| (s.view.state, s.output.clone()))
    }

    fn update(&self, id: Uuid, f: impl FnOnce(&mut Session)) {
        if let Some(session) = self.map.lock().expect("lock").get_mut(&id) {
            f(session);
        }
    }
}

fn live_view(session: &Session) -> SessionView {
    let mut view = session.view.clone();
    if view.state == SessionState::Running {
        view.elapsed_ms = session.started.elapsed().as_millis() as u64;
    }
    view
}

/// What a launch needs from the app.
pub struct Launch {
    pub gateway: String,
    pub data_dir: PathBuf,
    pub dataset: String,
    pub rows_total: u64,
    pub out_dir: PathBuf,
}

/// Starts one session and returns its id once the gateway has welcomed it; the session goes on in the
/// background.
pub async fn launch(sessions: Arc<Sessions>, events: Events, launch: Launch) -> anyhow::Result<Uuid> {
    let (welcomed, welcome) = oneshot::channel::<Uuid>();
    let welcomed = Mutex::new(Some(welcomed));
    // The session's id, once the gateway has given it: a failure is then the session's, not the launch's.
    let known_id: Arc<Mutex<Option<Uuid>>> = Arc::default();
    let options = ClientOptions {
        gateway: launch.gateway.clone(),
        data_dir: launch.data_dir.clone(),
        out_dir: launch.out_dir.clone(),
    };
    let observer = {
        let (sessions, events) = (sessions.clone(), events.clone());
        let (dataset, rows_total, out_dir) = (launch.dataset.clone(), launch.rows_total, launch.out_dir.clone());
        let known_id = known_id.clone();
        Arc::new(move |event: ClientEvent| {
            if let ClientEvent::Started { session } = &event {
                register(&sessions, &events, *session, &dataset, rows_total, &out_dir);
                *known_id.lock().expect("lock") = Some(*session);
                if let Some(tx) = welcomed.lock().expect("lock").take() {
                    let _ = tx.send(*session);
                }
            } else {
                observe(&sessions, &events, event);
            }
        })
    };
    let (fail_tx, failed) = oneshot::channel::<String>();
    let task_sessions = sessions.clone();
    tokio::spawn(async move {
        let outcome = coffee::client::run_session(&options, observer).await;
        let id = *known_id.lock().expect("lock");
        finish(&task_sessions, &events, id, outcome, fail_tx);
    });
    tokio::select! {
        welcomed = welcome => welcomed.map_err(|_| anyhow::anyhow!("the session ended before it started")),
        Ok(error) = failed => Err(anyhow::anyhow!(error)),
        _ = tokio::time::sleep(WELCOME_TIMEOUT) => anyhow::bail!("the gateway did not welcome the session in {WELCOME_TIMEOUT:?}"),
    }
}

fn register(sessions: &Sessions, events: &Events, id: Uuid, dataset: &str, rows_total: u64, out_dir: &Path) {
    let view = SessionView {
        id,
        dataset: dataset.to_owned(),
        state: SessionState::Running,
        rows_sent: 0,
        rows_total,
        results: BTreeMap::new(),
        queries_done: Vec::new(),
        malformed: 0,
        error: None,
        started_ms: crate::now_ms(),
        elapsed_ms: 0,
    };
    let output = out_dir.join(format!("client-{id}.ndjson"));
    let session = Session { view, started: Instant::now(), output, lines: BTreeMap::new(), last_progress: None };
    sessions.map.lock().expect("lock").insert(id, session);
    info!(session = %id, dataset, "session started");
    events.send(Event::SessionStarted { session: id, dataset: dataset.to_owned(), rows_total });
}

/// Applies one client event to the registry and broadcasts what the page needs.
fn observe(sessions: &Sessions, events: &Events, event: ClientEvent) {
    match event {
        ClientEvent::Started { .. } => {}
        ClientEvent::Sent { session, rows } => {
            let mut due = false;
            sessions.update(session, |s| {
                s.view.rows_sent = rows;
                due = s.last_progress.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) || rows >= s.view.rows_total;
                if due {
                    s.last_progress = Some(Instant::now());
                }
            });
            if due {
                events.send(Event::SessionProgress { session, rows_sent: rows });
            }
        }
        ClientEvent::FileDone { session, report } => {
            let mut rows_sent = 0;
            sessions.update(session, |s| {
                s.view.malformed += report.malformed;
                rows_sent = s.view.rows_sent;
            });
            // The throttle may have held back the last count (malformed rows keep it below the total): a file's
            // end always reports it.
            events.send(Event::SessionProgress { session, rows_sent });
            let file = report.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            events.send(Event::SessionFile {
                session,
                file,
                rows_sent: report.rows_sent,
                malformed: report.malformed,
                refused: report.refused,
            });
        }
        ClientEvent::Results { session, lines } => {
            let mut counts = BTreeMap::new();
            sessions.update(session, |s| {
                for line in &lines {
                    let kind = query_of(line);
                    *s.view.results.entry(kind.clone()).or_default() += 1;
                    let kept = s.lines.entry(kind).or_default();
                    if kept.len() < MAX_KEPT_LINES {
                        kept.push(line.clone());
                    }
                }
                counts = s.view.results.clone();
            });
            let more = lines.len().saturating_sub(MAX_LINES_PER_EVENT);
            let lines = lines.into_iter().take(MAX_LINES_PER_EVENT).collect();
            events.send(Event::SessionResults { session, lines, more, counts });
        }
        ClientEvent::QueryDone { session, query } => {
            let query = query.to_string();
            sessions.update(session, |s| s.view.queries_done.push(query.clone()));
            events.send(Event::SessionQueryDone { session, query });
        }
    }
}

fn finish(
    sessions: &Sessions,
    events: &Events,
    id: Option<Uuid>,
    outcome: anyhow::Result<coffee::client::ClientSummary>,
    fail_tx: oneshot::Sender<String>,
) {
    match outcome {
        Ok(summary) => {
            let elapsed_ms = summary.elapsed.as_millis() as u64;
            sessions.update(summary.session, |s| {
                s.view.state = SessionState::Done;
                s.view.results = summary.results.clone();
                s.view.rows_sent = summary.rows_sent();
                s.view.elapsed_ms = elapsed_ms;
            });
            info!(session = %summary.session, elapsed_ms, "session done");
            events.send(Event::SessionDone { session: summary.session, counts: summary.results, elapsed_ms });
        }
        Err(e) => {
            let error = format!("{e:#}");
            warn!(session = ?id, error, "session failed");
            match id {
                Some(id) => mark_failed(sessions, events, id, error),
                // Not welcomed: the launch request reports it.
                None => {
                    let _ = fail_tx.send(error);
                }
            }
        }
    }
}

fn mark_failed(sessions: &Sessions, events: &Events, id: Uuid, error: String) {
    sessions.update(id, |s| {
        s.view.state = SessionState::Failed;
        s.view.error = Some(error.clone());
        s.view.elapsed_ms = s.started.elapsed().as_millis() as u64;
    });
    events.send(Event::SessionFailed { session: id, error });
}

/// The `query` field of a result line.
fn query_of(line: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    value["query"].as_str().unwrap_or("invalid").to_owned()
}
