//! One replica, one live consumer, one folder: what keeps two processes of a stage replica from both taking its
//! input, whatever the queue type and wherever they run.
//!
//! A lock on the replica's folder ([`crate::incarnation`]) keeps two processes on one folder apart, and a classic
//! queue refuses a second exclusive consumer. Neither holds across folders (another host, or a state folder set
//! apart) under quorum queues, which accept a second "exclusive" consumer (checked on RabbitMQ 3.10). Two
//! processes would then split the replica's input, each acking what the other never applies. So before a
//! replica publishes or consumes anything (the shell's first step, [`crate::runtime::Step::Claim`]):
//! 1. **The lock**: it declares the replica's lock queue exclusive. The broker lets one connection hold an
//!    exclusive queue at a time (405 RESOURCE_LOCKED to any other, cluster-wide) and deletes it when that
//!    connection closes, however the process ends. A process waits while another holds it. The replica
//!    consumes on the connection that holds its lock, so no two processes consume its queue at once; a process
//!    whose connection is gone can no longer ack anything, and exits.
//! 2. **The record**: under the lock, it reads which folder holds the replica's state from the replica's owner
//!    queue (one durable message, the folder's id: [`crate::state::NodeStore::folder_id`]), or records its own
//!    folder if none is recorded (the replica's first start). A process on another folder is refused: its
//!    folder is not the replica's state, and it must not serve it, not even the finals of sessions it finds in
//!    its folder.

use crate::amqp::{is_soft_error, BrokerError};
use crate::topology::{QueueType, Topology};
use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::protocol::AMQPSoftError;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use std::time::Duration;
use uuid::Uuid;

/// How often a process waiting for its replica's lock tries again.
const LOCK_RETRY: Duration = Duration::from_millis(500);

/// A quorum queue's delivery limit for an owner record: each read returns the record to its queue, which counts
/// as a delivery (RabbitMQ 4 drops a message past 20 by default). Set far beyond any number of starts.
const OWNER_DELIVERY_LIMIT: u32 = 1_000_000_000;

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// No folder was recorded (the replica's first start): this one is now.
    Recorded,
    /// This folder is the one recorded.
    Owner,
    /// Another folder holds the replica's state: this process must not serve it.
    Refused { owner: Uuid },
}

/// What a claim decides, given the folder recorded (if any) and this process's: the same rule for the runtime
/// and the simulator.
pub fn decide(recorded: Option<Uuid>, mine: Uuid) -> Claim {
    match recorded {
        None => Claim::Recorded,
        Some(owner) if owner == mine => Claim::Owner,
        Some(owner) => Claim::Refused { owner },
    }
}

/// Holds the replica's lock for as long as the returned channel's connection lives, waiting while another
/// connection holds it (a process of the replica elsewhere, or one that died and that the broker has not yet
/// seen die).
pub async fn hold_lock(connection: &Connection, queue: &str) -> Result<Channel, BrokerError> {
    let mut waiting_since = None;
    loop {
        let channel = connection.create_channel().await?;
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        match channel.queue_declare(queue.into(), options, FieldTable::default()).await {
            Ok(_) => {
                if let Some(since) = waiting_since {
                    tracing::info!(%queue, waited = ?std::time::Instant::elapsed(&since), "the replica's lock is free: holding it");
                }
                return Ok(channel);
            }
            Err(e) if is_soft_error(&e, AMQPSoftError::RESOURCELOCKED) => {
                if waiting_since.is_none() {
                    tracing::warn!(%queue, "another process of this replica holds its lock: waiting for it to go");
                    waiting_since = Some(std::time::Instant::now());
                }
                tokio::time::sleep(LOCK_RETRY).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The arguments of an owner queue: durable, of the topology's type, and on a quorum queue a delivery limit no
/// number of reads reaches.
fn owner_queue_arguments(topology: &Topology) -> FieldTable {
    let mut arguments = FieldTable::default();
    if topology.queue_type == QueueType::Quorum {
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        arguments.insert("x-delivery-limit".into(), AMQPValue::LongUInt(OWNER_DELIVERY_LIMIT));
    }
    arguments
}

/// Reads the folder recorded in `queue` (under the replica's lock), and records `folder` if none is.
pub async fn claim(
    connection: &Connection,
    topology: &Topology,
    queue: &str,
    folder: Uuid,
) -> Result<Claim, BrokerError> {
    let channel = connection.create_channel().await?;
    let options = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(queue.into(), options, owner_queue_arguments(topology)).await?;
    let recorded = match channel.basic_get(queue.into(), BasicGetOptions::default()).await? {
        Some(message) => {
            let owner = Uuid::from_slice(&message.delivery.data).ok();
            // Back in its queue at once: the record stays for the next start.
            message.delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
            if owner.is_none() {
                tracing::warn!(%queue, "an owner record that is not a folder id: taken for none");
            }
            owner
        }
        None => None,
    };
    let claim = decide(recorded, folder);
    if claim == Claim::Recorded {
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let properties = BasicProperties::default().with_delivery_mode(2);
        let confirm = channel
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), folder.as_bytes(), properties)
            .await?;
        if confirm.await?.is_nack() {
            return Err(BrokerError::Nacked);
        }
    }
    let _ = channel.close(200, "claimed".into()).await;
    Ok(claim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_folder_is_recorded_and_only_it_is_served() {
        let (mine, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(decide(None, mine), Claim::Recorded);
        assert_eq!(decide(Some(mine), mine), Claim::Owner);
        assert_eq!(decide(Some(other), mine), Claim::Refused { owner: other });
    }
}
