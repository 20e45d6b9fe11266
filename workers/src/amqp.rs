//! The broker: connecting with a clear error, declaring the topology's queues, publishing with confirms.

use crate::heartbeat::Counters;
use crate::message::Envelope;
use crate::topology::{QueueType, Topology};
use lapin::options::{
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, PublisherConfirm};
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
}

/// Connects to the broker, naming the URL and how to start RabbitMQ if it cannot.
pub async fn connect(url: &str, name: &str) -> Result<Connection, BrokerError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let attempt = tokio::time::timeout(Duration::from_secs(10), Connection::connect(url, properties)).await;
    match attempt {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(BrokerError::Unreachable { url: url.to_owned(), reason: e.to_string() }),
        Err(_) => Err(BrokerError::Unreachable { url: url.to_owned(), reason: "no answer in 10 s".into() }),
    }
}

/// How long a node keeps trying to reach the broker before it gives up (and its supervisor restarts it).
pub const NODE_PATIENCE: Duration = Duration::from_secs(300);

/// Connects like [`connect`], but retries with exponential backoff (100 ms doubling to 5 s) for up to
/// `patience`: what a node does at start, so a broker restart is waited out instead of crash-looping.
pub async fn connect_patiently(url: &str, name: &str, patience: Duration) -> Result<Connection, BrokerError> {
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match connect(url, name).await {
            Ok(connection) => return Ok(connection),
            Err(e) if started.elapsed() + delay < patience => {
                tracing::warn!(node = name, error = %e, retry_in = ?delay, "broker unreachable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Declares every queue of the topology (idempotent: every node does it at start, so start order is free).
pub async fn declare_queues(channel: &Channel, topology: &Topology) -> Result<(), BrokerError> {
    for queue in topology.all_queues().into_iter().chain(topology.dead_letter_queues()) {
        declare_durable(channel, topology, &queue).await?;
    }
    Ok(())
}

/// Declares one durable queue of the topology, of its queue type (`x-queue-type`). Every declarer passes the
/// same arguments, or the broker refuses the declaration (and closes the channel).
pub async fn declare_durable(channel: &Channel, topology: &Topology, queue: &str) -> Result<(), BrokerError> {
    let mut arguments = FieldTable::default();
    if topology.queue_type == QueueType::Quorum {
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    }
    let options = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(queue.into(), options, arguments).await?;
    Ok(())
}

/// Deletes every queue of the topology (a cluster that stops cleanly leaves nothing on the broker).
pub async fn delete_queues(channel: &Channel, topology: &Topology) -> Result<(), BrokerError> {
    for queue in topology.all_queues().into_iter().chain(topology.dead_letter_queues()) {
        channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
    }
    Ok(())
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
    for queue in topology.dead_letter_queues() {
        let node = queue.rsplit('.').next().unwrap_or(&queue).to_owned();
        counts.insert(node, queue_depth(channel, &queue).await?);
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
        self.publish_bytes(queue, &envelope.encode()).await
    }

    /// Publishes bytes as they are (a poison message set aside, say).
    pub async fn publish_bytes(&self, queue: &str, payload: &[u8]) -> Result<PublisherConfirm, BrokerError> {
        self.counters.published(payload.len());
        let properties = BasicProperties::default().with_delivery_mode(2);
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
