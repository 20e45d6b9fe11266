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
//! How a restart is asked for depends on who owns the nodes ([`Restarter`]): local processes belong to one
//! `coffee cluster up` (or console), so monitors send it a request on the control queue; containers belong to
//! the Docker engine, so monitors restart them through its API. A container killed with SIGKILL counts as
//! stopped on purpose for Docker, whose restart policy then leaves it down: the monitors bring it back.

use crate::amqp;
use crate::control::{self, RestartRequest};
use crate::heartbeat::{self, Counters};
use crate::orchestrator::Orchestrator;
use crate::topology::Topology;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// A node silent this long is restarted, unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a node restarted at a monitor's request may take to send its first heartbeat (waiting for the
/// broker, replaying its logs) before it is judged, and restarted, again.
pub const DEFAULT_START_GRACE: Duration = Duration::from_secs(30);

/// How many monitors `cluster up` starts by default.
pub const DEFAULT_MONITORS: u16 = 3;

pub fn monitor_name(replica: u16) -> String {
    format!("monitor-{replica}")
}

pub struct Monitor {
    pub topology: Topology,
    pub replica: u16,
    pub monitors: u16,
    pub timeout: Duration,
    /// See [`DEFAULT_START_GRACE`].
    pub start_grace: Duration,
    /// Every node to watch (workers, gateway, and the other monitors).
    pub nodes: Vec<String>,
    pub restarter: Restarter,
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

/// What a monitor has heard.
#[derive(Default)]
struct Liveness {
    last_seen: HashMap<String, (Instant, u32)>,
    asked: HashMap<String, Instant>,
}

impl Monitor {
    fn me(&self) -> String {
        monitor_name(self.replica)
    }

    /// The leader among the monitors this one hears (itself always included).
    fn leader(&self, liveness: &Liveness, now: Instant) -> u16 {
        (0..self.monitors)
            .filter(|&m| {
                m == self.replica
                    || liveness.last_seen.get(&monitor_name(m)).is_some_and(|(at, _)| now - *at <= self.timeout)
            })
            .max()
            .unwrap_or(self.replica)
    }

    /// Nodes silent past the timeout, not asked about within it, and not restarting: a node asked about and not
    /// heard since is given the start grace, so a slow start is not cut short by restart after restart (the
    /// local orchestrator also ignores a request naming a pid that is gone; containers keep their pid, 1).
    /// `started` stands in for a node never heard.
    fn silent(&self, liveness: &Liveness, now: Instant, started: Instant) -> Vec<(String, Option<u32>)> {
        self.nodes
            .iter()
            .filter(|node| **node != self.me())
            .filter_map(|node| {
                let (last, pid) = liveness.last_seen.get(node).map_or((started, None), |(at, pid)| (*at, Some(*pid)));
                let asked = liveness.asked.get(node);
                let asked_recently = asked.is_some_and(|at| now - *at <= self.timeout);
                let starting = asked.is_some_and(|at| last <= *at && now - *at <= self.start_grace);
                (now - last > self.timeout && !asked_recently && !starting).then(|| (node.clone(), pid))
            })
            .collect()
    }

