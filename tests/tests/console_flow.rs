//! The flow the console shows on its graph (`/api/flow`, the `flow` event): a stage replica that stops consuming
//! (paused) while its input keeps coming shows a backlog at its stage, which drains once it works again; a
//! session's rows show as rows per second through the stages, and the nodes as busy.
//!
//! The backlog counts messages ready in the queues: each replica also holds up to its prefetch (256) delivered
//! and not yet acked, which the broker does not report without its management plugin. So the flood here is
//! larger than the prefetch.

use coffee_tests::console::{self, Console};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn flow_until(console: &Console, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let flow = console.get("/api/flow").await;
        if ok(&flow) {
            return flow;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {flow}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_stage_shows_its_backlog_and_a_session_its_rates() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut config = console::config(data_dir.path(), "console-flow");
    // No health monitors: a paused node stays paused for its whole pause, instead of being replaced after 3 s.
    config.monitors = 0;
    let console = Console::start(config).await;
    let mut events = console.events().await;
    // Rates are differences between two heartbeats: wait until the console measures every filter.
    flow_until(&console, "the filters measured", |f| {
        ["tx_filter-0", "tx_filter-1"].iter().all(|n| f["busy"][n].is_number())
    })
    .await;

    // q3_agg-0 stopped while 400 messages arrive for it: more than it takes in before it stops reading.
    console.post("/api/nodes/q3_agg-0/pause", json!({ "ms": 8000 })).await;
    let spec = console.app.state.nodes.spec().clone();
    let connection = coffee_engine::amqp::connect(&spec.amqp_url, "test-flood").await.expect("broker");
    let publisher = coffee_engine::amqp::Publisher::new(&connection, Default::default()).await.expect("publisher");
    let queue = spec.topology.queue(coffee_model::node::StageKind::Q3Agg, 0);
    let mut confirms = Vec::new();
    for _ in 0..400 {
        confirms.push(publisher.publish_bytes(&queue, b"flood").await.expect("publish"));
    }
    coffee_engine::amqp::await_confirms(confirms).await.expect("confirmed");
    let backlog =
        flow_until(&console, "a backlog at q3_agg", |f| f["stages"]["q3_agg"]["queued"].as_u64() > Some(0)).await;
    assert_eq!(backlog["stages"]["tx_filter"]["queued"], 0, "only the stalled stage: {backlog}");
    events.wait("flow", |e| e["stages"]["q3_agg"]["queued"].as_u64() > Some(0)).await;
    // Working again, it drains its queue (the flood is poison: it sets it all aside).
    flow_until(&console, "the backlog drained", |f| f["stages"]["q3_agg"]["queued"] == 0).await;
    console.post("/api/dead-letters/purge", json!({})).await;

    // A session: rows through the filters, the gateway sending, nodes busy.
    console.post("/api/datasets/generate", json!({ "scale": "tiny" })).await;
    let session = console.launch("generated-tiny").await;
    console.wait_session(&session, "done", |v| v["state"] == "done").await;
    let seen = events
        .wait_within("flow", Duration::from_secs(30), |e| {
            e["stages"]["tx_filter"]["rows_in_per_s"].as_f64() > Some(0.0)
                && e["busy"]["tx_filter-0"].as_f64() > Some(0.0)
        })
        .await;
    assert!(seen["stages"]["tx_filter"]["busy"].as_f64() > Some(0.0), "{seen}");
    events.wait("flow", |e| e["stages"]["gateway"]["rows_out_per_s"].as_f64() > Some(0.0)).await;
    console.app.shutdown().await;
}
