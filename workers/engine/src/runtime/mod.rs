//! The generic runtime around an [`Operator`]: consume the replica's queue and carry out its shell's plan
//! ([`shell`]: drop duplicates, apply, publish what the operator emits, count ends of stream, persist, ack) on
//! RabbitMQ, the replica's folder and its incarnation claim. The order of those steps, and why dying between any
//! two is safe, is the shell's ([`shell::Shell`]); this module only performs them.

pub mod core;
pub mod shell;

pub use self::core::{
    expected_inputs, Committed, Group, Outgoing, Protocol, Replica, ReplicaConfig, ReplicaState, RuntimeError,
    StageNode,
};
pub use self::shell::{Retirement, Shell, Step};

use crate::amqp::{self, BrokerError, Publisher};
use crate::heartbeat;
use crate::incarnation::Incarnation;
use crate::metrics::Counters;
use crate::operators::{with_operator, Operator, WithOperator};
use crate::ownership::{self, Claim};
use crate::state::disk::RealDisk;
use coffee_model::node::{NodeId, StageKind};
use futures::future::LocalBoxFuture;
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::{info, warn};

/// Unacked deliveries a replica holds at once (and so the largest group it commits together).
pub const PREFETCH: u16 = 256;

/// MiB a replica's state disk keeps free, unless `STATE_MIN_FREE_MB` says otherwise: about what the largest
/// groups write (a prefetch of item batches), so a group that starts above it rarely meets a full disk.
pub const DEFAULT_MIN_FREE_MB: u64 = 64;

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
            Box::pin(run(StageNode::new(operator, self.config), self.amqp_url))
        }
    }
    with_operator(stage, Serve { config, amqp_url }).await
}

/// What a running replica performs its shell's steps with: its way out to the broker, its counters, and its
/// claims to be the node's live incarnation and the replica's one consumer.
struct Io {
    me: NodeId,
    stage: StageKind,
    topology: crate::topology::Topology,
    /// The replica's folder.
    folder: std::path::PathBuf,
    connection: lapin::Connection,
    /// The channel that holds the replica's lock, once claimed.
    lock: std::sync::OnceLock<lapin::Channel>,
    publisher: Publisher,
    input_queue: String,
    counters: Arc<Counters>,
    incarnation: Arc<Incarnation>,
    /// When the process started, and what its beats say of its folder and its recovery.
    started: std::time::Instant,
    recovery: Arc<std::sync::Mutex<coffee_types::ReplicaState>>,
    /// The free bytes the folder's disk must have before a group is committed ([`ReplicaConfig::min_free_bytes`]).
    min_free_bytes: u64,
}

/// How often a replica holding a group looks at its disk again.
const DISK_POLL: std::time::Duration = std::time::Duration::from_secs(1);

