//! The broker: connecting with a clear error, declaring the topology's queues, publishing with confirms.

use crate::metrics::Counters;
use crate::topology::{QueueType, Topology};
use coffee_model::node::StageKind;
use coffee_model::wire::{Body, Envelope};
use lapin::options::{
    BasicCancelOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, PublisherConfirm};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The broker used when `AMQP_URL` is not set.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "cannot reach RabbitMQ at {url}: {reason}. Start it with `rabbitmq-server -detached` \
         (install it with `apt-get install -y rabbitmq-server`), or set AMQP_URL to a running broker"
    )]
    Unreachable { url: String, reason: String },
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused (nacked) a published message")]
    Nacked,
    /// The broker went away (a connection or channel closed, a consumer cancelled): the node exits and its
    /// supervisor starts it again at once, to wait for the broker (see [`LOST_BROKER_EXIT_CODE`]).
    #[error("lost the broker: {0}")]
    Lost(String),
    /// The broker refused a queue of the topology for good (see [`is_refusal`]): the node exits with
    /// [`REFUSED_EXIT_CODE`] and stays down until a person acts.
    #[error(
        "the broker refuses queue {queue}: {reason}. A queue declared with other arguments (by an older build, or \
         another queue type) is deleted with `coffee cluster down` (which deletes the namespace's queues); a user \
         without permission needs `rabbitmqctl set_permissions`. Then restart this node"
    )]
    Refused { queue: String, reason: String },
}

/// Whether an error is the broker's failure rather than the node's or its peer's.
pub fn is_broker_failure(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.is::<BrokerError>() || cause.is::<lapin::Error>())
}

/// The exit code of a node that lost the broker (`EX_TEMPFAIL`): a supervisor restarts such a node at once,
/// whereas a crash or a kill is left to the health monitors first.
pub const LOST_BROKER_EXIT_CODE: i32 = 75;

/// The exit code of a node refused for good (`EX_CONFIG`): starting it again would meet the same refusal, so
/// its supervisor leaves it down and says why until someone restarts it by hand. See [`is_refusal`].
pub const REFUSED_EXIT_CODE: i32 = 78;

/// Whether the broker refused a declaration for good rather than failed: 403 (access refused: the user's
/// permissions), 406 (precondition failed: a queue declared with other arguments, as after an upgrade) or 530
/// (not allowed: the vhost). Retrying meets the same answer until a person acts. Only a declaration's answer
/// counts: a 403 on `basic.consume` is a classic queue's exclusive consumer, which goes away with its process.
pub fn is_refusal(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
    let lapin::ErrorKind::ProtocolError(error) = e.kind() else { return false };
    matches!(
        error.kind(),
        AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED | AMQPSoftError::PRECONDITIONFAILED)
            | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)
    )
}

/// The brokers named by an `AMQP_URL`: one URL, or several separated by commas (the nodes of one RabbitMQ
/// cluster, any of which serves every queue).
pub fn broker_urls(spec: &str) -> Vec<&str> {
    spec.split(',').map(str::trim).filter(|url| !url.is_empty()).collect()
}

/// `urls` (one AMQP URL or several, comma-separated) with each password replaced by `***`: what a log, an error,
/// a page or a metric may show of them.
pub fn redacted(urls: &str) -> String {
    broker_urls(urls).into_iter().map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_owned() };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// Refuses classic queues on several brokers. A classic queue lives on the broker node that declared it:
/// while that node is down, RabbitMQ drops what is published to the queue and still confirms it (checked on
/// 3.10 with a three-node cluster), and refuses to declare it or consume from it. Inputs would be lost though
/// confirmed, so several brokers need quorum queues, which every node holds.
pub fn check_queue_type(brokers: usize, queue_type: QueueType) -> Result<(), String> {
    let refused = brokers > 1
        && queue_type == QueueType::Classic
        && !crate::planted::active(crate::planted::Bug::ClassicQueuesOnSeveralBrokers);
    if refused {
        return Err(format!(
            "{brokers} brokers need quorum queues (--queue-type quorum, COFFEE_QUEUE_TYPE=quorum): a classic queue \
             lives on the one broker node that declared it, and while that node is down RabbitMQ drops what is \
             published to it, yet confirms it"
        ));
    }
    Ok(())
}

