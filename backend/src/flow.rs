//! How data flows through the pipeline, every 2 s: how many messages wait in each stage's input queues (the
//! backpressure), how many rows each stage reads and writes per second, and how busy each node is. The depths
//! come from [`crate::queues`]; rates and busy time are the differences between two heartbeats' counters, so a
//! restarted node (its counters back at zero) counts from its new start.

use crate::events::{Event, Events};
use crate::nodes::Nodes;
use crate::queues::Queues;
use coffee_engine::metrics::Work;
use coffee_model::node::NodeId;
use coffee_types::{FlowView, StageFlow};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the flow is measured (the queues are counted as often).
const EVERY: Duration = Duration::from_secs(2);

/// The latest flow, shared with `/api/flow`.
#[derive(Debug, Clone, Default)]
pub struct Flow(Arc<Mutex<FlowView>>);

impl Flow {
    pub fn view(&self) -> FlowView {
        self.0.lock().expect("lock").clone()
    }

    /// Measures every [`EVERY`] until aborted; broadcasts `flow` whenever it changed.
    pub async fn watch(self, nodes: Arc<Nodes>, queues: Queues, events: Events) {
        let mut last: BTreeMap<String, (Instant, Work)> = BTreeMap::new();
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tick.tick().await;
            let view = measure(&nodes, &queues, &mut last);
            let changed = std::mem::replace(&mut *self.0.lock().expect("lock"), view.clone()) != view;
            if changed {
                events.send(Event::Flow(view));
            }
        }
    }
}

/// One measurement; `last` holds each node's previous counters, and is updated.
fn measure(nodes: &Nodes, queues: &Queues, last: &mut BTreeMap<String, (Instant, Work)>) -> FlowView {
    let topology = &nodes.spec().topology;
    let depths = queues.depths();
    let mut view = FlowView::default();
    let members = std::iter::once(("gateway".to_owned(), "gateway".to_owned(), None)).chain(
        topology.stage_replicas().map(|(stage, replica)| {
            let node = NodeId::stage(stage, replica).to_string();
            (node, stage.name().to_owned(), Some(topology.queue(stage, replica)))
        }),
    );
    for (node, stage, queue) in members {
        let flow = view.stages.entry(stage).or_insert_with(StageFlow::default);
        flow.queued += queue.and_then(|q| depths.get(&q).copied()).map_or(0, u64::from);
        let Some(heard) = nodes.heard(&node) else { continue };
        let now = (heard.at, heard.work);
        if let Some((then, before)) = last.insert(node.clone(), now) {
            let seconds = now.0.saturating_duration_since(then).as_secs_f64();
            // No new beat since the last measurement, or a new process (its counters went back): no rate yet.
            if seconds <= 0.0 || now.1.consumed_messages < before.consumed_messages {
                continue;
            }
            let per_second = |after: u64, before: u64| after.saturating_sub(before) as f64 / seconds;
            flow.rows_in_per_s += per_second(now.1.consumed_rows, before.consumed_rows);
            flow.rows_out_per_s += per_second(now.1.published_rows, before.published_rows);
            let busy = (per_second(now.1.busy_micros, before.busy_micros) / 1e6).clamp(0.0, 1.0);
            flow.busy = flow.busy.max(busy);
            view.busy.insert(node, busy);
        }
    }
    view
}
