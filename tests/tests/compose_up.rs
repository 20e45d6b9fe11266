//! The generated compose file, run: its node services as local processes behind a fake Docker Engine API
//! (`coffee_tests::compose_up`), each with the file's own command and environment. A client session gets exact
//! results; a worker and the leading monitor are killed through the Engine API (as the console and the chaos
//! monkey kill containers) and the monitors, in Docker mode, restart both through the same API; a second
//! session is still exact.

use coffee_engine::topology::Topology;
use coffee_ops::cluster::ClusterSpec;
use coffee_ops::compose::{compose_file, ComposeOptions};
use coffee_ops::docker::DockerOrchestrator;
use coffee_ops::orchestrator::Orchestrator;
use coffee_tests::compose_up::{ComposeUp, PROJECT};
use coffee_tests::harness::{amqp_url, assert_matches_reference, generate, run_session};
use coffee_tools::gen::Scale;
use std::time::Duration;

/// Waits until `node` runs as a new process (not `old`), restarted through the Engine API.
async fn wait_for_restart(up: &ComposeUp, node: &str, old: Option<u32>) {
    let id = up.container_of(node);
    let restart = format!("POST /containers/{id}/restart t=0");
    for _ in 0..300 {
        if up.engine.actions().contains(&restart) && up.pid_of(node).is_some_and(|pid| Some(pid) != old) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let actions = up.engine.actions();
    let (node_log, monitor_log) = (up.log_tail(node), up.log_tail("monitor-1"));
    panic!("{node} was not restarted through the engine: {actions:?}\n{node}:\n{node_log}\nmonitor-1:\n{monitor_log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_file_runs_and_its_monitors_restart_killed_containers() {
    let topology = Topology::with_replicas("coffee", "all=1").expect("topology");
    let up = ComposeUp::start(&compose_file(&topology, &ComposeOptions::default())).await;
    let spec = ClusterSpec {
        topology: Topology::with_replicas(&up.namespace, "all=1").expect("topology"),
        gateway_addr: up.gateway.clone(),
        amqp_url: amqp_url(),
        exe: coffee_tests::harness::node_binary(),
    };
    let data_dir = tempfile::tempdir().expect("tempdir");
    let data = generate(Scale::Tiny, 31, data_dir.path());
    let out = tempfile::tempdir().expect("tempdir");

    // The client retries while the gateway starts, as it would against a container that is not up yet.
    let first = run_session(&spec, &data, out.path()).await;
    assert_matches_reference(&first, &data);

    // The orchestrator sees every node container of the project, running.
    let docker = DockerOrchestrator::connect(&up.endpoint, Some(PROJECT.into())).expect("client");
    let nodes = docker.nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 1 + 6 + 3, "gateway, six stages, three monitors: {nodes:?}");

    // Kill a worker and the leading monitor through the API, as the console does: Docker would leave both
    // down (killed through the API), so only the monitors' restarts can bring them back.
    let (worker, leader) = (up.pid_of("q3_agg-0"), up.pid_of("monitor-2"));
    docker.kill("q3_agg-0").await.expect("kill the worker");
    docker.kill("monitor-2").await.expect("kill the leader");
    wait_for_restart(&up, "monitor-2", leader).await;
    wait_for_restart(&up, "q3_agg-0", worker).await;

    let second = run_session(&spec, &data, out.path()).await;
    assert_matches_reference(&second, &data);
    assert!(up.engine.actions().iter().all(|a| a.ends_with("/restart t=0") || a.ends_with("/kill signal=SIGKILL")));
}
