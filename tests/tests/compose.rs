//! Containers, checked without a Docker engine (`docker_up.rs` and `docker_brokers.rs` run them on one): the committed `docker-compose-dev.yaml` is what
//! `coffee compose` generates, it validates against the Compose specification's JSON schema, and it runs every
//! node with the command the local launcher uses; the Docker orchestrator's Engine API calls are checked
//! against a fake engine on loopback that records them.

use coffee_engine::topology::{QueueType, Topology};
use coffee_ops::cluster::ClusterSpec;
use coffee_ops::compose::{self, ComposeOptions};
use coffee_ops::stack;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The committed file, parsed (YAML to the JSON data model the schema speaks).
fn committed() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose-dev.yaml")).expect("docker-compose-dev.yaml");
    serde_norway::from_str(&text).expect("docker-compose-dev.yaml parses as YAML")
}

fn schema_errors(file: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/compose-spec/compose-spec.json")).expect("schema"),
    )
    .expect("the schema is JSON");
    // Formats stay unchecked: the schema's `duration` means Go's `5s`, not the ISO 8601 that validators know.
    let validator = jsonschema::options().should_validate_formats(false).build(&schema).expect("the schema compiles");
    validator.iter_errors(file).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

#[test]
fn the_committed_file_is_what_coffee_compose_generates() {
    let committed = std::fs::read_to_string(root().join("docker-compose-dev.yaml")).unwrap_or_default();
    let generated = compose::generate(&Topology::default(), &ComposeOptions::default());
    assert!(
        committed == generated,
        "docker-compose-dev.yaml is stale; regenerate it: `cargo run -p coffee -- compose > docker-compose-dev.yaml`"
    );
    // The subcommand writes the same bytes.
    let dir = tempfile::tempdir().unwrap();
    compose::run_cli(&Topology::default(), 1, Some(&dir.path().join("out.yaml"))).unwrap();
    assert_eq!(std::fs::read_to_string(dir.path().join("out.yaml")).unwrap(), generated);
}

#[test]
fn the_committed_stack_is_what_coffee_compose_swarm_generates() {
    let committed = std::fs::read_to_string(root().join("docker-stack.yaml")).unwrap_or_default();
    let mut topology = Topology::default();
    topology.queue_type = QueueType::Quorum;
    let generated = stack::generate(&topology, stack::DEFAULT_HOSTS);
    assert!(
        committed == generated,
        "docker-stack.yaml is stale; regenerate it: `cargo run -p coffee -- compose --swarm --out docker-stack.yaml`"
    );
    let file: Value = serde_norway::from_str(&committed).expect("docker-stack.yaml parses as YAML");
    assert_eq!(schema_errors(&file), Vec::<String>::new());
    // What `docker stack deploy` ignores or refuses is absent; every service has a host.
    for (name, service) in file["services"].as_object().unwrap() {
        for refused in ["build", "depends_on", "restart", "container_name"] {
            assert!(service.get(refused).is_none(), "{name} has {refused}");
        }
        assert_eq!(service["deploy"]["endpoint_mode"], "dnsrr", "{name}: no IPVS here");
        assert!(strings(&service["deploy"]["placement"]["constraints"])[0].starts_with("node.labels.coffee.host == "));
    }
}

#[test]
fn the_file_validates_against_the_compose_schema() {
    let file = committed();
    assert_eq!(schema_errors(&file), Vec::<String>::new());
    // The validation has teeth: a key compose does not know, or a wrong condition, is refused.
    let mut bad = file.clone();
    bad["services"]["gateway"]["restart_policy"] = json!("always");
    bad["services"]["console"]["depends_on"]["gateway"]["condition"] = json!("healthy");
    assert_eq!(schema_errors(&bad).len(), 2, "{:?}", schema_errors(&bad));
}

fn strings(value: &Value) -> Vec<&str> {
    value.as_array().unwrap_or_else(|| panic!("not a list: {value}")).iter().map(|v| v.as_str().unwrap()).collect()
}

