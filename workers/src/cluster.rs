//! The local orchestrator: runs the gateway and every stage replica as child processes of the one `coffee`
//! binary, restarts any that exits, and stops them all on request. Each node's log goes to its own file in the
//! cluster's run folder.

use crate::amqp;
use crate::control::{self, RestartRequest};
use crate::message::Role;
use crate::topology::{QueueType, Topology};
use crate::{heartbeat, monitor};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tracing::{info, warn};

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

    /// Every node: its name and the arguments that start it.
    pub fn nodes(&self) -> Vec<(String, Vec<String>)> {
        let common = common_args(&self.topology);
        let mut nodes = vec![(
            "gateway".to_owned(),
            [vec!["gateway".to_owned(), "--listen".to_owned(), self.gateway_addr.clone()], common.clone()].concat(),
        )];
        for node in self.topology.nodes() {
            let Role::Stage(stage) = node.role else { continue };
            let args = [
                vec![
                    "worker".to_owned(),
                    "--stage".to_owned(),
                    stage.name().to_owned(),
                    "--replica".to_owned(),
                    node.replica.to_string(),
                ],
                common.clone(),
            ]
            .concat();
            nodes.push((node.to_string(), args));
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
}

/// Extra environment for the nodes a cluster starts.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Set on every node, at every start (e.g. `SNAPSHOT_INTERVAL`).
    pub env: Vec<(String, String)>,
    /// Set on one node at its first start only, so a restarted node is not armed again (e.g. `FAILPOINTS`).
    pub first_start_env: BTreeMap<String, Vec<(String, String)>>,
    /// Health monitors to run. With none, the cluster restarts a node as soon as its process exits; with some,
    /// only when a monitor asks (a node silent past the monitors' timeout, hung or dead).
    pub monitors: u16,
}

/// One node as `nodes.json` lists it (what `coffee cluster status` and `coffee chaos` read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// Milliseconds since its last heartbeat, if one was heard.
    pub heartbeat_age_ms: Option<u64>,
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

/// Who restarts a node that exited when no monitors run.
pub const SUPERVISOR: &str = "supervisor";

/// A node that [`LocalCluster::supervise_step`] restarted, and who asked: a monitor (`monitor-2`), or
/// [`SUPERVISOR`] when it exited and no monitors run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restarted {
    pub node: String,
    pub by: String,
}

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
            let connection = amqp::connect_patiently(&spec.amqp_url, "cluster", amqp::NODE_PATIENCE).await?;
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

    /// [`LocalCluster::start`] with extra environment for the nodes.
    pub async fn start_with(spec: ClusterSpec, options: StartOptions) -> anyhow::Result<Self> {
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
            cluster.nodes.insert(name, Node { args, child, restarts: 0 });
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
        let log_path = self.spec.run_dir().join("logs").join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let child = Command::new(&self.spec.exe)
            .args(args)
            .env("AMQP_URL", &self.spec.amqp_url)
            .envs(self.options.env.iter().chain(extra_env).map(|(k, v)| (k, v)))
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
                    self.spec.run_dir().join("logs/gateway.log").display()
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
        let current = node.child.id();
        if pid.is_some() && current.is_some() && current != pid {
            return Ok(false); // that incarnation is already gone: someone restarted it
        }
        let _ = node.child.kill().await;
        let args = node.args.clone();
        let child = self.spawn(name, &args, &[])?;
        let node = self.nodes.get_mut(name).expect("present");
        node.child = child;
        node.restarts += 1;
        Ok(true)
    }

    /// One round of supervision: serve the monitors' restart requests, and without monitors restart what
    /// exited (with monitors, an exited node is only reaped: the monitors notice its silence). Returns the
    /// nodes restarted, with who asked.
    pub async fn supervise_step(&mut self) -> anyhow::Result<Vec<Restarted>> {
        let mut restarted = Vec::new();
        while let Ok(request) = self.requests.try_recv() {
            if self.restart(&request.node, request.pid).await? {
                info!(node = %request.node, by = %request.by, "restarted at a monitor's request");
                restarted.push(Restarted { node: request.node, by: request.by });
            }
        }
        if self.options.monitors == 0 {
            let exited = self.restart_exited()?;
            restarted.extend(exited.into_iter().map(|node| Restarted { node, by: SUPERVISOR.to_owned() }));
        } else {
            for node in self.nodes.values_mut() {
                let _ = node.child.try_wait();
            }
        }
        self.write_status()?;
        Ok(restarted)
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

    /// SIGKILLs one node (the supervisor restarts it).
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(name).ok_or_else(|| anyhow::anyhow!("no node named {name}"))?;
        node.child.start_kill()?;
        Ok(())
    }

    /// Restarts every node that has exited. Returns the names restarted.
    pub fn restart_exited(&mut self) -> anyhow::Result<Vec<String>> {
        let mut restarted = Vec::new();
        let exited: Vec<String> = self
            .nodes
            .iter_mut()
            .filter_map(|(name, node)| match node.child.try_wait() {
                Ok(Some(status)) => {
                    warn!(node = %name, %status, "node exited; restarting it");
                    Some(name.clone())
                }
                _ => None,
            })
            .collect();
        for name in exited {
            let args = self.nodes[&name].args.clone();
            let child = self.spawn(&name, &args, &[])?;
            let node = self.nodes.get_mut(&name).expect("present");
            node.child = child;
            node.restarts += 1;
            restarted.push(name);
        }
        Ok(restarted)
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
                        println!("{}", crate::chaos::ChaosEvent::now(&name, "restart", pid).to_json_line());
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

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Asks the `cluster up` of a namespace to stop (SIGTERM to the pid in its pid file).
pub fn signal_down(namespace: &str) -> anyhow::Result<u32> {
    let path = pid_file(namespace);
    let pid: i32 = std::fs::read_to_string(&path)
        .map_err(|_| {
            anyhow::anyhow!("no cluster of namespace `{namespace}` is up here ({} is missing)", path.display())
        })?
        .trim()
        .parse()?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)
        .map_err(|e| anyhow::anyhow!("cannot signal cluster pid {pid}: {e}"))?;
    Ok(pid as u32)
}
