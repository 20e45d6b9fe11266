//! The gateway's memory per session, bounded in bytes (issue 25, item 5), against crafted peers on each side.
//!
//! - A client that never reads, with 300 result messages of 1 MB each waiting in its results queue (published
//!   there as a stage would): the gateway takes its prefetch (64 messages) and forwards at most 8 MiB the client
//!   has not acked, so its peak RSS stays under 160 MB. Before, every prefetched message (256) was decoded into a
//!   frame and queued for a socket nobody read: a peak of about 600 MB.
//! - A client whose frame decodes to more rows than a frame may carry (65,537 stores with empty names, 200 KB on
//!   the wire): refused as the frame decodes, with a `Protocol` error saying why. Before, a 2 MiB frame of them
//!   decoded to about 700,000 rows, cloned again for every replica the stores are broadcast to.

use coffee_engine::protocol::{ClientFrame, ErrorCode, GatewayFrame, MAX_ROWS_PER_FRAME};
use coffee_engine::topology::{result_source, Endpoint};
use coffee_model::keys::Query;
use coffee_model::message::{Batch, Stream};
use coffee_model::model::{FileKind, Store};
use coffee_model::results::ResultRow;
use coffee_model::wire::{Body, Envelope};
use coffee_ops::cluster::LocalCluster;
use coffee_tests::harness::{amqp_url, cluster_spec, RawClient};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::BasicProperties;
use std::time::Duration;

/// Result messages waiting for the client that never reads, and the bytes of each.
const MESSAGES: u64 = 300;
const MESSAGE_BYTES: usize = 1 << 20;

/// The bound the gateway's peak RSS must stay under with that client.
const PEAK_RSS_BOUND: u64 = 160 << 20;

/// A process's peak resident set (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    coffee_engine::metrics::peak_rss_kib(pid) << 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_costs_the_gateway_a_bounded_window() {
    let spec = cluster_spec("gwmemory", "all=1");
    let cluster = LocalCluster::start(spec.clone()).await.unwrap();
    let gateway = cluster.status().into_iter().find(|n| n.name == "gateway").and_then(|n| n.pid).expect("its pid");
    let before = peak_rss(gateway);
    assert!(before > 0, "the gateway's VmHWM is readable (0 would make the bound prove nothing)");

    let (client, session, _) = RawClient::hello(&spec.gateway_addr).await;
    // Results for it, as Q1's stage would send them: 1,000 rows of 1 KB ids a message.
    let connection = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let sender = spec.topology.senders(Endpoint::Stage(result_source(Query::Q1)))[0];
    let rows: Vec<ResultRow> = (0..MESSAGE_BYTES / 1024)
        .map(|i| ResultRow::Q1 { transaction_id: format!("{i:01024}"), final_amount: 7500 })
        .collect();
    let queue = spec.topology.results_queue(session);
    for seq in 0..MESSAGES {
        let body = Body::Data(Batch::Results(rows.clone()));
        let bytes = Envelope { session, sender, stream: Stream::Results(Query::Q1), seq, body }.encode();
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &bytes,
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // The gateway forwards what it may; the client reads nothing (its read timeout is 60 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let peak = peak_rss(gateway);
    eprintln!("the gateway's peak RSS: {} MiB before the session, {} MiB with it", before >> 20, peak >> 20);
    assert!(
        peak < PEAK_RSS_BOUND,
        "a client that never reads made the gateway hold {} MiB (bound {} MiB)",
        peak >> 20,
        PEAK_RSS_BOUND >> 20
    );
    drop(client);
    cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_of_too_many_rows_is_refused_as_it_decodes() {
    let spec = cluster_spec("gwrows", "all=1");
    let cluster = LocalCluster::start(spec.clone()).await.unwrap();
    let (mut client, _, _) = RawClient::hello(&spec.gateway_addr).await;
    let stores = vec![Store { store_id: 1, store_name: String::new() }; MAX_ROWS_PER_FRAME + 1];
    let frame = ClientFrame::Rows { kind: FileKind::Stores, seq: 0, batch: Batch::Stores(stores) };
    client.writer.send(&frame).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), client.reader.next()).await.expect("an answer");
    match answer {
        Ok(GatewayFrame::Error { code: ErrorCode::Protocol, message }) => {
            assert!(message.contains(&format!("more than {MAX_ROWS_PER_FRAME} rows")), "{message}")
        }
        other => panic!("expected a Protocol error, got {other:?}"),
    }
    cluster.stop().await.unwrap();
}
