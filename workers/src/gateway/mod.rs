//! The gateway: accepts client sessions over TCP, publishes their input into the pipeline, and routes each
//! session's results back to its client as they arrive.

pub mod routing;

use crate::amqp::{self, BrokerError, Publisher};
use crate::heartbeat::{self, Counters};
use crate::message::{Batch, Body, Envelope, NodeId, Query, Role, SessionId, Stream};
use crate::model::FileKind;
use crate::protocol::{ClientFrame, FrameError, FrameReader, FrameWriter, GatewayFrame};
use crate::runtime::queue_of;
use crate::runtime::tracker::{Admission, InputTracker};
use crate::topology::{result_source, Endpoint, Topology};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::PublisherConfirm;
use routing::{batch_matches, input_eofs, route_input};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Confirms a connection keeps in flight before it waits for the oldest (backpressure on a fast client).
const CONFIRMS_IN_FLIGHT: usize = 512;

/// Messages a first-stage queue may hold before the gateway stops reading from the client that fills it.
const MAX_QUEUE_DEPTH: u32 = 512;

/// How often (in batches of one kind) the gateway looks at the depth of the queue it feeds.
const DEPTH_CHECK_EVERY: u64 = 16;

/// The gateway's identity as a sender.
pub const GATEWAY: NodeId = NodeId { role: Role::Gateway, replica: 0 };

type Registry = Arc<Mutex<HashMap<SessionId, mpsc::UnboundedSender<GatewayFrame>>>>;

pub struct Gateway {
    pub topology: Topology,
    pub amqp_url: String,
    /// How long an abandoned session is kept before every node purges it.
    pub session_grace: Duration,
}

impl Gateway {
    /// Serves clients on `listener` until the broker connection fails.
    pub async fn run(self, listener: TcpListener) -> anyhow::Result<()> {
        let connection = amqp::connect(&self.amqp_url, "gateway").await?;
        let channel = amqp::consumer_channel(&connection, crate::runtime::PREFETCH).await?;
        amqp::declare_queues(&channel, &self.topology).await?;
        let counters = Arc::new(Counters::default());
        let publisher = Publisher::new(&connection, counters.clone()).await?;
        let flow = FlowControl { channel: connection.create_channel().await?, limit: MAX_QUEUE_DEPTH };
        let registry: Registry = Arc::default();
        let grace = self.session_grace;
        let topology = Arc::new(self.topology);
        info!(addr = %listener.local_addr()?, topology = %topology, "gateway listening");

        let results = tokio::spawn(dispatch_results(channel, topology.clone(), registry.clone(), counters.clone()));
        heartbeat::start(&connection, &topology, "gateway".into(), counters.clone()).await?;
        let accept = async {
            loop {
                let (socket, peer) = listener.accept().await?;
                let (topology, publisher, registry) = (topology.clone(), publisher.clone(), registry.clone());
                let flow = flow.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_client(socket, &topology, &publisher, &flow, &registry, grace).await {
                        warn!(%peer, error = %e, "client connection ended with an error");
                    }
                });
            }
        };
        tokio::select! {
            r = results => Ok(r??),
            r = accept => r,
        }
    }
}

