//! The local orchestrator: runs the gateway, every stage replica and the health monitors as child processes of
//! the one `coffee` binary ([`LocalCluster`]), restarts any that exits (or that a monitor asks to have
//! restarted), and stops them all on request. Each node's log goes to its own file in the cluster's run folder,
//! and `nodes.json` there says which process runs each node.
//!
//! Local processes are an [`Orchestrator`] two ways: a cluster in this process behind a lock (shared between its
//! supervision and the chaos monkey, see [`LocalCluster::supervise_under_chaos`]), and the processes of a
//! `cluster up` in another process, found by pid ([`ProcessesOf`], for `coffee chaos`).
//!
//! This is the layer above the monitors and the chaos monkey: it starts the former and runs the latter beside
//! its supervision, and neither of them knows it.

use crate::chaos::{self, ChaosEvent, ChaosMonkey};
use crate::control::{self, RestartRequest};
use crate::monitor;
pub use crate::orchestrator::Restarted;
use crate::orchestrator::{CrashLoop, NodeState, Orchestrator, RunState};
use coffee_engine::amqp;
use coffee_engine::heartbeat;
use coffee_engine::topology::{QueueType, Topology};
use coffee_model::node::NodeId;
use futures::future::BoxFuture;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

/// What the cluster runs and where.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub topology: Topology,
    pub gateway_addr: String,
    pub amqp_url: String,
    /// The `coffee` binary the nodes run (normally this very executable).
    pub exe: PathBuf,
}

impl ClusterSpec {
    /// The folder of this cluster's pid file and node logs.
    pub fn run_dir(&self) -> PathBuf {
        run_dir(&self.topology.namespace)
    }

    /// Where a node's output goes (every start of it appends to the same file).
    pub fn log_path(&self, node: &str) -> PathBuf {
        self.run_dir().join("logs").join(format!("{node}.log"))
    }

    /// Every node: its name and the arguments that start it.
    pub fn nodes(&self) -> Vec<(String, Vec<String>)> {
        let common = common_args(&self.topology);
        let mut nodes = vec![(
            "gateway".to_owned(),
            [vec!["gateway".to_owned(), "--listen".to_owned(), self.gateway_addr.clone()], common.clone()].concat(),
        )];
        for (stage, replica) in self.topology.stage_replicas() {
            let args = [
                vec![
                    "worker".to_owned(),
                    "--stage".to_owned(),
                    stage.name().to_owned(),
                    "--replica".to_owned(),
                    replica.to_string(),
                ],
                common.clone(),
            ]
            .concat();
            nodes.push((NodeId::stage(stage, replica).to_string(), args));
        }
        nodes
    }
}

/// The arguments of health monitor `replica` of `monitors` (the local launcher and the compose file both use them).
pub fn monitor_args(topology: &Topology, replica: u16, monitors: u16) -> Vec<String> {
    let (replica, monitors) = (replica.to_string(), monitors.to_string());
    ["monitor", "--replica", &replica, "--monitors", &monitors]
        .into_iter()
        .map(String::from)
        .chain(common_args(topology))
        .collect()
}

/// What every node (and the console) is told of the topology: replicas and namespace, and the queue type unless
/// it is the default.
pub fn common_args(topology: &Topology) -> Vec<String> {
    let mut args =
        vec!["--replicas".to_owned(), topology.replicas_spec(), "--namespace".to_owned(), topology.namespace.clone()];
    if topology.queue_type != QueueType::default() {
        args.extend(["--queue-type".to_owned(), topology.queue_type.as_str().to_owned()]);
    }
    if topology.delivery_limit != coffee_engine::topology::DEFAULT_DELIVERY_LIMIT {
        args.extend(["--delivery-limit".to_owned(), topology.delivery_limit.to_string()]);
    }
    args
}

/// The run folder of a namespace's cluster.
pub fn run_dir(namespace: &str) -> PathBuf {
    std::env::temp_dir().join(format!("coffee-{namespace}"))
}

/// The pid file `coffee cluster down` reads.
pub fn pid_file(namespace: &str) -> PathBuf {
    run_dir(namespace).join("cluster.pid")
}

