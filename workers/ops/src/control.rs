//! The orchestrator's command queue: health monitors ask the process that owns the nodes (`coffee cluster up`)
//! to restart one. A request names the incarnation (pid) it found silent, so a request that arrives after the
//! node was already restarted, or twice from two monitors that both believed they led, restarts nothing.

use coffee_engine::amqp::BrokerError;
use coffee_engine::topology::Topology;
use futures::{Stream, StreamExt};
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRequest {
    pub node: String,
    /// The process found silent; `None` when the node was never heard from.
    pub pid: Option<u32>,
    /// The monitor that asks.
    pub by: String,
}

/// Publishes a restart request (the queue is declared with the topology's queues).
pub async fn request_restart(
    channel: &Channel,
    topology: &Topology,
    request: &RestartRequest,
) -> Result<(), BrokerError> {
    let payload = serde_json::to_vec(request).expect("a request serializes");
    let queue = topology.control_queue();
    channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            &payload,
            BasicProperties::default(),
        )
        .await?;
    Ok(())
}

/// The restart requests of the namespace, as they come.
pub async fn requests(
    connection: &Connection,
    topology: &Topology,
) -> Result<impl Stream<Item = RestartRequest>, BrokerError> {
    let channel = connection.create_channel().await?;
    let options = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let consumer = channel
        .basic_consume(topology.control_queue().as_str().into(), "orchestrator".into(), options, FieldTable::default())
        .await?;
    Ok(consumer.filter_map(|delivery| async move { delivery.ok().and_then(|d| serde_json::from_slice(&d.data).ok()) }))
}
