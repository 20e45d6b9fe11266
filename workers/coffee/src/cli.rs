//! The `coffee` command line: one binary, one subcommand per role (nodes, client, tools), so local processes and
//! containers run the same code. It lives in the library so test crates can build the same binary.

use clap::{Args, Parser, Subcommand};
use coffee_engine::amqp;
use coffee_engine::client;
use coffee_engine::client::{ClientEvent, ClientOptions, ClientSummary, Observer};
use coffee_engine::gateway;
use coffee_engine::runtime::{self, ReplicaConfig};
use coffee_engine::topology::{QueueType, Topology};
use coffee_model::node::StageKind;
use coffee_ops::chaos::{self, ChaosMonkey, Targets};
use coffee_ops::cluster::{self, ClusterSpec, LocalCluster};
use coffee_ops::monitor;
use coffee_ops::orchestration::{OrchestratorArgs, OrchestratorKind};
use coffee_tools::bench;
use coffee_tools::compare;
use coffee_tools::gen;
use coffee_tools::reference;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "coffee", version, about = "Coffee Shop Analysis: a fault-tolerant distributed pipeline for Q1-Q4")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the cluster is: shared by every command that talks to it.
#[derive(Args, Clone)]
struct ClusterArgs {
    /// Replicas per stage, `STAGE=N,...` (`all=N` for every stage); 2 of each by default.
    #[arg(long, env = "COFFEE_REPLICAS", default_value = "")]
    replicas: String,
    /// Prefix of the cluster's queue names, so several clusters can share a broker.
    #[arg(long, env = "COFFEE_NAMESPACE", default_value = "coffee")]
    namespace: String,
    /// The gateway's address. A client may name several, separated by commas (the hosts a gateway may run on):
    /// it moves to the next one it cannot reach.
    #[arg(long, env = "GATEWAY_ADDR", default_value = "127.0.0.1:7070")]
    gateway: String,
    /// The RabbitMQ broker.
    #[arg(long, env = "AMQP_URL", hide_env_values = true, default_value = amqp::DEFAULT_AMQP_URL)]
    amqp_url: String,
    /// `quorum` on a RabbitMQ cluster (replicated queues); every node of a cluster must be given the same.
    #[arg(long, env = "COFFEE_QUEUE_TYPE", value_enum, default_value_t = QueueType::Classic)]
    queue_type: QueueType,
    /// Under quorum queues, deliveries of one input without an ack before the broker sets it aside in its
    /// stage's dead-letter queue (every node must agree).
    #[arg(long, env = "COFFEE_DELIVERY_LIMIT", default_value_t = coffee_engine::topology::DEFAULT_DELIVERY_LIMIT)]
    delivery_limit: u32,
}

impl ClusterArgs {
    fn topology(&self) -> anyhow::Result<Topology> {
        let mut topology = Topology::with_replicas(&self.namespace, &self.replicas)?;
        amqp::check_queue_type(amqp::broker_urls(&self.amqp_url).len(), self.queue_type).map_err(anyhow::Error::msg)?;
        topology.queue_type = self.queue_type;
        topology.delivery_limit = self.delivery_limit;
        Ok(topology)
    }

    fn spec(&self) -> anyhow::Result<ClusterSpec> {
        Ok(ClusterSpec {
            topology: self.topology()?,
            gateway_addr: self.gateway.clone(),
            amqp_url: self.amqp_url.clone(),
            exe: std::env::current_exe()?,
        })
    }
}

