//! The broker goes away mid-run (every connection cut, new ones refused for two seconds, as in a broker
//! restart) and comes back: nodes exit, are restarted, wait for the broker with backoff, and every session still
//! ends exactly equal to the reference.

use coffee_ops::cluster::LocalCluster;
use coffee_tests::harness::{assert_matches_reference, cluster_spec, generate, run_session, supervised, TcpProxy};
use coffee_tools::gen::Scale;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_broker_outage() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 12, &dir.path().join("data"));
    let mut proxy = TcpProxy::start("127.0.0.1:5672").await;
    let mut spec = cluster_spec("outage", "all=2");
    spec.amqp_url = proxy.url();
    let mut cluster = LocalCluster::start(spec.clone()).await.unwrap();

    let sessions = {
        let (spec, data, out) = (spec.clone(), data.clone(), dir.path().join("out"));
        async move {
            let mut summaries = Vec::new();
            for _ in 0..3 {
                summaries.push(run_session(&spec, &data, &out).await);
            }
            summaries
        }
    };
    let outage = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.outage(Duration::from_secs(2)).await;
        proxy
    });
    // Supervise (restart what exits) until the sessions end.
    let (summaries, events) = supervised(&mut cluster, None, Duration::from_secs(180), sessions).await;
    let _proxy = outage.await.unwrap();
    for summary in summaries {
        assert_matches_reference(&summary, &data);
    }
    assert!(events.iter().any(|e| e.action == "restart"), "the outage cut the nodes off: {events:?}");
    cluster.stop().await.unwrap();
}
