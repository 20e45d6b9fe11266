//! The nodes as the console drives them, through one of two drivers chosen by `--orchestrator`:
//!
//! - [`local`]: the console starts its own cluster of local processes (health monitors included), serves the
//!   monitors' restart requests, and stops the cluster on exit;
//! - [`docker`]: the nodes are the containers of a compose project, killed and restarted through the Docker
//!   Engine API; the compose file's health monitors restart what dies.
//!
//! Either way the page gets every node's state once a second (up, restarts, heartbeat age), the user or the
//! chaos monkey can kill any node, and the user can restart one.

mod docker;
mod local;

use crate::events::{Event, Events, KillCause};
use coffee::cluster::{ClusterSpec, StartOptions};
use coffee::docker::DockerOrchestrator;
use coffee_types::ClusterState;
use rand::seq::SliceRandom;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// How often exited nodes are noticed and restarted.
const SUPERVISE_EVERY: Duration = Duration::from_millis(250);
/// How often node status is broadcast.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How often a cluster that failed to start is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(5);
/// The chaos monkey's interval is clamped to this range, and it stops by itself after `MAX_CHAOS_KILLS`.
const MIN_CHAOS_INTERVAL: Duration = Duration::from_millis(500);
const MAX_CHAOS_INTERVAL: Duration = Duration::from_secs(600);
pub const MAX_CHAOS_KILLS: u32 = 100;
/// Who a restart asked for on the page is attributed to.
const BY_CONSOLE: &str = "the console";

pub use coffee_types::{ChaosView, NodeView};

#[derive(Default)]
struct Chaos {
    task: Option<tokio::task::JoinHandle<()>>,
    interval: Duration,
    kills: u32,
}

pub struct Nodes {
    spec: ClusterSpec,
    driver: Driver,
    chaos: Mutex<Chaos>,
    events: Events,
}

enum Driver {
    Local(local::Local),
    Docker(docker::Docker),
}

impl Nodes {
    /// Nodes the console starts itself, as local processes.
    pub fn local(spec: ClusterSpec, options: StartOptions, events: Events) -> Arc<Nodes> {
        Nodes::with(spec, Driver::Local(local::Local::new(options)), events)
    }

    /// The containers `docker` drives; `spec` names the namespace whose heartbeats are heard and the gateway.
    pub fn docker(spec: ClusterSpec, docker: DockerOrchestrator, events: Events) -> Arc<Nodes> {
        let driver = Driver::Docker(docker::Docker::new(docker, &spec.amqp_url, &spec.topology, events.clone()));
        Nodes::with(spec, driver, events)
    }

