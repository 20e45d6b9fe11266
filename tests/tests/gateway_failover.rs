//! A client of several gateway addresses, and a gateway that lost its state (issue 24, items 3 and 4, on one
//! host): the client is given an address where nothing listens before the real one, and mid-session the gateway
//! is killed and its folder wiped (its host lost, a fresh one in its place). The client moves past the dead
//! address, finds that the gateway no longer knows its session, says so (`ClientEvent::Rerun`) and runs the
//! session again from its files as a new one: exact. Before, a client took one address only, and a resume the
//! gateway did not know ended the session with an error.

use coffee_engine::client::{self, ClientEvent, ClientOptions};
use coffee_ops::cluster::LocalCluster;
use coffee_tests::harness::{assert_matches_reference, cluster_spec, free_addr, generate};
use coffee_tools::gen::Scale;
use nix::sys::signal::Signal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_fails_over_and_reruns_a_session_its_gateway_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 41, &dir.path().join("data"));
    let spec = cluster_spec("failover", "all=1");
    let mut cluster = LocalCluster::start(spec.clone()).await.unwrap();

    let events: Arc<Mutex<Vec<ClientEvent>>> = Arc::default();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let started_tx = Mutex::new(Some(started_tx));
    let observer = {
        let events = events.clone();
        Arc::new(move |event: ClientEvent| {
            if let ClientEvent::Started { session } = &event {
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    let _ = tx.send(*session);
                }
            }
            if matches!(event, ClientEvent::Started { .. } | ClientEvent::Rerun { .. }) {
                events.lock().unwrap().push(event);
            }
        })
    };
    // Nothing listens on the first address.
    let gateways = format!("{},{}", free_addr(), spec.gateway_addr);
    let options = ClientOptions::new(gateways, &data, dir.path().join("out"));
    let session = tokio::spawn(async move { client::run_session(&options, observer).await });
    let first = started.await.expect("the session starts on the second address");

    // The session held back (a stage paused), its gateway killed and its folder wiped, a fresh gateway started.
    cluster.signal("q2_agg-0", Signal::SIGSTOP).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill_and_wait("gateway").await.unwrap();
    std::fs::remove_dir_all(spec.run_dir().join("state").join("gateway")).unwrap();
    cluster.start_node("gateway").await.unwrap();
    cluster.signal("q2_agg-0", Signal::SIGCONT).unwrap();

    let summary = tokio::time::timeout(Duration::from_secs(60), session)
        .await
        .expect("the session ends")
        .unwrap()
        .expect("the session, run again");
    assert_matches_reference(&summary, &data);
    assert_ne!(summary.session, first, "the session ran again as a new one");
    let events = std::mem::take(&mut *events.lock().unwrap());
    match events.as_slice() {
        [ClientEvent::Started { session: a }, ClientEvent::Rerun { session: b, reason }, ClientEvent::Started { session: c }] =>
        {
            assert_eq!((a, b, c), (&first, &first, &summary.session));
            assert!(reason.contains("no longer knows"), "{reason}");
        }
        other => panic!("expected a start, a rerun and a start, got {other:?}"),
    }
    let lost_output = dir.path().join("out").join(format!("client-{first}.ndjson"));
    assert!(!lost_output.exists(), "the lost session's partial results are discarded");
    cluster.stop().await.unwrap();
}
