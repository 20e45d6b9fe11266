//! The console's HTTP API and event stream against the real broker: a console started in-process runs its own
//! cluster of `coffee-node` processes; the test uploads a generated tiny dataset, launches two sessions on it,
//! downloads both NDJSON files and checks them against the reference, checks the compare endpoint, and kills a
//! worker and then the leading monitor to see each kill, and the monitors' restart, in the event stream.

use coffee_tests::console::{self, json_of, Console};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a tiny session may take on a loaded 2-core machine.
const SESSION_LIMIT: Duration = Duration::from_secs(120);

/// A multipart form with every CSV file of a dataset folder.
fn dataset_form(dir: &Path) -> (reqwest::multipart::Form, usize) {
    let mut form = reqwest::multipart::Form::new();
    let mut files = 0;
    for kind in std::fs::read_dir(dir).expect("dataset dir") {
        for file in std::fs::read_dir(kind.expect("entry").path()).expect("kind dir") {
            let path = file.expect("entry").path();
            let name = path.file_name().expect("name").to_string_lossy().into_owned();
            let part = reqwest::multipart::Part::bytes(std::fs::read(&path).expect("read")).file_name(name);
            form = form.part("files", part);
            files += 1;
        }
    }
    (form, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_launch_download_compare_kill() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let generated = tempfile::tempdir().expect("tempdir");
    coffee_tools::gen::generate(&coffee_tools::gen::GenOptions {
        scale: coffee_tools::gen::Scale::Tiny,
        seed: 11,
        out: generated.path().to_owned(),
    })
    .expect("generate");
    // One malformed row: skipped by the client (and by the reference), and shown on the session.
    let spoiled =
        std::fs::read_dir(generated.path().join("transactions")).expect("dir").flatten().map(|e| e.path()).min();
    let spoiled = spoiled.expect("a transactions file");
    let mut text = std::fs::read_to_string(&spoiled).expect("read");
    text.push_str("bad-1,1,1,,,10.0,0.0,80.0\n");
    std::fs::write(&spoiled, text).expect("write");
    let mut config = console::config(data_dir.path(), "console-api");
    config.replicas = "all=2".into();
    let console = Console::start(config).await;
    let status = console.get("/api/status").await;
    assert_eq!(status["cluster"]["state"], "up", "cluster not up: {status}");
    let mut events = console.events().await;

    // A file with a header of no dataset kind refuses the upload, naming the file; nothing is kept.
    let bad = reqwest::multipart::Form::new()
        .part("files", reqwest::multipart::Part::bytes(b"a,b\n1,2\n".to_vec()).file_name("../../evil.csv"));
    let response =
        console.http.post(format!("{}/api/datasets/upload", console.base)).multipart(bad).send().await.expect("POST");
    assert_eq!(response.status(), 400);
    let error = response.json::<Value>().await.expect("json")["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("evil.csv") && error.contains("header"), "{error}");
    assert_eq!(std::fs::read_dir(data_dir.path().join("uploads")).expect("uploads").count(), 0);

    // Upload the generated dataset.
    let (form, files) = dataset_form(generated.path());
    let response =
        console.http.post(format!("{}/api/datasets/upload", console.base)).multipart(form).send().await.expect("POST");
    let dataset = json_of(response, "upload").await;
    assert_eq!(dataset["files"], files, "{dataset}");
    assert!(dataset["rows"].as_u64().unwrap_or(0) > 0, "{dataset}");
    let id = dataset["id"].as_str().expect("dataset id").to_owned();
    let listed = console.get("/api/datasets").await;
    assert!(listed.as_array().expect("list").iter().any(|d| d["id"] == id.as_str()), "{listed}");

    // Two sessions at once.
    let launched = console.post("/api/sessions", json!({ "dataset": id, "count": 2 })).await;
    let sessions: Vec<String> =
        launched["sessions"].as_array().expect("ids").iter().map(|s| s.as_str().expect("id").to_owned()).collect();
    assert_eq!(sessions.len(), 2);
    assert_ne!(sessions[0], sessions[1]);
    let started = Instant::now();
    for session in &sessions {
        loop {
            let view = console.get(&format!("/api/sessions/{session}")).await;
            match view["state"].as_str() {
                Some("done") => break,
                Some("running") if started.elapsed() < SESSION_LIMIT => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                _ => panic!("session {session} did not complete: {view}"),
            }
        }
        events.wait("session_done", |e| e["session"] == session.as_str()).await;
        // Shown by the upload's name, not its id, and with the row its client skipped.
        let view = console.get(&format!("/api/sessions/{session}")).await;
        assert_eq!((&view["dataset"], &view["dataset_name"]), (&dataset["id"], &dataset["name"]), "{view}");
        assert_eq!(view["malformed"], 1, "{view}");
        let skipped = &view["files_with_issues"];
        assert_eq!(skipped.as_array().map(Vec::len), Some(1), "{view}");
        let name = spoiled.file_name().expect("name").to_string_lossy();
        assert_eq!((&skipped[0]["file"], &skipped[0]["malformed"]), (&json!(name), &json!(1)), "{view}");
        assert!(skipped[0]["samples"][0].as_str().is_some_and(|s| s.starts_with("line ")), "{view}");
    }

    // Each download equals the reference, and the counts shown match the file.
    let expected = coffee_tools::reference::run(generated.path()).expect("reference").lines;
    for session in &sessions {
        let url = format!("{}/api/sessions/{session}/ndjson", console.base);
        let response = console.http.get(url).send().await.expect("GET ndjson");
        assert_eq!(response.status(), 200);
        let disposition = response.headers()["content-disposition"].to_str().expect("ascii").to_owned();
        assert!(disposition.contains(&format!("client-{session}.ndjson")), "{disposition}");
        let text = response.text().await.expect("body");
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let comparison = coffee_tools::compare::compare_lines(&expected, &lines);
        assert!(comparison.all_equal(), "session {session} differs from the reference:\n{comparison}");
        let view = console.get(&format!("/api/sessions/{session}")).await;
        let counted: u64 = view["results"].as_object().expect("counts").values().filter_map(Value::as_u64).sum();
        assert_eq!(counted, lines.len() as u64, "{view}");
        let results = console.get(&format!("/api/sessions/{session}/results")).await;
        assert!(results["lines"]["Q3"].as_array().is_some_and(|l| !l.is_empty()), "no Q3 lines kept");
    }

    // The compare endpoint agrees.
    let compared = console.get(&format!("/api/compare?left={}&right={}", sessions[0], sessions[1])).await;
    assert_eq!(compared["comparison"]["equal"], true, "{compared}");
    assert_eq!(compared["comparison"]["queries"].as_array().map(Vec::len), Some(5), "{compared}");

    // Unknown or malformed ids are plain 404s, never paths.
    for path in ["/api/sessions/../../etc/passwd/ndjson", "/api/sessions/not-a-uuid/ndjson"] {
        let response = console.http.get(format!("{}{path}", console.base)).send().await.expect("GET");
        assert_eq!(response.status(), 404, "{path}");
    }

    // Kill a node: the event stream reports the kill, then a monitor's restart. The monitors must have heard it
    // first: a node they never heard is given their start grace (it may still be waiting for the broker), and
    // the cluster's own supervisor restarts it before that runs out. Every node beating now, and one more beat
    // interval, means every monitor has heard every node.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let nodes = console.get("/api/nodes").await;
        let all_beating = nodes
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n["heartbeat_age_ms"].as_u64().is_some_and(|age| age < 1500)));
        if all_beating {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not every node beats: {nodes}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let nodes = console.get("/api/nodes").await;
    assert_eq!(nodes.as_array().map(Vec::len), Some(13 + 3), "the gateway, 12 stage replicas, 3 monitors: {nodes}");
    console.post("/api/nodes/q3_agg-1/kill", json!({})).await;
    events.wait("node_killed", |e| e["node"] == "q3_agg-1").await;
    let restarted = events.wait("node_restarted", |e| e["node"] == "q3_agg-1").await;
    assert!(restarted["by"].as_str().is_some_and(|by| by.starts_with("monitor-")), "{restarted}");
    let nodes = console.get("/api/nodes").await;
    let node = nodes.as_array().expect("nodes").iter().find(|n| n["name"] == "q3_agg-1").expect("q3_agg-1").clone();
    assert_eq!(node["restarts"], 1, "{node}");

    // A restart from the page, at once and attributed to the console.
    console.post("/api/nodes/q3_agg-1/restart", json!({})).await;
    let restarted = events.wait("node_restarted", |e| e["node"] == "q3_agg-1" && e["restarts"] == 2).await;
    assert_eq!(restarted["by"], "the console", "{restarted}");
    // Its new process reports its state on disk and how its recovery went, once it is ready.
    let deadline = Instant::now() + Duration::from_secs(15);
    let state = loop {
        let nodes = console.get("/api/nodes").await;
        let node = nodes.as_array().expect("a list").iter().find(|n| n["name"] == "q3_agg-1").cloned().expect("listed");
        if node["state"]["ready_ms"].as_u64() > Some(0) {
            break node["state"].clone();
        }
        assert!(Instant::now() < deadline, "no recovery reported: {node}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for field in ["log_bytes", "snapshot_bytes", "recovery_ms", "replayed_records", "recovered_sessions"] {
        assert!(state[field].is_u64(), "{field}: {state}");
    }

    // Paused from the page: stopped where it stands, then let go on.
    console.post("/api/nodes/q2_agg-0/pause", json!({ "ms": 500 })).await;
    events.wait("node_paused", |e| e["node"] == "q2_agg-0" && e["for_ms"] == 500).await;
    events.wait("node_resumed", |e| e["node"] == "q2_agg-0").await;

    // Poison thrown at a stage is set aside, and the page hears how much (the status says it too).
    let spec = console.app.state.nodes.spec().clone();
    let publisher = coffee_engine::amqp::connect(&spec.amqp_url, "test-poison").await.expect("broker");
    let publisher = coffee_engine::amqp::Publisher::new(&publisher, Default::default()).await.expect("publisher");
    let queue = spec.topology.queue(coffee_model::node::StageKind::Q3Agg, 0);
    let confirm = publisher.publish_bytes(&queue, &[99, 1, 2, 3]).await.expect("publish");
    coffee_engine::amqp::await_confirms(vec![confirm]).await.expect("confirmed");
    let dead = events.wait("dead_letters", |e| e["counts"]["q3_agg"] == 1).await;
    assert_eq!(dead["counts"]["gateway"], 0, "{dead}");
    assert_eq!(console.get("/api/status").await["dead_letters"]["q3_agg"], 1);
    // Listed with why, from where, its size and a preview.
    let listed = console.get("/api/dead-letters").await;
    let letter = &listed.as_array().expect("a list")[0];
    assert_eq!((&letter["stage"], &letter["from"], &letter["bytes"]), (&json!("q3_agg"), &json!(queue), &json!(4)));
    assert!(letter["reason"].as_str().is_some_and(|r| r != "not recorded"), "{letter}");
    assert!(letter["preview"].as_str().is_some_and(|p| p.starts_with("undecodable")), "{letter}");
    // A second one, then drop one of the two by its id.
    let confirm = publisher.publish_bytes(&queue, &[98, 7]).await.expect("publish");
    coffee_engine::amqp::await_confirms(vec![confirm]).await.expect("confirmed");
    events.wait("dead_letters", |e| e["counts"]["q3_agg"] == 2).await;
    let id = letter["id"].as_str().expect("an id").to_owned();
    assert_eq!(console.post(&format!("/api/dead-letters/{id}/drop"), json!({})).await["id"], id.as_str());
    events.wait("dead_letters", |e| e["counts"]["q3_agg"] == 1).await;
    let listed = console.get("/api/dead-letters").await;
    let left = listed.as_array().expect("a list");
    assert_eq!(left.len(), 1, "{listed}");
    assert_ne!(left[0]["id"], id.as_str());
    // A requeue asks to be confirmed; confirmed, the message goes back to its stage, which sets it aside again
    // (it is poison): a new dead letter of the same bytes.
    let other = left[0]["id"].as_str().expect("an id").to_owned();
    let url = format!("{}/api/dead-letters/{other}/requeue", console.base);
    assert_eq!(console.http.post(&url).json(&json!({})).send().await.expect("POST").status(), 400);
    console.post(&format!("/api/dead-letters/{other}/requeue"), json!({ "confirm": true })).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let listed = console.get("/api/dead-letters").await;
        let letters = listed.as_array().expect("a list");
        if letters.len() == 1 && letters[0]["id"] != other.as_str() {
            assert_eq!(letters[0]["bytes"], 2, "{listed}");
            break;
        }
        assert!(Instant::now() < deadline, "the requeued letter did not come back: {listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A dead letter forged by whoever can publish on the broker, naming another queue as where it came from
    // (here the cluster's control queue, where restart requests go), is not requeued there.
    let mut headers = lapin::types::FieldTable::default();
    let control = spec.topology.control_queue();
    headers.insert("x-coffee-from".into(), lapin::types::AMQPValue::LongString(control.as_str().into()));
    let forged = lapin::BasicProperties::default().with_message_id("forged".into()).with_headers(headers);
    let dead_letters = spec.topology.dead_letter_queue("q3_agg");
    let confirm = publisher.publish_bytes_with(&dead_letters, &[1, 2, 3], forged).await.expect("publish");
    coffee_engine::amqp::await_confirms(vec![confirm]).await.expect("confirmed");
    events.wait("dead_letters", |e| e["counts"]["q3_agg"] == 2).await;
    let url = format!("{}/api/dead-letters/forged/requeue", console.base);
    let refused = console.http.post(&url).json(&json!({ "confirm": true })).send().await.expect("POST");
    assert_eq!(refused.status(), 409);
    let said = refused.text().await.expect("a body");
    assert!(said.contains("no stage's input queue"), "{said}");
    // Cleared from the page: dropped, and the count goes back to zero.
    assert_eq!(console.post("/api/dead-letters/purge", json!({})).await["purged"], 2);
    events.wait("dead_letters", |e| e["counts"]["q3_agg"] == 0).await;

    // The leading monitor is a node too: killed, the console's supervisor revives it at once (it never depends
    // on its own children to restart them).
    console.post("/api/nodes/monitor-2/kill", json!({})).await;
    let revived = events.wait("node_restarted", |e| e["node"] == "monitor-2").await;
    assert_eq!(revived["by"], coffee_ops::cluster::SUPERVISOR, "{revived}");

    console.app.shutdown().await;
}
