//! The nodes as the console drives them: through one [`Orchestrator`], chosen by `--orchestrator`. Either the
//! console's own cluster of local processes ([`local`]: started here, supervised, stopped on exit), or the
//! containers of a compose project ([`coffee_ops::docker::DockerOrchestrator`]: the console starts nothing, and the
//! compose file's health monitors restart what dies).
//!
//! Over the trait, this module adds what the page needs, the same for both: every node's state once a second,
//! with the heartbeat age the console hears itself; the cluster's state (up, starting, or down and why); an
//! event for every kill, pause, resume and restart; pauses from the page that end by themselves; and the chaos
//! monkey, which is the one loop of [`coffee_ops::chaos::run_against`] with its counts shown on the page.

pub mod local;
mod views;

use views::node_view;
pub use views::topology_view;

use crate::events::{Event, Events, KillCause};
use coffee_engine::heartbeat::{self, HeardNodes};
use coffee_engine::topology::Topology;
use coffee_ops::chaos::{self, ChaosMonkey, Faults, Report, Targets};
use coffee_ops::cluster::{ClusterSpec, Restarted};
use coffee_ops::orchestrator::{NodeState, Orchestrator, RunState};
use coffee_types::ClusterState;
use futures::future::BoxFuture;
use rand::seq::SliceRandom;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tracing::{info, warn};

/// How often exited nodes are noticed and restarted.
const SUPERVISE_EVERY: Duration = Duration::from_millis(250);
/// How often node status is broadcast.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How often nodes that could not be brought up are tried again.
const RETRY_EVERY: Duration = Duration::from_secs(5);
/// The chaos monkey's interval is clamped to this range, and it stops by itself after `MAX_CHAOS_KILLS`.
const MIN_CHAOS_INTERVAL: Duration = Duration::from_millis(500);
const MAX_CHAOS_INTERVAL: Duration = Duration::from_secs(600);
pub const MAX_CHAOS_KILLS: u32 = 100;
/// How long a stopped chaos monkey may take to resume the nodes it paused when the console shuts down.
const CHAOS_STOP_LIMIT: Duration = Duration::from_secs(10);
/// Who a restart asked for on the page is attributed to.
const BY_CONSOLE: &str = "the console";

pub use coffee_types::{ChaosFaults, ChaosView, NodeView};

/// The chaos monkey's run, as the page sees it.
#[derive(Default)]
struct Chaos {
    /// Which run this is: a run that was replaced by a newer one no longer counts or reports.
    run: u64,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Tells the run to stop (it resumes what it paused before it ends).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    running: bool,
    interval: Duration,
    kills: u32,
    pauses: u32,
    faults: ChaosFaults,
}

/// How long the chaos monkey pauses a node: around the monitors' timeout (3 s), so some pauses end before they
/// act and others after (the node is then replaced, and steps aside if it wakes).
const CHAOS_PAUSE: (Duration, Duration) = coffee_ops::chaos::DEFAULT_PAUSE;
/// How long a node paused from the page stays stopped, unless the request says.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(5);
/// The longest pause the page may ask for.
pub const MAX_PAUSE: Duration = Duration::from_secs(120);

/// Whether the nodes are up, as the console last found them.
#[derive(Default)]
struct Health {
    /// Whether the console is bringing the nodes up now.
    starting: bool,
    /// Whether the nodes were brought up (or reached) once.
    reached: bool,
    /// Why the last start or listing failed; cleared by the next that succeeds.
    error: Option<String>,
    /// Whether each node ran at the last listing (or was killed since), to tell when one comes back.
    running: HashMap<String, bool>,
}

pub struct Nodes {
    /// The cluster as it runs now: its topology changes when the page rescales it.
    spec: RwLock<ClusterSpec>,
    owner: Arc<dyn Orchestrator>,
    /// The console's own cluster, when it owns the nodes: only that one can be rescaled from the page.
    local: Option<Arc<local::Local>>,
    /// Every node's last heartbeat, heard by the console itself (for any orchestrator).
    heard: HeardNodes,
    watcher: tokio::task::JoinHandle<()>,
    /// Held while a listing compares what runs with `health.running`, and while a kill, a restart or a round
    /// of supervision changes it: otherwise a node killed and restarted at once (a local monitor, revived in
    /// 250 ms) could be marked down after its restart was reported, and reported again, by nobody, when the
    /// next listing finds it running.
    order: tokio::sync::Mutex<()>,
    health: Mutex<Health>,
    chaos: Mutex<Chaos>,
    events: Events,
    /// Kills and pauses so far.
    faults: std::sync::atomic::AtomicU32,
}

