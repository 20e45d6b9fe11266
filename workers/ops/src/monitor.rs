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

use crate::control::{self, RestartRequest};
use crate::orchestrator::Orchestrator;
use coffee_engine::amqp;
use coffee_engine::heartbeat;
use coffee_engine::metrics::Counters;
use coffee_engine::topology::Topology;
use coffee_model::node::{NodeId, Role};
use futures::{FutureExt, StreamExt};
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

/// What a monitor knows: when it last heard each node, and which nodes were restarted and when (its own
/// requests, and those other monitors report in their heartbeats).
struct Liveness {
    /// When this monitor started listening: a node never heard is judged from here.
    started: Instant,
    last_seen: HashMap<String, (Instant, u32)>,
    asked: HashMap<String, Instant>,
    /// The last time the monitor's clock ticked: a tick that comes much later means the process was paused.
    last_tick: Instant,
}

impl Liveness {
    fn new(now: Instant) -> Liveness {
        Liveness { started: now, last_seen: HashMap::new(), asked: HashMap::new(), last_tick: now }
    }

    /// Records a beat; a monitor's beat also says which nodes it had restarted.
    fn heard(&mut self, beat: &heartbeat::Heartbeat, now: Instant) {
        self.last_seen.insert(beat.node.clone(), (now, beat.pid));
        for restarting in &beat.restarting {
            let at = now.checked_sub(Duration::from_millis(restarting.asked_ms_ago)).unwrap_or(now);
            let asked = self.asked.entry(restarting.node.clone()).or_insert(at);
            *asked = (*asked).max(at);
        }
    }

    /// Notes a tick of the monitor's clock. A gap of a whole timeout means the monitor itself was not running
    /// (stopped, or starved): it heard nothing meanwhile, and must not take that for everyone's silence. Its
    /// clock stood still for the gap: every node counts as heard that much later, and false says to judge
    /// nobody on this tick (the beats sent meanwhile are still in the queue). Shorter delays, as a loaded
    /// machine makes, change nothing: a hung node must still be judged one timeout after its last beat, so a
    /// monitor errs towards a needless restart (harmless: nodes die anywhere) rather than a missed hang.
    fn tick(&mut self, now: Instant, timeout: Duration) -> bool {
        let gap = now - self.last_tick;
        self.last_tick = now;
        if gap < timeout {
            return true;
        }
        warn!(?gap, "this monitor was not running for a while: its clock stood still meanwhile");
        for (at, _) in self.last_seen.values_mut() {
            *at = (*at + gap).min(now);
        }
        self.started = (self.started + gap).min(now);
        false
    }

    /// The nodes restarted and not heard since, with how long ago the restart was asked, for this monitor's
    /// heartbeat.
    fn restarting(&self, now: Instant, start_grace: Duration) -> Vec<heartbeat::Restarting> {
        let mut restarting: Vec<heartbeat::Restarting> = self
            .asked
            .iter()
            .filter(|(node, at)| {
                now - **at <= start_grace && self.last_seen.get(*node).is_none_or(|(last, _)| last <= *at)
            })
            .map(|(node, at)| heartbeat::Restarting {
                node: node.clone(),
                asked_ms_ago: (now - *at).as_millis() as u64,
            })
            .collect();
        restarting.sort_by(|a, b| a.node.cmp(&b.node));
        restarting
    }
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

    /// Nodes silent past the timeout, not asked about within it, and not restarting: a node restarted and not
    /// heard since is given the start grace, so a slow start is not cut short by restart after restart (the
    /// local orchestrator also ignores a request naming a pid that is gone; containers keep their pid, 1). A
    /// node never heard is given the start grace from the monitor's own start: it may be waiting for the broker
    /// or replaying its logs.
    fn silent(&self, liveness: &Liveness, now: Instant) -> Vec<(String, Option<u32>)> {
        self.nodes
            .iter()
            .filter(|node| **node != self.me())
            .filter_map(|node| {
                let (last, pid, limit) = match liveness.last_seen.get(node) {
                    Some((at, pid)) => (*at, Some(*pid), self.timeout),
                    None => (liveness.started, None, self.start_grace.max(self.timeout)),
                };
                let asked = liveness.asked.get(node);
                let asked_recently = asked.is_some_and(|at| now - *at <= self.timeout);
                let starting = asked.is_some_and(|at| last <= *at && now - *at <= self.start_grace);
                (now - last > limit && !asked_recently && !starting).then(|| (node.clone(), pid))
            })
            .collect()
    }

