//! The health monitor and the chaos monkey as they run inside compose (`--orchestrator docker`), as real
//! `coffee` processes on the real broker, against a fake Docker engine on loopback that records every call (no
//! engine runs here): the monitor restarts the container of a silent node and leaves alone the nodes that beat;
//! the chaos monkey kills running node containers only, and stops by itself.

use coffee_engine::heartbeat;
use coffee_engine::metrics::Counters;
use coffee_engine::topology::Topology;
use coffee_tests::fake_docker::{self, container, Engine};
use coffee_tests::harness::{amqp_url, node_binary, unique_namespace};
use std::sync::Arc;
use std::time::Duration;

fn engine() -> Engine {
    Engine::new(vec![
        container("gw", "coffee", "gateway", Some("gateway"), "running"),
        // Down: SIGKILLed, so Docker's restart policy leaves it down.
        container("tx0", "coffee", "tx-filter-0", Some("tx_filter-0"), "exited"),
        container("mon0", "coffee", "monitor-0", Some("monitor-0"), "running"),
        container("mq", "coffee", "rabbitmq", None, "running"),
        // Another project's node: not ours to touch.
        container("other-tx0", "other", "tx-filter-0", Some("tx_filter-0"), "exited"),
    ])
}

fn coffee(args: &[&str], endpoint: &str, namespace: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(node_binary());
    command
        .args(args)
        .env("COFFEE_ORCHESTRATOR", "docker")
        .env("DOCKER_HOST", endpoint)
        .env("COFFEE_COMPOSE_PROJECT", "coffee")
        .env("COFFEE_NAMESPACE", namespace)
        .env("COFFEE_REPLICAS", "all=1")
        .env("AMQP_URL", amqp_url())
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leading_monitor_restarts_silent_containers_through_the_engine() {
    let engine = engine();
    let endpoint = fake_docker::serve(engine.clone()).await;
    let namespace = unique_namespace("docker-monitor");
    // The gateway beats; tx_filter-0 (and every node without a container) is silent.
    let connection = coffee_engine::amqp::connect(&amqp_url(), "test-gateway").await.expect("broker");
    let topology = Topology::with_replicas(&namespace, "all=1").expect("topology");
    heartbeat::start(&connection, &topology, "gateway".into(), Arc::new(Counters::default())).await.expect("beat");

    // A timeout well above the heartbeat interval (1 s), so a beat delayed on a loaded machine is not silence; a
    // node never heard is judged once the start grace has passed since the monitor started (8 s here).
    let args = ["monitor", "--replica", "0", "--monitors", "1", "--timeout", "2500ms", "--start-grace", "8s"];
    let mut monitor = coffee(&args, &endpoint, &namespace).spawn().expect("spawn the monitor");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !engine.actions().iter().any(|a| a == "POST /containers/tx0/restart t=0") {
        assert!(tokio::time::Instant::now() < deadline, "no restart of tx0: {:?}", engine.requests());
        assert!(monitor.try_wait().expect("wait").is_none(), "the monitor exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A few more timeouts: the beating gateway, the monitor itself, the broker and the other project's node are
    // never touched; the restarted node, still silent (nothing runs in the fake container), is given the start
    // grace instead of a restart every timeout.
    tokio::time::sleep(Duration::from_secs(6)).await;
    monitor.kill().await.expect("kill the monitor");
    assert_eq!(engine.actions(), ["POST /containers/tx0/restart t=0"]);
    assert_eq!(engine.state_of("tx0").as_deref(), Some("running"));
    assert_eq!(engine.state_of("other-tx0").as_deref(), Some("exited"));
}

#[tokio::test]
async fn the_chaos_monkey_kills_running_node_containers_and_stops_by_itself() {
    let engine = engine();
    let endpoint = fake_docker::serve(engine.clone()).await;
    let args = ["chaos", "--interval", "100ms..300ms", "--seed", "7", "--duration", "3s"];
    let mut command = coffee(&args, &endpoint, &unique_namespace("docker-chaos"));
    let run = tokio::time::timeout(Duration::from_secs(30), command.output()).await.expect("stops by itself");
    let output = run.expect("chaos ran");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON event line"))
        .collect();
    // The two running nodes die in turn (a dead one is not picked again), then nothing is left to kill.
    let victims: Vec<&str> = events.iter().map(|e| e["node"].as_str().expect("node")).collect();
    assert_eq!(victims.len(), 2, "{events:?}");
    assert!(victims.contains(&"gateway") && victims.contains(&"monitor-0"), "{victims:?}");
    assert!(events.iter().all(|e| e["action"] == "kill"));
    let mut actions = engine.actions();
    actions.sort();
    assert_eq!(actions, ["POST /containers/gw/kill signal=SIGKILL", "POST /containers/mon0/kill signal=SIGKILL"]);
}