impl Nodes {
    /// The nodes of the compose project's containers (or of another orchestrator that is not the console's own
    /// cluster); `spec` names the namespace whose heartbeats are heard, and the gateway.
    pub fn new(spec: ClusterSpec, owner: Arc<dyn Orchestrator>, events: Events) -> Arc<Nodes> {
        Self::with_owner(spec, owner, None, events)
    }

    /// The console's own cluster of local processes, which the page may rescale.
    pub fn local(spec: ClusterSpec, local: Arc<local::Local>, events: Events) -> Arc<Nodes> {
        Self::with_owner(spec, local.clone(), Some(local), events)
    }

    fn with_owner(
        spec: ClusterSpec,
        owner: Arc<dyn Orchestrator>,
        local: Option<Arc<local::Local>>,
        events: Events,
    ) -> Arc<Nodes> {
        let heard = HeardNodes::default();
        // The namespace is all the watcher takes from the topology, and a rescale keeps it.
        let watcher = tokio::spawn(heartbeat::watch(spec.amqp_url.clone(), spec.topology.clone(), heard.clone()));
        let (order, health, chaos) = (tokio::sync::Mutex::new(()), Mutex::default(), Mutex::default());
        let (spec, faults) = (RwLock::new(spec), Default::default());
        Arc::new(Nodes { spec, owner, local, heard, watcher, order, health, chaos, events, faults })
    }

    /// The latest heartbeat heard from `node`, with what its process has done so far.
    pub fn heard(&self, node: &str) -> Option<heartbeat::Heard> {
        self.heard.get(node)
    }

    /// The pipeline's nodes that hold sessions, as their beats heard after `since` say (the gateway and each stage
    /// replica count the sessions they hold): whoever started them, the console or a client of its own on the
    /// gateway's port, and whether they run or wait to resume. Waits up to two beats for beats newer than
    /// `since`; a node not heard since then counts as its last beat says.
    pub async fn holding_sessions(&self, since: std::time::Instant) -> Vec<(String, u64)> {
        let names: Vec<String> = self.spec().nodes().into_iter().map(|(name, _)| name).collect();
        let deadline = since + 2 * heartbeat::INTERVAL + Duration::from_millis(500);
        while std::time::Instant::now() < deadline
            && names.iter().any(|n| self.heard.get(n).is_some_and(|h| h.at < since))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        names
            .into_iter()
            .filter_map(|name| {
                let held = self.heard.get(&name)?.work.open_sessions;
                (held > 0).then_some((name, held))
            })
            .collect()
    }

    /// The cluster as it runs now (its topology is the latest rescale's).
    pub fn spec(&self) -> ClusterSpec {
        self.spec.read().expect("lock").clone()
    }

    /// Whether the page may rescale the nodes: only the console's own cluster (a compose project's nodes are its
    /// containers, written into its file).
    pub fn rescalable(&self) -> bool {
        self.local.is_some()
    }

    /// Restarts the console's own cluster with `topology`'s replicas: the nodes stop, the cluster's queues and
    /// state go (as `coffee cluster down` removes them), and nodes of the new shape start. The caller makes sure no
    /// session runs or starts meanwhile; the chaos monkey must be stopped first, as it would kill nodes of a
    /// cluster coming up. The page hears `cluster` (starting, then up or down) and `topology`.
    pub async fn rescale(&self, topology: Topology) -> Result<(), RescaleError> {
        let local = self.local.as_ref().ok_or(RescaleError::NotOurs(self.owner.describe()))?;
        if self.chaos.lock().expect("lock").running {
            return Err(RescaleError::ChaosRunning);
        }
        if std::mem::replace(&mut self.health.lock().expect("lock").starting, true) {
            return Err(RescaleError::Starting);
        }
        self.events.send(Event::Cluster(ClusterState::starting()));
        let from = self.spec().topology.replicas_spec();
        let spec = {
            let mut spec = self.spec.write().expect("lock");
            spec.topology = topology;
            spec.clone()
        };
        info!(%from, to = %spec.topology.replicas_spec(), "rescaling the cluster");
        let outcome = local.rescale(spec.clone()).await;
        // The nodes of the old shape are gone: what was heard of them must not count for the new ones (a node of
        // the new shape heard before this is heard again within a second).
        self.heard.clear();
        self.health.lock().expect("lock").running.clear();
        {
            let mut health = self.health.lock().expect("lock");
            health.starting = false;
            // Not reached: the background loop brings the new shape up once it can (RabbitMQ back, say).
            (health.reached, health.error) = match &outcome {
                Ok(()) => (true, None),
                Err(e) => (false, Some(format!("{e:#}"))),
            };
        }
        self.events.send(Event::Cluster(self.cluster_state()));
        self.events.send(Event::Topology(topology_view(&spec.topology)));
        outcome.map_err(RescaleError::Start)
    }

