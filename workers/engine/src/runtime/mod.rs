//! The generic runtime around an [`Operator`]: consume the replica's queue, drop duplicates, apply, publish what
//! the operator emits, count ends of stream, persist, and ack.
//!
//! Deliveries are handled in groups (group commit). For each group, in this order:
//! 1. each input is admitted (duplicates dropped), applied in memory, and its outputs published;
//! 2. every publish of the group is confirmed by the broker;
//! 3. every applied input is appended to its session's log, and the logs are fsynced (one fsync per session);
//! 4. sessions that completed are marked finished and their files deleted;
//! 5. the group is acked with one `multiple` ack.
//!
//! Dying anywhere is safe. Before 3, the inputs are redelivered, re-applied and re-published with the same ids
//! (outputs reuse the input's seq, and finals are deterministic), and receivers drop the copies. After 3, a
//! redelivered input is found in the log and dropped, and its outputs were confirmed in 2. A session that
//! completed before 4 is found complete again at recovery and finished again, under the same ids.

pub mod core;

pub use self::core::{
    expected_inputs, Committed, Group, Outgoing, Protocol, Replica, ReplicaConfig, ReplicaState, RuntimeError,
    StageNode,
};

use crate::amqp::{self, BrokerError, Publisher};
use crate::heartbeat;
use crate::incarnation::Incarnation;
use crate::lease::Leases;
use crate::metrics::Counters;
use crate::operators::{with_operator, Operator, WithOperator};
use crate::state::disk::RealDisk;
use coffee_model::node::StageKind;
use futures::future::LocalBoxFuture;
use futures::{FutureExt, StreamExt};
use lapin::options::BasicAckOptions;
use lapin::PublisherConfirm;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::{info, warn};

/// Unacked deliveries a replica holds at once (and so the largest group it commits together).
pub const PREFETCH: u16 = 256;

/// Inputs logged per session between two snapshots, unless `SNAPSHOT_INTERVAL` says otherwise.
pub const DEFAULT_SNAPSHOT_INTERVAL: u64 = 1000;

/// Runs replica `config.replica` of `stage`, with the operator the registry names for it
/// ([`crate::operators::with_operator`]), until the broker connection fails.
pub async fn serve_stage(stage: StageKind, config: ReplicaConfig, amqp_url: &str) -> Result<(), RuntimeError> {
    struct Serve<'a> {
        config: ReplicaConfig,
        amqp_url: &'a str,
    }
    impl<'a> WithOperator for Serve<'a> {
        type Output = LocalBoxFuture<'a, Result<(), RuntimeError>>;
        fn with<O: Operator>(self, operator: O) -> Self::Output {
            Box::pin(StageNode::new(operator, self.config).run(self.amqp_url))
        }
    }
    with_operator(stage, Serve { config, amqp_url }).await
}

/// What a running replica holds around its protocol state: its way out to the broker, its counters, its claim
/// to be the node's live incarnation, and the leases of its sessions.
struct Shell {
    publisher: Publisher,
    counters: Arc<Counters>,
    incarnation: Arc<Incarnation>,
    leases: Leases,
}

impl<O: Operator> StageNode<O> {
    /// Publishes an outbox in order; the confirms to wait for.
    async fn publish_all(
        &self,
        publisher: &Publisher,
        outbox: Vec<Outgoing>,
        confirms: &mut Vec<PublisherConfirm>,
    ) -> Result<(), BrokerError> {
        for out in outbox {
            let queue = self.queue_of(&out);
            let confirm = match out {
                Outgoing::Send { envelope, .. } => publisher.publish(&queue, &envelope).await?,
                Outgoing::SetAside { bytes, why } => {
                    crate::dead_letters::set_aside(publisher, &queue, &self.input_queue(), &bytes, &why).await?
                }
            };
            confirms.push(confirm);
        }
        Ok(())
    }

