//! Running a real cluster from a test: the `coffee-node` binary of this crate as every node, a unique queue
//! namespace and gateway port per test (so tests share the one broker in parallel), and result checks against
//! the reference.

use coffee_engine::client::{self, ClientOptions, ClientSummary};
use coffee_engine::protocol::{ClientFrame, FrameReader, FrameWriter, GatewayFrame};
use coffee_engine::topology::Topology;
use coffee_ops::cluster::{ClusterSpec, LocalCluster};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The broker the tests use (`AMQP_URL` overrides it).
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| coffee_engine::amqp::DEFAULT_AMQP_URL.to_owned())
}

/// A namespace no other test (or earlier run) uses.
pub fn unique_namespace(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").subsec_nanos();
    format!("test-{test}-{}-{nanos}", std::process::id())
}

/// A loopback address with a port free right now.
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").to_string()
}

/// The `coffee-node` binary cargo builds for this crate's integration tests: it sits beside the `deps/` folder
/// that holds the test executable (`CARGO_BIN_EXE_*` is only set when compiling the test files themselves).
pub fn node_binary() -> PathBuf {
    let test_exe = std::env::current_exe().expect("current exe");
    let profile_dir = test_exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let exe = profile_dir.join("coffee-node");
    assert!(exe.is_file(), "{} is missing: run the tests with cargo", exe.display());
    exe
}

/// The spec of a test cluster with `replicas` (`STAGE=N,...`).
pub fn cluster_spec(test: &str, replicas: &str) -> ClusterSpec {
    ClusterSpec {
        topology: Topology::with_replicas(&unique_namespace(test), replicas).expect("valid replicas"),
        gateway_addr: free_addr(),
        amqp_url: amqp_url(),
        exe: node_binary(),
    }
}

/// Starts a local cluster of real processes on the real broker.
pub async fn start_cluster(test: &str, replicas: &str) -> (ClusterSpec, LocalCluster) {
    let spec = cluster_spec(test, replicas);
    let cluster = LocalCluster::start(spec.clone()).await.unwrap_or_else(|e| panic!("cluster start: {e:#}"));
    (spec, cluster)
}

/// Generates a dataset into `dir`.
pub fn generate(scale: coffee_tools::gen::Scale, seed: u64, dir: &Path) -> PathBuf {
    coffee_tools::gen::generate(&coffee_tools::gen::GenOptions { scale, seed, out: dir.to_owned() }).expect("generate");
    dir.to_owned()
}

/// Runs one session against the cluster's gateway.
pub async fn run_session(spec: &ClusterSpec, data: &Path, out: &Path) -> ClientSummary {
    let options = ClientOptions::new(&spec.gateway_addr, data, out);
    client::run_session(&options, Arc::new(|_| {}))
        .await
        .unwrap_or_else(|e| panic!("session on {}: {e:#}", data.display()))
}

/// The lines of an NDJSON file.
pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// The CSV files of a dataset folder (in its kind folders).
fn csv_files(data: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for kind in std::fs::read_dir(data).expect("the dataset folder").flatten() {
        if let Ok(entries) = std::fs::read_dir(kind.path()) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "csv")));
        }
    }
    files.sort();
    files
}

/// Asserts a session's NDJSON equals the reference's output for its data, as multisets, and that its summary
/// reports every file of the data once, however often the session resumed.
pub fn assert_matches_reference(summary: &ClientSummary, data: &Path) {
    let mut reported: Vec<PathBuf> = summary.files.iter().map(|f| f.path.clone()).collect();
    reported.sort();
    assert_eq!(reported, csv_files(data), "session {}: the files its summary reports", summary.session);
    let expected = coffee_tools::reference::run(data).expect("reference").lines;
    let actual = read_lines(&summary.output);
    let comparison = coffee_tools::compare::compare_lines(&expected, &actual);
    assert!(
        comparison.all_equal(),
        "session {} on {} differs from the reference (left: reference, right: pipeline):\n{comparison}",
        summary.session,
        data.display()
    );
}

