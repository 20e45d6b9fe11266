//! The console's HTTP API and event stream against the real broker: a console started in-process runs its own
//! cluster of `coffee-node` processes; the test uploads a generated tiny dataset, launches two sessions on it,
//! downloads both NDJSON files and checks them against the reference, checks the compare endpoint, and kills a
//! node to see the kill and the restart in the event stream.

use coffee_console::{App, Config};
use coffee_tests::harness::{amqp_url, free_addr, unique_namespace};
use futures::StreamExt;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a tiny session may take on a loaded 2-core machine.
const SESSION_LIMIT: Duration = Duration::from_secs(120);

struct Console {
    app: App,
    base: String,
    http: reqwest::Client,
}

impl Console {
    async fn start(data_dir: &Path) -> Console {
        let config = Config {
            bind: "127.0.0.1:0".into(),
            token: None,
            uploads: coffee_console::UploadLimits::default(),
            data_dir: data_dir.to_owned(),
            static_dir: data_dir.join("no-frontend"),
            coffee_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_coffee-node"))),
            replicas: "all=2".into(),
            namespace: unique_namespace("console-api"),
            gateway: free_addr(),
            monitors: 0,
            amqp_url: amqp_url(),
        };
        let app = App::start(config).await.expect("console start");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let router = app.router.clone();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Console { app, base, http: reqwest::Client::new() }
    }

    async fn get(&self, path: &str) -> Value {
        let response = self.http.get(format!("{}{path}", self.base)).send().await.expect("GET");
        json_of(response, path).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self.http.post(format!("{}{path}", self.base)).json(&body).send().await.expect("POST");
        json_of(response, path).await
    }
}

async fn json_of(response: reqwest::Response, path: &str) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_else(|e| panic!("{path}: not JSON: {e}"));
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

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

/// Collects the event stream's JSON messages in the background.
fn collect_events(base: &str) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
    let url = format!("{}/api/events", base.replace("http://", "ws://"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
        while let Some(Ok(message)) = socket.next().await {
            if let Ok(text) = message.to_text() {
                if let Ok(value) = serde_json::from_str(text) {
                    if tx.send(value).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Waits for an event of `kind` matching `pred`, keeping the ones read on the way in `seen`.
async fn wait_event(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>,
    seen: &mut Vec<Value>,
    kind: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    if let Some(found) = seen.iter().find(|e| e["type"] == kind && pred(e)) {
        return found.clone();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let event = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no `{kind}` event within 30 s"))
            .expect("event stream open");
        seen.push(event.clone());
        if event["type"] == kind && pred(&event) {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_launch_download_compare_kill() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let generated = tempfile::tempdir().expect("tempdir");
    coffee::gen::generate(&coffee::gen::GenOptions {
        scale: coffee::gen::Scale::Tiny,
        seed: 11,
        out: generated.path().to_owned(),
    })
    .expect("generate");
    let console = Console::start(data_dir.path()).await;
    let status = console.get("/api/status").await;
    assert_eq!(status["cluster"]["state"], "up", "cluster not up: {status}");
    let mut events = collect_events(&console.base);
    let mut seen = Vec::new();

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
        wait_event(&mut events, &mut seen, "session_done", |e| e["session"] == session.as_str()).await;
    }

    // Each download equals the reference, and the counts shown match the file.
    let expected = coffee::reference::run(generated.path()).expect("reference").lines;
    for session in &sessions {
        let url = format!("{}/api/sessions/{session}/ndjson", console.base);
        let response = console.http.get(url).send().await.expect("GET ndjson");
        assert_eq!(response.status(), 200);
        let disposition = response.headers()["content-disposition"].to_str().expect("ascii").to_owned();
        assert!(disposition.contains(&format!("client-{session}.ndjson")), "{disposition}");
        let text = response.text().await.expect("body");
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let comparison = coffee::compare::compare_lines(&expected, &lines);
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

    // Kill a node: the event stream reports the kill, then the supervisor's restart.
    let nodes = console.get("/api/nodes").await;
    assert_eq!(nodes.as_array().map(Vec::len), Some(13), "{nodes}");
    console.post("/api/nodes/q3_agg-1/kill", json!({})).await;
    wait_event(&mut events, &mut seen, "node_killed", |e| e["node"] == "q3_agg-1").await;
    wait_event(&mut events, &mut seen, "node_restarted", |e| e["node"] == "q3_agg-1").await;
    let nodes = console.get("/api/nodes").await;
    let node = nodes.as_array().expect("nodes").iter().find(|n| n["name"] == "q3_agg-1").expect("q3_agg-1").clone();
    assert_eq!(node["restarts"], 1, "{node}");

    console.app.shutdown().await;
}
