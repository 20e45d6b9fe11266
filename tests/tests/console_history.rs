//! The run history: every ended session is kept on disk with its dataset, topology, duration, rows per second,
//! the faults during it and whether it equals the reference. A console started again on the same data folder
//! lists the sessions of the one before, downloads and compares them; past its bound the oldest go first, with
//! their NDJSON.

use coffee_tests::console::{self, Console};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Waits until the session is done and checked against the reference; its view.
async fn checked(console: &Console, session: &str) -> Value {
    console
        .wait_session(session, "done and checked", |v| v["state"] == "done" && !v["matches_reference"].is_null())
        .await
}

async fn launch(console: &Console) -> String {
    console.launch("generated-tiny").await
}

async fn start(data_dir: &Path) -> Console {
    let mut config = console::config(data_dir, "console-history");
    config.replicas = "all=1".into();
    config.history_max = 2;
    Console::start(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ended_sessions_outlive_the_console_and_the_oldest_go_first() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let first = start(data_dir.path()).await;
    first.post("/api/datasets/generate", json!({ "scale": "tiny" })).await;
    let mut events = first.events().await;
    let old = launch(&first).await;
    // A fault during the session is counted in its record.
    first.post("/api/nodes/q3_agg-0/kill", json!({})).await;
    let view = checked(&first, &old).await;
    assert_eq!(view["matches_reference"], true, "{view}");
    assert!(view["faults"].as_u64() >= Some(1), "{view}");
    // The page hears the verdict.
    let heard = events.wait("session_checked", |e| e["session"] == old.as_str()).await;
    assert_eq!((&heard["matches_reference"], &heard["faults"]), (&view["matches_reference"], &view["faults"]));
    let downloaded = first.http.get(format!("{}/api/sessions/{old}/ndjson", first.base)).send().await.expect("GET");
    let expected = downloaded.text().await.expect("the NDJSON");
    first.app.shutdown().await;
    // As a console stopped during the session's reference check leaves it: done, not checked.
    let record_path = data_dir.path().join(format!("history/{old}.json"));
    let mut record: Value = serde_json::from_slice(&std::fs::read(&record_path).expect("its record")).expect("JSON");
    assert_eq!(record["view"]["checked"], true, "{record}");
    record["view"]["matches_reference"] = Value::Null;
    record["view"]["checked"] = json!(false);
    std::fs::write(&record_path, serde_json::to_vec(&record).expect("JSON")).expect("rewrite the record");

    // A new console on the same data folder: the session is listed as it ended (and checked now, since it was
    // not), and downloads the same.
    let second = start(data_dir.path()).await;
    let listed = second.get("/api/sessions").await;
    assert!(listed.as_array().expect("a list").iter().any(|s| s["id"] == old.as_str()), "not listed: {listed}");
    let restored = second.wait_session(&old, "checked again", |v| v["checked"] == true).await;
    for field in [
        "state",
        "dataset",
        "dataset_name",
        "topology",
        "faults",
        "matches_reference",
        "checked",
        "rows_sent",
        "elapsed_ms",
    ] {
        assert_eq!(restored[field], view[field], "{field}: {restored}");
    }
    assert_eq!(restored["topology"], "tx_filter=1,item_filter=1,q2_agg=1,q3_agg=1,q4_count=1,q4_top=1");
    assert_eq!(restored["dataset_name"], "Generated · tiny");
    let again = second.http.get(format!("{}/api/sessions/{old}/ndjson", second.base)).send().await.expect("GET");
    assert_eq!(again.text().await.expect("the NDJSON"), expected);

    // Comparable with a session of this console.
    let new = launch(&second).await;
    checked(&second, &new).await;
    let compared = second.get(&format!("/api/compare?left={old}&right={new}")).await;
    assert_eq!(compared["comparison"]["equal"], true, "{compared}");

    // Bounded at two: a third session drops the oldest, its NDJSON with it.
    let newest = launch(&second).await;
    checked(&second, &newest).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids: Vec<String> = second
            .get("/api/sessions")
            .await
            .as_array()
            .expect("list")
            .iter()
            .map(|s| s["id"].as_str().expect("id").to_owned())
            .collect();
        if ids == [new.clone(), newest.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "the oldest session was not dropped: {ids:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!data_dir.path().join(format!("results/client-{old}.ndjson")).exists(), "its NDJSON stays");
    assert_eq!(std::fs::read_dir(data_dir.path().join("history")).expect("history").count(), 2);
    second.app.shutdown().await;
}
