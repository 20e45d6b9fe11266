//! Clocks (issue 23, item 9): every node's wall clock jumps an hour forward mid-session, then two hours back,
//! through libfaketime (Debian's `faketime`; the monotonic clock is left alone, as NTP or a hand leaves it).
//! Leases, graces, heartbeat ages and timeouts run on the monotonic clock, so nothing is purged early or kept
//! forever, nobody is restarted, and every session is exact. One replica holds each group 4 s on the broker
//! (a failpoint), so a wait is under way when the clock jumps: before, a wait was timed on the wall clock, the
//! jump made it an hour long in the replica's heartbeat, and the monitors restarted it as stuck.

use coffee_ops::cluster::{LocalCluster, StartOptions};
use coffee_tests::harness::{assert_matches_reference, cluster_spec, generate, run_session, supervised};
use coffee_tools::gen::Scale;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Sets the offset every node's wall clock shows (`+1h`, `-1h`, `+0`), read again at every call.
fn set_clock(file: &Path, offset: &str) {
    std::fs::write(file, format!("{offset}\n")).expect("the clock file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clocks_that_jump_an_hour_either_way_restart_nobody_and_every_session_is_exact() {
    assert!(Path::new(LIBFAKETIME).exists(), "{LIBFAKETIME} is missing: apt-get install -y faketime");
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<_> = (0..2).map(|i| generate(Scale::Tiny, 110 + i, &dir.path().join(format!("data-{i}")))).collect();
    let clock = dir.path().join("clock");
    set_clock(&clock, "+0");
    let faked = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME_TIMESTAMP_FILE", clock.to_str().unwrap()),
        ("FAKETIME_NO_CACHE", "1"),
        ("DONT_FAKE_MONOTONIC", "1"),
    ];
    let stall = vec![("FAILPOINTS".to_owned(), "confirm-stalls=return(4000)".to_owned())];
    let options = StartOptions {
        env: faked.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        node_env: BTreeMap::from([("q3_agg-0".to_owned(), stall)]),
        monitors: 3,
        ..Default::default()
    };
    let spec = cluster_spec("clocks", "all=1");
    let mut cluster = LocalCluster::start_with(spec.clone(), options).await.unwrap();
    // The monitors past their first timeout, every node heard.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let work = {
        let (spec, data, dir, clock) = (spec.clone(), data.clone(), dir.path().to_owned(), clock.clone());
        async move {
            let outs: Vec<_> = (0..data.len()).map(|i| dir.join(format!("out-{i}"))).collect();
            let sessions = futures::future::join_all(data.iter().zip(&outs).map(|(d, o)| run_session(&spec, d, o)));
            let jumps = async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                set_clock(&clock, "+1h");
                tokio::time::sleep(Duration::from_secs(8)).await;
                set_clock(&clock, "-1h");
            };
            futures::future::join(sessions, jumps).await.0
        }
    };
    let (summaries, events) = supervised(&mut cluster, None, Duration::from_secs(180), work).await;
    // A last look once the clock is back: the monitors judge on, and nobody is taken for dead or stuck.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (summary, data) in summaries.iter().zip(&data) {
        assert_matches_reference(summary, data);
    }
    let restarts: Vec<_> = events.iter().filter(|e| e.action == "restart").collect();
    assert!(restarts.is_empty(), "nodes restarted after the clock jumped: {restarts:?}");
    let faked = std::fs::read_to_string(spec.log_path("q3_agg-0")).unwrap_or_default();
    assert!(faked.contains("failpoint reached"), "the replica held its groups on the broker");
    for m in 0..3 {
        let monitor = std::fs::read_to_string(spec.log_path(&format!("monitor-{m}"))).unwrap_or_default();
        assert!(!monitor.contains("asking for a restart"), "monitor-{m} asked for a restart:\n{monitor}");
    }
    cluster.stop().await.unwrap();
}
