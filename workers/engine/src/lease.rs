//! Session leases: a stage replica drops a session that nobody vouches for any more.
//!
//! The gateway purges the sessions it knows to be abandoned (their clients gone past the grace), a restarted one
//! included, from its upload logs. A session whose gateway vanished for good (its folder lost with it) has no one
//! left to purge it. So the gateway announces, on the namespace's `sessions` fanout exchange and every quarter of
//! the lease, the sessions it knows; a stage replica renews a session's lease with each announcement that names
//! it and each input it gets, and purges a session whose lease ran out (state and files, as a purge would).
//! The lease ([`DEFAULT_LEASE`], `SESSION_LEASE`) is long next to the gateway's grace and the clients' reconnect
//! window, so only a session that can no longer finish expires.

use crate::amqp::BrokerError;
use crate::topology::Topology;
use coffee_model::wire::SessionId;
use futures::{Stream, StreamExt};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ExchangeKind};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a stage replica keeps a session that no gateway announces and no input feeds.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(600);

/// How long a session's results queue is kept once nobody consumes from it: the lease, after which the stages
/// have purged the session anyway (a session whose gateway vanished with its folder has no one left to delete
/// its queue; a gateway back within the lease finds it).
pub fn results_queue_expiry(lease: Duration) -> Duration {
    if crate::planted::active(crate::planted::Bug::NoResultsExpiry) {
        return Duration::from_secs(100 * 365 * 24 * 3600);
    }
    lease
}

/// How often the gateway announces its sessions: a quarter of the lease, at most every 30 s.
pub fn announce_every(lease: Duration) -> Duration {
    (lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

fn exchange(topology: &Topology) -> String {
    format!("{}.sessions", topology.namespace)
}

async fn declare(channel: &lapin::Channel, topology: &Topology) -> lapin::Result<()> {
    let options = ExchangeDeclareOptions::default();
    channel
        .exchange_declare(exchange(topology).as_str().into(), ExchangeKind::Fanout, options, FieldTable::default())
        .await
}

/// Announces, every `every` for as long as the process lives, the sessions that `known` lists (the gateway:
/// those with an upload log in its folder). An announcement that fails (the broker closed the announcer's
/// channel, a channel-level error) is made again at once on a new channel ([`after_announce_failure`]): an
/// announcer that stopped there would leave every stage to purge the gateway's live sessions once their lease
/// ran out, and one that only waited for its next tick would lose an announcement to every closed channel. The
/// connection's own failure ends the process (`amqp::connect_node`).
pub async fn start_announcing(
    connection: Arc<Connection>,
    topology: &Topology,
    every: Duration,
    known: impl Fn() -> Vec<SessionId> + Send + 'static,
) -> Result<(), BrokerError> {
    let exchange = exchange(topology);
    let mut channel = Some(open_announcing(&connection, &exchange).await?);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if channel.is_none() {
                match open_announcing(&connection, &exchange).await {
                    Ok(opened) => {
                        tracing::info!("session announcements go on, on a new channel");
                        channel = Some(opened);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open a channel for the session announcements yet");
                        continue;
                    }
                }
            }
            let payload = postcard::to_allocvec(&known()).expect("session ids serialize");
            let Some(open) = &channel else { continue };
            let Err(e) = announce(open, &exchange, &payload).await else { continue };
            channel = None;
            match after_announce_failure() {
                AfterFailure::Stop => {
                    tracing::warn!(error = %e, "session announcements stopped");
                    return;
                }
                AfterFailure::Reopen => continue,
                AfterFailure::Retry => {}
            }
            tracing::warn!(error = %e, "a session announcement failed: made again on a new channel");
            if let Ok(opened) = open_announcing(&connection, &exchange).await {
                if announce(&opened, &exchange, &payload).await.is_ok() {
                    channel = Some(opened);
                }
            }
        }
    });
    Ok(())
}

/// What the announcer does after an announcement failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Makes it again at once, on another channel.
    Retry,
    /// Waits for its next tick, on another channel (a planted bug's rule).
    Reopen,
    /// Stops announcing (the reverted fix, planted for the simulator to find).
    Stop,
}