    /// Runs until the broker connection fails (the process then exits, and its supervisor starts it again).
    pub async fn run(self, amqp_url: &str) -> Result<(), RuntimeError> {
        let me = self.me();
        let (mut state, mut shell, connection) = self.open(amqp_url).await?;

        // Sessions that were complete when we died: finish them again (receivers drop what they already have).
        for (id, outbox) in self.complete_sessions(&mut state) {
            let mut confirms = Vec::new();
            self.publish_all(&shell.publisher, outbox, &mut confirms).await?;
            amqp::await_confirms(confirms).await?;
            shell.incarnation.step_aside_if_replaced();
            self.retire(&mut state, id)?;
            info!(session = %id, node = %me, "session finished again after recovery");
        }

        let queue = self.input_queue();
        // Exclusive: a second live consumer of this replica's queue (another host's process, say) is refused.
        let (_channel, mut consumer) =
            amqp::consume_exclusively(&connection, &queue, PREFETCH, &me.to_string()).await?;
        info!(node = %me, %queue, "stage replica consuming");

        let mut announcements = Box::pin(crate::lease::subscribe(&connection, &self.config.topology).await?);
        let mut lease_check = tokio::time::interval(crate::lease::announce_every(self.config.session_lease));
        let group_max = self.config.group_max.clamp(1, usize::from(PREFETCH));
        loop {
            let first = tokio::select! {
                delivery = consumer.next() => match delivery {
                    Some(delivery) => delivery,
                    None => break,
                },
                announced = announcements.next() => {
                    let Some(announced) = announced else { break };
                    shell.leases.announced(&announced, tokio::time::Instant::now());
                    continue;
                }
                _ = lease_check.tick() => {
                    self.purge_expired(&mut state, &mut shell)?;
                    continue;
                }
            };
            // Take what is already here, up to the prefetch, as one group.
            let busy_since = std::time::Instant::now();
            let mut deliveries = vec![first?];
            while deliveries.len() < group_max {
                match consumer.next().now_or_never() {
                    Some(Some(delivery)) => deliveries.push(delivery?),
                    _ => break,
                }
            }
            let (mut group, mut confirms) = (Group::default(), Vec::new());
            for delivery in &deliveries {
                shell.counters.consumed(delivery.data.len());
                self.handle(&mut state, &delivery.data, &mut group);
                // Out as each input is handled (the broker works while the next one is), confirmed as a group.
                self.publish_all(&shell.publisher, std::mem::take(&mut group.outbox), &mut confirms).await?;
            }
            shell.counters.consumed_rows(std::mem::take(&mut group.rows_in));
            amqp::await_confirms(confirms).await?;
            crate::failpoint!("after-publish-before-log");
            if !group.completed.is_empty() {
                crate::failpoint!("after-final-publish-before-log");
            }
            // A newer incarnation may have started while this one was stopped: it must not write any more.
            shell.incarnation.step_aside_if_replaced();
            let now = tokio::time::Instant::now();
            group.applied.iter().for_each(|(id, _)| shell.leases.renew(*id, now));
            group.completed.iter().for_each(|id| shell.leases.forget(*id));
            self.commit(&mut state, group)?;
            crate::failpoint!("after-log-before-ack");
            shell.counters.open_sessions.store(state.open_sessions() as u64, Ordering::Relaxed);
            let last = deliveries.last().expect("a group is never empty");
            // Stands for an ack that lapin never settles (see `amqp::exit_when_lost`).
            crate::failpoint_delay!("ack-stalls");
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
            shell.counters.busy(busy_since.elapsed());
        }
        Err(BrokerError::Lost(format!("the consumer of {queue} ended (its channel or connection closed)")).into())
    }

    /// Becomes this replica's live incarnation, reaches the broker, starts beating, and recovers the sessions
    /// from disk.
    async fn open(&self, amqp_url: &str) -> Result<(ReplicaState<O::State>, Shell, lapin::Connection), RuntimeError> {
        let me = self.me();
        let started = std::time::Instant::now();
        let node_dir = self.node_dir();
        // This process is the node's only live incarnation from here on (an older one steps aside first).
        let incarnation = Arc::new(Incarnation::claim(&node_dir).await?);
        incarnation.watch();
        // The broker next, then the heartbeat: a node is heard while it replays its logs, so the monitors do not
        // take a long recovery for a hang.
        let connection = amqp::connect_node(amqp_url, &me.to_string()).await;
        amqp::declare_queues(&connection.create_channel().await?, &self.config.topology).await?;
        let counters = Arc::new(Counters::default());
        // Each beat says what the folder holds, and, once known, how the recovery went.
        let recovery: Arc<std::sync::Mutex<coffee_types::ReplicaState>> = Arc::default();
        let (reported, folder) = (recovery.clone(), node_dir.clone());
        let annotate = move |beat: &mut heartbeat::Heartbeat| {
            let (log_bytes, snapshot_bytes, age) = crate::state::footprint(&folder);
            let last_snapshot_age_ms = age.map(|a| a.as_millis() as u64);
            let known = *reported.lock().expect("recovery lock");
            beat.state = Some(coffee_types::ReplicaState { log_bytes, snapshot_bytes, last_snapshot_age_ms, ..known });
        };
        heartbeat::start_with(&connection, &self.config.topology, me.to_string(), counters.clone(), annotate).await?;

        let recovering = std::time::Instant::now();
        let (state, recovered) = self.open_state(Arc::new(RealDisk), crate::state::DEFAULT_TOMBSTONES)?;
        {
            let mut known = recovery.lock().expect("recovery lock");
            known.recovery_ms = recovering.elapsed().as_millis() as u64;
            known.replayed_records = recovered.records;
            known.recovered_sessions = recovered.sessions;
        }
        info!(node = %me, sessions = state.open_sessions(), tombstones = state.store().tombstones(), dir = %node_dir.display(), "state recovered");
        counters.open_sessions.store(state.open_sessions() as u64, Ordering::Relaxed);
        let publisher = Publisher::new(&connection, counters.clone()).await?;
        let mut leases = Leases::new(self.config.session_lease);
        for id in state.sessions.keys() {
            leases.renew(*id, tokio::time::Instant::now());
        }
        recovery.lock().expect("recovery lock").ready_ms = started.elapsed().as_millis() as u64;
        Ok((state, Shell { publisher, counters, incarnation, leases }, connection))
    }

