//! The console with `--orchestrator docker`, as it runs inside compose: it starts no process; it lists the
//! compose project's node containers, kills them through the Engine API (here a fake engine on loopback that
//! records every call), and hears the nodes' heartbeats on the real broker. Only containers labelled as nodes
//! are shown or killed, by hand or by the chaos monkey; the broker and the console itself never are.

use coffee_engine::heartbeat;
use coffee_engine::metrics::Counters;
use coffee_engine::topology::Topology;
use coffee_ops::docker::DockerOrchestrator;
use coffee_ops::orchestration::OrchestratorKind;
use coffee_ops::orchestrator::Orchestrator;
use coffee_tests::console::{self, Console};
use coffee_tests::fake_docker::{self, container, Engine};
use coffee_tests::harness::amqp_url;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

fn engine() -> Engine {
    Engine::new(vec![
        container("gw", "coffee", "gateway", Some("gateway"), "running"),
        container("tx0", "coffee", "tx-filter-0", Some("tx_filter-0"), "running"),
        container("mon0", "coffee", "monitor-0", Some("monitor-0"), "running"),
        container("mq", "coffee", "rabbitmq", None, "running"),
        container("web", "coffee", "console", None, "running"),
    ])
}

async fn docker_console(data_dir: &std::path::Path, docker_host: &str) -> Console {
    let mut config = console::config(data_dir, "console-docker");
    config.orchestrator.orchestrator = OrchestratorKind::Docker;
    config.orchestrator.docker_host = docker_host.to_owned();
    config.orchestrator.compose_project = Some("coffee".into());
    // Nothing to start: a missing binary must not matter.
    config.coffee_bin = Some(data_dir.join("no-such-binary"));
    Console::start(config).await
}

fn node<'a>(nodes: &'a Value, name: &str) -> &'a Value {
    nodes.as_array().expect("a list").iter().find(|n| n["name"] == name).unwrap_or_else(|| panic!("no {name}: {nodes}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_drives_compose_containers_through_the_engine_api() {
    let engine = engine();
    let endpoint = fake_docker::serve(engine.clone()).await;
    let data_dir = tempfile::tempdir().expect("tempdir");
    let console = docker_console(data_dir.path(), &endpoint).await;

    let status = console.get("/api/status").await;
    assert_eq!(status["cluster"]["state"], "up", "{status}");
    assert_eq!(status["orchestrator"], "docker (compose project coffee)", "{status}");
    // The project's nodes are its compose file's: the page cannot rescale them, and is told where to.
    assert_eq!(status["rescalable"], false, "{status}");
    let (code, answer) = console.post_answer("/api/topology", json!({ "replicas": "all=1" })).await;
    assert_eq!(code, 409, "{answer}");
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("coffee compose --replicas")), "{answer}");

    // The gateway beats on the console's namespace: its heartbeat age shows.
    let namespace = console.app.state.nodes.spec().topology.namespace.clone();
    let connection = coffee_engine::amqp::connect(&amqp_url(), "test-gateway").await.expect("broker");
    let topology = Topology::with_replicas(&namespace, "").expect("topology");
    heartbeat::start(&connection, &topology, "gateway".into(), Arc::new(Counters::default())).await.expect("beat");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let nodes = loop {
        let nodes = console.get("/api/nodes").await;
        if node(&nodes, "gateway")["heartbeat_age_ms"].is_u64() || tokio::time::Instant::now() > deadline {
            break nodes;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let names: Vec<&str> = nodes.as_array().expect("list").iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, ["gateway", "monitor-0", "tx_filter-0"], "only node containers: {nodes}");
    assert!(node(&nodes, "gateway")["heartbeat_age_ms"].as_u64().is_some_and(|age| age < 5_000), "{nodes}");
    assert_eq!(node(&nodes, "tx_filter-0")["up"], true);
    assert_eq!(node(&nodes, "tx_filter-0")["detail"], "running (fake)");
    assert_eq!(node(&nodes, "tx_filter-0")["role"], "tx_filter");

    // A kill by hand goes to the engine; the node shows down until something starts it again.
    let mut events = console.events().await;
    console.post("/api/nodes/tx_filter-0/kill", json!({})).await;
    events.wait("node_killed", |e| e["node"] == "tx_filter-0" && e["cause"] == "user").await;
    assert_eq!(engine.actions(), ["POST /containers/tx0/kill signal=SIGKILL"]);
    assert_eq!(node(&console.get("/api/nodes").await, "tx_filter-0")["up"], false);
    // A monitor restarts it (as the compose file's monitors do, through the same API): the page hears it back.
    let monitor = DockerOrchestrator::connect(&endpoint, Some("coffee".into())).expect("client");
    monitor.restart("tx_filter-0").await.expect("restart");
    events.wait("node_restarted", |e| e["node"] == "tx_filter-0").await;

    // A restart from the page goes to the engine too, and is reported once, as the console's.
    console.post("/api/nodes/gateway/restart", json!({})).await;
    let restarted = events.wait("node_restarted", |e| e["node"] == "gateway").await;
    assert_eq!(restarted["by"], "the console", "{restarted}");
    assert_eq!(engine.actions().last().map(String::as_str), Some("POST /containers/gw/restart t=0"));

    // What is not a node cannot be killed.
    for name in ["rabbitmq", "console", "q4_top-0"] {
        let url = format!("{}/api/nodes/{name}/kill", console.base);
        let response = console.http.post(url).json(&json!({})).send().await.expect("POST");
        assert_eq!(response.status(), 404, "{name}");
    }

    // The chaos monkey kills containers the same way, and only node containers.
    console.post("/api/chaos/start", json!({ "interval_ms": 500 })).await;
    events.wait("chaos", |e| e["kills"].as_u64() >= Some(3)).await;
    console.post("/api/chaos/stop", json!({})).await;
    let kills: Vec<String> = engine.actions().into_iter().filter(|a| a.ends_with("/kill signal=SIGKILL")).collect();
    assert!(kills.len() >= 4, "{kills:?}");
    assert!(kills.iter().all(|k| ["gw", "tx0", "mon0"].iter().any(|id| k.contains(&format!("/{id}/")))), "{kills:?}");

    // The containers are compose's: shutting the console down leaves them alone.
    let before = engine.actions().len();
    console.app.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(engine.actions().len(), before);
}

#[tokio::test]
async fn an_engine_that_does_not_answer_is_named() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    // A loopback port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let console = docker_console(data_dir.path(), &format!("tcp://{closed}")).await;
    let status = console.get("/api/status").await;
    assert_eq!(status["cluster"]["state"], "down", "{status}");
    let error = status["cluster"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("Docker engine does not answer") && error.contains("DOCKER_HOST"), "{error}");
    assert_eq!(console.get("/api/nodes").await, json!([]));
    console.app.shutdown().await;
}
