//! One client connection: the handshake (a new session or a resumed one), the client's input published into the
//! pipeline, and the session's results forwarded and acked as the client writes them.

use super::progress::UploadLog;
use super::routing::{input_eofs, route_input, stream_of};
use super::{Shared, GATEWAY};
use crate::amqp;
use crate::message::{Batch, Body, Envelope, Query, SessionId, Stream};
use crate::model::FileKind;
use crate::protocol::{ClientFrame, FrameReader, FrameWriter, GatewayFrame, ResultId};
use crate::runtime::queue_of;
use crate::runtime::tracker::{Admission, InputTracker};
use crate::topology::{result_source, Endpoint, Topology};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Acker, PublisherConfirm};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Confirms a connection keeps in flight before it waits for the oldest (backpressure on a fast client).
const CONFIRMS_IN_FLIGHT: usize = 512;

/// How often (in batches of one kind) the gateway looks at the depth of the queue it feeds.
const DEPTH_CHECK_EVERY: u64 = 16;

/// Batches of one kind between two records of the upload's durable progress.
const PROGRESS_EVERY: u64 = 128;

/// Result messages forwarded to a client and not yet acked by it, at most.
const RESULTS_IN_FLIGHT: u16 = 256;

/// Serves one connection from its first frame to the end of its session (or of the connection).
pub(super) async fn serve_client(socket: TcpStream, shared: Arc<Shared>) -> anyhow::Result<()> {
    socket.set_nodelay(true)?;
    let (read, write) = socket.into_split();
    let mut reader = FrameReader::<_, ClientFrame>::new(read);
    let mut writer = FrameWriter::<_, GatewayFrame>::new(write);
    let Opened { session, secret, received, upload_log, resume_from } =
        handshake(&mut reader, &mut writer, &shared).await?;
    let resumed = !resume_from.is_empty() || !received.is_empty();
    let number = shared.claim(session);
    let channel = shared.connection.create_channel().await?;
    channel.basic_qos(RESULTS_IN_FLIGHT, BasicQosOptions::default()).await?;
    let results_queue = shared.topology.results_queue(session);
    amqp::declare_durable(&channel, &shared.topology, &results_queue).await?;
    info!(%session, resumed, received = received.len(), "session opened");

    let (frames_tx, mut frames_rx) = mpsc::unbounded_channel();
    frames_tx.send(GatewayFrame::Welcome {
        session,
        secret,
        resume_from: resume_from.clone().into_iter().collect(),
    })?;
    let writing = tokio::spawn(async move {
        while let Some(frame) = frames_rx.recv().await {
            writer.send(&frame).await?;
        }
        Ok::<_, anyhow::Error>(())
    });
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let input = receive_input(&mut reader, session, &shared, acks_tx, upload_log, resume_from);
    let results = forward_results(&channel, &results_queue, session, &shared, received, frames_tx.clone(), acks_rx);
    tokio::pin!(input, results);
    let outcome = tokio::select! {
        biased;
        done = &mut results => done,
        ended = &mut input => match ended {
            Ok(()) => Err(anyhow::anyhow!("the client left before its results")),
            // The client's fault ends its session; the broker's only this connection (see `broker_failed`).
            Err(e) if broker_failed(&e) => Err(e),
            Err(e) => {
                let _ = frames_tx.send(GatewayFrame::Error { message: e.to_string() });
                Err(e)
            }
        },
    };
    if outcome.is_ok() {
        // Clean up first, then say Done: a client that misses the Done (this gateway dying right here) resumes,
        // hears "unknown session", and knows from the query ends it acked that it has everything.
        channel.queue_delete(results_queue.as_str().into(), QueueDeleteOptions::default()).await?;
        UploadLog::remove(&shared.state_dir, session);
        crate::failpoint!("gateway-before-done");
        let _ = frames_tx.send(GatewayFrame::Done);
    }
    drop(frames_tx);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), writing).await;
    match outcome {
        Ok(()) => {
            shared.release(session, number);
            info!(%session, "session complete: every result is with its client");
            Ok(())
        }
        Err(e) => {
            // Unacked results go back to the queue, for a resume.
            let _ = channel.close(200, "client gone".into()).await;
            warn!(%session, error = %e, grace = ?shared.grace, "connection lost; the session waits for a resume");
            tokio::time::sleep(shared.grace).await;
            if shared.serves(session, number) {
                purge(session, &shared).await?;
                shared.release(session, number);
            }
            Err(e)
        }
    }
}

