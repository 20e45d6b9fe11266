//! Heartbeats: every node publishes, about once a second, who it is and what it has done so far on the
//! namespace's fanout exchange. Whoever watches the cluster (the console, the benchmark, `coffee cluster
//! watch`) binds its own temporary queue to it.

use crate::metrics::{Counters, Work};
use crate::topology::Topology;
use futures::{Stream, StreamExt};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ExchangeKind};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How often a node beats.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// What a node says each second. Counters are totals since the process started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: String,
    pub pid: u32,
    /// Beats sent by this process so far (a restart starts again from 0).
    pub seq: u64,
    /// Its counters (flattened: each is a field of the beat).
    #[serde(flatten)]
    pub work: Work,
    /// A stage replica's durable state and last recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<coffee_types::ReplicaState>,
    /// When the process consumed its first message (ms since the epoch), if it has: with the time of a kill,
    /// it gives how long a restarted node took to work again.
    pub first_input_ms: Option<u64>,
    /// From a health monitor: the nodes it had restarted and has not heard since, so that every monitor (a
    /// newly elected leader above all) grants them the same start grace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarting: Vec<Restarting>,
    /// How long the node's main loop has waited on the broker in one step, when it waits (see
    /// [`crate::metrics::Counters::waiting_since_ms`]): a node that beats while its work stands still.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck_ms: Option<u64>,
    /// The broker blocks this node's publishers (a memory or disk alarm): it is not stuck, it waits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocked: bool,
}

impl Heartbeat {
    /// A beat of `node` (process `pid`, its `seq`-th) that reports no work yet.
    pub fn quiet(node: &str, pid: u32, seq: u64) -> Heartbeat {
        Heartbeat {
            node: node.into(),
            pid,
            seq,
            work: Work::default(),
            state: None,
            first_input_ms: None,
            restarting: Vec::new(),
            stuck_ms: None,
            blocked: false,
        }
    }
}

/// A node a monitor had restarted, `asked_ms_ago` milliseconds before the beat that says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restarting {
    pub node: String,
    pub asked_ms_ago: u64,
}

pub fn exchange(topology: &Topology) -> String {
    format!("{}.heartbeats", topology.namespace)
}

async fn declare(channel: &lapin::Channel, topology: &Topology) -> lapin::Result<()> {
    channel
        .exchange_declare(
            exchange(topology).as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Starts beating every [`INTERVAL`] in the background, until the connection fails.
pub async fn start(
    connection: &Connection,
    topology: &Topology,
    node: String,
    counters: Arc<Counters>,
) -> lapin::Result<()> {
    start_with(connection, topology, node, counters, |_| {}).await
}

/// [`start`], with `annotate` adding what only this kind of node says to each beat.
pub async fn start_with(
    connection: &Connection,
    topology: &Topology,
    node: String,
    counters: Arc<Counters>,
    annotate: impl Fn(&mut Heartbeat) + Send + 'static,
) -> lapin::Result<()> {
    let channel = connection.create_channel().await?;
    declare(&channel, topology).await?;
    let exchange = exchange(topology);
    let pid = std::process::id();
    let status = connection.status().clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        for seq in 0.. {
            tick.tick().await;
            // From its own task: a node whose main loop is stuck still beats, and says since when it is stuck.
            let blocked = status.blocked();
            let mut beat = Heartbeat {
                node: node.clone(),
                pid,
                seq,
                work: counters.work(pid),
                state: None,
                first_input_ms: Some(counters.first_input_ms.load(Ordering::Relaxed)).filter(|&ms| ms > 0),
                restarting: Vec::new(),
                stuck_ms: counters.stuck_for(blocked).map(|d| d.as_millis() as u64),
                blocked,
            };
            annotate(&mut beat);
            let payload = serde_json::to_vec(&beat).expect("a heartbeat serializes");
            // No confirm: a lost beat is only a late one.
            let sent = channel
                .basic_publish(
                    exchange.as_str().into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    &payload,
                    BasicProperties::default(),
                )
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "heartbeats stopped");
                return;
            }
        }
    });
    Ok(())
}

