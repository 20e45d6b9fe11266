//! A full disk under a stateful replica: its state folder is a small tmpfs, filled while sessions run.
//!
//! - Below the reserve (`STATE_MIN_FREE_MB`, 64 MiB by default) the replica holds its group: nothing written,
//!   nothing acked, its beats and the console say `disk_full`, nobody restarts it, and once space is freed every
//!   session ends exactly. Before the reserve, the replica wrote on until the disk refused.
//! - With no reserve, the disk refuses a group mid-write: the replica exits without acking, its restarts find a
//!   torn tail to cut, and once space is freed every session ends exactly.
//!
//! Mounting a tmpfs needs root (as CI runs); without it the test fails and says so.

use coffee_engine::client::{self, ClientOptions};
use coffee_ops::cluster::{self, LocalCluster, StartOptions};
use coffee_tests::harness::{assert_matches_reference, cluster_spec, generate, run_session, supervised};
use coffee_tools::gen::Scale;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// The replica whose disk fills: the one that logs the most (the users it joins, besides its counts).
const REPLICA: &str = "q4_count-0";

/// A tmpfs of `size` mounted on [`REPLICA`]'s state folder in a cluster's run folder for as long as this lives,
/// with a filler file taking its space. Dropped, it goes with the run folder.
struct SmallDisk {
    run_dir: PathBuf,
    dir: PathBuf,
    filler: PathBuf,
}

impl SmallDisk {
    fn mount(run_dir: &Path, size: &str) -> SmallDisk {
        let dir = run_dir.join("state").join(REPLICA);
        std::fs::create_dir_all(&dir).expect("the replica's folder");
        let options = format!("size={size}");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "coffee-small-disk"])
            .arg(&dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mounting a tmpfs on {} (this test needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { run_dir: run_dir.to_owned(), filler: dir.join("filler"), dir }
    }

    fn free(&self) -> u64 {
        coffee_engine::state::available_bytes(&self.dir).expect("statvfs")
    }

    /// Fills the disk until about `left` bytes are free.
    fn fill(&self, left: u64) {
        let len = self.free().saturating_sub(left);
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&self.filler).expect("the filler");
        // Written, not sparse: tmpfs counts only pages that hold data.
        let chunk = vec![0xa5u8; 1 << 20];
        let mut written = 0u64;
        while written < len {
            let n = (len - written).min(chunk.len() as u64) as usize;
            std::io::Write::write_all(&mut &file, &chunk[..n]).expect("filling the disk");
            written += n as u64;
        }
    }

    fn free_up(&self) {
        std::fs::remove_file(&self.filler).expect("the filler goes");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// Waits (up to `limit`) until the console says the replica's disk is full, or not; its row.
async fn shows_disk_full(console: &coffee_tests::console::Console, full: bool, limit: Duration) -> Value {
    let what = format!("showed disk_full = {full}");
    console.node_until(REPLICA, limit, &what, |row| row["state"]["disk_full"] == full).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_reserve_a_replica_holds_its_group_says_so_and_carries_on_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<_> = (0..2).map(|i| generate(Scale::Tiny, 90 + i, &dir.path().join(format!("data-{i}")))).collect();
    let mut config = coffee_tests::console::config(&dir.path().join("console"), "diskfull");
    config.replicas = "all=1".into();
    // 80 MiB with 32 free: under the default reserve of 64, though a tiny session's group would fit.
    let disk = SmallDisk::mount(&cluster::run_dir(&config.namespace), "80m");
    disk.fill(32 << 20);
    let (gateway, namespace) = (config.gateway.clone(), config.namespace.clone());
    let console = coffee_tests::console::Console::start(config).await;

    let mut sessions: Vec<_> = data
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let options = ClientOptions::new(&gateway, data, dir.path().join(format!("out-{i}")));
            tokio::spawn(async move { client::run_session(&options, Arc::new(|_| {})).await })
        })
        .collect();
    let held = shows_disk_full(&console, true, Duration::from_secs(60)).await;
    assert!(held["state"]["disk_free_bytes"].as_u64().is_some_and(|b| b < 64 << 20), "{held}");
    // Held, not dead: it beats on, nobody restarts it, and no session can end without it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let row = console.node(REPLICA).await;
    assert_eq!(row["state"]["disk_full"], true, "{row}");
    assert_eq!(row["restarts"], 0, "{row}");
    assert!(row["heartbeat_age_ms"].as_u64().is_some_and(|ms| ms < 3_000), "{row}");
    if let Some(ended) = sessions.iter().position(|s| s.is_finished()) {
        let outcome = sessions.remove(ended).await.expect("the session's task");
        panic!("a session ended without the replica's group: {outcome:?}");
    }

    disk.free_up();
    shows_disk_full(&console, false, Duration::from_secs(15)).await;
    for (session, data) in sessions.into_iter().zip(&data) {
        let summary = tokio::time::timeout(Duration::from_secs(120), session)
            .await
            .expect("the session ends once space is freed")
            .expect("the session's task")
            .expect("a session");
        assert_matches_reference(&summary, data);
    }
    assert_eq!(console.node(REPLICA).await["restarts"], 0, "the replica was restarted");
    let log = std::fs::read_to_string(cluster::run_dir(&namespace).join("logs").join(format!("{REPLICA}.log")))
        .unwrap_or_default();
    assert!(log.contains("the state disk is full"), "the replica's log names the full disk");
    console.app.shutdown().await;
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_reserve_a_refused_write_acks_nothing_and_every_session_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    // Small, not tiny: a group's log must outgrow what the filler leaves.
    let data: Vec<_> = (0..2).map(|i| generate(Scale::Small, 95 + i, &dir.path().join(format!("data-{i}")))).collect();
    let spec = cluster_spec("enospc", "all=1");
    let disk = SmallDisk::mount(&spec.run_dir(), "16m");
    // Room for the replica's lock and small files (a page each), not for its logs.
    disk.fill(64 << 10);
    let env = vec![("STATE_MIN_FREE_MB".to_owned(), "0".to_owned())];
    let mut cluster = LocalCluster::start_with(spec.clone(), StartOptions { env, ..Default::default() }).await.unwrap();

    let work = {
        let (spec, data, dir) = (spec.clone(), data.clone(), dir.path().to_owned());
        async move {
            let outs: Vec<_> = (0..data.len()).map(|i| dir.join(format!("out-{i}"))).collect();
            let sessions = futures::future::join_all(data.iter().zip(&outs).map(|(d, o)| run_session(&spec, d, o)));
            let free_up = async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                disk.free_up();
                disk
            };
            futures::future::join(sessions, free_up).await
        }
    };
    let ((summaries, disk), events) = supervised(&mut cluster, None, Duration::from_secs(180), work).await;
    for (summary, data) in summaries.iter().zip(&data) {
        assert_matches_reference(summary, data);
    }
    let restarts = events.iter().filter(|e| e.action == "restart" && e.node == REPLICA).count();
    assert!(restarts > 0, "the disk never refused the replica (the filler left too much room): {events:?}");
    let log = std::fs::read_to_string(spec.log_path(REPLICA)).unwrap_or_default();
    assert!(log.contains("the state disk refused the group"), "the replica's log names the refusal");
    cluster.stop().await.unwrap();
    drop(disk);
}
