//! The web console: an axum control plane that starts and supervises a local cluster (or drives the containers
//! of a compose project), runs client sessions with the client library, streams events over one WebSocket, and
//! serves the Leptos frontend.
//!
//! Modules: [`config`] (command line), [`routes`] (HTTP API), [`events`] (the WebSocket stream), [`nodes`] (the
//! cluster, kills, restarts, chaos), [`queues`] (every queue counted, dead letters among them), [`metrics`]
//! (`/metrics`), [`flow`] (backpressure and rates), [`sessions`] (client sessions), [`history`] (ended sessions
//! kept on disk), [`datasets`] and [`uploads`] (the data folder), [`auth`] (the token and Origin checks in front
//! of the API).

pub mod auth;
pub mod broker_block;
pub mod config;
pub mod datasets;
pub mod events;
pub mod flow;
pub mod history;
pub mod metrics;
pub mod nodes;
pub mod queues;
pub mod routes;
pub mod sessions;
pub mod uploads;

pub use config::{Config, UploadLimits};

use coffee_engine::topology::Topology;
use coffee_ops::cluster::{ClusterSpec, StartOptions};
use coffee_ops::orchestration::OrchestratorKind;
use coffee_ops::orchestrator::Orchestrator;
use std::sync::Arc;
use tracing::{info, warn};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub nodes: Arc<nodes::Nodes>,
    pub sessions: Arc<sessions::Sessions>,
    pub events: events::Events,
    /// Held while a dataset is generated.
    pub generating: Arc<tokio::sync::Mutex<()>>,
    /// The token the API and the event stream require, if any (see [`Config::effective_token`]).
    pub token: Option<Arc<str>>,
    /// The host names the API answers for (see [`Config::served_hosts`]).
    pub hosts: Arc<config::ServedHosts>,
    pub queues: queues::Queues,
    /// Whether the broker blocks publishers now.
    pub broker_block: broker_block::BrokerBlock,
    pub history: Arc<history::History>,
    pub flow: flow::Flow,
    /// Read-held by a launch until its sessions run, write-held by a rescale: one never starts during the other.
    pub launches: Arc<tokio::sync::RwLock<()>>,
}

/// A started console: its router (serve it on any listener) and its background supervisor.
pub struct App {
    pub router: axum::Router,
    pub state: AppState,
    supervisor: tokio::task::JoinHandle<()>,
    queue_counter: tokio::task::JoinHandle<()>,
    block_watcher: tokio::task::JoinHandle<()>,
    flow_watcher: tokio::task::JoinHandle<()>,
}

impl App {
    /// Prepares the data folder and starts the cluster (or, with `--orchestrator docker`, finds the compose
    /// project's containers). A cluster that cannot start (RabbitMQ or the engine down) is not an error: the page
    /// shows why, and the supervisor retries.
    pub async fn start(config: Config) -> anyhow::Result<App> {
        for dir in ["uploads", "generated", "results"] {
            std::fs::create_dir_all(config.data_dir.join(dir))?;
        }
        let mut topology = Topology::with_replicas(&config.namespace, &config.replicas)?;
        let brokers = coffee_engine::amqp::broker_urls(&config.amqp_url).len();
        coffee_engine::amqp::check_queue_type(brokers, config.queue_type).map_err(anyhow::Error::msg)?;
        topology.queue_type = config.queue_type;
        let spec = ClusterSpec {
            topology,
            gateway_addr: config.gateway.clone(),
            amqp_url: config.amqp_url.clone(),
            exe: config.coffee_exe(),
        };
        let events = events::Events::default();
        let nodes = match config.orchestrator.orchestrator {
            OrchestratorKind::Local => {
                if !spec.exe.is_file() {
                    warn!(exe = %spec.exe.display(), "the coffee binary is missing: build it or pass --coffee-bin");
                }
                let options = StartOptions { monitors: config.monitors, ..StartOptions::default() };
                let local = Arc::new(nodes::local::Local::new(spec.clone(), options));
                nodes::Nodes::local(spec, local, events.clone())
            }
            OrchestratorKind::Docker => {
                let docker: Arc<dyn Orchestrator> = Arc::new(config.orchestrator.docker().await?);
                nodes::Nodes::new(spec, docker, events.clone())
            }
        };
        if let Err(e) = nodes.start().await {
            warn!(error = %format!("{e:#}"), "serving without a cluster for now; retrying in the background");
        }
        let supervisor = tokio::spawn(nodes.clone().run());
        let queues = queues::Queues::default();
        let counting = queues.clone().watch(nodes.clone(), events.clone());
        let queue_counter = tokio::spawn(counting);
        let broker_block = broker_block::BrokerBlock::default();
        let block_watcher = tokio::spawn(broker_block.clone().watch(nodes.clone(), events.clone()));
        let flow = flow::Flow::default();
        let flow_watcher = tokio::spawn(flow.clone().watch(nodes.clone(), queues.clone(), events.clone()));
        let token = config.effective_token().map(Arc::from);
        let history = Arc::new(history::History::open(&config.data_dir, config.history_max)?);
        let sessions = Arc::new(sessions::Sessions::default());
        let kept = history.load();
        info!(sessions = kept.len(), "run history restored");
        // A session done but never checked (the console stopped during its check) is checked now.
        let unchecked: Vec<(uuid::Uuid, String)> = kept
            .iter()
            .filter(|r| r.view.state == sessions::SessionState::Done && !r.view.checked)
            .filter(|r| r.view.matches_reference.is_none())
            .map(|r| (r.view.id, r.view.dataset.clone()))
            .collect();
        kept.into_iter().for_each(|record| sessions.restore(record));
        for (id, dataset) in unchecked {
            let data = datasets::resolve(&config.data_dir, &dataset);
            let (sessions, events, history) = (sessions.clone(), events.clone(), history.clone());
            tokio::spawn(async move { sessions::check_and_keep(&sessions, &events, &history, id, data).await });
        }
        let hosts = Arc::new(config.served_hosts());
        let state = AppState {
            hosts,
            config: Arc::new(config),
            nodes,
            sessions,
            history,
            flow,
            events,
            generating: Arc::default(),
            token,
            queues,
            broker_block,
            launches: Arc::default(),
        };
        let router = routes::router(state.clone());
        Ok(App { router, state, supervisor, queue_counter, flow_watcher, block_watcher })
    }

    /// Stops the supervisor, the chaos monkey and the cluster (whose queues are deleted).
    pub async fn shutdown(self) {
        self.supervisor.abort();
        self.queue_counter.abort();
        self.block_watcher.abort();
        self.flow_watcher.abort();
        self.state.nodes.shutdown().await;
    }
}

/// Runs the console until Ctrl-C or SIGTERM, then stops the cluster.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&config.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.bind))?;
    let generated = config.token.as_deref().is_none_or(str::is_empty);
    let app = App::start(config).await?;
    let url = format!("http://{}/", listener.local_addr()?);
    match &app.state.token {
        None => info!("console at {url}"),
        // A made-up token is useless unless the user sees it: print it where a log filter cannot hide it.
        Some(token) if generated => println!("console at {url}?token={token}  (the API needs this token)"),
        Some(_) => info!("console at {url} (the API needs the token given by --token or COFFEE_CONSOLE_TOKEN)"),
    }
    axum::serve(listener, app.router.clone()).with_graceful_shutdown(coffee_ops::cluster::shutdown_signal()).await?;
    app.shutdown().await;
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
