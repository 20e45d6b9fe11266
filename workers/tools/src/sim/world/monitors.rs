//! Health monitors in the simulation: three monitors run the real decision code (`coffee_ops::monitor::Watch`)
//! on virtual time, hear every running process's heartbeat, elect a leader, and have silent processes restarted
//! by the simulated orchestrator, which, like the local one, ignores a request naming a process that is gone.
//! A killed replica waits for them (nobody else restarts it); a killed monitor is restarted by the leader or by
//! the cluster's supervisor, whichever comes first. Times are the real ones divided by ten.

use super::*;
use coffee_engine::heartbeat::Heartbeat;
use coffee_ops::monitor::{monitor_name, Watch, WatchConfig};
use coffee_ops::orchestrator::acts_on_restart;

/// How many monitors watch.
pub(super) const MONITORS: u16 = 3;
/// A process beats this often (steps).
pub(super) const BEAT_EVERY: u64 = 100;
/// A monitor's clock ticks this often, unless its machine is loaded.
const TICK_EVERY: u64 = 25;
/// A process silent this long is restarted.
pub(super) const TIMEOUT: u64 = 300;
/// A process restarted and not heard since is left alone this long.
const START_GRACE: u64 = 3_000;
/// A process whose beats say its main loop has waited this long on the broker is restarted, though it beats.
const STUCK_TIMEOUT: u64 = 2_000;
/// The cluster's supervisor restarts an exited monitor within this many steps.
const SUPERVISOR_DELAY: u64 = 300;

pub(super) struct SimMonitor {
    pub(super) name: String,
    /// What it knows (none while it is down).
    pub(super) watch: Option<Watch>,
    /// Its process: a restart request naming an older one is ignored.
    pub(super) incarnation: u32,
    pub(super) next_tick: u64,
    pub(super) next_beat: u64,
    /// When the supervisor restarts it, while it is down.
    pub(super) down_until: u64,
    /// Stopped (SIGSTOP) until then: it neither ticks nor beats; beats sent to it wait.
    pub(super) paused_until: Option<u64>,
    /// Beats that arrived while it was paused, heard as it wakes, before any newer one.
    pub(super) inbox: Vec<Heartbeat>,
    /// Its machine is loaded from then on: every tick comes late by a third to two thirds of the timeout.
    pub(super) loaded: bool,
}

impl SimMonitor {
    pub(super) fn new(replica: u16) -> SimMonitor {
        SimMonitor {
            name: monitor_name(replica),
            watch: None,
            incarnation: 0,
            next_tick: 0,
            next_beat: 0,
            down_until: 0,
            paused_until: None,
            inbox: Vec::new(),
            loaded: false,
        }
    }

    pub(super) fn running(&self) -> bool {
        self.watch.is_some() && self.paused_until.is_none()
    }
}

