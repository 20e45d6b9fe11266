//! The pipeline's queues as the console sees them: every shared queue (each stage replica's input, the control
//! queue, the dead-letter queues) is counted every few seconds over one connection. The depths feed `/metrics`
//! (`coffee_queue_depth`); the dead-letter counts (poison the nodes set aside: undecodable, rows of the wrong
//! kind, unknown senders, past their stream's end) are broadcast when they change, so a user sees bad traffic
//! reach the pipeline instead of finding it in a log.
//!
//! The depths come from passive declares, which any AMQP client may make; the management API would give rates
//! too, but it is a plugin a broker may not run, and the rates come from the nodes' own heartbeats anyway.

use crate::events::{Event, Events};
use crate::nodes::Nodes;
use coffee_engine::topology::Topology;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info};

/// How often the queues are counted.
const EVERY: Duration = Duration::from_secs(2);

/// The latest count of every queue, shared with the status and metrics endpoints.
#[derive(Debug, Clone, Default)]
pub struct Queues(Arc<Mutex<Counted>>);

#[derive(Debug, Default)]
struct Counted {
    /// Messages ready in each queue, by queue name.
    depths: BTreeMap<String, u32>,
    /// Messages in each dead-letter queue, by stage name (and `gateway`).
    dead_letters: BTreeMap<String, u32>,
}

impl Queues {
    /// Messages ready in each of the topology's shared queues, by name, as last counted.
    pub fn depths(&self) -> BTreeMap<String, u32> {
        self.0.lock().expect("lock").depths.clone()
    }

    /// Dead letters per stage (and `gateway`), as last counted.
    pub fn dead_letters(&self) -> BTreeMap<String, u32> {
        self.0.lock().expect("lock").dead_letters.clone()
    }

    /// Drops every dead letter (a user who has seen the count clears it, say before the next demo); the next
    /// count, within [`EVERY`], broadcasts the zeros. Returns how many were dropped.
    pub async fn purge_dead_letters(&self, amqp_url: &str, topology: &Topology) -> anyhow::Result<u32> {
        let connection = coffee_engine::amqp::connect(amqp_url, "console-dead-letters-purge").await?;
        let purged = coffee_engine::amqp::purge_dead_letters(&connection.create_channel().await?, topology).await?;
        let _ = connection.close(200, "purged".into()).await;
        info!(purged, "dead letters purged");
        Ok(purged)
    }

    /// The dead letters of every stage, with why each was set aside (up to a few hundred per stage).
    pub async fn list_dead_letters(
        &self,
        amqp_url: &str,
        topology: &Topology,
    ) -> anyhow::Result<Vec<coffee_types::DeadLetterView>> {
        let connection = coffee_engine::amqp::connect(amqp_url, "console-dead-letters").await?;
        let listed = coffee_engine::dead_letters::list(&connection, topology).await;
        let _ = connection.close(200, "listed".into()).await;
        Ok(listed?)
    }

    /// Drops or requeues one dead letter.
    pub async fn act_on_dead_letter(
        &self,
        amqp_url: &str,
        topology: &Topology,
        id: &str,
        action: coffee_engine::dead_letters::Action,
    ) -> anyhow::Result<coffee_engine::dead_letters::Outcome> {
        let connection = coffee_engine::amqp::connect(amqp_url, "console-dead-letters").await?;
        let done = coffee_engine::dead_letters::act(&connection, topology, id, action).await;
        let _ = connection.close(200, "done".into()).await;
        if let Ok(coffee_engine::dead_letters::Outcome::Done(letter)) = &done {
            info!(id, stage = letter.stage, ?action, to = letter.from, "dead letter acted on");
        }
        Ok(done?)
    }

    /// Counts the queues of the nodes' topology (as it stands at each count: the page may rescale it) until
    /// aborted, over its own connection (made again when the broker goes away, or while the queues do not exist
    /// yet); broadcasts `dead_letters` on every change of those.
    pub async fn watch(self, nodes: Arc<Nodes>, events: Events) {
        let amqp_url = nodes.spec().amqp_url;
        loop {
            let Err(e) = self.count(&amqp_url, &nodes, &events).await;
            // Debug only: with the broker down (or the queues not declared yet) the cluster's state already
            // says so on the page, and this would repeat it every round.
            debug!(error = %format!("{e:#}"), "cannot count the queues; trying again");
            tokio::time::sleep(EVERY).await;
        }
    }

    /// Counts every [`EVERY`] until the broker fails.
    async fn count(&self, amqp_url: &str, nodes: &Nodes, events: &Events) -> anyhow::Result<Infallible> {
        let connection = coffee_engine::amqp::connect(amqp_url, "console-queues").await?;
        loop {
            let topology = nodes.spec().topology;
            let queues: Vec<String> = topology.all_queues().into_iter().chain(topology.dead_letter_queues()).collect();
            let mut channel = connection.create_channel().await?;
            let mut depths = BTreeMap::new();
            for queue in &queues {
                match coffee_engine::amqp::queue_depth(&channel, queue).await {
                    Ok(depth) => {
                        depths.insert(queue.clone(), depth);
                    }
                    // A queue that does not exist (the control queue of a cluster without monitors, say) is not
                    // counted; the broker closed the channel over it, so the rest are counted on a new one.
                    Err(_) if connection.status().connected() => channel = connection.create_channel().await?,
                    Err(e) => return Err(e.into()),
                }
            }
            let _ = channel.close(200, "counted".into()).await;
            let dead_letters: BTreeMap<String, u32> = topology
                .dead_letter_queues_by_node()
                .into_iter()
                .filter_map(|(node, queue)| Some((node.to_owned(), *depths.get(&queue)?)))
                .collect();
            let changed = {
                let mut counted = self.0.lock().expect("lock");
                counted.depths = depths;
                std::mem::replace(&mut counted.dead_letters, dead_letters.clone()) != dead_letters
            };
            if changed {
                events.send(Event::DeadLetters { counts: dead_letters });
            }
            tokio::time::sleep(EVERY).await;
        }
    }
}
