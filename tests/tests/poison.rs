//! Poison messages: garbage published straight onto every stage's queue and a session's results queue during a
//! run (random bytes, empty, an unknown version, a truncated envelope, rows of the wrong kind for their stream,
//! an unknown sender) is set aside in the dead-letter queues; no node dies, and every session stays exact.

use coffee_model::message::{Batch, Stream};
use coffee_model::node::{NodeId, Role, StageKind};
use coffee_model::wire::{Body, Envelope};
use coffee_tests::harness::{assert_matches_reference, generate, queue_depths, run_session, start_cluster};
use coffee_tools::gen::Scale;
use rand::{Rng, SeedableRng};

fn poison(session: uuid::Uuid, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<Vec<u8>> {
    let gateway = NodeId { role: Role::Gateway, replica: 0 };
    let valid = Envelope {
        session,
        sender: gateway,
        stream: Stream::Transactions,
        seq: 0,
        body: Body::Data(Batch::Transactions(vec![])),
    }
    .encode();
    let wrong_rows = Envelope {
        session,
        sender: gateway,
        stream: Stream::Transactions,
        seq: 0,
        body: Body::Data(Batch::Users(vec![])),
    };
    let stranger = Envelope {
        session,
        sender: NodeId { role: Role::Stage(StageKind::Q4Top), replica: 9 },
        stream: Stream::Q3Partial,
        seq: 0,
        body: Body::Eof { count: 0 },
    };
    let random: Vec<u8> = (0..rng.gen_range(1..300)).map(|_| rng.gen()).collect();
    vec![
        random,
        Vec::new(),
        vec![99, 1, 2, 3],
        valid[..valid.len() - 3].to_vec(),
        wrong_rows.encode(),
        stranger.encode(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_set_aside_and_sessions_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 21, &dir.path().join("data"));
    let (spec, mut cluster) = start_cluster("poison", "all=2").await;
    let connection = coffee_engine::amqp::connect(&spec.amqp_url, "poisoner").await.unwrap();
    let publisher = coffee_engine::amqp::Publisher::new(&connection, Default::default()).await.unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let (mut thrown, mut at_stages) = (0, 0);
    // Two sessions run while poison rains on every stage queue: some claiming sessions nobody runs, some claiming
    // the running sessions themselves (seq 0 of their streams), some on their results queues.
    let (ids_tx, mut ids_rx) = tokio::sync::mpsc::unbounded_channel();
    let sessions = futures::future::join_all((0..2).map(|i| {
        let ids_tx = ids_tx.clone();
        let options =
            coffee_engine::client::ClientOptions::new(&spec.gateway_addr, &data, dir.path().join(format!("out-{i}")));
        async move {
            let observer: coffee_engine::client::Observer = std::sync::Arc::new(move |event| {
                if let coffee_engine::client::ClientEvent::Started { session } = event {
                    let _ = ids_tx.send(session);
                }
            });
            coffee_engine::client::run_session(&options, observer).await.unwrap()
        }
    }));
    tokio::pin!(sessions);
    let mut running: Vec<uuid::Uuid> = Vec::new();
    let mut volley = tokio::time::interval(std::time::Duration::from_millis(20));
    let summaries = loop {
        tokio::select! {
            summaries = &mut sessions => break summaries,
            Some(id) = ids_rx.recv() => running.push(id),
            _ = volley.tick() => {
                let mut targets: Vec<String> =
                    spec.topology.all_queues().into_iter().filter(|q| !q.ends_with(".control")).collect();
                targets.extend(running.iter().map(|id| spec.topology.results_queue(*id)));
                for queue in targets {
                    let claimed = running.get(rng.gen_range(0..running.len().max(1))).copied().unwrap_or_else(uuid::Uuid::new_v4);
                    for bytes in poison(claimed, &mut rng) {
                        let confirm = publisher.publish_bytes(&queue, &bytes).await.unwrap();
                        coffee_engine::amqp::await_confirms(vec![confirm]).await.unwrap();
                        thrown += 1;
                        at_stages += usize::from(!queue.contains(".results."));
                    }
                }
            }
        }
    };
    assert!(!running.is_empty());
    for summary in &summaries {
        assert_matches_reference(summary, &data);
    }
    let after = run_session(&spec, &data, &dir.path().join("out-after")).await;
    assert_matches_reference(&after, &data);
    assert!(cluster.restart_exited().unwrap().is_empty(), "a node died");
    let dead: u32 = {
        let channel = connection.create_channel().await.unwrap();
        let mut total = 0;
        for queue in spec.topology.dead_letter_queues() {
            total += coffee_engine::amqp::queue_depth(&channel, &queue).await.unwrap();
        }
        total
    };
    // Everything thrown at a stage is set aside; what was thrown at a results queue is set aside too, unless the
    // session had ended and its queue was gone.
    assert!(
        at_stages > 0 && dead as usize >= at_stages && dead as usize <= thrown,
        "{dead} set aside of {thrown} thrown"
    );
    let busy: Vec<_> = queue_depths(&spec).await.into_iter().filter(|(_, n)| *n > 0).collect();
    assert!(busy.is_empty(), "messages left in work queues: {busy:?}");
    cluster.stop().await.unwrap();
}