struct Node {
    args: Vec<String>,
    child: Child,
    restarts: u32,
    /// When its current process started.
    started: Instant,
    /// When its process was found exited; `None` while it runs.
    exited: Option<Instant>,
    /// Exits in a row that came soon after a start (a crash loop): each one delays the next restart more.
    crash_loop: CrashLoop,
    /// Whether its last exit said it lost the broker ([`amqp::LOST_BROKER_EXIT_CODE`]): then it is restarted
    /// at once, to wait for the broker, rather than left to the monitors (who cannot hear it either).
    lost_broker: bool,
    /// Why it was refused for good, when its last exit said so ([`amqp::REFUSED_EXIT_CODE`]): it is left down,
    /// whoever asks, until a person restarts it ([`LocalCluster::restart`] by name, from the console or a test).
    refused: Option<String>,
}

impl Node {
    fn new(args: Vec<String>, child: Child) -> Node {
        Node {
            args,
            child,
            restarts: 0,
            started: Instant::now(),
            exited: None,
            crash_loop: CrashLoop::default(),
            lost_broker: false,
            refused: None,
        }
    }

    /// Notes that the process exited, if it did (once per process). A refused node said why in its log, which
    /// `spec` places: read then only, since every supervision tick reaps every node.
    fn reap(&mut self, name: &str, spec: &ClusterSpec) {
        if self.exited.is_some() {
            return;
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            use std::os::unix::process::ExitStatusExt;
            let now = Instant::now();
            // A node that exits by itself soon after starting is crash-looping; one killed by a signal is not.
            self.crash_loop.exited(status.signal().is_none(), now - self.started);
            self.exited = Some(now);
            self.lost_broker = status.code() == Some(amqp::LOST_BROKER_EXIT_CODE);
            let quick_exits = self.crash_loop.quick_exits();
            warn!(node = %name, %status, lost_broker = self.lost_broker, quick_exits, "node exited");
            if status.code() == Some(amqp::REFUSED_EXIT_CODE) {
                let reason = refusal_reason(&spec.log_path(name));
                error!(node = %name, %reason, "node refused for good: left down until it is restarted by hand");
                self.refused = Some(reason);
            }
        }
    }
}

/// Why a refused node said it was refused: the last `error:` line of its log (what `coffee` prints as it exits).
fn refusal_reason(log: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 64 * 1024;
    let mut tail = String::new();
    if let Ok(mut file) = std::fs::File::open(log) {
        let start = file.metadata().map(|m| m.len().saturating_sub(TAIL)).unwrap_or(0);
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(start)).is_ok() && file.read_to_end(&mut bytes).is_ok() {
            tail = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    let said = tail.lines().rev().find_map(|line| line.strip_prefix("error: "));
    said.map_or_else(|| format!("it said why in {}", log.display()), str::to_owned)
}

/// How long an exited node is left to the health monitors before the supervisor restarts it itself.
pub const DEFAULT_MONITOR_GRACE: Duration = Duration::from_secs(10);

/// Extra environment for the nodes a cluster starts.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Set on every node, at every start (e.g. `SNAPSHOT_INTERVAL`).
    pub env: Vec<(String, String)>,
    /// Set on one node at its first start only, so a restarted node is not armed again (e.g. `FAILPOINTS`).
    pub first_start_env: BTreeMap<String, Vec<(String, String)>>,
    /// Set on one node at every start (e.g. `FAILPOINTS` that must hold across its restarts).
    pub node_env: BTreeMap<String, Vec<(String, String)>>,
    /// Health monitors to run. With none, the cluster restarts a node as soon as its process exits; with some,
    /// the monitors have a node restarted when it falls silent (hung or dead), and the cluster restarts an exited
    /// node itself only if they have not within `monitor_grace`. An exited monitor is always restarted at once:
    /// the supervisor never depends on its own children to revive them.
    pub monitors: u16,
    pub monitor_grace: Duration,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            env: Vec::new(),
            first_start_env: BTreeMap::new(),
            node_env: BTreeMap::new(),
            monitors: 0,
            monitor_grace: DEFAULT_MONITOR_GRACE,
        }
    }
}

/// One node as `nodes.json` lists it (what `coffee cluster status` and `coffee chaos` read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// Milliseconds since its last heartbeat, if one was heard.
    pub heartbeat_age_ms: Option<u64>,
    /// Why it was refused for good and is left down (see [`amqp::REFUSED_EXIT_CODE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// A local process as an orchestrator sees it: running while it has a pid.
