//! Client sessions launched from the console: each runs `coffee_engine::client::run_session` against the cluster's
//! gateway in its own task; the registry keeps its progress, result counts and the first result lines of each
//! query (for the page's tables and charts), and every change is broadcast as an event.
//!
//! A session is known by the gateway's random UUID, so its results cannot be guessed by id. A session that ends
//! is checked against the reference and kept in the run history ([`crate::history`]); the history's sessions
//! are restored into the registry when the console starts, so they list, download and compare as before.

use crate::events::{Event, Events, MAX_LINES_PER_EVENT};
use coffee_engine::client::{ClientEvent, ClientOptions};
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

pub use coffee_types::{ResultKind, SessionResults, SessionState, SessionView};

struct Session {
    view: SessionView,
    started: Instant,
    /// The console's fault count when the session started.
    faults_at_start: u32,
    output: PathBuf,
    /// The first [`MAX_KEPT_LINES`] lines of each result kind.
    lines: BTreeMap<ResultKind, Vec<String>>,
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

    /// How many sessions run now.
    pub fn running(&self) -> usize {
        self.map.lock().expect("lock").values().filter(|s| s.view.state == SessionState::Running).count()
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

    /// Puts a session of the run history back in the registry, as it ended.
    pub fn restore(&self, record: crate::history::Record) {
        let session = Session {
            view: record.view,
            started: Instant::now(),
            faults_at_start: 0,
            output: record.output,
            lines: BTreeMap::new(),
            last_progress: None,
        };
        self.map.lock().expect("lock").insert(session.view.id, session);
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
    /// The dataset's name, as the user knows it.
    pub dataset_name: String,
    pub rows_total: u64,
    pub out_dir: PathBuf,
    /// The nodes: their topology and fault count go into the session's record.
    pub nodes: Arc<crate::nodes::Nodes>,
    pub history: Arc<crate::history::History>,
}

/// Starts one session and returns its id once the gateway has welcomed it; the session goes on in the
/// background.
pub async fn launch(sessions: Arc<Sessions>, events: Events, launch: Launch) -> anyhow::Result<Uuid> {
    let (welcomed, welcome) = oneshot::channel::<Uuid>();
    let welcomed = Mutex::new(Some(welcomed));
    // The session's id, once the gateway has given it: a failure is then the session's, not the launch's.
    let known_id: Arc<Mutex<Option<Uuid>>> = Arc::default();
    let options = ClientOptions::new(&launch.gateway, &launch.data_dir, &launch.out_dir);
    let observer = {
        let (sessions, events, nodes) = (sessions.clone(), events.clone(), launch.nodes.clone());
        let dataset = (launch.dataset.clone(), launch.dataset_name.clone());
        let (rows_total, out_dir) = (launch.rows_total, launch.out_dir.clone());
        let known_id = known_id.clone();
        Arc::new(move |event: ClientEvent| {
            if let ClientEvent::Started { session } = &event {
                register(&sessions, &events, *session, &dataset, rows_total, &out_dir, &nodes);
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
    let (nodes, history, data_dir) = (launch.nodes, launch.history, launch.data_dir);
    tokio::spawn(async move {
        let outcome = coffee_engine::client::run_session(&options, observer).await;
        let id = *known_id.lock().expect("lock");
        finish(&task_sessions, &events, id, outcome, fail_tx);
        if let Some(id) = id {
            task_sessions.ended(id, nodes.faults_so_far());
            keep_in_history(&task_sessions, &events, &history, id, data_dir).await;
        }
    });
    tokio::select! {
        welcomed = welcome => welcomed.map_err(|_| anyhow::anyhow!("the session ended before it started")),
        Ok(error) = failed => Err(anyhow::anyhow!(error)),
        _ = tokio::time::sleep(WELCOME_TIMEOUT) => anyhow::bail!("the gateway did not welcome the session in {WELCOME_TIMEOUT:?}"),
    }
}

fn register(
    sessions: &Sessions,
    events: &Events,
    id: Uuid,
    (dataset, dataset_name): &(String, String),
    rows_total: u64,
    out_dir: &Path,
    nodes: &crate::nodes::Nodes,
) {
    let view = SessionView {
        id,
        dataset: dataset.clone(),
        dataset_name: dataset_name.clone(),
        state: SessionState::Running,
        rows_sent: 0,
        rows_total,
        results: BTreeMap::new(),
        queries_done: Vec::new(),
        malformed: 0,
        error: None,
        started_ms: crate::now_ms(),
        elapsed_ms: 0,
        topology: nodes.spec().topology.replicas_spec(),
        faults: 0,
        matches_reference: None,
        checked: false,
        files_with_issues: Vec::new(),
    };
    let output = out_dir.join(format!("client-{id}.ndjson"));
    let faults_at_start = nodes.faults_so_far();
    let lines = BTreeMap::new();
    let session = Session { view, started: Instant::now(), faults_at_start, output, lines, last_progress: None };
    sessions.map.lock().expect("lock").insert(id, session);
    info!(session = %id, dataset, "session started");
    events.send(Event::SessionStarted { session: id, dataset: dataset.clone(), rows_total });
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
            let file = report.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            sessions.update(session, |s| {
                s.view.malformed += report.malformed;
                rows_sent = s.view.rows_sent;
                if report.malformed > 0 || report.refused.is_some() {
                    s.view.files_with_issues.push(coffee_types::FileIssues {
                        file: file.clone(),
                        rows_sent: report.rows_sent,
                        malformed: report.malformed,
                        samples: report.samples.clone(),
                        refused: report.refused.clone(),
                    });
                }
            });
            // The throttle may have held back the last count (malformed rows keep it below the total): a file's
            // end always reports it.
            events.send(Event::SessionProgress { session, rows_sent });
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
                for (kind, line) in &lines {
                    *s.view.results.entry(*kind).or_default() += 1;
                    let kept = s.lines.entry(*kind).or_default();
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
        // The session goes on as a new one (its `Started` follows and is listed anew): this one ends here, and
        // the event log says why it was run again.
        ClientEvent::Rerun { session, reason } => {
            warn!(%session, reason, "session lost by its gateway: run again as a new session");
            mark_failed(sessions, events, session, format!("run again as a new session: {reason}"));
        }
    }
}

fn finish(
    sessions: &Sessions,
    events: &Events,
    id: Option<Uuid>,
    outcome: anyhow::Result<coffee_engine::client::ClientSummary>,
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

impl Sessions {
    /// Notes the faults a session saw, now that it has ended.
    fn ended(&self, id: Uuid, faults_now: u32) {
        self.update(id, |s| s.view.faults = faults_now.saturating_sub(s.faults_at_start));
    }

    /// Forgets sessions dropped from the run history.
    fn forget(&self, ids: &[Uuid]) {
        let mut map = self.map.lock().expect("lock");
        ids.iter().for_each(|id| {
            map.remove(id);
        });
    }
}

/// Keeps a session that ended in the run history at once (a console stopped right after still lists it), then,
/// if it is done, checks it against the reference on its data and keeps it again with the verdict. The check
/// runs the reference, a few seconds of CPU on a large dataset, off the async threads.
async fn keep_in_history(
    sessions: &Arc<Sessions>,
    events: &Events,
    history: &Arc<crate::history::History>,
    id: Uuid,
    data_dir: PathBuf,
) {
    let Some((state, output)) = sessions.output(id) else { return };
    keep(sessions, history, id, &output).await;
    if state == SessionState::Done {
        check_and_keep(sessions, events, history, id, Some(data_dir)).await;
    }
}

/// Checks a done session against the reference on its data (`None`: the data is gone, so it cannot be), notes
/// the verdict, tells the page, and keeps the record again with it.
pub async fn check_and_keep(
    sessions: &Arc<Sessions>,
    events: &Events,
    history: &Arc<crate::history::History>,
    id: Uuid,
    data_dir: Option<PathBuf>,
) {
    let Some((_, output)) = sessions.output(id) else { return };
    let Some(data_dir) = data_dir else {
        warn!(session = %id, "the session's dataset is gone: it cannot be checked against the reference");
        sessions.update(id, |s| s.view.checked = true);
        keep(sessions, history, id, &output).await;
        return;
    };
    let compared = output.clone();
    let check = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
        let expected = coffee_tools::reference::run(&data_dir)?.lines;
        let actual: Vec<String> = std::fs::read_to_string(&compared)?.lines().map(str::to_owned).collect();
        Ok(coffee_tools::compare::compare_lines(&expected, &actual).all_equal())
    });
    let checked = match check.await {
        Ok(Ok(equal)) => Some(equal),
        Ok(Err(e)) => {
            warn!(session = %id, error = %format!("{e:#}"), "cannot check the session against the reference");
            None
        }
        Err(e) => {
            warn!(session = %id, error = %e, "the reference check failed");
            None
        }
    };
    if checked == Some(false) {
        warn!(session = %id, "the session's results differ from the reference");
    }
    sessions.update(id, |s| (s.view.matches_reference, s.view.checked) = (checked, true));
    let Some(view) = sessions.get(id) else { return };
    events.send(Event::SessionChecked { session: id, matches_reference: checked, faults: view.faults });
    keep(sessions, history, id, &output).await;
}

/// Writes the session's record as it stands, and forgets the sessions the history's bound drops.
async fn keep(sessions: &Arc<Sessions>, history: &Arc<crate::history::History>, id: Uuid, output: &Path) {
    let Some(view) = sessions.get(id) else { return };
    let record = crate::history::Record { view, output: output.to_owned() };
    let history = history.clone();
    match tokio::task::spawn_blocking(move || history.keep(&record)).await {
        Ok(Ok(dropped)) => sessions.forget(&dropped),
        Ok(Err(e)) => warn!(session = %id, error = %e, "cannot keep the session in the run history"),
        Err(e) => warn!(session = %id, error = %e, "keeping the session in the run history failed"),
    }
}
