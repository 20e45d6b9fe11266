//! Dead letters: the messages a node sets aside (they do not decode, hold rows of the wrong kind, come from a
//! sender or on a stream the stage does not read, or arrive past their stream's end). Each goes to its stage's
//! dead-letter queue with a message id and headers that say why, from which queue and when, so that an operator
//! can list them, drop one, or send one back to where it came from. Under quorum queues the broker puts there
//! too an input delivered more times than the topology's delivery limit without an ack (RabbitMQ's own
//! `x-first-death-*` headers then say why and from where, and its content names it).
//!
//! Listing reads a queue with `basic.get` and leaves every message unacked until its channel closes, when the
//! broker puts them all back: nothing is lost if the reader dies halfway. Acting on one reads until its id and
//! acks only that one (after its requeue is confirmed, for a requeue).

use crate::amqp::{self, BrokerError, Publisher};
use crate::topology::Topology;
use coffee_model::wire::{Body, Envelope};
use coffee_types::DeadLetterView;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, PublisherConfirm};

const REASON: &str = "x-coffee-reason";
const FROM: &str = "x-coffee-from";
const AT_MS: &str = "x-coffee-at-ms";
/// What RabbitMQ writes on a message it dead-letters: why, and from which queue.
const BROKER_REASON: &str = "x-first-death-reason";
const BROKER_FROM: &str = "x-first-death-queue";

/// Dead letters listed per queue at most (a flood of poison is counted in full, and listed in part).
pub const LIST_LIMIT: usize = 200;

/// Sets `bytes`, consumed from queue `from`, aside in `dead_letters` with `reason`. Returns the confirm.
pub async fn set_aside(
    publisher: &Publisher,
    dead_letters: &str,
    from: &str,
    bytes: &[u8],
    reason: &str,
) -> Result<PublisherConfirm, BrokerError> {
    let mut headers = FieldTable::default();
    headers.insert(REASON.into(), AMQPValue::LongString(reason.into()));
    headers.insert(FROM.into(), AMQPValue::LongString(from.into()));
    headers.insert(AT_MS.into(), AMQPValue::LongLongInt(crate::metrics::now_ms() as i64));
    let properties =
        BasicProperties::default().with_message_id(uuid::Uuid::new_v4().to_string().into()).with_headers(headers);
    publisher.publish_bytes_with(dead_letters, bytes, properties).await
}

/// What an operator does with one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Drop it for good.
    Drop,
    /// Publish it again to the queue it was consumed from, then drop it here.
    Requeue,
}

/// The dead letters of every stage (and the gateway), up to [`LIST_LIMIT`] per queue, oldest first per stage.
pub async fn list(connection: &Connection, topology: &Topology) -> Result<Vec<DeadLetterView>, BrokerError> {
    let mut all = Vec::new();
    for (node, queue) in topology.dead_letter_queues_by_node() {
        // A channel per queue: closing it puts back what was read.
        let channel = connection.create_channel().await?;
        let mut read = 0;
        while read < LIST_LIMIT {
            let Some(message) = channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await? else {
                break;
            };
            all.push(view(node, &message.delivery.properties, &message.delivery.data));
            read += 1;
        }
        let _ = channel.close(200, "listed".into()).await;
    }
    Ok(all)
}

/// What became of a dead letter acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Dropped, or requeued and then dropped here.
    Done(DeadLetterView),
    /// A requeue of a message that does not say where it came from (set aside before origins were recorded):
    /// left where it is.
    NoOrigin(DeadLetterView),
    /// A requeue of a message whose recorded origin is not a stage replica's input queue of this namespace
    /// (anyone who can publish on the broker can write that header): left where it is.
    ForeignOrigin(DeadLetterView),
    /// No dead-letter queue holds it (among the first [`LIST_LIMIT`] of each).
    NotFound,
}

