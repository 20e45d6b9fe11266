//! The faults a seed injects, one a step with the run's fault rate while faults may strike.

use super::replica::Cut;
use super::*;

/// The faults one seed injects, how often, and until when. With swarm testing each seed draws its own mix: a
/// random half of the kinds allowed, each with a weight of its own, at a rate from a quarter of the base to four
/// times it, so that rare combinations (many broker restarts and no kills, say) come up; and, in liveness mode,
/// the faults stop at a random step, after which the run must converge within a bound.
#[derive(Debug, Clone)]
pub(super) struct Mix {
    kinds: Vec<(Fault, u32)>,
    /// A fault strikes at a step with this probability...
    pub(super) rate: f64,
    /// ...up to this step.
    pub(super) until: u64,
}

impl Mix {
    pub(super) fn draw(options: &Options, rng: &mut ChaCha8Rng) -> Mix {
        let faults = options.faults;
        let families: Vec<(bool, &[(Fault, u32)])> = vec![
            (faults.crash, &[(Fault::Kill, 3), (Fault::PowerCut, 1)]),
            (faults.broker, &[(Fault::BrokerRestart, 1)]),
            (faults.duplicate, &[(Fault::Duplicate, 2)]),
            (faults.gateway, &[(Fault::GatewayRestart, 1)]),
            (faults.pause, &[(Fault::Pause, 1)]),
            (faults.incarnation, &[(Fault::SecondProcess, 1)]),
            (faults.stray, &[(Fault::Stray, 1)]),
            (faults.channel, &[(Fault::ChannelClosed, 1), (Fault::ConsumerCancelled, 1), (Fault::Nack, 1)]),
            (faults.monitor, &[(Fault::MonitorKill, 1), (Fault::MonitorLoad, 1)]),
            (faults.stuck, &[(Fault::Stuck, 1)]),
            (faults.partition, &[(Fault::Partition, 1)]),
            (faults.alarm, &[(Fault::Alarm, 1)]),
        ];
        let allowed: Vec<&[(Fault, u32)]> =
            families.into_iter().filter(|(on, _)| *on).map(|(_, kinds)| kinds).collect();
        let (mut kinds, mut rate) = (Vec::new(), options.fault_rate);
        if options.swarm && !allowed.is_empty() {
            for family in &allowed {
                if rng.gen_bool(0.5) {
                    kinds.extend(family.iter().map(|(fault, _)| (*fault, rng.gen_range(1..=4))));
                }
            }
            if kinds.is_empty() {
                let family = allowed[rng.gen_range(0..allowed.len())];
                kinds.extend(family.iter().map(|(fault, _)| (*fault, rng.gen_range(1..=4))));
            }
            rate *= [0.25, 0.5, 1.0, 2.0, 4.0][rng.gen_range(0..5)];
        } else {
            kinds.extend(allowed.iter().flat_map(|family| family.iter().copied()));
        }
        let until = if options.liveness { rng.gen_range(0..=2 * options.fault_steps) } else { options.fault_steps };
        Mix { kinds, rate, until }
    }

    /// A fault of the mix, by weight.
    fn pick(&self, rng: &mut ChaCha8Rng) -> Option<Fault> {
        let total: u32 = self.kinds.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return None;
        }
        let mut at = rng.gen_range(0..total);
        for (fault, weight) in &self.kinds {
            if at < *weight {
                return Some(*fault);
            }
            at -= weight;
        }
        None
    }

    /// Whether replicas may die on their own (mid-commit, between two publishes).
    pub(super) fn crashes(&self) -> bool {
        self.kinds.iter().any(|(fault, _)| *fault == Fault::Kill)
    }
}