    /// Who owns the nodes, for the page: `local processes` or `docker (compose project P)`.
    pub fn orchestrator(&self) -> String {
        self.owner.describe()
    }

    /// Brings the nodes up unless they are up or coming up (the local cluster starts; the Docker engine is
    /// asked for its containers). A failure is kept for [`Nodes::cluster_state`] and broadcast; the background
    /// loop tries again.
    pub async fn start(&self) -> anyhow::Result<()> {
        if std::mem::replace(&mut self.health.lock().expect("lock").starting, true) {
            return Ok(());
        }
        self.events.send(Event::Cluster(ClusterState::starting()));
        let outcome = self.owner.up().await;
        {
            let mut health = self.health.lock().expect("lock");
            health.starting = false;
            match &outcome {
                Ok(()) => (health.reached, health.error) = (true, None),
                Err(e) => health.error = Some(format!("{e:#}")),
            }
        }
        if let Err(e) = &outcome {
            warn!(error = %format!("{e:#}"), orchestrator = %self.owner.describe(), "the nodes are not up");
        }
        self.events.send(Event::Cluster(self.cluster_state()));
        outcome
    }

    /// The cluster's state: `up`, `starting`, or `down` with the reason.
    pub fn cluster_state(&self) -> ClusterState {
        let health = self.health.lock().expect("lock");
        match (&health.error, health.starting, health.reached) {
            (_, true, _) => ClusterState::starting(),
            (Some(error), false, _) => ClusterState::down(Some(error.clone())),
            (None, false, true) => ClusterState::up(),
            (None, false, false) => ClusterState::starting(),
        }
    }

    /// Every node, in a stable order (empty while the nodes cannot be listed).
    pub async fn status(&self) -> Vec<NodeView> {
        self.list().await.map(|nodes| nodes.into_iter().map(|n| self.view(n)).collect()).unwrap_or_default()
    }

    /// Kills a node at once (SIGKILL, to its process or its container); what supervises the nodes restarts it
    /// and the page hears `node_restarted`.
    pub async fn kill(&self, name: &str, cause: KillCause) -> anyhow::Result<NodeView> {
        let node = self.find(name).await?;
        self.kill_noted(name).await?;
        self.killed(name, node.pid, cause);
        Ok(node)
    }

    /// Kills a node and notes it down now, whether or not a listing sees it down before it is restarted (a
    /// container's restart is seen only as it running again).
    async fn kill_noted(&self, name: &str) -> anyhow::Result<()> {
        let _order = self.order.lock().await;
        self.owner.kill(name).await?;
        self.health.lock().expect("lock").running.insert(name.to_owned(), false);
        Ok(())
    }

    /// Kills and pauses so far (by hand or by the chaos monkey): a session's faults are the difference between
    /// its end and its start.
    pub fn faults_so_far(&self) -> u32 {
        self.faults.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reports a kill.
    fn killed(&self, name: &str, pid: Option<u32>, cause: KillCause) {
        self.faults.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        warn!(node = name, ?pid, ?cause, "node killed");
        self.events.send(Event::NodeKilled { node: name.to_owned(), pid, cause });
    }

    /// Stops a node where it stands (SIGSTOP) for `length`, then lets it go on (SIGCONT), as a hang would; the
    /// page hears `node_paused`, then `node_resumed`. If the monitors replace it meanwhile, it steps aside when
    /// it wakes.
    pub async fn pause(self: &Arc<Self>, name: &str, length: Duration, cause: KillCause) -> anyhow::Result<NodeView> {
        let length = length.min(MAX_PAUSE);
        let node = self.find(name).await?;
        self.owner.pause(name).await?;
        self.faults.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        warn!(node = name, pid = ?node.pid, ?length, ?cause, "node paused");
        let for_ms = length.as_millis() as u64;
        self.events.send(Event::NodePaused { node: name.to_owned(), pid: node.pid, cause, for_ms });
        let (nodes, name) = (self.clone(), name.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(length).await;
            match nodes.owner.resume(&name).await {
                Ok(()) => nodes.events.send(Event::NodeResumed { node: name }),
                Err(e) => nodes.events.send(Event::Error { message: format!("resuming {name}: {e:#}") }),
            }
        });
        Ok(node)
    }