/// Which of several brokers this process tries first: the one that answered last (a process sticks to a broker
/// while it lives), else [`spread_pick`].
static PREFERRED_BROKER: AtomicUsize = AtomicUsize::new(usize::MAX);

/// A number that differs from process to process, so that the nodes of a cluster spread over its brokers: the
/// process id and the host name, hashed together (every container's process is pid 1, but each container has a
/// host name of its own).
fn spread_pick() -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::process::id().hash(&mut hasher);
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().hash(&mut hasher);
    hasher.finish() as usize
}

/// Connects to the broker, or to the first of several (`url,url,...`) that answers, starting with the one this
/// process used last and going round; names every URL and how to start RabbitMQ if none answers.
pub async fn connect(urls: &str, name: &str) -> Result<Connection, BrokerError> {
    let brokers = broker_urls(urls);
    if brokers.is_empty() {
        return Err(BrokerError::Unreachable { url: redacted(urls), reason: "no broker URL given".into() });
    }
    let first = match PREFERRED_BROKER.load(Ordering::Relaxed) {
        usize::MAX => spread_pick(),
        preferred => preferred,
    } % brokers.len();
    let mut reasons = Vec::new();
    for i in 0..brokers.len() {
        let at = (first + i) % brokers.len();
        match connect_one(brokers[at], name).await {
            Ok(connection) => {
                if i > 0 || brokers.len() > 1 {
                    tracing::info!(node = name, broker = redact_one(brokers[at]), "connected to the broker");
                }
                PREFERRED_BROKER.store(at, Ordering::Relaxed);
                return Ok(connection);
            }
            Err(reason) if brokers.len() == 1 => reasons.push(reason),
            Err(reason) => reasons.push(format!("{}: {reason}", redact_one(brokers[at]))),
        }
    }
    // Next time, start with the broker after the one tried first.
    PREFERRED_BROKER.store((first + 1) % brokers.len(), Ordering::Relaxed);
    Err(BrokerError::Unreachable { url: redacted(urls).replace(',', ", "), reason: reasons.join("; ") })
}

/// The AMQP heartbeat asked for when a URL names none (`?heartbeat=N` overrides it). RabbitMQ proposes 60 s, and
/// a connection whose peer vanished without a word (a host cut off, or killed behind a partition) then lives on
/// the broker for a minute or two, holding its replica's lock and its unacked deliveries: a partition of 30 s
/// between hosts cost sessions over 100 s more. At 10 s the broker lets such a connection go within about 20 s.
pub const HEARTBEAT_SECS: u16 = 10;

async fn connect_one(url: &str, name: &str) -> Result<Connection, String> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let mut uri: lapin::uri::AMQPUri = url.parse()?;
    uri.query.heartbeat.get_or_insert(HEARTBEAT_SECS);
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(uri, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer in {CONNECT_TIMEOUT:?}")),
    }
}

/// How long one attempt to reach a broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest wait between two attempts of [`connect_patiently`].
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Connects like [`connect`], retrying with exponential backoff (100 ms doubling to 2 s) for as long as it takes:
/// what a node does at every start, so a broker outage of any length is waited out rather than crash-looped. It
/// warns at the first failure and then every 30 s.
pub async fn connect_patiently(urls: &str, name: &str) -> Connection {
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        match connect(urls, name).await {
            Ok(connection) => {
                if warned.is_some() {
                    tracing::info!(node = name, waited = ?started.elapsed(), "the broker is back");
                }
                return connection;
            }
            Err(e) => {
                if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) {
                    tracing::warn!(node = name, error = %e, waited = ?started.elapsed(), "broker unreachable; waiting for it");
                    warned = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

/// A node's broker connection: reached like [`connect_patiently`], then watched for the rest of the process's
/// life by [`exit_when_lost`].
pub async fn connect_node(urls: &str, name: &str) -> Connection {
    let connection = connect_patiently(urls, name).await;
    exit_when_lost(connection.status().clone(), name);
    connection
}

/// How often a node looks at its connection's state.
const LOSS_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Ends the process with [`LOST_BROKER_EXIT_CODE`] within [`LOSS_CHECK_EVERY`] of its connection failing,
/// whatever the node is awaiting. A node cannot count on learning of the loss from the call it awaits: lapin
/// does not settle every pending future when the connection dies. An ack sent as the connection failed was
/// seen waiting forever, so the node hung alive, where no supervisor restarts it (a proxy outage, mid-run).
/// Exiting here is a crash at an arbitrary instruction, which every node survives by design: its state is
/// rebuilt from its disk and its unacked inputs come again. Only for node processes, whose supervisor
/// restarts them; a process that closes its connection on purpose must not use it.
fn exit_when_lost(status: lapin::ConnectionStatus, name: &str) {
    let name = name.to_owned();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LOSS_CHECK_EVERY);
        loop {
            tick.tick().await;
            if !status.connected() {
                tracing::error!(node = %name, "lost the broker: exiting to be restarted");
                std::process::exit(LOST_BROKER_EXIT_CODE);
            }
        }
    });
}