/// What one client session sends and where its results go.
#[derive(Args, Clone)]
struct SessionArgs {
    /// The dataset folder (`<kind>/*.csv`).
    #[arg(long)]
    data: PathBuf,
    /// Where `client-<session>.ndjson` is written.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// How long to keep trying to reach the gateway again after each loss of it mid-session.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    reconnect_window: Duration,
    /// How long a new session tries to reach the gateway at all before it says none runs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    connect_patience: Duration,
    /// How long the gateway may leave the connection unanswered (its host gone without a word) before the client
    /// takes it for lost and resumes.
    #[arg(long, env = "COFFEE_DEAD_PEER_AFTER", default_value = "30s", value_parser = humantime::parse_duration)]
    dead_peer_after: Duration,
    /// The most rows per batch sent to the gateway (for measuring what batching buys; a batch is also cut to fit a
    /// frame).
    #[arg(long, env = "COFFEE_BATCH_ROWS", default_value_t = client::BATCH_ROWS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=coffee_engine::protocol::MAX_ROWS_PER_FRAME as u64))]
    batch_rows: usize,
}

/// Where and how often a stage replica persists its sessions.
#[derive(Args, Clone)]
struct Durability {
    /// Folder of the replicas' session state (default: the cluster's run folder, `/tmp/coffee-<namespace>/state`).
    #[arg(long, env = "STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Inputs logged per session between two snapshots.
    #[arg(long, env = "SNAPSHOT_INTERVAL", default_value_t = coffee_engine::runtime::DEFAULT_SNAPSHOT_INTERVAL)]
    snapshot_interval: u64,
    /// How long a session no gateway announces and no input feeds is kept before it is purged here.
    #[arg(long, env = "SESSION_LEASE", default_value = "10m", value_parser = humantime::parse_duration)]
    session_lease: Duration,
    /// The most deliveries logged, fsynced and acked as one group (1 commits every message on its own: for
    /// measuring what group commit buys).
    #[arg(long, env = "COFFEE_GROUP_MAX", default_value_t = coffee_engine::runtime::PREFETCH,
          value_parser = clap::value_parser!(u16).range(1..=i64::from(coffee_engine::runtime::PREFETCH)))]
    group_max: u16,
    /// MiB the state folder's disk must keep free: below it a replica holds its group (nothing written or acked,
    /// its beats say `disk_full`) until space is freed. 0 writes until the disk refuses (the process then exits
    /// without acking, and its restart waits in turn).
    #[arg(long, env = "STATE_MIN_FREE_MB", default_value_t = coffee_engine::runtime::DEFAULT_MIN_FREE_MB)]
    state_min_free_mb: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Write a synthetic dataset in the real layout.
    Gen {
        #[arg(long, default_value = "tiny")]
        scale: gen::Scale,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Compute Q1-Q4 in one plain process (the oracle of every test).
    Reference {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Compare two result files as multisets, per query.
    Compare { left: PathBuf, right: PathBuf },
    /// Simulate the stage protocol deterministically under faults, one seed at a time: every replica, the
    /// gateway's two sides and a simulated broker and disk on one thread (docs/simulation.md). A failing seed
    /// prints the command that replays it.
    Sim {
        /// Seeds to run: `A..B` (B excluded) or one seed.
        #[arg(long, default_value = "0..200")]
        seeds: String,
        /// Faults to inject: all, none, or a comma-separated list of crash, broker, duplicate, gateway, pause,
        /// monitor, incarnation.
        #[arg(long, default_value = "all")]
        faults: String,
        /// Sessions per seed.
        #[arg(long, default_value_t = 2)]
        sessions: usize,
        /// Rows per client batch: small batches make many messages, and many places for a fault.
        #[arg(long, default_value_t = 40)]
        batch_rows: usize,
        /// Print every event of every seed run (use it to replay one seed).
        #[arg(long)]
        trace: bool,
        /// Every seed injects every fault of --faults at the base rate, instead of drawing its own mix of them
        /// and its own rate (swarm testing).
        #[arg(long)]
        no_swarm: bool,
        /// The faults stop at step 4,000 of every seed, instead of at a step each seed draws.
        #[arg(long)]
        no_liveness: bool,
        /// Where the generated datasets are kept between runs.
        #[arg(long, default_value = "target/sim-data")]
        cache: PathBuf,
    },
    /// Run the gateway node.
    Gateway {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Address to accept clients on (defaults to --gateway).
        #[arg(long)]
        listen: Option<String>,
        /// How long a session whose client vanished is kept before every node purges it.
        #[arg(long, env = "SESSION_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
        session_grace: Duration,
        /// The stages' session lease (the gateway announces its sessions every quarter of it).
        #[arg(long, env = "SESSION_LEASE", default_value = "10m", value_parser = humantime::parse_duration)]
        session_lease: Duration,
        /// Where the gateway records upload progress (default: the cluster's run folder, `.../state/gateway`).
        #[arg(long, env = "STATE_DIR")]
        state_dir: Option<PathBuf>,
        #[arg(long, env = "GATEWAY_MAX_CONNECTIONS", default_value_t = 1024)]
        max_connections: usize,
        #[arg(long, env = "GATEWAY_MAX_CONNECTIONS_PER_PEER", default_value_t = 64)]
        max_connections_per_peer: usize,
        #[arg(long, env = "GATEWAY_MAX_SESSIONS", default_value_t = 256)]
        max_sessions: usize,
        /// Sessions one peer address may hold at once (served, or waiting for a resume).
        #[arg(long, env = "GATEWAY_MAX_SESSIONS_PER_PEER", default_value_t = 64)]
        max_sessions_per_peer: usize,
        /// How long a session whose client sent nothing but its Hello waits for a resume.
        #[arg(long, env = "GATEWAY_EMPTY_SESSION_GRACE", default_value = "1s", value_parser = humantime::parse_duration)]
        empty_session_grace: Duration,
        /// How long a client may leave the results it was sent unacked before its connection is closed.
        #[arg(long, env = "GATEWAY_READ_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
        read_timeout: Duration,
        /// How long a new connection may take to send its first frame.
        #[arg(long, env = "GATEWAY_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
        handshake_timeout: Duration,
        /// How long an uploading client may go without moving a few KiB (however long a frame takes on a slow
        /// link).
        #[arg(long, env = "GATEWAY_FRAME_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
        frame_timeout: Duration,
        /// How long a client may leave the connection unanswered (a host gone without a word) before the gateway
        /// takes it for lost.
        #[arg(long, env = "GATEWAY_DEAD_PEER_AFTER", default_value = "30s", value_parser = humantime::parse_duration)]
        dead_peer_after: Duration,
    },
    /// Run one replica of a stage.
    Worker {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[arg(long)]
        stage: String,
        #[arg(long, default_value_t = 0)]
        replica: u16,
        #[command(flatten)]
        durability: Durability,
    },
    /// Kill or pause nodes of a running `cluster up` (or, with `--orchestrator docker`, the node containers of a
    /// compose project) at random intervals, one JSON event line per kill, pause and resume.
    Chaos {
        #[arg(long, env = "COFFEE_NAMESPACE", default_value = "coffee")]
        namespace: String,
        #[command(flatten)]
        orchestrator: OrchestratorArgs,
        /// Time between kills: `2s`, or a range `1s..3s`.
        #[arg(long, default_value = "2s", value_parser = parse_interval)]
        interval: (Duration, Duration),
        /// `random` (any node), or node names or roles, comma separated (`q4_count,gateway`).
        #[arg(long, default_value = "random")]
        target: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// What to do to a victim: kill it (SIGKILL), pause it (SIGSTOP, then SIGCONT after `--pause`), or both.
        #[arg(long, value_enum, default_value_t = chaos::Faults::Kill)]
        fault: chaos::Faults,
        /// How long a paused node stays stopped: `3s`, or a range `500ms..6s`.
        #[arg(long, default_value = "500ms..6s", value_parser = parse_interval)]
        pause: (Duration, Duration),
    },
    /// Benchmark the pipeline against the reference on the same generated files, in one run.
    Bench {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[arg(long, default_value = "reduced")]
        scale: gen::Scale,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Where generated datasets are kept between runs.
        #[arg(long, default_value = "data/generated")]
        cache: PathBuf,
        /// Where the figures are written as JSON (default: target/bench/<scale>-<clients>c.json).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Kill a random node every `1s..3s` (or a fixed interval) while the clients run.
        #[arg(long, value_parser = parse_interval)]
        chaos: Option<(Duration, Duration)>,
    },
    /// Run one health monitor: watch heartbeats; when leading, have silent nodes restarted.
    Monitor {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[arg(long, env = "NODE_ID", default_value_t = 0)]
        replica: u16,
        /// How many monitors run (they elect a leader among themselves).
        #[arg(long, default_value_t = monitor::DEFAULT_MONITORS)]
        monitors: u16,
        /// A node silent this long is restarted.
        #[arg(long, env = "MONITOR_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// How long a node it restarted may take to send its first heartbeat before it is judged again.
        #[arg(long, env = "MONITOR_START_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
        start_grace: Duration,
        /// A node whose heartbeats say its main loop has waited this long on the broker in one step (a confirm
        /// that never comes, say) is restarted, though it beats.
        #[arg(long, env = "MONITOR_STUCK_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
        stuck_timeout: Duration,
        /// Who restarts nodes: `local` (the `cluster up` that owns them, asked on the control queue) or `docker`.
        #[command(flatten)]
        orchestrator: OrchestratorArgs,
    },
    /// Start or stop a local cluster.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Send one dataset as one session to a running cluster.
    Client {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Print the compose file of a topology (`coffee compose > docker-compose-dev.yaml`).
    Compose {
        /// Replicas per stage, `STAGE=N,...`; not read from COFFEE_REPLICAS, so the output depends on flags only.
        #[arg(long, default_value = "")]
        replicas: String,
        /// `quorum` for a RabbitMQ cluster (docs/deploy.md); not read from COFFEE_QUEUE_TYPE either.
        #[arg(long, value_enum, default_value_t = QueueType::Classic)]
        queue_type: QueueType,
        /// RabbitMQ brokers: 1, or several joined into one cluster (needs `--queue-type quorum`); every node is
        /// given all their addresses and fails over between them.
        #[arg(long, default_value_t = 1)]
        brokers: u16,
        /// Write it here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write the Docker Swarm stack instead (`docker-stack.yaml`): one broker per host, quorum queues (implied),
        /// the stages spread over the hosts (docs/deploy.md, "Several hosts").
        #[arg(long)]
        swarm: bool,
        /// Hosts of the swarm stack (with `--swarm`).
        #[arg(long, default_value_t = coffee_ops::stack::DEFAULT_HOSTS)]
        hosts: u16,
    },
    /// One shot: start a cluster if none runs, send one session, write the NDJSON, stop what it started.
    Run {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        session: SessionArgs,
    },
}

/// `2s` (fixed) or `1s..3s` (uniform in the range).
fn parse_interval(text: &str) -> Result<(Duration, Duration), String> {
    let one = |t: &str| humantime::parse_duration(t.trim()).map_err(|e| format!("`{t}`: {e}"));
    match text.split_once("..") {
        Some((a, b)) => Ok((one(a)?, one(b)?)),
        None => one(text).map(|d| (d, d)),
    }
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Start the gateway and every stage as local processes; supervise them until Ctrl-C or SIGTERM.
    Up {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Health monitors to run (0: restart a node as soon as its process exits).
        #[arg(long, default_value_t = monitor::DEFAULT_MONITORS)]
        monitors: u16,
        /// With monitors, how long an exited node is left to them before `cluster up` restarts it itself (an
        /// exited monitor is restarted at once).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        monitor_grace: Duration,
    },
    /// List the nodes of the cluster that `cluster up` runs (pid, restarts, heartbeat age) and its dead letters.
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Stop the cluster that `cluster up` runs (or, if it is gone, the nodes it left running).
    Down {
        #[arg(long, env = "COFFEE_NAMESPACE", default_value = "coffee")]
        namespace: String,
    },
}

/// Logs to stderr, filtered by `RUST_LOG` or else `default`.
fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

/// Whether `coffee` accepts `args` (the first is the program's name), with clap's message if not: tests check
/// commands written elsewhere, such as the compose file's, against the real parser.
pub fn check_args<I, T>(args: I) -> Result<(), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(args).map(drop)
}

/// The entry point of every binary that is `coffee`.
pub fn main() {
    let command = Cli::parse().command;
    // The simulator's faults make the engine warn at every step; its trace is the record of a run.
    init_logs(if matches!(command, Command::Sim { .. }) { "error" } else { "info,lapin=warn" });
    // Failpoints named in FAILPOINTS are armed for the life of the process, in the tests' build only.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    #[cfg(not(feature = "failpoints"))]
    if std::env::var_os("FAILPOINTS").is_some() {
        tracing::warn!("FAILPOINTS is ignored: this binary is built without the `failpoints` feature");
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    if let Err(e) = runtime.block_on(run(command)) {
        eprintln!("error: {e:#}");
        std::process::exit(exit_code(&e));
    }
}

/// [`amqp::REFUSED_EXIT_CODE`] when the node was refused for good (its supervisor leaves it down and says why),
/// [`amqp::LOST_BROKER_EXIT_CODE`] when the broker failed (a supervisor restarts such a node at once, and it
/// waits for the broker), 1 for any other error.
fn exit_code(e: &anyhow::Error) -> i32 {
    use coffee_engine::runtime::RuntimeError;
    let refused = e.chain().any(|cause| {
        cause.downcast_ref::<RuntimeError>().is_some_and(RuntimeError::is_refusal)
            || matches!(cause.downcast_ref::<amqp::BrokerError>(), Some(amqp::BrokerError::Refused { .. }))
    });
    let runtime_broker = matches!(e.downcast_ref::<RuntimeError>(), Some(RuntimeError::Broker(_)));
    if refused {
        amqp::REFUSED_EXIT_CODE
    } else if runtime_broker || amqp::is_broker_failure(e) {
        amqp::LOST_BROKER_EXIT_CODE
    } else {
        1
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Gen { scale, seed, out } => {
            let summary = gen::generate(&gen::GenOptions { scale, seed, out: out.clone() })?;
            println!("wrote {} rows in {} files to {}", summary.total_rows(), summary.files.len(), out.display());
        }
        Command::Reference { data, out } => {
            let report = reference::write(&data, &out)?;
            println!(
                "reference: {} result lines, {} rows read ({} malformed) in {:.2?} -> {}",
                report.lines.len(),
                report.rows_read,
                report.malformed,
                report.elapsed,
                out.display()
            );
        }
        Command::Sim { seeds, faults, sessions, batch_rows, trace, no_swarm, no_liveness, cache } => {
            let range = coffee_tools::sim::parse_seeds(&seeds)?;
            let options = coffee_tools::sim::Options {
                faults: coffee_tools::sim::Faults::parse(&faults)?,
                sessions: sessions.max(1),
                full_trace: trace,
                swarm: !no_swarm,
                liveness: !no_liveness,
                ..Default::default()
            };
            let modes = [(no_swarm, " --no-swarm"), (no_liveness, " --no-liveness")];
            let modes: String = modes.iter().filter(|(on, _)| *on).map(|(_, flag)| *flag).collect();
            let datasets = coffee_tools::sim::datasets(&cache, batch_rows)?;
            let replay = |seed: u64| {
                format!(
                    "coffee sim --seeds {seed} --faults {faults} --sessions {sessions} --batch-rows {batch_rows}{modes} --trace"
                )
            };
            let summary = coffee_tools::sim::run_seeds(range.clone(), &datasets, &options, |seed, outcome| {
                let failure = outcome.failure.as_deref().unwrap_or_default();
                eprintln!(
                    "seed {seed} FAILED ({}; {}; faults {}): {failure}",
                    outcome.shape, outcome.broker, outcome.mix
                );
                for line in &outcome.trace {
                    eprintln!("  {line}");
                }
                eprintln!("replay it: {}", replay(seed));
            });
            if trace && summary.failed.is_empty() {
                for seed in range {
                    for line in coffee_tools::sim::run_seed(seed, &datasets, &options).trace {
                        println!("{line}");
                    }
                }
            }
            println!(
                "{} seeds, {} failed; {} steps (longest seed {}, slowest to converge after its faults {}), {} faults; \
                 {:.1} s ({:.0} seeds/s)",
                summary.seeds,
                summary.failed.len(),
                summary.steps,
                summary.longest,
                summary.slowest_convergence,
                summary.faults,
                summary.elapsed.as_secs_f64(),
                summary.seeds as f64 / summary.elapsed.as_secs_f64().max(1e-9)
            );
            print!("{}", summary.coverage);
            for (seed, why) in &summary.failed {
                println!("seed {seed}: {why}\n  replay: {}", replay(*seed));
            }
            anyhow::ensure!(summary.failed.is_empty(), "{} of {} seeds failed", summary.failed.len(), summary.seeds);
        }
        Command::Compare { left, right } => {
            let comparison = compare::compare_files(&left, &right)?;
            print!("{comparison}");
            anyhow::ensure!(comparison.all_equal(), "the results differ");
        }
        Command::Gateway {
            cluster,
            listen,
            session_grace,
            session_lease,
            state_dir,
            max_connections,
            max_connections_per_peer,
            max_sessions,
            max_sessions_per_peer,
            empty_session_grace,
            read_timeout,
            handshake_timeout,
            frame_timeout,
            dead_peer_after,
        } => {
            let limits = gateway::limits::Limits {
                max_connections,
                max_connections_per_peer,
                max_sessions,
                max_sessions_per_peer,
                empty_session_grace,
                read_timeout,
                handshake_timeout,
                frame_timeout,
                dead_peer_after,
            };
            let listen = listen.unwrap_or_else(|| cluster.gateway.clone());
            gateway::Gateway {
                state_dir: state_dir
                    .unwrap_or_else(|| cluster::run_dir(&cluster.namespace).join("state"))
                    .join("gateway"),
                topology: cluster.topology()?,
                amqp_url: cluster.amqp_url,
                session_grace,
                session_lease,
                limits,
            }
            .run(&listen)
            .await?;
        }
        Command::Worker { cluster, stage, replica, durability } => {
            run_worker(&cluster, &stage, replica, durability).await?
        }
        Command::Cluster { action: ClusterAction::Up { cluster, monitors, monitor_grace } } => {
            let spec = cluster.spec()?;
            if let Some(pid) = cluster::running_supervisor(&spec.topology.namespace) {
                anyhow::bail!(
                    "a cluster of namespace `{}` is already up (cluster up, pid {pid}); `coffee cluster down` stops it",
                    spec.topology.namespace
                );
            }
            let options = cluster::StartOptions { monitors, monitor_grace, ..Default::default() };
            let mut local = LocalCluster::start_with(spec.clone(), options).await?;
            std::fs::write(cluster::pid_file(&spec.topology.namespace), std::process::id().to_string())?;
            println!(
                "cluster up: gateway on {}, logs in {}; Ctrl-C stops it",
                spec.gateway_addr,
                spec.run_dir().join("logs").display()
            );
            local.supervise_until(cluster::shutdown_signal()).await?;
            local.stop().await?;
        }
        Command::Bench { cluster, scale, seed, clients, cache, json, chaos } => {
            let options = bench::BenchOptions { scale, seed, clients, cache, cluster: cluster.spec()?, chaos };
            let report = bench::run(options).await?;
            print!("{report}");
            let json = json.unwrap_or_else(|| PathBuf::from(format!("target/bench/{scale}-{clients}c.json")));
            if let Some(dir) = json.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
            println!("figures written to {}", json.display());
        }
        Command::Cluster { action: ClusterAction::Status { cluster } } => {
            let namespace = cluster.namespace.clone();
            println!("{:<16} {:>8} {:>9} {:>14}", "node", "pid", "restarts", "heartbeat age");
            let nodes = cluster::read_status(&namespace)?;
            for node in &nodes {
                let down = if node.refused.is_some() { "refused" } else { "down" };
                let pid = node.pid.map_or_else(|| down.to_owned(), |p| p.to_string());
                let age = node
                    .heartbeat_age_ms
                    .map_or_else(|| "never".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0));
                println!("{:<16} {pid:>8} {:>9} {age:>14}", node.name, node.restarts);
            }
            // Each refusal once, in full: the node is left down until someone restarts it.
            for node in nodes.iter().filter(|n| n.pid.is_none()) {
                if let Some(reason) = &node.refused {
                    println!("{} is refused for good and left down: {reason}", node.name);
                }
            }
            let connection = amqp::connect(&cluster.amqp_url, "status").await?;
            let channel = connection.create_channel().await?;
            let dead = amqp::dead_letters(&channel, &cluster.topology()?).await?;
            let dead: Vec<String> = dead.iter().map(|(node, count)| format!("{node} {count}")).collect();
            println!("dead letters (poison messages set aside): {}", dead.join(", "));
        }
        Command::Monitor { cluster, replica, monitors, timeout, start_grace, stuck_timeout, orchestrator } => {
            let topology = cluster.topology()?;
            let mut nodes: Vec<String> = cluster.spec()?.nodes().into_iter().map(|(name, _)| name).collect();
            nodes.extend((0..monitors).map(monitor::monitor_name));
            let restarter = match orchestrator.orchestrator {
                OrchestratorKind::Local => monitor::Restarter::ControlQueue,
                OrchestratorKind::Docker => monitor::Restarter::Orchestrator(Arc::new(orchestrator.docker().await?)),
            };
            let node_dir = cluster::run_dir(&cluster.namespace).join("state").join(monitor::monitor_name(replica));
            let monitor = monitor::Monitor {
                topology,
                replica,
                monitors,
                timeout,
                start_grace,
                stuck_timeout,
                nodes,
                restarter,
                node_dir,
            };
            monitor.run(&cluster.amqp_url).await?;
        }
        Command::Chaos { namespace, orchestrator, interval, target, seed, duration, fault, pause } => {
            let mut monkey =
                ChaosMonkey::new(seed, interval.0, interval.1, Targets::parse(&target)).with_faults(fault, pause);
            let owner = orchestrator.running(&namespace).await?;
            // Fail at once when there is nothing to act on (no `cluster up` here, no engine), rather than warn
            // at every fault for the whole run.
            owner.nodes().await?;
            let stop = tokio::time::sleep(duration);
            // One JSON line per kill, pause and resume; whoever supervises the nodes logs their restarts.
            let counts = chaos::run_against(owner.as_ref(), &mut monkey, stop, |report| {
                if let chaos::Report::Done(event) = report {
                    println!("{}", event.to_json_line());
                }
            })
            .await?;
            eprintln!("chaos: {} kills and {} pauses in {duration:?}", counts.kills, counts.pauses);
        }
        Command::Cluster { action: ClusterAction::Down { namespace } } => match cluster::signal_down(&namespace)? {
            cluster::Down::Signalled(pid) => println!("asked the cluster (pid {pid}) to stop"),
            cluster::Down::KilledOrphans(nodes) => {
                println!("no cluster up ran; killed the nodes it had left: {}", nodes.join(", "))
            }
        },
        Command::Compose { replicas, queue_type, brokers, out, swarm, hosts } => {
            let mut topology = Topology::with_replicas(&Topology::default().namespace, &replicas)?;
            topology.queue_type = queue_type;
            if swarm {
                // Classic queues live on one broker and would go with its host.
                topology.queue_type = QueueType::Quorum;
                coffee_ops::stack::run_cli(&topology, hosts, out.as_deref())?
            } else {
                coffee_ops::compose::run_cli(&topology, brokers, out.as_deref())?
            }
        }
        Command::Client { cluster, session } => {
            let summary = run_client(&cluster.gateway, session).await?;
            print_summary(&summary);
        }
        Command::Run { cluster, session } => {
            let running = tokio::net::TcpStream::connect(&cluster.gateway).await.is_ok();
            let local = if running { None } else { Some(LocalCluster::start(cluster.spec()?).await?) };
            let outcome = run_client(&cluster.gateway, session).await;
            if let Some(local) = local {
                local.stop().await?;
            }
            print_summary(&outcome?);
        }
    }
    Ok(())
}

async fn run_worker(cluster: &ClusterArgs, stage: &str, replica: u16, durability: Durability) -> anyhow::Result<()> {
    let topology = cluster.topology()?;
    let stage = StageKind::from_name(stage).ok_or_else(|| anyhow::anyhow!("unknown stage `{stage}`"))?;
    anyhow::ensure!(
        replica < topology.replicas(stage),
        "{stage} has {} replicas; {replica} is out of range",
        topology.replicas(stage)
    );
    let state_dir = durability.state_dir.unwrap_or_else(|| cluster::run_dir(&topology.namespace).join("state"));
    let config = ReplicaConfig {
        topology,
        replica,
        state_dir,
        snapshot_interval: durability.snapshot_interval,
        session_lease: durability.session_lease,
        group_max: usize::from(durability.group_max),
        min_free_bytes: durability.state_min_free_mb.saturating_mul(1 << 20),
    };
    Ok(runtime::serve_stage(stage, config, &cluster.amqp_url).await?)
}

/// Runs one session with a progress bar on a terminal.
async fn run_client(
    gateway: &str,
    SessionArgs { data, out, reconnect_window, connect_patience, batch_rows, dead_peer_after }: SessionArgs,
) -> anyhow::Result<ClientSummary> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("valid template"));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let progress = bar.clone();
    let results = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let observer: Observer = Arc::new(move |event| match event {
        ClientEvent::Started { session } => progress.set_message(format!("session {session}")),
        ClientEvent::Sent { rows, .. } => {
            let got = results.load(std::sync::atomic::Ordering::Relaxed);
            progress.set_message(format!("{rows} rows sent, {got} result lines"));
        }
        ClientEvent::Results { lines, .. } => {
            results.fetch_add(lines.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        ClientEvent::QueryDone { query, .. } => progress.println(format!("{query} complete")),
        ClientEvent::Rerun { session, reason } => {
            progress.println(format!("session {session} runs again from the start: {reason}"))
        }
        ClientEvent::FileDone { report, .. } => {
            if let Some(why) = &report.refused {
                progress.println(format!("refused {}: {why}", report.path.display()));
            }
        }
    });
    let summary = client::run_session(
        &ClientOptions {
            reconnect_window,
            connect_patience,
            batch_rows,
            dead_peer_after,
            ..ClientOptions::new(gateway, data, out)
        },
        observer,
    )
    .await;
    bar.finish_and_clear();
    summary
}

fn print_summary(summary: &ClientSummary) {
    println!("session {} done in {:.2?}", summary.session, summary.elapsed);
    for f in &summary.files {
        let refused = f.refused.as_deref().map(|why| format!(" REFUSED: {why}")).unwrap_or_default();
        println!("  {:<60} {:>10} rows sent {:>6} malformed{refused}", f.path.display(), f.rows_sent, f.malformed);
        for sample in &f.samples {
            println!("      {sample}");
        }
    }
    println!("  total: {} rows sent, {} malformed", summary.rows_sent(), summary.malformed());
    let counts: Vec<String> = summary.results.iter().map(|(q, n)| format!("{q}={n}")).collect();
    println!("  results: {} -> {}", counts.join(" "), summary.output.display());
}
