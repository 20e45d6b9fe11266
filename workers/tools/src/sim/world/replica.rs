//! A replica in the simulation: the engine's protocol, stepped as the runtime's shell steps it, and killed or cut
//! off between any two steps.

use super::*;

/// Where a replica stands in its shell's loop.
pub(super) enum Phase {
    /// Killed, waiting for its supervisor.
    Down,
    /// Restarted: opens its folder next, and sends the finals of sessions it had completed.
    Starting,
    /// Those finals are published: confirm them next.
    RecoveredPublished(Vec<SessionId>),
    /// Confirmed: retire those sessions next.
    RecoveredConfirmed(Vec<SessionId>),
    Idle,
    /// A group taken from its queue: handle the next delivery.
    Handling {
        group: Vec<Message>,
        next: usize,
    },
    Confirming,
    Committing,
    Acking,
}

pub(super) struct SimReplica {
    pub(super) name: String,
    pub(super) queue: String,
    pub(super) protocol: Box<dyn Protocol>,
    pub(super) disk: SimDisk,
    pub(super) phase: Phase,
    /// With [`Bug::AckBeforeCommit`]: the group was acked and still has to be committed.
    pub(super) acked_early: bool,
    /// Its sessions' leases, renewed by inputs and the gateway's announcements (in memory: lost at a crash).
    pub(super) leases: Leases,
    /// When it next looks for expired leases.
    pub(super) next_lease_check: u64,
    /// Its process: a restart request naming an older one is ignored.
    pub(super) incarnation: u32,
    pub(super) next_beat: u64,
    /// Stopped (SIGSTOP) until then: it neither steps nor beats, and keeps what it was delivered.
    pub(super) paused_until: Option<u64>,
}

impl SimReplica {
    /// Whether its process is up and not paused.
    pub(super) fn running(&self) -> bool {
        !matches!(self.phase, Phase::Down) && self.paused_until.is_none()
    }
}