/// Cancels `consumer`, then closes its channel, each step awaited (the consumer's unacked deliveries go back to
/// its queue). Left to lapin's drop handlers, the two race: a dropped consumer sends `basic.cancel` while the
/// channel's close is under way, and lapin 4 takes a cancel that meets a closing channel for an error of the
/// whole connection. A client's disconnect once took the gateway's broker connection down that way, and the
/// gateway with it. A broker that already cancelled the consumer (its queue deleted) answers the cancel anyway.
pub async fn close_consuming(channel: &Channel, consumer: lapin::Consumer, reason: &str) {
    if channel.status().connected() {
        if let Err(e) = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await {
            tracing::debug!(error = %e, "cancelling a consumer");
        }
        if let Err(e) = channel.close(200, reason.into()).await {
            tracing::debug!(error = %e, "closing a channel");
        }
    }
    drop(consumer);
}

/// Poison messages a dead-letter queue keeps: past this, the oldest are dropped to make room.
pub const DEAD_LETTER_CAP: u32 = 10_000;

/// Declares every queue of the topology (idempotent: every node does it at start, so start order is free).
pub async fn declare_queues(channel: &Channel, topology: &Topology) -> Result<(), BrokerError> {
    for (stage, replica) in topology.stage_replicas() {
        declare_input(channel, topology, stage, replica).await?;
    }
    declare_durable(channel, topology, &topology.control_queue()).await?;
    for queue in topology.dead_letter_queues() {
        declare_with(channel, queue_arguments(topology, Some(DEAD_LETTER_CAP)), &queue).await?;
    }
    Ok(())
}

/// The arguments of a durable queue of the topology: its queue type (`x-queue-type`), and for a bounded one the
/// most messages it holds, the oldest dropped first (`x-max-length`, `x-overflow: drop-head`). Every declarer
/// passes the same arguments, or the broker refuses the declaration (and closes the channel).
fn queue_arguments(topology: &Topology, max_length: Option<u32>) -> FieldTable {
    let mut arguments = FieldTable::default();
    if topology.queue_type == QueueType::Quorum {
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    }
    if let Some(max) = max_length {
        arguments.insert("x-max-length".into(), AMQPValue::LongUInt(max));
        arguments.insert("x-overflow".into(), AMQPValue::LongString("drop-head".into()));
    }
    arguments
}

async fn declare_with(channel: &Channel, arguments: FieldTable, queue: &str) -> Result<(), BrokerError> {
    let options = QueueDeclareOptions { durable: true, ..Default::default() };
    match channel.queue_declare(queue.into(), options, arguments).await {
        Ok(_) => Ok(()),
        Err(e) if is_refusal(&e) => Err(BrokerError::Refused { queue: queue.to_owned(), reason: e.to_string() }),
        Err(e) => Err(e.into()),
    }
}

/// Declares the input queue of a stage's replica: durable, of the topology's type, and under quorum queues with
/// the topology's delivery limit, past which the broker dead-letters an input into the stage's dead-letter
/// queue (where an operator sees it and can send it back) rather than dropping it.
pub async fn declare_input(
    channel: &Channel,
    topology: &Topology,
    stage: StageKind,
    replica: u16,
) -> Result<(), BrokerError> {
    let mut arguments = queue_arguments(topology, None);
    if topology.queue_type == QueueType::Quorum {
        arguments.insert("x-delivery-limit".into(), AMQPValue::LongUInt(topology.delivery_limit));
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        let dead_letters = topology.dead_letter_queue(stage.name());
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(dead_letters.into()));
    }
    declare_with(channel, arguments, &topology.queue(stage, replica)).await
}

