//! `coffee bench`: the pipeline and the reference on the same files in the same run, side by side, with DuckDB
//! ([`duckdb`], when `scripts/duckdb-setup.sh` has made its environment) and the time it takes only to read and
//! parse the files ([`bound`]).
//!
//! The reference and every client run as child processes of this binary, so each one's peak memory is its own;
//! the nodes report theirs, and what they published, in their heartbeats.

pub mod bound;
pub mod duckdb;

use crate::gen::{self, GenOptions, Scale};
use coffee_engine::heartbeat::{self, Heartbeat};
use coffee_ops::chaos::{ChaosEvent, ChaosMonkey, Targets};
use coffee_ops::cluster::{ClusterSpec, LocalCluster};
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub scale: Scale,
    pub seed: u64,
    pub clients: usize,
    /// Where generated datasets are cached (`<cache>/<scale>-<seed>`).
    pub cache: PathBuf,
    pub cluster: ClusterSpec,
    /// Kill a random node at intervals in this range while the clients run.
    pub chaos: Option<(Duration, Duration)>,
}

/// What the heartbeat watcher saw during a run.
struct Watched {
    latest: BTreeMap<String, Heartbeat>,
    /// Every beat with the time it arrived (ms since the epoch).
    beats: Vec<(u64, Heartbeat)>,
    max_queue_depth: u32,
}

/// Collects heartbeats and samples every queue's depth until told to stop.
async fn watch(
    mut stream: std::pin::Pin<Box<impl futures::Stream<Item = Heartbeat>>>,
    channel: lapin::Channel,
    queues: Vec<String>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<Watched> {
    let mut watched = Watched { latest: BTreeMap::new(), beats: Vec::new(), max_queue_depth: 0 };
    let mut sample = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(watched),
            Some(beat) = stream.next() => {
                watched.latest.insert(beat.node.clone(), beat.clone());
                watched.beats.push((coffee_engine::metrics::now_ms(), beat));
            }
            _ = sample.tick() => {
                for queue in &queues {
                    let depth = coffee_engine::amqp::queue_depth(&channel, queue).await?;
                    watched.max_queue_depth = watched.max_queue_depth.max(depth);
                }
            }
        }
    }
}

/// From a kill to the first message the node's next incarnation consumed, if its heartbeats showed one.
fn recovery_ms(kill: &ChaosEvent, beats: &[(u64, Heartbeat)]) -> Option<u64> {
    beats
        .iter()
        .filter(|(_, b)| b.node == kill.node && Some(b.pid) != kill.pid)
        .filter_map(|(_, b)| b.first_input_ms)
        .filter(|&first| first >= kill.time_ms)
        .min()
        .map(|first| first - kill.time_ms)
}

/// From a kill to the first heartbeat of the node's next incarnation: restarted, state recovered, connected.
fn ready_ms(kill: &ChaosEvent, beats: &[(u64, Heartbeat)]) -> Option<u64> {
    beats
        .iter()
        .filter(|(at, b)| b.node == kill.node && Some(b.pid) != kill.pid && *at >= kill.time_ms)
        .map(|(at, _)| at - kill.time_ms)
        .min()
}

/// One timed process.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub wall_secs: f64,
    /// The CPU time the whole machine spent over the run (core-seconds; for the pipeline: every node, the broker,
    /// the clients and the bench's own watching). On both cores of a busy machine this is about twice the wall
    /// time, and it drifts less than wall time between runs: the figure to compare small changes by.
    pub cpu_secs: f64,
    pub rows_per_sec: f64,
    pub peak_rss_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeFigures {
    pub peak_rss_mib: f64,
    pub published_messages: u64,
    pub published_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub scale: String,
    pub clients: usize,
    pub replicas: String,
    pub input_rows: u64,
    pub input_bytes: u64,
    pub reference: Run,
    /// DuckDB on the same files with as many threads as cores, if its environment is set up.
    pub duckdb: Option<duckdb::DuckDbRun>,
    /// Reading and parsing every file once, on one thread and on every core: (threads, seconds).
    pub read_and_parse: Vec<(usize, f64)>,
    /// All clients, from the first start to the last end.
    pub pipeline: Run,
    pub clients_peak_rss_mib: Vec<f64>,
    pub ratio: f64,
    pub broker_messages: u64,
    pub broker_bytes: u64,
    /// The deepest any queue was when sampled (every 100 ms) during the run.
    pub max_queue_depth: u32,
    /// Clients whose NDJSON equals the reference's, line for line as multisets.
    pub exact_clients: usize,
    /// Nodes the chaos monkey killed during the run (`--chaos`).
    pub kills: usize,
    /// Per kill whose restarted node was seen consuming again: the node and the time from kill to its first
    /// consumed message (which also counts any wait for new input, e.g. a gateway waiting for its client).
    pub recoveries: Vec<(String, u64)>,
    /// The longest time from a kill to the restarted node's first consumed message.
    pub slowest_recovery_ms: Option<u64>,
    /// The longest time from a kill to the restarted node's first heartbeat (state recovered, connected).
    pub slowest_ready_ms: Option<u64>,
    pub nodes: BTreeMap<String, NodeFigures>,
}