impl From<NodeStatus> for NodeState {
    fn from(n: NodeStatus) -> NodeState {
        NodeState {
            state: if n.pid.is_some() { RunState::Running } else { RunState::Stopped },
            detail: match (n.pid, &n.refused) {
                (Some(pid), _) => format!("pid {pid}"),
                (None, Some(_)) => "refused".to_owned(),
                (None, None) => "down".to_owned(),
            },
            pid: n.pid,
            restarts: Some(n.restarts),
            refused: n.refused,
            name: n.name,
        }
    }
}

/// The status file of a namespace's cluster.
pub fn status_file(namespace: &str) -> PathBuf {
    run_dir(namespace).join("nodes.json")
}

/// Reads the status file a running `cluster up` keeps.
pub fn read_status(namespace: &str) -> anyhow::Result<Vec<NodeStatus>> {
    let path = status_file(namespace);
    let text = std::fs::read_to_string(&path).map_err(|_| {
        anyhow::anyhow!("no cluster of namespace `{namespace}` is up here ({} is missing)", path.display())
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// The supervisor itself, as who restarted a node: it restarts an exited node that no monitor had restarted.
pub const SUPERVISOR: &str = "supervisor";

/// A running local cluster.
pub struct LocalCluster {
    spec: ClusterSpec,
    options: StartOptions,
    nodes: BTreeMap<String, Node>,
    /// When each node was last heard (fed by a heartbeat subscription).
    heard: heartbeat::HeardNodes,
    /// Restart requests from the monitors.
    requests: mpsc::UnboundedReceiver<RestartRequest>,
    /// The task that listens to heartbeats and restart requests.
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Listens to the nodes' heartbeats and the monitors' restart requests, reconnecting (patiently) whenever the
/// broker goes away, for as long as the cluster lives.
async fn watch_broker(
    spec: ClusterSpec,
    heard: heartbeat::HeardNodes,
    requests: mpsc::UnboundedSender<RestartRequest>,
) {
    loop {
        let watching = async {
            let connection = amqp::connect_patiently(&spec.amqp_url, "cluster").await;
            let channel = connection.create_channel().await?;
            amqp::declare_queues(&channel, &spec.topology).await?;
            let beats = heartbeat::subscribe(&connection, &spec.topology).await?.map(Heard::Beat);
            let asks = control::requests(&connection, &spec.topology).await?.map(Heard::Ask);
            let mut both = futures::stream::select(Box::pin(beats), Box::pin(asks));
            while let Some(event) = both.next().await {
                match event {
                    Heard::Beat(beat) => heard.record(&beat),
                    Heard::Ask(request) => {
                        let _ = requests.send(request);
                    }
                }
            }
            Ok::<_, anyhow::Error>(())
        };
        if let Err(e) = watching.await {
            warn!(error = %e, "lost the broker; watching again");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

enum Heard {
    Beat(heartbeat::Heartbeat),
    Ask(RestartRequest),
}

impl LocalCluster {
    /// Checks the broker, declares the queues, starts every node and waits until the gateway accepts clients.
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<Self> {
        Self::start_with(spec, StartOptions::default()).await
    }

    /// [`LocalCluster::start`] with extra environment for the nodes. Refuses to start beside nodes of the same
    /// namespace that still run (a `cluster up` killed without its nodes, say), naming their pids.
    pub async fn start_with(spec: ClusterSpec, options: StartOptions) -> anyhow::Result<Self> {
        let live = live_nodes(&spec.topology.namespace);
        if !live.is_empty() {
            let names: Vec<String> = live.iter().map(|(name, pid)| describe(name, *pid)).collect();
            anyhow::bail!(
                "nodes of namespace `{ns}` still run here: {}. Another `cluster up` of it runs, or one was killed \
                 and left them behind: stop them with `coffee cluster down --namespace {ns}`",
                names.join(", "),
                ns = spec.topology.namespace
            );
        }
        let connection = amqp::connect(&spec.amqp_url, "cluster").await?;
        let channel = connection.create_channel().await?;
        amqp::declare_queues(&channel, &spec.topology).await?;
        std::fs::create_dir_all(spec.run_dir().join("logs"))?;
        connection.close(200, "queues declared".into()).await?;
        let heard = heartbeat::HeardNodes::default();
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let watcher = tokio::spawn(watch_broker(spec.clone(), heard.clone(), requests_tx));
        let mut cluster = LocalCluster { nodes: BTreeMap::new(), spec, options, heard, requests, watcher };
        for (name, args) in cluster.node_commands() {
            let first = cluster.options.first_start_env.get(&name).cloned().unwrap_or_default();
            let child = cluster.spawn(&name, &args, &first)?;
            cluster.nodes.insert(name, Node::new(args, child));
        }
        cluster.wait_for_gateway(Duration::from_secs(30)).await?;
        info!(topology = %cluster.spec.topology, gateway = %cluster.spec.gateway_addr, nodes = cluster.nodes.len(), "cluster up");
        Ok(cluster)
    }

    /// Every node's name and arguments: the topology's nodes, and the monitors if any.
    fn node_commands(&self) -> Vec<(String, Vec<String>)> {
        let mut nodes = self.spec.nodes();
        let n = self.options.monitors;
        for replica in 0..n {
            nodes.push((monitor::monitor_name(replica), monitor_args(&self.spec.topology, replica, n)));
        }
        nodes
    }

    fn spawn(&self, name: &str, args: &[String], extra_env: &[(String, String)]) -> anyhow::Result<Child> {
        let log_path = self.spec.log_path(name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let always = self.options.node_env.get(name).map(Vec::as_slice).unwrap_or_default();
        let child = Command::new(&self.spec.exe)
            .args(args)
            .env("AMQP_URL", &self.spec.amqp_url)
            .envs(self.options.env.iter().chain(always).chain(extra_env).map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start node {name} ({}): {e}", self.spec.exe.display()))?;
        Ok(child)
    }

    async fn wait_for_gateway(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(&self.spec.gateway_addr).await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.nodes.get_mut("gateway").and_then(|n| n.child.try_wait().ok().flatten()) {
                anyhow::bail!(
                    "the gateway exited ({status}) before accepting clients; see {}",
                    self.spec.log_path("gateway").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the gateway did not accept clients at {} within {limit:?}", self.spec.gateway_addr)
    }

    /// Every node with its pid (None while down), restart count and heartbeat age.
    pub fn status(&self) -> Vec<NodeStatus> {
        self.nodes
            .iter()
            .map(|(name, n)| NodeStatus {
                name: name.clone(),
                pid: n.child.id(),
                restarts: n.restarts,
                heartbeat_age_ms: self.heard.get(name).map(|h| h.at.elapsed().as_millis() as u64),
                refused: n.refused.clone(),
            })
            .collect()
    }

    /// Restarts `name` if `pid` is still its current process (or it is down, or `pid` is unknown): kills it,
    /// reaps it, starts it again. Returns whether it did.
    pub async fn restart(&mut self, name: &str, pid: Option<u32>) -> anyhow::Result<bool> {
        let Some(node) = self.nodes.get_mut(name) else {
            warn!(node = %name, "restart asked for an unknown node");
            return Ok(false);
        };
        if !crate::orchestrator::acts_on_restart(node.child.id(), pid) {
            return Ok(false); // that incarnation is already gone: someone restarted it
        }
        let _ = node.child.kill().await;
        self.respawn(name)?;
        Ok(true)
    }

    /// Starts a new process for `name` (whose old one is dead).
    fn respawn(&mut self, name: &str) -> anyhow::Result<()> {
        let args = self.nodes[name].args.clone();
        let child = self.spawn(name, &args, &[])?;
        let node = self.nodes.get_mut(name).expect("present");
        node.child = child;
        node.restarts += 1;
        node.started = Instant::now();
        node.exited = None;
        node.refused = None;
        Ok(())
    }

    /// One round of supervision: serve the monitors' restart requests, then restart the nodes that exited and
    /// are due: at once (after a crash loop's backoff) without monitors, and for the monitors themselves; after
    /// `monitor_grace` for the other nodes when monitors run. Returns the nodes restarted, with who asked.
    pub async fn supervise_step(&mut self) -> anyhow::Result<Vec<Restarted>> {
        let mut restarted = Vec::new();
        self.reap_all();
        while let Ok(request) = self.requests.try_recv() {
            if self.nodes.get(&request.node).is_some_and(|n| n.refused.is_some()) {
                debug!(node = %request.node, by = %request.by, "a monitor asked to restart a refused node: left down");
                continue;
            }
            if self.restart(&request.node, request.pid).await? {
                info!(node = %request.node, by = %request.by, "restarted at a monitor's request");
                restarted.push(Restarted { node: request.node, by: request.by });
            }
        }
        for node in self.restart_due()? {
            restarted.push(Restarted { node, by: SUPERVISOR.to_owned() });
        }
        self.write_status()?;
        Ok(restarted)
    }

    /// Restarts the exited nodes whose time has come (see [`LocalCluster::supervise_step`]).
    fn restart_due(&mut self) -> anyhow::Result<Vec<String>> {
        let now = Instant::now();
        let monitored = self.options.monitors > 0;
        let grace = self.options.monitor_grace;
        let mut due = Vec::new();
        self.reap_all();
        for (name, node) in &self.nodes {
            let Some(exited) = node.exited.filter(|_| node.refused.is_none()) else { continue };
            let left_to_monitors = monitored && !monitor::is_monitor(name) && !node.lost_broker;
            let wait = if left_to_monitors { node.crash_loop.backoff().max(grace) } else { node.crash_loop.backoff() };
            if now >= exited + wait {
                due.push(name.clone());
            }
        }
        for name in &due {
            warn!(node = %name, "restarting an exited node");
            self.respawn(name)?;
        }
        Ok(due)
    }

    /// Notes every node's exit, if it exited.
    fn reap_all(&mut self) {
        for (name, node) in &mut self.nodes {
            node.reap(name, &self.spec);
        }
    }

    /// Writes `nodes.json` for `coffee cluster status` and `coffee chaos` in other shells.
    pub fn write_status(&self) -> anyhow::Result<()> {
        let path = status_file(&self.spec.topology.namespace);
        // Renamed into place so readers never see half a file; no fsync: it is rewritten every tick.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&self.status())?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Sends `signal` to a node's current process, if it runs (SIGSTOP pauses it, SIGCONT lets it go on).
    pub fn signal(&self, name: &str, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let node = self.nodes.get(name).ok_or_else(|| anyhow::anyhow!("no node named {name}"))?;
        if let Some(pid) = node.child.id() {
            // A process that exited meanwhile (not yet reaped) is not an error.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
        }
        Ok(())
    }

    /// SIGKILLs one node (the supervisor restarts it).
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(name).ok_or_else(|| anyhow::anyhow!("no node named {name}"))?;
        node.child.start_kill()?;
        Ok(())
    }

    /// SIGKILLs one node and waits (a second at most) until its process is gone and noted as exited. The
    /// orchestrators use this rather than [`LocalCluster::kill`]: a killed process still shows its pid until it
    /// is reaped, and a listing taken meanwhile would say the node runs.
    pub async fn kill_and_wait(&mut self, name: &str) -> anyhow::Result<()> {
        self.kill(name)?;
        let node = self.nodes.get_mut(name).expect("a node just killed");
        let _ = tokio::time::timeout(Duration::from_secs(1), node.child.wait()).await;
        node.reap(name, &self.spec);
        Ok(())
    }

    /// Restarts every node that has exited, now, whoever would have restarted it. Returns the names restarted.
    pub fn restart_exited(&mut self) -> anyhow::Result<Vec<String>> {
        let mut exited = Vec::new();
        self.reap_all();
        for (name, node) in &self.nodes {
            if node.exited.is_some() {
                exited.push(name.clone());
            }
        }
        for name in &exited {
            self.respawn(name)?;
        }
        Ok(exited)
    }

    /// Every node as an orchestrator sees it.
    pub fn node_states(&self) -> Vec<NodeState> {
        self.status().into_iter().map(NodeState::from).collect()
    }

    /// Restarts `name` whatever its process does; an error if there is no such node.
    pub async fn restart_node(&mut self, name: &str) -> anyhow::Result<()> {
        anyhow::ensure!(self.restart(name, None).await?, "no node named `{name}`");
        Ok(())
    }

    /// Starts `name` if it is down; does nothing if it runs.
    pub async fn start_node(&mut self, name: &str) -> anyhow::Result<()> {
        match self.nodes.get(name).map(|n| n.child.id()) {
            None => anyhow::bail!("no node named `{name}`"),
            Some(Some(_)) => Ok(()),
            // A local node that is down is started by restarting it (there is no separate "stopped" state).
            Some(None) => self.restart_node(name).await,
        }
    }

    /// Supervises the nodes (as [`LocalCluster::supervise_step`] does, every 100 ms) while `monkey` kills and
    /// pauses them through the one chaos loop ([`chaos::run_against`]), until `stop` resolves. Returns every
    /// kill, pause, resume and restart, in order; `on_event` sees each as it happens. Chaos failures (a node
    /// that exited just before its kill) are logged and skipped; a failed supervision step ends the run.
    pub async fn supervise_under_chaos(
        &mut self,
        monkey: &mut ChaosMonkey,
        stop: impl std::future::Future<Output = ()>,
        on_event: impl FnMut(&ChaosEvent) + Send,
    ) -> anyhow::Result<Vec<ChaosEvent>> {
        // Both halves record into one list, in the order things happened; they run on this one task.
        let record = std::sync::Mutex::new((Vec::new(), on_event));
        let note = |event: ChaosEvent| {
            let mut record = record.lock().expect("events lock");
            let (events, on_event) = &mut *record;
            on_event(&event);
            events.push(event);
        };
        let shared = tokio::sync::Mutex::new(self);
        let supervising = async {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let mut cluster = shared.lock().await;
                for Restarted { node, .. } in cluster.supervise_step().await? {
                    let pid = cluster.nodes.get(&node).and_then(|n| n.child.id());
                    note(ChaosEvent::now(&node, "restart", pid));
                }
            }
        };
        let chaos = chaos::run_against(&shared, monkey, stop, |report| {
            if let chaos::Report::Done(event) = report {
                note(event.clone());
            }
        });
        tokio::select! {
            counts = chaos => counts.map(drop)?,
            failed = supervising => return failed,
        }
        Ok(record.into_inner().expect("events lock").0)
    }

    /// Supervises the nodes until `stop` resolves.
    pub async fn supervise_until(&mut self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tick.tick() => {
                    // Each restart as a JSON event line, like `coffee chaos` prints its kills.
                    for Restarted { node: name, .. } in self.supervise_step().await? {
                        let pid = self.nodes.get(&name).and_then(|n| n.child.id());
                        println!("{}", ChaosEvent::now(&name, "restart", pid).to_json_line());
                    }
                }
            }
        }
    }

    /// Stops every node and removes the cluster's queues from the broker.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for node in self.nodes.values_mut() {
            let _ = node.child.start_kill();
        }
        for node in self.nodes.values_mut() {
            let _ = node.child.wait().await;
        }
        let connection = amqp::connect(&self.spec.amqp_url, "cluster").await?;
        let channel = connection.create_channel().await?;
        amqp::delete_queues(&channel, &self.spec.topology).await?;
        connection.close(200, "cluster down".into()).await?;
        // The cluster is gone with its queues: its nodes' session state has nothing left to resume.
        let _ = std::fs::remove_dir_all(self.spec.run_dir().join("state"));
        let _ = std::fs::remove_file(pid_file(&self.spec.topology.namespace));
        let _ = std::fs::remove_file(status_file(&self.spec.topology.namespace));
        info!("cluster down");
        Ok(())
    }
}

/// The local cluster behind a lock, for whoever shares it with its supervision (the chaos monkey, in
/// [`LocalCluster::supervise_under_chaos`]).
impl<C> Orchestrator for tokio::sync::Mutex<C>
where
    C: std::ops::DerefMut<Target = LocalCluster> + Send,
{
    fn describe(&self) -> String {
        "local processes".to_owned()
    }

    fn nodes(&self) -> BoxFuture<'_, anyhow::Result<Vec<NodeState>>> {
        Box::pin(async move { Ok(self.lock().await.node_states()) })
    }

    fn kill<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { self.lock().await.kill_and_wait(name).await })
    }

    fn restart<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { self.lock().await.restart_node(name).await })
    }

    fn start<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { self.lock().await.start_node(name).await })
    }

    fn pause<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { self.lock().await.signal(name, nix::sys::signal::Signal::SIGSTOP) })
    }

    fn resume<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { self.lock().await.signal(name, nix::sys::signal::Signal::SIGCONT) })
    }

    fn supervise(&self) -> BoxFuture<'_, anyhow::Result<Vec<Restarted>>> {
        Box::pin(async move { self.lock().await.supervise_step().await })
    }
}

