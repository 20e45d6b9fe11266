//! The broker restarted under a running `coffee cluster up` with its defaults (three health monitors): three
//! clients are mid-session when RabbitMQ's application is stopped for 5 s and started again. Every node, the
//! monitors included, comes back by itself; the three sessions end exactly equal to the reference, and a
//! session started afterwards too, with no user action.
//!
//! This binary stops the machine's broker: it holds this one test only.

use coffee_tests::cli_cluster::{CliCluster, Clients, DEFAULT_NODES};
use coffee_tests::harness::{assert_matches_reference, generate, BrokerApp};
use coffee_tools::gen::Scale;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_under_cluster_up_loses_nothing_and_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let datasets: Vec<_> = [71, 72, 73]
        .iter()
        .map(|&seed| generate(Scale::Tiny, seed, &dir.path().join(format!("data-{seed}"))))
        .collect();
    let cluster = Arc::new(CliCluster::start("broker-restart", &[], &[], DEFAULT_NODES).await);

    // Three clients run sessions back to back, so some are mid-run when the broker stops.
    let clients = Clients::start(&cluster, &datasets, dir.path());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut broker = BrokerApp::new();
    broker.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    broker.start();
    // Sessions started after the broker came back too.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let exact = clients.finish().await;
    eprintln!("{exact} exact sessions across the broker restart");

    // Nothing stays down: every node, monitors included, runs and beats again.
    let status = cluster.wait_all_beating(Duration::from_secs(60), Duration::from_millis(2500)).await;
    assert_eq!(status.len(), DEFAULT_NODES);
    assert!(status.iter().all(|n| n.restarts >= 1), "every node lost the broker and was restarted: {status:#?}");

    // A session started afterwards, with no user action.
    let summary = cluster.session(&datasets[0], &dir.path().join("after")).await;
    assert_matches_reference(&summary, &datasets[0]);

    let cluster = Arc::into_inner(cluster).expect("the clients are done");
    cluster.down().await;
}