/// Whether `e` is the broker's failure rather than the client's. The client is then told nothing and only loses
/// its connection, so it reconnects and resumes its session; meanwhile this gateway notices its broker link is
/// gone and exits, to be restarted. An `Error` frame would have ended a session that nothing was wrong with.
fn broker_failed(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.is::<lapin::Error>() || cause.is::<amqp::BrokerError>())
}

/// A session opened by a handshake.
struct Opened {
    session: SessionId,
    secret: u128,
    /// The results the client already has (on a resume).
    received: Vec<ResultId>,
    upload_log: UploadLog,
    /// Batches per file kind already durably in the pipeline (on a resume).
    resume_from: BTreeMap<FileKind, u64>,
}

/// The first frame: `Hello` opens a new session (within the session limit), `Resume` reopens one with its
/// secret. Anything else, or nothing within the handshake timeout, ends the connection.
async fn handshake(
    reader: &mut FrameReader<OwnedReadHalf, ClientFrame>,
    writer: &mut FrameWriter<OwnedWriteHalf, GatewayFrame>,
    shared: &Shared,
) -> anyhow::Result<Opened> {
    let first = tokio::time::timeout(shared.limits.handshake_timeout, reader.next())
        .await
        .map_err(|_| anyhow::anyhow!("no handshake within {:?}", shared.limits.handshake_timeout))?;
    if matches!(first, Ok(ClientFrame::Hello)) && shared.sessions() >= shared.limits.max_sessions {
        let message =
            format!("the gateway serves its maximum of {} sessions; try again later", shared.limits.max_sessions);
        writer.send(&GatewayFrame::Error { message: message.clone() }).await?;
        anyhow::bail!(message);
    }
    match first {
        Ok(ClientFrame::Hello) => {
            let (session, secret) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4().as_u128());
            let log = UploadLog::create(&shared.state_dir, session, secret)?;
            Ok(Opened { session, secret, received: Vec::new(), upload_log: log, resume_from: BTreeMap::new() })
        }
        Ok(ClientFrame::Resume { session, secret, received }) => match UploadLog::resume(&shared.state_dir, session)? {
            Some((log, recovered)) if recovered.secret == Some(secret) => {
                Ok(Opened { session, secret, received, upload_log: log, resume_from: recovered.done })
            }
            found => {
                let why = if found.is_some() { "wrong secret for session" } else { "unknown session" };
                warn!(%session, why, "resume refused");
                writer.send(&GatewayFrame::Error { message: format!("{why} {session}") }).await?;
                anyhow::bail!("{why} {session}");
            }
        },
        Ok(other) => {
            let message = format!("expected Hello or Resume, got {}", frame_name(&other));
            writer.send(&GatewayFrame::Error { message: message.clone() }).await?;
            anyhow::bail!(message);
        }
        Err(e) => {
            let _ = writer.send(&GatewayFrame::Error { message: e.to_string() }).await;
            Err(e.into())
        }
    }
}

fn frame_name(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Hello => "Hello",
        ClientFrame::Resume { .. } => "Resume",
        ClientFrame::Ack { .. } => "Ack",
        ClientFrame::Rows { .. } => "Rows",
        ClientFrame::EndOfFile { .. } => "EndOfFile",
    }
}

