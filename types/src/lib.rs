//! The console API's views: what `coffee-console` serializes and the Leptos page deserializes. Serde only (no
//! tokio, no lapin), so the wasm page and the backend share one definition of each and cannot drift apart.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
/// Sessions are known by UUID; re-exported so the page needs no dependency of its own for it.
pub use uuid::Uuid;

/// The kinds of result line, one per `query` field value of `QUERIES.md` (Q2 has two). Serialized as that
/// value, so a map keyed by kind reads in JSON as the contract's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResultKind {
    #[serde(rename = "Q1")]
    Q1,
    #[serde(rename = "Q2_QTY")]
    Q2Qty,
    #[serde(rename = "Q2_PROFIT")]
    Q2Profit,
    #[serde(rename = "Q3")]
    Q3,
    #[serde(rename = "Q4")]
    Q4,
    /// The tests' example query (the `example-query` feature).
    #[cfg(feature = "example-query")]
    #[serde(rename = "Q5")]
    Q5,
}

impl ResultKind {
    /// Every kind, in the contract's order.
    #[cfg(not(feature = "example-query"))]
    pub const ALL: [ResultKind; 5] =
        [ResultKind::Q1, ResultKind::Q2Qty, ResultKind::Q2Profit, ResultKind::Q3, ResultKind::Q4];
    #[cfg(feature = "example-query")]
    pub const ALL: [ResultKind; 6] =
        [ResultKind::Q1, ResultKind::Q2Qty, ResultKind::Q2Profit, ResultKind::Q3, ResultKind::Q4, ResultKind::Q5];

    /// The line's `query` field.
    pub fn name(self) -> &'static str {
        match self {
            ResultKind::Q1 => "Q1",
            ResultKind::Q2Qty => "Q2_QTY",
            ResultKind::Q2Profit => "Q2_PROFIT",
            ResultKind::Q3 => "Q3",
            ResultKind::Q4 => "Q4",
            #[cfg(feature = "example-query")]
            ResultKind::Q5 => "Q5",
        }
    }

    pub fn from_name(name: &str) -> Option<ResultKind> {
        ResultKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The line's other fields, in the contract's order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            ResultKind::Q1 => &["transaction_id", "final_amount"],
            ResultKind::Q2Qty => &["year_month_created_at", "item_name", "sellings_qty"],
            ResultKind::Q2Profit => &["year_month_created_at", "item_name", "profit_sum"],
            ResultKind::Q3 => &["year_half_created_at", "store_name", "tpv"],
            ResultKind::Q4 => &["store_name", "birthdate", "user_id", "purchases_qty"],
            #[cfg(feature = "example-query")]
            ResultKind::Q5 => &["store_name", "transactions"],
        }
    }
}

impl fmt::Display for ResultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dataset of the console's data folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetView {
    pub id: String,
    pub name: String,
    /// `sample`, `generated` or `upload`.
    pub kind: String,
    pub files: usize,
    /// Data rows (header lines excluded).
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Running,
    Done,
    Failed,
}

impl SessionState {
    /// The name the API uses (`running`, `done`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Running => "running",
            SessionState::Done => "done",
            SessionState::Failed => "failed",
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One client session as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    pub id: Uuid,
    /// The dataset's id (`sample`, `upload-<uuid>`, ...).
    pub dataset: String,
    /// Its name as the user knows it (an upload's folder or first file name, say).
    #[serde(default)]
    pub dataset_name: String,
    pub state: SessionState,
    pub rows_sent: u64,
    /// Data rows of the dataset (the progress bar's end; malformed rows are never sent).
    pub rows_total: u64,
    /// Result lines received per kind.
    pub results: BTreeMap<ResultKind, u64>,
    /// Queries (`Q1`..`Q4`) whose results are complete.
    pub queries_done: Vec<String>,
    pub malformed: u64,
    pub error: Option<String>,
    pub started_ms: u64,
    pub elapsed_ms: u64,
    /// The cluster's replicas when the session ran (`tx_filter=2,...`).
    #[serde(default)]
    pub topology: String,
    /// Kills and pauses of nodes while the session ran (by hand or by the chaos monkey).
    #[serde(default)]
    pub faults: u32,
    /// Whether its results equal the reference's on the same data: checked once the session is done.
    #[serde(default)]
    pub matches_reference: Option<bool>,
    /// Whether that check has run: a done session not checked yet is being checked (or was left unchecked by a
    /// console stopped meanwhile, which checks it when it starts again); checked with no verdict, the reference
    /// could not run on its data.
    #[serde(default)]
    pub checked: bool,
    /// The files whose rows the client skipped (malformed) or that it refused whole, with a few examples.
    #[serde(default)]
    pub files_with_issues: Vec<FileIssues>,
}