#[test]
fn every_node_runs_the_launchers_command_with_its_environment() {
    let file = committed();
    let services = file["services"].as_object().unwrap();
    let topology = Topology::default();
    let spec = ClusterSpec {
        topology: topology.clone(),
        gateway_addr: "0.0.0.0:7070".into(),
        amqp_url: compose::AMQP_URL.into(),
        exe: "coffee".into(),
    };
    let replicas = topology.replicas_spec();
    let nodes = spec.nodes();
    assert_eq!(nodes.len(), 1 + 12, "the gateway and 2 replicas of 6 stages");
    for (node, args) in &nodes {
        let name = node.replace('_', "-");
        let service = services.get(&name).unwrap_or_else(|| panic!("no service {name}"));
        let expected: Vec<&str> = std::iter::once("coffee").chain(args.iter().map(String::as_str)).collect();
        assert_eq!(strings(&service["command"]), expected, "{name}");
        let env = &service["environment"];
        let replica = node.rsplit_once('-').map_or("0", |(_, n)| n);
        assert_eq!(env["NODE_ID"], replica, "{name}");
        assert_eq!(env["AMQP_URL"], "amqp://guest:guest@rabbitmq:5672/%2f", "{name}");
        assert_eq!(env["COFFEE_REPLICAS"], replicas.as_str(), "{name}");
        assert_eq!(env["COFFEE_NAMESPACE"], "coffee", "{name}");
        assert_eq!(env["SNAPSHOT_INTERVAL"], "1000", "{name}");
        assert_eq!(env["STATE_DIR"], "/var/lib/coffee", "{name}");
        assert_eq!(service["labels"]["coffee.node"], node.as_str());
        // Its own named volume for its session state, declared at the top.
        let volume = format!("state-{name}");
        assert_eq!(strings(&service["volumes"]), [format!("{volume}:/var/lib/coffee")], "{name}");
        assert!(file["volumes"].get(&volume).is_some(), "{volume} is not declared");
    }
    assert!(strings(&services["gateway"]["command"]).windows(2).any(|w| w == ["--listen", "0.0.0.0:7070"]));
    assert_eq!(strings(&services["gateway"]["ports"]), ["7070:7070"]);
    assert!(services["gateway"]["healthcheck"]["test"].to_string().contains("/dev/tcp/127.0.0.1/7070"));

    for replica in 0..3 {
        let name = format!("monitor-{replica}");
        let service = &services[&name];
        let command = strings(&service["command"]);
        assert_eq!(command[..4], ["coffee", "monitor", "--replica", &replica.to_string()], "{name}");
        assert!(command.windows(2).any(|w| w == ["--monitors", "3"]), "{name}");
        assert_eq!(service["environment"]["NODE_ID"], replica.to_string());
        assert_eq!(service["environment"]["COFFEE_ORCHESTRATOR"], "docker");
        assert_eq!(strings(&service["volumes"]), ["/var/run/docker.sock:/var/run/docker.sock"]);
    }
    let console = &services["console"];
    let command = strings(&console["command"]);
    assert_eq!(command[0], "coffee-console");
    for pair in [["--orchestrator", "docker"], ["--bind", "0.0.0.0:8080"], ["--gateway", "gateway:7070"]] {
        assert!(command.windows(2).any(|w| w == pair), "console lacks {pair:?}");
    }
    assert_eq!(strings(&console["ports"]), ["8080:8080"]);
    assert!(strings(&console["volumes"]).contains(&"/var/run/docker.sock:/var/run/docker.sock"));
    assert!(console.get("labels").is_none(), "the console is not a node: no chaos monkey may pick it");
    // Every command in the file is one its binary accepts.
    for (name, service) in services.iter().filter(|(_, s)| s["command"][0] == "coffee") {
        let command = strings(&service["command"]);
        coffee::cli::check_args(&command).unwrap_or_else(|e| panic!("{name}: `coffee` refuses {command:?}: {e}"));
    }
    assert!(coffee::cli::check_args(["coffee", "monitor", "--no-such-flag"]).is_err(), "the check has teeth");
    let config = <coffee_console::Config as clap::Parser>::try_parse_from(&command).expect("the console's flags");
    assert_eq!(config.orchestrator.orchestrator, coffee_ops::orchestration::OrchestratorKind::Docker);

    assert_eq!(services["rabbitmq"]["image"], "rabbitmq:3-management");
    assert_eq!(strings(&services["rabbitmq"]["healthcheck"]["test"]), ["CMD", "rabbitmq-diagnostics", "-q", "ping"]);
    assert_eq!(services.len(), 1 + nodes.len() + 3 + 1, "rabbitmq, the nodes, 3 monitors, the console");
    for (name, service) in services.iter().filter(|(name, _)| *name != "rabbitmq") {
        assert_eq!(service["depends_on"]["rabbitmq"]["condition"], "service_healthy", "{name}");
        assert_eq!(service["restart"], "unless-stopped", "{name}");
        assert_eq!(service["image"], "coffee:dev", "{name}");
    }
}

