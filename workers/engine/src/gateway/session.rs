//! One client connection: the handshake (a new session or a resumed one), the client's input published into the
//! pipeline, and the session's results forwarded and acked as the client writes them.

use super::progress::UploadLog;
use super::purge::PurgeStep;
use super::results::{has_every_result, Forward, Handling};
use super::upload::{Upload, UploadStep, PROGRESS_EVERY};
use super::{Shared, GATEWAY};
use crate::amqp::{self, BrokerError};
use crate::protocol::{ClientFrame, ErrorCode, FrameError, FrameReader, FrameWriter, GatewayFrame, ReceivedStream};
use coffee_model::model::FileKind;
use coffee_model::wire::SessionId;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Acker, PublisherConfirm};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::io::InspectReader;
use tracing::{debug, info, warn};

/// Confirms a connection keeps in flight before it waits for the oldest (backpressure on a fast client).
const CONFIRMS_IN_FLIGHT: usize = 512;

/// Result messages the broker hands the gateway for one session before it acks any (its prefetch): they wait in
/// the consumer, as bytes, until forwarded. With [`super::results::UNACKED_BYTES`] forwarded and unacked, this
/// bounds what one session's results cost the gateway (`docs/benchmarks.md`, "The gateway's memory").
const RESULTS_IN_FLIGHT: u16 = 64;

/// Why a client's connection (and maybe its session) ended, as the gateway must act on it: what the client is
/// told, and whether the session waits for a resume.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
    /// The client is refused and told why, with a code: it broke the protocol, the gateway is full, no such
    /// session, a wrong secret, a session being purged, results that are gone.
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    /// The broker failed (a connection, channel or consumer went away; a publish was not confirmed). The client
    /// is told nothing: it resumes its session with this gateway or its restarted successor, and an `Error`
    /// frame would end a session that nothing was wrong with.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The client's connection ended or broke: nobody is left to tell.
    #[error("{0}")]
    Gone(String),
    /// This gateway's own upload log failed: not the client's fault, so it is told nothing and may resume.
    #[error("the upload log: {0}")]
    Local(#[from] std::io::Error),
}

impl From<lapin::Error> for SessionError {
    fn from(e: lapin::Error) -> Self {
        SessionError::Broker(e.into())
    }
}

/// A frame that does not read: the connection failed or closed, or the client sent bytes that are no frame (an
/// oversized length prefix is the codec's `InvalidData`).
impl From<FrameError> for SessionError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(ref io) if io.kind() != std::io::ErrorKind::InvalidData => SessionError::Gone(e.to_string()),
            FrameError::Closed => SessionError::Gone(e.to_string()),
            other => refuse(ErrorCode::Protocol, other.to_string()),
        }
    }
}

/// The frame writer is gone: the connection ended.
impl<T> From<mpsc::error::SendError<T>> for SessionError {
    fn from(_: mpsc::error::SendError<T>) -> Self {
        SessionError::Gone("the client connection's writer ended".to_owned())
    }
}

pub(super) fn refuse(code: ErrorCode, message: impl Into<String>) -> SessionError {
    SessionError::Refused { code, message: message.into() }
}

/// What the client hears of an error that ends its connection: its refusal, with the code; nothing otherwise.
fn error_frame(e: &SessionError) -> Option<GatewayFrame> {
    match e {
        SessionError::Refused { code, message } => Some(GatewayFrame::Error { code: *code, message: message.clone() }),
        SessionError::Broker(_) | SessionError::Gone(_) | SessionError::Local(_) => None,
    }
}

/// Counts the bytes a connection reads.
type ByteCounter = Box<dyn FnMut(&[u8]) + Send + Sync>;

/// A client connection's reading half, counting the bytes it has read (see [`Reading::next_uploaded`]).
type ClientReader = FrameReader<InspectReader<OwnedReadHalf, ByteCounter>, ClientFrame>;

/// Bytes an upload must move within each `frame_timeout` while a frame is on its way (or a frame end), or the
/// client is taken for stalled: 34 bytes a second at the default 30 s, far under any real link, yet a trickle
/// of a byte now and then, holding a session slot for nothing, is still closed.
const MIN_UPLOAD_PROGRESS: u64 = 1024;

