//! `coffee cluster up` run as a user runs it: its own process, found through the files it writes (`nodes.json`),
//! stopped with `coffee cluster down`. For the tests of supervision, monitors and faults around the nodes.

use crate::harness::{free_addr, node_binary, unique_namespace};
use coffee_ops::cluster::{read_status, NodeStatus};
use std::sync::Arc;
use std::time::Duration;

/// A running `coffee cluster up`.
pub struct CliCluster {
    pub namespace: String,
    pub gateway: String,
    child: tokio::process::Child,
}

/// The nodes of the default topology with three monitors.
pub const DEFAULT_NODES: usize = 16;

impl CliCluster {
    /// Starts `coffee cluster up ARGS` (its stdout piped, for its restart events) with `env`, and waits until
    /// `nodes` nodes have been heard.
    pub async fn start(test: &str, args: &[&str], env: &[(&str, &str)], nodes: usize) -> CliCluster {
        Self::start_in(&unique_namespace(test), &free_addr(), args, env, nodes).await
    }

    /// [`CliCluster::start`] on a given namespace and gateway address.
    pub async fn start_in(
        namespace: &str,
        gateway: &str,
        args: &[&str],
        env: &[(&str, &str)],
        nodes: usize,
    ) -> CliCluster {
        let (namespace, gateway) = (namespace.to_owned(), gateway.to_owned());
        let child = tokio::process::Command::new(node_binary())
            .args(["cluster", "up"])
            .args(args)
            .env("COFFEE_NAMESPACE", &namespace)
            .env("GATEWAY_ADDR", &gateway)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start coffee cluster up");
        let cluster = CliCluster { namespace, gateway, child };
        // This `cluster up` is the namespace's (its pid file), then every node is heard in its status file.
        let pid = cluster.pid();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while coffee_ops::cluster::running_supervisor(&cluster.namespace) != Some(pid) {
            assert!(tokio::time::Instant::now() < deadline, "cluster up did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster
            .wait_for("every node heard", Duration::from_secs(60), |s| {
                s.len() == nodes && s.iter().all(|n| n.heartbeat_age_ms.is_some_and(|a| a < 1500))
            })
            .await;
        cluster
    }

    /// Polls `nodes.json` until `ok` holds; panics with the last status after `limit`.
    pub async fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&[NodeStatus]) -> bool) -> Vec<NodeStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Ok(status) = read_status(&self.namespace) {
                if ok(&status) {
                    return status;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out after {limit:?} waiting for {what}: {:#?}", read_status(&self.namespace));
    }

    /// The pid of the `cluster up` process itself.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("cluster up runs")
    }

    /// A `coffee ARGS` command aimed at this cluster (its namespace and gateway).
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(node_binary());
        command.args(args).env("COFFEE_NAMESPACE", &self.namespace).env("GATEWAY_ADDR", &self.gateway);
        command
    }

    pub fn status(&self) -> Vec<NodeStatus> {
        read_status(&self.namespace).expect("nodes.json")
    }

    /// Every node runs and was heard within `age`.
    pub async fn wait_all_beating(&self, limit: Duration, age: Duration) -> Vec<NodeStatus> {
        let age = age.as_millis() as u64;
        self.wait_for("every node running and beating", limit, |s| {
            s.iter().all(|n| n.pid.is_some() && n.heartbeat_age_ms.is_some_and(|a| a < age))
        })
        .await
    }

    /// One client session through this cluster's gateway.
    pub async fn session(&self, data: &std::path::Path, out: &std::path::Path) -> coffee_engine::client::ClientSummary {
        let options = coffee_engine::client::ClientOptions::new(&self.gateway, data, out);
        coffee_engine::client::run_session(&options, Arc::new(|_| {}))
            .await
            .unwrap_or_else(|e| panic!("session on {}: {e:#}", data.display()))
    }

    /// `coffee cluster down`, and `cluster up`'s stdout (its JSON restart lines) once it has exited.
    pub async fn down(self) -> String {
        coffee_ops::cluster::signal_down(&self.namespace).expect("signal cluster down");
        let output =
            tokio::time::timeout(Duration::from_secs(30), self.child.wait_with_output()).await.expect("down").unwrap();
        assert!(output.status.success(), "cluster up exited with {}", output.status);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// The node named `name` in a status.
pub fn node<'a>(status: &'a [NodeStatus], name: &str) -> &'a NodeStatus {
    status.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
}

pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("signal a node");
}

/// Clients running sessions back to back through a cluster's gateway, one per dataset, each result compared
/// with the reference, until told to stop.
pub struct Clients {
    over: Arc<std::sync::atomic::AtomicBool>,
    running: Vec<tokio::task::JoinHandle<usize>>,
}

impl Clients {
    /// Starts one client per dataset; client `i` writes its results under `out/out-i`.
    pub fn start(cluster: &Arc<CliCluster>, datasets: &[std::path::PathBuf], out: &std::path::Path) -> Clients {
        let over = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let running = datasets
            .iter()
            .enumerate()
            .map(|(i, data)| {
                let (cluster, data, over) = (cluster.clone(), data.clone(), over.clone());
                let out = out.join(format!("out-{i}"));
                tokio::spawn(async move {
                    let mut exact = 0;
                    while !over.load(std::sync::atomic::Ordering::SeqCst) {
                        let summary = cluster.session(&data, &out).await;
                        crate::harness::assert_matches_reference(&summary, &data);
                        exact += 1;
                    }
                    exact
                })
            })
            .collect();
        Clients { over, running }
    }

    /// Lets every client finish the session it runs, then stop; returns how many sessions were exact (all of
    /// them: a session that is not fails the client).
    pub async fn finish(self) -> usize {
        self.over.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut exact = 0;
        for client in self.running {
            exact += tokio::time::timeout(Duration::from_secs(180), client).await.expect("sessions end").unwrap();
        }
        exact
    }
}
