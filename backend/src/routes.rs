//! The HTTP API (`/api/...`, JSON) and the static frontend.

use crate::datasets;
use crate::events::KillCause;
use crate::nodes::RescaleError;
use crate::sessions::{self, Launch, SessionState, MAX_LAUNCH};
use crate::uploads;
use crate::AppState;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use coffee_engine::topology::Topology;
use coffee_model::node::StageKind;
use coffee_types::{ChaosFaults, CompareResponse, Launched, StatusView};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;
use tower_http::services::{ServeDir, ServeFile};
use uuid::Uuid;

/// An error answered as `{"error": "..."}` with a status.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(message: impl ToString) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.to_string())
}
fn not_found(message: impl ToString) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, message.to_string())
}
fn conflict(message: impl ToString) -> ApiError {
    ApiError(StatusCode::CONFLICT, message.to_string())
}
fn unavailable(message: impl ToString) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, message.to_string())
}
fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The most replicas of one stage the page may ask for: every replica is a process on this machine.
pub const MAX_RESCALE_REPLICAS: usize = 8;

fn ok(value: impl serde::Serialize) -> ApiResult {
    Ok(Json(serde_json::to_value(value).map_err(internal)?))
}

/// The whole app: the API under `/api`, anything else from the frontend build (client-side routes fall back
/// to `index.html`).
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.uploads.max_total_mib.saturating_mul(1 << 20).saturating_add(1 << 20);
    let api = Router::new()
        .route("/status", get(status))
        .route("/cluster/retry", post(retry))
        .route("/topology", get(topology).post(rescale))
        .route("/flow", get(flow))
        .route("/datasets", get(list_datasets))
        .route("/datasets/generate", post(generate))
        .route(
            "/datasets/upload",
            // The whole body is bounded here (as it streams, with room for the multipart framing); each file and
            // the files' total are bounded again while they stream to disk.
            post(upload).layer(DefaultBodyLimit::max(usize::try_from(body_limit).unwrap_or(usize::MAX))),
        )
        .route("/sessions", get(list_sessions).post(launch))
        .route("/sessions/{id}", get(session))
        .route("/sessions/{id}/results", get(session_results))
        .route("/sessions/{id}/ndjson", get(download))
        .route("/compare", get(compare))
        .route("/nodes", get(nodes))
        .route("/nodes/kill-random", post(kill_random))
        .route("/nodes/{name}/kill", post(kill))
        .route("/nodes/{name}/restart", post(restart))
        .route("/nodes/{name}/pause", post(pause))
        .route("/dead-letters", get(list_dead_letters))
        .route("/dead-letters/purge", post(purge_dead_letters))
        .route("/dead-letters/{id}/drop", post(drop_dead_letter))
        .route("/dead-letters/{id}/requeue", post(requeue_dead_letter))
        .route("/chaos", get(chaos))
        .route("/chaos/start", post(chaos_start))
        .route("/chaos/stop", post(chaos_stop))
        .route("/events", get(crate::events::websocket))
        .fallback(|| async { not_found("no such API route") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::guard));
    // Prometheus's usual path, outside `/api`, behind the same token (a scraper sends it as a bearer token).
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::guard));
    let dir = state.config.static_dir.clone();
    // The build writes a gzipped copy of each file: sent to browsers that accept gzip (the wasm: 0.29 MB
    // instead of 0.76 MB).
    let index = ServeFile::new(dir.join("index.html")).precompressed_gzip();
    let frontend = ServeDir::new(&dir).precompressed_gzip().not_found_service(index);
    Router::new()
        .nest("/api", api)
        .merge(metrics)
        .fallback_service(frontend)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn status(State(state): State<AppState>) -> ApiResult {
    let spec = state.nodes.spec();
    let frontend_built = state.config.static_dir.join("index.html").is_file();
    ok(StatusView {
        cluster: state.nodes.cluster_state(),
        orchestrator: state.nodes.orchestrator(),
        namespace: spec.topology.namespace.clone(),
        gateway: spec.gateway_addr.clone(),
        replicas: spec.topology.replicas_spec(),
        amqp_url: coffee_engine::amqp::redacted(&spec.amqp_url),
        coffee_bin: spec.exe.display().to_string(),
        frontend_built,
        chaos: state.nodes.chaos_view(),
        dead_letters: state.queues.dead_letters(),
        rescalable: state.nodes.rescalable(),
        broker_blocked: state.broker_block.blocked(),
    })
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], crate::metrics::render(&state).await).into_response()
}