/// One client connection: a session from `Hello` to the end of its results.
async fn serve_client(
    socket: TcpStream,
    topology: &Topology,
    publisher: &Publisher,
    flow: &FlowControl,
    registry: &Registry,
    grace: Duration,
) -> anyhow::Result<()> {
    socket.set_nodelay(true)?;
    let (read, write) = socket.into_split();
    let mut reader = FrameReader::<_, ClientFrame>::new(read);
    let mut writer = FrameWriter::<_, GatewayFrame>::new(write);
    match reader.next().await {
        Ok(ClientFrame::Hello) => {}
        Ok(other) => {
            let message = format!("expected Hello, got {other:?}");
            writer.send(&GatewayFrame::Error { message: message.clone() }).await?;
            anyhow::bail!(message);
        }
        Err(e) => {
            let _ = writer.send(&GatewayFrame::Error { message: e.to_string() }).await;
            return Err(e.into());
        }
    }
    let session = uuid::Uuid::new_v4();
    let (frames_tx, mut frames_rx) = mpsc::unbounded_channel();
    registry.lock().expect("registry lock").insert(session, frames_tx.clone());
    frames_tx.send(GatewayFrame::Welcome { session })?;
    info!(%session, "session opened");

    // The writer forwards this session's frames until Done or Error, or until the client is gone. It says
    // whether the client got its Done.
    let write_task = tokio::spawn(async move {
        while let Some(frame) = frames_rx.recv().await {
            let done = matches!(frame, GatewayFrame::Done);
            writer.send(&frame).await?;
            if done || matches!(frame, GatewayFrame::Error { .. }) {
                return Ok(done);
            }
        }
        Ok::<_, FrameError>(false)
    });

    let outcome = receive_input(&mut reader, session, topology, publisher, flow).await;
    if let Err(e) = &outcome {
        warn!(%session, error = %e, "closing the session's connection");
        let _ = frames_tx.send(GatewayFrame::Error { message: e.to_string() });
        registry.lock().expect("registry lock").remove(&session);
    }
    drop(frames_tx);
    let delivered = matches!(write_task.await?, Ok(true));
    if !delivered {
        // The client is gone before its results: nothing can resume the session, so every node drops it.
        registry.lock().expect("registry lock").remove(&session);
        tokio::time::sleep(grace).await;
        purge(session, topology, publisher).await?;
    }
    outcome
}

/// Tells every stage replica to drop `session` (state, files), and waits for the broker to take it.
async fn purge(session: SessionId, topology: &Topology, publisher: &Publisher) -> anyhow::Result<()> {
    let mut confirms = Vec::new();
    for node in topology.nodes() {
        let Role::Stage(stage) = node.role else { continue };
        let envelope = Envelope { session, sender: GATEWAY, stream: Stream::Transactions, seq: 0, body: Body::Purge };
        confirms.push(publisher.publish(&topology.queue(stage, node.replica), &envelope).await?);
    }
    amqp::await_confirms(confirms).await?;
    info!(%session, "abandoned session purged from every node");
    Ok(())
}

/// Reads the client's batches and EOFs and publishes them, until every file kind has ended.
async fn receive_input(
    reader: &mut FrameReader<tokio::net::tcp::OwnedReadHalf, ClientFrame>,
    session: SessionId,
    topology: &Topology,
    publisher: &Publisher,
    flow: &FlowControl,
) -> anyhow::Result<()> {
    let mut next_seq: HashMap<FileKind, u64> = HashMap::new();
    let mut ended: BTreeSet<FileKind> = BTreeSet::new();
    let mut in_flight: VecDeque<PublisherConfirm> = VecDeque::new();
    while ended.len() < FileKind::ALL.len() {
        match reader.next().await? {
            ClientFrame::Hello => anyhow::bail!("Hello sent twice"),
            ClientFrame::Rows { kind, seq, batch } => {
                let expected = next_seq.entry(kind).or_default();
                anyhow::ensure!(!ended.contains(&kind), "{kind} rows after its end");
                anyhow::ensure!(seq == *expected, "{kind} batch {seq} out of order (expected {expected})");
                anyhow::ensure!(batch_matches(kind, &batch), "a {kind} batch holds other rows");
                *expected += 1;
                debug!(%session, sender = %GATEWAY, %kind, seq, rows = batch.len(), "client batch");
                for routed in route_input(topology, kind, seq, batch) {
                    if seq % DEPTH_CHECK_EVERY == 0 {
                        flow.wait_for_room(&queue_of(topology, routed.to)).await?;
                    }
                    let body = Body::Data(routed.payload);
                    let envelope = Envelope { session, sender: GATEWAY, stream: routed.stream, seq: routed.seq, body };
                    in_flight.push_back(publisher.publish(&queue_of(topology, routed.to), &envelope).await?);
                }
                while in_flight.len() > CONFIRMS_IN_FLIGHT {
                    amqp::await_confirms(in_flight.pop_front().into_iter().collect()).await?;
                }
            }
            ClientFrame::EndOfFile { kind, batches } => {
                let sent = next_seq.get(&kind).copied().unwrap_or(0);
                anyhow::ensure!(batches == sent, "{kind} ends after {batches} batches, but {sent} arrived");
                anyhow::ensure!(ended.insert(kind), "{kind} ended twice");
                // Everything of this kind is confirmed before its EOF can overtake it on a restart.
                amqp::await_confirms(in_flight.drain(..).collect()).await?;
                for eof in input_eofs(topology, kind, batches) {
                    let envelope = Envelope {
                        session,
                        sender: GATEWAY,
                        stream: eof.stream,
                        seq: eof.seq,
                        body: Body::Eof { count: eof.payload },
                    };
                    in_flight.push_back(publisher.publish(&queue_of(topology, eof.to), &envelope).await?);
                }
                info!(%session, %kind, batches, "input file kind ended");
            }
        }
    }
    amqp::await_confirms(in_flight.into_iter().collect()).await?;
    Ok(())
}