/// A file of a session's dataset that did not go through whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIssues {
    pub file: String,
    pub rows_sent: u64,
    /// Rows skipped because they do not parse.
    pub malformed: u64,
    /// A few of them: `line N: why`.
    pub samples: Vec<String>,
    /// Why the whole file was refused, if it was (a wrong header, unreadable).
    pub refused: Option<String>,
}

impl SessionView {
    /// The dataset's name, or its id where the session has none (a record from before names were kept).
    pub fn dataset_label(&self) -> &str {
        if self.dataset_name.is_empty() {
            &self.dataset
        } else {
            &self.dataset_name
        }
    }

    /// Data rows sent per second over the whole session (0 until it has run).
    pub fn rows_per_second(&self) -> f64 {
        if self.elapsed_ms == 0 {
            return 0.0;
        }
        self.rows_sent as f64 * 1000.0 / self.elapsed_ms as f64
    }

    /// The first 8 characters of the id, enough to tell sessions apart on a page.
    pub fn short_id(&self) -> String {
        self.id.to_string().chars().take(8).collect()
    }

    /// Sent rows over the dataset's rows, in percent (a finished session is full).
    pub fn sent_pct(&self) -> f64 {
        if self.state == SessionState::Done || self.rows_total == 0 {
            return 100.0;
        }
        (self.rows_sent as f64 * 100.0 / self.rows_total as f64).min(100.0)
    }

    /// Finished queries over the four, in percent.
    pub fn done_pct(&self) -> f64 {
        self.queries_done.len().min(4) as f64 * 25.0
    }
}

/// A message a node set aside (a dead letter), as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterView {
    /// Its message id: what dropping or requeueing it names.
    pub id: String,
    /// The stage that set it aside (or `gateway`).
    pub stage: String,
    /// Why it was set aside.
    pub reason: String,
    /// The queue it was consumed from, where a requeue sends it back (empty if not recorded).
    pub from: String,
    /// When it was set aside (ms since the epoch; 0 if not recorded).
    pub at_ms: u64,
    pub bytes: usize,
    /// What it holds, shortly: the envelope's session, sender, stream and rows if it decodes, else its first
    /// bytes.
    pub preview: String,
}

/// A session's kept result lines, per kind, with the session's full counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResults {
    pub session: SessionView,
    pub lines: BTreeMap<ResultKind, Vec<String>>,
}

/// The answer to a launch: the new sessions' ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launched {
    pub sessions: Vec<Uuid>,
}

/// One node as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    /// `gateway`, `monitor` or the stage (`tx_filter`, ...).
    pub role: String,
    pub replica: u16,
    pub up: bool,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// Milliseconds since the node's last heartbeat, if one was heard.
    pub heartbeat_age_ms: Option<u64>,
    /// The orchestrator's own word: `pid 4242`, or the container's status (`Up 3 minutes`).
    pub detail: String,
    /// Sessions it holds now (stage replicas and the gateway).
    #[serde(default)]
    pub open_sessions: Option<u64>,
    /// Its durable state and last recovery (stage replicas).
    #[serde(default)]
    pub state: Option<ReplicaState>,
    /// Why it was refused for good (the broker refused its queues, or its state is not its to serve): it is
    /// left down until someone restarts it.
    #[serde(default)]
    pub refused: Option<String>,
}

