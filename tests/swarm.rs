//! Three hosts on this machine in one Docker Swarm, as a user makes them: `scripts/swarm-up.sh` builds the images,
//! makes the hosts (network namespaces, an engine each) and deploys `docker-stack.yaml`; `scripts/swarm.sh` cuts
//! power and networks; `scripts/swarm-down.sh` removes it all.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The swarm of `scripts/swarm-up.sh`; removed when dropped, even by a failing test.
pub struct Swarm {
    /// Where a client on this machine reaches the gateway.
    pub gateway: String,
}

impl Swarm {
    /// Runs `scripts/swarm-up.sh` (debug binaries: the test build has them); fails the test with its output if
    /// it fails.
    pub fn up() -> Swarm {
        let up = script("swarm-up.sh", &[]);
        if !up.status.success() {
            // Dropped as the test fails: the tasks' logs are printed and the hosts taken down.
            let _half_up = Swarm { gateway: String::new() };
            panic!("scripts/swarm-up.sh failed:\n{}", text(&up));
        }
        eprintln!("{}", String::from_utf8_lossy(&up.stderr).lines().last().unwrap_or_default());
        Swarm { gateway: swarm(&["gateway"]) }
    }

    /// Runs `scripts/swarm-down.sh` and checks that nothing of the swarm is left on this machine.
    pub fn down(self) {
        let down = script("swarm-down.sh", &[]);
        assert!(down.status.success(), "scripts/swarm-down.sh failed:\n{}", text(&down));
        let netns =
            String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned();
        assert!(!netns.contains("csw-"), "namespaces left: {netns}");
        let links = Command::new("ip").args(["link", "show", "csw-br"]).output().unwrap();
        assert!(!links.status.success(), "the bridge is left");
        let rules = Command::new("iptables").args(["-S", "FORWARD"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&rules.stdout).contains("csw-br"), "the FORWARD rule is left");
        assert!(!Path::new("/var/lib/coffee-swarm").exists(), "the hosts' data is left");
        let engines = Command::new("pgrep").args(["-f", "coffee-swarm/h"]).output().unwrap();
        assert!(!engines.status.success(), "engines left: {}", String::from_utf8_lossy(&engines.stdout));
        std::mem::forget(self);
    }

    /// The last lines of every task's log, from every host that is up: what a failed test leaves to read.
    fn print_logs(&self) {
        for host in ["1", "2", "3"] {
            let Ok(listed) = Command::new(root().join("scripts/swarm.sh"))
                .args(["docker", host, "ps", "-a", "--format", "{{.Names}}"])
                .output()
            else {
                continue;
            };
            for container in String::from_utf8_lossy(&listed.stdout).lines() {
                let args = ["docker", host, "logs", "--tail", "30", container];
                if let Ok(logs) = Command::new(root().join("scripts/swarm.sh")).args(args).output() {
                    eprintln!("---- host {host}, {container}:\n{}", text(&logs));
                }
            }
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        let _ = script("swarm-down.sh", &[]);
    }
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn script(name: &str, args: &[&str]) -> Output {
    Command::new(root().join("scripts").join(name))
        .args(args)
        .current_dir(root())
        .env("COFFEE_PROFILE", "debug")
        .output()
        .unwrap_or_else(|e| panic!("running scripts/{name}: {e}"))
}

/// `scripts/swarm.sh ARGS`, failing the test on an error; its standard output, trimmed.
pub fn swarm(args: &[&str]) -> String {
    let output = script("swarm.sh", args);
    assert!(output.status.success(), "scripts/swarm.sh {args:?}: {}", text(&output));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `scripts/swarm.sh ARGS` like [`swarm`], with what it wrote to both streams (`docker logs` passes a
/// container's standard error, where the nodes log, to its own).
pub fn swarm_both(args: &[&str]) -> String {
    let output = script("swarm.sh", args);
    assert!(output.status.success(), "scripts/swarm.sh {args:?}: {}", text(&output));
    text(&output)
}