    pub async fn run(self, amqp_url: &str) -> anyhow::Result<()> {
        let me = self.me();
        let connection = amqp::connect_patiently(amqp_url, &me, amqp::NODE_PATIENCE).await?;
        let channel = connection.create_channel().await?;
        amqp::declare_queues(&channel, &self.topology).await?;
        heartbeat::start(&connection, &self.topology, me.clone(), Arc::new(Counters::default())).await?;
        let mut beats = Box::pin(heartbeat::subscribe(&connection, &self.topology).await?);
        let started = Instant::now();
        let mut liveness = Liveness::default();
        let mut leader = None;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        info!(monitor = %me, nodes = self.nodes.len(), timeout = ?self.timeout, "monitor watching");
        loop {
            tokio::select! {
                beat = beats.next() => {
                    let Some(beat) = beat else { anyhow::bail!("the heartbeat stream ended") };
                    liveness.last_seen.insert(beat.node, (Instant::now(), beat.pid));
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    let current = self.leader(&liveness, now);
                    if leader != Some(current) {
                        info!(monitor = %me, leader = %monitor_name(current), "leader elected");
                        leader = Some(current);
                    }
                    // A monitor that just started has not heard anyone yet: it waits one timeout before judging.
                    if current != self.replica || now - started < self.timeout {
                        continue;
                    }
                    for (node, pid) in self.silent(&liveness, now, started) {
                        warn!(monitor = %me, %node, ?pid, "node silent past the timeout: asking for a restart");
                        match &self.restarter {
                            Restarter::ControlQueue => {
                                let request = RestartRequest { node: node.clone(), pid, by: me.clone() };
                                control::request_restart(&channel, &self.topology, &request).await?;
                            }
                            // In its own task: an engine call may take seconds, and heartbeats keep coming.
                            Restarter::Orchestrator(orchestrator) => {
                                let (orchestrator, node) = (orchestrator.clone(), node.clone());
                                tokio::spawn(async move {
                                    match orchestrator.restart(&node).await {
                                        Ok(()) => info!(%node, "restarted through the orchestrator"),
                                        Err(e) => warn!(%node, error = %format!("{e:#}"), "restart failed"),
                                    }
                                });
                            }
                        }
                        liveness.asked.insert(node, now);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor(replica: u16) -> Monitor {
        Monitor {
            topology: Topology::default(),
            replica,
            monitors: 3,
            timeout: Duration::from_secs(3),
            start_grace: Duration::from_secs(30),
            nodes: ["gateway", "tx_filter-0", "monitor-0", "monitor-1", "monitor-2"].map(String::from).to_vec(),
            restarter: Restarter::ControlQueue,
        }
    }

    #[test]
    fn the_highest_live_monitor_leads() {
        let now = Instant::now();
        let mut liveness = Liveness::default();
        assert_eq!(monitor(0).leader(&liveness, now), 0, "alone, a monitor leads");
        liveness.last_seen.insert("monitor-2".into(), (now, 10));
        liveness.last_seen.insert("monitor-1".into(), (now, 11));
        assert_eq!(monitor(0).leader(&liveness, now), 2);
        // monitor-2 goes silent: after the timeout, monitor-1 leads.
        let later = now + Duration::from_secs(4);
        liveness.last_seen.insert("monitor-1".into(), (later, 11));
        assert_eq!(monitor(0).leader(&liveness, later), 1);
        assert_eq!(monitor(1).leader(&liveness, later), 1);
    }

    #[test]
    fn silent_nodes_are_reported_once_per_timeout() {
        let started = Instant::now();
        let m = monitor(2);
        let mut liveness = Liveness::default();
        let now = started + Duration::from_secs(1);
        for node in ["gateway", "tx_filter-0", "monitor-0", "monitor-1"] {
            liveness.last_seen.insert(node.into(), (now, 7));
        }
        assert!(m.silent(&liveness, now, started).is_empty());
        let later = now + Duration::from_secs(5);
        liveness.last_seen.insert("gateway".into(), (later, 8));
        let silent = m.silent(&liveness, later, started);
        assert_eq!(silent.len(), 3, "{silent:?}");
        assert!(silent.contains(&("tx_filter-0".to_owned(), Some(7))));
        liveness.asked.insert("tx_filter-0".into(), later);
        assert_eq!(m.silent(&liveness, later, started).len(), 2, "asked once per timeout");
    }

    #[test]
    fn a_restarted_node_gets_the_start_grace_then_the_timeout_again() {
        let started = Instant::now();
        let m = monitor(2);
        let mut liveness = Liveness::default();
        let asked = started + Duration::from_secs(10);
        liveness.last_seen.insert("tx_filter-0".into(), (started + Duration::from_secs(5), 7));
        liveness.asked.insert("tx_filter-0".into(), asked);
        let is_silent =
            |liveness: &Liveness, at| m.silent(liveness, at, started).iter().any(|(n, _)| n == "tx_filter-0");
        // Not heard since the restart: left alone for the grace, then restarted again (it may hang at start).
        assert!(!is_silent(&liveness, asked + Duration::from_secs(20)));
        assert!(is_silent(&liveness, asked + Duration::from_secs(31)));
        // Heard after the restart: the plain timeout applies from its last beat.
        liveness.last_seen.insert("tx_filter-0".into(), (asked + Duration::from_secs(2), 8));
        assert!(!is_silent(&liveness, asked + Duration::from_secs(4)));
        assert!(is_silent(&liveness, asked + Duration::from_secs(6)));
    }
}
