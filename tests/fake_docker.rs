//! A fake Docker Engine on loopback for the Docker orchestrator's tests (no engine runs on our machines). It
//! records every request and answers the few the orchestrator makes as the engine does: the container list with
//! its label filters, inspect, kill, restart and start. It keeps each container's state, so a kill shows as
//! `exited` in the next list and a restart or start as `running`. A [`Hook`] can make the containers real
//! (see `compose_up`, which runs each one as a local process).

use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// Called with a container's id and `kill`, `restart` or `start` before its state changes; an error is
/// answered as the engine's 500.
pub type Hook = Arc<dyn Fn(&str, &str) -> Result<(), String> + Send + Sync>;

#[derive(Clone, Default)]
pub struct Engine {
    pub containers: Arc<Mutex<Vec<Value>>>,
    pub requests: Arc<Mutex<Vec<String>>>,
    pub hook: Option<Hook>,
}

impl Engine {
    pub fn new(containers: Vec<Value>) -> Engine {
        Engine { containers: Arc::new(Mutex::new(containers)), ..Engine::default() }
    }

    /// Sets the state (and status) of container `id`.
    pub fn set_state(&self, id: &str, state: &str) {
        let mut containers = self.containers.lock().expect("lock");
        if let Some(c) = containers.iter_mut().find(|c| c["Id"] == id) {
            c["State"] = json!(state);
            c["Status"] = json!(format!("{state} (fake)"));
        }
    }

    /// The requests so far, as `METHOD /path sorted&decoded=query`.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }

    /// The requests so far that changed a container (kill, restart, start).
    pub fn actions(&self) -> Vec<String> {
        self.requests().into_iter().filter(|r| r.starts_with("POST ")).collect()
    }

    /// The state of the container with this id (`running`, `exited` ...).
    pub fn state_of(&self, id: &str) -> Option<String> {
        let containers = self.containers.lock().expect("lock");
        containers.iter().find(|c| c["Id"] == id).and_then(|c| c["State"].as_str().map(str::to_owned))
    }
}

/// A container of compose project `project`; `node` adds our `coffee.node` label (a node), `None` leaves it out
/// (the broker, the console).
pub fn container(id: &str, project: &str, service: &str, node: Option<&str>, state: &str) -> Value {
    let mut labels = json!({"com.docker.compose.project": project, "com.docker.compose.service": service});
    if let Some(node) = node {
        labels["coffee.node"] = json!(node);
    }
    json!({"Id": id, "Names": [format!("/{project}-{service}-1")], "Labels": labels, "State": state,
           "Status": format!("{state} (fake)")})
}

/// Serves `engine` on an ephemeral loopback port until the runtime ends; returns its `tcp://` address.
pub async fn serve(engine: Engine) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    serve_on(listener, engine);
    format!("tcp://{addr}")
}

/// Serves `engine` on `listener` until the runtime ends.
pub fn serve_on(listener: tokio::net::TcpListener, engine: Engine) {
    let app = axum::Router::new().fallback(answer).with_state(engine);
    tokio::spawn(async move { axum::serve(listener, app).await });
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
    engine.requests.lock().expect("lock").push(format!("{method} {} {}", uri.path(), pairs.join("&")).trim().into());
    // The engine serves `/v1.NN/...` and unversioned paths alike (bollard 0.21 sends the latter).
    let mut segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    if segments.first().is_some_and(|s| s.starts_with("v1.")) {
        segments.remove(0);
    }
    if let (&Method::POST, ["containers", id, action @ ("kill" | "restart" | "start")]) = (&method, segments.as_slice())
    {
        let known = engine.containers.lock().expect("lock").iter().any(|c| c["Id"] == *id);
        if let Some(hook) = engine.hook.as_ref().filter(|_| known) {
            if let Err(message) = hook(id, action) {
                return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "message": message }))).into_response();
            }
        }
    }
    let mut containers = engine.containers.lock().expect("lock");
    let found = |id: &str| containers.iter().position(|c| c["Id"] == id);
    match (method, segments.as_slice()) {
        (Method::GET, ["containers", "json"]) => {
            let filters: Value = query
                .iter()
                .find(|(k, _)| k == "filters")
                .map_or(json!({}), |(_, v)| serde_json::from_str(v).expect("filters are JSON"));
            let wanted: Vec<&str> =
                filters["label"].as_array().map_or(vec![], |l| l.iter().filter_map(Value::as_str).collect());
            let listed: Vec<Value> =
                containers.iter().filter(|c| wanted.iter().all(|w| has_label(c, w))).cloned().collect();
            Json(listed).into_response()
        }
        (Method::GET, ["containers", id, "json"]) => match found(id) {
            Some(i) => {
                let c = &containers[i];
                Json(json!({"Id": c["Id"], "Config": {"Labels": c["Labels"]}})).into_response()
            }
            None => no_such_container(id),
        },
        (Method::POST, ["containers", id, action @ ("kill" | "restart" | "start")]) => match found(id) {
            Some(i) => {
                let state = if *action == "kill" { "exited" } else { "running" };
                containers[i]["State"] = json!(state);
                containers[i]["Status"] = json!(format!("{state} (fake)"));
                StatusCode::NO_CONTENT.into_response()
            }
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