impl Io {
    /// Performs the shell's steps until it has none left, handling the deliveries of `group` (empty outside a
    /// group); a [`Step::Consume`] puts the replica's consumer in `consumer`.
    async fn perform<P: Protocol>(
        &self,
        shell: &mut Shell<P>,
        group: &[Delivery],
        consumer: &mut Option<(lapin::Channel, lapin::Consumer)>,
    ) -> Result<(), RuntimeError> {
        let mut confirms = Vec::new();
        while let Some(step) = shell.next_step() {
            match step {
                Step::Claim => self.claim(shell.protocol().folder_id(&RealDisk)?).await?,
                Step::Open => self.open(shell).await?,
                Step::Handle(i) => {
                    self.counters.consumed(group[i].data.len());
                    shell.handle(&group[i].data);
                }
                Step::Publish { queue, out } => {
                    let _waiting = self.counters.waiting_on_broker();
                    let confirm = match out {
                        Outgoing::Send { envelope, .. } => self.publisher.publish(&queue, &envelope).await?,
                        Outgoing::SetAside { bytes, why } => {
                            crate::dead_letters::set_aside(&self.publisher, &queue, &self.input_queue, &bytes, &why)
                                .await?
                        }
                    };
                    confirms.push(confirm);
                }
                Step::ConfirmAll => {
                    let waiting = self.counters.waiting_on_broker();
                    crate::failpoint_delay!("confirm-stalls");
                    amqp::await_confirms(std::mem::take(&mut confirms)).await?;
                    drop(waiting);
                    crate::failpoint!("after-publish-before-log");
                    if shell.completing() {
                        crate::failpoint!("after-final-publish-before-log");
                    }
                }
                // A newer incarnation may have started while this one was stopped: it must not write any more.
                Step::StepAsideIfReplaced => self.incarnation.step_aside_if_replaced(),
                Step::Commit => {
                    self.wait_for_room().await?;
                    let committed = shell.commit(tokio::time::Instant::now()).inspect_err(|e| self.disk_refused(e))?;
                    self.counters.consumed_rows(committed.rows_in);
                    self.counters.open_sessions.store(shell.protocol().open_sessions() as u64, Ordering::Relaxed);
                    crate::failpoint!("after-log-before-ack");
                }
                Step::Ack => {
                    let last = group.last().expect("a group is never empty");
                    let _waiting = self.counters.waiting_on_broker();
                    // Stands for an ack that lapin never settles (see `amqp::exit_when_lost`).
                    crate::failpoint_delay!("ack-stalls");
                    last.acker.ack(BasicAckOptions { multiple: true }).await?;
                }
                Step::Consume => {
                    let tag = self.me.to_string();
                    // Exclusive: a second live consumer of this replica's queue is refused (by a classic queue).
                    let queue = &self.input_queue;
                    *consumer = Some(amqp::consume_exclusively(&self.connection, queue, PREFETCH, &tag).await?);
                    info!(node = %self.me, %queue, "stage replica consuming");
                }
                Step::Retire { session, why } => {
                    shell.retire(session)?;
                    self.counters.open_sessions.store(shell.protocol().open_sessions() as u64, Ordering::Relaxed);
                    match why {
                        Retirement::FinishedAgain => {
                            info!(%session, node = %self.me, "session finished again after recovery")
                        }
                        Retirement::LeaseExpired => {
                            warn!(%session, node = %self.me, "no gateway announces this session any more: purged")
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Before a group is made durable: while the folder's disk has less free than the reserve, hold the group
    /// (nothing written, nothing acked: its deliveries stay with this consumer) and say so in every beat. The
    /// process beats on and is not waiting on the broker, so no monitor takes it for stuck. Once space is freed
    /// it carries on, unless a newer incarnation replaced it meanwhile.
    async fn wait_for_room(&self) -> Result<(), RuntimeError> {
        let reserve = self.min_free_bytes;
        let mut held = false;
        loop {
            let free = crate::state::available_bytes(&self.folder)?;
            if free >= reserve {
                break;
            }
            if !held {
                let folder = self.folder.display().to_string();
                warn!(node = %self.me, %folder, free, reserve, "the state disk is full: holding the group until space is freed (nothing written or acked)");
                self.recovery.lock().expect("recovery lock").disk_full = true;
                held = true;
            }
            tokio::time::sleep(DISK_POLL).await;
        }
        if held {
            self.recovery.lock().expect("recovery lock").disk_full = false;
            info!(node = %self.me, "space on the state disk again: committing the group held");
            self.incarnation.step_aside_if_replaced();
        }
        Ok(())
    }

    /// Names a disk that refused a commit (the reserve was not enough for the group): the process exits without
    /// acking, what it wrote of the group is a torn tail that recovery cuts, and its next start waits for room.
    fn disk_refused(&self, error: &RuntimeError) {
        if let RuntimeError::State(e) = error {
            if matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) {
                let folder = self.folder.display().to_string();
                warn!(node = %self.me, %folder, "the state disk refused the group: exiting without acking it");
            }
        }
    }

    /// Holds the replica's lock (on this process's connection, for its whole life), then checks that this
    /// process's folder is the one recorded as the replica's state, or records it ([`crate::ownership`]).
    async fn claim(&self, folder: uuid::Uuid) -> Result<(), RuntimeError> {
        let (stage, replica) = (self.stage, self.me.replica);
        let lock = ownership::hold_lock(&self.connection, &self.topology.lock_queue(stage, replica)).await?;
        // The lock lives with its channel, and so with this process's connection: kept open for good.
        let _ = self.lock.set(lock);
        let record = self.topology.owner_queue(stage, replica);
        match ownership::claim(&self.connection, &self.topology, &record, folder).await? {
            Claim::Recorded => info!(node = %self.me, %folder, "this folder now holds the replica's state"),
            Claim::Owner => {}
            Claim::Refused { owner } => {
                let (replica, mine, folder) = (self.me, folder, self.folder.display().to_string());
                return Err(RuntimeError::NotTheOwner { replica, folder, mine, owner, record });
            }
        }
        Ok(())
    }

    /// Starts beating, then recovers the sessions from the folder into the shell (which plans finishing those
    /// that were complete): a node is heard while it replays its logs, so the monitors do not take a long
    /// recovery for a hang.
    async fn open<P: Protocol>(&self, shell: &mut Shell<P>) -> Result<(), RuntimeError> {
        // Each beat says what the folder holds, and, once known, how the recovery went.
        let (reported, folder) = (self.recovery.clone(), self.folder.clone());
        let annotate = move |beat: &mut heartbeat::Heartbeat| {
            let (log_bytes, snapshot_bytes, age) = crate::state::footprint(&folder);
            let last_snapshot_age_ms = age.map(|a| a.as_millis() as u64);
            let known = *reported.lock().expect("recovery lock");
            let disk_free_bytes = crate::state::available_bytes(&folder).ok();
            let state = coffee_types::ReplicaState {
                log_bytes,
                snapshot_bytes,
                last_snapshot_age_ms,
                disk_free_bytes,
                ..known
            };
            beat.state = Some(state);
        };
        let (me, counters) = (self.me.to_string(), self.counters.clone());
        heartbeat::start_with(&self.connection, &self.topology, me, counters, annotate).await?;

        let recovering = std::time::Instant::now();
        let recovered = shell.open(Arc::new(RealDisk), tokio::time::Instant::now())?;
        let mut known = self.recovery.lock().expect("recovery lock");
        known.recovery_ms = recovering.elapsed().as_millis() as u64;
        known.replayed_records = recovered.records;
        known.recovered_sessions = recovered.sessions;
        known.ready_ms = self.started.elapsed().as_millis() as u64;
        let sessions = shell.protocol().open_sessions();
        info!(node = %self.me, sessions, dir = %self.folder.display(), "state recovered");
        self.counters.open_sessions.store(sessions as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Runs a replica until the broker connection fails (the process then exits, and its supervisor starts it
/// again).
async fn run<O: Operator>(node: StageNode<O>, amqp_url: &str) -> Result<(), RuntimeError> {
    let (lease, group_max) = (node.config.session_lease, node.config.group_max.clamp(1, usize::from(PREFETCH)));
    let topology = node.config.topology.clone();
    let io = connect(&node, amqp_url).await?;
    let mut shell = Shell::new(Replica::new(node), lease);
    // The replica is claimed and its folder opened; sessions that were complete when it died are finished
    // again (receivers drop what they have); then it consumes.
    shell.start();
    let mut consuming = None;
    io.perform(&mut shell, &[], &mut consuming).await?;
    let Some((_channel, mut consumer)) = consuming.take() else {
        unreachable!("a shell plans consuming once its recovered sessions are finished")
    };
    let queue = io.input_queue.clone();
    let mut announcements = Box::pin(crate::lease::subscribe(&io.connection, &topology).await?);
    let mut lease_check = tokio::time::interval(crate::lease::announce_every(lease));
    loop {
        // Biased, announcements first: after a long wait in a group (a full disk, a broker alarm) every branch is
        // ready at once, and a lease check taken before the announcements queued meanwhile would purge sessions
        // that their gateway still announces.
        let first = tokio::select! {
            biased;
            announced = announcements.next() => {
                let Some(announced) = announced else { break };
                shell.announced(&announced, tokio::time::Instant::now());
                continue;
            }
            _ = lease_check.tick() => {
                shell.check_leases(tokio::time::Instant::now());
                io.perform(&mut shell, &[], &mut consuming).await?;
                continue;
            }
            delivery = consumer.next() => match delivery {
                Some(delivery) => delivery,
                None => break,
            },
        };
        // Take what is already here, up to the prefetch, as one group.
        let busy_since = std::time::Instant::now();
        let mut group = vec![first?];
        while group.len() < group_max {
            match consumer.next().now_or_never() {
                Some(Some(delivery)) => group.push(delivery?),
                _ => break,
            }
        }
        shell.take_group(group.len());
        io.perform(&mut shell, &group, &mut consuming).await?;
        io.counters.busy(busy_since.elapsed());
    }
    Err(BrokerError::Lost(format!("the consumer of {queue} ended (its channel or connection closed)")).into())
}

/// Becomes the replica's live incarnation on its folder, and reaches the broker: what the shell's steps are
/// then performed with.
async fn connect<O: Operator>(node: &StageNode<O>, amqp_url: &str) -> Result<Io, RuntimeError> {
    let (me, stage) = (node.me(), node.operator.stage());
    let started = std::time::Instant::now();
    let folder = node.node_dir();
    let (topology, input_queue) = (node.config.topology.clone(), node.input_queue());
    // This process is the node's only live incarnation from here on (an older one steps aside first).
    let incarnation = Arc::new(Incarnation::claim(&folder).await?);
    incarnation.watch();
    let connection = amqp::connect_node(amqp_url, &me.to_string()).await;
    amqp::declare_queues(&connection.create_channel().await?, &topology).await?;
    let counters = Arc::new(Counters::default());
    let publisher = Publisher::new(&connection, counters.clone()).await?;
    let (lock, recovery) = (std::sync::OnceLock::new(), Arc::default());
    let io = Io {
        me,
        stage,
        topology,
        folder,
        connection,
        lock,
        publisher,
        input_queue,
        counters,
        incarnation,
        started,
        recovery,
        min_free_bytes: node.config.min_free_bytes,
    };
    Ok(io)
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
            min_free_bytes: 0,
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
