//! The page's state: one set of signals shared by every panel, filled by the API and kept current by the
//! `/api/events` WebSocket (reconnected when it drops).

use crate::api::{
    self, ChaosFaults, ChaosView, ClusterState, DatasetView, Event, FlowView, KillCause, NodeView, ResultKind,
    SessionView, StatusView, TopologyView, Uuid,
};
use leptos::prelude::*;
use leptos::task::spawn_local;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use wasm_bindgen::prelude::*;

/// Entries the event log keeps.
const LOG_LIMIT: usize = 300;
/// Progress samples kept per session (one per 100 ms at most: ten minutes of a session).
const MAX_SAMPLES: usize = 6000;
/// Where the event log is kept in the browser, so that it survives a reload of the page.
const LOG_STORAGE_KEY: &str = "coffee-console-event-log";
/// Every kind of log entry (a stored entry of another kind is skipped).
const LOG_KINDS: [&str; 9] = ["chaos", "cluster", "dataset", "error", "kill", "pause", "restart", "resume", "session"];
/// Result lines kept per query for the selected session (the backend keeps as many).
const LINES_LIMIT: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub seq: u64,
    pub time: String,
    /// `kill`, `restart`, `session`, `chaos`, `cluster`, `error`, `dataset`.
    pub kind: &'static str,
    pub text: String,
}

/// Every signal of the page. `Copy`: panels take it by value.
#[derive(Clone, Copy)]
pub struct Console {
    /// `up`, `starting`, `down` (or `unknown` before the first answer).
    pub cluster: RwSignal<String>,
    pub cluster_error: RwSignal<Option<String>>,
    pub status: RwSignal<StatusView>,
    pub connected: RwSignal<bool>,
    pub datasets: RwSignal<Vec<DatasetView>>,
    pub dataset: RwSignal<String>,
    pub sessions: RwSignal<Vec<SessionView>>,
    /// Rows sent by each session seen running from this page, sampled as progress arrives: (ms, rows).
    pub progress: RwSignal<BTreeMap<Uuid, Vec<(f64, u64)>>>,
    /// The session whose results are shown.
    pub selected: RwSignal<Option<String>>,
    /// The selected session's result lines per kind.
    pub lines: RwSignal<BTreeMap<ResultKind, Vec<String>>>,
    pub nodes: RwSignal<Vec<NodeView>>,
    pub topology: RwSignal<Option<TopologyView>>,
    pub chaos: RwSignal<ChaosView>,
    /// Backpressure and rates, every 2 s.
    pub flow: RwSignal<FlowView>,
    pub log: RwSignal<VecDeque<LogEntry>>,
    log_seq: StoredValue<u64>,
    /// The cluster state last written to the log.
    logged_cluster: StoredValue<String>,
    /// A message shown under the header: (is an error, text).
    pub notice: RwSignal<Option<(bool, String)>>,
}

impl Default for Console {
    fn default() -> Self {
        Console::new()
    }
}

impl Console {
    pub fn new() -> Console {
        Console {
            cluster: RwSignal::new("unknown".into()),
            cluster_error: RwSignal::new(None),
            status: RwSignal::new(StatusView::default()),
            connected: RwSignal::new(false),
            datasets: RwSignal::new(Vec::new()),
            dataset: RwSignal::new("sample".into()),
            sessions: RwSignal::new(Vec::new()),
            progress: RwSignal::new(BTreeMap::new()),
            selected: RwSignal::new(None),
            lines: RwSignal::new(BTreeMap::new()),
            nodes: RwSignal::new(Vec::new()),
            topology: RwSignal::new(None),
            chaos: RwSignal::new(ChaosView::default()),
            flow: RwSignal::new(FlowView::default()),
            log: RwSignal::new(stored_log()),
            log_seq: StoredValue::new(LOG_LIMIT as u64),
            logged_cluster: StoredValue::new(String::new()),
            notice: RwSignal::new(None),
        }
    }

    /// Loads everything once, opens the event stream, and polls the sessions as a safety net.
    pub fn start(self) {
        self.refresh_status();
        self.refresh_datasets();
        self.refresh_sessions();
        self.refresh_nodes();
        spawn_local(async move {
            if let Ok(topology) = api::get::<TopologyView>("/api/topology").await {
                self.topology.set(Some(topology));
            }
        });
        self.connect();
        set_interval(move || self.refresh_sessions(), Duration::from_secs(3));
    }

    pub fn error(self, text: impl Into<String>) {
        let text = text.into();
        self.push_log("error", text.clone());
        self.notice.set(Some((true, text)));
    }