/// What the announcer does after an announcement failed: the runtime's and the simulator's rule.
pub fn after_announce_failure() -> AfterFailure {
    if crate::planted::active(crate::planted::Bug::AnnouncerStops) {
        AfterFailure::Stop
    } else if crate::planted::active(crate::planted::Bug::AnnouncementNotRetried) {
        AfterFailure::Reopen
    } else {
        AfterFailure::Retry
    }
}

async fn open_announcing(connection: &Connection, exchange: &str) -> Result<lapin::Channel, BrokerError> {
    let channel = connection.create_channel().await?;
    let options = ExchangeDeclareOptions::default();
    channel.exchange_declare(exchange.into(), ExchangeKind::Fanout, options, FieldTable::default()).await?;
    Ok(channel)
}

/// One announcement (no confirm: a lost one is only a late one).
async fn announce(channel: &lapin::Channel, exchange: &str, payload: &[u8]) -> Result<(), BrokerError> {
    crate::failpoint_error!("announce-fails");
    let options = BasicPublishOptions::default();
    channel.basic_publish(exchange.into(), "".into(), options, payload, BasicProperties::default()).await?;
    Ok(())
}

/// Every announcement of the namespace from now on, through a temporary queue of this connection.
pub async fn subscribe(
    connection: &Connection,
    topology: &Topology,
) -> Result<impl Stream<Item = Vec<SessionId>>, BrokerError> {
    let channel = connection.create_channel().await?;
    declare(&channel, topology).await?;
    let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    let queue = channel.queue_declare("".into(), options, FieldTable::default()).await?;
    let name = queue.name().clone();
    let bind = QueueBindOptions::default();
    channel
        .queue_bind(name.clone(), exchange(topology).as_str().into(), "".into(), bind, FieldTable::default())
        .await?;
    let options = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let consumer = channel.basic_consume(name, "".into(), options, FieldTable::default()).await?;
    Ok(consumer.filter_map(|delivery| async move { postcard::from_bytes(&delivery.ok()?.data).ok() }))
}

/// The leases of a stage replica's sessions.
#[derive(Debug)]
pub struct Leases {
    lease: Duration,
    renewed: HashMap<SessionId, Instant>,
}

impl Leases {
    pub fn new(lease: Duration) -> Leases {
        Leases { lease, renewed: HashMap::new() }
    }

    /// Renews `session`'s lease (an input came, or it was recovered at start).
    pub fn renew(&mut self, session: SessionId, now: Instant) {
        self.renewed.insert(session, now);
    }

    /// Renews the leases of the announced sessions this replica holds.
    pub fn announced(&mut self, sessions: &[SessionId], now: Instant) {
        for session in sessions {
            if let Some(at) = self.renewed.get_mut(session) {
                *at = now;
            }
        }
    }

    /// The sessions whose lease ran out (they are forgotten here).
    pub fn expired(&mut self, now: Instant) -> Vec<SessionId> {
        if crate::planted::active(crate::planted::Bug::NoLease) {
            return Vec::new();
        }
        let lease = self.lease;
        let mut expired: Vec<SessionId> =
            self.renewed.iter().filter(|(_, at)| now - **at > lease).map(|(id, _)| *id).collect();
        expired.sort();
        for id in &expired {
            self.renewed.remove(id);
        }
        expired
    }

    /// The session ended here: no lease to keep.
    pub fn forget(&mut self, session: SessionId) {
        self.renewed.remove(&session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_out_unless_an_input_or_an_announcement_renews_it() {
        let t0 = Instant::now();
        let (a, b, c) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2), uuid::Uuid::from_u128(3));
        let mut leases = Leases::new(Duration::from_secs(10));
        for id in [a, b, c] {
            leases.renew(id, t0);
        }
        leases.announced(&[a, uuid::Uuid::from_u128(9)], t0 + Duration::from_secs(8));
        leases.renew(b, t0 + Duration::from_secs(9));
        assert!(leases.expired(t0 + Duration::from_secs(10)).is_empty());
        assert_eq!(leases.expired(t0 + Duration::from_secs(11)), vec![c]);
        assert!(leases.expired(t0 + Duration::from_secs(12)).is_empty(), "expired once");
        leases.forget(a);
        assert_eq!(leases.expired(t0 + Duration::from_secs(30)), vec![b]);
        assert_eq!(announce_every(DEFAULT_LEASE), Duration::from_secs(30));
        assert_eq!(announce_every(Duration::from_secs(4)), Duration::from_secs(1));
    }
}