/// Serves one connection from its first frame to the end of its session (or of the connection).
pub(super) async fn serve_client(socket: TcpStream, peer: IpAddr, shared: Arc<Shared>) -> anyhow::Result<()> {
    socket.set_nodelay(true)?;
    crate::protocol::detect_dead_peer(&socket, shared.limits.dead_peer_after)?;
    let (read, write) = socket.into_split();
    let received_bytes = Arc::new(AtomicU64::new(0));
    let counted = received_bytes.clone();
    let count: ByteCounter = Box::new(move |bytes: &[u8]| {
        counted.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    });
    let mut reader = ClientReader::new(InspectReader::new(read, count));
    let mut writer = FrameWriter::<_, GatewayFrame>::new(write);
    let Opened { session, secret, received, upload_log, resume_from, number } =
        match handshake(&mut reader, &shared, peer).await {
            Ok(opened) => opened,
            Err(e) => {
                if let Some(frame) = error_frame(&e) {
                    let _ = writer.send(&frame).await;
                }
                return Err(e.into());
            }
        };
    let resumed = !resume_from.is_empty() || !received.is_empty();
    let received_streams = received.len();
    let results_queue = shared.topology.results_queue(session);
    let opened = async {
        let channel = shared.connection.create_channel().await.map_err(SessionError::from)?;
        channel.basic_qos(RESULTS_IN_FLIGHT, BasicQosOptions::default()).await?;
        if number.resumed {
            // A resumed session's results queue must still be there: declared anew it would be empty, and the
            // session would wait forever for results that are gone. Unless the client has them all: the
            // session ended (its queue deleted) and the gateway died before it could say Done.
            if !amqp::queue_exists(&shared.connection, &results_queue).await? {
                if has_every_result(&shared.topology, &received) {
                    return Ok(None);
                }
                return Err(refuse(ErrorCode::ResultsLost, format!("the results of session {session} are gone")));
            }
        } else {
            let expires = crate::lease::results_queue_expiry(shared.lease);
            amqp::declare_expiring(&channel, &shared.topology, &results_queue, expires).await?;
        }
        let consumer = channel
            .basic_consume(
                results_queue.as_str().into(),
                "gateway".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Some((channel, consumer)))
    };
    let (channel, mut consumer) = match opened.await {
        Ok(Some(opened)) => opened,
        Ok(None) => {
            UploadLog::remove(&shared.state_dir, session);
            shared.release(session, number.id);
            let _ = writer.send(&GatewayFrame::Welcome { session, secret, resume_from: Vec::new() }).await;
            let _ = writer.send(&GatewayFrame::Done).await;
            info!(%session, "the session had ended before its client heard Done: done now");
            return Ok(());
        }
        Err(e) => {
            if let Some(frame) = error_frame(&e) {
                let _ = writer.send(&frame).await;
            }
            return abandon(session, number.id, &shared, e, resumed);
        }
    };
    info!(%session, resumed, received_streams, "session opened");

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
    // Whether the client sent any input on this connection (a session that never did gives its slot back soon).
    let uploaded = AtomicBool::new(resumed);
    let outcome = {
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let reading = Reading { reader: &mut reader, bytes: &received_bytes };
        let input = receive_input(reading, session, &shared, acks_tx, upload_log, resume_from, &uploaded);
        let results = forward_results(&mut consumer, session, &shared, received, frames_tx.clone(), acks_rx);
        tokio::pin!(input, results);
        tokio::select! {
            biased;
            // A resume of this session on a newer connection: this one is stale (its client gave it up) and ends
            // at once, its unacked results going back to the queue for the newer one.
            () = number.replaced.cancelled() => {
                Err(SessionError::Gone("a resume on a newer connection replaced this one".to_owned()))
            }
            // The results side failing is never the client's fault: it is not told why, only loses the
            // connection, and resumes.
            done = &mut results => done,
            ended = &mut input => match ended {
                Ok(()) => Err(SessionError::Gone("the client left before its results".to_owned())),
                Err(e) => {
                    if let Some(frame) = error_frame(&e) {
                        let _ = frames_tx.send(frame);
                    }
                    Err(e)
                }
            },
        }
        // Both halves of the session end here, with the frame senders they hold: the client's connection closes
        // as soon as the writer has sent what is queued, so a client whose session failed on either side hears
        // it at once (and resumes), instead of a silent socket for the whole grace.
    };
    if outcome.is_ok() {
        // The queue's deletion cancels the consumer (the broker says so); the channel closes below.
        // Clean up first, then say Done: a client that misses the Done (this gateway dying right here) resumes,
        // hears `UnknownSession`, and knows from the query ends it acked that it has everything.
        channel.queue_delete(results_queue.as_str().into(), QueueDeleteOptions::default()).await?;
        crate::failpoint!("gateway-between-cleanups");
        UploadLog::remove(&shared.state_dir, session);
        crate::failpoint!("gateway-before-done");
        let _ = frames_tx.send(GatewayFrame::Done);
    }
    drop(frames_tx);
    let mut writing = writing;
    if tokio::time::timeout(std::time::Duration::from_secs(1), &mut writing).await.is_err() {
        writing.abort(); // a client that does not read: its connection goes anyway
    }
    drop(reader);
    // Unacked results go back to the queue, for a resume.
    amqp::close_consuming(&channel, consumer, "session ended").await;
    match outcome {
        Ok(()) => {
            shared.release(session, number.id);
            info!(%session, "session complete: every result is with its client");
            Ok(())
        }
        Err(e) => abandon(session, number.id, &shared, e, uploaded.load(Ordering::Relaxed)),
    }
}

