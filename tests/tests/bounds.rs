//! What a node keeps is bounded: a dead-letter queue holds at most its cap (the oldest poison dropped first),
//! and a session whose gateway vanished for good (its folder lost with it) is purged from every stage when its
//! lease runs out, instead of staying on their disks forever.

use coffee_engine::protocol::ClientFrame;
use coffee_engine::state::NodeStore;
use coffee_model::message::Batch;
use coffee_model::model::FileKind;
use coffee_ops::cluster::StartOptions;
use coffee_tests::harness::{generate, session_files, settle, start_cluster, start_cluster_with, RawClient};
use coffee_tools::gen::Scale;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_queue_keeps_at_most_its_cap() {
    let (spec, cluster) = start_cluster("dead-cap", "all=1").await;
    let connection = coffee_engine::amqp::connect(&spec.amqp_url, "test-poisoner").await.unwrap();
    let publisher = coffee_engine::amqp::Publisher::new(&connection, Default::default()).await.unwrap();
    let queue = spec.topology.dead_letter_queue("q3_agg");
    let mut confirms = Vec::new();
    for i in 0..coffee_engine::amqp::DEAD_LETTER_CAP + 50 {
        confirms.push(publisher.publish_bytes(&queue, &i.to_le_bytes()).await.unwrap());
    }
    coffee_engine::amqp::await_confirms(confirms).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let counts = coffee_engine::amqp::dead_letters(&channel, &spec.topology).await.unwrap();
    assert_eq!(counts["q3_agg"], coffee_engine::amqp::DEAD_LETTER_CAP, "{counts:?}");
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_no_gateway_knows_is_purged_when_its_lease_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 61, &dir.path().join("data"));
    let env = vec![("SESSION_LEASE".into(), "2s".into()), ("SESSION_GRACE".into(), "60s".into())];
    let (spec, mut cluster) = start_cluster_with("lease", "all=1", StartOptions { env, ..Default::default() }).await;

    // Half a session, held on the stages' disks.
    let (client, session, _) = RawClient::hello(&spec.gateway_addr).await;
    let mut writer = client.writer;
    let mut stores = Vec::new();
    coffee_model::dataset::read_all(&data, |s| stores.push(s), |_, _| {}).unwrap();
    writer.send(&ClientFrame::Rows { kind: FileKind::Stores, seq: 0, batch: Batch::Stores(stores) }).await.unwrap();
    writer.send(&ClientFrame::EndOfFile { kind: FileKind::Stores, batches: 1 }).await.unwrap();
    for _ in 0..100 {
        if !session_files(&spec).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!session_files(&spec).is_empty(), "the half session was persisted");

    // The gateway vanishes for good with its folder, and the client with it: nobody will ever purge the session.
    std::fs::remove_file(spec.run_dir().join("state/gateway").join(format!("{session}.upload"))).unwrap();
    cluster.kill("gateway").unwrap();
    drop((writer, client.reader));
    cluster.restart_exited().unwrap();

    // Its lease runs out at every stage: its files go.
    let started = std::time::Instant::now();
    settle(&mut cluster, &spec).await;
    eprintln!("purged {:?} after the gateway vanished", started.elapsed());
    // Its results queue, which nobody consumes any more, expires with the lease too (before, it stayed on the
    // broker for good).
    let connection = coffee_engine::amqp::connect(&spec.amqp_url, "lease-test").await.unwrap();
    let queue = spec.topology.results_queue(session);
    // Looked at less often than the lease: a look is a (passive) declare, which the broker counts as a use.
    while coffee_engine::amqp::queue_exists(&connection, &queue).await.unwrap() {
        assert!(started.elapsed() < Duration::from_secs(30), "{queue} is still on the broker");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    eprintln!("its results queue expired {:?} after the gateway vanished", started.elapsed());
    cluster.stop().await.unwrap();
}

/// A session whose gateway lives is never purged by the stages' leases, even when an announcement fails: the
/// gateway's first announcement fails (a failpoint standing for a channel the broker closed), and its announcer
/// carries on with a new channel. Before, the announcer's task ended at its first failed publish and nothing
/// noticed: a live session held only by the announcements (here a client that waits before it uploads the
/// rest) was purged from every stage once its lease ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_announcement_does_not_stop_the_announcer() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 62, &dir.path().join("data"));
    let env = vec![("SESSION_LEASE".into(), "2s".into()), ("SESSION_GRACE".into(), "60s".into())];
    let fails = vec![("FAILPOINTS".to_owned(), "announce-fails=1*return".to_owned())];
    let first_start_env = std::collections::BTreeMap::from([("gateway".to_owned(), fails)]);
    let options = StartOptions { env, first_start_env, ..Default::default() };
    let (spec, cluster) = start_cluster_with("announcer", "all=1", options).await;

    // Half a session, held on the stages' disks; its client waits, connected, for three leases.
    let (client, _, _) = RawClient::hello(&spec.gateway_addr).await;
    let mut writer = client.writer;
    let mut stores = Vec::new();
    coffee_model::dataset::read_all(&data, |s| stores.push(s), |_, _| {}).unwrap();
    writer.send(&ClientFrame::Rows { kind: FileKind::Stores, seq: 0, batch: Batch::Stores(stores) }).await.unwrap();
    writer.send(&ClientFrame::EndOfFile { kind: FileKind::Stores, batches: 1 }).await.unwrap();
    // The stores go to q3_agg and q4_top; the gateway's own folder (its upload log) is not a stage's.
    let stages = ["q3_agg-0", "q4_top-0"].map(|node| spec.run_dir().join("state").join(node));
    let stage_files = || stages.iter().flat_map(|dir| NodeStore::session_files(dir).unwrap()).collect::<Vec<_>>();
    for _ in 0..100 {
        if stage_files().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stage_files().len(), 2, "the half session was persisted at both stages");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!stage_files().is_empty(), "the stages purged a session its gateway still serves");
    drop((writer, client.reader));
    cluster.stop().await.unwrap();
}
