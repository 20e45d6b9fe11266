//! A RabbitMQ cluster in containers: `coffee compose --brokers 3 --queue-type quorum` run on the real engine by
//! `scripts/docker-up.sh`. The three brokers join one cluster and every node is given all three addresses. When
//! one broker is killed (`docker kill`, a crash) while three sessions run, every session is exact, and a session
//! started after it too, on the two brokers left.

use coffee_engine::client::{self, ClientOptions};
use coffee_engine::topology::{QueueType, Topology};
use coffee_ops::compose::{self, ComposeOptions};
use coffee_tests::docker_project::{docker, DockerProject};
use coffee_tests::harness::{assert_matches_reference, generate};
use coffee_tools::gen::Scale;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The running members of the brokers' cluster, as `broker` sees it.
fn running_nodes(project: &DockerProject, broker: &str) -> Vec<String> {
    let status =
        docker(&["exec", &project.container(broker), "rabbitmqctl", "-q", "cluster_status", "--formatter", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("cluster_status as JSON");
    let mut nodes: Vec<String> = status["running_nodes"]
        .as_array()
        .expect("running_nodes")
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    nodes.sort();
    nodes
}

/// The quorum queues that `broker` lists with fewer members than `brokers`: such a queue stops serving when one
/// of its members dies.
fn short_quorum_queues(project: &DockerProject, broker: &str, brokers: usize) -> Vec<String> {
    let queues = docker(&[
        "exec",
        &project.container(broker),
        "rabbitmqctl",
        "-q",
        "list_queues",
        "name",
        "type",
        "members",
        "--formatter",
        "json",
    ]);
    let queues: Vec<serde_json::Value> = serde_json::from_str(&queues).expect("list_queues as JSON");
    queues
        .iter()
        .filter(|q| q["type"] == "quorum" && q["members"].as_array().map_or(0, Vec::len) < brokers)
        .map(|q| format!("{} on {}", q["name"], q["members"]))
        .collect()
}

async fn exact_session(data: &Path, out: &Path) {
    let options = ClientOptions::new("127.0.0.1:7070", data, out.to_owned());
    let started = std::time::Instant::now();
    let summary = tokio::time::timeout(Duration::from_secs(240), client::run_session(&options, Arc::new(|_| {})))
        .await
        .expect("the session ends")
        .expect("a session through the containers");
    eprintln!("session {} ended in {:?}", summary.session, started.elapsed());
    assert_matches_reference(&summary, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_broker_of_three_killed_mid_run_and_every_session_is_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut topology = Topology::default();
    topology.queue_type = QueueType::Quorum;
    let file = dir.path().join("docker-compose-brokers.yaml");
    std::fs::write(&file, compose::generate(&topology, &ComposeOptions { brokers: 3, ..Default::default() }))
        .expect("write the compose file");
    let project = DockerProject::up("coffee-brokers", &file, &[]);
    let all = ["rabbit@rabbitmq-1", "rabbit@rabbitmq-2", "rabbit@rabbitmq-3"];
    assert_eq!(running_nodes(&project, "rabbitmq-2"), all, "three brokers, one cluster");

    let data: Vec<_> =
        (0..4u64).map(|i| generate(Scale::Small, 40 + i, &dir.path().join(format!("data-{i}")))).collect();
    let sessions: Vec<_> = (0..3)
        .map(|i| {
            let (data, out) = (data[i].clone(), dir.path().join(format!("out-{i}")));
            tokio::spawn(async move { exact_session(&data, &out).await })
        })
        .collect();
    // The nodes spread over the three brokers (by pid and host name): about a third of them lose their
    // connection, and the quorum queues led from rabbitmq-1 elect new leaders.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Every queue declared so far spans the three brokers, so each keeps a majority when one dies.
    assert_eq!(short_quorum_queues(&project, "rabbitmq-2", all.len()), Vec::<String>::new());
    docker(&["kill", &project.container("rabbitmq-1")]);
    for session in sessions {
        session.await.expect("the session's task");
    }
    assert_eq!(running_nodes(&project, "rabbitmq-2"), all[1..], "the killed broker stays down");
    exact_session(&data[3], &dir.path().join("out-3")).await;

    project.down();
}