/// A stage replica's durable state and its last recovery, as its heartbeat reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaState {
    /// Bytes of its session logs on disk.
    pub log_bytes: u64,
    /// Bytes of its session snapshots on disk.
    pub snapshot_bytes: u64,
    /// How long ago its newest snapshot was written, if it holds one.
    pub last_snapshot_age_ms: Option<u64>,
    /// How long its process took to read its folder back at start (snapshots loaded, logs replayed).
    pub recovery_ms: u64,
    /// Log records replayed then.
    pub replayed_records: u64,
    /// Sessions it recovered then.
    pub recovered_sessions: u64,
    /// From its process's start to consuming input: how long a restart kept it away.
    pub ready_ms: u64,
    /// Bytes free on the disk of its folder.
    #[serde(default)]
    pub disk_free_bytes: Option<u64>,
    /// It holds a group because that disk has less free than its reserve (`STATE_MIN_FREE_MB`): nothing is
    /// written or acked until space is freed.
    #[serde(default)]
    pub disk_full: bool,
}

/// The chaos monkey. `chaos` events carry all but `max_kills`, hence the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChaosView {
    pub running: bool,
    pub interval_ms: u64,
    /// Kills by the current (or last) run.
    pub kills: u32,
    /// Pauses by the current (or last) run.
    #[serde(default)]
    pub pauses: u32,
    /// At most this many faults a run.
    pub max_kills: u32,
    /// What the monkey does to a node.
    #[serde(default)]
    pub faults: ChaosFaults,
}

/// What the chaos monkey does to the nodes it picks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChaosFaults {
    /// SIGKILL.
    #[default]
    Kill,
    /// SIGSTOP for a few seconds, then SIGCONT.
    Pause,
    /// Either, at random.
    Both,
}

/// Whether the cluster is `up`, `starting` or `down` (with why).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub state: String,
    pub error: Option<String>,
}

impl ClusterState {
    pub fn up() -> ClusterState {
        ClusterState { state: "up".into(), error: None }
    }

    pub fn starting() -> ClusterState {
        ClusterState { state: "starting".into(), error: None }
    }

    /// Down, with why when it is known (e.g. RabbitMQ is down, and how to start it).
    pub fn down(error: Option<String>) -> ClusterState {
        ClusterState { state: "down".into(), error }
    }

    pub fn is_up(&self) -> bool {
        self.state == "up"
    }
}

/// The console and its cluster at a glance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusView {
    pub cluster: ClusterState,
    /// Who owns the nodes: `local processes` or `docker (compose project P)`.
    pub orchestrator: String,
    pub namespace: String,
    pub gateway: String,
    pub replicas: String,
    pub amqp_url: String,
    pub coffee_bin: String,
    pub frontend_built: bool,
    pub chaos: ChaosView,
    /// Poison messages set aside so far, per dead-letter queue (see [`Event::DeadLetters`]).
    pub dead_letters: BTreeMap<String, u32>,
    /// Whether the page may change the replicas (`POST /api/topology`): the console owns the nodes (local
    /// processes), not a compose project.
    pub rescalable: bool,
    /// Whether the broker blocks publishers (a memory or disk alarm; see [`Event::BrokerBlocked`]).
    #[serde(default)]
    pub broker_blocked: bool,
}

/// A stage of the pipeline and its replica count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageView {
    pub name: String,
    pub replicas: u16,
}

/// A stream between two stages (or the gateway).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeView {
    pub from: String,
    pub to: String,
    pub stream: String,
}

/// The pipeline as a graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyView {
    pub stages: Vec<StageView>,
    pub edges: Vec<EdgeView>,
}

/// How data flows through the pipeline over the last few seconds: where it queues (backpressure), how fast each
/// stage reads and writes, and how busy each node is. From the queue counts and the nodes' heartbeats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowView {
    /// Per stage (and `gateway`).
    pub stages: BTreeMap<String, StageFlow>,
    /// Per node: the share of the last interval it spent handling input, 0 to 1.
    pub busy: BTreeMap<String, f64>,
}

