//! A broker that refuses is not a broker that is gone (issue 23, item 2). A stage's queue is redeclared with
//! other arguments (another queue type, as an upgrade or a hand would leave it): its replica loses its consumer,
//! and its next process is refused the queue with 406. The node says why once and exits as refused; the
//! supervisor leaves it down whoever asks (the monitors included), `coffee cluster status` and the console say
//! why, and once the queue is put right a restart by hand brings it back and a session is exact. Before, the
//! refusal was an exit like any broker failure, restarted at once in a loop.

use coffee_engine::client::{self, ClientOptions};
use coffee_model::node::StageKind;
use coffee_tests::harness::{amqp_url, assert_matches_reference, generate, node_binary};
use coffee_tools::gen::Scale;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const REPLICA: &str = "q2_agg-0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_the_broker_refuses_leaves_its_replica_down_and_named_until_restarted_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = coffee_tests::console::config(&dir.path().join("console"), "refusal");
    config.replicas = "all=1".into();
    let (gateway, namespace) = (config.gateway.clone(), config.namespace.clone());
    let console = coffee_tests::console::Console::start(config).await;
    // Every node declared the queues at its start and beats: the refusal meets only the replica's next start.
    console.nodes_beating(None, Duration::from_secs(3), Duration::from_secs(30)).await;
    let queue = console.app.state.nodes.spec().topology.queue(StageKind::Q2Agg, 0);

    // The replica's queue, deleted and declared again as a quorum queue: the topology's are classic.
    let connection = coffee_engine::amqp::connect(&amqp_url(), "test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(queue.as_str().into(), durable, quorum).await.unwrap();

    let refused =
        console.node_until(REPLICA, Duration::from_secs(30), "was refused", |r| r["refused"].is_string()).await;
    let reason = refused["refused"].as_str().unwrap().to_owned();
    assert!(
        reason.contains(&queue) && reason.contains("PRECONDITION"),
        "the reason names the queue and the refusal: {reason}"
    );
    assert!(reason.contains("coffee cluster down"), "the reason says the way out: {reason}");
    assert_eq!(refused["up"], false, "{refused}");
    // Past the monitors' timeout and the supervisor's grace: nobody starts it again.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let still = console.node(REPLICA).await;
    assert_eq!(
        (still["up"].clone(), still["restarts"].clone()),
        (json!(false), refused["restarts"].clone()),
        "{still}"
    );

    let status = std::process::Command::new(node_binary())
        .args(["cluster", "status", "--namespace", &namespace, "--amqp-url", &amqp_url()])
        .output()
        .expect("coffee cluster status runs");
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains(&format!("{REPLICA} is refused for good and left down: {reason}")), "{status}");
    let log = std::fs::read_to_string(console.app.state.nodes.spec().log_path(REPLICA)).unwrap();
    assert_eq!(log.matches("the broker refuses queue").count(), 1, "said once:\n{log}");

    // The way out: the queue put right, then a restart by hand.
    channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    console.post(&format!("/api/nodes/{REPLICA}/restart"), json!({})).await;
    console
        .node_until(REPLICA, Duration::from_secs(30), "came back", |r| r["up"] == true && r["refused"].is_null())
        .await;
    let data = generate(Scale::Tiny, 7, &dir.path().join("data"));
    let options = ClientOptions::new(&gateway, &data, dir.path().join("out"));
    let summary = tokio::time::timeout(Duration::from_secs(120), client::run_session(&options, Arc::new(|_| {})))
        .await
        .expect("the session ends")
        .expect("a session");
    assert_matches_reference(&summary, &data);
    console.app.shutdown().await;
}

/// State another build wrote (format 2 here) refuses the replica's start: its process says which folder, which
/// format and the way out, and exits as refused (78), which a supervisor leaves down (see above).
#[tokio::test]
async fn a_replica_on_state_of_another_format_exits_refused_and_says_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("q3_agg-0")).unwrap();
    std::fs::write(dir.path().join("q3_agg-0").join(coffee_engine::state::FORMAT_FILE), "2\n").unwrap();
    let spec = coffee_tests::harness::cluster_spec("format", "all=1");
    let namespace = spec.topology.namespace.clone();
    let output = tokio::process::Command::new(node_binary())
        .args(["worker", "--stage", "q3_agg", "--replica", "0", "--replicas", "all=1", "--namespace", &namespace])
        .args(["--amqp-url", &amqp_url()])
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .await
        .expect("coffee worker runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(coffee_engine::amqp::REFUSED_EXIT_CODE), "{stderr}");
    assert!(stderr.contains("holds state in format 2, and this build reads format 1"), "{stderr}");
    let connection = coffee_engine::amqp::connect(&amqp_url(), "test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    coffee_engine::amqp::delete_queues(&channel, &spec.topology).await.unwrap();
}
