//! A client loses its gateway more than once in a session: each loss gets the whole reconnect window, counted
//! from that loss, not from the session's first one.

use coffee_engine::client::{ClientEvent, ClientOptions};
use coffee_tests::harness::{assert_matches_reference, generate, start_cluster, TcpProxy};
use coffee_tools::gen::Scale;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_losses_further_apart_than_the_window_are_both_survived() {
    let dir = tempfile::tempdir().unwrap();
    // Large enough that the session is still running when the proxy stalls it.
    let data = generate(Scale::Small, 5, &dir.path().join("data"));
    let (spec, cluster) = start_cluster("reconnect", "all=1").await;
    let mut proxy = TcpProxy::start(&spec.gateway_addr).await;
    let options = ClientOptions {
        reconnect_window: Duration::from_secs(2),
        ..ClientOptions::new(proxy.addr(), &data, dir.path().join("out"))
    };
    // The client's progress paces the faults, so the session is mid-upload at both losses whatever the machine's
    // speed (a fixed sleep once let the whole session end before the second loss).
    let (sent_tx, mut sent) = tokio::sync::mpsc::unbounded_channel();
    let observer: coffee_engine::client::Observer = Arc::new(move |event| {
        if let ClientEvent::Sent { .. } = event {
            let _ = sent_tx.send(());
        }
    });
    let session = tokio::spawn(async move { coffee_engine::client::run_session(&options, observer).await });

    for _ in 0..5 {
        sent.recv().await.expect("the upload goes on");
    }
    proxy.outage(Duration::from_millis(300)).await;
    // The first batch sent after the outage: the client has resumed. From then on it is held still, so the second
    // loss comes well after the window of the first one has passed, with the session certainly still running.
    while sent.try_recv().is_ok() {}
    tokio::time::timeout(Duration::from_secs(10), sent.recv()).await.expect("the client resumes its upload");
    proxy.stall();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!session.is_finished(), "the session ended before the second loss: {:?}", session.await);
    proxy.flow();
    proxy.outage(Duration::from_millis(300)).await;

    let summary = tokio::time::timeout(Duration::from_secs(120), session)
        .await
        .expect("the session ends")
        .unwrap()
        .unwrap_or_else(|e| panic!("the session failed at its second loss: {e:#}"));
    assert_matches_reference(&summary, &data);
    cluster.stop().await.unwrap();
}
