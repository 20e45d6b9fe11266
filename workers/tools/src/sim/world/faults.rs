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
}

impl World<'_> {
    pub(super) fn fault(&mut self) {
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
        let Some(&kind) = kinds.choose(&mut self.rng) else { return };
        self.faults += 1;
        match kind {
            Fault::Kill | Fault::PowerCut => {
                let i = self.rng.gen_range(0..self.replicas.len());
                if !matches!(self.replicas[i].phase, Phase::Down) {
                    self.crash_replica(i, kind == Fault::PowerCut);
                }
            }
            Fault::BrokerRestart => {
                note!(self, "the broker restarts: every replica loses it and exits");
                self.broker.restart(&mut self.rng);
                for i in 0..self.replicas.len() {
                    if !matches!(self.replicas[i].phase, Phase::Down) {
                        self.crash_replica(i, false);
                    }
                }
                // The gateway saw no confirm for what it had not had confirmed: it publishes that again (a
                // purge too: the gateway records it before it starts, and finishes it when it starts again).
                for session in &mut self.sessions {
                    session.holding = false;
                    session.feeds.iter_mut().for_each(|f| f.sent = f.confirmed);
                    if session.purge == Purge::Published {
                        session.purge = Purge::Due;
                    }
                }
            }
            Fault::Duplicate => {
                if let Some(queue) = self.broker.duplicate_one(&mut self.rng) {
                    note!(self, "a message of {queue} duplicated");
                }
            }
            Fault::GatewayRestart => {
                // The gateway restarts: results it had not acked come back; each client resumes its upload
                // from an earlier mark of each file and sends the batches after it again.
                let mut marks = Vec::new();
                for (s, session) in self.sessions.iter_mut().enumerate() {
                    session.holding = false;
                    if session.purge == Purge::Published {
                        session.purge = Purge::Due;
                    }
                    self.broker.consumer_lost(&format!("gateway-results-{s}"), &mut self.rng);
                    for feed in &mut session.feeds {
                        let mark = self.rng.gen_range(0..=feed.confirmed.min(feed.eofs_from));
                        marks.push(format!("{} {}: {} of {}", short(session.id), feed.kind, mark, feed.sent));
                        (feed.sent, feed.confirmed) = (mark, mark);
                    }
                }
                note!(self, "the gateway restarts; uploads resume from: {}", marks.join(", "));
            }
        }
    }
}
