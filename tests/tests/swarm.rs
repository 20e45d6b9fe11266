//! Several hosts for real: three hosts on this machine (network namespaces, a Docker engine each) in one swarm,
//! the stack of `coffee compose --swarm` deployed over them (`scripts/swarm-up.sh`). A session through the
//! gateway on host 1 is exact; then, while two sessions run, host 2 loses its power (its broker and four stage
//! replicas, two of them stateful, die at once), comes back ten seconds later, and both sessions are still exact.
//! `scripts/swarm-down.sh` leaves nothing behind.

use coffee_engine::client::{self, ClientOptions};
use coffee_tests::harness::{assert_matches_reference, generate};
use coffee_tests::swarm::{swarm, Swarm};
use coffee_tools::gen::Scale;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn exact_session(gateway: &str, data: &Path, out: &Path) -> Duration {
    let options = ClientOptions::new(gateway, data, out.to_owned());
    let started = Instant::now();
    let summary = tokio::time::timeout(Duration::from_secs(300), client::run_session(&options, Arc::new(|_| {})))
        .await
        .expect("the session ends")
        .expect("a session through the swarm");
    assert_matches_reference(&summary, data);
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_loses_power_mid_session_and_every_session_is_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let swarm_started = Instant::now();
    let hosts = Swarm::up();
    eprintln!("swarm up and serving in {:?}", swarm_started.elapsed());
    let data: Vec<_> =
        (0..3u64).map(|i| generate(Scale::Small, 70 + i, &dir.path().join(format!("data-{i}")))).collect();

    let undisturbed = exact_session(&hosts.gateway, &data[0], &dir.path().join("out-0")).await;
    eprintln!("one session, undisturbed: {undisturbed:?}");

    let sessions: Vec<_> = (1..3)
        .map(|i| {
            let (gateway, data, out) = (hosts.gateway.clone(), data[i].clone(), dir.path().join(format!("out-{i}")));
            tokio::spawn(async move { exact_session(&gateway, &data, &out).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    swarm(&["kill-host", "2"]);
    let listed = swarm(&["hosts"]);
    assert!(listed.lines().nth(1).is_some_and(|l| l.ends_with("down")), "host 2 is down: {listed}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    swarm(&["start-host", "2"]);
    for session in sessions {
        let took = session.await.expect("the session's task");
        eprintln!("a session across the power cut: {took:?}");
    }
    hosts.down();
}