/// A session whose connection ended without its results: it waits the grace for a resume, then, if none came,
/// is purged from every node. That happens apart from the connection, which ends at once and gives its place
/// back (`limits::Connections`): a client that lost a few connections in a row would otherwise find every place
/// of its address held by the graces of its own earlier connections, and be refused. Returns `e`, why the
/// connection ended.
fn abandon(
    session: SessionId,
    number: u64,
    shared: &Arc<Shared>,
    e: SessionError,
    uploaded: bool,
) -> anyhow::Result<()> {
    let expired = matches!(e, SessionError::Refused { code: ErrorCode::ResultsLost, .. });
    // A session whose client sent nothing but its Hello cost the client nothing: its slot is given back soon.
    let grace = if uploaded { shared.grace } else { shared.limits.empty_session_grace.min(shared.grace) };
    if !expired {
        warn!(%session, error = %e, ?grace, uploaded, "connection lost; the session waits for a resume");
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        if !expired {
            tokio::time::sleep(grace).await;
        }
        if shared.begin_purge(session, Some(number)) {
            purge_until_done(session, &shared).await;
            shared.end_purge(session);
        }
    });
    Err(e.into())
}

/// A session opened by a handshake.
struct Opened {
    session: SessionId,
    secret: u128,
    /// The results the client already has (on a resume).
    received: Vec<ReceivedStream>,
    upload_log: UploadLog,
    /// Batches per file kind already durably in the pipeline (on a resume).
    resume_from: BTreeMap<FileKind, u64>,
    /// The connection's claim on the session.
    number: Claim,
}

/// A connection's claim on its session, from [`Shared::claim`], held for as long as the connection serves it.
#[derive(Debug)]
pub(super) struct Claim {
    pub id: u64,
    pub resumed: bool,
    /// Cancelled when a newer connection (a resume) takes the session over: this one must end.
    pub replaced: tokio_util::sync::CancellationToken,
    /// Dropped when the connection ends, which tells a resume waiting to take over ([`Shared::take_over`]).
    pub _ended: tokio::sync::watch::Sender<()>,
}