/// Starts a cluster with extra node environment (failpoints, snapshot interval).
pub async fn start_cluster_with(
    test: &str,
    replicas: &str,
    options: coffee_ops::cluster::StartOptions,
) -> (ClusterSpec, LocalCluster) {
    let spec = cluster_spec(test, replicas);
    let cluster =
        LocalCluster::start_with(spec.clone(), options).await.unwrap_or_else(|e| panic!("cluster start: {e:#}"));
    (spec, cluster)
}

/// Every file under `dir`, recursively (none if it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Session files left in the cluster's state folder (every node's `finished.log` aside).
pub fn session_files(spec: &ClusterSpec) -> Vec<PathBuf> {
    coffee_engine::state::NodeStore::session_files(&spec.run_dir().join("state")).expect("read the state folder")
}

/// Waits until the cluster is quiet: no node holds session files and no queue holds a message. It supervises
/// meanwhile (restarting any node that exited, at once): a node killed after the last session's results but
/// before it deleted its files, or with duplicates still queued for it, finishes that work once it runs again.
pub async fn settle(cluster: &mut LocalCluster, spec: &ClusterSpec) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        cluster.restart_exited().expect("restart exited nodes");
        let files = session_files(spec);
        let busy: Vec<_> = queue_depths(spec).await.into_iter().filter(|(_, n)| *n > 0).collect();
        if files.is_empty() && busy.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster did not settle: session files {files:?}, messages in queues {busy:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Messages waiting in each of the cluster's queues.
pub async fn queue_depths(spec: &ClusterSpec) -> Vec<(String, u32)> {
    use lapin::options::QueueDeclareOptions;
    let connection = coffee_engine::amqp::connect(&spec.amqp_url, "test").await.expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    let mut depths = Vec::new();
    for queue in spec.topology.all_queues() {
        let options = QueueDeclareOptions { passive: true, durable: true, ..Default::default() };
        let declared = channel.queue_declare(queue.as_str().into(), options, Default::default()).await.expect("queue");
        depths.push((queue, declared.message_count()));
    }
    depths
}

/// A TCP proxy, so a test can cut every connection through it and refuse new ones for a while (an outage), then
/// serve again: in front of RabbitMQ (every node cut off the broker, without touching the broker other tests
/// share) or of a gateway (a client losing its gateway).
pub struct TcpProxy {
    port: u16,
    upstream: String,
    serving: Option<tokio::task::JoinHandle<()>>,
    /// While set, no byte goes through in either direction (the connections stay open).
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TcpProxy {
    pub async fn start(upstream: &str) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("addr").port();
        let stalled = std::sync::Arc::default();
        let mut proxy = TcpProxy { port, upstream: upstream.to_owned(), serving: None, stalled };
        proxy.serving = Some(tokio::spawn(Self::serve(listener, proxy.upstream.clone(), proxy.stalled.clone())));
        proxy
    }

    async fn serve(
        listener: tokio::net::TcpListener,
        upstream: String,
        stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        // Dropping the set (when this task is aborted) aborts every connection it carries.
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((inbound, _)) = listener.accept().await {
            let (upstream, stalled) = (upstream.clone(), stalled.clone());
            connections.spawn(async move {
                if let Ok(outbound) = tokio::net::TcpStream::connect(&upstream).await {
                    let (from_in, to_in) = inbound.into_split();
                    let (from_out, to_out) = outbound.into_split();
                    tokio::join!(Self::pipe(from_in, to_out, &stalled), Self::pipe(from_out, to_in, &stalled));
                }
            });
        }
    }

    /// Copies one direction of a connection, holding back while the proxy is stalled.
    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        stalled: &std::sync::atomic::AtomicBool,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            while stalled.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    while stalled.load(std::sync::atomic::Ordering::SeqCst) {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    if to.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown().await;
    }

    /// Holds every byte back (in both directions, connections open) until [`TcpProxy::flow`].
    pub fn stall(&self) {
        self.stalled.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Lets bytes through again.
    pub fn flow(&self) {
        self.stalled.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// A proxy in front of the machine's RabbitMQ, which `spec`'s nodes are then given to reach it through.
    pub async fn in_front_of_broker(spec: &mut ClusterSpec) -> TcpProxy {
        let proxy = TcpProxy::start("127.0.0.1:5672").await;
        spec.amqp_url = proxy.url();
        proxy
    }

    /// The AMQP URL that goes through the proxy (when it stands in front of RabbitMQ).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The proxy's own address.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Cuts every connection and refuses new ones for `length`, then serves again on the same port.
    pub async fn outage(&mut self, length: std::time::Duration) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
            let _ = serving.await;
        }
        tokio::time::sleep(length).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.expect("re-bind the proxy");
        self.serving = Some(tokio::spawn(Self::serve(listener, self.upstream.clone(), self.stalled.clone())));
    }
}

/// Consumers of a queue now (a passive declare).
pub async fn consumers(spec: &ClusterSpec, queue: &str) -> u32 {
    use lapin::options::QueueDeclareOptions;
    let connection = coffee_engine::amqp::connect(&spec.amqp_url, "test").await.expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    let options = QueueDeclareOptions { passive: true, durable: true, ..Default::default() };
    channel.queue_declare(queue.into(), options, Default::default()).await.expect("queue").consumer_count()
}

/// A second process of one of a cluster's nodes, started by hand beside the cluster's own (as an orchestrator
/// that cannot reach the first, or a second `cluster up`, would), its log in `log`. Killed when dropped.
pub fn spawn_twin(spec: &ClusterSpec, node: &str, env: &[(&str, &str)], log: &Path) -> tokio::process::Child {
    let (_, args) = spec.nodes().into_iter().find(|(name, _)| name == node).expect("a node of the topology");
    let log = std::fs::File::create(log).expect("log file");
    tokio::process::Command::new(&spec.exe)
        .args(args)
        .env("AMQP_URL", &spec.amqp_url)
        .envs(env.iter().copied())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start a twin")
}

/// Whether a process exists and is not a zombie.
pub fn process_runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// Whether a queue exists on the broker (a passive declare; a missing queue closes only this probe's channel).
pub async fn queue_exists(spec: &ClusterSpec, queue: &str) -> bool {
    use lapin::options::QueueDeclareOptions;
    let connection = coffee_engine::amqp::connect(&spec.amqp_url, "test").await.expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    let options = QueueDeclareOptions { passive: true, ..Default::default() };
    channel.queue_declare(queue.into(), options, Default::default()).await.is_ok()
}

/// Runs `work` to its end while supervising `cluster` (restarting what exits) and letting `monkey` kill nodes
/// (`None`: kill nothing) through the one chaos loop; fails past `limit`. Returns what `work` returned and every
/// kill, pause, resume and restart.
pub async fn supervised<T: Send + 'static>(
    cluster: &mut LocalCluster,
    monkey: Option<coffee_ops::chaos::ChaosMonkey>,
    limit: std::time::Duration,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> (T, Vec<coffee_ops::chaos::ChaosEvent>) {
    use coffee_ops::chaos::{ChaosMonkey, Targets};
    let never = std::time::Duration::from_secs(1 << 30);
    let mut monkey = monkey.unwrap_or_else(|| ChaosMonkey::new(0, never, never, Targets::Random));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let running = tokio::spawn(async move {
        let output = work.await;
        let _ = done_tx.send(());
        output
    });
    let stop = async { done_rx.await.unwrap_or(()) };
    let events = tokio::time::timeout(
        limit,
        cluster.supervise_under_chaos(&mut monkey, stop, |e| eprintln!("{}", e.to_json_line())),
    )
    .await
    .expect("the work ends in time")
    .expect("supervision");
    (running.await.expect("the work does not panic"), events)
}

/// A client connection speaking raw frames, for tests that send what the client library never would.
pub struct RawClient {
    pub reader: FrameReader<OwnedReadHalf, GatewayFrame>,
    pub writer: FrameWriter<OwnedWriteHalf, ClientFrame>,
}

impl RawClient {
    pub async fn connect(gateway: &str) -> RawClient {
        let socket = tokio::net::TcpStream::connect(gateway).await.expect("connect to the gateway");
        let (read, write) = socket.into_split();
        RawClient { reader: FrameReader::new(read), writer: FrameWriter::new(write) }
    }

    /// Connects and opens a new session: `Hello`, answered by `Welcome`. Returns the session and its secret.
    pub async fn hello(gateway: &str) -> (RawClient, coffee_model::wire::SessionId, u128) {
        let mut client = RawClient::connect(gateway).await;
        client.writer.send(&ClientFrame::Hello).await.expect("send Hello");
        match client.reader.next().await.expect("an answer to Hello") {
            GatewayFrame::Welcome { session, secret, .. } => (client, session, secret),
            other => panic!("expected Welcome, got {other:?}"),
        }
    }
}

/// The machine's RabbitMQ, stopped and started as an operator would (`rabbitmqctl stop_app` / `start_app`):
/// every connection is closed, transient queues and exchanges vanish, durable queues and persistent messages
/// stay. Only for a test binary of its own (cargo runs test binaries one after another, so no other test's
/// broker goes away). Dropping it starts the broker again if a test failed with it stopped.
pub struct BrokerApp {
    stopped: bool,
}

impl BrokerApp {
    pub fn new() -> BrokerApp {
        BrokerApp { stopped: false }
    }

    fn rabbitmqctl(action: &str) {
        let status = std::process::Command::new("rabbitmqctl")
            .args(["-q", action])
            .status()
            .unwrap_or_else(|e| panic!("rabbitmqctl {action}: {e}"));
        assert!(status.success(), "rabbitmqctl {action} failed: {status}");
    }

    pub fn stop(&mut self) {
        Self::rabbitmqctl("stop_app");
        self.stopped = true;
    }

    pub fn start(&mut self) {
        Self::rabbitmqctl("start_app");
        Self::rabbitmqctl("await_startup");
        self.stopped = false;
    }
}

impl Default for BrokerApp {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for BrokerApp {
    fn drop(&mut self) {
        if self.stopped {
            Self::rabbitmqctl("start_app");
        }
    }
}

/// A three-node RabbitMQ cluster on this machine (`scripts/broker-cluster.sh`, beside the machine's broker),
/// stopped and removed when dropped.
pub struct BrokerCluster {
    /// The nodes' AMQP URLs, comma separated (an `AMQP_URL` with failover).
    pub urls: String,
}

impl BrokerCluster {
    fn script(args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/broker-cluster.sh");
        let output = std::process::Command::new(&script).args(args).output().expect("run broker-cluster.sh");
        assert!(
            output.status.success(),
            "broker-cluster.sh {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or_default().trim().to_owned()
    }

    /// Starts the three nodes and joins them into one cluster (about 30 s).
    pub fn start() -> BrokerCluster {
        BrokerCluster { urls: Self::script(&["start"]) }
    }

    /// SIGKILLs broker node `n` (1 to 3).
    pub fn kill(&self, n: u8) {
        Self::script(&["kill", &n.to_string()]);
    }

    /// Starts broker node `n` again; it rejoins the cluster.
    pub fn restart(&self, n: u8) {
        Self::script(&["restart", &n.to_string()]);
    }
}

impl Drop for BrokerCluster {
    fn drop(&mut self) {
        Self::script(&["stop"]);
    }
}
