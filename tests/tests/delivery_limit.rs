//! Quorum queues' delivery limit, set on purpose with a dead-letter route (issue 23, item 5). A quorum queue
//! drops a message once it was delivered more than its limit without an ack, unless it has somewhere to send it
//! (RabbitMQ 4 sets a limit of 20 on every quorum queue; 3.10 sets none). The pipeline's input queues carry the
//! topology's limit and a route to their stage's dead-letter queue.
//!
//! Here the limit is 1 and `q2_agg-0` takes groups of one input and holds each 3 s before it commits it, at every
//! start: killed twice meanwhile, the inputs in its hands are delivered twice and never applied. The broker sets them aside in the stage's
//! dead-letter queue, which says why; the session cannot end without them; sent back where they came from, they
//! are applied and the session is exact. Before, RabbitMQ 3.10 had no limit to pass (so nothing of this could be
//! seen or bounded), and RabbitMQ 4 would have dropped them without a word, the session hanging for good.

use coffee_engine::dead_letters::{self, Action, Outcome};
use coffee_engine::topology::QueueType;
use coffee_ops::cluster::{self, LocalCluster, StartOptions};
use coffee_tests::harness::{assert_matches_reference, cluster_spec, generate, run_session, supervised};
use coffee_tools::gen::Scale;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const REPLICA: &str = "q2_agg-0";

/// The replica's pid as its supervisor's status file says, once it runs (and differs from `not`).
async fn running_pid(namespace: &str, not: Option<u32>) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = cluster::read_status(namespace).unwrap_or_default();
        if let Some(pid) = status.iter().find(|n| n.name == REPLICA).and_then(|n| n.pid).filter(|p| Some(*p) != not) {
            return pid;
        }
        assert!(Instant::now() < deadline, "{REPLICA} did not run again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_delivered_past_the_limit_is_set_aside_not_dropped_and_sent_back_it_completes_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(Scale::Tiny, 31, &dir.path().join("data"));
    let mut spec = cluster_spec("dlimit", "all=1");
    spec.topology.queue_type = QueueType::Quorum;
    spec.topology.delivery_limit = 1;
    // Groups of one input, each held 3 s: the first inputs in hand are never applied before a kill, so no final
    // can be sent early (a group that completes the session publishes its finals before it commits).
    let stall = vec![
        ("FAILPOINTS".to_owned(), "confirm-stalls=return(3000)".to_owned()),
        ("COFFEE_GROUP_MAX".to_owned(), "1".to_owned()),
    ];
    let options = StartOptions { node_env: BTreeMap::from([(REPLICA.to_owned(), stall)]), ..Default::default() };
    let mut cluster = LocalCluster::start_with(spec.clone(), options).await.unwrap();

    let work = {
        let (spec, data, out) = (spec.clone(), data.clone(), dir.path().join("out"));
        async move {
            let session = {
                let spec = spec.clone();
                tokio::spawn(async move { run_session(&spec, &data, &out).await })
            };
            let namespace = spec.topology.namespace.clone();
            let connection = coffee_engine::amqp::connect(&spec.amqp_url, "test").await.unwrap();
            // Twice: the replica holds its first group, and is killed before it commits it.
            let mut pid = None;
            for _ in 0..2 {
                let running = running_pid(&namespace, pid).await;
                tokio::time::sleep(Duration::from_millis(1500)).await;
                kill(Pid::from_raw(running as i32), Signal::SIGKILL).unwrap();
                pid = Some(running);
            }
            // The broker set them aside, and says why.
            let deadline = Instant::now() + Duration::from_secs(30);
            let aside = loop {
                let listed = dead_letters::list(&connection, &spec.topology).await.unwrap();
                let aside: Vec<_> = listed.into_iter().filter(|d| d.stage == "q2_agg").collect();
                if !aside.is_empty() {
                    break aside;
                }
                assert!(Instant::now() < deadline, "nothing was set aside past the delivery limit");
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            let input = spec.topology.queue(coffee_model::node::StageKind::Q2Agg, 0);
            for letter in &aside {
                assert_eq!(letter.reason, "delivered past the delivery limit without an ack", "{letter:?}");
                assert_eq!(letter.from, input, "{letter:?}");
            }
            // Without them the session cannot end.
            tokio::time::sleep(Duration::from_secs(6)).await;
            assert!(!session.is_finished(), "the session ended without the inputs set aside");
            for letter in &aside {
                let outcome = dead_letters::act(&connection, &spec.topology, &letter.id, Action::Requeue).await;
                assert!(matches!(outcome, Ok(Outcome::Done(_))), "{outcome:?}");
            }
            session.await.expect("the session's task")
        }
    };
    let (summary, events) = supervised(&mut cluster, None, Duration::from_secs(240), work).await;
    assert_matches_reference(&summary, &data);
    assert!(events.iter().filter(|e| e.node == REPLICA && e.action == "restart").count() >= 2, "{events:?}");
    cluster.stop().await.unwrap();
}