/// Drops or requeues the dead letter `id`.
pub async fn act(
    connection: &Connection,
    topology: &Topology,
    id: &str,
    action: Action,
) -> Result<Outcome, BrokerError> {
    let inputs: Vec<String> =
        topology.stage_replicas().map(|(stage, replica)| topology.queue(stage, replica)).collect();
    for (node, queue) in topology.dead_letter_queues_by_node() {
        let channel = connection.create_channel().await?;
        let outcome = act_in(connection, &channel, node, &queue, id, action, &inputs).await;
        let _ = channel.close(200, "done".into()).await;
        match outcome? {
            Outcome::NotFound => {}
            found => return Ok(found),
        }
    }
    Ok(Outcome::NotFound)
}

async fn act_in(
    connection: &Connection,
    channel: &Channel,
    node: &str,
    queue: &str,
    id: &str,
    action: Action,
    inputs: &[String],
) -> Result<Outcome, BrokerError> {
    for _ in 0..LIST_LIMIT {
        let Some(message) = channel.basic_get(queue.into(), BasicGetOptions::default()).await? else {
            return Ok(Outcome::NotFound);
        };
        let delivery = message.delivery;
        let found = view(node, &delivery.properties, &delivery.data);
        if found.id != id {
            continue;
        }
        if action == Action::Requeue {
            // Unacked in either case: back in its queue when the channel closes.
            if found.from.is_empty() {
                return Ok(Outcome::NoOrigin(found));
            }
            if !inputs.contains(&found.from) {
                return Ok(Outcome::ForeignOrigin(found));
            }
            let publisher = Publisher::new(connection, Default::default()).await?;
            amqp::await_confirms(vec![publisher.publish_bytes(&found.from, &delivery.data).await?]).await?;
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
        return Ok(Outcome::Done(found));
    }
    Ok(Outcome::NotFound)
}

/// A dead letter of `node` (a stage, or `gateway`), as listed.
fn view(node: &str, properties: &BasicProperties, data: &[u8]) -> DeadLetterView {
    let header = |name: &str| properties.headers().as_ref().and_then(|h| h.inner().get(name).cloned());
    let text = |name: &str| match header(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.to_string(),
        _ => String::new(),
    };
    let at_ms = match header(AT_MS) {
        Some(AMQPValue::LongLongInt(ms)) => ms.max(0) as u64,
        _ => 0,
    };
    // A message set aside before ids were given one is named by its content.
    let id = properties.message_id().as_ref().map_or_else(|| format!("{:016x}", fnv(data)), |id| id.to_string());
    // Set aside by the broker (past the delivery limit), or by a node.
    let (reason, from) = match text(BROKER_REASON).as_str() {
        "" => (text(REASON), text(FROM)),
        "delivery_limit" => ("delivered past the delivery limit without an ack".to_owned(), text(BROKER_FROM)),
        other => (format!("the broker dead-lettered it ({other})"), text(BROKER_FROM)),
    };
    DeadLetterView {
        id,
        stage: node.to_owned(),
        reason: if reason.is_empty() { "not recorded".to_owned() } else { reason },
        from,
        at_ms,
        bytes: data.len(),
        preview: preview(data),
    }
}

/// A short description of a message: its envelope if it decodes, else its first bytes, escaped.
pub fn preview(data: &[u8]) -> String {
    match Envelope::decode(data) {
        Ok(envelope) => {
            let body = match &envelope.body {
                Body::Data(batch) => format!("{} rows", batch.len()),
                Body::Eof { count } => format!("end of stream after {count} messages"),
                other => format!("{other:?}"),
            };
            format!(
                "session {}, from {}, {:?} #{}: {body}",
                envelope.session, envelope.sender, envelope.stream, envelope.seq
            )
        }
        Err(_) => {
            let shown: String = data.iter().take(48).map(|b| std::ascii::escape_default(*b).to_string()).collect();
            let more = if data.len() > 48 { "…" } else { "" };
            format!("undecodable: {shown}{more}")
        }
    }
}

/// FNV-1a, to name a message that has no id by its bytes.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_say_what_a_message_holds() {
        assert_eq!(preview(&[99, 1, 2, b'a']), "undecodable: c\\x01\\x02a");
        assert!(preview(&[0; 100]).ends_with('…'));
    }
}