    pub async fn run(self, amqp_url: &str) -> anyhow::Result<()> {
        let me = self.me();
        let incarnation = Arc::new(coffee_engine::incarnation::Incarnation::claim(&self.node_dir).await?);
        incarnation.watch();
        let connection = amqp::connect_node(amqp_url, &me).await;
        let channel = connection.create_channel().await?;
        amqp::declare_queues(&channel, &self.topology).await?;
        let liveness = Arc::new(std::sync::Mutex::new(Liveness::new(Instant::now())));
        let announce = {
            let (liveness, start_grace) = (liveness.clone(), self.start_grace);
            move |beat: &mut heartbeat::Heartbeat| {
                beat.restarting = liveness.lock().expect("liveness lock").restarting(Instant::now(), start_grace);
            }
        };
        heartbeat::start_with(&connection, &self.topology, me.clone(), Arc::new(Counters::default()), announce).await?;
        let mut beats = Box::pin(heartbeat::subscribe(&connection, &self.topology).await?);
        let mut leader = None;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(monitor = %me, nodes = self.nodes.len(), timeout = ?self.timeout, "monitor watching");
        loop {
            tokio::select! {
                beat = beats.next() => {
                    let Some(beat) = beat else { return Err(amqp::BrokerError::Lost("the heartbeat stream ended".into()).into()) };
                    liveness.lock().expect("liveness lock").heard(&beat, Instant::now());
                }
                _ = tick.tick() => {
                    // Beats already here are heard before anyone is judged.
                    while let Some(Some(beat)) = beats.next().now_or_never() {
                        liveness.lock().expect("liveness lock").heard(&beat, Instant::now());
                    }
                    let now = Instant::now();
                    let silent = {
                        let mut liveness = liveness.lock().expect("liveness lock");
                        if !liveness.tick(now, self.timeout) {
                            continue;
                        }
                        let current = self.leader(&liveness, now);
                        if leader != Some(current) {
                            info!(monitor = %me, leader = %monitor_name(current), "leader elected");
                            leader = Some(current);
                        }
                        // A monitor that just started has not heard anyone yet: it waits one timeout before judging.
                        if current != self.replica || now - liveness.started < self.timeout {
                            continue;
                        }
                        let silent = self.silent(&liveness, now);
                        tracing::debug!(
                            monitor = %me,
                            heard = liveness.last_seen.len(),
                            silent = silent.len(),
                            oldest_ms = liveness.last_seen.values().map(|(at, _)| (now - *at).as_millis()).max(),
                            "judged"
                        );
                        for (node, _) in &silent {
                            liveness.asked.insert(node.clone(), now);
                        }
                        silent
                    };
                    for (node, pid) in silent {
                        warn!(monitor = %me, %node, ?pid, "node silent past the timeout: asking for a restart");
                        self.restart(&channel, node, pid).await?;
                    }
                }
            }
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

    fn monitor(replica: u16) -> Monitor {
        Monitor {
            topology: Topology::default(),
            replica,
            monitors: 3,
            timeout: Duration::from_secs(3),
            start_grace: Duration::from_secs(30),
            nodes: ["gateway", "tx_filter-0", "monitor-0", "monitor-1", "monitor-2"].map(String::from).to_vec(),
            restarter: Restarter::ControlQueue,
            node_dir: std::path::PathBuf::from("/nonexistent"),
        }
    }

    fn beat(node: &str, pid: u32) -> heartbeat::Heartbeat {
        heartbeat::Heartbeat::quiet(node, pid, 0)
    }

    fn is_silent(m: &Monitor, liveness: &Liveness, node: &str, at: Instant) -> bool {
        m.silent(liveness, at).iter().any(|(n, _)| n == node)
    }

    #[test]
    fn the_highest_live_monitor_leads() {
        let now = Instant::now();
        let mut liveness = Liveness::new(now);
        assert_eq!(monitor(0).leader(&liveness, now), 0, "alone, a monitor leads");
        liveness.heard(&beat("monitor-2", 10), now);
        liveness.heard(&beat("monitor-1", 11), now);
        assert_eq!(monitor(0).leader(&liveness, now), 2);
        // monitor-2 goes silent: after the timeout, monitor-1 leads.
        let later = now + Duration::from_secs(4);
        liveness.heard(&beat("monitor-1", 11), later);
        assert_eq!(monitor(0).leader(&liveness, later), 1);
        assert_eq!(monitor(1).leader(&liveness, later), 1);
    }

    #[test]
    fn silent_nodes_are_reported_once_per_timeout() {
        let started = Instant::now();
        let m = monitor(2);
        let mut liveness = Liveness::new(started);
        let now = started + Duration::from_secs(1);
        for node in ["gateway", "tx_filter-0", "monitor-0", "monitor-1"] {
            liveness.heard(&beat(node, 7), now);
        }
        assert!(m.silent(&liveness, now).is_empty());
        let later = now + Duration::from_secs(5);
        liveness.heard(&beat("gateway", 8), later);
        let silent = m.silent(&liveness, later);
        assert_eq!(silent.len(), 3, "{silent:?}");
        assert!(silent.contains(&("tx_filter-0".to_owned(), Some(7))));
        liveness.asked.insert("tx_filter-0".into(), later);
        assert_eq!(m.silent(&liveness, later).len(), 2, "asked once per timeout");
    }

    #[test]
    fn a_restarted_node_gets_the_start_grace_then_the_timeout_again() {
        let started = Instant::now();
        let m = monitor(2);
        let mut liveness = Liveness::new(started);
        let asked = started + Duration::from_secs(10);
        liveness.heard(&beat("tx_filter-0", 7), started + Duration::from_secs(5));
        liveness.asked.insert("tx_filter-0".into(), asked);
        // Not heard since the restart: left alone for the grace, then restarted again (it may hang at start).
        assert!(!is_silent(&m, &liveness, "tx_filter-0", asked + Duration::from_secs(20)));
        assert!(is_silent(&m, &liveness, "tx_filter-0", asked + Duration::from_secs(31)));
        // Heard after the restart: the plain timeout applies from its last beat.
        liveness.heard(&beat("tx_filter-0", 8), asked + Duration::from_secs(2));
        assert!(!is_silent(&m, &liveness, "tx_filter-0", asked + Duration::from_secs(4)));
        assert!(is_silent(&m, &liveness, "tx_filter-0", asked + Duration::from_secs(6)));
    }

    #[test]
    fn a_new_leader_grants_the_start_graces_its_predecessor_announced() {
        let t0 = Instant::now();
        // monitor-2 leads and has tx_filter-0 restarted at t0 + 5 s; monitor-1 follows and hears its beats.
        let leader = monitor(2);
        let mut led = Liveness::new(t0);
        let follower = monitor(1);
        let mut follows = Liveness::new(t0);
        for node in ["gateway", "tx_filter-0", "monitor-0", "monitor-1", "monitor-2"] {
            led.heard(&beat(node, 7), t0 + Duration::from_secs(1));
            follows.heard(&beat(node, 7), t0 + Duration::from_secs(1));
        }
        let asked = t0 + Duration::from_secs(5);
        assert!(is_silent(&leader, &led, "tx_filter-0", asked));
        led.asked.insert("tx_filter-0".into(), asked);
        let mut announced = beat("monitor-2", 9);
        announced.restarting = led.restarting(asked + Duration::from_millis(500), leader.start_grace);
        assert_eq!(announced.restarting.len(), 1);
        follows.heard(&announced, asked + Duration::from_millis(500));
        // The leader dies at once; ten seconds later monitor-1 leads, and tx_filter-0 is still recovering.
        let later = asked + Duration::from_secs(10);
        for node in ["gateway", "monitor-0"] {
            follows.heard(&beat(node, 7), later);
        }
        assert_eq!(follower.leader(&follows, later), 1);
        assert!(!is_silent(&follower, &follows, "tx_filter-0", later), "restarted again while it recovers");
        assert!(is_silent(&follower, &follows, "monitor-2", later));
        // Past the grace it is judged again.
        assert!(is_silent(&follower, &follows, "tx_filter-0", asked + Duration::from_secs(31)));
    }

    #[test]
    fn a_monitor_woken_from_a_pause_listens_one_timeout_before_judging() {
        let t0 = Instant::now();
        let m = monitor(2);
        let mut liveness = Liveness::new(t0);
        for node in ["gateway", "tx_filter-0", "monitor-0", "monitor-1"] {
            liveness.heard(&beat(node, 7), t0 + Duration::from_secs(1));
        }
        for ms in (250..=1250).step_by(250) {
            assert!(liveness.tick(t0 + Duration::from_millis(ms), m.timeout), "ticks on time judge");
        }
        // Late ticks on a loaded machine are not a pause: judging goes on.
        assert!(liveness.tick(t0 + Duration::from_millis(2_500), m.timeout));
        // Stopped for 10 s: everyone looks silent, but the beats sent meanwhile wait in the queue.
        let woke = t0 + Duration::from_millis(12_500);
        assert!(!liveness.tick(woke, m.timeout), "the first tick after a pause judges nobody");
        assert!(m.silent(&liveness, woke + Duration::from_millis(250)).is_empty());
        assert!(liveness.tick(woke + Duration::from_millis(250), m.timeout));
        // Silent for a whole timeout of the monitor's running time: judged.
        assert_eq!(m.silent(&liveness, woke + Duration::from_secs(3)).len(), 4);
    }

    #[test]
    fn a_node_never_heard_is_judged_after_the_start_grace() {
        let t0 = Instant::now();
        let m = monitor(2);
        let liveness = Liveness::new(t0);
        // Right after a broker outage every node may still be waiting to reconnect.
        assert!(!is_silent(&m, &liveness, "gateway", t0 + Duration::from_secs(10)));
        assert!(is_silent(&m, &liveness, "gateway", t0 + Duration::from_secs(31)));
    }

    #[test]
    fn monitor_names_are_recognised() {
        assert!(is_monitor("monitor-0") && is_monitor("monitor-12"));
        assert!(!is_monitor("monitor") && !is_monitor("q4_count-0") && !is_monitor("monitor-x"));
    }
}
