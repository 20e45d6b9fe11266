//! The cluster as the console runs it: starts a [`LocalCluster`] (retrying while RabbitMQ is down), supervises
//! it (restarting any node that exits), reports node status every second, and kills nodes on request or from the
//! chaos monkey.
//!
//! Status comes from the cluster: process state (pid, restarts) and the age of each node's last heartbeat.

use crate::events::{Event, Events};
use coffee::cluster::{ClusterSpec, LocalCluster, NodeStatus, StartOptions};
use rand::seq::SliceRandom;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// One node as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub name: String,
    /// `gateway` or the stage (`tx_filter`, ...).
    pub role: String,
    pub replica: u16,
    pub up: bool,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// Milliseconds since the node's last heartbeat, if one was heard.
    pub heartbeat_age_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChaosView {
    pub running: bool,
    pub interval_ms: u64,
    /// Kills by the current (or last) run.
    pub kills: u32,
    pub max_kills: u32,
}

#[derive(Default)]
struct Chaos {
    task: Option<tokio::task::JoinHandle<()>>,
    interval: Duration,
    kills: u32,
}

pub struct Nodes {
    spec: ClusterSpec,
    options: StartOptions,
    cluster: tokio::sync::Mutex<Option<LocalCluster>>,
    starting: AtomicBool,
    /// Why the last start failed (cleared when the cluster is up).
    error: Mutex<Option<String>>,
    chaos: Mutex<Chaos>,
    events: Events,
}

impl Nodes {
    pub fn new(spec: ClusterSpec, options: StartOptions, events: Events) -> Arc<Nodes> {
        Arc::new(Nodes {
            spec,
            options,
            cluster: tokio::sync::Mutex::new(None),
            starting: AtomicBool::new(false),
            error: Mutex::new(None),
            chaos: Mutex::new(Chaos::default()),
            events,
        })
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Starts the cluster unless it is up or starting. A failure is kept for [`Nodes::cluster_event`] and
    /// broadcast; the background loop tries again.
    pub async fn start(&self) -> anyhow::Result<()> {
        if self.cluster.lock().await.is_some() || self.starting.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.events.send(Event::Cluster { state: "starting", error: None });
        // Started without holding the lock: it takes seconds, and status requests must not wait for it.
        let started = LocalCluster::start_with(self.spec.clone(), self.options.clone()).await;
        let outcome = match started {
            Ok(cluster) => {
                *self.cluster.lock().await = Some(cluster);
                *self.error.lock().expect("lock") = None;
                info!(namespace = %self.spec.topology.namespace, "console cluster up");
                Ok(())
            }
            Err(e) => {
                let message = format!("{e:#}");
                warn!(error = %message, "cluster did not start");
                *self.error.lock().expect("lock") = Some(message.clone());
                Err(anyhow::anyhow!(message))
            }
        };
        self.starting.store(false, Ordering::SeqCst);
        self.events.send(self.cluster_event());
        outcome
    }

    /// The cluster's state as an event: `up`, `starting`, or `down` with the reason.
    pub fn cluster_event(&self) -> Event {
        let error = self.error.lock().expect("lock").clone();
        let state = if self.starting.load(Ordering::SeqCst) {
            "starting"
        } else if self.cluster.try_lock().map(|c| c.is_some()).unwrap_or(true) {
            // A held lock means someone is using the cluster, so it is up.
            "up"
        } else {
            "down"
        };
        Event::Cluster { state, error }
    }

    /// Every node, in the cluster's stable order (empty while the cluster is down).
    pub async fn status(&self) -> Vec<NodeView> {
        let cluster = self.cluster.lock().await;
        let Some(cluster) = cluster.as_ref() else { return Vec::new() };
        cluster.status().into_iter().map(node_view).collect()
    }

    /// SIGKILLs a node; the supervisor restarts it and reports `node_restarted`.
    pub async fn kill(&self, name: &str, cause: &'static str) -> anyhow::Result<NodeView> {
        let mut guard = self.cluster.lock().await;
        let cluster = guard.as_mut().ok_or_else(|| anyhow::anyhow!("the cluster is not running"))?;
        let status = cluster
            .status()
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| anyhow::anyhow!("no node named `{name}`"))?;
        cluster.kill(name)?;
        warn!(node = name, pid = ?status.pid, cause, "node killed");
        self.events.send(Event::NodeKilled { node: name.to_owned(), pid: status.pid, cause });
        Ok(node_view(status))
    }

    /// Kills a random running node, the gateway included: its clients reconnect and resume their sessions.
    pub async fn kill_random(&self, cause: &'static str) -> anyhow::Result<NodeView> {
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
                match nodes.kill_random("chaos").await {
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

    /// The background work: start (and retry) the cluster, restart exited nodes, broadcast status. Runs until
    /// the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let mut supervise = tokio::time::interval(SUPERVISE_EVERY);
        let mut status = tokio::time::interval(STATUS_EVERY);
        let mut retry = tokio::time::interval(RETRY_EVERY);
        loop {
            tokio::select! {
                _ = supervise.tick() => self.restart_exited().await,
                _ = status.tick() => {
                    let nodes = self.status().await;
                    self.events.send(Event::Nodes { nodes });
                }
                _ = retry.tick() => {
                    if self.cluster.lock().await.is_none() {
                        let nodes = self.clone();
                        // In its own task so supervision of nothing does not wait on a 10 s broker timeout.
                        tokio::spawn(async move { let _ = nodes.start().await; });
                    }
                }
            }
        }
    }

    async fn restart_exited(&self) {
        let mut guard = self.cluster.lock().await;
        let Some(cluster) = guard.as_mut() else { return };
        // One step: serves the monitors' restart requests, or restarts exited nodes when there are no monitors.
        match cluster.supervise_step().await {
            Ok(restarted) => {
                let status = cluster.status();
                for name in restarted {
                    let (pid, restarts) =
                        status.iter().find(|n| n.name == name).map(|n| (n.pid, n.restarts)).unwrap_or((None, 0));
                    info!(node = %name, ?pid, restarts, "node restarted");
                    self.events.send(Event::NodeRestarted { node: name, pid, restarts });
                }
            }
            Err(e) => self.events.send(Event::Error { message: format!("restarting nodes: {e:#}") }),
        }
    }

    /// Stops the chaos monkey and the cluster (its queues are deleted).
    pub async fn shutdown(&self) {
        self.stop_chaos_task();
        if let Some(cluster) = self.cluster.lock().await.take() {
            if let Err(e) = cluster.stop().await {
                warn!(error = %format!("{e:#}"), "stopping the cluster");
            }
        }
    }
}

/// Splits `tx_filter-1` into role and replica; `gateway` is replica 0.
fn node_view(status: NodeStatus) -> NodeView {
    let NodeStatus { name, pid, restarts, heartbeat_age_ms } = status;
    let (role, replica) = match name.rsplit_once('-') {
        Some((role, replica)) if replica.parse::<u16>().is_ok() => (role.to_owned(), replica.parse().unwrap_or(0)),
        _ => (name.clone(), 0),
    };
    NodeView { up: pid.is_some(), name, role, replica, pid, restarts, heartbeat_age_ms }
}
