//! Health monitors: several `coffee monitor` replicas listen to every node's heartbeat. One leads; the leader
//! asks the orchestrator to restart any node silent for longer than the timeout, other monitors included, so
//! monitors revive each other.
//!
//! Election, bully style: a monitor counts as alive while its heartbeats keep coming, and the alive monitor with
//! the highest replica number leads. When the leader dies, the others stop hearing it and, one timeout later,
//! the highest of them takes over; when it comes back, it outranks the others again. Two monitors may briefly
//! both believe they lead; that is harmless, because a restart request names the silent process and the
//! orchestrator restarts a node only if that process is still the current one.
//!
//! A node is judged by its progress as well as its beats: heartbeats come from their own task, so a node whose
//! main loop is stuck on the broker beats on, saying for how long ([`DEFAULT_STUCK_TIMEOUT`]). And while the
//! broker blocks every publisher (a memory or disk alarm), everyone falls silent at once, heartbeats included:
//! the monitors, blocked too, judge nobody then.
//!
//! How a restart is asked for depends on who owns the nodes ([`Restarter`]): local processes belong to one
//! `coffee cluster up` (or console), so monitors send it a request on the control queue; containers belong to
//! the Docker engine, so monitors restart them through its API. A container killed with SIGKILL counts as
//! stopped on purpose for Docker, whose restart policy then leaves it down: the monitors bring it back.

use crate::control::{self, RestartRequest};
use crate::orchestrator::Orchestrator;
use coffee_engine::amqp;
use coffee_engine::heartbeat;
use coffee_engine::metrics::Counters;
use coffee_engine::topology::Topology;
use coffee_model::node::{NodeId, Role};
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

mod watch;
pub use watch::{Judgement, Watch, WatchConfig};

/// A node silent this long is restarted, unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a node restarted at a monitor's request may take to send its first heartbeat (waiting for the
/// broker, replaying its logs) before it is judged, and restarted, again.
pub const DEFAULT_START_GRACE: Duration = Duration::from_secs(30);

/// A node whose heartbeats say its main loop has waited this long on the broker in one step is stuck, though it
/// beats, and is restarted. A confirm or an ack takes milliseconds; a quorum queue's leader election, seconds.
pub const DEFAULT_STUCK_TIMEOUT: Duration = Duration::from_secs(20);

/// How many monitors `cluster up` starts by default.
pub const DEFAULT_MONITORS: u16 = 3;

/// Monitor `replica`'s node name (`monitor-N`).
pub fn monitor_name(replica: u16) -> String {
    NodeId::monitor(replica).to_string()
}

/// Whether a node's name is a monitor's.
pub fn is_monitor(name: &str) -> bool {
    matches!(name.parse::<NodeId>(), Ok(NodeId { role: Role::Monitor, .. }))
}

pub struct Monitor {
    pub topology: Topology,
    pub replica: u16,
    pub monitors: u16,
    pub timeout: Duration,
    /// See [`DEFAULT_START_GRACE`].
    pub start_grace: Duration,
    /// See [`DEFAULT_STUCK_TIMEOUT`].
    pub stuck_timeout: Duration,
    /// Every node to watch (workers, gateway, and the other monitors).
    pub nodes: Vec<String>,
    pub restarter: Restarter,
    /// This monitor's folder, held by its one live incarnation (see [`coffee_engine::incarnation`]).
    pub node_dir: std::path::PathBuf,
}

/// How the leader has a silent node restarted.
#[derive(Clone)]
pub enum Restarter {
    /// A request on the control queue, served by the process that owns the nodes.
    ControlQueue,
    /// A restart through the orchestrator itself (the Docker engine). Two monitors that both believe they lead
    /// may restart a node twice in a row; nodes are built to die anywhere, so that costs only time.
    Orchestrator(Arc<dyn Orchestrator>),
}

impl Monitor {
    fn me(&self) -> String {
        monitor_name(self.replica)
    }

