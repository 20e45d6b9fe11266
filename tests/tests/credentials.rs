//! The broker's password stays secret: a run of `cluster up` as a broker user of its own (made for the test, with
//! a password no other text has), a session, a node killed and revived, `coffee cluster status`, then `cluster
//! down`; no log of any node, nor anything `cluster up` or `cluster status` printed, holds the password, where
//! before every node that reached a broker of several logged its URL whole. (The console's answers are checked
//! in `console_doors.rs`.)

use coffee_tests::cli_cluster::{node, signal, CliCluster, DEFAULT_NODES};
use coffee_tests::harness::{assert_matches_reference, files_under, generate};
use coffee_tools::gen::Scale;
use nix::sys::signal::Signal;
use std::process::Command;
use std::time::Duration;

/// A broker user for this test, deleted when dropped.
struct BrokerUser {
    name: String,
}

impl BrokerUser {
    fn add(name: &str, password: &str) -> BrokerUser {
        rabbitmqctl(&["add_user", name, password]);
        let user = BrokerUser { name: name.to_owned() };
        rabbitmqctl(&["set_permissions", "-p", "/", name, ".*", ".*", ".*"]);
        user
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["delete_user", &self.name]).output();
    }
}

fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl runs");
    assert!(output.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_of_a_run_shows_the_brokers_password() {
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let user = BrokerUser::add(&format!("coffee-test-{}", std::process::id()), &password);
    // Two brokers, the first of which nobody answers: every program names the brokers it tries and the one it
    // reached (and two brokers need quorum queues).
    let url = format!("amqp://{0}:{password}@127.0.0.1:1/%2f,amqp://{0}:{password}@127.0.0.1:5672/%2f", user.name);
    let args = ["--monitors", "3", "--queue-type", "quorum"];
    let cluster = CliCluster::start("secret", &args, &[("AMQP_URL", &url)], DEFAULT_NODES).await;

    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 31, &dir.path().join("data"));
    let summary = cluster.session(&data, &dir.path().join("out")).await;
    assert_matches_reference(&summary, &data);
    // A node killed and revived: its restart logs its start again.
    let before = cluster.status();
    let (pid, restarts) = (node(&before, "q4_count-0").pid.unwrap(), node(&before, "q4_count-0").restarts);
    signal(pid, Signal::SIGKILL);
    cluster
        .wait_for("q4_count-0 revived", Duration::from_secs(30), |s| node(s, "q4_count-0").restarts > restarts)
        .await;
    let status = cluster.command(&["cluster", "status", "--queue-type", "quorum"]).env("AMQP_URL", &url).output().await;
    let status = status.unwrap();
    let mut printed = String::from_utf8_lossy(&status.stdout).into_owned();
    printed.push_str(&String::from_utf8_lossy(&status.stderr));

    // `--help` shows the environment's values of the flags it lists, unless told not to.
    let help = cluster.command(&["gateway", "--help"]).env("AMQP_URL", &url).output().await.unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(help.contains("AMQP_URL"), "the help lists the broker's flag:\n{help}");
    printed.push_str(&help);

    let run_dir = coffee_ops::cluster::run_dir(&cluster.namespace);
    let logs = files_under(&run_dir.join("logs"));
    printed.push_str(&cluster.down().await);
    assert!(logs.len() >= DEFAULT_NODES, "the nodes' logs: {logs:?}");
    let mut named = 0;
    for log in &logs {
        let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
        assert!(!text.contains(&password), "the password in {}", log.display());
        named += usize::from(text.contains(&format!("{}:***@", user.name)));
    }
    assert!(named > 0, "no log names a broker at all: the check proves nothing");
    assert!(!printed.contains(&password), "the password in what the commands printed: {printed}");
    drop(user);
}