/// How a mix reads in a failing seed's report.
impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<String> = self.kinds.iter().map(|(fault, w)| format!("{fault:?}x{w}")).collect();
        write!(f, "{} at {:.3} a step until step {}", kinds.join(" "), self.rate, self.until)
    }
}

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// A replica killed: what it buffered is lost, its unacked input returns.
    Kill,
    /// A replica's machine cut off: what it wrote and did not fsync is lost or torn, too.
    PowerCut,
    BrokerRestart,
    Duplicate,
    GatewayRestart,
    /// A replica or a monitor stopped (SIGSTOP) for up to three timeouts.
    Pause,
    /// A monitor killed.
    MonitorKill,
    /// A monitor's machine loaded for the rest of the run: its ticks come late.
    MonitorLoad,
    /// A second process of a replica started beside the one running, on the same folder: the older one must
    /// step aside, touching nothing, before the newer one reads the folder.
    SecondProcess,
    /// A process of a replica started on a folder of its own beside the replica's (another host's, or a state
    /// folder set apart): it must never take the replica's input.
    Stray,
    /// The broker closes a channel (a channel-level error): a replica process's (it exits, to be restarted at
    /// once), or the gateway's session announcer's.
    ChannelClosed,
    /// A network partition between a replica's process and its broker node, both ways or one way (the
    /// broker's answers lost, its own frames arriving), healing at a random time; each side notices it on its
    /// own, when its heartbeat timeout runs out.
    Partition,
    /// A replica process's main loop is stuck on the broker for good (a confirm across a leader change that the
    /// client never settles), while its heartbeat task beats on.
    Stuck,
    /// The broker raises a memory or disk alarm for a while: it blocks every publisher, heartbeats included.
    Alarm,
    /// The broker nacks what a publisher has in flight: a replica's process (it exits), or the gateway while
    /// it purges a session (it tries the purge again).
    Nack,
    /// The broker cancels a replica process's consumer (its queue's leader moved, say): the process sees its
    /// consumer end when it next waits for input, and exits to be restarted at once.
    ConsumerCancelled,
}

/// How long a partition between a process and its broker node lasts (steps).
const PARTITION: std::ops::RangeInclusive<u64> = 50..=1_500;
/// When each side of a connection notices its peer is gone, from the start of a partition (steps): AMQP
/// heartbeats, a tenth of the real times as the monitors' are.
const HEARTBEAT_TIMEOUT: std::ops::RangeInclusive<u64> = 300..=1_500;
/// How long a broker alarm lasts (steps): from about a timeout to twenty (the real test holds one for 60 s).
const ALARM: std::ops::RangeInclusive<u64> = 300..=6_000;
/// How long a stray process runs before its operator stops it (steps).
const STRAY_LIFETIME: std::ops::RangeInclusive<u64> = 200..=3_000;
/// How long a broker node of a cluster stays down (steps).
const BROKER_NODE_DOWN: std::ops::RangeInclusive<u64> = 100..=2_000;

