//! Hostile clients at the gateway: random bytes, an oversized length prefix, a stalled half frame, a greedy
//! peer, and 500 connections opened and dropped. Each is refused or dropped; two normal clients running
//! meanwhile still get exact results.

use coffee_engine::protocol::{ClientFrame, GatewayFrame};
use coffee_ops::cluster::StartOptions;
use coffee_tests::harness::{assert_matches_reference, generate, run_session, start_cluster_with, RawClient};
use coffee_tools::gen::Scale;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the gateway closes the connection (or 5 s pass); returns what it sent.
async fn until_closed(socket: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut seen)).await.expect("closed in time");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_dropped_and_normal_ones_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 31, &dir.path().join("data"));
    let env = [
        ("GATEWAY_HANDSHAKE_TIMEOUT", "1s"),
        ("GATEWAY_FRAME_TIMEOUT", "1s"),
        ("GATEWAY_MAX_CONNECTIONS_PER_PEER", "20"),
    ];
    let options =
        StartOptions { env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..Default::default() };
    let (spec, cluster) = start_cluster_with("abuse", "all=2", options).await;
    let addr = spec.gateway_addr.clone();

    // Random bytes: an error frame or a plain close, never a crash.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for _ in 0..20 {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        let garbage: Vec<u8> = (0..rng.gen_range(1..2000)).map(|_| rng.gen()).collect();
        let _ = socket.write_all(&garbage).await;
        until_closed(&mut socket).await;
    }

    // A length prefix past the 2 MiB limit: refused before anything is buffered.
    let mut socket = TcpStream::connect(&addr).await.unwrap();
    socket.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let answer = until_closed(&mut socket).await;
    assert!(String::from_utf8_lossy(&answer).contains("frame"), "an error frame names the problem: {answer:?}");

    // Half a frame, then silence: dropped after the handshake timeout; and mid-upload, after the frame timeout.
    let mut socket = TcpStream::connect(&addr).await.unwrap();
    socket.write_all(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
    until_closed(&mut socket).await;
    let (RawClient { mut reader, mut writer }, _, _) = RawClient::hello(&addr).await;
    writer.send(&ClientFrame::EndOfFile { kind: coffee_model::model::FileKind::Stores, batches: 0 }).await.unwrap();
    let stalled = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match reader.next().await {
                Ok(GatewayFrame::Error { message, .. }) => break message,
                Ok(_) => continue,
                Err(e) => break e.to_string(),
            }
        }
    })
    .await
    .expect("a stalled upload is dropped");
    assert!(stalled.contains("within"), "{stalled}");

    // A greedy peer: past 20 connections from one address, the gateway closes new ones at once.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    let mut refused = TcpStream::connect(&addr).await.unwrap();
    assert!(until_closed(&mut refused).await.is_empty(), "the 21st connection is closed without a word");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Two normal clients, while 500 connections open and drop (at most 10 at a time).
    let flood = tokio::spawn({
        let addr = addr.clone();
        async move {
            for _ in 0..50 {
                let wave: Vec<_> = (0..10).map(|_| TcpStream::connect(addr.clone())).collect();
                for socket in futures::future::join_all(wave).await {
                    drop(socket);
                }
            }
        }
    });
    let outs: Vec<_> = (0..2).map(|i| dir.path().join(format!("out-{i}"))).collect();
    let sessions = futures::future::join_all(outs.iter().map(|out| run_session(&spec, &data, out))).await;
    flood.await.unwrap();
    for summary in &sessions {
        assert_matches_reference(summary, &data);
    }
    cluster.stop().await.unwrap();
}

fn gateway_env(env: &[(&str, &str)]) -> StartOptions {
    StartOptions { env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..Default::default() }
}

/// A flood of sessions that cost their clients nothing: 320 clients from one address over six seconds, each
/// saying Hello and gone a quarter of a second later. A real client started right after gets its session
/// through, exact. Before, each empty session held its slot for the whole grace: the 256 slots were full and
/// the client, refused with `Busy`, gave up. Now an empty session gives its slot back within a second, an
/// address holds at most 64 sessions, and a client told `Busy` tries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_empty_sessions_does_not_lock_out_a_real_client() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 33, &dir.path().join("data"));
    let (spec, cluster) = start_cluster_with("flood", "all=1", gateway_env(&[("SESSION_GRACE", "10s")])).await;
    let flood: Vec<_> = (0..320)
        .map(|i| {
            let addr = spec.gateway_addr.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 6_000 / 320)).await;
                let Ok(mut socket) = TcpStream::connect(&addr).await else { return };
                let mut writer = coffee_engine::protocol::FrameWriter::<_, ClientFrame>::new(&mut socket);
                let _ = writer.send(&ClientFrame::Hello).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            })
        })
        .collect();
    for client in flood {
        client.await.unwrap();
    }
    let summary = run_session(&spec, &data, &dir.path().join("out")).await;
    assert_matches_reference(&summary, &data);
    cluster.stop().await.unwrap();
}

/// A client that ends every file at once (five empty files) and then reads nothing: the gateway sends it the
/// query ends, which it never acks. Past the read timeout the gateway closes its connection, the session waits
/// its grace and is purged, and its slot goes to the next client (the gateway takes one session here). Before,
/// such a client kept its slot for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_gives_its_slot_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 34, &dir.path().join("data"));
    let env = [("GATEWAY_MAX_SESSIONS", "1"), ("GATEWAY_READ_TIMEOUT", "2s"), ("SESSION_GRACE", "1s")];
    let (spec, cluster) = start_cluster_with("unread", "all=1", gateway_env(&env)).await;
    let (mut client, _, _) = RawClient::hello(&spec.gateway_addr).await;
    for kind in coffee_model::model::FileKind::ALL {
        client.writer.send(&ClientFrame::EndOfFile { kind, batches: 0 }).await.unwrap();
    }
    // The real client is told `Busy` until the idle one's slot is given back, and tries again meanwhile.
    let summary = run_session(&spec, &data, &dir.path().join("out")).await;
    assert_matches_reference(&summary, &data);
    drop(client);
    cluster.stop().await.unwrap();
}
