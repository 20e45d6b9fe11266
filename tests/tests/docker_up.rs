//! The compose project on the real Docker engine, offline: `scripts/docker-up.sh` installs and starts the engine
//! where needed, builds every image with no pull (base images from Debian's packages), starts the project and
//! waits for the gateway and the console. Never skipped: if the engine cannot start, the script says why and the
//! test fails.
//!
//! - Three sessions run through 127.0.0.1:7070 while `docker kill` takes down a worker, the gateway and the
//!   leading monitor: each session is exact, and every killed container runs again (the monitors restart them
//!   through the engine: Docker itself does not restart a container killed by hand).
//! - The console in its container drives the others: its API lists the node containers with their heartbeats,
//!   kills one and hears its restart on the WebSocket, restarts one, and runs the chaos monkey while a session
//!   runs, which stays exact.
//! - `scripts/docker-down.sh`, run just after a node was killed, leaves no container, network or volume of the
//!   project (it stops the monitors first, which would restart the node under it).

use coffee_engine::client::{self, ClientOptions};
use coffee_tests::console::ConsoleClient;
use coffee_tests::docker_project::{docker, DockerProject};
use coffee_tests::harness::{assert_matches_reference, generate};
use coffee_tools::gen::Scale;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "docker-up-test";

/// Runs a session through the published gateway in the background.
fn session(data: PathBuf, out: &Path) -> tokio::task::JoinHandle<(anyhow::Result<client::ClientSummary>, PathBuf)> {
    let options = ClientOptions::new("127.0.0.1:7070", &data, out.to_owned());
    tokio::spawn(async move { (client::run_session(&options, Arc::new(|_| {})).await, data) })
}

async fn assert_exact(session: tokio::task::JoinHandle<(anyhow::Result<client::ClientSummary>, PathBuf)>) {
    let (summary, data) =
        tokio::time::timeout(Duration::from_secs(240), session).await.expect("the session ends").expect("its task");
    assert_matches_reference(&summary.expect("a session through the containers"), &data);
}

fn nodes_up(nodes: &Value) -> usize {
    nodes.as_array().expect("a list").iter().filter(|n| n["up"] == true).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_project_runs_on_the_real_engine_and_every_session_is_exact() {
    let project =
        DockerProject::up("coffee-test", Path::new("docker-compose-dev.yaml"), &[("COFFEE_CONSOLE_TOKEN", TOKEN)]);
    assert!(project.listed(&["ps"]).len() >= 17, "the broker, the gateway, 12 workers, 3 monitors and the console run");

    // Docker kills while three sessions run.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = |i: u64| generate(Scale::Small, 20 + i, &dir.path().join(format!("data-{i}")));
    let sessions: Vec<_> = (0..3).map(|i| session(data(i), &dir.path().join(format!("out-{i}")))).collect();
    // A worker, the gateway and the leading monitor (the highest live replica leads), while the sessions run.
    let victims = ["q3-agg-0", "gateway", "monitor-2"];
    let before: Vec<String> = victims.iter().map(|v| project.started_at(v).0).collect();
    for victim in victims {
        tokio::time::sleep(Duration::from_millis(700)).await;
        docker(&["kill", &project.container(victim)]);
    }
    for session in sessions {
        assert_exact(session).await;
    }
    project.wait_restarted(&victims, &before, Duration::from_secs(60)).await;

    // The console, in its container, behind its token.
    let console = ConsoleClient::new("http://127.0.0.1:8080", Some(TOKEN));
    let refused = console.http.get("http://127.0.0.1:8080/api/status").send().await.expect("GET");
    assert_eq!(refused.status(), 401, "off loopback the console needs its token");
    let status = console.get("/api/status").await;
    assert_eq!(status["orchestrator"], "docker (compose project coffee-test)", "{status}");
    // Every node container, heard beating (once the console, just started, has heard each of them).
    console.nodes_beating(Some(16), Duration::from_secs(5), Duration::from_secs(30)).await;

    // A kill from the page: the page hears it, and hears a monitor restart the container through the engine.
    let mut events = console.events().await;
    let before = project.started_at("q2-agg-1").0;
    console.post("/api/nodes/q2_agg-1/kill", json!({})).await;
    events.wait("node_killed", |e| e["node"] == "q2_agg-1" && e["cause"] == "user").await;
    events.wait_within("node_restarted", Duration::from_secs(90), |e| e["node"] == "q2_agg-1").await;
    project.wait_restarted(&["q2-agg-1"], &[before], Duration::from_secs(10)).await;
    // A restart from the page.
    let before = project.started_at("q4-top-0").0;
    console.post("/api/nodes/q4_top-0/restart", json!({})).await;
    let restarted = events.wait("node_restarted", |e| e["node"] == "q4_top-0").await;
    assert_eq!(restarted["by"], "the console", "{restarted}");
    project.wait_restarted(&["q4-top-0"], &[before], Duration::from_secs(30)).await;

    // The console's chaos monkey while a session runs: the session is exact, and every node runs again.
    let running = session(data(3), &dir.path().join("out-3"));
    console.post("/api/chaos/start", json!({ "interval_ms": 1500 })).await;
    events.wait_within("chaos", Duration::from_secs(60), |e| e["kills"].as_u64() >= Some(3)).await;
    console.post("/api/chaos/stop", json!({})).await;
    assert_exact(running).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let nodes = console.get("/api/nodes").await;
        if nodes_up(&nodes) == 16 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not every node runs again after the chaos: {nodes}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Teardown right after a kill: the monitors would restart the node between compose's stop and its remove,
    // leaving it running and the network and volumes behind, unless the teardown stops them first.
    docker(&["kill", &project.container("q4-count-1")]);
    project.down();
}
