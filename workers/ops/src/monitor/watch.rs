//! What a health monitor decides, without a broker or a clock of its own: the beats it heard and the ticks of
//! its clock go in, the leader and the nodes to restart come out. The monitor process ([`super::Monitor`])
//! feeds it from RabbitMQ and tokio's clock; the simulator (`coffee sim`) feeds it on virtual time, which is
//! how its timeouts, its election and its start graces are tried under thousands of fault schedules.

use coffee_engine::heartbeat;
use coffee_engine::planted::{self, Bug};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use tracing::warn;

use super::monitor_name;

/// Who a monitor is and what it watches.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// This monitor's replica number (the highest live one leads).
    pub replica: u16,
    pub monitors: u16,
    /// A node silent this long is restarted.
    pub timeout: Duration,
    /// See [`super::DEFAULT_START_GRACE`].
    pub start_grace: Duration,
    /// A node whose beats say its main loop has waited this long on the broker in one step is stuck, though it
    /// beats: it is restarted (see [`super::DEFAULT_STUCK_TIMEOUT`]).
    pub stuck_timeout: Duration,
    /// Every node to watch (workers, gateway, and the other monitors).
    pub nodes: Vec<String>,
}

/// One monitor's view of the cluster.
pub struct Watch {
    config: WatchConfig,
    liveness: Liveness,
    leader: Option<u16>,
}

/// What one tick of the monitor's clock decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Judgement {
    /// The leader, when it changed on this tick.
    pub new_leader: Option<u16>,
    /// The nodes to restart, each with the process found silent (if it was ever heard): only the leader asks,
    /// and it asks about a node once per timeout.
    pub restart: Vec<(String, Option<u32>)>,
}

impl Watch {
    /// A monitor that starts listening at `now`.
    pub fn new(config: WatchConfig, now: Instant) -> Watch {
        Watch { config, liveness: Liveness::new(now), leader: None }
    }

    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// Records a beat; a monitor's beat also says which nodes it had restarted.
    pub fn heard(&mut self, beat: &heartbeat::Heartbeat, now: Instant) {
        self.liveness.heard(beat, now);
    }

    /// Whether the broker blocks this monitor's own publishers (a memory or disk alarm), as its connection
    /// says. Every node's publishers are blocked too, heartbeats included: their silence is the broker's, not
    /// theirs. While it lasts nobody is judged, and when it ends the monitor's clock stood still for it: every
    /// node gets a whole timeout to be heard again.
    pub fn broker_blocked(&mut self, blocked: bool, now: Instant) {
        if !planted::active(Bug::MonitorsBlindToAlarms) {
            self.liveness.broker_blocked(blocked, now);
        }
    }

    /// The nodes this monitor had restarted and has not heard since, for its own heartbeat.
    pub fn restarting(&self, now: Instant) -> Vec<heartbeat::Restarting> {
        self.liveness.restarting(now, self.config.start_grace)
    }

    /// How many nodes it has heard, and how long ago the least recently heard one beat (for its logs).
    pub fn heard_summary(&self, now: Instant) -> (usize, Option<Duration>) {
        let last_seen = &self.liveness.last_seen;
        (last_seen.len(), last_seen.values().map(|(at, _)| now - *at).max())
    }

    /// A tick of the monitor's clock at `now` (beats already received heard first): elects, and, on the
    /// leader, judges who has been silent too long. Those it names count as asked from `now`.
    pub fn tick(&mut self, now: Instant) -> Judgement {
        let mut judgement = Judgement::default();
        if !self.liveness.tick(now, self.config.timeout) || self.liveness.blocked_since.is_some() {
            return judgement;
        }
        let current = self.leader(now);
        if self.leader != Some(current) {
            self.leader = Some(current);
            judgement.new_leader = Some(current);
        }
        // A monitor that just started has not heard anyone yet: it waits one timeout before judging.
        if current != self.config.replica || now - self.liveness.started < self.config.timeout {
            return judgement;
        }
        judgement.restart = self.silent(now);
        for (node, _) in &judgement.restart {
            self.liveness.asked.insert(node.clone(), now);
        }
        judgement
    }