    /// Restarts a node now, whether it runs or not (a node that is down comes back without waiting for the
    /// monitors; one that runs is stopped at once and started again).
    pub async fn restart(&self, name: &str) -> anyhow::Result<NodeView> {
        self.find(name).await?;
        {
            let _order = self.order.lock().await;
            self.owner.restart(name).await?;
            // Running again: this restart is reported here, so the next listing must not report it a second time.
            self.health.lock().expect("lock").running.insert(name.to_owned(), true);
        }
        let node = self.find(name).await?;
        info!(node = name, pid = ?node.pid, "node restarted from the console");
        let event = Event::NodeRestarted {
            node: name.to_owned(),
            pid: node.pid,
            restarts: node.restarts,
            by: Some(BY_CONSOLE.to_owned()),
        };
        self.events.send(event);
        Ok(node)
    }

    /// Kills a random running node, the gateway included: its clients reconnect and resume their sessions.
    pub async fn kill_random(&self, cause: KillCause) -> anyhow::Result<NodeView> {
        let candidates: Vec<String> = self.status().await.into_iter().filter(|n| n.up).map(|n| n.name).collect();
        let name = candidates.choose(&mut rand::thread_rng()).ok_or_else(|| anyhow::anyhow!("no running node"))?;
        self.kill(name, cause).await
    }

    pub fn chaos_view(&self) -> ChaosView {
        let chaos = self.chaos.lock().expect("lock");
        ChaosView {
            running: chaos.running,
            interval_ms: chaos.interval.as_millis() as u64,
            kills: chaos.kills,
            pauses: chaos.pauses,
            max_kills: MAX_CHAOS_KILLS,
            faults: chaos.faults,
        }
    }