impl World<'_> {
    /// Broker node `node` goes down (and, when `restarts`, comes straight back up): the processes connected to
    /// it lose the broker and exit (their supervisor restarts them at once, and they reach a node that is up);
    /// consumers elsewhere of the classic queues it holds are cancelled; the gateway, if it was connected to
    /// it, restarts and its clients resume.
    pub(super) fn broker_node_down(&mut self, node: usize, restarts: bool) -> Result<(), String> {
        let outage = self.broker.node_down(node, self.step, &mut self.rng);
        if restarts {
            self.broker.node_back(node);
        }
        let mut gateway_lost = false;
        for client in outage.disconnected {
            match self.process_of(&client) {
                Some((i, pid)) => self.end_process(i, pid, Exit::LostBroker),
                None => gateway_lost |= client == gateway::GATEWAY,
            }
        }
        for consumer in outage.cancelled {
            if let Some((i, pid)) = self.process_of(&consumer) {
                let p = self.replicas[i].processes.iter().position(|p| p.pid == pid).expect("listed");
                self.replicas[i].processes[p].cancelled = true;
                self.coverage.reach(Reached::ConsumerCancelled, 1);
            }
        }
        if gateway_lost {
            // The gateway loses the broker too: it exits and is restarted, and its clients resume.
            self.restart_gateway(false)?;
        }
        Ok(())
    }

    /// Broker nodes whose time down is over come back.
    pub(super) fn brokers_back(&mut self) {
        let due: Vec<usize> = self.broker_back.iter().filter(|(_, at)| self.step >= **at).map(|(n, _)| *n).collect();
        for node in due {
            self.broker_back.remove(&node);
            self.broker.node_back(node);
            note!(self, "broker node {node} is back");
        }
    }

    /// A process of a replica that runs (holding its folder and started), at random.
    fn random_running_process(&mut self) -> Option<(usize, u32)> {
        let running: Vec<(usize, u32)> = (0..self.replicas.len())
            .flat_map(|i| {
                self.replicas[i].processes.iter().filter(|p| p.phase == Phase::Running).map(move |p| (i, p.pid))
            })
            .collect();
        running.choose(&mut self.rng).copied()
    }

    /// The replica and process a broker client name stands for (`q3_agg-0#17`).
    fn process_of(&self, client: &str) -> Option<(usize, u32)> {
        let (name, pid) = client.split_once('#')?;
        let pid: u32 = pid.parse().ok()?;
        let i = self.replicas.iter().position(|r| &*r.name == name)?;
        self.replicas[i].processes.iter().any(|p| p.pid == pid).then_some((i, pid))
    }

    pub(super) fn fault(&mut self) -> Result<(), String> {
        let Some(kind) = self.mix.pick(&mut self.rng) else { return Ok(()) };
        self.faults += 1;
        match kind {
            Fault::Kill | Fault::PowerCut => {
                let i = self.rng.gen_range(0..self.replicas.len());
                // The replica's own process, or now and then a stray beside it.
                let stray = self.replicas[i].processes.iter().find(|p| p.stray.is_some()).map(|p| p.pid);
                let victim = match stray {
                    Some(pid) if self.rng.gen_bool(0.3) => Some(pid),
                    _ => self.replicas[i].holder().map(|p| p.pid),
                };
                if let Some(pid) = victim {
                    let exit = if kind == Fault::PowerCut { Exit::PowerCut } else { Exit::Killed };
                    self.end_process(i, pid, exit);
                }
            }
            Fault::BrokerRestart => {
                // One node: every client loses it at once; of three, one goes down for a while (killed, or the
                // minority side of a partition between broker nodes, which pauses itself).
                if self.broker.nodes() == 1 {
                    note!(self, "the broker restarts: every replica loses it, exits, and is restarted at once");
                    self.broker_node_down(0, true)?;
                } else if self.broker_back.is_empty() {
                    let node = self.rng.gen_range(0..self.broker.nodes());
                    let back = self.step + self.rng.gen_range(BROKER_NODE_DOWN);
                    note!(self, "broker node {node} goes down until step {back}");
                    self.broker_node_down(node, false)?;
                    self.broker_back.insert(node, back);
                }
            }
            Fault::Duplicate => {
                if let Some(queue) = self.broker.duplicate_one(&mut self.rng) {
                    note!(self, "a message of {queue} duplicated");
                }
            }
            Fault::GatewayRestart => {
                // The gateway restarts: results it had not acked come back; each client resumes its upload
                // after what the gateway's log says is in.
                let power_cut = self.rng.gen_bool(0.5);
                self.restart_gateway(power_cut)?;
            }
            Fault::Pause => {
                let until = self.step + self.rng.gen_range(1..=3 * monitors::TIMEOUT);
                let i = self.rng.gen_range(0..self.replicas.len() + self.monitors.len());
                if let Some(r) = self.replicas.get_mut(i) {
                    if let Some(process) = r.processes.iter_mut().find(|p| p.running()) {
                        process.paused_until = Some(until);
                        note!(self, "{} (process {}) paused until step {until}", r.name, process.pid);
                    }
                } else {
                    let m = i - self.replicas.len();
                    if self.monitors[m].running() {
                        self.monitors[m].paused_until = Some(until);
                        note!(self, "{} paused until step {until}", self.monitors[m].name);
                    }
                }
            }
            Fault::MonitorKill => {
                let m = self.rng.gen_range(0..self.monitors.len());
                if self.monitors[m].watch.is_some() {
                    self.kill_monitor(m);
                }
            }
            Fault::SecondProcess => {
                // Started by hand (or by an orchestrator that could not reach the first), on the same folder.
                let i = self.rng.gen_range(0..self.replicas.len());
                if !self.replicas[i].down() {
                    let pid = self.start_process(i);
                    note!(self, "a second process of {} ({pid}) starts beside the first", self.replicas[i].name);
                }
            }
            Fault::Stray => {
                // Beside a replica that runs already: a process of its own opened its folder.
                let i = self.rng.gen_range(0..self.replicas.len());
                if self.replicas[i].opened {
                    let lifetime = self.rng.gen_range(STRAY_LIFETIME);
                    let pid = self.start_stray(i, lifetime);
                    note!(self, "a stray process of {} ({pid}) starts on a folder of its own", self.replicas[i].name);
                }
            }
            Fault::ChannelClosed => {
                if self.rng.gen_bool(0.3) {
                    note!(self, "the broker closes the channel of the gateway's session announcer");
                    if self.announcer == gateway::Announcer::Open {
                        self.announcer = gateway::Announcer::Closed;
                    }
                } else if let Some((i, pid)) = self.random_running_process() {
                    note!(self, "the broker closes a channel of {} (process {pid})", self.replicas[i].name);
                    self.coverage.reach(Reached::ChannelClosed, 1);
                    self.end_process(i, pid, Exit::LostBroker);
                }
            }
            Fault::Nack => {
                let purging = self.sessions.iter().any(|s| matches!(s.purge, gateway::Purge::Running { .. }));
                if purging && self.rng.gen_bool(0.5) {
                    self.gateway_nacked = true;
                } else if let Some((i, pid)) = self.random_running_process() {
                    let p = self.replicas[i].processes.iter().position(|p| p.pid == pid).expect("listed");
                    self.replicas[i].processes[p].nacked = true;
                }
            }
            Fault::ConsumerCancelled => {
                if let Some((i, pid)) = self.random_running_process() {
                    let p = self.replicas[i].processes.iter().position(|p| p.pid == pid).expect("listed");
                    let client = self.replicas[i].processes[p].client();
                    if self.broker.consuming(&client, &self.replicas[i].queue) {
                        note!(self, "the broker cancels the consumer of {} (process {pid})", self.replicas[i].name);
                        self.broker.cancel(&client, self.step);
                        self.replicas[i].processes[p].cancelled = true;
                        self.coverage.reach(Reached::ConsumerCancelled, 1);
                    }
                }
            }
            Fault::Partition => {
                if let Some((i, pid)) = self.random_running_process() {
                    let p = self.replicas[i].processes.iter().position(|p| p.pid == pid).expect("listed");
                    if self.replicas[i].processes[p].cut.is_none() {
                        let step = self.step;
                        let cut = Cut {
                            one_way: self.rng.gen_bool(1.0 / 3.0),
                            since: step,
                            heals_at: step + self.rng.gen_range(PARTITION),
                            process_notices_at: step + self.rng.gen_range(HEARTBEAT_TIMEOUT),
                            broker_notices_at: step + self.rng.gen_range(HEARTBEAT_TIMEOUT),
                            dropped: false,
                        };
                        self.coverage.reach(Reached::Partition, 1);
                        note!(
                            self,
                            "{} (process {pid}) is cut off from its broker node: {cut:?}",
                            self.replicas[i].name
                        );
                        self.replicas[i].processes[p].cut = Some(cut);
                    }
                }
            }
            Fault::Stuck => {
                if let Some((i, pid)) = self.random_running_process() {
                    let p = self.replicas[i].processes.iter().position(|p| p.pid == pid).expect("listed");
                    self.replicas[i].processes[p].stuck_since = Some(self.step);
                    self.coverage.reach(Reached::Stuck, 1);
                    note!(
                        self,
                        "{} (process {pid}) is stuck on the broker for good; it beats on",
                        self.replicas[i].name
                    );
                }
            }
            Fault::Alarm => {
                if self.alarm_until.is_none() {
                    let until = self.step + self.rng.gen_range(ALARM);
                    self.alarm_until = Some(until);
                    self.coverage.reach(Reached::Alarm, 1);
                    note!(self, "the broker raises an alarm until step {until}: it blocks every publisher");
                }
            }
            Fault::MonitorLoad => {
                let m = self.rng.gen_range(0..self.monitors.len());
                self.monitors[m].loaded = true;
                note!(self, "{}'s machine is loaded from now on: its ticks come late", self.monitors[m].name);
            }
        }
        Ok(())
    }
}