/// One stage's flow: summed over its replicas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageFlow {
    /// Messages waiting in its replicas' input queues.
    pub queued: u64,
    pub rows_in_per_s: f64,
    pub rows_out_per_s: f64,
    /// The busiest replica's share of time spent handling input, 0 to 1.
    pub busy: f64,
}

/// The comparison of two result sets, per query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The five queries first (always), then any other `query` value met, then `invalid` if any line was.
    pub queries: Vec<QueryComparison>,
    /// Whether every group is equal and there is no invalid line.
    pub equal: bool,
}

/// The comparison of one query's lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryComparison {
    pub name: String,
    /// Lines of this query on the left side.
    pub left: usize,
    /// Lines of this query on the right side.
    pub right: usize,
    pub equal: bool,
    /// Left lines (original text) with no equal line left on the right, at most a few dozen.
    pub missing_from_right: Vec<String>,
    pub missing_from_right_total: usize,
    /// Right lines (original text) with no equal line left on the left, at most a few dozen.
    pub extra_in_right: Vec<String>,
    pub extra_in_right_total: usize,
}

impl Comparison {
    /// Whether both sides hold the same valid lines.
    pub fn all_equal(&self) -> bool {
        self.equal
    }

    /// The comparison of one query (or of `invalid`), if it is reported.
    pub fn query(&self, name: &str) -> Option<&QueryComparison> {
        self.queries.iter().find(|q| q.name == name)
    }
}

impl fmt::Display for Comparison {
    /// One line per query, then the differing lines (`-` missing from right, `+` extra in right).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for q in &self.queries {
            let verdict = if q.equal {
                "equal".to_owned()
            } else {
                format!(
                    "DIFFERENT: {} missing from right, {} extra in right",
                    q.missing_from_right_total, q.extra_in_right_total
                )
            };
            writeln!(f, "{:<10} left {:>8}  right {:>8}  {verdict}", q.name, q.left, q.right)?;
        }
        for q in self.queries.iter().filter(|q| !q.equal) {
            for (sign, lines, total) in [
                ("-", &q.missing_from_right, q.missing_from_right_total),
                ("+", &q.extra_in_right, q.extra_in_right_total),
            ] {
                for line in lines {
                    writeln!(f, "{sign} {line}")?;
                }
                if total > lines.len() {
                    writeln!(f, "{sign} ... and {} more {} lines", total - lines.len(), q.name)?;
                }
            }
        }
        if self.equal {
            writeln!(f, "all equal")?;
        }
        Ok(())
    }
}

/// Everything the page hears about on the console's event stream (`/api/events`), one JSON object each, tagged
/// by `type` (`cluster`, `nodes`, `node_killed` ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The cluster came up, went down or failed to start (e.g. RabbitMQ is down: `error` says how to start it).
    Cluster(ClusterState),
    /// Every node, once a second.
    Nodes {
        nodes: Vec<NodeView>,
    },
    NodeKilled {
        node: String,
        pid: Option<u32>,
        cause: KillCause,
    },
    /// A node stopped where it stood (SIGSTOP) for `for_ms`, as a hang would: it goes on afterwards unless the
    /// monitors replaced it meanwhile.
    NodePaused {
        node: String,
        pid: Option<u32>,
        cause: KillCause,
        for_ms: u64,
    },
    /// A paused node let go on (SIGCONT).
    NodeResumed {
        node: String,
    },
    NodeRestarted {
        node: String,
        pid: Option<u32>,
        restarts: u32,
        /// Who restarted it: a monitor (`monitor-2`), the console's `supervisor`, or unknown (a container seen
        /// running again).
        by: Option<String>,
    },
    Chaos {
        running: bool,
        interval_ms: u64,
        kills: u32,
        #[serde(default)]
        pauses: u32,
        #[serde(default)]
        faults: ChaosFaults,
    },
    SessionStarted {
        session: Uuid,
        dataset: String,
        rows_total: u64,
    },
    SessionProgress {
        session: Uuid,
        rows_sent: u64,
    },
    SessionFile {
        session: Uuid,
        file: String,
        rows_sent: u64,
        malformed: u64,
        refused: Option<String>,
    },
    /// Result lines as they arrive (at most 50 per event; `more` counts the rest, which the page fetches) and the
    /// session's counts so far.
    SessionResults {
        session: Uuid,
        lines: Vec<(ResultKind, String)>,
        more: usize,
        counts: BTreeMap<ResultKind, u64>,
    },
    SessionQueryDone {
        session: Uuid,
        query: String,
    },
    SessionDone {
        session: Uuid,
        counts: BTreeMap<ResultKind, u64>,
        elapsed_ms: u64,
    },
    SessionFailed {
        session: Uuid,
        error: String,
    },
    /// An ended session was checked against the reference (if it is done) and kept in the run history.
    SessionChecked {
        session: Uuid,
        matches_reference: Option<bool>,
        faults: u32,
    },
    DatasetReady {
        id: String,
    },
    /// How data flows through the pipeline now (every 2 s while the cluster runs).
    Flow(FlowView),
    /// Poison messages set aside so far, per dead-letter queue (stage name, or `gateway`); sent when they change.
    DeadLetters {
        counts: BTreeMap<String, u32>,
    },
    /// The cluster was restarted with other replicas (a rescale from the page): the graph's new shape.
    Topology(TopologyView),
    /// The broker began, or stopped, blocking publishers (a memory or disk alarm): every node is silent and every
    /// session stands still meanwhile, and nobody is restarted for it.
    BrokerBlocked {
        blocked: bool,
    },
    Error {
        message: String,
    },
}