    pub async fn run(self, amqp_url: &str) -> anyhow::Result<()> {
        let me = self.me();
        let incarnation = Arc::new(coffee_engine::incarnation::Incarnation::claim(&self.node_dir).await?);
        incarnation.watch();
        let connection = amqp::connect_node(amqp_url, &me).await;
        let channel = connection.create_channel().await?;
        amqp::declare_queues(&channel, &self.topology).await?;
        let watch = Arc::new(std::sync::Mutex::new(Watch::new(self.watch_config(), Instant::now())));
        let announce = {
            let watch = watch.clone();
            move |beat: &mut heartbeat::Heartbeat| {
                beat.restarting = watch.lock().expect("watch lock").restarting(Instant::now());
            }
        };
        heartbeat::start_with(&connection, &self.topology, me.clone(), Arc::new(Counters::default()), announce).await?;
        let mut beats = Box::pin(heartbeat::subscribe(&connection, &self.topology).await?);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(monitor = %me, nodes = self.nodes.len(), timeout = ?self.timeout, "monitor watching");
        loop {
            tokio::select! {
                beat = beats.next() => {
                    let Some(beat) = beat else { return Err(amqp::BrokerError::Lost("the heartbeat stream ended".into()).into()) };
                    watch.lock().expect("watch lock").heard(&beat, Instant::now());
                }
                _ = tick.tick() => {
                    // Beats already here are heard before anyone is judged.
                    while let Some(Some(beat)) = beats.next().now_or_never() {
                        watch.lock().expect("watch lock").heard(&beat, Instant::now());
                    }
                    let now = Instant::now();
                    let (judgement, (heard, oldest)) = {
                        let mut watch = watch.lock().expect("watch lock");
                        // This monitor beats too: the broker blocks its connection when it blocks everyone's.
                        watch.broker_blocked(connection.status().blocked(), now);
                        (watch.tick(now), watch.heard_summary(now))
                    };
                    if let Some(leader) = judgement.new_leader {
                        info!(monitor = %me, leader = %monitor_name(leader), "leader elected");
                    }
                    tracing::debug!(monitor = %me, heard, silent = judgement.restart.len(), ?oldest, "ticked");
                    for (node, pid) in judgement.restart {
                        warn!(monitor = %me, %node, ?pid, "node silent, or stuck on the broker, past its timeout: asking for a restart");
                        self.restart(&channel, node, pid).await?;
                    }
                }
            }
        }
    }

    /// What this monitor decides with ([`Watch`]).
    pub fn watch_config(&self) -> WatchConfig {
        WatchConfig {
            replica: self.replica,
            monitors: self.monitors,
            timeout: self.timeout,
            start_grace: self.start_grace,
            stuck_timeout: self.stuck_timeout,
            nodes: self.nodes.clone(),
        }
    }

    /// Has `node` restarted: through the owner's control queue, or the orchestrator.
    async fn restart(&self, channel: &lapin::Channel, node: String, pid: Option<u32>) -> anyhow::Result<()> {
        match &self.restarter {
            Restarter::ControlQueue => {
                let request = RestartRequest { node, pid, by: self.me() };
                control::request_restart(channel, &self.topology, &request).await?;
            }
            // In its own task: an engine call may take seconds, and heartbeats keep coming.
            Restarter::Orchestrator(orchestrator) => {
                let orchestrator = orchestrator.clone();
                tokio::spawn(async move {
                    match orchestrator.restart(&node).await {
                        Ok(()) => info!(%node, "restarted through the orchestrator"),
                        Err(e) => warn!(%node, error = %format!("{e:#}"), "restart failed"),
                    }
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_names_are_recognised() {
        assert!(is_monitor("monitor-0") && is_monitor("monitor-12"));
        assert!(!is_monitor("monitor") && !is_monitor("q4_count-0") && !is_monitor("monitor-x"));
    }
}