/// The nodes of a `coffee cluster up` running in another process on this machine, found by pid in its
/// `nodes.json`: `coffee chaos` kills and pauses them; their supervisor and monitors restart them.
pub struct ProcessesOf {
    pub namespace: String,
}

impl ProcessesOf {
    fn pid(&self, name: &str) -> anyhow::Result<nix::unistd::Pid> {
        let node = read_status(&self.namespace)?.into_iter().find(|n| n.name == name);
        let pid = node.and_then(|n| n.pid).ok_or_else(|| anyhow::anyhow!("{name} has no process"))?;
        Ok(nix::unistd::Pid::from_raw(pid as i32))
    }

    fn signal(&self, name: &str, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        Ok(nix::sys::signal::kill(self.pid(name)?, signal)?)
    }
}

impl Orchestrator for ProcessesOf {
    fn describe(&self) -> String {
        format!("local processes (the cluster up of namespace {})", self.namespace)
    }

    fn nodes(&self) -> BoxFuture<'_, anyhow::Result<Vec<NodeState>>> {
        Box::pin(async move { Ok(read_status(&self.namespace)?.into_iter().map(NodeState::from).collect()) })
    }

    fn kill<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { self.signal(name, nix::sys::signal::Signal::SIGKILL) })
    }

    fn pause<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { self.signal(name, nix::sys::signal::Signal::SIGSTOP) })
    }

    fn resume<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { self.signal(name, nix::sys::signal::Signal::SIGCONT) })
    }

    fn restart<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { anyhow::bail!("{name} belongs to a `cluster up` in another process: it restarts it") })
    }

    fn start<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { anyhow::bail!("{name} belongs to a `cluster up` in another process: it starts it") })
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn describe(name: &str, pid: Option<u32>) -> String {
    pid.map_or_else(|| format!("{name} (pid unknown)"), |pid| format!("{name} (pid {pid})"))
}

