//! The faults a seed injects, one a step with the run's fault rate while faults may strike.

use super::*;

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
}

impl World<'_> {
    pub(super) fn fault(&mut self) -> Result<(), String> {
        let faults = self.options.faults;
        let mut kinds = Vec::new();
        if faults.crash {
            kinds.extend([Fault::Kill, Fault::Kill, Fault::Kill, Fault::PowerCut]);
        }
        if faults.broker {
            kinds.push(Fault::BrokerRestart);
        }
        if faults.duplicate {
            kinds.extend([Fault::Duplicate, Fault::Duplicate]);
        }
        if faults.gateway {
            kinds.push(Fault::GatewayRestart);
        }
        if faults.pause {
            kinds.push(Fault::Pause);
        }
        if faults.incarnation {
            kinds.push(Fault::SecondProcess);
        }
        if faults.monitor {
            kinds.extend([Fault::MonitorKill, Fault::MonitorLoad]);
        }
        let Some(&kind) = kinds.choose(&mut self.rng) else { return Ok(()) };
        self.faults += 1;
        match kind {
            Fault::Kill | Fault::PowerCut => {
                let i = self.rng.gen_range(0..self.replicas.len());
                if let Some(pid) = self.replicas[i].holder().map(|p| p.pid) {
                    let exit = if kind == Fault::PowerCut { Exit::PowerCut } else { Exit::Killed };
                    self.end_process(i, pid, exit);
                }
            }
            Fault::BrokerRestart => {
                note!(self, "the broker restarts: every replica loses it, exits, and is restarted at once");
                self.broker.restart(&mut self.rng);
                for i in 0..self.replicas.len() {
                    // Those holding their folder are connected: they exit (code 75), and the supervisor
                    // restarts its own child at once. One waiting for its folder's lock has no connection yet.
                    let connected: Vec<u32> = self.replicas[i]
                        .processes
                        .iter()
                        .filter(|p| p.phase != Phase::WaitingLock)
                        .map(|p| p.pid)
                        .collect();
                    for pid in connected {
                        self.end_process(i, pid, Exit::LostBroker);
                        if pid == self.replicas[i].child {
                            self.replicas[i].child = self.start_process(i);
                        }
                    }
                }
                // The gateway loses the broker too: it exits and is restarted, and its clients resume.
                self.restart_gateway(false)?;
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
            Fault::MonitorLoad => {
                let m = self.rng.gen_range(0..self.monitors.len());
                self.monitors[m].loaded = true;
                note!(self, "{}'s machine is loaded from now on: its ticks come late", self.monitors[m].name);
            }
        }
        Ok(())
    }
}