    /// Starts (or restarts with a new interval) the chaos monkey: a random running node killed or paused (as
    /// `faults` says) every `interval`, at most [`MAX_CHAOS_KILLS`] times, by the one chaos loop.
    pub fn start_chaos(self: &Arc<Self>, interval: Duration, faults: ChaosFaults) -> ChaosView {
        let interval = interval.clamp(MIN_CHAOS_INTERVAL, MAX_CHAOS_INTERVAL);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let run = {
            let mut chaos = self.chaos.lock().expect("lock");
            stop(&mut chaos);
            let run = chaos.run + 1;
            *chaos = Chaos { run, stop: Some(stop_tx), running: true, interval, faults, ..Chaos::default() };
            run
        };
        let faults = match faults {
            ChaosFaults::Kill => Faults::Kill,
            ChaosFaults::Pause => Faults::Pause,
            ChaosFaults::Both => Faults::Both,
        };
        // A fresh seed each run: the page's monkey is not meant to be replayed.
        let mut monkey = ChaosMonkey::new(rand::random(), interval, interval, Targets::Random)
            .with_faults(faults, CHAOS_PAUSE)
            .with_limit(MAX_CHAOS_KILLS);
        let nodes = self.clone();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = stop_rx.await;
            };
            let tracked = Tracked(&nodes);
            let outcome = chaos::run_against(&tracked, &mut monkey, stop, |r| nodes.chaos_report(run, r));
            if let Err(e) = outcome.await {
                nodes.events.send(Event::Error { message: format!("chaos monkey: {e:#}") });
            }
            // Ended by itself (the limit reached) or stopped: not running any more, unless a newer run replaced it.
            let mut chaos = nodes.chaos.lock().expect("lock");
            if chaos.run == run && chaos.running {
                chaos.running = false;
                drop(chaos);
                nodes.events.send(nodes.chaos_event());
            }
        });
        self.chaos.lock().expect("lock").task = Some(task);
        info!(?interval, "chaos monkey started");
        self.events.send(self.chaos_event());
        self.chaos_view()
    }

    /// What the chaos loop reports, as the page hears it: a kill, pause or resume event, or an error, and the
    /// monkey's counts after each fault.
    fn chaos_report(&self, run: u64, report: Report<'_>) {
        let current = |chaos: &Chaos| chaos.run == run;
        match report {
            Report::Done(event) => {
                let (node, pid) =
                    (event.node.clone(), event.pid.or_else(|| self.heard.get(&event.node).map(|h| h.pid)));
                match event.action.as_str() {
                    "kill" => {
                        self.killed(&node, pid, KillCause::Chaos);
                        let mut chaos = self.chaos.lock().expect("lock");
                        if current(&chaos) {
                            chaos.kills += 1;
                        }
                    }
                    "pause" => {
                        let for_ms = event.for_ms.unwrap_or_default();
                        self.faults.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        warn!(%node, ?pid, for_ms, cause = ?KillCause::Chaos, "node paused");
                        self.events.send(Event::NodePaused { node, pid, cause: KillCause::Chaos, for_ms });
                        let mut chaos = self.chaos.lock().expect("lock");
                        if current(&chaos) {
                            chaos.pauses += 1;
                        }
                    }
                    "resume" => {
                        self.events.send(Event::NodeResumed { node });
                        return;
                    }
                    _ => return,
                }
            }
            Report::Failed { node, action, error } => {
                let what = if node.is_empty() { action.to_owned() } else { format!("{action} {node}") };
                let message = format!("chaos monkey: could not {what}: {error:#}");
                self.events.send(Event::Error { message });
            }
        }
        if current(&self.chaos.lock().expect("lock")) {
            self.events.send(self.chaos_event());
        }
    }

    pub fn stop_chaos(&self) -> ChaosView {
        stop(&mut self.chaos.lock().expect("lock"));
        info!("chaos monkey stopped");
        self.events.send(self.chaos_event());
        self.chaos_view()
    }

    fn chaos_event(&self) -> Event {
        let view = self.chaos_view();
        Event::Chaos {
            running: view.running,
            interval_ms: view.interval_ms,
            kills: view.kills,
            pauses: view.pauses,
            faults: view.faults,
        }
    }

    /// The background work, until the task is aborted: supervise the nodes (for an orchestrator that restarts
    /// them itself), broadcast status every second, and bring the nodes up again while they could not be.
    pub async fn run(self: Arc<Self>) {
        let mut supervise = tokio::time::interval(SUPERVISE_EVERY);
        let mut status = tokio::time::interval(STATUS_EVERY);
        // Not at once: the first attempt was just made (App::start), and its failure is shown until the next.
        let mut retry = tokio::time::interval_at(tokio::time::Instant::now() + RETRY_EVERY, RETRY_EVERY);
        loop {
            tokio::select! {
                _ = supervise.tick() => self.supervise().await,
                _ = status.tick() => {
                    let nodes = self.status().await;
                    self.events.send(Event::Nodes { nodes });
                }
                _ = retry.tick() => {
                    let down = {
                        let health = self.health.lock().expect("lock");
                        !health.reached && !health.starting
                    };
                    if down {
                        let nodes = self.clone();
                        // In its own task so supervision of nothing does not wait on a 10 s broker timeout.
                        tokio::spawn(async move { let _ = nodes.start().await; });
                    }
                }
            }
        }
    }

    /// One round of the orchestrator's supervision; each node it restarted is reported with who asked.
    async fn supervise(&self) {
        let supervised = {
            let _order = self.order.lock().await;
            let supervised = self.owner.supervise().await;
            // Running again, and reported below: the next listing must not report it a second time.
            for Restarted { node, .. } in supervised.iter().flatten() {
                self.health.lock().expect("lock").running.insert(node.clone(), true);
            }
            supervised
        };
        match supervised {
            Ok(restarted) if restarted.is_empty() => {}
            Ok(restarted) => {
                let nodes = self.owner.nodes().await.unwrap_or_default();
                for Restarted { node, by } in restarted {
                    let state = nodes.iter().find(|n| n.name == node);
                    let (pid, restarts) = (state.and_then(|n| n.pid), state.and_then(|n| n.restarts).unwrap_or(0));
                    info!(%node, ?pid, restarts, %by, "node restarted");
                    self.events.send(Event::NodeRestarted { node, pid, restarts, by: Some(by) });
                }
            }
            Err(e) => self.events.send(Event::Error { message: format!("restarting nodes: {e:#}") }),
        }
    }

    /// Stops the chaos monkey (waiting a little for it to resume what it paused), then the nodes if the console
    /// started them (a local cluster, whose queues are deleted); a compose project's containers keep running.
    pub async fn shutdown(&self) {
        let task = {
            let mut chaos = self.chaos.lock().expect("lock");
            stop(&mut chaos);
            chaos.task.take()
        };
        if let Some(task) = task {
            let _ = tokio::time::timeout(CHAOS_STOP_LIMIT, task).await;
        }
        self.owner.down().await;
        self.watcher.abort();
    }

    /// The node named `name`, or an error naming it (what is not a node, the broker say, is never found).
    async fn find(&self, name: &str) -> anyhow::Result<NodeView> {
        let nodes = self.list().await?;
        let node = nodes.into_iter().find(|n| n.name == name);
        Ok(self.view(node.ok_or_else(|| anyhow::anyhow!("no node named `{name}`"))?))
    }

    /// The nodes, as the orchestrator lists them; a node that runs again since the last listing and whose
    /// restart nobody reported (a container restarted by a monitor) is reported as `node_restarted`.
    async fn list(&self) -> anyhow::Result<Vec<NodeState>> {
        let _order = self.order.lock().await;
        let listed = self.owner.nodes().await;
        let mut health = self.health.lock().expect("lock");
        match listed {
            Ok(nodes) => {
                (health.reached, health.error) = (true, None);
                for node in &nodes {
                    let running = node.state == RunState::Running;
                    if health.running.insert(node.name.clone(), running) == Some(false) && running {
                        let view = self.view(node.clone());
                        let (node, pid, restarts) = (view.name, view.pid, view.restarts);
                        self.events.send(Event::NodeRestarted { node, pid, restarts, by: None });
                    }
                }
                Ok(nodes)
            }
            Err(e) => {
                health.error = Some(format!("{e:#}"));
                Err(e)
            }
        }
    }

    /// A node's view: the orchestrator's word on whether it runs, its pid and restarts (or, where the
    /// orchestrator does not know them, a container's, what its heartbeats say), and its heartbeat's age.
    fn view(&self, node: NodeState) -> NodeView {
        let heard = self.heard.get(&node.name);
        let age = heard.map(|h| h.at.elapsed().as_millis() as u64);
        let pid = node.pid.or(heard.map(|h| h.pid));
        let restarts = node.restarts.or(heard.map(|h| h.restarts)).unwrap_or(0);
        let up = node.state == RunState::Running;
        let mut view = node_view(node.name, up, pid, restarts, age, node.detail);
        view.refused = node.refused.filter(|_| !up);
        if let Some(heard) = heard.filter(|_| view.role != "monitor") {
            view.open_sessions = Some(heard.work.open_sessions);
            view.state = heard.state;
        }
        view
    }
}