#[test]
fn another_topology_gives_a_service_per_replica() {
    let mut topology = Topology::with_replicas("coffee", "all=1,q4_count=3").unwrap();
    topology.queue_type = coffee_engine::topology::QueueType::Quorum;
    let file: Value =
        serde_norway::from_str(&compose::generate(&topology, &ComposeOptions::default())).expect("parses");
    let services = file["services"].as_object().unwrap();
    let stages: Vec<&String> = services.keys().filter(|n| n.contains("-agg-") || n.contains("-filter-")).collect();
    assert_eq!(stages.len(), 4);
    assert!(["q4-count-0", "q4-count-1", "q4-count-2", "q4-top-0"].iter().all(|n| services.contains_key(*n)));
    assert!(!services.contains_key("q4-top-1"));
    assert_eq!(schema_errors(&file), Vec::<String>::new());
    // Every node of a quorum-queue topology, and the console, is told so (a node declaring classic queues would
    // be refused).
    for (name, service) in services.iter().filter(|(name, _)| *name != "rabbitmq") {
        let command = strings(&service["command"]);
        assert!(command.windows(2).any(|w| w == ["--queue-type", "quorum"]), "{name}: {command:?}");
        if command[0] == "coffee" {
            coffee::cli::check_args(&command).unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            <coffee_console::Config as clap::Parser>::try_parse_from(&command).expect("the console's flags");
        }
    }
}

#[test]
fn three_brokers_form_one_cluster_and_every_node_knows_them_all() {
    let mut topology = Topology::default();
    let dir = tempfile::tempdir().unwrap();
    let refused = compose::run_cli(&topology, 3, Some(&dir.path().join("out.yaml"))).unwrap_err().to_string();
    assert!(refused.contains("--queue-type quorum"), "{refused}");
    topology.queue_type = coffee_engine::topology::QueueType::Quorum;
    let file: Value =
        serde_norway::from_str(&compose::generate(&topology, &ComposeOptions { brokers: 3, ..Default::default() }))
            .expect("parses");
    assert_eq!(schema_errors(&file), Vec::<String>::new());
    let services = file["services"].as_object().unwrap();
    let brokers = ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"];
    assert!(!services.contains_key("rabbitmq"));
    let peers = "-rabbit cluster_nodes {['rabbit@rabbitmq-1','rabbit@rabbitmq-2','rabbit@rabbitmq-3'],disc}";
    for (i, name) in brokers.iter().enumerate() {
        let broker = &services[*name];
        assert_eq!(broker["hostname"], *name, "the node name rabbit@{name} is what the peers list");
        assert_eq!(broker["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"], peers);
        assert_eq!(broker["environment"]["RABBITMQ_ERLANG_COOKIE"], "${COFFEE_ERLANG_COOKIE:-coffee-dev}");
        assert_eq!(strings(&broker["ports"]), [format!("{}:15672", 15680 + i)]);
        assert_eq!(strings(&broker["volumes"]), [format!("{name}:/var/lib/rabbitmq")]);
        // The others join the first once it is up, rather than race into clusters of their own.
        let waits_for_first =
            broker.get("depends_on").is_some_and(|d| d["rabbitmq-1"]["condition"] == "service_healthy");
        assert_eq!(waits_for_first, i > 0, "{name}");
    }
    let urls = "amqp://guest:guest@rabbitmq-1:5672/%2f,amqp://guest:guest@rabbitmq-2:5672/%2f,amqp://guest:guest@rabbitmq-3:5672/%2f";
    for (name, service) in services.iter().filter(|(name, _)| !name.starts_with("rabbitmq")) {
        assert_eq!(service["environment"]["AMQP_URL"], urls, "{name}");
        for broker in brokers {
            assert_eq!(service["depends_on"][broker]["condition"], "service_healthy", "{name} on {broker}");
        }
    }
}

use coffee_ops::docker::DockerOrchestrator;
use coffee_ops::orchestrator::{NodeState, Orchestrator, RunState};
use coffee_tests::fake_docker::{self, container, Engine};

fn engine() -> Engine {
    let mut oneoff = container("run1", "coffee", "gateway", Some("gateway"), "running");
    oneoff["Labels"]["com.docker.compose.oneoff"] = json!("True");
    Engine::new(vec![
        container("gw1", "coffee", "gateway", Some("gateway"), "running"),
        container("tx0", "coffee", "tx-filter-0", Some("tx_filter-0"), "exited"),
        container("mon0", "coffee", "monitor-0", Some("monitor-0"), "restarting"),
        container("tx1", "coffee", "tx-filter-1", Some("tx_filter-1"), "running"),
        // Not nodes: no `coffee.node` label.
        container("mq", "coffee", "rabbitmq", None, "running"),
        container("web", "coffee", "console", None, "running"),
        oneoff,
        container("other-gw", "other", "gateway", Some("gateway"), "running"),
    ])
}