/// Flow control: a client faster than the pipeline is paused (its TCP writes block) while the queue it feeds is
/// deeper than the limit, so the broker holds a bounded backlog per queue instead of the whole dataset.
#[derive(Clone)]
struct FlowControl {
    channel: lapin::Channel,
    limit: u32,
}

impl FlowControl {
    async fn wait_for_room(&self, queue: &str) -> Result<(), BrokerError> {
        while amqp::queue_depth(&self.channel, queue).await? >= self.limit {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// Results of one session, as the gateway collects them.
struct ResultProgress {
    inputs: InputTracker,
    done: BTreeSet<Query>,
}

fn result_tracker(topology: &Topology) -> InputTracker {
    InputTracker::new(Query::ALL.into_iter().flat_map(|q| {
        topology.senders(Endpoint::Stage(result_source(q))).into_iter().map(move |s| (Stream::Results(q), s))
    }))
}

/// Consumes the results queue and routes each session's rows, query ends and final `Done` to its client.
async fn dispatch_results(
    channel: lapin::Channel,
    topology: Arc<Topology>,
    registry: Registry,
    counters: Arc<Counters>,
) -> Result<(), BrokerError> {
    let queue = topology.results_queue();
    let mut consumer = channel
        .basic_consume(queue.as_str().into(), "gateway".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let mut progress: HashMap<SessionId, ResultProgress> = HashMap::new();
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        counters.consumed(delivery.data.len());
        let open = registry.lock().expect("registry lock").len() as u64;
        counters.open_sessions.store(open, std::sync::atomic::Ordering::Relaxed);
        match Envelope::decode(&delivery.data) {
            Ok(envelope) => route_result(envelope, &topology, &registry, &mut progress),
            Err(e) => warn!(error = %e, "dropping a result message that does not decode"),
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

fn route_result(
    envelope: Envelope,
    topology: &Topology,
    registry: &Registry,
    progress: &mut HashMap<SessionId, ResultProgress>,
) {
    let Envelope { session, sender, stream, seq, body } = envelope;
    let Some(client) = registry.lock().expect("registry lock").get(&session).cloned() else {
        debug!(%session, %sender, seq, "result for a session that is not connected");
        progress.remove(&session);
        return;
    };
    let entry = progress
        .entry(session)
        .or_insert_with(|| ResultProgress { inputs: result_tracker(topology), done: BTreeSet::new() });
    let admission = match body {
        Body::Data(batch) => {
            let admission = entry.inputs.admit_data(stream, sender, seq);
            if admission == Admission::Apply {
                if let Batch::Results(rows) = batch {
                    if !rows.is_empty() {
                        let _ = client.send(GatewayFrame::Results { rows });
                    }
                }
            }
            admission
        }
        Body::Eof { count } => entry.inputs.admit_eof(stream, sender, count),
        Body::Purge => Admission::Unexpected,
    };
    if matches!(admission, Admission::Unexpected | Admission::BeyondEof) {
        warn!(%session, %sender, ?stream, seq, ?admission, "dropping an unexpected result message");
    }
    for query in Query::ALL {
        if !entry.done.contains(&query) && entry.inputs.stream_complete(Stream::Results(query)) {
            entry.done.insert(query);
            let _ = client.send(GatewayFrame::QueryDone { query });
            info!(%session, %query, "query complete");
        }
    }
    if entry.inputs.is_complete() {
        let _ = client.send(GatewayFrame::Done);
        progress.remove(&session);
        registry.lock().expect("registry lock").remove(&session);
        info!(%session, "session complete");
    }
}
