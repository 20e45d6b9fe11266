//! Bad input loses nothing else: malformed rows are counted and skipped, a file with a wrong header is refused by
//! name, a bad frame closes only its connection, and an unreachable broker is named with how to start it.

use coffee_engine::protocol::{ClientFrame, FrameReader, GatewayFrame, PROTOCOL_VERSION};
use coffee_tests::harness::{assert_matches_reference, generate, node_binary, run_session, start_cluster, RawClient};
use coffee_tools::gen::Scale;
use tokio::io::AsyncWriteExt;

/// Appends malformed rows to a generated transactions file and adds a users file with a wrong header.
fn spoil(data: &std::path::Path) {
    let tx_dir = data.join("transactions");
    let first = std::fs::read_dir(&tx_dir).unwrap().map(|e| e.unwrap().path()).min().unwrap();
    let mut text = std::fs::read_to_string(&first).unwrap();
    text.push_str("bad-1,1,1,,,10.0,0.0,80.0\n"); // a field missing
    text.push_str("bad-2,one,1,,,10.0,0.0,80.0,2024-01-01 10:00:00\n"); // store id not a number
    text.push_str("bad-3,1,1,,,10.0,0.0,80.0,2024-13-01 10:00:00\n"); // no 13th month
    std::fs::write(&first, text).unwrap();
    std::fs::write(data.join("users/users_209901.csv"), "id,sex,born\n1,x,2000-01-01\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rows_are_counted_and_a_bad_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 5, &dir.path().join("data"));
    spoil(&data);
    let (spec, cluster) = start_cluster("bad-rows", "").await;
    let summary = run_session(&spec, &data, &dir.path().join("out")).await;
    cluster.stop().await.unwrap();
    assert_eq!(summary.malformed(), 3, "{summary:#?}");
    let spoiled = summary.files.iter().find(|f| f.malformed == 3).expect("the spoiled file");
    assert_eq!(spoiled.samples.len(), 3);
    assert!(spoiled.samples.iter().any(|s| s.contains("store_id")), "{:?}", spoiled.samples);
    let refused: Vec<_> = summary.files.iter().filter(|f| f.refused.is_some()).collect();
    assert_eq!(refused.len(), 1);
    assert!(refused[0].refused.as_deref().unwrap().contains("users_209901.csv"));
    // Everything else of the session is intact: the results equal the reference, which skips the same rows.
    assert_matches_reference(&summary, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_frame_closes_its_connection_not_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 6, &dir.path().join("data"));
    let (spec, cluster) = start_cluster("bad-frame", "all=1").await;

    // A frame of an unknown protocol version.
    let socket = tokio::net::TcpStream::connect(&spec.gateway_addr).await.unwrap();
    let (read, mut write) = socket.into_split();
    write.write_all(&[0, 0, 0, 3, PROTOCOL_VERSION + 1, 0, 0]).await.unwrap();
    let mut reader = FrameReader::<_, GatewayFrame>::new(read);
    match reader.next().await.unwrap() {
        GatewayFrame::Error { message, .. } => assert!(message.contains("version"), "{message}"),
        other => panic!("expected an error frame, got {other:?}"),
    }
    assert!(reader.next().await.is_err(), "the connection is closed after the error");

    // A valid Hello, then rows out of order.
    let (RawClient { mut reader, mut writer }, _, _) = RawClient::hello(&spec.gateway_addr).await;
    let batch = coffee_model::message::Batch::Stores(vec![]);
    writer.send(&ClientFrame::Rows { kind: coffee_model::model::FileKind::Stores, seq: 5, batch }).await.unwrap();
    match reader.next().await.unwrap() {
        GatewayFrame::Error { message, .. } => assert!(message.contains("out of order"), "{message}"),
        other => panic!("expected an error frame, got {other:?}"),
    }

    // The gateway still serves a normal session, exactly.
    let summary = run_session(&spec, &data, &dir.path().join("out")).await;
    cluster.stop().await.unwrap();
    assert_matches_reference(&summary, &data);
}

#[test]
fn an_unreachable_broker_is_named_with_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(node_binary())
        .args(["run", "--data", "../data/sample", "--out"])
        .arg(dir.path())
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("GATEWAY_ADDR", "127.0.0.1:1")
        .env("COFFEE_NAMESPACE", "test-unreachable")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line: {stderr}"));
    // The broker is named, its password is not.
    assert!(
        error.contains("amqp://guest:***@127.0.0.1:1/%2f") && error.contains("rabbitmq-server -detached"),
        "{error}"
    );
}