/// Declares one durable queue of the topology (unbounded), of its queue type.
pub async fn declare_durable(channel: &Channel, topology: &Topology, queue: &str) -> Result<(), BrokerError> {
    declare_with(channel, queue_arguments(topology, None), queue).await
}

/// Declares a durable queue that the broker deletes once nobody has consumed from it for `expires` (RabbitMQ's
/// `x-expires`): a session's results queue, which would otherwise outlive a gateway that vanished with its
/// folder (nobody left to delete it).
pub async fn declare_expiring(
    channel: &Channel,
    topology: &Topology,
    queue: &str,
    expires: std::time::Duration,
) -> Result<(), BrokerError> {
    let mut arguments = queue_arguments(topology, None);
    let ms = u32::try_from(expires.as_millis()).unwrap_or(u32::MAX).max(1);
    arguments.insert("x-expires".into(), AMQPValue::LongUInt(ms));
    declare_with(channel, arguments, queue).await
}

/// Deletes every queue of the topology, the replicas' owner records included (a cluster that stops cleanly
/// leaves nothing on the broker).
pub async fn delete_queues(channel: &Channel, topology: &Topology) -> Result<(), BrokerError> {
    let queues = topology.all_queues().into_iter().chain(topology.dead_letter_queues()).chain(topology.owner_queues());
    for queue in queues {
        channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
    }
    Ok(())
}

/// Whether `queue` exists (a passive declare on a channel of its own, which the broker closes if it does not).
pub async fn queue_exists(connection: &Connection, queue: &str) -> Result<bool, BrokerError> {
    let channel = connection.create_channel().await?;
    let options = QueueDeclareOptions { passive: true, durable: true, ..Default::default() };
    match channel.queue_declare(queue.into(), options, FieldTable::default()).await {
        Ok(_) => {
            let _ = channel.close(200, "checked".into()).await;
            Ok(true)
        }
        Err(e) if is_no_such_queue(&e) => Ok(false),
        // A queue that exists but cannot be reached now (its broker node down, its leader being elected) is a
        // broker failure, not a missing queue.
        Err(e) => Err(e.into()),
    }
}

/// Whether the broker answered that the queue does not exist (404 NOT_FOUND, "no queue ..."), rather than
/// that it cannot reach it (also 404, "home node ... is down or inaccessible").
fn is_no_such_queue(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
        if amqp.kind() == &AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)
            && amqp.get_message().as_str().contains("no queue"))
}

/// Whether the broker closed a channel with this channel-level error.
pub fn is_soft_error(e: &lapin::Error, which: AMQPSoftError) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.kind() == &AMQPErrorKind::Soft(which))
}

/// Messages waiting in `queue` (a passive declare: the queue must exist).
pub async fn queue_depth(channel: &Channel, queue: &str) -> Result<u32, BrokerError> {
    let options = QueueDeclareOptions { passive: true, durable: true, ..Default::default() };
    Ok(channel.queue_declare(queue.into(), options, FieldTable::default()).await?.message_count())
}

/// Poison messages set aside so far, per dead-letter queue: the stage's name (or `gateway`) and its depth.
pub async fn dead_letters(
    channel: &Channel,
    topology: &Topology,
) -> Result<std::collections::BTreeMap<String, u32>, BrokerError> {
    let mut counts = std::collections::BTreeMap::new();
    for (node, queue) in topology.dead_letter_queues_by_node() {
        counts.insert(node.to_owned(), queue_depth(channel, &queue).await?);
    }
    Ok(counts)
}

/// Empties every dead-letter queue; returns how many messages were dropped.
pub async fn purge_dead_letters(channel: &Channel, topology: &Topology) -> Result<u32, BrokerError> {
    let mut purged = 0;
    for queue in topology.dead_letter_queues() {
        purged += channel.queue_purge(queue.as_str().into(), Default::default()).await?;
    }
    Ok(purged)
}

