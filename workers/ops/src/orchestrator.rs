//! What owns the nodes, as one trait: [`Orchestrator`] lists, kills, pauses, resumes and restarts nodes by name,
//! and (for an owner that runs the nodes itself) brings them up, supervises them and stops them. The health
//! monitors, the chaos monkey and the console hold a `dyn Orchestrator`, so they work the same whether the
//! nodes are local processes ([`crate::cluster`]) or compose containers ([`crate::docker`]); which one is used is
//! configuration ([`crate::orchestration`]).
//!
//! This module is a leaf: the trait and its plain data only, so every implementation and every user can
//! depend on it without depending on each other.

use futures::future::BoxFuture;
use serde::Serialize;

/// Whether a node runs, as far as its orchestrator knows (its heartbeat is another matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    /// Created or being restarted: it should run shortly.
    Starting,
    /// Exited, killed, dead or paused: it runs again only when started.
    Stopped,
}

/// One node as its orchestrator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeState {
    /// The topology's name (`gateway`, `tx_filter-0`, `monitor-1`, `console`).
    pub name: String,
    pub state: RunState,
    /// The orchestrator's own word: the container's state and status, or the process id.
    pub detail: String,
    /// The node's process id on this machine, for a local process (a container's is not ours to name).
    pub pid: Option<u32>,
    /// How many times its orchestrator restarted it, when the orchestrator keeps count (a local supervisor
    /// does; the Docker engine's count is not the nodes' and is not read).
    pub restarts: Option<u32>,
    /// Why the node was refused for good, if its last exit said so ([`coffee_engine::amqp::REFUSED_EXIT_CODE`]):
    /// the broker refused its queues, or its state is not its to serve. Starting it again meets the same answer.
    pub refused: Option<String>,
}

/// A node that an orchestrator's supervision restarted, and who asked: a monitor (`monitor-2`), or the
/// supervisor itself when the node exited and no monitor had it restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restarted {
    pub node: String,
    pub by: String,
}

/// Starts, kills and restarts nodes by name. Boxed futures rather than `async fn` so that the monitor, the chaos
/// monkey and the console can hold a `dyn Orchestrator` chosen at run time.
pub trait Orchestrator: Send + Sync {
    /// Who owns the nodes, in words for people: `local processes`, `docker (compose project P)`.
    fn describe(&self) -> String;
    /// Every node it owns, with its state, in a stable order.
    fn nodes(&self) -> BoxFuture<'_, anyhow::Result<Vec<NodeState>>>;
    /// Kills the node at once, as SIGKILL does: no shutdown code runs.
    fn kill<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Stops the node if it runs (without waiting for it to shut down cleanly) and starts it again.
    fn restart<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Starts the node if it is stopped; does nothing if it runs.
    fn start<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Stops the node's process where it stands (SIGSTOP), as a hang or a stalled machine would.
    fn pause<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Lets the node's process go on (SIGCONT); harmless if it runs, or was replaced meanwhile.
    fn resume<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Brings the nodes up, for an orchestrator that starts them itself (the console's own local cluster);
    /// others only check that they reach their nodes, by listing them once.
    fn up(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move { self.nodes().await.map(drop) })
    }

    /// One round of supervision, for an orchestrator that restarts its exited nodes itself (a local cluster):
    /// returns the nodes it restarted and who asked. Others have nothing to do here: the monitors restart
    /// containers, and a `cluster up` in another process restarts its own nodes.
    fn supervise(&self) -> BoxFuture<'_, anyhow::Result<Vec<Restarted>>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Stops what [`Orchestrator::up`] started (a local cluster, whose queues are deleted too); others leave
    /// their nodes running, since they are not theirs to stop.
    fn down(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Whether an orchestrator acts on a request to restart a node, given the node's process as the orchestrator
/// knows it (`current`: the one it started last, if it still runs) and the process the asker found silent
/// (`named`: none when the asker names no process). It acts, killing `current` if any and starting a new
/// process, unless the request names a process other than the one running: someone restarted the node since
/// the asker last heard it, and the request is stale. A node that is down is started whatever the request
/// names. The local orchestrator ([`crate::cluster::LocalCluster::restart`]) and the simulator's both decide
/// here.
pub fn acts_on_restart(current: Option<u32>, named: Option<u32>) -> bool {
    match (current, named) {
        (Some(current), Some(named)) => current == named,
        _ => true,
    }
}

/// An exit sooner than this after a start counts towards a crash loop.
pub const QUICK_EXIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A node's exits in a row that came soon after a start, as a supervisor counts them to back off a crash loop.
/// The local supervisor ([`crate::cluster`]) and the simulator's both count here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashLoop {
    quick_exits: u32,
}

impl CrashLoop {
    /// Notes an exit after running for `ran_for`: one the process made by itself soon after its start counts
    /// towards a crash loop; a kill by a signal, or an exit after a while, ends the loop.
    pub fn exited(&mut self, by_itself: bool, ran_for: std::time::Duration) {
        self.quick_exits = if by_itself && ran_for < QUICK_EXIT { self.quick_exits + 1 } else { 0 };
    }

    pub fn quick_exits(&self) -> u32 {
        self.quick_exits
    }

    /// How long a crash-looping node waits before it is started again: nothing after one quick exit, then
    /// doubling from 250 ms up to 5 s.
    pub fn backoff(&self) -> std::time::Duration {
        use std::time::Duration;
        match self.quick_exits {
            0 | 1 => Duration::ZERO,
            n => (Duration::from_millis(250) * 2u32.pow((n - 2).min(5))).min(Duration::from_secs(5)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{acts_on_restart, CrashLoop};
    use std::time::Duration;

    #[test]
    fn a_crash_loop_backs_off_to_five_seconds_and_a_kill_or_a_long_run_ends_it() {
        let mut crash_loop = CrashLoop::default();
        let waits: Vec<Duration> = (0..8)
            .map(|_| {
                crash_loop.exited(true, Duration::from_millis(100));
                crash_loop.backoff()
            })
            .collect();
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 250, 500, 1000, 2000, 4000, 5000, 5000]);
        crash_loop.exited(false, Duration::from_millis(100));
        assert_eq!(crash_loop.backoff(), Duration::ZERO, "killed by a signal");
        crash_loop.exited(true, Duration::from_millis(100));
        crash_loop.exited(true, Duration::from_secs(60));
        assert_eq!(crash_loop.quick_exits(), 0, "it ran a while");
    }

    #[test]
    fn a_stale_request_is_ignored_and_a_node_that_is_down_is_always_started() {
        assert!(acts_on_restart(Some(7), Some(7)), "the silent process is the running one");
        assert!(!acts_on_restart(Some(8), Some(7)), "someone restarted it since");
        assert!(acts_on_restart(Some(8), None), "the asker names no process");
        assert!(acts_on_restart(None, Some(7)), "down: started whatever the request names");
        assert!(acts_on_restart(None, None));
    }
}