    pub fn info(self, text: impl Into<String>) {
        self.notice.set(Some((false, text.into())));
    }

    pub fn refresh_status(self) {
        spawn_local(async move {
            // The flow comes as events when it changes: a page that connects in between asks for it.
            if let Ok(flow) = api::get::<FlowView>("/api/flow").await {
                self.flow.set(flow);
            }
            match api::get::<StatusView>("/api/status").await {
                Ok(status) => {
                    self.apply_cluster(status.cluster.clone());
                    self.chaos.set(status.chaos.clone());
                    self.status.set(status);
                }
                Err(e) => self.error(format!("status: {e}")),
            }
        });
    }

    pub fn refresh_datasets(self) {
        spawn_local(async move {
            match api::get::<Vec<DatasetView>>("/api/datasets").await {
                Ok(list) => {
                    let selected = self.dataset.get_untracked();
                    if !list.iter().any(|d| d.id == selected) {
                        if let Some(first) = list.first() {
                            self.dataset.set(first.id.clone());
                        }
                    }
                    self.datasets.set(list);
                }
                Err(e) => self.error(format!("datasets: {e}")),
            }
        });
    }

    pub fn refresh_sessions(self) {
        spawn_local(async move {
            if let Ok(list) = api::get::<Vec<SessionView>>("/api/sessions").await {
                self.sessions.set(list);
            }
        });
    }

    pub fn refresh_nodes(self) {
        spawn_local(async move {
            if let Ok(list) = api::get::<Vec<NodeView>>("/api/nodes").await {
                self.nodes.set(list);
            }
        });
    }

    /// Shows a session's results: the lines kept so far, then the live ones.
    pub fn select(self, id: String) {
        self.selected.set(Some(id.clone()));
        self.lines.set(BTreeMap::new());
        spawn_local(async move {
            match api::get::<api::SessionResults>(&format!("/api/sessions/{id}/results")).await {
                Ok(results) if self.selected.get_untracked().as_deref() == Some(id.as_str()) => {
                    self.lines.set(results.lines)
                }
                Ok(_) => {}
                Err(e) => self.error(format!("results: {e}")),
            }
        });
    }

    pub fn push_log(self, kind: &'static str, text: String) {
        let seq = self.log_seq.get_value() + 1;
        self.log_seq.set_value(seq);
        self.log.update(|log| {
            log.push_front(LogEntry { seq, time: clock(), kind, text });
            log.truncate(LOG_LIMIT);
        });
        self.log.with_untracked(store_log);
    }

    /// Empties the event log, here and in the browser's storage.
    pub fn clear_log(self) {
        self.log.update(|log| log.clear());
        self.log.with_untracked(store_log);
    }

    fn apply_cluster(self, cluster: ClusterState) {
        if cluster.is_up() && self.cluster.get_untracked() != "up" {
            self.refresh_nodes();
        }
        self.cluster.set(cluster.state);
        self.cluster_error.set(cluster.error);
    }