/// The first frame: `Hello` opens a new session (within the session limit), `Resume` reopens one with its
/// secret, unless it is being purged. Anything else, or nothing within the handshake timeout, ends the
/// connection.
async fn handshake(reader: &mut ClientReader, shared: &Shared, peer: IpAddr) -> Result<Opened, SessionError> {
    let first = tokio::time::timeout(shared.limits.handshake_timeout, reader.next()).await.map_err(|_| {
        refuse(ErrorCode::Protocol, format!("no handshake within {:?}", shared.limits.handshake_timeout))
    })?;
    match first? {
        ClientFrame::Hello => {
            let (session, secret) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4().as_u128());
            // Within the gateway's and the address's session limits (`Busy` otherwise), then made durable.
            let number = shared.claim(session, secret, false, peer)?;
            let log = UploadLog::create(&shared.state_dir, session, secret).inspect_err(|_| {
                shared.release(session, number.id);
            })?;
            Ok(Opened { session, secret, received: Vec::new(), upload_log: log, resume_from: BTreeMap::new(), number })
        }
        ClientFrame::Resume { session, secret, received } => {
            // Before the upload log is read: the connection replaced may be writing to it still.
            shared.take_over(session, secret).await;
            let refused = |code, why: &str| {
                warn!(%session, why, "resume refused");
                Err(refuse(code, format!("{why} {session}")))
            };
            match UploadLog::resume(&shared.state_dir, session)? {
                None => refused(ErrorCode::UnknownSession, "unknown session"),
                Some((_, recovered)) if recovered.secret != Some(secret) => {
                    refused(ErrorCode::WrongSecret, "wrong secret for session")
                }
                Some((_, recovered)) if recovered.purging => {
                    refused(ErrorCode::SessionExpired, "abandoned and being purged: session")
                }
                Some((log, recovered)) => {
                    // Claimed after the log was read: a purge that began in between refuses the claim.
                    let number = shared.claim(session, secret, true, peer)?;
                    Ok(Opened { session, secret, received, upload_log: log, resume_from: recovered.done, number })
                }
            }
        }
        other => Err(refuse(ErrorCode::Protocol, format!("expected Hello or Resume, got {}", frame_name(&other)))),
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

/// A client's frames, with the bytes read so far.
struct Reading<'a> {
    reader: &'a mut ClientReader,
    bytes: &'a AtomicU64,
}

impl Reading<'_> {
    /// The next frame while the client uploads: refused only when the connection moved fewer than
    /// [`MIN_UPLOAD_PROGRESS`] bytes within a whole `timeout` (a stalled client, or half a frame sent and then
    /// nothing), however long the frame takes: a client on a slow link keeps its session.
    async fn next_uploaded(&mut self, timeout: std::time::Duration) -> Result<Result<ClientFrame, FrameError>, String> {
        let next = self.reader.next();
        tokio::pin!(next);
        let mut seen = self.bytes.load(Ordering::Relaxed);
        loop {
            tokio::select! {
                frame = &mut next => return Ok(frame),
                _ = tokio::time::sleep(timeout) => {
                    let now = self.bytes.load(Ordering::Relaxed);
                    if now.saturating_sub(seen) < MIN_UPLOAD_PROGRESS {
                        return Err(format!("under {MIN_UPLOAD_PROGRESS} bytes within {timeout:?} during the upload"));
                    }
                    seen = now;
                }
            }
        }
    }
}

