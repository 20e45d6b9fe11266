//! Sessions end cleanly: a client that vanishes mid-upload has its session purged from every node (memory,
//! disk), nothing stays queued, and the cluster goes on serving others exactly.

use coffee_engine::protocol::{ClientFrame, GatewayFrame};
use coffee_model::message::Batch;
use coffee_model::model::FileKind;
use coffee_ops::cluster::StartOptions;
use coffee_tests::harness::{
    assert_matches_reference, generate, run_session, session_files, settle, start_cluster_with, RawClient,
};
use coffee_tools::gen::Scale;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_is_purged_from_every_node() {
    let options = StartOptions { env: vec![("SESSION_GRACE".into(), "200ms".into())], ..Default::default() };
    vanished_client_purged("purge", options).await;
}

/// The same when the purge's first try fails (a failpoint stands for confirms the broker nacked): the gateway
/// tries it again. Before, a purge that failed once was never tried again by that gateway: the session kept its
/// upload log and its results queue, and the gateway announced it for as long as it lived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_that_fails_is_tried_again() {
    let fails = vec![("FAILPOINTS".to_owned(), "purge-fails=1*return".to_owned())];
    let options = StartOptions {
        env: vec![("SESSION_GRACE".into(), "200ms".into())],
        first_start_env: [("gateway".to_owned(), fails)].into(),
        ..Default::default()
    };
    vanished_client_purged("purge-again", options).await;
}

/// Half a session whose client vanishes: the gateway purges it from every node (`settle` waits until no node
/// keeps a file of it, the gateway's upload log included, and no queue holds a message), and a session after
/// is exact.
async fn vanished_client_purged(test: &str, options: StartOptions) {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 8, &dir.path().join("data"));
    let (spec, mut cluster) = start_cluster_with(test, "all=2", options).await;

    // Half a session: some stores and users, then the connection drops.
    let (client, _, _) = RawClient::hello(&spec.gateway_addr).await;
    let mut writer = client.writer;
    let mut stores = Vec::new();
    coffee_model::dataset::read_all(&data, |s| stores.push(s), |_, _| {}).unwrap();
    let mut users = Vec::new();
    coffee_model::dataset::read_all(&data, |u| users.push(u), |_, _| {}).unwrap();
    writer.send(&ClientFrame::Rows { kind: FileKind::Stores, seq: 0, batch: Batch::Stores(stores) }).await.unwrap();
    writer.send(&ClientFrame::EndOfFile { kind: FileKind::Stores, batches: 1 }).await.unwrap();
    writer.send(&ClientFrame::Rows { kind: FileKind::Users, seq: 0, batch: Batch::Users(users) }).await.unwrap();
    // The nodes hold the half session on disk before the client vanishes.
    for _ in 0..100 {
        if !session_files(&spec).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!session_files(&spec).is_empty(), "the half session was persisted");
    drop((writer, client.reader));

    settle(&mut cluster, &spec).await;

    let summary = run_session(&spec, &data, &dir.path().join("out")).await;
    assert_matches_reference(&summary, &data);
    cluster.stop().await.unwrap();
}

/// Resuming a session takes the secret its client got in its first `Welcome`: another client presenting the
/// session's id alone gets an error and no rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_needs_the_sessions_secret() {
    let (spec, cluster) = coffee_tests::harness::start_cluster("secret", "all=1").await;
    let (owner, session, secret) = RawClient::hello(&spec.gateway_addr).await;

    for (claimed, guess, expected) in
        [(session, secret.wrapping_add(1), "wrong secret"), (uuid::Uuid::new_v4(), secret, "unknown session")]
    {
        let RawClient { mut reader, mut writer } = RawClient::connect(&spec.gateway_addr).await;
        writer.send(&ClientFrame::Resume { session: claimed, secret: guess, received: vec![] }).await.unwrap();
        match reader.next().await.unwrap() {
            GatewayFrame::Error { message, .. } => assert!(message.contains(expected), "{message}"),
            other => panic!("expected an error, got {other:?}"),
        }
        assert!(reader.next().await.is_err(), "nothing follows the error");
    }

    // The owner, with its secret, gets its session back.
    drop(owner);
    let RawClient { mut reader, mut writer } = RawClient::connect(&spec.gateway_addr).await;
    writer.send(&ClientFrame::Resume { session, secret, received: vec![] }).await.unwrap();
    match reader.next().await.unwrap() {
        GatewayFrame::Welcome { session: resumed, .. } => assert_eq!(resumed, session),
        other => panic!("expected a welcome, got {other:?}"),
    }
    cluster.stop().await.unwrap();
}
