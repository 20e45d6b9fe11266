//! The recipe of `docs/architecture.md` ("how to add a query"), followed for a fifth query that only this test
//! enables (the `example-query` feature): per store, its transactions of 2024-2025. The whole pipeline, with the
//! new stage beside the others, must give exactly the reference's lines, the new query's included.

use coffee_engine::client::{self, ClientOptions};
use coffee_engine::topology::Topology;
use coffee_ops::cluster::{ClusterSpec, LocalCluster, StartOptions};
use coffee_tools::{compare, gen, reference};
use std::path::PathBuf;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_query_added_by_the_recipe_matches_the_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    gen::generate(&gen::GenOptions { scale: gen::Scale::Tiny, seed: 5, out: data.clone() }).expect("generate");
    let gateway_addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("its address").to_string()
    };
    let namespace = format!("test-example-query-{}", std::process::id());
    let spec = ClusterSpec {
        topology: Topology::with_replicas(&namespace, "all=2,q5_count=3").expect("a topology with q5_count"),
        gateway_addr,
        amqp_url: std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
        exe: PathBuf::from(env!("CARGO_BIN_EXE_coffee-node")),
    };
    let cluster = LocalCluster::start_with(spec.clone(), StartOptions { monitors: 0, ..StartOptions::default() })
        .await
        .expect("the cluster starts");

    let out = dir.path().join("out");
    let options = ClientOptions::new(&spec.gateway_addr, &data, &out);
    let summary = client::run_session(&options, Arc::new(|_| {})).await.expect("the session");
    let got: Vec<String> =
        std::fs::read_to_string(&summary.output).expect("the results").lines().map(str::to_owned).collect();
    let expected = reference::run(&data).expect("the reference");
    cluster.stop().await.expect("the cluster stops");

    let comparison = compare::compare_lines(&got, &expected.lines);
    assert!(comparison.equal, "{comparison:#?}");
    let q5 = comparison.query("Q5").expect("Q5 is a known kind");
    assert!(q5.left > 0 && q5.left == q5.right, "the example query answers: {q5:?}");
}
