//! The broker goes away again and again while sessions run (every connection cut, new ones refused for a while,
//! as in a broker restart) and comes back: nodes exit, are restarted, wait for the broker with backoff, and
//! every session still ends exactly equal to the reference.
//!
//! The cuts fall at many moments of a node's life: while the gateway is still setting up, mid-upload, while
//! results flow, while a replica acks. A cut once left a replica awaiting an ack that lapin never settled, alive
//! and useless, and its session hung (`amqp::exit_when_lost` is the fix); one cut at a fixed moment found it in
//! one CI run out of several, a schedule of cuts at spread moments finds it in a few rounds.

use coffee_ops::cluster::{LocalCluster, StartOptions};
use coffee_tests::harness::{assert_matches_reference, cluster_spec, generate, run_session, supervised, TcpProxy};
use coffee_tools::gen::Scale;
use std::time::Duration;

/// When each cut falls (after the previous service window) and how long the broker stays away.
const CUTS: [(u64, u64); 12] = [
    (300, 2000),
    (900, 700),
    (1300, 500),
    (400, 900),
    (1700, 300),
    (700, 600),
    (1100, 400),
    (500, 800),
    (1500, 300),
    (800, 500),
    (1200, 700),
    (600, 400),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_broker_outages() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 12, &dir.path().join("data"));
    let mut spec = cluster_spec("outage", "all=2");
    let mut proxy = TcpProxy::in_front_of_broker(&mut spec).await;
    let mut cluster = LocalCluster::start(spec.clone()).await.unwrap();
    eprintln!("node logs: {}", spec.run_dir().join("logs").display());

    let sessions = {
        let (spec, data, out) = (spec.clone(), data.clone(), dir.path().join("out"));
        async move {
            let mut summaries = Vec::new();
            for _ in 0..5 {
                summaries.push(run_session(&spec, &data, &out).await);
            }
            summaries
        }
    };
    let outages = tokio::spawn(async move {
        for (after_ms, length_ms) in CUTS {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            proxy.outage(Duration::from_millis(length_ms)).await;
        }
        proxy
    });
    // Supervise (restart what exits) until the sessions end.
    let (summaries, events) = supervised(&mut cluster, None, Duration::from_secs(180), sessions).await;
    let _proxy = outages.await.unwrap();
    for summary in summaries {
        assert_matches_reference(&summary, &data);
    }
    assert!(events.iter().any(|e| e.action == "restart"), "the outages cut the nodes off: {events:?}");
    cluster.stop().await.unwrap();
}

/// A replica awaiting the broker when its connection dies exits and is restarted, even if what it awaits never
/// settles: its first ack stalls for ten minutes (the `ack-stalls` failpoint stands for the ack lapin once left
/// unsettled), the broker goes away meanwhile, and the session still ends exactly, within a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stuck_on_the_broker_exits_when_the_broker_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 13, &dir.path().join("data"));
    let mut spec = cluster_spec("stuck", "all=1");
    let mut proxy = TcpProxy::in_front_of_broker(&mut spec).await;
    let stuck = "q3_agg-0";
    let options = StartOptions {
        first_start_env: [(
            stuck.to_owned(),
            vec![("FAILPOINTS".to_owned(), "ack-stalls=1*return(600000)".to_owned())],
        )]
        .into(),
        ..Default::default()
    };
    let mut cluster = LocalCluster::start_with(spec.clone(), options).await.unwrap();
    let log = spec.log_path(stuck);
    let session = {
        let (spec, data, out) = (spec.clone(), data.clone(), dir.path().join("out"));
        async move { run_session(&spec, &data, &out).await }
    };
    let outage = tokio::spawn(async move {
        // Once the replica is stuck on its ack, the broker goes away.
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("failpoint reached") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proxy.outage(Duration::from_millis(500)).await;
        proxy
    });
    let (summary, events) = supervised(&mut cluster, None, Duration::from_secs(60), session).await;
    let _proxy = outage.await.unwrap();
    assert_matches_reference(&summary, &data);
    assert!(
        events.iter().any(|e| e.node == stuck && e.action == "restart"),
        "{stuck} exited when the broker went away and was restarted: {events:?}"
    );
    cluster.stop().await.unwrap();
}