    /// Drops the sessions no gateway has announced for a whole lease (their client and gateway are gone).
    fn purge_expired(&self, state: &mut ReplicaState<O::State>, shell: &mut Shell) -> Result<(), RuntimeError> {
        for id in shell.leases.expired(tokio::time::Instant::now()) {
            if state.sessions.contains_key(&id) {
                shell.incarnation.step_aside_if_replaced();
                self.retire(state, id)?;
                warn!(session = %id, node = %self.me(), lease = ?self.config.session_lease, "no gateway announces this session any more: purged");
            }
        }
        shell.counters.open_sessions.store(state.open_sessions() as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::filters::TxFilter;
    use crate::operators::q4::Q4Count;
    use crate::operators::Emit;
    use crate::topology::{Destination, Emitted, Target, Topology};
    use coffee_model::message::Batch;
    use coffee_model::message::Stream;
    use coffee_model::node::StageKind;
    use coffee_model::wire::SessionId;
    use std::path::PathBuf;

    fn node<O: Operator>(operator: O, replicas: &str) -> StageNode<O> {
        let config = ReplicaConfig {
            topology: Topology::with_replicas("t", replicas).unwrap(),
            replica: 0,
            state_dir: PathBuf::from("/nonexistent"),
            snapshot_interval: 10,
            session_lease: crate::lease::DEFAULT_LEASE,
            group_max: usize::from(PREFETCH),
        };
        StageNode::new(operator, config)
    }

    #[test]
    fn every_replica_of_every_edge_gets_one_batch_per_input_even_an_empty_one() {
        let node = node(TxFilter, "all=3,q3_agg=2");
        // The operator emitted nothing at all for this input.
        let routed = node.route(SessionId::nil(), Emit::default(), Emitted::PerInput);
        let targets: Vec<Target> = routed.iter().map(|(t, _)| *t).collect();
        assert_eq!(targets, node.all_targets(), "the gateway (Q1), 2 q3_agg and 3 q4_count replicas");
        assert_eq!(targets.len(), 1 + 2 + 3);
        assert!(routed.iter().all(|(target, batch)| batch.is_empty() && target.stream.carries(batch)));
        // Nothing is sent at the end of a session by a stage that sends per input.
        assert!(node.route(SessionId::nil(), Emit::default(), Emitted::AtEnd).is_empty());
    }

    #[test]
    fn finals_reach_every_replica_of_their_edge() {
        let node = node(Q4Count, "q4_top=4");
        let routed = node.route(SessionId::nil(), Emit::default(), Emitted::AtEnd);
        let to: Vec<Destination> = routed.iter().map(|(t, _)| t.to).collect();
        assert_eq!(to, (0..4).map(|r| Destination::Stage(StageKind::Q4Top, r)).collect::<Vec<_>>());
    }

    #[test]
    #[should_panic(expected = "is not sent")]
    fn an_operator_emitting_off_its_edges_is_caught_in_tests() {
        let node = node(TxFilter, "all=1");
        let mut emit = Emit::default();
        emit.send(Stream::Q4Candidates, Batch::Candidates(vec![]));
        node.route(SessionId::nil(), emit, Emitted::PerInput);
    }
}