    fn me(&self) -> String {
        monitor_name(self.config.replica)
    }

    /// The leader among the monitors this one hears (itself always included).
    fn leader(&self, now: Instant) -> u16 {
        let (timeout, last_seen) = (self.config.timeout, &self.liveness.last_seen);
        (0..self.config.monitors)
            .filter(|&m| {
                m == self.config.replica || last_seen.get(&monitor_name(m)).is_some_and(|(at, _)| now - *at <= timeout)
            })
            .max()
            .unwrap_or(self.config.replica)
    }

    /// Nodes silent past the timeout, not asked about within it, and not restarting, each with the process last
    /// heard (none if it never was, or if it was asked about already and not heard since): a node restarted and
    /// not heard since is given the start grace, so a slow start is not cut short by restart after restart (the
    /// local orchestrator also ignores a request naming a pid that is gone; containers keep their pid, 1). A
    /// node never heard is given the start grace from the monitor's own start: it may be waiting for the broker
    /// or replaying its logs.
    fn silent(&self, now: Instant) -> Vec<(String, Option<u32>)> {
        let WatchConfig { timeout, start_grace, stuck_timeout, .. } = self.config;
        let me = self.me();
        self.config
            .nodes
            .iter()
            .filter(|node| **node != me)
            .filter_map(|node| {
                let (last, pid, limit) = match self.liveness.last_seen.get(node) {
                    Some((at, pid)) => (*at, Some(*pid), timeout),
                    None => (self.liveness.started, None, start_grace.max(timeout)),
                };
                // Alive but stuck: its beats say its main loop has waited on the broker too long. Named by its
                // pid, asked about once per timeout like a silent one.
                let stuck = self.liveness.stuck.get(node).is_some_and(|(for_, pid_then)| {
                    *for_ >= stuck_timeout && Some(*pid_then) == pid && !planted::active(Bug::StuckNodesBeatOn)
                });
                let asked = self.liveness.asked.get(node);
                let asked_recently =
                    asked.is_some_and(|at| now - *at <= timeout || planted::active(Bug::MonitorAsksOnce));
                let unheard_since_asked = asked.is_some_and(|at| last <= *at);
                let starting = unheard_since_asked && asked.is_some_and(|at| now - *at <= start_grace);
                // Asked already and not heard since: the process that runs now may be a newer one this monitor
                // never heard (started by the supervisor, and hung or dead before its first beat), which a
                // request naming the old pid would never reach. A repeated request names no process.
                let pid = if unheard_since_asked { None } else { pid };
                let silent = now - last > limit && !starting;
                ((silent || stuck) && !asked_recently).then(|| (node.clone(), pid))
            })
            .collect()
    }
}

/// What a monitor knows: when it last heard each node, and which nodes were restarted and when (its own
/// requests, and those other monitors report in their heartbeats).
struct Liveness {
    /// When this monitor started listening: a node never heard is judged from here.
    started: Instant,
    last_seen: HashMap<String, (Instant, u32)>,
    /// How long each node's latest beat said its main loop had waited on the broker, and that beat's pid.
    stuck: HashMap<String, (Duration, u32)>,
    asked: HashMap<String, Instant>,
    /// Since when the broker blocks this monitor's publishers, while it does.
    blocked_since: Option<Instant>,
    /// The last time the monitor's clock ticked: a tick that comes much later means the process was paused.
    last_tick: Instant,
}

impl Liveness {
    fn new(now: Instant) -> Liveness {
        Liveness {
            started: now,
            last_seen: HashMap::new(),
            stuck: HashMap::new(),
            asked: HashMap::new(),
            blocked_since: None,
            last_tick: now,
        }
    }