async fn flow(State(state): State<AppState>) -> ApiResult {
    ok(state.flow.view())
}

async fn retry(State(state): State<AppState>) -> ApiResult {
    state.nodes.start().await.map_err(unavailable)?;
    ok(state.nodes.cluster_state())
}

/// Stages with their replicas and the streams between them (and the gateway), for the topology graph.
async fn topology(State(state): State<AppState>) -> ApiResult {
    ok(crate::nodes::topology_view(&state.nodes.spec().topology))
}

#[derive(Deserialize)]
struct RescaleRequest {
    /// Replicas per stage, as `--replicas` takes them (`tx_filter=3,q4_count=1`; a stage not named gets the
    /// default).
    replicas: String,
}

/// Restarts the console's own cluster with other replicas, between runs: refused while a session runs or is
/// being launched, while the chaos monkey runs, and for a compose project's containers.
async fn rescale(State(state): State<AppState>, Json(request): Json<RescaleRequest>) -> ApiResult {
    let spec = state.nodes.spec();
    let mut topology = Topology::with_replicas(&spec.topology.namespace, &request.replicas).map_err(bad_request)?;
    topology.queue_type = spec.topology.queue_type;
    if let Some((stage, replicas)) =
        StageKind::ALL.iter().map(|&s| (s, topology.replicas(s))).find(|&(_, n)| usize::from(n) > MAX_RESCALE_REPLICAS)
    {
        return Err(bad_request(format!(
            "{replicas} replicas of {stage}: the console runs at most {MAX_RESCALE_REPLICAS} per stage (each is a \
             process on this machine)"
        )));
    }
    // No launch may start while the cluster changes shape, nor the change begin while one is under way.
    let _launches = state.launches.try_write().map_err(|_| conflict("a session is being launched"))?;
    let running = state.sessions.running();
    if running > 0 {
        return Err(conflict(format!("{running} session(s) running: rescale between runs")));
    }
    // Sessions the console did not launch (a client on the gateway's port) or no longer counts (waiting for
    // their client to resume) live in the nodes too: a rescale would wipe them.
    let holding = state.nodes.holding_sessions(std::time::Instant::now()).await;
    if let Some((node, held)) = holding.iter().max_by_key(|(_, held)| *held) {
        return Err(conflict(format!(
            "{node} holds {held} session(s) (a client of the gateway's own, or one waiting to resume): rescale once \
             they end"
        )));
    }
    match state.nodes.rescale(topology).await {
        Ok(()) => ok(crate::nodes::topology_view(&state.nodes.spec().topology)),
        Err(e @ RescaleError::Start(_)) => Err(unavailable(e)),
        Err(e) => Err(conflict(e)),
    }
}

async fn list_datasets(State(state): State<AppState>) -> ApiResult {
    let dir = state.config.data_dir.clone();
    ok(tokio::task::spawn_blocking(move || datasets::list(&dir)).await.map_err(internal)?)
}

#[derive(Deserialize)]
struct GenerateRequest {
    scale: String,
}

async fn generate(State(state): State<AppState>, Json(request): Json<GenerateRequest>) -> ApiResult {
    if !matches!(request.scale.as_str(), "tiny" | "reduced") {
        return Err(bad_request("scale must be `tiny` or `reduced`"));
    }
    let dir = state.config.data_dir.clone();
    // One generation at a time: two requests for the same scale would write the same files.
    let _guard = state.generating.lock().await;
    let view = tokio::task::spawn_blocking(move || datasets::generate(&dir, &request.scale))
        .await
        .map_err(internal)?
        .map_err(|e| internal(format!("{e:#}")))?;
    state.events.send(crate::events::Event::DatasetReady { id: view.id.clone() });
    ok(view)
}

