//! The whole system on the real broker: a cluster of real processes, several clients at once, each compared with
//! the reference on its own data.

use coffee_engine::topology::QueueType;
use coffee_ops::cluster::LocalCluster;
use coffee_tests::harness::{assert_matches_reference, cluster_spec, generate, run_session, start_cluster};
use coffee_tools::gen::Scale;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_at_once_each_get_exactly_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    // Different data per client, so a row routed to the wrong session cannot go unnoticed.
    let datasets: Vec<_> = [11, 22, 33]
        .iter()
        .map(|&seed| generate(Scale::Tiny, seed, &dir.path().join(format!("data-{seed}"))))
        .collect();
    // At least two replicas of every stateful stage, and uneven counts so partitions differ between stages.
    let (spec, cluster) = start_cluster("three-clients", "all=2,tx_filter=3,q4_count=3").await;
    let out = dir.path().join("out");
    let sessions = futures::future::join_all(datasets.iter().map(|data| run_session(&spec, data, &out))).await;
    cluster.stop().await.unwrap();
    let mut ids: Vec<_> = sessions.iter().map(|s| s.session).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "every client has its own session");
    for (summary, data) in sessions.iter().zip(&datasets) {
        assert!(
            summary.results.get(&coffee_model::results::ResultKind::Q1).copied().unwrap_or(0) > 0,
            "Q1 rows arrive: {summary:?}"
        );
        assert_matches_reference(summary, data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_per_stage_gives_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 7, &dir.path().join("data"));
    let (spec, cluster) = start_cluster("single", "all=1").await;
    let summary = run_session(&spec, &data, &dir.path().join("out")).await;
    cluster.stop().await.unwrap();
    assert_matches_reference(&summary, &data);
}

/// With `--queue-type quorum` (for a RabbitMQ cluster, docs/deploy.md) every node declares the pipeline's queues
/// and each session's result queue as quorum queues, and the results are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_give_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 9, &dir.path().join("data"));
    let mut spec = cluster_spec("quorum", "all=1");
    spec.topology.queue_type = QueueType::Quorum;
    let cluster = LocalCluster::start(spec.clone()).await.expect("cluster start");
    let summary = run_session(&spec, &data, &dir.path().join("out")).await;
    assert_matches_reference(&summary, &data);

    // The broker holds them as quorum queues: declaring one as classic is refused as inequivalent.
    let connection = coffee_engine::amqp::connect(&spec.amqp_url, "test").await.expect("broker");
    let (stage, replica) = spec.topology.stage_replicas().next().expect("a stage");
    let mut classic = spec.topology.clone();
    classic.queue_type = QueueType::Classic;
    let channel = connection.create_channel().await.unwrap();
    let refused = coffee_engine::amqp::declare_input(&channel, &classic, stage, replica).await;
    let error = refused.expect_err("a quorum queue redeclared as classic").to_string();
    assert!(error.contains("inequivalent arg"), "{error}");
    let channel = connection.create_channel().await.unwrap();
    coffee_engine::amqp::declare_input(&channel, &spec.topology, stage, replica)
        .await
        .expect("the same declaration is accepted");
    cluster.stop().await.unwrap();
}
