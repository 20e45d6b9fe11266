//! Health monitors, for real: `coffee cluster up` with three monitors; the leader monitor, a worker and the
//! gateway are SIGKILLed in turn, and each comes back through the monitors (the cluster itself restarts
//! nothing on its own in this mode). Then a session still gets exact results.

use coffee::cluster::{read_status, NodeStatus};
use coffee::gen::Scale;
use coffee_tests::harness::{assert_matches_reference, free_addr, generate, node_binary, unique_namespace};
use std::sync::Arc;
use std::time::Duration;

async fn wait_for(what: &str, namespace: &str, ok: impl Fn(&[NodeStatus]) -> bool) -> Vec<NodeStatus> {
    for _ in 0..300 {
        if let Ok(status) = read_status(namespace) {
            if ok(&status) {
                return status;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}: {:?}", read_status(namespace));
}

fn node<'a>(status: &'a [NodeStatus], name: &str) -> &'a NodeStatus {
    status.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
}

fn sigkill(pid: u32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
}

/// Kills `name` and waits until it is back: restarted once more, with a fresh heartbeat.
async fn kill_and_wait_for_revival(namespace: &str, name: &str) {
    let before = wait_for(&format!("{name} up"), namespace, |s| node(s, name).pid.is_some()).await;
    let (pid, restarts) = (node(&before, name).pid.unwrap(), node(&before, name).restarts);
    sigkill(pid);
    wait_for(&format!("{name} revived"), namespace, |s| {
        let n = node(s, name);
        n.restarts > restarts && n.pid.is_some_and(|p| p != pid) && n.heartbeat_age_ms.is_some_and(|a| a < 1500)
    })
    .await;
}

/// Starts `coffee cluster up` with three monitors (2 s timeout, its stdout piped) and waits until every node of
/// the default topology and every monitor has been heard.
async fn cluster_up(namespace: &str, gateway: &str) -> tokio::process::Child {
    let up = tokio::process::Command::new(node_binary())
        .args(["cluster", "up", "--monitors", "3"])
        .env("COFFEE_NAMESPACE", namespace)
        .env("GATEWAY_ADDR", gateway)
        .env("MONITOR_TIMEOUT", "2s")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for("every node heard", namespace, |s| {
        s.len() == 16 && s.iter().all(|n| n.heartbeat_age_ms.is_some_and(|a| a < 1500))
    })
    .await;
    up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_revive_killed_nodes_and_each_other() {
    let namespace = unique_namespace("monitors");
    let gateway = free_addr();
    let mut up = cluster_up(&namespace, &gateway).await;

    kill_and_wait_for_revival(&namespace, "monitor-2").await; // the leader: monitor-1 takes over and revives it
    kill_and_wait_for_revival(&namespace, "q4_count-0").await;
    kill_and_wait_for_revival(&namespace, "gateway").await;

    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 9, &dir.path().join("data"));
    let options = coffee::client::ClientOptions { gateway, data_dir: data.clone(), out_dir: dir.path().join("out") };
    let summary = coffee::client::run_session(&options, Arc::new(|_| {})).await.unwrap();
    assert_matches_reference(&summary, &data);

    coffee::cluster::signal_down(&namespace).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), up.wait()).await.expect("cluster down").unwrap();
    assert!(status.success(), "cluster up exited with {status}");
}

/// The whole demo from the command line: `cluster up` with monitors, `coffee chaos` killing any node (gateway
/// and monitors included) every 0.5-1.5 s for a while, and three clients running sessions meanwhile. Every
/// session is exact, and every kill is followed by a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coffee_chaos_against_cluster_up_with_monitors() {
    let namespace = unique_namespace("chaos-cli");
    let gateway = free_addr();
    let up = cluster_up(&namespace, &gateway).await;
    let chaos = tokio::process::Command::new(node_binary())
        .args(["chaos", "--interval", "500ms..1500ms", "--target", "random", "--seed", "3", "--duration", "12s"])
        .env("COFFEE_NAMESPACE", &namespace)
        .output();
    let dir = tempfile::tempdir().unwrap();
    let datasets: Vec<_> = [61, 62, 63]
        .iter()
        .map(|&seed| generate(Scale::Tiny, seed, &dir.path().join(format!("data-{seed}"))))
        .collect();
    let chaos_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = datasets
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let (gateway, data, over) = (gateway.clone(), data.clone(), chaos_over.clone());
            let out = dir.path().join(format!("out-{i}"));
            tokio::spawn(async move {
                let mut exact = 0;
                while !over.load(std::sync::atomic::Ordering::Relaxed) {
                    let options = coffee::client::ClientOptions {
                        gateway: gateway.clone(),
                        data_dir: data.clone(),
                        out_dir: out.clone(),
                    };
                    let summary = coffee::client::run_session(&options, Arc::new(|_| {})).await.unwrap();
                    assert_matches_reference(&summary, &data);
                    exact += 1;
                }
                exact
            })
        })
        .collect();
    let chaos = chaos.await.unwrap();
    chaos_over.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(chaos.status.success(), "coffee chaos failed: {}", String::from_utf8_lossy(&chaos.stderr));
    let kills: Vec<String> = String::from_utf8_lossy(&chaos.stdout).lines().map(str::to_owned).collect();
    let mut exact = 0;
    for client in clients {
        exact += tokio::time::timeout(Duration::from_secs(120), client).await.expect("sessions end").unwrap();
    }
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
    wait_for("every node back", &namespace, |s| {
        s.iter().map(|n| n.restarts as usize).sum::<usize>() >= victims.len()
            && s.iter().all(|n| n.pid.is_some() && n.heartbeat_age_ms.is_some_and(|a| a < 2500))
    })
    .await;
    assert!(kills.len() >= 5, "{kills:?}");
    assert!(exact >= 3);
    coffee::cluster::signal_down(&namespace).unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), up.wait_with_output()).await.expect("down").unwrap();
    assert!(output.status.success());
    let restarts = String::from_utf8_lossy(&output.stdout).lines().filter(|l| l.contains("\"restart\"")).count();
    assert!(restarts >= victims.len(), "{restarts} restarts for {} killed processes", victims.len());
}
