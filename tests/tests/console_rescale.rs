//! Rescaling from the page, between runs: the console's own cluster restarts with other replicas, the graph and
//! the node list show the new shape, and sessions on it are exact. Refused while a session runs (the console's,
//! or a client's of the gateway's own: a rescale would wipe it), while the chaos monkey runs, and for replica
//! counts the console will not run.

use coffee_engine::client::{self, ClientOptions};
use coffee_tests::console::{self, Console};
use coffee_tests::harness::{assert_matches_reference, generate};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The stages' replicas as `/api/topology` gives them.
fn replicas(topology: &Value) -> Vec<(String, u64)> {
    let stages = topology["stages"].as_array().expect("stages");
    stages.iter().map(|s| (s["name"].as_str().expect("name").to_owned(), s["replicas"].as_u64().expect("n"))).collect()
}

/// Waits until every node of the listing is up and beating, and returns their names.
async fn nodes_beating(console: &Console) -> Vec<String> {
    console.nodes_beating(None, Duration::from_secs(3), Duration::from_secs(60)).await
}

/// Launches a session and waits until it is done and equal to the reference; its view.
async fn exact_session(console: &Console) -> Value {
    let session = console.launch("generated-tiny").await;
    let view = console
        .wait_session(&session, "done and checked", |v| v["state"] == "done" && !v["matches_reference"].is_null())
        .await;
    assert_eq!(view["matches_reference"], true, "{view}");
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_rescales_the_cluster_between_runs() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut config = console::config(data_dir.path(), "console-rescale");
    config.replicas = "all=1".into();
    config.monitors = 1;
    let console = Console::start(config).await;
    console.post("/api/datasets/generate", json!({ "scale": "tiny" })).await;
    assert_eq!(console.get("/api/status").await["rescalable"], true);
    nodes_beating(&console).await;
    exact_session(&console).await;

    // Wider: the answer, the event stream, the status, the node list and a session all see the new shape.
    let mut events = console.events().await;
    let shape = "all=1,tx_filter=2,q4_count=3";
    let topology = console.post("/api/topology", json!({ "replicas": shape })).await;
    let expected: Vec<(String, u64)> = ["tx_filter", "item_filter", "q2_agg", "q3_agg", "q4_count", "q4_top"]
        .iter()
        .map(|&s| {
            (
                s.to_owned(),
                if s == "tx_filter" {
                    2
                } else if s == "q4_count" {
                    3
                } else {
                    1
                },
            )
        })
        .collect();
    assert_eq!(replicas(&topology), expected);
    let heard = events.wait("topology", |_| true).await;
    assert_eq!(replicas(&heard), expected);
    events.wait("cluster", |e| e["state"] == "up").await;
    assert_eq!(replicas(&console.get("/api/topology").await), expected);
    let spec = "tx_filter=2,item_filter=1,q2_agg=1,q3_agg=1,q4_count=3,q4_top=1";
    assert_eq!(console.get("/api/status").await["replicas"], spec);
    let names = nodes_beating(&console).await;
    for node in ["tx_filter-1", "q4_count-1", "q4_count-2", "gateway", "monitor-0"] {
        assert!(names.iter().any(|n| n == node), "{node} is not among {names:?}");
    }
    let view = exact_session(&console).await;
    assert_eq!(view["topology"], spec, "the session ran on the new shape");

    // Refused while a session runs: the session is held (its last stage paused) so it cannot end first.
    console.post("/api/nodes/q4_top-0/pause", json!({ "ms": 2000 })).await;
    let running = console.launch("generated-tiny").await;
    let (status, answer) = console.post_answer("/api/topology", json!({ "replicas": "all=1" })).await;
    assert_eq!((status, answer["error"].as_str().is_some_and(|e| e.contains("running"))), (409, true), "{answer}");
    console.wait_session(&running, "done", |v| v["state"] == "done").await;

    // Refused too while a session the console did not launch runs: a client on the gateway's port. Before, the
    // rescale went ahead and wiped it.
    console.post("/api/nodes/q4_top-0/pause", json!({ "ms": 3000 })).await;
    let data = generate(coffee_tools::gen::Scale::Tiny, 21, &data_dir.path().join("own-client"));
    let options = ClientOptions::new(&console.app.state.config.gateway, &data, data_dir.path().join("own-out"));
    let own = tokio::spawn(async move { client::run_session(&options, Arc::new(|_| {})).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, answer) = console.post_answer("/api/topology", json!({ "replicas": "all=1" })).await;
    assert_eq!((status, answer["error"].as_str().is_some_and(|e| e.contains("holds"))), (409, true), "{answer}");
    let summary = own.await.expect("the client's task").expect("its session");
    assert_matches_reference(&summary, &data);

    // Refused while the chaos monkey runs (at its longest interval, it has not struck yet).
    console.post("/api/chaos/start", json!({ "interval_ms": 600_000 })).await;
    let (status, answer) = console.post_answer("/api/topology", json!({ "replicas": "all=1" })).await;
    assert_eq!((status, answer["error"].as_str().is_some_and(|e| e.contains("chaos"))), (409, true), "{answer}");
    console.post("/api/chaos/stop", json!({})).await;

    // Shapes the console will not run are refused before anything stops.
    for bad in ["q4_count=9", "nosuch=2", "q4_count=0", "q4_count"] {
        let (status, answer) = console.post_answer("/api/topology", json!({ "replicas": bad })).await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    assert_eq!(console.get("/api/status").await["replicas"], spec);

    // Narrower again: the nodes of the wider shape are gone, and a session is exact.
    console.post("/api/topology", json!({ "replicas": "all=1" })).await;
    let names = nodes_beating(&console).await;
    assert!(!names.iter().any(|n| n == "q4_count-2" || n == "tx_filter-1"), "{names:?}");
    exact_session(&console).await;
    console.app.shutdown().await;
}
