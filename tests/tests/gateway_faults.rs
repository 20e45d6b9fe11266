//! Faults on the gateway's side of a session that are not a kill: a resume that races the purge of its session,
//! and the results side failing (the consumer failing, the results queue deleted). The client hears at once and
//! either resumes or gets a clear error; nothing is left behind.

use coffee_engine::protocol::{ClientFrame, ErrorCode, GatewayFrame};
use coffee_ops::cluster::StartOptions;
use coffee_tests::harness::{
    assert_matches_reference, generate, queue_exists, run_session, settle, start_cluster_with, RawClient,
};
use coffee_tools::gen::Scale;
use std::sync::Arc;
use std::time::Duration;

fn options(grace: &str, gateway_failpoints: &str) -> StartOptions {
    StartOptions {
        env: vec![("SESSION_GRACE".into(), grace.into())],
        first_start_env: [("gateway".to_owned(), vec![("FAILPOINTS".to_owned(), gateway_failpoints.to_owned())])]
            .into(),
        ..Default::default()
    }
}

/// A client whose session is being purged (its grace ran out) resumes it: it is refused at once with
/// `SessionExpired`, and the purge completes (no results queue, no upload log, no state at any stage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_racing_the_purge_is_refused_at_once_and_leaks_nothing() {
    // The purge pauses 3 s once it has begun, so the resume lands in the middle of it.
    let (spec, mut cluster) =
        start_cluster_with("purge-race", "all=1", options("300ms", "gateway-purging=return(3000)")).await;
    let (client, session, secret) = RawClient::hello(&spec.gateway_addr).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let RawClient { mut reader, mut writer } = RawClient::connect(&spec.gateway_addr).await;
    writer.send(&ClientFrame::Resume { session, secret, received: vec![] }).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(2), reader.next()).await.expect("an answer at once").unwrap();
    match answer {
        GatewayFrame::Error { code: ErrorCode::SessionExpired, message } => {
            assert!(message.contains("purged"), "{message}")
        }
        other => panic!("expected SessionExpired, got {other:?}"),
    }

    // The purge goes on to its end: nothing of the session remains.
    let upload_log = spec.run_dir().join("state/gateway").join(format!("{session}.upload"));
    for _ in 0..100 {
        if !upload_log.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!upload_log.exists(), "the purge did not complete");
    assert!(!queue_exists(&spec, &spec.topology.results_queue(session)).await, "the results queue remains");
    settle(&mut cluster, &spec).await;
    cluster.stop().await.unwrap();
}

/// The gateway's results side fails under a live client (a delivery error, as when the consumer is cancelled):
/// the client's connection is closed at once, it resumes, and the session ends exact long before the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_results_side_failure_closes_the_connection_and_the_client_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 21, &dir.path().join("data"));
    let (spec, mut cluster) =
        start_cluster_with("results-fail", "all=1", options("60s", "gateway-results-fail=1*return")).await;
    let started = std::time::Instant::now();
    let summary = tokio::time::timeout(Duration::from_secs(20), run_session(&spec, &data, &dir.path().join("out")))
        .await
        .expect("the client heard the failure and resumed, instead of waiting out the grace");
    eprintln!("session done in {:?}", started.elapsed());
    assert_matches_reference(&summary, &data);
    settle(&mut cluster, &spec).await;
    cluster.stop().await.unwrap();
}

/// The session's results queue is deleted under it (by an operator, say): its results are gone, and the client
/// is told so at once with `ResultsLost`, instead of waiting forever; the stages drop the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_results_queue_ends_the_session_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Small, 22, &dir.path().join("data"));
    let (spec, mut cluster) = start_cluster_with("results-lost", "all=1", options("60s", "")).await;
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let started_tx = std::sync::Mutex::new(Some(started_tx));
    let options = coffee_engine::client::ClientOptions::new(&spec.gateway_addr, &data, dir.path().join("out"));
    let observer: coffee_engine::client::Observer = Arc::new(move |event| {
        if let coffee_engine::client::ClientEvent::Started { session } = event {
            if let Some(tx) = started_tx.lock().unwrap().take() {
                let _ = tx.send(session);
            }
        }
    });
    let client = tokio::spawn(async move { coffee_engine::client::run_session(&options, observer).await });
    let session = started_rx.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let connection = coffee_engine::amqp::connect(&spec.amqp_url, "test-operator").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.queue_delete(spec.topology.results_queue(session).as_str().into(), Default::default()).await.unwrap();

    let outcome = tokio::time::timeout(Duration::from_secs(15), client).await.expect("the client is told at once");
    let error = outcome.unwrap().expect_err("the session cannot complete");
    assert!(format!("{error:#}").contains("ResultsLost"), "{error:#}");
    settle(&mut cluster, &spec).await;
    cluster.stop().await.unwrap();
}

/// Six hundred clients that vanish right after their welcome, each leaving the gateway to cancel its results
/// consumer and close that channel: the gateway keeps its broker connection, and a session after them is exact.
/// When the consumer was left to lapin's drop handler while the gateway closed the channel, the two raced: a
/// `basic.cancel` reached the broker on a closed channel (a connection-level `CHANNEL_ERROR`) or met the
/// closing channel in lapin, and the gateway exited as if the broker had gone, within a few hundred clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_after_their_welcome_never_cost_the_gateway_its_broker() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 23, &dir.path().join("data"));
    // Not a test of the per-address caps: six hundred sessions from one address within a few seconds may hold
    // more than its 64 places while their purges run, and would be refused `Busy` (one run failed early in the
    // loop, its message not kept; this is the likeliest cause).
    let mut options = options("300ms", "");
    options.env.push(("GATEWAY_MAX_CONNECTIONS_PER_PEER".into(), "1024".into()));
    options.env.push(("GATEWAY_MAX_SESSIONS_PER_PEER".into(), "1024".into()));
    options.env.push(("GATEWAY_MAX_SESSIONS".into(), "1024".into()));
    let (spec, mut cluster) = start_cluster_with("vanishing", "all=1", options).await;
    for _ in 0..600 {
        let (client, _, _) = RawClient::hello(&spec.gateway_addr).await;
        drop(client);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = std::fs::read_to_string(spec.log_path("gateway")).expect("the gateway's log");
    assert!(!log.contains("lost the broker"), "the gateway lost its broker connection:\n{log}");
    let summary = run_session(&spec, &data, &dir.path().join("out")).await;
    assert_matches_reference(&summary, &data);
    settle(&mut cluster, &spec).await;
    cluster.stop().await.unwrap();
}

/// A connection that ends gives its place back at once, though its session waits out its grace for a resume:
/// a client that lost more connections than its address may hold, within one grace, is still let in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_frees_its_place_while_its_session_waits_its_grace() {
    let mut options = options("10s", "");
    options.env.push(("GATEWAY_MAX_CONNECTIONS_PER_PEER".into(), "4".into()));
    let (spec, mut cluster) = start_cluster_with("places", "all=1", options).await;
    for _ in 0..8 {
        let (client, _, _) = RawClient::hello(&spec.gateway_addr).await;
        drop(client);
        // The gateway sees the end of the connection before the next one comes.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(spec.log_path("gateway")).expect("the gateway's log");
    assert!(!log.contains("too many connections"), "a lost connection kept its place:\n{log}");
    settle(&mut cluster, &spec).await;
    cluster.stop().await.unwrap();
}