async fn upload(State(state): State<AppState>, multipart: Multipart) -> ApiResult {
    let view = uploads::receive(&state.config.data_dir, state.config.uploads, multipart)
        .await
        .map_err(|e| ApiError(e.status, e.message))?;
    state.events.send(crate::events::Event::DatasetReady { id: view.id.clone() });
    ok(view)
}

async fn list_sessions(State(state): State<AppState>) -> ApiResult {
    ok(state.sessions.list())
}

#[derive(Deserialize)]
struct LaunchRequest {
    dataset: String,
    #[serde(default = "one")]
    count: usize,
}

fn one() -> usize {
    1
}

/// Launches `count` sessions on a dataset at once; answers with their ids once the gateway welcomed them.
async fn launch(State(state): State<AppState>, Json(request): Json<LaunchRequest>) -> ApiResult {
    if !(1..=MAX_LAUNCH).contains(&request.count) {
        return Err(bad_request(format!("count must be between 1 and {MAX_LAUNCH}")));
    }
    let data_dir = datasets::resolve(&state.config.data_dir, &request.dataset)
        .ok_or_else(|| not_found(format!("no dataset `{}`", request.dataset)))?;
    // Held until the sessions are welcomed (registered as running): a rescale waits for none of them.
    let _launches = state.launches.try_read().map_err(|_| conflict("the cluster is being rescaled"))?;
    let cluster = state.nodes.cluster_state();
    if !cluster.is_up() {
        return Err(unavailable(cluster.error.unwrap_or_else(|| format!("the cluster is {}", cluster.state))));
    }
    let (root, id) = (state.config.data_dir.clone(), request.dataset.clone());
    let dataset = tokio::task::spawn_blocking(move || datasets::view(&root, &id))
        .await
        .map_err(internal)?
        .ok_or_else(|| not_found(format!("no dataset `{}`", request.dataset)))?;
    let launches = (0..request.count).map(|_| {
        let launch = Launch {
            gateway: state.nodes.spec().gateway_addr.clone(),
            data_dir: data_dir.clone(),
            dataset: request.dataset.clone(),
            dataset_name: dataset.name.clone(),
            rows_total: dataset.rows,
            out_dir: state.config.results_dir(),
            nodes: state.nodes.clone(),
            history: state.history.clone(),
        };
        sessions::launch(state.sessions.clone(), state.events.clone(), launch)
    });
    let ids: Vec<Uuid> = futures::future::try_join_all(launches).await.map_err(|e| unavailable(format!("{e:#}")))?;
    ok(Launched { sessions: ids })
}

fn session_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| not_found("no such session"))
}

async fn session(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    ok(state.sessions.get(session_id(&id)?).ok_or_else(|| not_found("no such session"))?)
}

async fn session_results(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    ok(state.sessions.results(session_id(&id)?).ok_or_else(|| not_found("no such session"))?)
}

/// `client-<id>.ndjson` of a finished session, as a download.
async fn download(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let (session_state, path) = state.sessions.output(id).ok_or_else(|| not_found("no such session"))?;
    if session_state != SessionState::Done {
        return Err(ApiError(StatusCode::CONFLICT, "the session has not finished".into()));
    }
    let body = tokio::fs::read(&path).await.map_err(|e| internal(format!("{}: {e}", path.display())))?;
    let disposition = format!("attachment; filename=\"client-{id}.ndjson\"");
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson".to_owned()), (header::CONTENT_DISPOSITION, disposition)], body)
        .into_response())
}

#[derive(Deserialize)]
struct CompareQuery {
    left: String,
    right: String,
}

/// Compares two finished sessions' results per query (`coffee_tools::compare`).
async fn compare(State(state): State<AppState>, Query(query): Query<CompareQuery>) -> ApiResult {
    let (left, right) = (session_id(&query.left)?, session_id(&query.right)?);
    let mut paths = Vec::new();
    for id in [left, right] {
        let (session_state, path) = state.sessions.output(id).ok_or_else(|| not_found(format!("no session {id}")))?;
        if session_state != SessionState::Done {
            return Err(ApiError(StatusCode::CONFLICT, format!("session {id} has not finished")));
        }
        paths.push(path);
    }
    let (left_path, right_path) = (paths[0].clone(), paths[1].clone());
    let comparison = tokio::task::spawn_blocking(move || coffee_tools::compare::compare_files(&left_path, &right_path))
        .await
        .map_err(internal)?
        .map_err(|e| internal(format!("{e:#}")))?;
    ok(CompareResponse { left, right, comparison })
}