/// Consumes `queue` as its only consumer, with `prefetch` unacked deliveries in flight: while another consumer
/// holds it exclusively (an older incarnation of the same node, whose connection the broker has not closed yet),
/// the broker refuses, and this waits and tries again.
pub async fn consume_exclusively(
    connection: &Connection,
    queue: &str,
    prefetch: u16,
    tag: &str,
) -> Result<(Channel, lapin::Consumer), BrokerError> {
    let mut waiting_since = None;
    loop {
        let channel = consumer_channel(connection, prefetch).await?;
        let options = lapin::options::BasicConsumeOptions { exclusive: true, ..Default::default() };
        match channel.basic_consume(queue.into(), tag.into(), options, FieldTable::default()).await {
            Ok(consumer) => {
                if let Some(since) = waiting_since {
                    tracing::info!(%queue, waited = ?std::time::Instant::elapsed(&since), "the other consumer left: consuming");
                }
                return Ok((channel, consumer));
            }
            Err(e) if is_soft_error(&e, AMQPSoftError::ACCESSREFUSED) => {
                if waiting_since.is_none() {
                    tracing::warn!(%queue, "another consumer holds this queue exclusively: waiting for it to go");
                    waiting_since = Some(std::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A consumer channel with `prefetch` unacked deliveries in flight.
pub async fn consumer_channel(connection: &Connection, prefetch: u16) -> Result<Channel, BrokerError> {
    let channel = connection.create_channel().await?;
    channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    Ok(channel)
}

/// Publishes envelopes as persistent messages with publisher confirms. Confirms are returned, not awaited, so
/// callers keep many in flight and await them only before acking the input that caused them.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    counters: Arc<Counters>,
}

impl Publisher {
    /// A publisher that counts what it sends in `counters` (reported by the node's heartbeat).
    pub async fn new(connection: &Connection, counters: Arc<Counters>) -> Result<Self, BrokerError> {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Publisher { channel, counters })
    }

    /// Whether its channel is still open: the broker closes a channel on a channel-level error (its connection
    /// may live on), after which every publish fails.
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    pub async fn publish(&self, queue: &str, envelope: &Envelope) -> Result<PublisherConfirm, BrokerError> {
        if let Body::Data(batch) = &envelope.body {
            self.counters.published_rows(batch.len());
        }
        self.publish_bytes(queue, &envelope.encode()).await
    }

    /// Publishes bytes as they are (a poison message set aside, say).
    pub async fn publish_bytes(&self, queue: &str, payload: &[u8]) -> Result<PublisherConfirm, BrokerError> {
        self.publish_bytes_with(queue, payload, BasicProperties::default()).await
    }

    /// [`Publisher::publish_bytes`] with message properties (headers, an id); always persistent.
    pub async fn publish_bytes_with(
        &self,
        queue: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<PublisherConfirm, BrokerError> {
        self.counters.published(payload.len());
        let properties = properties.with_delivery_mode(2);
        Ok(self
            .channel
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), payload, properties)
            .await?)
    }
}

/// Waits for every confirm; a nack is an error (the caller must not ack its input then).
pub async fn await_confirms(confirms: Vec<PublisherConfirm>) -> Result<(), BrokerError> {
    for confirm in confirms {
        if confirm.await?.is_nack() {
            return Err(BrokerError::Nacked);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_leave_a_url() {
        assert_eq!(redacted("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(
            redacted("amqp://u:p%40ss@a:1/v, amqps://u2:s3cret@b:2/v"),
            "amqp://u:***@a:1/v,amqps://u2:***@b:2/v"
        );
        assert_eq!(redacted("amqp://127.0.0.1:1/%2f"), "amqp://127.0.0.1:1/%2f", "no credentials");
        assert_eq!(redacted("amqp://user@host/v"), "amqp://user@host/v", "no password");
        assert_eq!(redacted("amqp://host/path@x"), "amqp://host/path@x", "an @ past the authority");
    }

    #[test]
    fn an_unreachable_broker_is_named_without_its_password() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let error =
            runtime.block_on(connect("amqp://coffee:s3cr3t@127.0.0.1:1/%2f,amqp://coffee:s3cr3t@127.0.0.1:2/%2f", "t"));
        let said = error.expect_err("nothing listens there").to_string();
        assert!(!said.contains("s3cr3t") && said.contains("coffee:***@127.0.0.1:1"), "{said}");
    }
}