impl World<'_> {
    /// Every process that the monitors watch: the replicas, then the monitors.
    fn watched_names(&self) -> Vec<String> {
        let replicas = self.replicas.iter().map(|r| r.name.to_string());
        replicas.chain(self.monitors.iter().map(|m| m.name.clone())).collect()
    }

    /// Starts monitor `m` (again): it listens from now, and judges nobody for a timeout.
    pub(super) fn start_monitor(&mut self, m: usize) {
        let config = WatchConfig {
            replica: m as u16,
            monitors: MONITORS,
            timeout: Duration::from_millis(TIMEOUT),
            start_grace: Duration::from_millis(START_GRACE),
            stuck_timeout: Duration::from_millis(STUCK_TIMEOUT),
            nodes: self.watched_names(),
        };
        let now = self.now();
        let step = self.step;
        let monitor = &mut self.monitors[m];
        monitor.watch = Some(Watch::new(config, now));
        monitor.incarnation += 1;
        monitor.next_tick = step + TICK_EVERY;
        monitor.next_beat = step;
        monitor.paused_until = None;
        monitor.inbox.clear();
    }

    pub(super) fn kill_monitor(&mut self, m: usize) {
        let delay = self.rng.gen_range(0..=SUPERVISOR_DELAY);
        let monitor = &mut self.monitors[m];
        monitor.watch = None;
        monitor.paused_until = None;
        monitor.inbox.clear();
        monitor.down_until = self.step + delay;
        note!(self, "{} killed", self.monitors[m].name);
    }

    /// What happens at every step whoever steps: processes beat, paused ones wake, the supervisor restarts the
    /// monitors that exited.
    pub(super) fn keep_time(&mut self) {
        let step = self.step;
        self.keep_replicas();
        for m in 0..self.monitors.len() {
            let monitor = &mut self.monitors[m];
            if monitor.watch.is_none() && step >= monitor.down_until {
                note!(self, "{} restarted by the cluster's supervisor", self.monitors[m].name);
                self.start_monitor(m);
            }
            let now = self.now();
            let monitor = &mut self.monitors[m];
            if monitor.paused_until.is_some_and(|until| step >= until) {
                monitor.paused_until = None;
                // What waited in its queue comes first, before any beat sent from now on.
                if let Some(watch) = &mut monitor.watch {
                    std::mem::take(&mut monitor.inbox).iter().for_each(|beat| watch.heard(beat, now));
                }
                note!(self, "{} wakes from its pause", self.monitors[m].name);
            }
            let now = self.now();
            let monitor = &mut self.monitors[m];
            if let (true, Some(watch)) = (monitor.running() && step >= monitor.next_beat, &monitor.watch) {
                monitor.next_beat = step + BEAT_EVERY;
                let mut beat = Heartbeat::quiet(&monitor.name, monitor.incarnation, 0);
                beat.restarting = watch.restarting(now);
                self.send_beat(beat);
            }
        }
    }

    /// A beat reaches every monitor that is up (a paused one finds it waiting when it wakes); none is sent while
    /// the broker blocks publishers.
    pub(super) fn send_beat(&mut self, beat: Heartbeat) {
        if self.alarm_until.is_some() {
            return;
        }
        let now = self.now();
        for monitor in &mut self.monitors {
            match (&mut monitor.watch, monitor.paused_until) {
                (Some(watch), None) => watch.heard(&beat, now),
                (Some(_), Some(_)) => monitor.inbox.push(beat.clone()),
                (None, _) => {}
            }
        }
    }

    /// Whether monitor `m`'s clock is due to tick.
    pub(super) fn monitor_due(&self, m: usize) -> bool {
        let monitor = &self.monitors[m];
        monitor.running() && self.step >= monitor.next_tick
    }

    /// A tick of monitor `m`: it judges; the leader's requests go to the orchestrator.
    pub(super) fn step_monitor(&mut self, m: usize) {
        let now = self.now();
        let late = if self.monitors[m].loaded { self.rng.gen_range(TIMEOUT / 3..=TIMEOUT * 2 / 3) } else { 0 };
        let monitor = &mut self.monitors[m];
        monitor.next_tick = self.step + TICK_EVERY + late;
        let Some(watch) = &mut monitor.watch else { return };
        // Its own connection is blocked too while the broker blocks publishers.
        watch.broker_blocked(self.alarm_until.is_some(), now);
        let judgement = watch.tick(now);
        let name = monitor.name.clone();
        if let Some(leader) = judgement.new_leader {
            note!(self, "{name} takes {} for the leader", monitor_name(leader));
        }
        for (node, pid) in judgement.restart {
            note!(self, "{name} asks for {node}'s restart (process {pid:?} silent or stuck past its timeout)");
            if self.alarm_until.is_some() {
                self.restarts_in_alarm.push(node.clone());
            }
            self.orchestrate_restart(&node, pid);
        }
    }

    /// The orchestrator acts on a request to restart `node` as the local one does: it decides with the same
    /// code (`coffee_ops::orchestrator::acts_on_restart`), then kills the process it started last, if it
    /// still runs, and starts a new one.
    fn orchestrate_restart(&mut self, node: &str, pid: Option<u32>) {
        if let Some(i) = self.replicas.iter().position(|r| &*r.name == node) {
            let child = self.replicas[i].child;
            let current = self.replicas[i].processes.iter().any(|p| p.pid == child).then_some(child);
            if !acts_on_restart(current, pid) {
                self.coverage.reach(Reached::StaleRestartIgnored, 1);
                note!(self, "the orchestrator ignores it: {node} is already another process, running");
                return;
            }
            self.coverage.reach(Reached::MonitorRestart, 1);
            if let Some(current) = current {
                self.end_process(i, current, Exit::Killed);
            }
            note!(self, "{node} restarted at a monitor's request");
            self.replicas[i].child = self.start_process(i);
        } else if let Some(m) = self.monitors.iter().position(|m| m.name == node) {
            let current = self.monitors[m].watch.is_some().then_some(self.monitors[m].incarnation);
            if !acts_on_restart(current, pid) {
                self.coverage.reach(Reached::StaleRestartIgnored, 1);
                note!(self, "the orchestrator ignores it: {node} is already another process, running");
                return;
            }
            self.coverage.reach(Reached::MonitorRestart, 1);
            note!(self, "{node} restarted at a monitor's request");
            self.start_monitor(m);
        }
    }

    /// Whether every process runs (none down or paused).
    pub(super) fn all_running(&self) -> bool {
        self.replicas.iter().all(SimReplica::running) && self.monitors.iter().all(SimMonitor::running)
    }
}