/// Reads the client's batches, EOFs and acks until the client closes the connection. Batches are published
/// with confirms pipelined; an EOF is published once everything of its kind is confirmed.
async fn receive_input(
    reader: &mut FrameReader<OwnedReadHalf, ClientFrame>,
    session: SessionId,
    shared: &Shared,
    acks: mpsc::UnboundedSender<u64>,
    mut upload_log: UploadLog,
    resume_from: BTreeMap<FileKind, u64>,
) -> anyhow::Result<()> {
    let topology = &shared.topology;
    let mut next_seq: BTreeMap<FileKind, u64> = resume_from;
    let mut ended: BTreeSet<FileKind> = BTreeSet::new();
    let mut in_flight: VecDeque<PublisherConfirm> = VecDeque::new();
    loop {
        // While the client uploads, a frame must come within the timeout; once every kind has ended, the client
        // only acks results, which may be a long time coming.
        let next = reader.next();
        let frame = if ended.len() < FileKind::ALL.len() {
            match tokio::time::timeout(shared.limits.frame_timeout, next).await {
                Ok(frame) => frame,
                Err(_) => anyhow::bail!("no complete frame within {:?} during the upload", shared.limits.frame_timeout),
            }
        } else {
            next.await
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(crate::protocol::FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match frame {
            ClientFrame::Hello | ClientFrame::Resume { .. } => anyhow::bail!("a second handshake"),
            ClientFrame::Ack { upto } => {
                let _ = acks.send(upto);
            }
            ClientFrame::Rows { kind, seq, batch } => {
                let expected = next_seq.entry(kind).or_default();
                anyhow::ensure!(!ended.contains(&kind), "{kind} rows after its end");
                anyhow::ensure!(seq == *expected, "{kind} batch {seq} out of order (expected {expected})");
                anyhow::ensure!(stream_of(kind).carries(&batch), "a {kind} batch holds other rows");
                *expected += 1;
                debug!(%session, sender = %GATEWAY, %kind, seq, rows = batch.len(), "client batch");
                for routed in route_input(topology, kind, seq, batch) {
                    let queue = queue_of(topology, routed.to, session);
                    if seq % DEPTH_CHECK_EVERY == 0 {
                        shared.flow.wait_for_room(&queue).await?;
                    }
                    let body = Body::Data(routed.payload);
                    let envelope = Envelope { session, sender: GATEWAY, stream: routed.stream, seq: routed.seq, body };
                    in_flight.push_back(shared.publisher.publish(&queue, &envelope).await?);
                }
                crate::failpoint!("gateway-mid-upload");
                while in_flight.len() > CONFIRMS_IN_FLIGHT {
                    amqp::await_confirms(in_flight.pop_front().into_iter().collect()).await?;
                }
                if (seq + 1) % PROGRESS_EVERY == 0 {
                    // Everything so far confirmed, then recorded: a resume starts after it.
                    amqp::await_confirms(in_flight.drain(..).collect()).await?;
                    upload_log.record(kind, seq + 1)?;
                }
            }
            ClientFrame::EndOfFile { kind, batches } => {
                let sent = next_seq.get(&kind).copied().unwrap_or(0);
                anyhow::ensure!(batches == sent, "{kind} ends after {batches} batches, but {sent} arrived");
                anyhow::ensure!(ended.insert(kind), "{kind} ended twice");
                // Everything of this kind is confirmed before its EOF can overtake it on a restart.
                amqp::await_confirms(in_flight.drain(..).collect()).await?;
                for eof in input_eofs(topology, kind, batches) {
                    let body = Body::Eof { count: eof.payload };
                    let envelope = Envelope { session, sender: GATEWAY, stream: eof.stream, seq: eof.seq, body };
                    in_flight
                        .push_back(shared.publisher.publish(&queue_of(topology, eof.to, session), &envelope).await?);
                }
                amqp::await_confirms(in_flight.drain(..).collect()).await?;
                upload_log.record(kind, batches)?;
                info!(%session, %kind, batches, "input file kind ended");
            }
        }
    }
}

/// The result streams a session waits for: one per query, from every replica of the stage that answers it.
fn result_tracker(topology: &Topology) -> InputTracker {
    InputTracker::new(Query::ALL.into_iter().flat_map(|q| {
        topology.senders(Endpoint::Stage(result_source(q))).into_iter().map(move |s| (Stream::Results(q), s))
    }))
}

fn admit(tracker: &mut InputTracker, id: &ResultId) -> Admission {
    match id.eof {
        Some(count) => tracker.admit_eof(Stream::Results(id.query), id.sender, count),
        None => tracker.admit_data(Stream::Results(id.query), id.sender, id.seq),
    }
}

/// Forwards the session's results as numbered frames and acks each message once the client acked its frame.
/// Returns when the client has acked everything up to and including the last result of the session.
async fn forward_results(
    channel: &lapin::Channel,
    queue: &str,
    session: SessionId,
    shared: &Shared,
    received: Vec<ResultId>,
    frames: mpsc::UnboundedSender<GatewayFrame>,
    mut acks: mpsc::UnboundedReceiver<u64>,
) -> anyhow::Result<()> {
    let (topology, publisher) = (&shared.topology, &shared.publisher);
    let dead_letters = &topology.dead_letter_queue("gateway");
    let mut tracker = result_tracker(topology);
    for id in &received {
        admit(&mut tracker, id);
    }
    let mut done: BTreeSet<Query> = BTreeSet::new();
    // Frames sent and not yet acked: results (with the delivery to ack) and query ends (nothing to ack).
    let mut pending: VecDeque<(u64, Option<Acker>)> = VecDeque::new();
    let mut n = 0;
    let mut consumer = channel
        .basic_consume(queue.into(), "gateway".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    loop {
        for query in Query::ALL {
            if !done.contains(&query) && tracker.stream_complete(Stream::Results(query)) {
                done.insert(query);
                n += 1;
                frames.send(GatewayFrame::QueryDone { n, query })?;
                pending.push_back((n, None));
                info!(%session, %query, "query complete");
            }
        }
        // The client has every result and every query end: the session is over (the caller cleans up, then
        // says Done).
        if done.len() == Query::ALL.len() && pending.is_empty() {
            return Ok(());
        }
        tokio::select! {
            delivery = consumer.next() => {
                let Some(delivery) = delivery else { anyhow::bail!("the results consumer was cancelled") };
                let delivery = delivery?;
                let poison = match Envelope::decode(&delivery.data) {
                    Ok(envelope) => match (envelope.stream, &envelope.body) {
                        (Stream::Results(_), Body::Data(batch)) if !envelope.stream.carries(batch) => Err("wrong rows".to_owned()),
                        (Stream::Results(_), Body::Data(_) | Body::Eof { .. }) => Ok(envelope),
                        _ => Err("not a result".to_owned()),
                    },
                    Err(e) => Err(e.to_string()),
                };
                let envelope = match poison {
                    Ok(envelope) => envelope,
                    Err(why) => {
                        // Set aside, never redelivered: the session goes on without it.
                        warn!(%session, reason = %why, "poison message on a results queue set aside");
                        amqp::await_confirms(vec![publisher.publish_bytes(dead_letters, &delivery.data).await?]).await?;
                        delivery.acker.ack(BasicAckOptions::default()).await?;
                        continue;
                    }
                };
                let Stream::Results(query) = envelope.stream else { unreachable!("checked above") };
                let (eof, rows) = match envelope.body {
                    Body::Eof { count } => (Some(count), Vec::new()),
                    Body::Data(Batch::Results(rows)) => (None, rows),
                    _ => (None, Vec::new()),
                };
                let id = ResultId { query, sender: envelope.sender, seq: envelope.seq, eof };
                match admit(&mut tracker, &id) {
                    Admission::Apply => {
                        n += 1;
                        frames.send(GatewayFrame::Result { n, id, rows })?;
                        pending.push_back((n, Some(delivery.acker)));
                        crate::failpoint!("gateway-results-unacked");
                    }
                    admission => {
                        debug!(%session, sender = %id.sender, seq = id.seq, ?admission, "result not forwarded");
                        delivery.acker.ack(BasicAckOptions::default()).await?;
                    }
                }
            }
            upto = acks.recv() => {
                let Some(upto) = upto else { anyhow::bail!("the client connection ended") };
                while pending.front().is_some_and(|(k, _)| *k <= upto) {
                    if let (_, Some(acker)) = pending.pop_front().expect("checked") {
                        acker.ack(BasicAckOptions::default()).await?;
                    }
                }
            }
        }
    }
}

/// Tells every stage replica to drop `session` (state, files), and deletes its results queue.
pub(super) async fn purge(session: SessionId, shared: &Shared) -> anyhow::Result<()> {
    let topology = &shared.topology;
    let mut confirms = Vec::new();
    for node in topology.nodes() {
        let crate::message::Role::Stage(stage) = node.role else { continue };
        let envelope = Envelope { session, sender: GATEWAY, stream: Stream::Transactions, seq: 0, body: Body::Purge };
        confirms.push(shared.publisher.publish(&topology.queue(stage, node.replica), &envelope).await?);
    }
    amqp::await_confirms(confirms).await?;
    let channel = shared.connection.create_channel().await?;
    channel.queue_delete(topology.results_queue(session).as_str().into(), QueueDeleteOptions::default()).await?;
    UploadLog::remove(&shared.state_dir, session);
    info!(%session, "abandoned session purged from every node");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_broker_failures_spare_the_session() {
        assert!(broker_failed(&anyhow::Error::from(amqp::BrokerError::Nacked)));
        assert!(broker_failed(&anyhow::Error::from(amqp::BrokerError::Nacked).context("publishing a batch")));
        assert!(!broker_failed(&anyhow::anyhow!("no complete frame within 30s during the upload")));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "frame of 9 MiB");
        assert!(!broker_failed(&anyhow::Error::from(io)));
    }
}
