//! A client resumed after its gateway died mid-upload seeks past the batches the gateway already has, instead
//! of parsing them again: with a gateway that waits only 400 ms between two frames, a resume that re-read
//! ~180 k rows first would be cut off before it sent anything, again and again.
//!
//! Batches of 100 rows (the client's `batch_rows`), so there are thousands of them and the gateway's progress
//! records (every 16 batches of a kind) land in the middle of the transaction items.

use coffee_engine::client::{self, ClientOptions};
use coffee_ops::cluster::StartOptions;
use coffee_tests::harness::{assert_matches_reference, settle, start_cluster_with, supervised};
use coffee_tools::gen::Scale;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_upload_seeks_past_what_the_gateway_has() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let generated = coffee_tools::gen::generate(&coffee_tools::gen::GenOptions {
        scale: Scale::Small,
        seed: 31,
        out: data.clone(),
    })
    .expect("generate");
    // About 3,600 batches in all; the gateway dies at the 3,500th, deep in the transaction items.
    let options = StartOptions {
        env: vec![("GATEWAY_FRAME_TIMEOUT".into(), "400ms".into())],
        first_start_env: [(
            "gateway".to_owned(),
            vec![("FAILPOINTS".to_owned(), "gateway-mid-upload=3500*off->return".to_owned())],
        )]
        .into(),
        ..Default::default()
    };
    let (spec, mut cluster) = start_cluster_with("resume-seek", "all=1", options).await;
    let session = {
        let (spec, data, out) = (spec.clone(), data.clone(), dir.path().join("out"));
        async move {
            let options = ClientOptions { batch_rows: 100, ..ClientOptions::new(&spec.gateway_addr, &data, &out) };
            client::run_session(&options, Arc::new(|_| {})).await.expect("the session")
        }
    };
    let (summary, events) = supervised(&mut cluster, None, Duration::from_secs(180), session).await;
    assert!(events.iter().any(|e| e.node == "gateway" && e.action == "restart"), "the gateway died: {events:?}");
    assert_matches_reference(&summary, &data);
    let rows: u64 = summary.files.iter().map(|f| f.rows_sent).sum();
    assert_eq!(rows, generated.total_rows(), "every row counted once in the files' reports: {:?}", summary.files);
    settle(&mut cluster, &spec).await;
    cluster.stop().await.unwrap();
}