/// Reads the client's batches, EOFs and acks until the client closes the connection. Batches are published
/// with confirms pipelined; an EOF is published once everything of its kind is confirmed.
async fn receive_input(
    mut reading: Reading<'_>,
    session: SessionId,
    shared: &Shared,
    acks: mpsc::UnboundedSender<u64>,
    mut upload_log: UploadLog,
    resume_from: BTreeMap<FileKind, u64>,
    uploaded: &AtomicBool,
) -> Result<(), SessionError> {
    let topology = &shared.topology;
    let mut upload = Upload::new(session, resume_from, PROGRESS_EVERY);
    let mut in_flight: VecDeque<PublisherConfirm> = VecDeque::new();
    loop {
        // While the client uploads, its bytes must keep coming; once every kind has ended, the client only acks
        // results, which may be a long time coming.
        let frame = if !upload.all_ended() {
            reading.next_uploaded(shared.limits.frame_timeout).await.map_err(|why| refuse(ErrorCode::Protocol, why))?
        } else {
            reading.reader.next().await
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match frame {
            ClientFrame::Hello | ClientFrame::Resume { .. } => {
                return Err(refuse(ErrorCode::Protocol, "a second handshake"));
            }
            ClientFrame::Ack { upto } => {
                let _ = acks.send(upto);
            }
            ClientFrame::Rows { kind, seq, batch } => {
                uploaded.store(true, Ordering::Relaxed);
                let rows = batch.len();
                let steps = upload.rows(topology, kind, seq, batch).map_err(|m| refuse(ErrorCode::Protocol, m))?;
                debug!(%session, sender = %GATEWAY, %kind, seq, rows, "client batch");
                perform(steps, shared, &mut in_flight, &mut upload_log).await?;
            }
            ClientFrame::EndOfFile { kind, batches } => {
                uploaded.store(true, Ordering::Relaxed);
                let steps = upload.end_of_file(topology, kind, batches).map_err(|m| refuse(ErrorCode::Protocol, m))?;
                perform(steps, shared, &mut in_flight, &mut upload_log).await?;
                info!(%session, %kind, batches, "input file kind ended");
            }
        }
    }
}

/// Carries out an upload's steps on the broker and the upload log, in their order.
async fn perform(
    steps: Vec<UploadStep>,
    shared: &Shared,
    in_flight: &mut VecDeque<PublisherConfirm>,
    upload_log: &mut UploadLog,
) -> Result<(), SessionError> {
    for step in steps {
        match step {
            UploadStep::Publish { queue, envelope, check_room } => {
                if check_room {
                    shared.flow.wait_for_room(&queue).await?;
                }
                in_flight.push_back(shared.publisher.publish(&queue, &envelope).await?);
            }
            UploadStep::Throttle => {
                crate::failpoint!("gateway-mid-upload");
                let _waiting = shared.counters.waiting_on_broker();
                while in_flight.len() > CONFIRMS_IN_FLIGHT {
                    amqp::await_confirms(in_flight.pop_front().into_iter().collect()).await?;
                }
            }
            UploadStep::ConfirmAll => {
                // Timed, for the heartbeat: a gateway stuck on confirms that never come is restarted.
                let _waiting = shared.counters.waiting_on_broker();
                amqp::await_confirms(in_flight.drain(..).collect()).await?
            }
            UploadStep::Record { kind, batches } => upload_log.record(kind, batches)?,
        }
    }
    Ok(())
}

/// Forwards the session's results as numbered frames and acks each message once the client acked its frame.
/// Returns when the client has acked everything up to and including the last result of the session.
async fn forward_results(
    consumer: &mut lapin::Consumer,
    session: SessionId,
    shared: &Shared,
    received: Vec<ReceivedStream>,
    frames: mpsc::UnboundedSender<GatewayFrame>,
    mut acks: mpsc::UnboundedReceiver<u64>,
) -> Result<(), SessionError> {
    let (topology, publisher) = (&shared.topology, &shared.publisher);
    let dead_letters = &topology.dead_letter_queue("gateway");
    let results_queue = &topology.results_queue(session);
    let mut forward: Forward<Acker> = Forward::new(topology, received);
    // Since when frames wait for the client's ack with none coming: a client that reads nothing is closed.
    let mut unread_since: Option<tokio::time::Instant> = None;
    loop {
        for frame in forward.query_ends() {
            if let GatewayFrame::QueryDone { query, .. } = &frame {
                info!(%session, %query, "query complete");
            }
            frames.send(frame)?;
        }
        if forward.finished() {
            return Ok(());
        }
        match (forward.unacked(), unread_since) {
            (false, _) => unread_since = None,
            (true, None) => unread_since = Some(tokio::time::Instant::now()),
            (true, Some(_)) => {}
        }
        let read_timeout = shared.limits.read_timeout;
        let unread = unread_since.map(|since| since + read_timeout);
        tokio::select! {
            _ = async { tokio::time::sleep_until(unread.expect("waited on only when set")).await }, if unread.is_some() => {
                let message = format!("the client acked nothing of what it was sent for {read_timeout:?}");
                return Err(SessionError::Gone(message));
            }
            // Past its window of unacked bytes, a client is sent nothing more until it acks.
            delivery = consumer.next(), if forward.has_room() => {
                let Some(delivery) = delivery else {
                    return Err(BrokerError::Lost("the results consumer was cancelled".to_owned()).into());
                };
                let delivery = delivery?;
                crate::failpoint_error!("gateway-results-fail");
                match forward.message(&delivery.data, delivery.acker) {
                    Handling::Send(frame) => {
                        frames.send(frame)?;
                        crate::failpoint!("gateway-results-unacked");
                    }
                    Handling::Drop(acker, id, admission) => {
                        debug!(%session, sender = %id.sender, seq = id.seq, ?admission, "result not forwarded");
                        acker.ack(BasicAckOptions::default()).await?;
                    }
                    Handling::Poison(acker, why) => {
                        // Set aside, never redelivered: the session goes on without it.
                        warn!(%session, reason = %why, "poison message on a results queue set aside");
                        let set_aside = crate::dead_letters::set_aside(publisher, dead_letters, results_queue, &delivery.data, &why);
                        amqp::await_confirms(vec![set_aside.await?]).await?;
                        acker.ack(BasicAckOptions::default()).await?;
                    }
                }
            }
            upto = acks.recv() => {
                let Some(upto) = upto else { return Err(SessionError::Gone("the client connection ended".to_owned())) };
                // The client reads: its clock starts again.
                unread_since = None;
                for acker in forward.client_acked(upto) {
                    acker.ack(BasicAckOptions::default()).await?;
                }
            }
        }
    }
}

/// Purges `session` ([`purge`]), trying again after each failure ([`super::purge::retry_after`]) for as long as
/// this gateway lives: until it is done the session keeps its upload log, so this gateway announces it and the
/// stages keep it, and a gateway restarted meanwhile finishes the purge its log records.
pub(super) async fn purge_until_done(session: SessionId, shared: &Shared) {
    let mut failures = 0;
    loop {
        let Err(e) = purge(session, shared).await else { return };
        failures += 1;
        let Some(wait) = super::purge::retry_after(failures) else {
            warn!(%session, error = %e, "could not purge an abandoned session");
            return;
        };
        warn!(%session, error = %e, ?wait, failures, "could not purge an abandoned session: trying again");
        tokio::time::sleep(wait).await;
    }
}

/// Tells every stage replica to drop `session` (state, files), and deletes its results queue, in the order of
/// [`super::purge::steps`]. The purge is recorded in the session's upload log first, so a gateway restarted
/// halfway finishes it at once, and a resume arriving meanwhile is refused.
pub(super) async fn purge(session: SessionId, shared: &Shared) -> anyhow::Result<()> {
    let Some((mut log, _)) = UploadLog::resume(&shared.state_dir, session)? else {
        return Ok(()); // ended or purged already
    };
    let mut confirms = Vec::new();
    for step in super::purge::steps(&shared.topology, session) {
        match step {
            PurgeStep::Record => {
                log.record_purging()?;
                crate::failpoint_delay!("gateway-purging");
            }
            PurgeStep::Publish { queue, envelope } => confirms.push(shared.publisher.publish(&queue, &envelope).await?),
            PurgeStep::ConfirmAll => {
                let _waiting = shared.counters.waiting_on_broker();
                crate::failpoint_error!("purge-fails");
                amqp::await_confirms(std::mem::take(&mut confirms)).await?;
            }
            PurgeStep::DeleteResults { queue } => {
                let channel = shared.connection.create_channel().await?;
                channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
            }
            PurgeStep::RemoveLog => UploadLog::remove(&shared.state_dir, session),
        }
    }
    info!(%session, "abandoned session purged from every node");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_are_announced_with_their_code() {
        assert!(error_frame(&SessionError::from(BrokerError::Nacked)).is_none());
        assert!(error_frame(&SessionError::Gone("the client left".into())).is_none());
        assert!(error_frame(&SessionError::from(std::io::Error::other("disk full"))).is_none());
        let closed = SessionError::from(FrameError::Closed);
        assert!(matches!(closed, SessionError::Gone(_)), "{closed:?}");
        let reset = SessionError::from(FrameError::Io(std::io::ErrorKind::ConnectionReset.into()));
        assert!(matches!(reset, SessionError::Gone(_)), "{reset:?}");
        let oversized = error_frame(&SessionError::from(FrameError::Io(std::io::ErrorKind::InvalidData.into())));
        assert!(matches!(oversized, Some(GatewayFrame::Error { code: ErrorCode::Protocol, .. })));
        let garbage = error_frame(&SessionError::from(FrameError::Empty));
        assert!(matches!(garbage, Some(GatewayFrame::Error { code: ErrorCode::Protocol, .. })));
        let busy = error_frame(&refuse(ErrorCode::Busy, "full"));
        assert!(matches!(busy, Some(GatewayFrame::Error { code: ErrorCode::Busy, .. })));
    }
}
