//! The purge of an abandoned session as the gateway must carry it out, without a broker or a disk: the steps in
//! the order its guarantees need, and what to do when they fail. The purge is recorded in the session's upload
//! log before anything else (so a gateway restarted halfway finishes it, and a resume arriving meanwhile is
//! refused); every stage replica is told to drop the session, and those messages confirmed, before the results
//! queue is deleted and the log removed (once the log is gone, nobody would purge the session again, and the
//! gateway stops announcing it). A purge that fails is tried again, for as long as this gateway lives: until
//! then the session keeps its log, so the gateway announces it and the stages keep it. The connection's loop
//! (`session.rs`) performs the steps on RabbitMQ and the upload log; the simulator performs them on its broker
//! and disk.

use super::GATEWAY;
use crate::planted::{self, Bug};
use crate::topology::Topology;
use coffee_model::message::Stream;
use coffee_model::wire::{Body, Envelope, SessionId};
use std::time::Duration;

/// One thing a purge does.
#[derive(Debug, Clone, PartialEq)]
pub enum PurgeStep {
    /// Records, durably, that the purge begins.
    Record,
    /// Tells one stage replica to drop the session.
    Publish { queue: String, envelope: Envelope },
    /// Waits for every confirm of the purge.
    ConfirmAll,
    /// Deletes the session's results queue.
    DeleteResults { queue: String },
    /// Removes the session's upload log: the purge is done.
    RemoveLog,
}

/// The steps of `session`'s purge, in order.
pub fn steps(topology: &Topology, session: SessionId) -> Vec<PurgeStep> {
    let mut steps = vec![PurgeStep::Record];
    for (stage, replica) in topology.stage_replicas() {
        let envelope = Envelope { session, sender: GATEWAY, stream: Stream::Session, seq: 0, body: Body::Purge };
        steps.push(PurgeStep::Publish { queue: topology.queue(stage, replica), envelope });
    }
    steps.extend([
        PurgeStep::ConfirmAll,
        PurgeStep::DeleteResults { queue: topology.results_queue(session) },
        PurgeStep::RemoveLog,
    ]);
    steps
}

/// How long to wait before trying a purge again after its `failures`-th failure: half a second, doubling up to
/// thirty. `None` gives up (only the reverted fix, planted for the simulator to find, does).
pub fn retry_after(failures: u32) -> Option<Duration> {
    if planted::active(Bug::PurgeTriedOnce) {
        return None;
    }
    Some(
        (Duration::from_millis(500) * 2u32.saturating_pow(failures.saturating_sub(1).min(6)))
            .min(Duration::from_secs(30)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_is_recorded_first_confirmed_before_the_queue_goes_and_the_log_goes_last() {
        let topology = Topology::with_replicas("t", "all=1").unwrap();
        let steps = steps(&topology, SessionId::from_u128(3));
        assert_eq!(steps.first(), Some(&PurgeStep::Record));
        let publishes = steps.iter().filter(|s| matches!(s, PurgeStep::Publish { .. })).count();
        assert_eq!(publishes, topology.stage_replicas().count(), "every replica is told");
        let n = steps.len();
        assert!(matches!(
            steps[n - 3..],
            [PurgeStep::ConfirmAll, PurgeStep::DeleteResults { .. }, PurgeStep::RemoveLog]
        ));
    }

    #[test]
    fn a_failed_purge_is_tried_again_backing_off_to_thirty_seconds() {
        let waits: Vec<u64> = (1..=9).map(|n| retry_after(n).unwrap().as_millis() as u64).collect();
        assert_eq!(waits, [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);
    }
}
