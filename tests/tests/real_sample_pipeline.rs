//! The pipeline on the real-data sample of `shared/peer-data/`: Q1, Q2 and Q3 equal the published results, Q4
//! equals a recount, and everything equals the reference.

use coffee_tests::harness::{assert_matches_reference, read_lines, run_session, start_cluster};
use coffee_tests::peer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_matches_the_published_results_of_the_real_sample() {
    peer::require_peer_data().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (spec, cluster) = start_cluster("real-sample", "").await;
    let summary = run_session(&spec, &peer::peer_sample_dir(), out.path()).await;
    cluster.stop().await.unwrap();
    assert_eq!(summary.malformed(), 0, "the real sample has no malformed rows");
    peer::check_against_published(&read_lines(&summary.output)).unwrap_or_else(|e| panic!("{e:#}"));
    assert_matches_reference(&summary, &peer::peer_sample_dir());
}