const LIST: &str = "GET /containers/json \
    all=true&filters={\"label\":[\"coffee.node\",\"com.docker.compose.project=coffee\"]}&size=false";

#[tokio::test]
async fn the_docker_orchestrator_lists_kills_restarts_and_starts_containers_by_label() {
    let engine = engine();
    let endpoint = fake_docker::serve(engine.clone()).await;
    let docker = DockerOrchestrator::connect(&endpoint, Some("coffee".into())).unwrap();

    let nodes = docker.nodes().await.unwrap();
    let state = |name: &str, state, detail: &str| NodeState {
        name: name.into(),
        state,
        detail: detail.into(),
        pid: None,
        restarts: None,
        refused: None,
    };
    assert_eq!(
        nodes,
        [
            state("gateway", RunState::Running, "running (fake)"),
            state("monitor-0", RunState::Starting, "restarting (fake)"),
            state("tx_filter-0", RunState::Stopped, "exited (fake)"),
            state("tx_filter-1", RunState::Running, "running (fake)"),
        ],
        "the broker, the console, the one-off container and the other project's are not nodes"
    );
    docker.kill("tx_filter-1").await.unwrap();
    docker.restart("gateway").await.unwrap();
    docker.start("tx_filter-0").await.unwrap();
    let err = docker.kill("q4_top-0").await.unwrap_err();
    assert!(err.to_string().contains("no container runs node q4_top-0"), "{err}");
    let err = docker.kill("rabbitmq").await.unwrap_err();
    assert!(err.to_string().contains("no container runs node rabbitmq"), "{err}");

    assert_eq!(
        engine.requests(),
        [
            LIST,
            LIST,
            "POST /containers/tx1/kill signal=SIGKILL",
            LIST,
            "POST /containers/gw1/restart t=0",
            LIST,
            "POST /containers/tx0/start",
            LIST,
            LIST,
        ]
    );
    let states: Vec<RunState> = docker.nodes().await.unwrap().into_iter().map(|n| n.state).collect();
    assert_eq!(states, [RunState::Running, RunState::Starting, RunState::Running, RunState::Stopped]);
}

#[tokio::test]
async fn the_docker_orchestrator_takes_its_project_from_its_own_container() {
    let engine = engine();
    let endpoint = fake_docker::serve(engine.clone()).await;

    let mut docker = DockerOrchestrator::connect(&endpoint, None).unwrap();
    docker.detect_project("mon0").await;
    assert_eq!(docker.project(), Some("coffee"));
    assert_eq!(docker.nodes().await.unwrap().len(), 4);
    assert_eq!(engine.requests(), ["GET /containers/mon0/json", LIST]);

    // Outside compose (no such container) the nodes of every project are candidates.
    engine.requests.lock().unwrap().clear();
    let mut docker = DockerOrchestrator::connect(&endpoint, None).unwrap();
    docker.detect_project("my-laptop").await;
    assert_eq!(docker.project(), None);
    let names: Vec<String> = docker.nodes().await.unwrap().into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["gateway", "gateway", "monitor-0", "tx_filter-0", "tx_filter-1"]);
    assert_eq!(
        engine.requests(),
        [
            "GET /containers/my-laptop/json",
            "GET /containers/json all=true&filters={\"label\":[\"coffee.node\"]}&size=false",
        ]
    );
}

/// Classic queues on several brokers are refused by every role that reaches the broker, at start, naming the
/// way out: RabbitMQ drops what is published to a classic queue whose home node is down, and still confirms it
/// (seen on 3.10 with a three-node cluster). No broker answers these URLs: the refusal comes first.
#[test]
fn every_role_refuses_classic_queues_on_several_brokers() {
    let urls = "amqp://127.0.0.1:1/%2f,amqp://127.0.0.1:2/%2f,amqp://127.0.0.1:3/%2f";
    let roles: [&[&str]; 4] =
        [&["worker", "--stage", "q3_agg", "--replica", "0"], &["gateway"], &["monitor"], &["cluster", "up"]];
    for role in roles {
        let output = std::process::Command::new(coffee_tests::harness::node_binary())
            .args(role)
            .env("AMQP_URL", urls)
            .env("COFFEE_NAMESPACE", coffee_tests::harness::unique_namespace("classic-refused"))
            .output()
            .expect("coffee-node runs");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{role:?} started");
        assert!(said.contains("3 brokers need quorum queues"), "{role:?}: {said}");
    }
}
