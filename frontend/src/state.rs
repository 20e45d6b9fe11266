//! The page's state: one set of signals shared by every panel, filled by the API and kept current by the
//! `/api/events` WebSocket (reconnected when it drops).

use crate::api::{self, ChaosView, DatasetView, NodeView, SessionView, StatusView, TopologyView};
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use wasm_bindgen::prelude::*;

/// Entries the event log keeps.
const LOG_LIMIT: usize = 300;
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
    /// The session whose results are shown.
    pub selected: RwSignal<Option<String>>,
    /// The selected session's result lines per kind.
    pub lines: RwSignal<BTreeMap<String, Vec<String>>>,
    pub nodes: RwSignal<Vec<NodeView>>,
    pub topology: RwSignal<Option<TopologyView>>,
    pub chaos: RwSignal<ChaosView>,
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
            selected: RwSignal::new(None),
            lines: RwSignal::new(BTreeMap::new()),
            nodes: RwSignal::new(Vec::new()),
            topology: RwSignal::new(None),
            chaos: RwSignal::new(ChaosView::default()),
            log: RwSignal::new(VecDeque::new()),
            log_seq: StoredValue::new(0),
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
            match api::get::<Value>("/api/status").await {
                Ok(status) => {
                    self.apply_cluster(&status["cluster"]);
                    if let Ok(parsed) = serde_json::from_value::<StatusView>(status) {
                        self.chaos.set(parsed.chaos.clone());
                        self.status.set(parsed);
                    }
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
    }

    fn apply_cluster(self, cluster: &Value) {
        let state = cluster["state"].as_str().unwrap_or("unknown").to_owned();
        let error = cluster["error"].as_str().map(str::to_owned);
        if state == "up" && self.cluster.get_untracked() != "up" {
            self.refresh_nodes();
        }
        self.cluster.set(state);
        self.cluster_error.set(error);
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
                if let Ok(value) = serde_json::from_str::<Value>(&text) {
                    self.on_event(value);
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
    fn on_event(self, event: Value) {
        let kind = event["type"].as_str().unwrap_or_default();
        let session = event["session"].as_str().unwrap_or_default().to_owned();
        let short: String = session.chars().take(8).collect();
        match kind {
            "cluster" => {
                let state = event["state"].as_str().unwrap_or_default().to_owned();
                // Retries pass through `starting` every few seconds: log only a change between up and down.
                if state != "starting" && self.logged_cluster.get_value() != state {
                    let why = event["error"].as_str().map(|e| format!(": {e}")).unwrap_or_default();
                    self.push_log("cluster", format!("cluster {state}{why}"));
                    self.logged_cluster.set_value(state);
                }
                self.apply_cluster(&event);
            }
            "nodes" => {
                if let Ok(nodes) = serde_json::from_value::<Vec<NodeView>>(event["nodes"].clone()) {
                    self.nodes.set(nodes);
                }
            }
            "node_killed" => {
                let by = match event["cause"].as_str() {
                    Some("chaos") => "by the chaos monkey",
                    Some("random") => "at random",
                    _ => "from the console",
                };
                let pid = event["pid"].as_u64().map(|p| format!(" (pid {p})")).unwrap_or_default();
                self.push_log("kill", format!("killed {}{pid} {by}", event["node"].as_str().unwrap_or("?")));
            }
            "node_restarted" => {
                let node = event["node"].as_str().unwrap_or("?");
                let pid = event["pid"].as_u64().map(|p| format!(" as pid {p}")).unwrap_or_default();
                let restarts = event["restarts"].as_u64().unwrap_or(0);
                let by = event["by"].as_str().map(|by| format!(", by {by}")).unwrap_or_default();
                self.push_log("restart", format!("restarted {node}{pid} (restart #{restarts}{by})"));
            }
            "chaos" => {
                if let Ok(chaos) = serde_json::from_value::<ChaosView>(event.clone()) {
                    let was = self.chaos.get_untracked().running;
                    if was != chaos.running {
                        let text = if chaos.running {
                            format!(
                                "chaos monkey started: a random node every {:.1} s",
                                chaos.interval_ms as f64 / 1000.0
                            )
                        } else {
                            format!("chaos monkey stopped after {} kills", chaos.kills)
                        };
                        self.push_log("chaos", text);
                    }
                    self.chaos.update(|c| {
                        c.running = chaos.running;
                        c.interval_ms = chaos.interval_ms;
                        c.kills = chaos.kills;
                    });
                }
            }
            "session_started" => {
                self.push_log(
                    "session",
                    format!("session {short} started on {}", event["dataset"].as_str().unwrap_or("?")),
                );
                self.refresh_sessions();
            }
            "session_progress" => {
                let rows = event["rows_sent"].as_u64().unwrap_or(0);
                self.update_session(&session, |s| s.rows_sent = rows);
            }
            "session_results" => {
                if let Ok(counts) = serde_json::from_value::<BTreeMap<String, u64>>(event["counts"].clone()) {
                    self.update_session(&session, |s| s.results = counts);
                }
                if self.selected.get_untracked().as_deref() == Some(session.as_str()) {
                    self.append_lines(&event["lines"]);
                }
            }
            "session_query_done" => {
                let query = event["query"].as_str().unwrap_or_default().to_owned();
                self.update_session(&session, |s| s.queries_done.push(query));
            }
            "session_done" => {
                let seconds = event["elapsed_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
                self.push_log("session", format!("session {short} done in {seconds:.1} s"));
                self.refresh_sessions();
                // Live lines may have been dropped by a lagging stream: reload the kept ones.
                if self.selected.get_untracked().as_deref() == Some(session.as_str()) {
                    self.select(session);
                }
            }
            "session_failed" => {
                self.push_log("error", format!("session {short} failed: {}", event["error"].as_str().unwrap_or("?")));
                self.refresh_sessions();
            }
            "session_file" => {
                if let Some(refused) = event["refused"].as_str() {
                    self.push_log("error", format!("session {short}: file refused: {refused}"));
                } else if event["malformed"].as_u64().unwrap_or(0) > 0 {
                    let file = event["file"].as_str().unwrap_or("?");
                    self.push_log(
                        "session",
                        format!("session {short}: {file}: {} malformed rows skipped", event["malformed"]),
                    );
                }
            }
            "dataset_ready" => {
                self.push_log("dataset", format!("dataset {} ready", event["id"].as_str().unwrap_or("?")));
                self.refresh_datasets();
            }
            "error" => {
                let message = event["message"].as_str().unwrap_or_default().to_owned();
                if message.starts_with("lagged") {
                    self.refresh_sessions();
                } else {
                    self.push_log("error", message);
                }
            }
            _ => {}
        }
    }

    fn update_session(self, id: &str, f: impl FnOnce(&mut SessionView)) {
        self.sessions.update(|list| {
            if let Some(session) = list.iter_mut().find(|s| s.id.to_string() == id) {
                f(session);
            }
        });
    }

    fn append_lines(self, lines: &Value) {
        let Some(lines) = lines.as_array() else { return };
        self.lines.update(|kept| {
            for line in lines.iter().filter_map(Value::as_str) {
                let parsed: Value = serde_json::from_str(line).unwrap_or_default();
                let kind = parsed["query"].as_str().unwrap_or("invalid").to_owned();
                let list = kept.entry(kind).or_default();
                if list.len() < LINES_LIMIT {
                    list.push(line.to_owned());
                }
            }
        });
    }
}

/// The local time as `HH:MM:SS`.
fn clock() -> String {
    let now = js_sys::Date::new_0();
    format!("{:02}:{:02}:{:02}", now.get_hours(), now.get_minutes(), now.get_seconds())
}
