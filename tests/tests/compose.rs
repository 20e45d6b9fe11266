//! Containers, checked without a Docker engine (none runs here): the committed `docker-compose-dev.yaml` is what
//! `coffee compose` generates, it validates against the Compose specification's JSON schema, and it runs every
//! node with the command the local launcher uses; the Docker orchestrator's Engine API calls are checked
//! against a fake engine on loopback that records them.

use coffee::cluster::ClusterSpec;
use coffee::compose::{self, ComposeOptions};
use coffee::topology::Topology;
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
    compose::run_cli("", Some(&dir.path().join("out.yaml"))).unwrap();
    assert_eq!(std::fs::read_to_string(dir.path().join("out.yaml")).unwrap(), generated);
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
    let topology = Topology::with_replicas("coffee", "all=1,q4_count=3").unwrap();
    let file: Value =
        serde_norway::from_str(&compose::generate(&topology, &ComposeOptions::default())).expect("parses");
    let services = file["services"].as_object().unwrap();
    let stages: Vec<&String> = services.keys().filter(|n| n.contains("-agg-") || n.contains("-filter-")).collect();
    assert_eq!(stages.len(), 4);
    assert!(["q4-count-0", "q4-count-1", "q4-count-2", "q4-top-0"].iter().all(|n| services.contains_key(*n)));
    assert!(!services.contains_key("q4-top-1"));
    assert_eq!(schema_errors(&file), Vec::<String>::new());
}

/// A fake Docker Engine on loopback: it records every request and answers the few the orchestrator makes as the
/// engine does (label filters included).
mod fake_engine {
    use axum::extract::{Query, State};
    use axum::http::{Method, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use axum::Json;
    use serde_json::{json, Value};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    pub struct Engine {
        pub containers: Vec<Value>,
        pub requests: Arc<Mutex<Vec<String>>>,
    }

    /// `com.docker.compose.*` labels of a compose container; `node` adds our `coffee.node` label.
    pub fn container(id: &str, project: &str, service: &str, node: Option<&str>, state: &str) -> Value {
        let mut labels = json!({"com.docker.compose.project": project, "com.docker.compose.service": service});
        if let Some(node) = node {
            labels["coffee.node"] = json!(node);
        }
        json!({"Id": id, "Names": [format!("/{project}-{service}-1")], "Labels": labels, "State": state,
               "Status": format!("{state} (fake)")})
    }

    /// Serves `engine` on an ephemeral loopback port; returns its `tcp://` address.
    pub async fn serve(engine: Engine) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(answer).with_state(engine);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("tcp://{addr}")
    }

    async fn answer(
        State(engine): State<Engine>,
        method: Method,
        uri: Uri,
        Query(query): Query<Vec<(String, String)>>,
    ) -> Response {
        // Recorded with the query decoded, in a stable order, so assertions read like the API's documentation.
        let mut pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.sort();
        engine.requests.lock().unwrap().push(format!("{method} {} {}", uri.path(), pairs.join("&")).trim().into());
        // The engine serves `/v1.NN/...` and unversioned paths alike (bollard 0.21 sends the latter).
        let mut segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
        if segments.first().is_some_and(|s| s.starts_with("v1.")) {
            segments.remove(0);
        }
        let find = |id: &str| engine.containers.iter().find(|c| c["Id"] == id).cloned();
        match (method, segments.as_slice()) {
            (Method::GET, ["containers", "json"]) => {
                let filters: Value = query
                    .iter()
                    .find(|(k, _)| k == "filters")
                    .map_or(json!({}), |(_, v)| serde_json::from_str(v).expect("filters are JSON"));
                let wanted: Vec<&str> =
                    filters["label"].as_array().map_or(vec![], |l| l.iter().filter_map(Value::as_str).collect());
                let listed: Vec<Value> =
                    engine.containers.iter().filter(|c| wanted.iter().all(|w| has_label(c, w))).cloned().collect();
                Json(listed).into_response()
            }
            (Method::GET, ["containers", id, "json"]) => match find(id) {
                Some(c) => Json(json!({"Id": c["Id"], "Config": {"Labels": c["Labels"]}})).into_response(),
                None => no_such_container(id),
            },
            (Method::POST, ["containers", id, "kill" | "restart" | "start"]) => match find(id) {
                Some(_) => StatusCode::NO_CONTENT.into_response(),
                None => no_such_container(id),
            },
            _ => (StatusCode::NOT_FOUND, Json(json!({"message": format!("page not found: {uri}")}))).into_response(),
        }
    }