    /// Opens the event stream; on close, retries every two seconds.
    fn connect(self) {
        let location = window().location();
        let scheme = if location.protocol().ok().as_deref() == Some("https:") { "wss" } else { "ws" };
        let host = location.host().unwrap_or_default();
        let Ok(socket) = web_sys::WebSocket::new(&api::with_token(&format!("{scheme}://{host}/api/events"))) else {
            set_timeout(move || self.connect(), Duration::from_secs(2));
            return;
        };
        let on_open = Closure::<dyn FnMut()>::new(move || {
            self.connected.set(true);
            // Whatever happened while disconnected: fetch it.
            self.refresh_sessions();
            self.refresh_status();
        });
        let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
            if let Some(text) = event.data().as_string() {
                // An event this page does not know (a newer console) is skipped, not fatal.
                if let Ok(event) = serde_json::from_str::<Event>(&text) {
                    self.on_event(event);
                }
            }
        });
        let on_close = Closure::<dyn FnMut()>::new(move || {
            self.connected.set(false);
            set_timeout(move || self.connect(), Duration::from_secs(2));
        });
        socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        // The socket owns its handlers for the page's life.
        on_open.forget();
        on_message.forget();
        on_close.forget();
    }

    /// Applies one event from the stream.
    fn on_event(self, event: Event) {
        let short = |session: &Uuid| session.to_string().chars().take(8).collect::<String>();
        match event {
            Event::Cluster(cluster) => {
                // Retries pass through `starting` every few seconds: log only a change between up and down.
                if cluster.state != "starting" && self.logged_cluster.get_value() != cluster.state {
                    let why = cluster.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
                    self.push_log("cluster", format!("cluster {}{why}", cluster.state));
                    self.logged_cluster.set_value(cluster.state.clone());
                }
                self.apply_cluster(cluster);
            }
            Event::Nodes { nodes } => {
                // A refusal is said once in the log, when a node is first seen refused (and again only after it
                // was started and refused anew).
                let before = self.nodes.get_untracked();
                for node in &nodes {
                    let (Some(reason), false) = (&node.refused, node.up) else { continue };
                    if !before.iter().any(|b| b.name == node.name && b.refused.is_some()) {
                        self.push_log("error", format!("{} is refused for good and left down: {reason}", node.name));
                    }
                }
                self.nodes.set(nodes)
            }
            Event::NodeKilled { node, pid, cause } => {
                let by = match cause {
                    KillCause::Chaos => "by the chaos monkey",
                    KillCause::Random => "at random",
                    KillCause::User => "from the console",
                };
                let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                self.push_log("kill", format!("killed {node}{pid} {by}"));
            }
            Event::NodePaused { node, pid, cause, for_ms } => {
                let by = match cause {
                    KillCause::Chaos => "by the chaos monkey",
                    KillCause::Random => "at random",
                    KillCause::User => "from the console",
                };
                let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                self.push_log("pause", format!("paused {node}{pid} for {:.1} s {by}", for_ms as f64 / 1000.0));
            }
            Event::NodeResumed { node } => self.push_log("resume", format!("resumed {node}")),
            Event::NodeRestarted { node, pid, restarts, by } => {
                let pid = pid.map(|p| format!(" as pid {p}")).unwrap_or_default();
                let by = by.map(|by| format!(", by {by}")).unwrap_or_default();
                self.push_log("restart", format!("restarted {node}{pid} (restart #{restarts}{by})"));
            }
            Event::Chaos { running, interval_ms, kills, pauses, faults } => {
                if self.chaos.get_untracked().running != running {
                    let what = match faults {
                        ChaosFaults::Kill => "killing",
                        ChaosFaults::Pause => "pausing",
                        ChaosFaults::Both => "killing or pausing",
                    };
                    let text = if running {
                        format!("chaos monkey started: {what} a random node every {:.1} s", interval_ms as f64 / 1000.0)
                    } else {
                        format!("chaos monkey stopped after {kills} kills and {pauses} pauses")
                    };
                    self.push_log("chaos", text);
                }
                self.chaos.update(|c| {
                    c.running = running;
                    c.interval_ms = interval_ms;
                    c.kills = kills;
                    c.pauses = pauses;
                    c.faults = faults;
                });
            }
            Event::SessionStarted { session, dataset, .. } => {
                let name = self.datasets.with_untracked(|all| {
                    all.iter().find(|d| d.id == dataset).map_or(dataset.clone(), |d| d.name.clone())
                });
                self.push_log("session", format!("session {} started on {name}", short(&session)));
                self.refresh_sessions();
            }
            Event::SessionProgress { session, rows_sent } => {
                self.update_session(session, |s| s.rows_sent = rows_sent);
                let now = js_sys::Date::now();
                self.progress.update(|all| {
                    let samples = all.entry(session).or_default();
                    if samples.last().is_none_or(|(_, rows)| *rows != rows_sent) && samples.len() < MAX_SAMPLES {
                        samples.push((now, rows_sent));
                    }
                });
            }
            Event::SessionResults { session, lines, counts, .. } => {
                self.update_session(session, |s| s.results = counts);
                if self.is_selected(session) {
                    self.append_lines(&lines);
                }
            }
            Event::SessionQueryDone { session, query } => self.update_session(session, |s| s.queries_done.push(query)),
            Event::SessionDone { session, elapsed_ms, .. } => {
                let seconds = elapsed_ms as f64 / 1000.0;
                self.push_log("session", format!("session {} done in {seconds:.1} s", short(&session)));
                self.refresh_sessions();
                // Live lines may have been dropped by a lagging stream: reload the kept ones.
                if self.is_selected(session) {
                    self.select(session.to_string());
                }
            }
            Event::SessionFailed { session, error } => {
                self.push_log("error", format!("session {} failed: {error}", short(&session)));
                self.refresh_sessions();
            }
            Event::SessionChecked { session, matches_reference, faults } => {
                self.update_session(session, |s| {
                    s.matches_reference = matches_reference;
                    s.checked = true;
                    s.faults = faults;
                });
                match matches_reference {
                    Some(true) => self.push_log("session", format!("session {} equals the reference", short(&session))),
                    Some(false) => {
                        self.push_log("error", format!("session {} differs from the reference", short(&session)))
                    }
                    None => {}
                }
            }
            Event::SessionFile { session, file, malformed, refused, .. } => {
                if let Some(refused) = refused {
                    self.push_log("error", format!("session {}: file refused: {refused}", short(&session)));
                } else if malformed > 0 {
                    let text = format!("session {}: {file}: {malformed} malformed rows skipped", short(&session));
                    self.push_log("session", text);
                }
            }
            Event::DatasetReady { id } => {
                self.push_log("dataset", format!("dataset {id} ready"));
                self.refresh_datasets();
            }
            Event::Flow(flow) => self.flow.set(flow),
            Event::Topology(topology) => {
                let shape: Vec<String> = topology.stages.iter().map(|s| format!("{}={}", s.name, s.replicas)).collect();
                self.push_log("cluster", format!("cluster rescaled: {}", shape.join(", ")));
                self.topology.set(Some(topology));
                self.refresh_status();
                self.refresh_nodes();
            }
            Event::DeadLetters { counts } => {
                let total: u64 = counts.values().map(|&n| u64::from(n)).sum();
                let before: u64 = self.status.get_untracked().dead_letters.values().map(|&n| u64::from(n)).sum();
                if total > before {
                    self.push_log("error", format!("{} poison messages set aside (dead letters)", total - before));
                }
                self.status.update(|s| s.dead_letters = counts);
            }
            Event::BrokerBlocked { blocked } => {
                let text = if blocked {
                    "the broker blocks publishers (a memory or disk alarm): everything waits until it clears"
                } else {
                    "the broker no longer blocks publishers"
                };
                self.push_log(if blocked { "error" } else { "cluster" }, text.to_owned());
                self.status.update(|s| s.broker_blocked = blocked);
            }
            Event::Error { message } if message.starts_with("lagged") => self.refresh_sessions(),
            Event::Error { message } => self.push_log("error", message),
        }
    }

    fn is_selected(self, session: Uuid) -> bool {
        self.selected.get_untracked() == Some(session.to_string())
    }

    fn update_session(self, id: Uuid, f: impl FnOnce(&mut SessionView)) {
        self.sessions.update(|list| {
            if let Some(session) = list.iter_mut().find(|s| s.id == id) {
                f(session);
            }
        });
    }

    fn append_lines(self, lines: &[(ResultKind, String)]) {
        self.lines.update(|kept| {
            for (kind, line) in lines {
                let list = kept.entry(*kind).or_default();
                if list.len() < LINES_LIMIT {
                    list.push(line.to_owned());
                }
            }
        });
    }
}

