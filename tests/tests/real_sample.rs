//! The reference against results published for a sample of the real dataset (see `coffee_tests::peer`).

use coffee_tests::peer;

#[test]
fn reference_matches_published_results_on_the_real_sample() {
    peer::require_peer_data().unwrap();
    let report = coffee_tools::reference::run(&peer::peer_sample_dir()).unwrap();
    assert_eq!(report.malformed, 0, "the real sample has no malformed rows");
    // 10 stores, 8 menu items, 28,799 users, 2,576 transactions and 2,583 items (files without a final newline).
    assert_eq!(report.rows_read, 10 + 8 + 28_799 + 2_576 + 2_583);
    if let Err(e) = peer::check_against_published(&report.lines) {
        panic!("{e:#}");
    }
}

#[test]
fn published_results_have_the_expected_shape() {
    peer::require_peer_data().unwrap();
    let lines = peer::published_results().unwrap();
    let count = |q: &str| lines.iter().filter(|l| peer::query_of(l) == q).count();
    // Q1 has 24 rows; one month for Q2; 10 stores in one semester for Q3.
    assert_eq!([count("Q1"), count("Q2_QTY"), count("Q2_PROFIT"), count("Q3")], [24, 1, 1, 10]);
    assert_eq!(peer::published_q4().unwrap().len(), 30);
}

#[test]
fn a_wrong_result_is_caught() {
    peer::require_peer_data().unwrap();
    let mut lines = coffee_tools::reference::run(&peer::peer_sample_dir()).unwrap().lines;
    // Drop one Q1 line: the check must fail and say so.
    let q1 = lines.iter().position(|l| peer::query_of(l) == "Q1").unwrap();
    lines.remove(q1);
    let err = peer::check_against_published(&lines).unwrap_err().to_string();
    assert!(err.contains("Q1") && err.contains("1 missing from right"), "{err}");
    // Change one Q4 user: the recount must catch it.
    let mut lines = coffee_tools::reference::run(&peer::peer_sample_dir()).unwrap().lines;
    let q4 = lines.iter().position(|l| peer::query_of(l) == "Q4").unwrap();
    lines[q4] = lines[q4].replace("\"purchases_qty\":1", "\"purchases_qty\":2");
    assert!(peer::check_q4(&lines).is_err());
}
