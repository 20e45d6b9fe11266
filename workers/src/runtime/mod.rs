//! The generic runtime around an [`Operator`]: consume the replica's queue, drop duplicates, apply, publish what
//! the operator emits with confirms, count ends of stream, and ack an input only once everything it caused is
//! confirmed by the broker.

pub mod tracker;

use crate::amqp::{self, BrokerError, Publisher};
use crate::message::{Body, Envelope, NodeId, Role, SessionId, StageKind};
use crate::operators::{Destination, Emit, Operator, Target};
use crate::topology::{inputs, outputs, Endpoint, Topology};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{Acker, PublisherConfirm};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use tracker::{Admission, InputTracker};

/// Unacked deliveries a replica holds at once.
pub const PREFETCH: u16 = 256;

/// Finished sessions remembered, so a late duplicate does not open a session that would never end.
const FINISHED_MEMORY: usize = 4096;

/// The (session, stream, sender) keys a stage replica waits for, from the topology.
pub fn expected_inputs(topology: &Topology, stage: StageKind) -> InputTracker {
    InputTracker::new(
        inputs(stage).iter().flat_map(|&(stream, from)| topology.senders(from).into_iter().map(move |s| (stream, s))),
    )
}

/// The queue a destination reads.
pub fn queue_of(topology: &Topology, to: Destination) -> String {
    match to {
        Destination::Gateway => topology.results_queue(),
        Destination::Stage(stage, replica) => topology.queue(stage, replica),
    }
}

struct Session<S> {
    inputs: InputTracker,
    state: S,
    /// Data messages published per target, which each EOF announces.
    sent: BTreeMap<Target, u64>,
}

/// Sessions that ended here, remembered in a bounded window.
#[derive(Default)]
struct FinishedSessions {
    order: VecDeque<SessionId>,
    set: HashSet<SessionId>,
}

impl FinishedSessions {
    fn insert(&mut self, session: SessionId) {
        if self.set.insert(session) {
            self.order.push_back(session);
            if self.order.len() > FINISHED_MEMORY {
                let old = self.order.pop_front().expect("non-empty");
                self.set.remove(&old);
            }
        }
    }
}

/// One replica of a stage: its identity, topology and operator.
pub struct StageNode<O: Operator> {
    pub operator: O,
    pub topology: Topology,
    pub replica: u16,
}

impl<O: Operator> StageNode<O> {
    fn me(&self) -> NodeId {
        NodeId { role: Role::Stage(self.operator.stage()), replica: self.replica }
    }

    /// Every target this stage must end each session on (all replicas of each output).
    fn all_targets(&self) -> Vec<Target> {
        outputs(self.operator.stage())
            .iter()
            .flat_map(|&(stream, to)| {
                (0..self.topology.width(to)).map(move |replica| Target {
                    stream,
                    to: match to {
                        Endpoint::Gateway => Destination::Gateway,
                        Endpoint::Stage(stage) => Destination::Stage(stage, replica),
                    },
                })
            })
            .collect()
    }

    /// Runs until the broker connection fails (the supervisor restarts the process then).
    pub async fn run(self, amqp_url: &str) -> Result<(), BrokerError> {
        let me = self.me();
        let connection = amqp::connect(amqp_url, &me.to_string()).await?;
        let channel = amqp::consumer_channel(&connection, PREFETCH).await?;
        amqp::declare_queues(&channel, &self.topology).await?;
        let publisher = Publisher::new(&connection).await?;
        let queue = self.topology.queue(self.operator.stage(), self.replica);
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                me.to_string().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        info!(node = %me, %queue, "stage replica consuming");

        let (ack_tx, ack_rx) = mpsc::channel(usize::from(PREFETCH));
        let acker = tokio::spawn(ack_when_confirmed(ack_rx));
        let mut sessions: HashMap<SessionId, Session<O::State>> = HashMap::new();
        let mut finished = FinishedSessions::default();

        while let Some(delivery) = consumer.next().await {
            let delivery = delivery?;
            let confirms = self.handle(&delivery.data, &publisher, &mut sessions, &mut finished).await?;
            if ack_tx.send((confirms, delivery.acker)).await.is_err() {
                break; // the acker failed: its error is returned below
            }
        }
        drop(ack_tx);
        acker.await.expect("acker task does not panic")
    }