/// Who killed a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillCause {
    /// A click on the node's Kill (or Pause) button.
    User,
    /// The "kill a random node" button.
    Random,
    /// The console's chaos monkey.
    Chaos,
}

/// Two sessions' results compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareResponse {
    pub left: Uuid,
    pub right: Uuid,
    pub comparison: Comparison,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The wire shape the page and any other client of the event stream rely on: a `type` tag in snake case
    /// beside the event's fields.
    #[test]
    fn events_are_tagged_objects_that_read_back() {
        let events = [
            (
                Event::Cluster(ClusterState::down(Some("no broker".into()))),
                json!({"type": "cluster", "state": "down", "error": "no broker"}),
            ),
            (
                Event::NodeKilled { node: "q3_agg-1".into(), pid: Some(7), cause: KillCause::Chaos },
                json!({"type": "node_killed", "node": "q3_agg-1", "pid": 7, "cause": "chaos"}),
            ),
            (
                Event::NodeRestarted { node: "gateway".into(), pid: None, restarts: 2, by: Some("monitor-2".into()) },
                json!({"type": "node_restarted", "node": "gateway", "pid": null, "restarts": 2, "by": "monitor-2"}),
            ),
            (
                Event::SessionQueryDone { session: Uuid::nil(), query: "Q4".into() },
                json!({"type": "session_query_done", "session": Uuid::nil().to_string(), "query": "Q4"}),
            ),
            (
                Event::Topology(TopologyView {
                    stages: vec![StageView { name: "q4_count".into(), replicas: 3 }],
                    edges: vec![EdgeView { from: "q4_count".into(), to: "q4_top".into(), stream: "UserCounts".into() }],
                }),
                json!({
                    "type": "topology",
                    "stages": [{"name": "q4_count", "replicas": 3}],
                    "edges": [{"from": "q4_count", "to": "q4_top", "stream": "UserCounts"}],
                }),
            ),
        ];
        for (event, wire) in events {
            assert_eq!(serde_json::to_value(&event).unwrap(), wire);
            assert_eq!(serde_json::from_value::<Event>(wire).unwrap(), event);
        }
        assert!(serde_json::from_value::<Event>(json!({"type": "from_the_future"})).is_err());
    }

    #[test]
    fn a_status_missing_fields_still_reads() {
        let status: StatusView = serde_json::from_value(json!({"namespace": "coffee"})).unwrap();
        assert_eq!(status.namespace, "coffee");
        assert_eq!(status.chaos, ChaosView::default());
    }
}
