//! Several hosts for real: three hosts on this machine (network namespaces, a Docker engine each) in one swarm,
//! the stack of `coffee compose --swarm` deployed over them (`scripts/swarm-up.sh`). A session through the
//! gateway on host 1 is exact. Then, each time while two sessions run: host 2 loses its power (its broker and four
//! stage replicas, two of them stateful, die at once) and comes back ten seconds later; host 3 is cut off from the
//! others for 30 s, both ways; and then one way; and a second process of a stateful replica starts on another
//! host, on a folder of its own. Every session is exact. `scripts/swarm-down.sh` leaves nothing behind.

use coffee_engine::client::{self, ClientOptions};
use coffee_tests::harness::{assert_matches_reference, generate};
use coffee_tests::swarm::{swarm, swarm_both, Swarm};
use coffee_tools::gen::Scale;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn exact_session(gateway: &str, data: &Path, out: &Path) -> Duration {
    let options = ClientOptions::new(gateway, data, out.to_owned());
    let started = Instant::now();
    let summary = tokio::time::timeout(Duration::from_secs(420), client::run_session(&options, Arc::new(|_| {})))
        .await
        .expect("the session ends")
        .expect("a session through the swarm");
    assert_matches_reference(&summary, data);
    started.elapsed()
}

/// Two sessions at once, exact, while `fault` runs (it starts 1.5 s in).
async fn two_sessions_across(gateway: &str, data: &[PathBuf], out: &Path, what: &str, fault: impl FnOnce()) {
    let sessions: Vec<_> = data
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let (gateway, data, out) = (gateway.to_owned(), data.clone(), out.join(format!("{what}-{i}")));
            tokio::spawn(async move { exact_session(&gateway, &data, &out).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(fault);
    for session in sessions {
        let took = session.await.expect("the session's task");
        eprintln!("a session across {what}: {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_lose_power_and_get_cut_off_mid_session_and_every_session_is_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let swarm_started = Instant::now();
    let hosts = Swarm::up();
    eprintln!("swarm up and serving in {:?}", swarm_started.elapsed());
    let data: Vec<_> =
        (0..3u64).map(|i| generate(Scale::Small, 70 + i, &dir.path().join(format!("data-{i}")))).collect();

    let undisturbed = exact_session(&hosts.gateway, &data[0], &dir.path().join("out-0")).await;
    eprintln!("one session, undisturbed: {undisturbed:?}");

    // Host 2: broker 2 and four replicas, two of them stateful (q2_agg-0, q3_agg-1).
    two_sessions_across(&hosts.gateway, &data[1..], dir.path(), "a power cut", || {
        swarm(&["kill-host", "2"]);
        let listed = swarm(&["hosts"]);
        assert!(listed.lines().nth(1).is_some_and(|l| l.ends_with("down")), "host 2 is down: {listed}");
        std::thread::sleep(Duration::from_secs(10));
        swarm(&["start-host", "2"]);
    })
    .await;
    // Host 3 cut off for 30 s: its broker is the minority (it pauses), its replicas lose their brokers.
    two_sessions_across(&hosts.gateway, &data[1..], dir.path(), "a partition", || {
        swarm(&["partition", "3"]);
        assert!(swarm(&["hosts"]).lines().nth(2).is_some_and(|l| l.ends_with("partitioned")));
        std::thread::sleep(Duration::from_secs(30));
        swarm(&["heal"]);
    })
    .await;
    two_sessions_across(&hosts.gateway, &data[1..], dir.path(), "a one-way partition", || {
        swarm(&["partition-oneway", "3"]);
        std::thread::sleep(Duration::from_secs(30));
        swarm(&["heal"]);
    })
    .await;
    // A second process of q2_agg-0 (host 2) on host 3, on a folder of its own (issue 24, item 5): it waits for
    // the replica's lock while the replica's own process lives; once that one is gone it takes the lock, finds
    // that its folder is not the one holding the replica's state, and exits refused (78). The replica's own
    // process, started again, serves. Nothing is consumed twice: every session is exact.
    two_sessions_across(&hosts.gateway, &data[1..], dir.path(), "a twin of a replica on another host", || {
        let twin = twin_of("q2-agg-0", 3);
        swarm(&twin.iter().map(String::as_str).collect::<Vec<_>>());
        wait_for("the twin waits for the replica's lock", || {
            service_logs(TWIN).contains("another process of this replica holds its lock")
        });
        swarm(&["docker", "1", "service", "scale", "--detach", "coffee_q2-agg-0=0"]);
        wait_for("the twin exits refused", || {
            let states = ["service", "ps", "--no-trunc", "--format", "{{.CurrentState}} {{.Error}}", TWIN];
            swarm(&[&["docker", "1"], &states[..]].concat()).contains("(78)")
        });
        let logs = service_logs(TWIN);
        assert!(logs.contains("the replica's lock is free"), "{logs}");
        assert!(logs.contains("state is in another folder"), "{logs}");
        swarm(&["docker", "1", "service", "scale", "--detach", "coffee_q2-agg-0=1"]);
        swarm(&["docker", "1", "service", "rm", TWIN]);
    })
    .await;
    hosts.down();
}

/// The service of a replica's twin.
const TWIN: &str = "coffee-twin";

/// `docker service create` of a second process of the stack's `service` (its image, command and environment) on
/// host `host`, with no volume (a folder of its own) and no restart.
fn twin_of(service: &str, host: u16) -> Vec<String> {
    let format = "{{json .Spec.TaskTemplate.ContainerSpec}}";
    let spec = swarm(&["docker", "1", "service", "inspect", "--format", format, &format!("coffee_{service}")]);
    let spec: serde_json::Value = serde_json::from_str(&spec).expect("a container spec");
    let placement = format!("node.labels.coffee.host == {host}");
    let mut args: Vec<String> = ["docker", "1", "service", "create", "--detach", "--name", TWIN]
        .into_iter()
        .chain(["--constraint", &placement, "--network", "coffee_default", "--endpoint-mode", "dnsrr"])
        .chain(["--restart-condition", "none"])
        .map(str::to_owned)
        .collect();
    for env in spec["Env"].as_array().into_iter().flatten() {
        args.extend(["--env".to_owned(), env.as_str().expect("KEY=VALUE").to_owned()]);
    }
    let image = spec["Image"].as_str().expect("an image");
    args.push(image.split('@').next().expect("a name").to_owned());
    for part in ["Command", "Args"] {
        args.extend(spec[part].as_array().into_iter().flatten().map(|a| a.as_str().expect("an argument").to_owned()));
    }
    args
}

/// What the tasks of a service printed.
fn service_logs(service: &str) -> String {
    swarm_both(&["docker", "1", "service", "logs", "--raw", service])
}

/// Waits (up to 90 s) until `done`, naming `what` if it never is.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}
