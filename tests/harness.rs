//! Running a real cluster from a test: the `coffee-node` binary of this crate as every node, a unique queue
//! namespace and gateway port per test (so tests share the one broker in parallel), and result checks against
//! the reference.

use coffee::client::{self, ClientOptions, ClientSummary};
use coffee::cluster::{ClusterSpec, LocalCluster};
use coffee::protocol::{ClientFrame, FrameReader, FrameWriter, GatewayFrame};
use coffee::topology::Topology;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The broker the tests use (`AMQP_URL` overrides it).
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| coffee::amqp::DEFAULT_AMQP_URL.to_owned())
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
pub fn generate(scale: coffee::gen::Scale, seed: u64, dir: &Path) -> PathBuf {
    coffee::gen::generate(&coffee::gen::GenOptions { scale, seed, out: dir.to_owned() }).expect("generate");
    dir.to_owned()
}

/// Runs one session against the cluster's gateway.
pub async fn run_session(spec: &ClusterSpec, data: &Path, out: &Path) -> ClientSummary {
    let options =
        ClientOptions { gateway: spec.gateway_addr.clone(), data_dir: data.to_owned(), out_dir: out.to_owned() };
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

/// Asserts a session's NDJSON equals the reference's output for its data, as multisets.
pub fn assert_matches_reference(summary: &ClientSummary, data: &Path) {
    let expected = coffee::reference::run(data).expect("reference").lines;
    let actual = read_lines(&summary.output);
    let comparison = coffee::compare::compare_lines(&expected, &actual);
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
    options: coffee::cluster::StartOptions,
) -> (ClusterSpec, LocalCluster) {
    let spec = cluster_spec(test, replicas);
    let cluster =
        LocalCluster::start_with(spec.clone(), options).await.unwrap_or_else(|e| panic!("cluster start: {e:#}"));
    (spec, cluster)
}

/// Session files left in the cluster's state folder (every node's `finished.log` aside).
pub fn session_files(spec: &ClusterSpec) -> Vec<PathBuf> {
    coffee::state::NodeStore::session_files(&spec.run_dir().join("state")).expect("read the state folder")
}

/// Waits until no node holds session files any more (a node deletes them right after its last ack).
pub async fn wait_for_no_session_files(spec: &ClusterSpec) {
    for _ in 0..100 {
        if session_files(spec).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("session files remain: {:?}", session_files(spec));
}

/// Messages waiting in each of the cluster's queues.
pub async fn queue_depths(spec: &ClusterSpec) -> Vec<(String, u32)> {
    use lapin::options::QueueDeclareOptions;
    let connection = coffee::amqp::connect(&spec.amqp_url, "test").await.expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    let mut depths = Vec::new();
    for queue in spec.topology.all_queues() {
        let options = QueueDeclareOptions { passive: true, durable: true, ..Default::default() };
        let declared = channel.queue_declare(queue.as_str().into(), options, Default::default()).await.expect("queue");
        depths.push((queue, declared.message_count()));
    }
    depths
}

/// A TCP proxy in front of RabbitMQ, so a test can cut every node off the broker (an outage, as when the
/// broker restarts) and bring it back, without touching the broker that other tests share.
pub struct BrokerProxy {
    port: u16,
    upstream: String,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl BrokerProxy {
    pub async fn start(upstream: &str) -> BrokerProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("addr").port();
        let mut proxy = BrokerProxy { port, upstream: upstream.to_owned(), serving: None };
        proxy.serving = Some(tokio::spawn(Self::serve(listener, proxy.upstream.clone())));
        proxy
    }

    async fn serve(listener: tokio::net::TcpListener, upstream: String) {
        // Dropping the set (when this task is aborted) aborts every connection it carries.
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            connections.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    }

    /// The AMQP URL that goes through the proxy.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Cuts every connection and refuses new ones for `length`, then serves again on the same port.
    pub async fn outage(&mut self, length: std::time::Duration) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
            let _ = serving.await;
        }
        tokio::time::sleep(length).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.expect("re-bind the proxy");
        self.serving = Some(tokio::spawn(Self::serve(listener, self.upstream.clone())));
    }
}

/// Whether a queue exists on the broker (a passive declare; a missing queue closes only this probe's channel).
pub async fn queue_exists(spec: &ClusterSpec, queue: &str) -> bool {
    use lapin::options::QueueDeclareOptions;
    let connection = coffee::amqp::connect(&spec.amqp_url, "test").await.expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    let options = QueueDeclareOptions { passive: true, ..Default::default() };
    channel.queue_declare(queue.into(), options, Default::default()).await.is_ok()
}

/// Runs `work` to its end while supervising `cluster` (restarting what exits) and letting `monkey` kill nodes
/// (`None`: kill nothing); fails past `limit`. Returns what `work` returned and every kill and restart.
pub async fn supervised<T: Send + 'static>(
    cluster: &mut LocalCluster,
    monkey: Option<coffee::chaos::ChaosMonkey>,
    limit: std::time::Duration,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> (T, Vec<coffee::chaos::ChaosEvent>) {
    use coffee::chaos::{ChaosMonkey, Targets};
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
        coffee::chaos::run_on_cluster(cluster, &mut monkey, stop, |e| eprintln!("{}", e.to_json_line())),
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
    pub async fn hello(gateway: &str) -> (RawClient, coffee::message::SessionId, u128) {
        let mut client = RawClient::connect(gateway).await;
        client.writer.send(&ClientFrame::Hello).await.expect("send Hello");
        match client.reader.next().await.expect("an answer to Hello") {
            GatewayFrame::Welcome { session, secret, .. } => (client, session, secret),
            other => panic!("expected Welcome, got {other:?}"),
        }
    }
}
