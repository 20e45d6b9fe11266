//! Health monitors, for real: `coffee cluster up` with three monitors; the leader monitor, a worker and the
//! gateway are SIGKILLed in turn, and each comes back: a monitor through `cluster up` itself (a supervisor never
//! depends on its children to revive them), the others through the monitors. Then a session still gets exact
//! results.

use coffee_tests::cli_cluster::{node, signal, CliCluster, Clients, DEFAULT_NODES};
use coffee_tests::harness::{assert_matches_reference, generate};
use coffee_tools::gen::Scale;
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::time::Duration;

/// Kills `name` and waits until it is back: restarted once more, with a fresh heartbeat.
async fn kill_and_wait_for_revival(cluster: &CliCluster, name: &str) {
    let before =
        cluster.wait_for(&format!("{name} up"), Duration::from_secs(30), |s| node(s, name).pid.is_some()).await;
    let (pid, restarts) = (node(&before, name).pid.unwrap(), node(&before, name).restarts);
    signal(pid, Signal::SIGKILL);
    cluster
        .wait_for(&format!("{name} revived"), Duration::from_secs(30), |s| {
            let n = node(s, name);
            n.restarts > restarts && n.pid.is_some_and(|p| p != pid) && n.heartbeat_age_ms.is_some_and(|a| a < 1500)
        })
        .await;
}

/// `coffee cluster up` with three monitors and a 2 s timeout, every node heard.
async fn cluster_up(test: &str) -> CliCluster {
    CliCluster::start(test, &["--monitors", "3"], &[("MONITOR_TIMEOUT", "2s")], DEFAULT_NODES).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_revive_killed_nodes_and_each_other() {
    let cluster = cluster_up("monitors").await;

    // The leader: `cluster up` restarts an exited monitor itself, at once.
    kill_and_wait_for_revival(&cluster, "monitor-2").await;
    // Other nodes: the monitors notice the silence and have them restarted.
    kill_and_wait_for_revival(&cluster, "q4_count-0").await;
    kill_and_wait_for_revival(&cluster, "gateway").await;

    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 9, &dir.path().join("data"));
    let summary = cluster.session(&data, &dir.path().join("out")).await;
    assert_matches_reference(&summary, &data);

    let restarts = cluster.down().await;
    let by_monitor = restarts.lines().filter(|l| l.contains("\"restart\"")).count();
    assert!(by_monitor >= 3, "{restarts}");
}

/// The whole demo from the command line: `cluster up` with monitors, `coffee chaos` killing any node (gateway
/// and monitors included) every 0.5-1.5 s for a while, and three clients running sessions meanwhile. Every
/// session is exact, and every kill is followed by a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coffee_chaos_against_cluster_up_with_monitors() {
    let cluster = Arc::new(cluster_up("chaos-cli").await);
    let chaos = tokio::process::Command::new(coffee_tests::harness::node_binary())
        .args(["chaos", "--interval", "500ms..1500ms", "--target", "random", "--seed", "3", "--duration", "12s"])
        .env("COFFEE_NAMESPACE", &cluster.namespace)
        .output();
    let dir = tempfile::tempdir().unwrap();
    let datasets: Vec<_> = [61, 62, 63]
        .iter()
        .map(|&seed| generate(Scale::Tiny, seed, &dir.path().join(format!("data-{seed}"))))
        .collect();
    let clients = Clients::start(&cluster, &datasets, dir.path());
    let chaos = chaos.await.unwrap();
    let exact = clients.finish().await;
    assert!(chaos.status.success(), "coffee chaos failed: {}", String::from_utf8_lossy(&chaos.stderr));
    let kills: Vec<String> = String::from_utf8_lossy(&chaos.stdout).lines().map(str::to_owned).collect();
    eprintln!("{} kills, {exact} exact sessions", kills.len());
    // A process killed twice before it was reaped (the status file lags by a tick) is one kill.
    let victims: std::collections::BTreeSet<(String, u64)> = kills
        .iter()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            (event["node"].as_str().unwrap().to_owned(), event["pid"].as_u64().unwrap())
        })
        .collect();
    // Every killed process is replaced, and every node beats again.
    cluster
        .wait_for("every node back", Duration::from_secs(30), |s| {
            s.iter().map(|n| n.restarts as usize).sum::<usize>() >= victims.len()
                && s.iter().all(|n| n.pid.is_some() && n.heartbeat_age_ms.is_some_and(|a| a < 2500))
        })
        .await;
    assert!(kills.len() >= 5, "{kills:?}");
    assert!(exact >= 3);
    let output = Arc::into_inner(cluster).expect("clients done").down().await;
    let restarts = output.lines().filter(|l| l.contains("\"restart\"")).count();
    assert!(restarts >= victims.len(), "{restarts} restarts for {} killed processes", victims.len());
}