/// Every heartbeat of the namespace from now on, through a temporary queue of this connection.
pub async fn subscribe(connection: &Connection, topology: &Topology) -> lapin::Result<impl Stream<Item = Heartbeat>> {
    let channel = connection.create_channel().await?;
    declare(&channel, topology).await?;
    let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    let queue = channel.queue_declare("".into(), options, FieldTable::default()).await?;
    let name = queue.name().clone();
    channel
        .queue_bind(
            name.clone(),
            exchange(topology).as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let options = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let consumer = channel.basic_consume(name, "".into(), options, FieldTable::default()).await?;
    Ok(consumer.filter_map(|delivery| async move { delivery.ok().and_then(|d| serde_json::from_slice(&d.data).ok()) }))
}

/// What a watcher knows of one node from its heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    pub at: std::time::Instant,
    pub pid: u32,
    pub seq: u64,
    /// New processes heard after the first: a beat whose `seq` went back (or whose pid changed) comes from a
    /// restarted node. Counted from heartbeats alone, so it holds for processes and containers alike.
    pub restarts: u32,
    /// What the process that sent the latest beat has done so far.
    pub work: Work,
    /// Its durable state and last recovery (stage replicas).
    pub state: Option<coffee_types::ReplicaState>,
}

/// The latest heartbeat of every node heard so far, shared between a [`watch`] task and its readers.
#[derive(Debug, Clone, Default)]
pub struct HeardNodes(Arc<std::sync::Mutex<std::collections::HashMap<String, Heard>>>);

impl HeardNodes {
    pub fn record(&self, beat: &Heartbeat) {
        let mut heard = self.0.lock().expect("heard lock");
        let restarts = match heard.get(&beat.node) {
            Some(last) if beat.seq < last.seq || beat.pid != last.pid => last.restarts + 1,
            Some(last) => last.restarts,
            None => 0,
        };
        let now = std::time::Instant::now();
        heard.insert(
            beat.node.clone(),
            Heard { at: now, pid: beat.pid, seq: beat.seq, restarts, work: beat.work, state: beat.state },
        );
    }

    pub fn get(&self, node: &str) -> Option<Heard> {
        self.0.lock().expect("heard lock").get(node).copied()
    }

    /// Forgets every node (their processes are gone: a cluster restarted in another shape).
    pub fn clear(&self) {
        self.0.lock().expect("heard lock").clear();
    }
}

/// Records every heartbeat of the namespace into `heard`, reconnecting (patiently) whenever the broker goes
/// away. Runs until its task is aborted.
pub async fn watch(amqp_url: String, topology: Topology, heard: HeardNodes) {
    loop {
        let watching = async {
            let connection = crate::amqp::connect_patiently(&amqp_url, "watcher").await;
            let mut beats = Box::pin(subscribe(&connection, &topology).await?);
            while let Some(beat) = beats.next().await {
                heard.record(&beat);
            }
            Ok::<_, anyhow::Error>(())
        };
        if let Err(e) = watching.await {
            tracing::warn!(error = %format!("{e:#}"), "lost the heartbeats; watching again");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(node: &str, pid: u32, seq: u64) -> Heartbeat {
        Heartbeat::quiet(node, pid, seq)
    }

    #[test]
    fn a_restart_is_a_beat_whose_seq_went_back_or_whose_pid_changed() {
        let heard = HeardNodes::default();
        heard.record(&beat("gateway", 1, 7));
        heard.record(&beat("gateway", 1, 8));
        assert_eq!(heard.get("gateway").map(|h| (h.seq, h.restarts)), Some((8, 0)), "first heard mid-life");
        // In a container the pid is the same after a restart (1): the sequence tells.
        heard.record(&beat("gateway", 1, 0));
        assert_eq!(heard.get("gateway").map(|h| h.restarts), Some(1));
        heard.record(&beat("gateway", 42, 1));
        assert_eq!(heard.get("gateway").map(|h| (h.pid, h.restarts)), Some((42, 2)));
        assert_eq!(heard.get("tx_filter-0"), None);
    }
}
