//! The console's own cluster of local processes, as an [`Orchestrator`]: brought up on demand (the console
//! tries again while RabbitMQ is down), supervised (exited nodes restarted, the monitors' restart requests
//! served) and stopped with the console. Until it is up, listing its nodes fails with the reason it is not.

use coffee_ops::cluster::{ClusterSpec, LocalCluster, Restarted, StartOptions};
use coffee_ops::orchestrator::{NodeState, Orchestrator};
use futures::future::BoxFuture;
use nix::sys::signal::Signal;
use std::sync::Mutex;
use tracing::{info, warn};

pub struct Local {
    /// The cluster to bring up: a rescale changes its topology.
    spec: Mutex<ClusterSpec>,
    options: StartOptions,
    cluster: tokio::sync::Mutex<Option<LocalCluster>>,
    /// Held while the cluster starts, so that two starts never overlap (the second finds the cluster up). Not
    /// `cluster`'s lock: a start takes seconds, and listing the nodes must not wait for it.
    starting: tokio::sync::Mutex<()>,
    /// Why the last start failed (cleared when the cluster is up).
    error: Mutex<Option<String>>,
}

impl Local {
    pub fn new(spec: ClusterSpec, options: StartOptions) -> Local {
        Local {
            spec: Mutex::new(spec),
            options,
            cluster: tokio::sync::Mutex::new(None),
            starting: tokio::sync::Mutex::new(()),
            error: Mutex::default(),
        }
    }

    /// Why there is no cluster to act on.
    fn not_running(&self) -> anyhow::Error {
        match self.error.lock().expect("lock").clone() {
            Some(error) => anyhow::anyhow!(error),
            None => anyhow::anyhow!("the cluster is not running"),
        }
    }

    /// Stops the cluster (its queues and state go) and starts it again as `spec` says: the way to change its
    /// replicas. If the new cluster cannot start, it is kept as the one to bring up, as a first start is.
    pub async fn rescale(&self, spec: ClusterSpec) -> anyhow::Result<()> {
        let _starting = self.starting.lock().await;
        let running = self.cluster.lock().await.take();
        if let Some(cluster) = running {
            if let Err(e) = cluster.stop().await {
                // Its nodes are gone even so; only its queues may be left, and the new cluster declares its own.
                warn!(error = %format!("{e:#}"), "stopping the cluster before rescaling");
            }
        }
        *self.spec.lock().expect("lock") = spec;
        self.start_cluster().await
    }

    /// Starts the cluster of the current spec; the caller holds `starting`.
    async fn start_cluster(&self) -> anyhow::Result<()> {
        let spec = self.spec.lock().expect("lock").clone();
        match LocalCluster::start_with(spec.clone(), self.options.clone()).await {
            Ok(cluster) => {
                *self.cluster.lock().await = Some(cluster);
                *self.error.lock().expect("lock") = None;
                info!(namespace = %spec.topology.namespace, replicas = %spec.topology.replicas_spec(), "console cluster up");
                Ok(())
            }
            Err(e) => {
                *self.error.lock().expect("lock") = Some(format!("{e:#}"));
                Err(e)
            }
        }
    }

    /// Runs `act` on the cluster, or fails with why there is none.
    async fn on_cluster<T>(&self, act: impl FnOnce(&mut LocalCluster) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let mut cluster = self.cluster.lock().await;
        act(cluster.as_mut().ok_or_else(|| self.not_running())?)
    }
}

impl Orchestrator for Local {
    fn describe(&self) -> String {
        "local processes".to_owned()
    }

    fn nodes(&self) -> BoxFuture<'_, anyhow::Result<Vec<NodeState>>> {
        Box::pin(async move { self.on_cluster(|c| Ok(c.node_states())).await })
    }

    fn kill<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let mut cluster = self.cluster.lock().await;
            cluster.as_mut().ok_or_else(|| self.not_running())?.kill_and_wait(name).await
        })
    }

    fn restart<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let mut cluster = self.cluster.lock().await;
            cluster.as_mut().ok_or_else(|| self.not_running())?.restart_node(name).await
        })
    }

    fn start<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let mut cluster = self.cluster.lock().await;
            cluster.as_mut().ok_or_else(|| self.not_running())?.start_node(name).await
        })
    }

    fn pause<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { self.on_cluster(|c| c.signal(name, Signal::SIGSTOP)).await })
    }

    fn resume<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { self.on_cluster(|c| c.signal(name, Signal::SIGCONT)).await })
    }

    /// Starts the cluster unless it is up. A failure is kept: listing the nodes says it until a start succeeds.
    fn up(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let _starting = self.starting.lock().await;
            if self.cluster.lock().await.is_some() {
                return Ok(());
            }
            self.start_cluster().await
        })
    }

    /// Serves the monitors' restart requests, or restarts exited nodes when there are no monitors; nothing while
    /// the cluster is down.
    fn supervise(&self) -> BoxFuture<'_, anyhow::Result<Vec<Restarted>>> {
        Box::pin(async move {
            match self.cluster.lock().await.as_mut() {
                Some(cluster) => cluster.supervise_step().await,
                None => Ok(Vec::new()),
            }
        })
    }

    /// Stops the cluster (its queues are deleted).
    fn down(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(cluster) = self.cluster.lock().await.take() {
                if let Err(e) = cluster.stop().await {
                    warn!(error = %format!("{e:#}"), "stopping the cluster");
                }
            }
        })
    }
}
