//! The console's own cluster of local processes: started (and retried while RabbitMQ is down), supervised
//! (exited nodes restarted, or the monitors' restart requests served), stopped with the console.

use super::node_view;
use crate::events::{Event, Events};
use coffee::cluster::{ClusterSpec, LocalCluster, NodeStatus, Restarted, StartOptions};
use coffee_types::{ClusterState, NodeView};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tracing::{info, warn};

pub struct Local {
    options: StartOptions,
    cluster: tokio::sync::Mutex<Option<LocalCluster>>,
    starting: AtomicBool,
    /// Why the last start failed (cleared when the cluster is up).
    error: Mutex<Option<String>>,
}

impl Local {
    pub fn new(options: StartOptions) -> Local {
        Local {
            options,
            cluster: tokio::sync::Mutex::new(None),
            starting: AtomicBool::new(false),
            error: Mutex::default(),
        }
    }

    /// Starts the cluster unless it is up or starting. A failure is kept for [`Local::cluster_state`].
    pub async fn start(&self, spec: &ClusterSpec, events: &Events) -> anyhow::Result<()> {
        if self.cluster.lock().await.is_some() || self.starting.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        events.send(Event::Cluster(ClusterState::starting()));
        // Started without holding the lock: it takes seconds, and status requests must not wait for it.
        let started = LocalCluster::start_with(spec.clone(), self.options.clone()).await;
        let outcome = match started {
            Ok(cluster) => {
                *self.cluster.lock().await = Some(cluster);
                *self.error.lock().expect("lock") = None;
                info!(namespace = %spec.topology.namespace, "console cluster up");
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
        outcome
    }

    pub async fn is_down(&self) -> bool {
        self.cluster.lock().await.is_none()
    }

    /// `up`, `starting`, or `down` with the reason.
    pub fn cluster_state(&self) -> ClusterState {
        if self.starting.load(Ordering::SeqCst) {
            ClusterState::starting()
        } else if self.cluster.try_lock().map(|c| c.is_some()).unwrap_or(true) {
            // A held lock means someone is using the cluster, so it is up.
            ClusterState::up()
        } else {
            ClusterState::down(self.error.lock().expect("lock").clone())
        }
    }

    /// Every node, in the cluster's stable order (empty while the cluster is down).
    pub async fn status(&self) -> Vec<NodeView> {
        let cluster = self.cluster.lock().await;
        let Some(cluster) = cluster.as_ref() else { return Vec::new() };
        cluster.status().into_iter().map(view).collect()
    }

    /// SIGKILLs a node; [`Local::supervise`] restarts it.
    pub async fn kill(&self, name: &str) -> anyhow::Result<NodeView> {
        let mut guard = self.cluster.lock().await;
        let cluster = guard.as_mut().ok_or_else(|| anyhow::anyhow!("the cluster is not running"))?;
        let status = cluster
            .status()
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| anyhow::anyhow!("no node named `{name}`"))?;
        cluster.kill(name)?;
        Ok(view(status))
    }

    /// Restarts a node whatever its state; returns it as it runs now.
    pub async fn restart(&self, name: &str) -> anyhow::Result<NodeView> {
        let mut guard = self.cluster.lock().await;
        let cluster = guard.as_mut().ok_or_else(|| anyhow::anyhow!("the cluster is not running"))?;
        anyhow::ensure!(cluster.restart(name, None).await?, "no node named `{name}`");
        let status = cluster.status().into_iter().find(|n| n.name == name).expect("a node just restarted");
        Ok(view(status))
    }

    /// One step: serves the monitors' restart requests, or restarts exited nodes when there are no monitors.
    pub async fn supervise(&self, events: &Events) {
        let mut guard = self.cluster.lock().await;
        let Some(cluster) = guard.as_mut() else { return };
        match cluster.supervise_step().await {
            Ok(restarted) => {
                let status = cluster.status();
                for Restarted { node, by } in restarted {
                    let (pid, restarts) =
                        status.iter().find(|n| n.name == node).map(|n| (n.pid, n.restarts)).unwrap_or((None, 0));
                    info!(%node, ?pid, restarts, %by, "node restarted");
                    events.send(Event::NodeRestarted { node, pid, restarts, by: Some(by) });
                }
            }
            Err(e) => events.send(Event::Error { message: format!("restarting nodes: {e:#}") }),
        }
    }

    /// Stops the cluster (its queues are deleted).
    pub async fn shutdown(&self) {
        if let Some(cluster) = self.cluster.lock().await.take() {
            if let Err(e) = cluster.stop().await {
                warn!(error = %format!("{e:#}"), "stopping the cluster");
            }
        }
    }
}

fn view(status: NodeStatus) -> NodeView {
    let NodeStatus { name, pid, restarts, heartbeat_age_ms } = status;
    let detail = pid.map_or_else(|| "down".to_owned(), |pid| format!("pid {pid}"));
    node_view(name, pid.is_some(), pid, restarts, heartbeat_age_ms, detail)
}
