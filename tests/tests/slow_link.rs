//! A client on a slow link (issue 23, item 10): the gateway's frame timeout (300 ms here, to keep the test short)
//! bounds how long an upload may stand still, not how long a frame may take. Through a relay that passes 12 KiB/s
//! towards the gateway, the client's larger frames take a second or more each, and the session is exact. Before, a frame had to arrive whole within
//! the timeout: the gateway closed the connection mid-frame, again at every resume, and the session was lost.

use coffee_engine::client::{self, ClientOptions};
use coffee_ops::cluster::{LocalCluster, StartOptions};
use coffee_tests::harness::{assert_matches_reference, cluster_spec, generate};
use coffee_tools::gen::Scale;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the relay lets through towards the gateway, per second.
const RATE: usize = 12 * 1024;

/// A relay on loopback to `upstream` that passes [`RATE`] bytes a second from its clients (and the answers back
/// at full speed), for as long as the test runs. Its address.
async fn slow_link(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else { continue };
            let ((mut from_client, mut to_client), (mut from_server, mut to_server)) =
                (client.into_split(), server.into_split());
            tokio::spawn(async move {
                let mut chunk = vec![0u8; 2048];
                while let Ok(n @ 1..) = from_client.read(&mut chunk).await {
                    if to_server.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs_f64(n as f64 / RATE as f64)).await;
                }
                let _ = to_server.shutdown().await;
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                let _ = to_client.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_a_slow_link_keeps_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 17, &dir.path().join("data"));
    let spec = cluster_spec("slowlink", "all=1");
    let timeout = vec![("GATEWAY_FRAME_TIMEOUT".to_owned(), "300ms".to_owned())];
    let options = StartOptions { node_env: BTreeMap::from([("gateway".to_owned(), timeout)]), ..Default::default() };
    let cluster = LocalCluster::start_with(spec.clone(), options).await.unwrap();

    let gateway = slow_link(spec.gateway_addr.clone()).await;
    let options = ClientOptions::new(&gateway, &data, dir.path().join("out"));
    let started = Instant::now();
    let summary = tokio::time::timeout(Duration::from_secs(120), client::run_session(&options, Arc::new(|_| {})))
        .await
        .expect("the session ends")
        .expect("a session over a slow link");
    let took = started.elapsed();
    assert_matches_reference(&summary, &data);
    // The upload itself was slow: its bytes at the relay's rate take several frame timeouts.
    assert!(took > Duration::from_secs(5), "the link was not slow: {took:?}");
    let log = std::fs::read_to_string(spec.log_path("gateway")).unwrap_or_default();
    assert!(!log.contains("during the upload"), "the gateway cut the upload:\n{log}");
    cluster.stop().await.unwrap();
}