impl World<'_> {
    pub(super) fn step_replica(&mut self, i: usize) {
        let phase = std::mem::replace(&mut self.replicas[i].phase, Phase::Idle);
        let name = self.replicas[i].name.clone();
        let next = match phase {
            // Nothing runs: it waits for a monitor to have it restarted.
            Phase::Down => Phase::Down,
            Phase::Starting => {
                let r = &mut self.replicas[i];
                match r.protocol.open(Arc::new(r.disk.clone())) {
                    Ok(recovery) => {
                        let complete = r.protocol.complete_sessions();
                        let ids: Vec<SessionId> = complete.iter().map(|(id, _)| *id).collect();
                        for (_, outbox) in complete {
                            self.publish(&name, outbox);
                        }
                        // A new process: every recovered session's lease starts now.
                        let (now, every) = (self.now(), self.announce_every());
                        let r = &mut self.replicas[i];
                        r.leases = Leases::new(Duration::from_millis(self.options.lease_steps));
                        r.protocol.sessions().into_iter().for_each(|id| r.leases.renew(id, now));
                        r.next_lease_check = self.step + every;
                        let (sessions, records) = (recovery.sessions, recovery.records);
                        note!(
                            self,
                            "{name} opened its folder: {sessions} sessions, {records} records replayed, {} complete",
                            ids.len()
                        );
                        Phase::RecoveredPublished(ids)
                    }
                    Err(e) => {
                        note!(self, "{name} failed to open its folder: {e}");
                        return self.crash_replica(i, false);
                    }
                }
            }
            Phase::RecoveredPublished(ids) => {
                self.broker.confirm(&name);
                Phase::RecoveredConfirmed(ids)
            }
            Phase::RecoveredConfirmed(ids) => {
                for id in ids {
                    if let Err(e) = self.replicas[i].protocol.retire(id) {
                        note!(self, "{name} died retiring {}: {e}", short(id));
                        return self.crash_replica(i, false);
                    }
                    note!(self, "{name} finished {} again after its restart", short(id));
                }
                Phase::Idle
            }
            Phase::Idle if self.step >= self.replicas[i].next_lease_check => {
                self.replicas[i].next_lease_check = self.step + self.announce_every();
                let now = self.now();
                for id in self.replicas[i].leases.expired(now) {
                    if !self.replicas[i].protocol.sessions().contains(&id) {
                        continue;
                    }
                    if let Err(e) = self.replicas[i].protocol.retire(id) {
                        note!(self, "{name} died purging {}: {e}", short(id));
                        return self.crash_replica(i, false);
                    }
                    note!(self, "{name} purged {}: no gateway announced it for a whole lease", short(id));
                }
                Phase::Idle
            }
            Phase::Idle => {
                let max = self.rng.gen_range(1..=GROUP_MAX);
                let queue = self.replicas[i].queue.clone();
                let group = self.broker.deliver(&name, &queue, max, &mut self.rng);
                if group.is_empty() {
                    Phase::Idle
                } else {
                    Phase::Handling { group, next: 0 }
                }
            }
            Phase::Handling { group, next } => {
                let message = &group[next];
                let outbox = self.replicas[i].protocol.handle(&message.bytes);
                let redelivered = if message.redelivered { " (redelivered)" } else { "" };
                note!(self, "{name} handles {}{redelivered}: {} out", describe(&message.bytes), outbox.len());
                // Now and then the process dies between two of its publishes.
                if outbox.len() > 1 && self.faulting() && self.options.faults.crash && self.rng.gen_bool(0.02) {
                    let sent = self.rng.gen_range(0..outbox.len());
                    self.faults += 1;
                    note!(self, "{name} dies after publishing {sent} of them");
                    self.publish(&name, outbox.into_iter().take(sent).collect());
                    return self.crash_replica(i, false);
                }
                self.publish(&name, outbox);
                if next + 1 < group.len() {
                    Phase::Handling { group, next: next + 1 }
                } else if self.options.bug == Some(Bug::CommitBeforeConfirm) {
                    Phase::Committing
                } else {
                    Phase::Confirming
                }
            }
            Phase::Confirming => {
                self.broker.confirm(&name);
                match self.options.bug {
                    Some(Bug::AckBeforeCommit) => {
                        self.broker.ack_all(&name);
                        self.replicas[i].acked_early = true;
                        Phase::Committing
                    }
                    Some(Bug::CommitBeforeConfirm) => Phase::Acking,
                    None | Some(Bug::Planted(_)) => Phase::Committing,
                }
            }
            Phase::Committing => {
                // Now and then the process dies halfway through the commit, after a few disk operations.
                let halfway = self.faulting() && self.options.faults.crash && self.rng.gen_bool(0.05);
                if halfway {
                    let ops = self.rng.gen_range(0..6);
                    self.replicas[i].disk.fail_after(Some(ops));
                }
                match self.replicas[i].protocol.commit() {
                    Ok(committed) => {
                        // As the shell does: an input renews its session's lease; a session that ended has none.
                        let now = self.now();
                        let leases = &mut self.replicas[i].leases;
                        committed.applied.iter().for_each(|id| leases.renew(*id, now));
                        committed.ended.iter().for_each(|id| leases.forget(*id));
                        if std::mem::take(&mut self.replicas[i].acked_early) {
                            Phase::Idle
                        } else if self.options.bug == Some(Bug::CommitBeforeConfirm) {
                            Phase::Confirming
                        } else {
                            Phase::Acking
                        }
                    }
                    Err(e) => {
                        self.faults += 1;
                        note!(self, "{name} dies halfway through its commit ({e})");
                        let power_cut = self.rng.gen_bool(0.5);
                        return self.crash_replica(i, power_cut);
                    }
                }
            }
            Phase::Acking => {
                self.broker.ack_all(&name);
                Phase::Idle
            }
        };
        self.replicas[i].phase = next;
    }

    pub(super) fn publish(&mut self, publisher: &str, outbox: Vec<(String, Outgoing)>) {
        for (queue, out) in outbox {
            let bytes = match out {
                Outgoing::Send { envelope, .. } => envelope.encode(),
                Outgoing::SetAside { bytes, why } => {
                    note!(self, "{publisher} sets a message aside: {why}");
                    bytes
                }
            };
            self.broker.publish(publisher, &queue, bytes);
        }
    }

    /// A new process of replica `i`: it opens its folder next, and beats from now.
    pub(super) fn start_replica(&mut self, i: usize) {
        let step = self.step;
        let r = &mut self.replicas[i];
        r.phase = Phase::Starting;
        r.incarnation += 1;
        r.next_beat = step;
        r.paused_until = None;
    }

    /// The replica's process is gone (and, on a power cut, what it had not fsynced may be too); its
    /// supervisor starts it again later.
    pub(super) fn crash_replica(&mut self, i: usize, power_cut: bool) {
        let r = &mut self.replicas[i];
        r.disk.fail_after(None);
        if power_cut {
            let rng = &mut self.rng;
            r.disk.crash(|_| match rng.gen_range(0..3) {
                0 => Tear::Nothing,
                1 => Tear::Everything,
                _ => Tear::Prefix(rng.gen_range(0..64)),
            });
        }
        r.phase = Phase::Down;
        r.paused_until = None;
        r.acked_early = false;
        let name = r.name.clone();
        self.broker.consumer_lost(&name, &mut self.rng);
        let how = if power_cut { "its machine cut off" } else { "killed" };
        note!(self, "{name} {how}");
    }
}