/// Pauses, not deaths: the gateway, the leading monitor and a stateful replica are each stopped (SIGSTOP) while
/// three clients run sessions. A short pause (under the monitors' timeout) only delays; a long one gets the node
/// replaced (the stopped process killed and started again). Every session is exact, and every node beats again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_nodes_carry_on_or_are_replaced_and_every_session_stays_exact() {
    let cluster = Arc::new(cluster_up("pauses").await);
    let dir = tempfile::tempdir().unwrap();
    let datasets: Vec<_> = [81, 82, 83]
        .iter()
        .map(|&seed| generate(Scale::Tiny, seed, &dir.path().join(format!("data-{seed}"))))
        .collect();
    let clients = Clients::start(&cluster, &datasets, dir.path());
    // The monitors must have heard every node before one hangs: a node they never heard is given the start
    // grace (30 s), as it may still be waiting for the broker.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in ["gateway", "monitor-2", "q4_count-0"] {
        for (pause, replaced) in [(Duration::from_millis(300), false), (Duration::from_secs(5), true)] {
            let before = cluster.wait_all_beating(Duration::from_secs(30), Duration::from_millis(1500)).await;
            let (pid, restarts) = (node(&before, name).pid.unwrap(), node(&before, name).restarts);
            signal(pid, Signal::SIGSTOP);
            tokio::time::sleep(pause).await;
            // Gone if it was replaced (the stopped process was killed and reaped): nothing to resume then.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGCONT);
            let after = cluster.wait_all_beating(Duration::from_secs(30), Duration::from_millis(1500)).await;
            let now = node(&after, name);
            if replaced {
                assert!(
                    now.restarts > restarts && now.pid != Some(pid),
                    "{name} paused {pause:?} was replaced: {now:?}"
                );
            } else {
                assert_eq!((now.restarts, now.pid), (restarts, Some(pid)), "{name} paused {pause:?} carried on");
            }
        }
    }
    let exact = clients.finish().await;
    eprintln!("{exact} exact sessions across six pauses");
    assert!(exact >= 3);
    Arc::into_inner(cluster).expect("clients done").down().await;
}

/// A replica whose main loop is stuck on the broker while its heartbeat task beats on (the `confirm-stalls`
/// failpoint holds its first wait for confirms for ten minutes, as a confirm the client never settles across a
/// quorum queue's leader change would) says so in its beats, and the monitors have it restarted: the session
/// ends exactly, and so does one after. Before, its beats kept it alive in the monitors' eyes: it was never
/// restarted, and held its queue for ten minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stuck_on_the_broker_while_it_beats_is_restarted() {
    use coffee_ops::cluster::{LocalCluster, StartOptions};
    use coffee_tests::harness::{cluster_spec, run_session, supervised};
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 14, &dir.path().join("data"));
    let spec = cluster_spec("beats-stuck", "all=1");
    let stuck = "q3_agg-0";
    let options = StartOptions {
        monitors: 3,
        env: vec![("MONITOR_STUCK_TIMEOUT".to_owned(), "3s".to_owned())],
        first_start_env: [(
            stuck.to_owned(),
            vec![("FAILPOINTS".to_owned(), "confirm-stalls=1*return(600000)".to_owned())],
        )]
        .into(),
        ..Default::default()
    };
    let mut cluster = LocalCluster::start_with(spec.clone(), options).await.unwrap();
    let session = {
        let (spec, data, out) = (spec.clone(), data.clone(), dir.path().join("out"));
        async move { run_session(&spec, &data, &out).await }
    };
    let (summary, mut events) = supervised(&mut cluster, None, Duration::from_secs(60), session).await;
    assert_matches_reference(&summary, &data);
    // The session may have ended already (its finals went out before the stuck wait for their confirms): the
    // replica is restarted all the same, a few seconds into its wait.
    let wait = tokio::time::sleep(Duration::from_secs(8));
    events.extend(supervised(&mut cluster, None, Duration::from_secs(30), wait).await.1);
    let said = std::fs::read_to_string(spec.log_path(stuck)).unwrap();
    assert!(said.contains("failpoint reached"), "the replica was stuck: {said}");
    // It never exited: only a monitor's request restarts it.
    assert!(events.iter().any(|e| e.node == stuck && e.action == "restart"), "{stuck} was restarted: {events:?}");
    let (summary, _) = supervised(&mut cluster, None, Duration::from_secs(60), {
        let (spec, data, out) = (spec.clone(), data.clone(), dir.path().join("out-after"));
        async move { run_session(&spec, &data, &out).await }
    })
    .await;
    assert_matches_reference(&summary, &data);
    cluster.stop().await.unwrap();
}