    fn with(spec: ClusterSpec, driver: Driver, events: Events) -> Arc<Nodes> {
        Arc::new(Nodes { spec, driver, chaos: Mutex::new(Chaos::default()), events })
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Who owns the nodes, for the page: `local processes` or `docker (compose project P)`.
    pub fn orchestrator(&self) -> String {
        match &self.driver {
            Driver::Local(_) => "local processes".to_owned(),
            Driver::Docker(docker) => docker.describe(),
        }
    }

    /// Starts the local cluster unless it is up or starting, or checks that the Docker engine answers. A
    /// failure is kept for [`Nodes::cluster_state`] and broadcast; the background loop tries again.
    pub async fn start(&self) -> anyhow::Result<()> {
        let outcome = match &self.driver {
            Driver::Local(local) => local.start(&self.spec, &self.events).await,
            Driver::Docker(docker) => docker.start().await,
        };
        self.events.send(Event::Cluster(self.cluster_state()));
        outcome
    }

    /// The cluster's state: `up`, `starting`, or `down` with the reason.
    pub fn cluster_state(&self) -> ClusterState {
        match &self.driver {
            Driver::Local(local) => local.cluster_state(),
            Driver::Docker(docker) => docker.cluster_state(),
        }
    }

    /// Every node, in a stable order (empty while the cluster is down).
    pub async fn status(&self) -> Vec<NodeView> {
        match &self.driver {
            Driver::Local(local) => local.status().await,
            Driver::Docker(docker) => docker.status().await,
        }
    }

    /// Kills a node at once (SIGKILL, to its process or its container); what supervises the nodes restarts it
    /// and the page hears `node_restarted`.
    pub async fn kill(&self, name: &str, cause: KillCause) -> anyhow::Result<NodeView> {
        let node = match &self.driver {
            Driver::Local(local) => local.kill(name).await?,
            Driver::Docker(docker) => docker.kill(name).await?,
        };
        warn!(node = name, pid = ?node.pid, ?cause, "node killed");
        self.events.send(Event::NodeKilled { node: name.to_owned(), pid: node.pid, cause });
        Ok(node)
    }

    /// Restarts a node now, whether it runs or not (a node that is down comes back without waiting for the
    /// monitors; one that runs is stopped at once and started again).
    pub async fn restart(&self, name: &str) -> anyhow::Result<NodeView> {
        let node = match &self.driver {
            Driver::Local(local) => local.restart(name).await?,
            Driver::Docker(docker) => docker.restart(name).await?,
        };
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
        let name = candidates
            .choose(&mut rand::thread_rng())
            .ok_or_else(|| anyhow::anyhow!("no running node to kill"))?
            .clone();
        self.kill(&name, cause).await
    }

    pub fn chaos_view(&self) -> ChaosView {
        let chaos = self.chaos.lock().expect("lock");
        ChaosView {
            running: chaos.task.as_ref().is_some_and(|t| !t.is_finished()),
            interval_ms: chaos.interval.as_millis() as u64,
            kills: chaos.kills,
            max_kills: MAX_CHAOS_KILLS,
        }
    }

    /// Starts (or restarts with a new interval) the chaos monkey: a random node killed every `interval`, at
    /// most [`MAX_CHAOS_KILLS`] times.
    pub fn start_chaos(self: &Arc<Self>, interval: Duration) -> ChaosView {
        let interval = interval.clamp(MIN_CHAOS_INTERVAL, MAX_CHAOS_INTERVAL);
        self.stop_chaos_task();
        let nodes = self.clone();
        let task = tokio::spawn(async move {
            for _ in 0..MAX_CHAOS_KILLS {
                tokio::time::sleep(interval).await;
                match nodes.kill_random(KillCause::Chaos).await {
                    Ok(_) => nodes.chaos.lock().expect("lock").kills += 1,
                    Err(e) => nodes.events.send(Event::Error { message: format!("chaos monkey: {e:#}") }),
                }
                nodes.events.send(nodes.chaos_event());
            }
        });
        {
            let mut chaos = self.chaos.lock().expect("lock");
            *chaos = Chaos { task: Some(task), interval, kills: 0 };
        }
        info!(?interval, "chaos monkey started");
        self.events.send(self.chaos_event());
        self.chaos_view()
    }

    pub fn stop_chaos(&self) -> ChaosView {
        self.stop_chaos_task();
        info!("chaos monkey stopped");
        self.events.send(self.chaos_event());
        self.chaos_view()
    }

    fn stop_chaos_task(&self) {
        if let Some(task) = self.chaos.lock().expect("lock").task.take() {
            task.abort();
        }
    }

    fn chaos_event(&self) -> Event {
        let view = self.chaos_view();
        Event::Chaos { running: view.running, interval_ms: view.interval_ms, kills: view.kills }
    }

    /// The background work, until the task is aborted: broadcast status every second; for a local cluster also
    /// start (and retry) it and restart exited nodes.
    pub async fn run(self: Arc<Self>) {
        let mut supervise = tokio::time::interval(SUPERVISE_EVERY);
        let mut status = tokio::time::interval(STATUS_EVERY);
        let mut retry = tokio::time::interval(RETRY_EVERY);
        loop {
            tokio::select! {
                _ = supervise.tick() => {
                    if let Driver::Local(local) = &self.driver {
                        local.supervise(&self.events).await;
                    }
                }
                _ = status.tick() => {
                    let nodes = self.status().await;
                    self.events.send(Event::Nodes { nodes });
                }
                _ = retry.tick() => {
                    let down = match &self.driver {
                        Driver::Local(local) => local.is_down().await,
                        Driver::Docker(_) => false,
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

    /// Stops the chaos monkey, and the cluster if the console started it (its queues are deleted).
    pub async fn shutdown(&self) {
        self.stop_chaos_task();
        match &self.driver {
            Driver::Local(local) => local.shutdown().await,
            Driver::Docker(docker) => docker.shutdown(),
        }
    }
}

/// A node's view; its role and replica come from its name (`tx_filter-1`; `gateway` is replica 0).
fn node_view(
    name: String,
    up: bool,
    pid: Option<u32>,
    restarts: u32,
    heartbeat_age_ms: Option<u64>,
    detail: String,
) -> NodeView {
    let (role, replica) = match name.rsplit_once('-') {
        Some((role, replica)) if replica.parse::<u16>().is_ok() => (role.to_owned(), replica.parse().unwrap_or(0)),
        _ => (name.clone(), 0),
    };
    NodeView { up, name, role, replica, pid, restarts, heartbeat_age_ms, detail }
}
