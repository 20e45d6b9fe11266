//! The dead-letter queues as the page sees them: poison messages the nodes set aside (undecodable, rows of the
//! wrong kind, unknown senders, past their stream's end) are counted every few seconds and broadcast when the
//! counts change, so a user sees bad traffic reach the pipeline instead of finding it in a log.

use crate::events::{Event, Events};
use coffee::topology::Topology;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info};

/// How often the queues are counted.
const EVERY: Duration = Duration::from_secs(2);

/// The latest counts, per stage (and `gateway`), shared with the status endpoint.
#[derive(Debug, Clone, Default)]
pub struct DeadLetters(Arc<Mutex<BTreeMap<String, u32>>>);

impl DeadLetters {
    pub fn counts(&self) -> BTreeMap<String, u32> {
        self.0.lock().expect("lock").clone()
    }

    /// Drops every dead letter (a user who has seen the count clears it, say before the next demo); the next
    /// count, within [`EVERY`], broadcasts the zeros. Returns how many were dropped.
    pub async fn purge(&self, amqp_url: &str, topology: &Topology) -> anyhow::Result<u32> {
        let connection = coffee::amqp::connect(amqp_url, "console-dead-letters-purge").await?;
        let purged = coffee::amqp::purge_dead_letters(&connection.create_channel().await?, topology).await?;
        let _ = connection.close(200, "purged".into()).await;
        info!(purged, "dead letters purged");
        Ok(purged)
    }

    /// Counts the dead-letter queues of `topology` until aborted, over its own connection (made again when the
    /// broker goes away, or while the queues do not exist yet); broadcasts `dead_letters` on every change.
    pub async fn watch(self, amqp_url: String, topology: Topology, events: Events) {
        loop {
            let Err(e) = self.count(&amqp_url, &topology, &events).await;
            // Debug only: with the broker down (or the queues not declared yet) the cluster's state already
            // says so on the page, and this would repeat it every round.
            debug!(error = %format!("{e:#}"), "cannot count the dead letters; trying again");
            tokio::time::sleep(EVERY).await;
        }
    }

    /// Counts every [`EVERY`] until the broker fails.
    async fn count(&self, amqp_url: &str, topology: &Topology, events: &Events) -> anyhow::Result<Infallible> {
        let connection = coffee::amqp::connect(amqp_url, "console-dead-letters").await?;
        loop {
            // A passive declare of a missing queue closes its channel: a fresh channel each round.
            let channel = connection.create_channel().await?;
            let counts = coffee::amqp::dead_letters(&channel, topology).await?;
            let _ = channel.close(200, "counted".into()).await;
            let changed = std::mem::replace(&mut *self.0.lock().expect("lock"), counts.clone()) != counts;
            if changed {
                events.send(Event::DeadLetters { counts });
            }
            tokio::time::sleep(EVERY).await;
        }
    }
}
