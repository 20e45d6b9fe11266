//! Heartbeats: every node publishes, about once a second, who it is and what it has done so far on the
//! namespace's fanout exchange. Whoever watches the cluster (the console, the benchmark, `coffee cluster
//! watch`) binds its own temporary queue to it.

use crate::topology::Topology;
use futures::{Stream, StreamExt};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ExchangeKind};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
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
    pub consumed_messages: u64,
    pub consumed_bytes: u64,
    pub published_messages: u64,
    pub published_bytes: u64,
    pub open_sessions: u64,
    /// Peak resident memory of the process, in KiB (`VmHWM`).
    pub peak_rss_kib: u64,
    /// When the process consumed its first message (ms since the epoch), if it has: with the time of a kill,
    /// it gives how long a restarted node took to work again.
    pub first_input_ms: Option<u64>,
}

/// Counters a node's runtime bumps and its heartbeat reports.
#[derive(Debug, Default)]
pub struct Counters {
    pub consumed_messages: AtomicU64,
    pub consumed_bytes: AtomicU64,
    pub published_messages: AtomicU64,
    pub published_bytes: AtomicU64,
    pub open_sessions: AtomicU64,
    /// When this process consumed its first message (ms since the epoch; 0 until then).
    pub first_input_ms: AtomicU64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Counters {
    pub fn consumed(&self, bytes: usize) {
        if self.consumed_messages.fetch_add(1, Ordering::Relaxed) == 0 {
            self.first_input_ms.store(now_ms(), Ordering::Relaxed);
        }
        self.consumed_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn published(&self, bytes: usize) {
        self.published_messages.fetch_add(1, Ordering::Relaxed);
        self.published_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// The peak resident memory of a process in KiB, from `/proc/<pid>/status` (0 where unavailable).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
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
    let channel = connection.create_channel().await?;
    declare(&channel, topology).await?;
    let exchange = exchange(topology);
    let pid = std::process::id();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        for seq in 0.. {
            tick.tick().await;
            let beat = Heartbeat {
                node: node.clone(),
                pid,
                seq,
                consumed_messages: counters.consumed_messages.load(Ordering::Relaxed),
                consumed_bytes: counters.consumed_bytes.load(Ordering::Relaxed),
                published_messages: counters.published_messages.load(Ordering::Relaxed),
                published_bytes: counters.published_bytes.load(Ordering::Relaxed),
                open_sessions: counters.open_sessions.load(Ordering::Relaxed),
                peak_rss_kib: peak_rss_kib(pid),
                first_input_ms: Some(counters.first_input_ms.load(Ordering::Relaxed)).filter(|&ms| ms > 0),
            };
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
        heard.insert(beat.node.clone(), Heard { at: now, pid: beat.pid, seq: beat.seq, restarts });
    }

    pub fn get(&self, node: &str) -> Option<Heard> {
        self.0.lock().expect("heard lock").get(node).copied()
    }
}

/// Records every heartbeat of the namespace into `heard`, reconnecting (patiently) whenever the broker goes
/// away. Runs until its task is aborted.
pub async fn watch(amqp_url: String, topology: Topology, heard: HeardNodes) {
    loop {
        let watching = async {
            let connection = crate::amqp::connect_patiently(&amqp_url, "watcher", crate::amqp::NODE_PATIENCE).await?;
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
        Heartbeat {
            node: node.into(),
            pid,
            seq,
            consumed_messages: 0,
            consumed_bytes: 0,
            published_messages: 0,
            published_bytes: 0,
            open_sessions: 0,
            peak_rss_kib: 0,
            first_input_ms: None,
        }
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

    #[test]
    fn peak_rss_of_this_process_is_known() {
        assert!(peak_rss_kib(std::process::id()) > 0);
        assert_eq!(peak_rss_kib(u32::MAX), 0);
    }
}