/// The orchestrator as the console's chaos monkey drives it: its kills are noted like the page's
/// ([`Nodes::kill_noted`]), and its listings are the console's own.
struct Tracked<'a>(&'a Nodes);

impl Orchestrator for Tracked<'_> {
    fn describe(&self) -> String {
        self.0.owner.describe()
    }

    fn nodes(&self) -> BoxFuture<'_, anyhow::Result<Vec<NodeState>>> {
        Box::pin(self.0.list())
    }

    fn kill<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(self.0.kill_noted(name))
    }

    fn restart<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        self.0.owner.restart(name)
    }

    fn start<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        self.0.owner.start(name)
    }

    fn pause<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        self.0.owner.pause(name)
    }

    fn resume<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        self.0.owner.resume(name)
    }
}

/// Why the page could not rescale the cluster.
#[derive(Debug, thiserror::Error)]
pub enum RescaleError {
    #[error("the nodes belong to {0}: change its replicas where it is defined (coffee compose --replicas)")]
    NotOurs(String),
    #[error("the chaos monkey is running: stop it before rescaling")]
    ChaosRunning,
    #[error("the cluster is starting: try again once it is up")]
    Starting,
    /// The new shape did not come up; the console keeps trying.
    #[error("the cluster was rescaled but did not start: {0:#}")]
    Start(anyhow::Error),
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Tells a chaos run to stop; it is no longer shown as running.
fn stop(chaos: &mut Chaos) {
    if let Some(stop) = chaos.stop.take() {
        let _ = stop.send(());
    }
    chaos.running = false;
}
