//! `/metrics` scraped by a real Prometheus (Debian's `prometheus` package; `scripts/test.sh` installs it): a
//! console started in-process runs its own cluster and one session on a generated tiny dataset; Prometheus
//! scrapes the console every second, and its query API gives back what the console exposes: every node up,
//! a queue's depth under its `queue` label, rows through the stages, the session's duration. Never skipped: if
//! the binary is missing, the test fails and says how to install it.

use coffee_tests::console::{self, Console};
use coffee_tests::harness::free_addr;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Runs `query` on Prometheus's HTTP API until it returns a sample that `ok` accepts; its value.
async fn query_until(prometheus: &str, query: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let answer = http.get(format!("http://{prometheus}/api/v1/query")).query(&[("query", query)]).send().await;
        if let Ok(answer) = answer {
            last = answer.json().await.unwrap_or_default();
            let value = last["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
            if let Some(value) = value.filter(|v| ok(*v)) {
                return value;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("Prometheus never answered `{query}` as expected; last answer: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_the_console_and_queries_its_metrics_back() {
    let binary = std::path::Path::new("/usr/bin/prometheus");
    assert!(binary.is_file(), "Prometheus is not installed: apt-get install -y prometheus (scripts/test.sh does)");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let console = Console::start(console::config(data_dir.path(), "prometheus")).await;
    let namespace = console.app.state.nodes.spec().topology.namespace.clone();

    // What a scrape reads, in the format Prometheus asks for.
    let response = console.http.get(format!("{}/metrics", console.base)).send().await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("text").to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = response.text().await.expect("body");
    assert!(text.contains("# TYPE coffee_nodes_up gauge") && text.ends_with("# EOF\n"), "{text}");

    let work = tempfile::tempdir().expect("tempdir");
    let target = console.base.trim_start_matches("http://");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: coffee\n    \
         static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(work.path().join("prometheus.yml"), config).expect("write the config");
    let prometheus = free_addr();
    let log = std::fs::File::create(work.path().join("prometheus.log")).expect("log");
    let _server = tokio::process::Command::new(binary)
        .arg(format!("--config.file={}", work.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", work.path().join("data").display()))
        .arg(format!("--web.listen-address={prometheus}"))
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus");

    // Every node of the default topology (12 stage replicas, the gateway, 3 monitors), up.
    let up = query_until(&prometheus, "coffee_nodes_up", |v| v == 16.0).await;
    assert_eq!(up, 16.0);
    let control = format!("coffee_queue_depth{{queue=\"{namespace}.control\"}}");
    assert_eq!(query_until(&prometheus, &control, |v| v >= 0.0).await, 0.0, "the control queue is empty");

    // A session: rows go through the stages, and its duration lands in the histogram.
    console.post("/api/datasets/generate", json!({ "scale": "tiny" })).await;
    let session = console.launch("generated-tiny").await;
    console.wait_session(&session, "done", |v| v["state"] == "done").await;
    let rows = query_until(&prometheus, "sum(coffee_rows_in_total{role=\"tx_filter\"})", |v| v > 0.0).await;
    assert!(rows > 0.0);
    query_until(&prometheus, "coffee_session_duration_seconds_count", |v| v == 1.0).await;
    query_until(&prometheus, "coffee_sessions{state=\"done\"}", |v| v == 1.0).await;

    // Every metric the shipped dashboard draws is served, and listed in docs/metrics.md.
    let served = console.http.get(format!("{}/metrics", console.base)).send().await.expect("GET").text().await;
    let served = served.expect("body");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let listed = std::fs::read_to_string(root.join("docs/metrics.md")).expect("docs/metrics.md");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("docs/grafana/coffee.json")).expect("dashboard"))
            .expect("the dashboard is JSON");
    let mut used = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for (at, _) in expr.match_indices("coffee_") {
                let name: String = expr[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                used.insert(name);
            }
        }
    }
    assert!(used.len() >= 10, "{used:?}");
    for name in &used {
        let family = ["_bucket", "_count", "_sum"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(served.lines().any(|l| l.starts_with(name.as_str())), "the dashboard uses {name}, not served");
        assert!(listed.contains(&format!("`{family}")), "the dashboard uses {family}, not in docs/metrics.md");
    }
    console.app.shutdown().await;
}