    fn heard(&mut self, beat: &heartbeat::Heartbeat, now: Instant) {
        self.last_seen.insert(beat.node.clone(), (now, beat.pid));
        match beat.stuck_ms.filter(|_| !beat.blocked) {
            Some(ms) => self.stuck.insert(beat.node.clone(), (Duration::from_millis(ms), beat.pid)),
            None => self.stuck.remove(&beat.node),
        };
        for restarting in &beat.restarting {
            let at = now.checked_sub(Duration::from_millis(restarting.asked_ms_ago)).unwrap_or(now);
            let asked = self.asked.entry(restarting.node.clone()).or_insert(at);
            *asked = (*asked).max(at);
        }
    }

    /// See [`Watch::broker_blocked`].
    fn broker_blocked(&mut self, blocked: bool, now: Instant) {
        match (self.blocked_since, blocked) {
            (None, true) => {
                warn!("the broker blocks publishers (a memory or disk alarm): judging nobody while it does");
                self.blocked_since = Some(now);
            }
            (Some(since), false) => {
                let gap = now - since;
                tracing::info!(?gap, "the broker no longer blocks publishers");
                self.stand_still(gap, now);
                self.blocked_since = None;
            }
            _ => {}
        }
    }

    /// The monitor's clock stood still for `gap`: every node counts as heard that much later.
    fn stand_still(&mut self, gap: Duration, now: Instant) {
        for (at, _) in self.last_seen.values_mut() {
            *at = (*at + gap).min(now);
        }
        self.started = (self.started + gap).min(now);
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
        // The planted bug is the threshold this fix replaced: a third of the timeout, which a loaded machine's
        // late ticks pass all the time, so that a loaded monitor forgave every silence.
        let pause = if planted::active(Bug::MonitorForgivesLateTicks) { timeout / 3 } else { timeout };
        if gap < pause {
            return true;
        }
        warn!(?gap, "this monitor was not running for a while: its clock stood still meanwhile");
        self.stand_still(gap, now);
        false
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(replica: u16, started: Instant) -> Watch {
        let config = WatchConfig {
            replica,
            monitors: 3,
            timeout: Duration::from_secs(3),
            start_grace: Duration::from_secs(30),
            stuck_timeout: Duration::from_secs(20),
            nodes: ["gateway", "tx_filter-0", "monitor-0", "monitor-1", "monitor-2"].map(String::from).to_vec(),
        };
        Watch::new(config, started)
    }

    fn beat(node: &str, pid: u32) -> heartbeat::Heartbeat {
        heartbeat::Heartbeat::quiet(node, pid, 0)
    }

    fn is_silent(w: &Watch, node: &str, at: Instant) -> bool {
        w.silent(at).iter().any(|(n, _)| n == node)
    }

    #[test]
    fn the_highest_live_monitor_leads() {
        let now = Instant::now();
        let mut w = watch(0, now);
        assert_eq!(w.leader(now), 0, "alone, a monitor leads");
        w.heard(&beat("monitor-2", 10), now);
        w.heard(&beat("monitor-1", 11), now);
        assert_eq!(w.leader(now), 2);
        // monitor-2 goes silent: after the timeout, monitor-1 leads.
        let later = now + Duration::from_secs(4);
        w.heard(&beat("monitor-1", 11), later);
        assert_eq!(w.leader(later), 1);
        let mut one = watch(1, now);
        one.heard(&beat("monitor-2", 10), now);
        assert_eq!(one.leader(later), 1);
    }

    #[test]
    fn silent_nodes_are_reported_once_per_timeout() {
        let started = Instant::now();
        let mut w = watch(2, started);
        let now = started + Duration::from_secs(1);
        for node in ["gateway", "tx_filter-0", "monitor-0", "monitor-1"] {
            w.heard(&beat(node, 7), now);
        }
        assert!(w.silent(now).is_empty());
        let later = now + Duration::from_secs(5);
        w.heard(&beat("gateway", 8), later);
        let silent = w.silent(later);
        assert_eq!(silent.len(), 3, "{silent:?}");
        assert!(silent.contains(&("tx_filter-0".to_owned(), Some(7))));
        w.liveness.asked.insert("tx_filter-0".into(), later);
        assert_eq!(w.silent(later).len(), 2, "asked once per timeout");
    }

    #[test]
    fn only_the_leader_judges_and_it_asks_once_per_timeout() {
        let t0 = Instant::now();
        let (mut leader, mut follower) = (watch(2, t0), watch(1, t0));
        let t1 = t0 + Duration::from_secs(1);
        for node in ["gateway", "tx_filter-0", "monitor-0", "monitor-1", "monitor-2"] {
            leader.heard(&beat(node, 7), t1);
            follower.heard(&beat(node, 7), t1);
        }
        assert_eq!(leader.tick(t1).new_leader, Some(2));
        assert_eq!(follower.tick(t1).new_leader, Some(2));
        // Ticks every 250 ms; the gateway and the monitors keep beating, tx_filter-0 has died.
        let mut asked = Vec::new();
        for ms in (1_250..=10_000).step_by(250) {
            let now = t0 + Duration::from_millis(ms);
            for node in ["gateway", "monitor-0", "monitor-1", "monitor-2"] {
                leader.heard(&beat(node, 7), now);
                follower.heard(&beat(node, 7), now);
            }
            assert!(follower.tick(now).restart.is_empty(), "a follower asks for nothing");
            asked.extend(leader.tick(now).restart.into_iter().map(|(node, pid)| (ms, node, pid)));
        }
        // Silent for more than 3 s after its last beat at 1 s: asked at 4.25 s, then given the start grace.
        assert_eq!(asked, vec![(4_250, "tx_filter-0".to_owned(), Some(7))]);
    }

    #[test]
    fn a_restarted_node_gets_the_start_grace_then_the_timeout_again() {
        let started = Instant::now();
        let mut w = watch(2, started);
        let asked = started + Duration::from_secs(10);
        w.heard(&beat("tx_filter-0", 7), started + Duration::from_secs(5));
        w.liveness.asked.insert("tx_filter-0".into(), asked);
        // Not heard since the restart: left alone for the grace, then restarted again (it may hang at start),
        // naming no process: the one that runs may be newer than the one last heard.
        assert!(!is_silent(&w, "tx_filter-0", asked + Duration::from_secs(20)));
        let again = w.silent(asked + Duration::from_secs(31));
        assert!(again.contains(&("tx_filter-0".to_owned(), None)), "{again:?}");
        // Heard after the restart: the plain timeout applies from its last beat.
        w.heard(&beat("tx_filter-0", 8), asked + Duration::from_secs(2));
        assert!(!is_silent(&w, "tx_filter-0", asked + Duration::from_secs(4)));
        assert!(is_silent(&w, "tx_filter-0", asked + Duration::from_secs(6)));
    }

    #[test]
    fn a_new_leader_grants_the_start_graces_its_predecessor_announced() {
        let t0 = Instant::now();
        // monitor-2 leads and has tx_filter-0 restarted at t0 + 5 s; monitor-1 follows and hears its beats.
        let mut leader = watch(2, t0);
        let mut follower = watch(1, t0);
        for node in ["gateway", "tx_filter-0", "monitor-0", "monitor-1", "monitor-2"] {
            leader.heard(&beat(node, 7), t0 + Duration::from_secs(1));
            follower.heard(&beat(node, 7), t0 + Duration::from_secs(1));
        }
        let asked = t0 + Duration::from_secs(5);
        assert!(is_silent(&leader, "tx_filter-0", asked));
        leader.liveness.asked.insert("tx_filter-0".into(), asked);
        let mut announced = beat("monitor-2", 9);
        announced.restarting = leader.restarting(asked + Duration::from_millis(500));
        assert_eq!(announced.restarting.len(), 1);
        follower.heard(&announced, asked + Duration::from_millis(500));
        // The leader dies at once; ten seconds later monitor-1 leads, and tx_filter-0 is still recovering.
        let later = asked + Duration::from_secs(10);
        for node in ["gateway", "monitor-0"] {
            follower.heard(&beat(node, 7), later);
        }
        assert_eq!(follower.leader(later), 1);
        assert!(!is_silent(&follower, "tx_filter-0", later), "restarted again while it recovers");
        assert!(is_silent(&follower, "monitor-2", later));
        // Past the grace it is judged again.
        assert!(is_silent(&follower, "tx_filter-0", asked + Duration::from_secs(31)));
    }

    #[test]
    fn a_monitor_woken_from_a_pause_listens_one_timeout_before_judging() {
        let t0 = Instant::now();
        let mut w = watch(2, t0);
        let timeout = w.config.timeout;
        for node in ["gateway", "tx_filter-0", "monitor-0", "monitor-1"] {
            w.heard(&beat(node, 7), t0 + Duration::from_secs(1));
        }
        for ms in (250..=1250).step_by(250) {
            assert!(w.liveness.tick(t0 + Duration::from_millis(ms), timeout), "ticks on time judge");
        }
        // Late ticks on a loaded machine are not a pause: judging goes on.
        assert!(w.liveness.tick(t0 + Duration::from_millis(2_500), timeout));
        // Stopped for 10 s: everyone looks silent, but the beats sent meanwhile wait in the queue.
        let woke = t0 + Duration::from_millis(12_500);
        assert!(!w.liveness.tick(woke, timeout), "the first tick after a pause judges nobody");
        assert!(w.silent(woke + Duration::from_millis(250)).is_empty());
        assert!(w.liveness.tick(woke + Duration::from_millis(250), timeout));
        // Silent for a whole timeout of the monitor's running time: judged.
        assert_eq!(w.silent(woke + Duration::from_secs(3)).len(), 4);
    }

    #[test]
    fn a_node_never_heard_is_judged_after_the_start_grace() {
        let t0 = Instant::now();
        let w = watch(2, t0);
        // Right after a broker outage every node may still be waiting to reconnect.
        assert!(!is_silent(&w, "gateway", t0 + Duration::from_secs(10)));
        assert!(is_silent(&w, "gateway", t0 + Duration::from_secs(31)));
    }

    #[test]
    fn a_node_that_beats_while_stuck_on_the_broker_is_restarted() {
        let t0 = Instant::now();
        let mut w = watch(2, t0);
        let mut stuck = beat("tx_filter-0", 7);
        stuck.stuck_ms = Some(5_000);
        w.heard(&stuck, t0);
        assert!(!is_silent(&w, "tx_filter-0", t0), "waiting 5 s is not stuck yet");
        stuck.stuck_ms = Some(21_000);
        w.heard(&stuck, t0);
        assert_eq!(w.silent(t0), vec![("tx_filter-0".to_owned(), Some(7))], "stuck: restarted though it beats");
        // Blocked by the broker (an alarm) is waiting, not stuck; and a beat that waits no more clears it.
        stuck.blocked = true;
        w.heard(&stuck, t0);
        assert!(!is_silent(&w, "tx_filter-0", t0));
        w.heard(&beat("tx_filter-0", 7), t0);
        assert!(!is_silent(&w, "tx_filter-0", t0));
    }

    #[test]
    fn while_the_broker_blocks_publishers_nobody_is_judged_and_then_everyone_gets_a_timeout() {
        let t0 = Instant::now();
        let mut w = watch(2, t0);
        for node in ["gateway", "tx_filter-0", "monitor-0", "monitor-1"] {
            w.heard(&beat(node, 7), t0 + Duration::from_secs(1));
        }
        // An alarm: nobody's beats come for a minute.
        w.broker_blocked(true, t0 + Duration::from_secs(2));
        for s in 3..62 {
            let now = t0 + Duration::from_secs(s);
            w.broker_blocked(true, now);
            assert!(w.tick(now).restart.is_empty(), "judged during the alarm at {s} s");
        }
        let over = t0 + Duration::from_secs(62);
        w.broker_blocked(false, over);
        assert!(w.tick(over).restart.is_empty(), "every node gets a timeout to be heard again");
        // Still silent a whole timeout after the alarm: judged.
        let later = over + Duration::from_millis(3_500);
        assert_eq!(w.silent(later).len(), 4);
    }
}