    /// Docker's label filter: `key` (present) or `key=value`.
    fn has_label(container: &Value, filter: &str) -> bool {
        let labels = &container["Labels"];
        match filter.split_once('=') {
            Some((key, value)) => labels[key] == value,
            None => labels.get(filter).is_some(),
        }
    }

    fn no_such_container(id: &str) -> Response {
        (StatusCode::NOT_FOUND, Json(json!({"message": format!("No such container: {id}")}))).into_response()
    }
}

use coffee::docker::DockerOrchestrator;
use coffee::orchestrator::{NodeState, Orchestrator, RunState};
use fake_engine::{container, Engine};

fn engine() -> Engine {
    let mut oneoff = container("run1", "coffee", "gateway", Some("gateway"), "running");
    oneoff["Labels"]["com.docker.compose.oneoff"] = json!("True");
    Engine {
        containers: vec![
            container("gw1", "coffee", "gateway", Some("gateway"), "running"),
            container("tx0", "coffee", "tx-filter-0", Some("tx_filter-0"), "exited"),
            container("mon0", "coffee", "monitor-0", Some("monitor-0"), "restarting"),
            // Made from another compose file: no `coffee.node` label, named after its service.
            container("tx1", "coffee", "tx-filter-1", None, "running"),
            oneoff,
            container("other-gw", "other", "gateway", Some("gateway"), "running"),
        ],
        requests: Default::default(),
    }
}

const LIST: &str =
    "GET /containers/json all=true&filters={\"label\":[\"com.docker.compose.project=coffee\"]}&size=false";

#[tokio::test]
async fn the_docker_orchestrator_lists_kills_restarts_and_starts_containers_by_label() {
    let engine = engine();
    let requests = engine.requests.clone();
    let endpoint = fake_engine::serve(engine).await;
    let docker = DockerOrchestrator::connect(&endpoint, Some("coffee".into())).unwrap();

    let nodes = docker.nodes().await.unwrap();
    let state = |name: &str, state, detail: &str| NodeState { name: name.into(), state, detail: detail.into() };
    assert_eq!(
        nodes,
        [
            state("gateway", RunState::Running, "running (fake)"),
            state("monitor-0", RunState::Starting, "restarting (fake)"),
            state("tx_filter-0", RunState::Stopped, "exited (fake)"),
            state("tx_filter-1", RunState::Running, "running (fake)"),
        ],
        "the one-off container and the other project's are not nodes"
    );
    docker.kill("tx_filter-0").await.unwrap();
    docker.restart("gateway").await.unwrap();
    docker.start("tx_filter-0").await.unwrap();
    docker.kill("tx_filter-1").await.unwrap(); // by its compose service name
    let err = docker.kill("q4_top-0").await.unwrap_err();
    assert!(err.to_string().contains("no container runs node q4_top-0"), "{err}");

    assert_eq!(
        *requests.lock().unwrap(),
        [
            LIST,
            LIST,
            "POST /containers/tx0/kill signal=SIGKILL",
            LIST,
            "POST /containers/gw1/restart t=0",
            LIST,
            "POST /containers/tx0/start",
            LIST,
            "POST /containers/tx1/kill signal=SIGKILL",
            LIST,
        ]
    );
}

#[tokio::test]
async fn the_docker_orchestrator_takes_its_project_from_its_own_container() {
    let engine = engine();
    let requests = engine.requests.clone();
    let endpoint = fake_engine::serve(engine).await;

    let mut docker = DockerOrchestrator::connect(&endpoint, None).unwrap();
    docker.detect_project("mon0").await;
    assert_eq!(docker.project(), Some("coffee"));
    assert_eq!(docker.nodes().await.unwrap().len(), 4);
    assert_eq!(*requests.lock().unwrap(), ["GET /containers/mon0/json", LIST]);

    // Outside compose (no such container) every compose service is a candidate, whatever its project.
    requests.lock().unwrap().clear();
    let mut docker = DockerOrchestrator::connect(&endpoint, None).unwrap();
    docker.detect_project("my-laptop").await;
    assert_eq!(docker.project(), None);
    let names: Vec<String> = docker.nodes().await.unwrap().into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["gateway", "gateway", "monitor-0", "tx_filter-0", "tx_filter-1"]);
    assert_eq!(
        *requests.lock().unwrap(),
        [
            "GET /containers/my-laptop/json",
            "GET /containers/json all=true&filters={\"label\":[\"com.docker.compose.service\"]}&size=false",
        ]
    );
}