/// The nodes of a namespace that run on this machine now: those whose folder's lock is held, with the pid
/// they wrote.
pub fn live_nodes(namespace: &str) -> Vec<(String, Option<u32>)> {
    let Ok(entries) = std::fs::read_dir(run_dir(namespace).join("state")) else { return Vec::new() };
    let mut live: Vec<(String, Option<u32>)> = entries
        .filter_map(|entry| {
            let dir = entry.ok()?.path();
            let pid = coffee_engine::incarnation::held(&dir)?;
            Some((dir.file_name()?.to_string_lossy().into_owned(), pid))
        })
        .collect();
    live.sort();
    live
}

/// The pid of the `cluster up` of a namespace, if it still runs.
pub fn running_supervisor(namespace: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file(namespace)).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    args.windows(2).any(|w| w == [b"cluster".as_slice(), b"up".as_slice()]).then_some(pid)
}

/// What `coffee cluster down` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Down {
    /// Asked the `cluster up` (this pid) to stop its nodes and itself.
    Signalled(u32),
    /// No `cluster up` ran, but these nodes did, left behind: they were killed.
    KilledOrphans(Vec<String>),
}

/// Stops the cluster of a namespace: SIGTERM to its `cluster up`, or, if that is gone, SIGKILL to the nodes it
/// left running.
pub fn signal_down(namespace: &str) -> anyhow::Result<Down> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    if let Some(pid) = running_supervisor(namespace) {
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM)
            .map_err(|e| anyhow::anyhow!("cannot signal cluster pid {pid}: {e}"))?;
        return Ok(Down::Signalled(pid));
    }
    let live = live_nodes(namespace);
    if live.is_empty() {
        anyhow::bail!("no cluster of namespace `{namespace}` is up here");
    }
    let mut killed = Vec::new();
    for (name, pid) in live {
        if let Some(pid) = pid {
            if kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok() {
                killed.push(describe(&name, Some(pid)));
            }
        }
    }
    // A killed process dies only when it leaves the kernel: one stuck in an fsync on a busy disk can take
    // seconds. Return once their locks are free, so that `cluster down && cluster up` works.
    let deadline = Instant::now() + ORPHANS_DIE_WITHIN;
    loop {
        let left = live_nodes(namespace);
        if left.is_empty() {
            return Ok(Down::KilledOrphans(killed));
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = left.iter().map(|(name, pid)| describe(name, *pid)).collect();
            anyhow::bail!(
                "killed the nodes left running, but after {ORPHANS_DIE_WITHIN:?} these still hold their folders: {}",
                names.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long `cluster down` waits for the nodes it killed to be gone.
const ORPHANS_DIE_WITHIN: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    #[test]
    fn a_refusal_is_the_last_error_line_of_the_nodes_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("q2_agg-0.log");
        std::fs::write(&log, "error: lost the broker: gone\nINFO started\nerror: the broker refuses queue q\nbye\n")
            .unwrap();
        assert_eq!(super::refusal_reason(&log), "the broker refuses queue q");
        let missing = dir.path().join("none.log");
        assert!(super::refusal_reason(&missing).contains("none.log"));
    }
}