/// The local time as `HH:MM:SS`.
/// The event log kept in the browser's local storage, newest first (empty if there is none or it does not read).
fn stored_log() -> VecDeque<LogEntry> {
    let Some(storage) = window().local_storage().ok().flatten() else { return VecDeque::new() };
    let Some(text) = storage.get_item(LOG_STORAGE_KEY).ok().flatten() else { return VecDeque::new() };
    let entries: Vec<(String, String, String)> = serde_json::from_str(&text).unwrap_or_default();
    let known = entries.into_iter().filter_map(|(time, kind, text)| {
        let kind = LOG_KINDS.into_iter().find(|k| *k == kind)?;
        Some((time, kind, text))
    });
    // Sequence numbers below those of this page's new entries, newest highest.
    let entries: Vec<_> = known.take(LOG_LIMIT).collect();
    let n = entries.len() as u64;
    entries
        .into_iter()
        .enumerate()
        .map(|(i, (time, kind, text))| LogEntry { seq: n - i as u64, time, kind, text })
        .collect()
}

/// Keeps the event log in the browser's local storage (best effort: a browser without storage keeps none).
fn store_log(log: &VecDeque<LogEntry>) {
    let Some(storage) = window().local_storage().ok().flatten() else { return };
    let entries: Vec<(&str, &str, &str)> = log.iter().map(|e| (e.time.as_str(), e.kind, e.text.as_str())).collect();
    if let Ok(text) = serde_json::to_string(&entries) {
        let _ = storage.set_item(LOG_STORAGE_KEY, &text);
    }
}

fn clock() -> String {
    let now = js_sys::Date::new_0();
    format!("{:02}:{:02}:{:02}", now.get_hours(), now.get_minutes(), now.get_seconds())
}
