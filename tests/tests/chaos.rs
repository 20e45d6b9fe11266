//! Nodes killed at chosen points and at random: every session still ends exactly equal to the reference.
//!
//! Here the cluster restarts a node when its process exits; `monitors.rs` covers restarts by the health monitors.

use coffee_ops::chaos::{ChaosMonkey, Targets};
use coffee_ops::cluster::StartOptions;
use coffee_tests::harness::{
    assert_matches_reference, generate, queue_exists, run_session, settle, start_cluster_with, supervised,
};
use coffee_tools::gen::Scale;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Runs one session on a cluster whose `node` aborts at `failpoint` (at its first start only), with the cluster
/// supervised (the dead node restarted) meanwhile; asserts the node died and the results are exact.
async fn killed_at(test: &str, node: &str, failpoint: &str, env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 3, &dir.path().join("data"));
    let options = StartOptions {
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        first_start_env: [(node.to_owned(), vec![("FAILPOINTS".to_owned(), failpoint.to_owned())])].into(),
        ..Default::default()
    };
    let (spec, mut cluster) = start_cluster_with(test, "all=2", options).await;
    let out = dir.path().join("out");
    let session = {
        let (spec, data) = (spec.clone(), data.clone());
        async move { run_session(&spec, &data, &out).await }
    };
    let (summary, events) = supervised(&mut cluster, None, Duration::from_secs(120), session).await;
    // A node killed after its last publish may die after the session ended: keep supervising a little.
    let mut restarted = events.iter().any(|e| e.node == node && e.action == "restart");
    for _ in 0..50 {
        if restarted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        restarted = cluster.supervise_step().await.unwrap().iter().any(|r| r.node == node);
    }
    assert!(restarted, "{node} was expected to die at {failpoint} and be restarted; events: {events:?}");
    assert_matches_reference(&summary, &data);
    settle(&mut cluster, &spec).await;
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_killed_after_publishing_before_logging_and_acking() {
    killed_at("kill-filter", "tx_filter-0", "after-publish-before-log=return", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregator_killed_after_logging_before_acking() {
    killed_at("kill-agg", "q4_count-1", "after-log-before-ack=return", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregator_killed_during_a_snapshot() {
    // One delivery a group, so a session cannot arrive whole in one group and finish before any snapshot.
    let env = [("SNAPSHOT_INTERVAL", "2"), ("COFFEE_GROUP_MAX", "1")];
    killed_at("kill-snapshot", "q3_agg-0", "during-snapshot=return", &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_stage_killed_after_publishing_its_results() {
    killed_at("kill-final", "q4_top-0", "after-final-publish-before-log=return", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_killed_mid_upload() {
    killed_at("kill-gateway-upload", "gateway", "gateway-mid-upload=5*off->return", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_killed_after_cleaning_up_before_saying_done() {
    killed_at("kill-gateway-done", "gateway", "gateway-before-done=return", &[]).await;
}

/// Killed with the session's results queue deleted but its upload log not yet: the client resumes a session
/// whose queue is gone, but it has every result, so the gateway says Done (the broker-cluster test found this,
/// a gateway losing its broker node right there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_killed_between_deleting_the_results_queue_and_the_upload_log() {
    killed_at("kill-gateway-cleanup", "gateway", "gateway-between-cleanups=return", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_killed_with_results_forwarded_but_not_acked() {
    killed_at("kill-gateway-results", "gateway", "gateway-results-unacked=3*off->return", &[]).await;
}

/// The chaos run: three clients run sessions back to back while the monkey kills a random node, gateway
/// included, every 0.3-1 s (sessions on tiny data last about a second); every session must equal the reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_under_a_chaos_monkey_stay_exact() {
    let rounds: usize = std::env::var("CHAOS_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(4);
    let seed: u64 = std::env::var("CHAOS_SEED").ok().and_then(|r| r.parse().ok()).unwrap_or(7);
    let dir = tempfile::tempdir().unwrap();
    let datasets: Vec<_> = [41, 42, 43]
        .iter()
        .map(|&seed| generate(Scale::Tiny, seed, &dir.path().join(format!("data-{seed}"))))
        .collect();
    // A short grace: a session whose gateway died before its client learned the session's id is purged soon.
    let env = vec![("SNAPSHOT_INTERVAL".into(), "4".into()), ("SESSION_GRACE".into(), "1s".into())];
    let options = StartOptions { env, ..Default::default() };
    let (spec, mut cluster) = start_cluster_with("chaos", "all=2", options).await;
    let exact = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = datasets
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let (spec, data, exact) = (spec.clone(), data.clone(), exact.clone());
            let out = dir.path().join(format!("out-{i}"));
            tokio::spawn(async move {
                let mut sessions = Vec::new();
                for _ in 0..rounds {
                    let summary = run_session(&spec, &data, &out).await;
                    assert_matches_reference(&summary, &data);
                    exact.fetch_add(1, Ordering::Relaxed);
                    sessions.push(summary.session);
                }
                sessions
            })
        })
        .collect();
    let monkey = ChaosMonkey::new(seed, Duration::from_millis(300), Duration::from_millis(1000), Targets::Random);
    let (results, events) =
        supervised(&mut cluster, Some(monkey), Duration::from_secs(600), futures::future::join_all(clients)).await;
    let mut sessions = Vec::new();
    for result in results {
        sessions.extend(result.expect("a client failed"));
    }
    let kills = events.iter().filter(|e| e.action == "kill").count();
    eprintln!("chaos: {kills} kills, {} exact sessions", exact.load(Ordering::Relaxed));
    assert_eq!(exact.load(Ordering::Relaxed), 3 * rounds);
    assert!(kills >= 2, "the monkey killed too little to prove anything: {events:?}");
    // Nothing is left behind: no session file, no queued message, no results queue.
    settle(&mut cluster, &spec).await;
    for session in sessions {
        let queue = spec.topology.results_queue(session);
        assert!(!queue_exists(&spec, &queue).await, "{queue} remains");
    }
    cluster.stop().await.unwrap();
}