async fn nodes(State(state): State<AppState>) -> ApiResult {
    ok(state.nodes.status().await)
}

async fn kill(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
    ok(state.nodes.kill(&name, KillCause::User).await.map_err(not_found)?)
}

async fn restart(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
    ok(state.nodes.restart(&name).await.map_err(not_found)?)
}

#[derive(Deserialize, Default)]
struct PauseRequest {
    /// How long the node stays stopped (default 5 s, at most 120 s).
    ms: Option<u64>,
}

async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Option<Json<PauseRequest>>,
) -> ApiResult {
    let Json(request) = request.unwrap_or_default();
    let length = request.ms.map_or(crate::nodes::DEFAULT_PAUSE, Duration::from_millis);
    ok(state.nodes.pause(&name, length, KillCause::User).await.map_err(|e| not_found(format!("{e:#}")))?)
}

async fn kill_random(State(state): State<AppState>) -> ApiResult {
    ok(state.nodes.kill_random(KillCause::Random).await.map_err(unavailable)?)
}

async fn list_dead_letters(State(state): State<AppState>) -> ApiResult {
    let spec = state.nodes.spec();
    ok(state
        .queues
        .list_dead_letters(&spec.amqp_url, &spec.topology)
        .await
        .map_err(|e| unavailable(format!("{e:#}")))?)
}

async fn drop_dead_letter(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    act_on_dead_letter(&state, &id, coffee_engine::dead_letters::Action::Drop).await
}

#[derive(Deserialize, Default)]
struct RequeueRequest {
    #[serde(default)]
    confirm: bool,
}

/// Sends a dead letter back to the queue it came from: only when confirmed, since poison comes back.
async fn requeue_dead_letter(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(request): Json<RequeueRequest>,
) -> ApiResult {
    if !request.confirm {
        return Err(bad_request(
            "requeueing sends the message back to the stage that set it aside (poison comes back): confirm with \
             {\"confirm\": true}",
        ));
    }
    act_on_dead_letter(&state, &id, coffee_engine::dead_letters::Action::Requeue).await
}

async fn act_on_dead_letter(state: &AppState, id: &str, action: coffee_engine::dead_letters::Action) -> ApiResult {
    let spec = state.nodes.spec();
    use coffee_engine::dead_letters::Outcome;
    let done = state.queues.act_on_dead_letter(&spec.amqp_url, &spec.topology, id, action).await;
    match done.map_err(|e| unavailable(format!("{e:#}")))? {
        Outcome::Done(letter) => ok(letter),
        Outcome::NoOrigin(_) => Err(ApiError(
            StatusCode::CONFLICT,
            format!("dead letter {id} does not say which queue it came from: it cannot be requeued"),
        )),
        Outcome::ForeignOrigin(letter) => Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "dead letter {id} names `{}` as where it came from, which is no stage's input queue of this \
                 cluster: it is not requeued there",
                letter.from
            ),
        )),
        Outcome::NotFound => Err(not_found(format!("no dead letter {id}"))),
    }
}

async fn purge_dead_letters(State(state): State<AppState>) -> ApiResult {
    let spec = state.nodes.spec();
    let purged = state
        .queues
        .purge_dead_letters(&spec.amqp_url, &spec.topology)
        .await
        .map_err(|e| unavailable(format!("{e:#}")))?;
    ok(json!({ "purged": purged }))
}

async fn chaos(State(state): State<AppState>) -> ApiResult {
    ok(state.nodes.chaos_view())
}

#[derive(Deserialize)]
struct ChaosRequest {
    interval_ms: u64,
    /// `kill` (the default), `pause` or `both`.
    #[serde(default)]
    faults: ChaosFaults,
}

async fn chaos_start(State(state): State<AppState>, Json(request): Json<ChaosRequest>) -> ApiResult {
    ok(state.nodes.start_chaos(Duration::from_millis(request.interval_ms), request.faults))
}

async fn chaos_stop(State(state): State<AppState>) -> ApiResult {
    ok(state.nodes.stop_chaos())
}
