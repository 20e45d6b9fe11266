//! A RabbitMQ cluster of three nodes (`scripts/broker-cluster.sh`), quorum queues, and every program given all
//! three addresses: one broker node SIGKILLed while three clients run sessions. The nodes connected to it fail
//! over to another, the queues' leaders move, and every session is exact; the broker node then rejoins.

use coffee_tests::cli_cluster::{CliCluster, Clients, DEFAULT_NODES};
use coffee_tests::harness::{assert_matches_reference, generate, BrokerCluster};
use coffee_tools::gen::Scale;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_node_killed_mid_run_loses_no_session() {
    let brokers = tokio::task::spawn_blocking(BrokerCluster::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let datasets: Vec<_> = [91, 92, 93]
        .iter()
        .map(|&seed| generate(Scale::Tiny, seed, &dir.path().join(format!("data-{seed}"))))
        .collect();
    let args = ["--queue-type", "quorum"];
    let cluster = Arc::new(CliCluster::start("brokers", &args, &[("AMQP_URL", &brokers.urls)], DEFAULT_NODES).await);

    let clients = Clients::start(&cluster, &datasets, dir.path());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let brokers = Arc::new(brokers);
    let killer = brokers.clone();
    tokio::task::spawn_blocking(move || killer.kill(1)).await.unwrap();
    // Sessions go on with two broker nodes of three.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let exact = clients.finish().await;
    eprintln!("{exact} exact sessions with a broker node killed");
    assert!(exact >= 6, "too few sessions to prove anything: {exact}");
    cluster.wait_all_beating(Duration::from_secs(60), Duration::from_millis(2500)).await;

    // The broker node comes back and rejoins; a session is still exact.
    let restarter = brokers.clone();
    tokio::task::spawn_blocking(move || restarter.restart(1)).await.unwrap();
    let summary = cluster.session(&datasets[0], &dir.path().join("after")).await;
    assert_matches_reference(&summary, &datasets[0]);
    Arc::into_inner(cluster).expect("clients done").down().await;
    drop(brokers);
}