/// CPU seconds the machine's cores have been busy since boot (all but idle and I/O wait), from `/proc/stat`,
/// which counts in USER_HZ: 100 a second on Linux, whatever the kernel's own tick (a fixed part of its ABI).
fn machine_busy_secs() -> anyhow::Result<f64> {
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().filter(|l| l.starts_with("cpu ")).ok_or_else(|| anyhow::anyhow!("no cpu line"))?;
    let ticks: Vec<u64> = cpu.split_whitespace().skip(1).map(|t| t.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal (guest time is already inside user and nice).
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| ticks.get(i)).sum();
    Ok(busy as f64 / USER_HZ)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The dataset of a scale and seed and its row count, generated once and reused (a marker file, written last,
/// holds the row count and says the dataset is whole).
pub fn cached_dataset(cache: &Path, scale: Scale, seed: u64) -> anyhow::Result<(PathBuf, u64)> {
    let dir = cache.join(format!("{scale}-{seed}"));
    let marker = dir.join(".complete");
    if let Some(rows) = std::fs::read_to_string(&marker).ok().and_then(|t| t.trim().parse().ok()) {
        return Ok((dir, rows));
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    eprintln!("generating {scale} (seed {seed}) into {} ...", dir.display());
    let rows = gen::generate(&GenOptions { scale, seed, out: dir.clone() })?.total_rows();
    std::fs::write(&marker, rows.to_string())?;
    Ok((dir, rows))
}

fn dataset_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for kind in coffee_model::model::FileKind::ALL {
        for file in coffee_model::dataset::files_of(dir, kind)? {
            total += std::fs::metadata(file)?.len();
        }
    }
    Ok(total)
}

/// Runs `coffee <args>` to its end; returns its wall time and peak RSS (sampled from /proc while it runs).
async fn timed_child(exe: &Path, args: &[String], env: &[(&str, &str)]) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let mut child = Command::new(exe).args(args).envs(env.iter().copied()).stdout(Stdio::null()).spawn()?;
    let pid = child.id().unwrap_or(0);
    let mut peak = 0;
    let status = loop {
        peak = peak.max(coffee_engine::metrics::peak_rss_kib(pid));
        tokio::select! {
            status = child.wait() => break status?,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    };
    anyhow::ensure!(status.success(), "`coffee {}` failed: {status}", args.join(" "));
    Ok((started.elapsed(), peak))
}

pub async fn run(options: BenchOptions) -> anyhow::Result<BenchReport> {
    let (data, input_rows) = cached_dataset(&options.cache, options.scale, options.seed)?;
    let input_bytes = dataset_size(&data)?;
    let exe = options.cluster.exe.clone();
    let out = tempfile_dir()?;

    // The reference, alone on the machine.
    let reference_out = out.join("reference.ndjson");
    let args = ["reference", "--data", &path_str(&data), "--out", &path_str(&reference_out)].map(String::from);
    let cpu_before = machine_busy_secs()?;
    let (reference_wall, reference_rss) = timed_child(&exe, &args, &[]).await?;
    let reference_cpu = machine_busy_secs()? - cpu_before;

    // The bound, then DuckDB, alone on the machine too.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut read_and_parse = Vec::new();
    for threads in [1, cores] {
        let data = data.clone();
        let (took, _) = tokio::task::spawn_blocking(move || bound::read_and_parse(&data, threads)).await??;
        read_and_parse.push((threads, took.as_secs_f64()));
    }
    let duckdb = match duckdb::python() {
        Some(python) => {
            let (data, out, reference) = (data.clone(), out.join("duckdb.ndjson"), reference_out.clone());
            Some(tokio::task::spawn_blocking(move || duckdb::run(&python, &data, &out, cores, &reference)).await??)
        }
        None => {
            eprintln!(
                "DuckDB is not set up: run scripts/duckdb-setup.sh (or set COFFEE_DUCKDB_PYTHON) to compare with it"
            );
            None
        }
    };

    // The pipeline: a fresh cluster, its heartbeats watched, the clients as child processes.
    let mut cluster = LocalCluster::start(options.cluster.clone()).await?;
    let connection = coffee_engine::amqp::connect(&options.cluster.amqp_url, "bench").await?;
    let (stop_watching, watching_stopped) = tokio::sync::oneshot::channel();
    let watcher = tokio::spawn(watch(
        Box::pin(heartbeat::subscribe(&connection, &options.cluster.topology).await?),
        connection.create_channel().await?,
        options.cluster.topology.all_queues(),
        watching_stopped,
    ));
    let clients: Vec<_> = (0..options.clients)
        .map(|i| {
            let args = [
                "client".to_owned(),
                "--data".to_owned(),
                path_str(&data),
                "--out".to_owned(),
                path_str(&out.join(format!("client-{i}"))),
            ];
            let (exe, gateway) = (exe.clone(), options.cluster.gateway_addr.clone());
            async move { timed_child(&exe, &args, &[("GATEWAY_ADDR", gateway.as_str())]).await }
        })
        .collect();
    let started = Instant::now();
    let cpu_before = machine_busy_secs()?;
    let (clients_done, all_done) = tokio::sync::oneshot::channel();
    let running = tokio::spawn(async move {
        let results = futures::future::join_all(clients).await;
        let _ = clients_done.send(());
        results
    });
    // Supervised as `coffee cluster up` without monitors would be, with the chaos monkey if asked.
    let mut monkey = match options.chaos {
        Some((min, max)) => ChaosMonkey::new(options.seed, min, max, Targets::Random),
        None => ChaosMonkey::new(0, Duration::from_secs(1 << 20), Duration::from_secs(1 << 20), Targets::Random),
    };
    let events = cluster.supervise_under_chaos(&mut monkey, async { all_done.await.unwrap_or(()) }, |_| {}).await?;
    let pipeline_wall = started.elapsed();
    let pipeline_cpu = machine_busy_secs()? - cpu_before;
    let mut clients_rss = Vec::new();
    for result in running.await? {
        clients_rss.push(mib(result?.1));
    }
    // One more round of beats, so every node's totals include the end of the run.
    tokio::time::sleep(heartbeat::INTERVAL * 2).await;
    let _ = stop_watching.send(());
    let Watched { latest, beats, max_queue_depth } = watcher.await??;
    let kills: Vec<&ChaosEvent> = events.iter().filter(|e| e.action == "kill").collect();
    let recoveries: Vec<(String, u64)> =
        kills.iter().filter_map(|kill| Some((kill.node.clone(), recovery_ms(kill, &beats)?))).collect();
    let slowest_ready_ms = kills.iter().filter_map(|kill| ready_ms(kill, &beats)).max();
    let mut exact = 0;
    for i in 0..options.clients {
        for entry in std::fs::read_dir(out.join(format!("client-{i}")))? {
            if crate::compare::compare_files(&reference_out, &entry?.path())?.all_equal() {
                exact += 1;
            }
        }
    }
    cluster.stop().await?;
    let _ = std::fs::remove_dir_all(&out);

    let nodes: BTreeMap<String, NodeFigures> = latest
        .into_iter()
        .map(|(name, b)| {
            let figures = NodeFigures {
                peak_rss_mib: mib(b.work.peak_rss_kib),
                published_messages: b.work.published_messages,
                published_bytes: b.work.published_bytes,
            };
            (name, figures)
        })
        .collect();
    let total_rows = input_rows * options.clients as u64;
    Ok(BenchReport {
        scale: options.scale.to_string(),
        clients: options.clients,
        replicas: options.cluster.topology.replicas_spec(),
        input_rows,
        input_bytes,
        reference: Run {
            wall_secs: reference_wall.as_secs_f64(),
            cpu_secs: reference_cpu,
            rows_per_sec: input_rows as f64 / reference_wall.as_secs_f64(),
            peak_rss_mib: mib(reference_rss),
        },
        duckdb,
        read_and_parse,
        pipeline: Run {
            wall_secs: pipeline_wall.as_secs_f64(),
            cpu_secs: pipeline_cpu,
            rows_per_sec: total_rows as f64 / pipeline_wall.as_secs_f64(),
            peak_rss_mib: nodes.values().map(|n| n.peak_rss_mib).fold(0.0, f64::max),
        },
        clients_peak_rss_mib: clients_rss,
        ratio: pipeline_wall.as_secs_f64() / (reference_wall.as_secs_f64() * options.clients as f64),
        broker_messages: nodes.values().map(|n| n.published_messages).sum(),
        broker_bytes: nodes.values().map(|n| n.published_bytes).sum(),
        max_queue_depth,
        kills: kills.len(),
        exact_clients: exact,
        slowest_recovery_ms: recoveries.iter().map(|(_, ms)| *ms).max(),
        slowest_ready_ms,
        recoveries,
        nodes,
    })
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("coffee-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = |rows: f64| format!("{:.2} M rows/s", rows / 1e6);
        writeln!(
            f,
            "scale {}: {} input rows ({:.0} MiB of CSV), {} client(s), replicas {}",
            self.scale,
            self.input_rows,
            self.input_bytes as f64 / 1048576.0,
            self.clients,
            self.replicas
        )?;
        writeln!(f, "{:<22} {:>10} {:>9} {:>18} {:>14}", "", "wall", "CPU", "throughput", "peak RSS")?;
        let r = &self.reference;
        writeln!(
            f,
            "{:<22} {:>9.2}s {:>8.2}s {:>18} {:>10.0} MiB",
            "reference (1 pass)",
            r.wall_secs,
            r.cpu_secs,
            m(r.rows_per_sec),
            r.peak_rss_mib
        )?;
        let p = &self.pipeline;
        writeln!(
            f,
            "{:<22} {:>9.2}s {:>8.2}s {:>18} {:>10.0} MiB (largest node)",
            "pipeline (all clients)",
            p.wall_secs,
            p.cpu_secs,
            m(p.rows_per_sec),
            p.peak_rss_mib
        )?;
        if let Some(d) = &self.duckdb {
            let name = format!("duckdb ({} threads)", d.threads);
            let exact = if d.exact { "equal to the reference" } else { "DIFFERS from the reference" };
            let rows = m(self.input_rows as f64 / d.secs);
            writeln!(f, "{name:<22} {:>9.2}s {:>8.2}s {rows:>18} {:>14}", d.secs, d.cpu_secs, exact)?;
        }
        for (threads, secs) in &self.read_and_parse {
            let name = format!("read+parse ({threads} thr.)");
            writeln!(f, "{name:<22} {secs:>9.2}s {:>9} {:>18}", "", m(self.input_rows as f64 / secs))?;
        }
        writeln!(f, "ratio pipeline / reference (per client's data): {:.2}x", self.ratio)?;
        if let Some(d) = &self.duckdb {
            let ratio = self.pipeline.wall_secs / (d.secs * self.clients as f64);
            writeln!(f, "ratio pipeline / duckdb (per client's data): {ratio:.2}x")?;
            let cpu_ratio = self.pipeline.cpu_secs / (d.cpu_secs * self.clients as f64);
            writeln!(f, "ratio pipeline / duckdb in CPU time (per client's data): {cpu_ratio:.2}x")?;
        }
        if let Some((threads, secs)) = self.read_and_parse.last() {
            let ratio = self.pipeline.wall_secs / (secs * self.clients as f64);
            writeln!(f, "ratio pipeline / read+parse on {threads} threads (per client's data): {ratio:.2}x")?;
        }
        writeln!(f, "clients with results equal to the reference: {} of {}", self.exact_clients, self.clients)?;
        let clients: Vec<String> = self.clients_peak_rss_mib.iter().map(|c| format!("{c:.0}")).collect();
        writeln!(f, "clients' peak RSS (MiB): {}", clients.join(", "))?;
        writeln!(
            f,
            "through the broker: {} messages, {:.1} MiB; deepest queue seen: {} messages",
            self.broker_messages,
            self.broker_bytes as f64 / 1048576.0,
            self.max_queue_depth
        )?;
        if self.kills > 0 {
            let slowest = self.slowest_recovery_ms.map_or_else(|| "not seen".to_owned(), |ms| format!("{ms} ms"));
            writeln!(
                f,
                "chaos: {} kills; slowest recovery (kill to first consumed message): {slowest} over {} measured",
                self.kills,
                self.recoveries.len()
            )?;
            let mut slowest_first = self.recoveries.clone();
            slowest_first.sort_by_key(|(_, ms)| std::cmp::Reverse(*ms));
            let listed: Vec<String> =
                slowest_first.iter().take(6).map(|(node, ms)| format!("{node} {ms} ms")).collect();
            writeln!(f, "slowest recoveries: {}", listed.join(", "))?;
            let ready = self.slowest_ready_ms.map_or_else(|| "not seen".to_owned(), |ms| format!("{ms} ms"));
            writeln!(f, "slowest restart to ready (kill to first heartbeat of the new process): {ready}")?;
        }
        writeln!(f, "{:<16} {:>10} {:>12} {:>12}", "node", "peak MiB", "published", "MiB out")?;
        for (name, n) in &self.nodes {
            writeln!(
                f,
                "{name:<16} {:>10.0} {:>12} {:>12.1}",
                n.peak_rss_mib,
                n.published_messages,
                n.published_bytes as f64 / 1048576.0
            )?;
        }
        Ok(())
    }
}
