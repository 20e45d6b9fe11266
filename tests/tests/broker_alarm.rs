//! A broker alarm: RabbitMQ's memory watermark set to 0 for a minute while three sessions run, so the broker
//! blocks every publishing connection, heartbeats included. The monitors, blocked too, tell that silence from
//! dead nodes and have nobody restarted; the console says the broker blocks publishers, and says it no more once
//! the alarm clears; then every session ends exactly. Before, every node fell silent at once and the leading
//! monitor asked for every node's restart.
//!
//! Its own test binary: an alarm blocks every publisher on the broker, so nothing else may run beside it.

use coffee_ops::cluster::{LocalCluster, StartOptions};
use coffee_tests::harness::{assert_matches_reference, cluster_spec, generate, run_session, supervised};
use coffee_tools::gen::Scale;
use std::process::Command;
use std::time::Duration;

/// How long the alarm is held.
const ALARM: Duration = Duration::from_secs(60);

/// The broker's memory watermark while this lives; put back as it was when dropped, however the test ends.
struct Watermark {
    before: String,
}

impl Watermark {
    fn set(value: &str) -> Watermark {
        let out = Command::new("rabbitmqctl")
            .args(["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."])
            .output()
            .expect("rabbitmqctl runs");
        let before = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(before.parse::<f64>().is_ok(), "the broker's watermark: {before:?}");
        rabbitmqctl(&["set_vm_memory_high_watermark", value]);
        Watermark { before }
    }
}

impl Drop for Watermark {
    fn drop(&mut self) {
        rabbitmqctl(&["set_vm_memory_high_watermark", &self.before]);
    }
}

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl").args(args).status().expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_alarm_restarts_nobody_and_every_session_ends_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<_> = (0..3).map(|i| generate(Scale::Tiny, 70 + i, &dir.path().join(format!("data-{i}")))).collect();
    let spec = cluster_spec("alarm", "all=1");
    let options = StartOptions { monitors: 3, ..Default::default() };
    let mut cluster = LocalCluster::start_with(spec.clone(), options).await.unwrap();
    // A console on the same broker (its own small cluster, no monitors), to see what it shows.
    let mut config = coffee_tests::console::config(&dir.path().join("console"), "alarm-console");
    (config.replicas, config.monitors) = ("all=1".into(), 0);
    let console = coffee_tests::console::Console::start(config).await;
    // Every node heard, and the monitors past their first timeout, before the alarm.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(console.get("/api/status").await["broker_blocked"], false);

    let work = {
        let (spec, data, dir) = (spec.clone(), data.clone(), dir.path().to_owned());
        async move {
            let outs: Vec<_> = (0..data.len()).map(|i| dir.join(format!("out-{i}"))).collect();
            let sessions = futures::future::join_all(data.iter().zip(&outs).map(|(d, o)| run_session(&spec, d, o)));
            let alarm = async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let watermark = tokio::task::spawn_blocking(|| Watermark::set("0")).await.unwrap();
                let started = std::time::Instant::now();
                shows_blocked(&console, true).await;
                tokio::time::sleep(ALARM.saturating_sub(started.elapsed())).await;
                tokio::task::spawn_blocking(move || drop(watermark)).await.unwrap();
                shows_blocked(&console, false).await;
                console
            };
            futures::future::join(sessions, alarm).await
        }
    };
    let ((summaries, console), events) = supervised(&mut cluster, None, ALARM + Duration::from_secs(90), work).await;
    for (summary, data) in summaries.iter().zip(&data) {
        assert_matches_reference(summary, data);
    }
    let restarts: Vec<_> = events.iter().filter(|e| e.action == "restart").collect();
    assert!(restarts.is_empty(), "nodes restarted because of the alarm: {restarts:?}");
    let monitors: String =
        (0..3).map(|m| std::fs::read_to_string(spec.log_path(&format!("monitor-{m}"))).unwrap_or_default()).collect();
    assert!(monitors.contains("the broker blocks publishers"), "the monitors saw the alarm");
    console.app.shutdown().await;
    cluster.stop().await.unwrap();
}

/// Waits (up to 15 s) until the console's status says the broker blocks publishers, or does not.
async fn shows_blocked(console: &coffee_tests::console::Console, blocked: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while console.get("/api/status").await["broker_blocked"] != blocked {
        assert!(std::time::Instant::now() < deadline, "the console never showed broker_blocked = {blocked}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
