//! Whether the broker blocks publishers: RabbitMQ raises a memory or disk alarm, and until it clears it stops
//! reading from every connection that publishes. Every node falls silent then (its heartbeats are publishes),
//! sessions stand still, and the monitors, blocked too, restart nobody (`coffee_ops::monitor`). The console says
//! so: a connection of its own publishes a probe every second (to a queue that does not exist: the broker drops
//! it), which makes it a publishing connection the broker blocks with the others, and its `blocked` state is
//! broadcast when it changes, and shown in `/api/status`.

use crate::events::{Event, Events};
use crate::nodes::Nodes;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// How often the probe publishes, and its state is looked at.
const EVERY: Duration = Duration::from_secs(1);

/// Whether the broker blocks publishers now, as last seen.
#[derive(Debug, Clone, Default)]
pub struct BrokerBlock(Arc<AtomicBool>);

impl BrokerBlock {
    pub fn blocked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Watches until aborted, over a connection of its own (made again when the broker goes away).
    pub async fn watch(self, nodes: Arc<Nodes>, events: Events) {
        let amqp_url = nodes.spec().amqp_url;
        loop {
            let Err(e) = self.probe(&amqp_url, &nodes, &events).await;
            debug!(error = %format!("{e:#}"), "cannot probe the broker; trying again");
            self.set(false, &events);
            tokio::time::sleep(EVERY).await;
        }
    }

    async fn probe(&self, amqp_url: &str, nodes: &Nodes, events: &Events) -> anyhow::Result<Infallible> {
        let connection = coffee_engine::amqp::connect(amqp_url, "console-broker-probe").await?;
        let publisher = coffee_engine::amqp::Publisher::new(&connection, Default::default()).await?;
        let probe = format!("{}.broker-probe", nodes.spec().topology.namespace);
        loop {
            // Its confirm is not awaited: while blocked, the broker reads nothing more from this connection.
            let _ = tokio::time::timeout(EVERY, publisher.publish_bytes(&probe, b"")).await;
            tokio::time::sleep(EVERY).await;
            anyhow::ensure!(connection.status().connected(), "the probe's connection closed");
            self.set(connection.status().blocked(), events);
        }
    }

    fn set(&self, blocked: bool, events: &Events) {
        if self.0.swap(blocked, Ordering::Relaxed) != blocked {
            if blocked {
                warn!("the broker blocks publishers (a memory or disk alarm): nothing moves until it clears");
            }
            events.send(Event::BrokerBlocked { blocked });
        }
    }
}