    /// Handles one delivery and returns the confirms its ack must wait for.
    async fn handle(
        &self,
        bytes: &[u8],
        publisher: &Publisher,
        sessions: &mut HashMap<SessionId, Session<O::State>>,
        finished: &mut FinishedSessions,
    ) -> Result<Vec<PublisherConfirm>, BrokerError> {
        let envelope = match Envelope::decode(bytes) {
            Ok(envelope) => envelope,
            Err(e) => {
                warn!(node = %self.me(), error = %e, "dropping a message that does not decode");
                return Ok(Vec::new());
            }
        };
        let Envelope { session: id, sender, stream, seq, body } = envelope;
        if finished.set.contains(&id) {
            debug!(%id, %sender, seq, "late message of a finished session");
            return Ok(Vec::new());
        }
        let session = sessions.entry(id).or_insert_with(|| Session {
            inputs: expected_inputs(&self.topology, self.operator.stage()),
            state: O::State::default(),
            sent: BTreeMap::new(),
        });
        let mut confirms = Vec::new();
        let admission = match body {
            Body::Data(batch) => {
                let admission = session.inputs.admit_data(stream, sender, seq);
                if admission == Admission::Apply {
                    let mut emit = Emit::default();
                    match self.operator.apply(&mut session.state, stream, batch, &mut emit) {
                        Ok(()) => {
                            self.publish(publisher, id, Some(seq), emit, &mut session.sent, &mut confirms).await?
                        }
                        Err(e) => warn!(session = %id, %sender, seq, error = %e, "dropping a batch"),
                    }
                }
                admission
            }
            Body::Eof { count } => session.inputs.admit_eof(stream, sender, count),
        };
        match admission {
            Admission::Apply | Admission::Duplicate => {
                debug!(session = %id, %sender, ?stream, seq, ?admission, "input")
            }
            Admission::Unexpected | Admission::BeyondEof => {
                warn!(session = %id, %sender, ?stream, seq, ?admission, "dropping an input this replica does not expect")
            }
        }
        if session.inputs.is_complete() {
            let session = sessions.remove(&id).expect("present");
            self.finish(publisher, id, session, &mut confirms).await?;
            finished.insert(id);
        }
        Ok(confirms)
    }

    /// Publishes emitted batches. Per-input outputs reuse the input's seq (so a re-run re-sends the same ids);
    /// final outputs are numbered from 0 on each target.
    async fn publish(
        &self,
        publisher: &Publisher,
        session: SessionId,
        input_seq: Option<u64>,
        emit: Emit,
        sent: &mut BTreeMap<Target, u64>,
        confirms: &mut Vec<PublisherConfirm>,
    ) -> Result<(), BrokerError> {
        for (target, batch) in emit.batches {
            let count = sent.entry(target).or_default();
            let seq = input_seq.unwrap_or(*count);
            *count += 1;
            let envelope = Envelope { session, sender: self.me(), stream: target.stream, seq, body: Body::Data(batch) };
            confirms.push(publisher.publish(&queue_of(&self.topology, target.to), &envelope).await?);
        }
        Ok(())
    }

    async fn finish(
        &self,
        publisher: &Publisher,
        id: SessionId,
        mut session: Session<O::State>,
        confirms: &mut Vec<PublisherConfirm>,
    ) -> Result<(), BrokerError> {
        let mut emit = Emit::default();
        self.operator.finish(session.state, &mut emit);
        self.publish(publisher, id, None, emit, &mut session.sent, confirms).await?;
        for target in self.all_targets() {
            let count = session.sent.get(&target).copied().unwrap_or(0);
            let envelope = Envelope {
                session: id,
                sender: self.me(),
                stream: target.stream,
                seq: count,
                body: Body::Eof { count },
            };
            confirms.push(publisher.publish(&queue_of(&self.topology, target.to), &envelope).await?);
        }
        info!(session = %id, node = %self.me(), "session finished here");
        Ok(())
    }
}

/// Acks each delivery, in order, once the broker confirmed everything it caused to be published.
async fn ack_when_confirmed(mut queue: mpsc::Receiver<(Vec<PublisherConfirm>, Acker)>) -> Result<(), BrokerError> {
    while let Some((confirms, acker)) = queue.recv().await {
        amqp::await_confirms(confirms).await?;
        acker.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}
