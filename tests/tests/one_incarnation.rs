//! One live process per node, enforced by the node itself: a second process of a replica waits for the first
//! to stop (and the first, if it was paused, steps aside when it wakes, touching nothing); a second process on
//! another state folder (another host) never takes the replica's input, under quorum queues too; and `cluster
//! up` refuses to start a second set of nodes beside those a killed `cluster up` left running, which `cluster
//! down` then stops.

use coffee_engine::topology::QueueType;
use coffee_model::node::StageKind;
use coffee_ops::cluster::LocalCluster;
use coffee_tests::cli_cluster::{node, signal, CliCluster, DEFAULT_NODES};
use coffee_tests::harness::{
    assert_matches_reference, cluster_spec, consumers, generate, process_runs, run_session, settle, spawn_twin,
    start_cluster,
};
use coffee_tools::gen::Scale;
use nix::sys::signal::Signal;
use std::time::Duration;

async fn eventually(what: &str, limit: Duration, ok: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the cluster's own replica consumes `queue`.
async fn wait_until_consumed(spec: &coffee_ops::cluster::ClusterSpec, queue: &str) {
    for _ in 0..100 {
        if consumers(spec, queue).await == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nobody consumes {queue}");
}

/// The replica is paused; a replacement starts (as an orchestrator that could not reach it would start one).
/// The replacement waits: only the paused one consumes. When the paused one wakes, it sees it was replaced and
/// stops at once; the replacement takes over and a session is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_that_was_replaced_steps_aside_when_it_wakes() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 51, &dir.path().join("data"));
    let (spec, mut cluster) = start_cluster("twin", "all=1").await;
    let queue = spec.topology.queue(coffee_model::node::StageKind::Q3Agg, 0);
    let first = cluster.status().into_iter().find(|n| n.name == "q3_agg-0").and_then(|n| n.pid).unwrap();
    wait_until_consumed(&spec, &queue).await;

    signal(first, Signal::SIGSTOP);
    let log = dir.path().join("twin.log");
    let mut twin = spawn_twin(&spec, "q3_agg-0", &[], &log);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(twin.try_wait().unwrap().is_none(), "the replacement waits");
    assert_eq!(consumers(&spec, &queue).await, 1, "only one process consumes the replica's queue");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("older incarnation of this node still runs"), "{said}");

    signal(first, Signal::SIGCONT);
    eventually("the woken replica to step aside", Duration::from_secs(3), || !process_runs(first)).await;
    eventually("the replacement to consume", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).unwrap().contains("stage replica consuming")
    })
    .await;
    assert_eq!(consumers(&spec, &queue).await, 1);
    let summary = run_session(&spec, &data, &dir.path().join("out")).await;
    assert_matches_reference(&summary, &data);
    twin.kill().await.unwrap();
    settle(&mut cluster, &spec).await;
    cluster.stop().await.unwrap();
}

/// A second process of a replica on a state folder of its own (another host's, or one set apart), beside the
/// first, under quorum queues, which accept a second "exclusive" consumer (RabbitMQ 3.10): it must never take
/// the replica's input. It waits for the replica's lock while the first runs, and three sessions are exact;
/// once the first dies it gets the lock, is refused (its folder is not the one that holds the replica's state)
/// and exits saying so, without having consumed anything; the replica's own process, restarted, carries on.
/// Before the replica's claim (the lock and the folder record), the second process consumed half of the
/// replica's queue on this test and the three sessions hung, each missing part of Q3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_quorum_queues_a_process_on_another_folder_never_takes_the_replicas_input() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<_> = (0..3).map(|i| generate(Scale::Tiny, 60 + i, &dir.path().join(format!("data-{i}")))).collect();
    let mut spec = cluster_spec("stray", "all=1");
    spec.topology.queue_type = QueueType::Quorum;
    let mut cluster = LocalCluster::start(spec.clone()).await.unwrap();
    let queue = spec.topology.queue(StageKind::Q3Agg, 0);
    wait_until_consumed(&spec, &queue).await;
    let first = cluster.status().into_iter().find(|n| n.name == "q3_agg-0").and_then(|n| n.pid).unwrap();

    let elsewhere = dir.path().join("other-host-state");
    let log = dir.path().join("stray.log");
    let mut stray = spawn_twin(&spec, "q3_agg-0", &[("STATE_DIR", elsewhere.to_str().unwrap())], &log);
    eventually("the stray to wait for the replica's lock", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).unwrap().contains("another process of this replica holds its lock")
    })
    .await;
    let outs: Vec<_> = (0..data.len()).map(|i| dir.path().join(format!("out-{i}"))).collect();
    let sessions = data.iter().zip(&outs).map(|(data, out)| run_session(&spec, data, out));
    for (summary, data) in futures::future::join_all(sessions).await.iter().zip(&data) {
        assert_matches_reference(summary, data);
    }
    assert!(stray.try_wait().unwrap().is_none(), "the stray still waits");
    assert_eq!(consumers(&spec, &queue).await, 1, "only the replica's own process consumes");

    signal(first, Signal::SIGKILL);
    let exit = tokio::time::timeout(Duration::from_secs(20), stray.wait()).await.expect("the stray exits").unwrap();
    assert!(!exit.success());
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("state is in another folder"), "{said}");
    let stray_state = coffee_engine::state::NodeStore::session_files(&elsewhere).unwrap();
    assert!(stray_state.is_empty(), "the stray applied nothing: {stray_state:?}");

    cluster.restart_exited().unwrap();
    let summary = run_session(&spec, &data[0], &dir.path().join("out-after")).await;
    assert_matches_reference(&summary, &data[0]);
    settle(&mut cluster, &spec).await;
    cluster.stop().await.unwrap();
}

/// `cluster up` is killed with SIGKILL: its nodes run on. A second `cluster up` of the namespace refuses,
/// naming them and their pids; `cluster down` stops them; then the namespace starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_up_refuses_to_start_beside_nodes_left_running() {
    let first = CliCluster::start("orphans", &["--monitors", "0"], &[], DEFAULT_NODES - 3).await;
    let gateway_pid = node(&first.status(), "gateway").pid.unwrap();
    signal(first.pid(), Signal::SIGKILL);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(process_runs(gateway_pid), "the nodes outlive their supervisor");

    let second = first.command(&["cluster", "up", "--monitors", "0"]).output().await.unwrap();
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("still run here") && said.contains(&format!("gateway (pid {gateway_pid})")), "{said}");

    let down = first.command(&["cluster", "down"]).output().await.unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert!(String::from_utf8_lossy(&down.stdout).contains("killed the nodes it had left"));
    eventually("the orphans to die", Duration::from_secs(5), || !process_runs(gateway_pid)).await;

    let third =
        CliCluster::start_in(&first.namespace, &first.gateway, &["--monitors", "0"], &[], DEFAULT_NODES - 3).await;
    third.down().await;
}
