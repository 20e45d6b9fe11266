//! `/metrics`: the cluster in Prometheus's text format (OpenMetrics), for a Prometheus to scrape and Grafana to
//! draw (`docs/metrics.md` lists every metric; `docs/grafana/coffee.json` is a dashboard of them).
//!
//! Served by the console rather than by each node: the console already hears every node's heartbeat (its
//! counters since the process started) and counts every queue, so one target covers the whole cluster, the
//! nodes need no port of their own (they have none in containers), and a node that is down still shows, as
//! down, instead of vanishing from the scrape. The cost: figures are as old as the last heartbeat (1 s) and
//! queue count (2 s). A node's counters restart from zero with its process; Prometheus's `rate()` takes a
//! counter that went back as a reset.

use crate::AppState;
use coffee_types::SessionState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The content type of the OpenMetrics text format, which Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Session durations are bucketed from a second to ten minutes.
const DURATION_BUCKETS: [f64; 10] = [1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    /// `gateway`, `monitor` or the stage.
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The whole text of one scrape, from the console's current view of the cluster.
pub async fn render(state: &AppState) -> String {
    let mut registry = Registry::default();
    let gauge = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<NodeLabels, Gauge>::default();
        registry.register(name, help, family.clone());
        family
    };
    let counter = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<NodeLabels, Counter>::default();
        registry.register(name, help, family.clone());
        family
    };

    let queue_depth = Family::<QueueLabels, Gauge>::default();
    registry.register("coffee_queue_depth", "Messages ready in a queue of the pipeline", queue_depth.clone());
    for (queue, depth) in state.queues.depths() {
        queue_depth.get_or_create(&QueueLabels { queue }).set(depth.into());
    }
    let dead_letters = Family::<StageLabels, Gauge>::default();
    registry.register("coffee_dead_letters", "Poison messages set aside, per stage", dead_letters.clone());
    for (stage, count) in state.queues.dead_letters() {
        dead_letters.get_or_create(&StageLabels { stage }).set(count.into());
    }

    let nodes = state.nodes.status().await;
    let nodes_up = Gauge::<i64>::default();
    registry.register("coffee_nodes_up", "Nodes running", nodes_up.clone());
    nodes_up.set(nodes.iter().filter(|n| n.up).count() as i64);
    let nodes_total = Gauge::<i64>::default();
    registry.register("coffee_nodes", "Nodes of the topology, monitors included", nodes_total.clone());
    nodes_total.set(nodes.len() as i64);
    let up = gauge(&mut registry, "coffee_node_up", "1 if the node runs");
    let restarts = counter(&mut registry, "coffee_node_restarts", "New processes of the node seen by the console");
    let age = Family::<NodeLabels, FloatGauge>::default();
    registry.register("coffee_heartbeat_age_seconds", "Time since the node's last heartbeat", age.clone());
    let rows_in = counter(&mut registry, "coffee_rows_in", "Data rows the node's process consumed");
    let rows_out = counter(&mut registry, "coffee_rows_out", "Data rows the node's process published");
    let messages_in = counter(&mut registry, "coffee_messages_in", "Messages the node's process consumed");
    let messages_out = counter(&mut registry, "coffee_messages_out", "Messages the node's process published");
    let bytes_in = counter(&mut registry, "coffee_bytes_in", "Bytes the node's process consumed");
    let bytes_out = counter(&mut registry, "coffee_bytes_out", "Bytes the node's process published");
    let open_sessions = gauge(&mut registry, "coffee_open_sessions", "Sessions the node holds state of");
    let memory = gauge(&mut registry, "coffee_peak_memory_bytes", "Peak resident memory of the node's process");
    for node in &nodes {
        let labels = NodeLabels { node: node.name.clone(), role: node.role.clone() };
        up.get_or_create(&labels).set(node.up.into());
        restarts.get_or_create(&labels).inc_by(node.restarts.into());
        if let Some(ms) = node.heartbeat_age_ms {
            age.get_or_create(&labels).set(ms as f64 / 1000.0);
        }
        if let Some(heard) = state.nodes.heard(&node.name) {
            let work = heard.work;
            rows_in.get_or_create(&labels).inc_by(work.consumed_rows);
            rows_out.get_or_create(&labels).inc_by(work.published_rows);
            messages_in.get_or_create(&labels).inc_by(work.consumed_messages);
            messages_out.get_or_create(&labels).inc_by(work.published_messages);
            bytes_in.get_or_create(&labels).inc_by(work.consumed_bytes);
            bytes_out.get_or_create(&labels).inc_by(work.published_bytes);
            open_sessions.get_or_create(&labels).set(work.open_sessions as i64);
            memory.get_or_create(&labels).set(work.peak_rss_kib as i64 * 1024);
        }
    }

    let sessions = state.sessions.list();
    let by_state = Family::<StateLabels, Gauge>::default();
    registry.register("coffee_sessions", "Sessions launched from the console, by state", by_state.clone());
    let durations = Histogram::new(DURATION_BUCKETS);
    registry.register(
        "coffee_session_duration_seconds",
        "How long the console's finished sessions took, first frame to last result",
        durations.clone(),
    );
    for kind in [SessionState::Running, SessionState::Done, SessionState::Failed] {
        by_state.get_or_create(&StateLabels { state: kind.as_str().to_owned() }).set(0);
    }
    for session in &sessions {
        by_state.get_or_create(&StateLabels { state: session.state.as_str().to_owned() }).inc();
        if session.state == SessionState::Done {
            durations.observe(session.elapsed_ms as f64 / 1000.0);
        }
    }

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}
