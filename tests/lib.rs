//! Shared helpers of the integration tests (see `tests/`).

pub mod cli_cluster;
pub mod compose_up;
pub mod console;
pub mod docker_project;
pub mod fake_docker;
pub mod harness;
pub mod swarm;

/// The real-data sample published by another team and its expected results (`shared/peer-data/`, read in place,
/// never copied into the project), as fixtures for the reference and the pipeline.
///
/// The expected Q1, Q2 and Q3 follow our contract exactly. Their Q4 file used another tie rule and lists only
/// `store_name,birthdate`, so Q4 is checked against a recount of the sample instead ([`peer::check_q4`]).
pub mod peer {
    use anyhow::{bail, Context};
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    const TEAM_DATA: &str = "MateAlv__Sistemas-Distribuidos-TP-Grupo13/data";

    /// `shared/peer-data/`, next to the workspace.
    pub fn peer_data_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/peer-data")
    }

    /// The sample of the real dataset: 2,576 transactions of 2024-01 with their items, users, stores, menu items.
    pub fn peer_sample_dir() -> PathBuf {
        peer_data_root().join(TEAM_DATA).join("data-test.zip.extracted/.data-test")
    }

    /// The published results of [`peer_sample_dir`] (`results_query_*.csv`).
    pub fn published_results_dir() -> PathBuf {
        peer_data_root().join(TEAM_DATA).join("results.zip.extracted/results/.results-data-reduced")
    }

    /// Fails with a clear message when the peer data is not where the tests expect it.
    pub fn require_peer_data() -> anyhow::Result<()> {
        for dir in [peer_sample_dir(), published_results_dir()] {
            if !dir.is_dir() {
                bail!("peer data missing: {} (the tests read ../shared/peer-data in place)", dir.display());
            }
        }
        Ok(())
    }

    /// The published Q1, Q2_QTY, Q2_PROFIT and Q3 results as our NDJSON lines, numbers copied as written.
    pub fn published_results() -> anyhow::Result<Vec<String>> {
        let mut lines = Vec::new();
        let q1 = |r: &[String]| format!(r#"{{"query":"Q1","transaction_id":{},"final_amount":{}}}"#, text(&r[0]), r[1]);
        lines.extend(published("results_query_1.csv", &["transaction_id", "final_amount"], &[1], q1)?);
        let q2_qty = |r: &[String]| {
            let (month, name) = (text(&r[0]), text(&r[1]));
            format!(
                r#"{{"query":"Q2_QTY","year_month_created_at":{month},"item_name":{name},"sellings_qty":{}}}"#,
                r[2]
            )
        };
        let header = ["year_month_created_at", "item_name", "sellings_qty"];
        lines.extend(published("results_query_2_1.csv", &header, &[2], q2_qty)?);
        let q2_profit = |r: &[String]| {
            let (month, name) = (text(&r[0]), text(&r[1]));
            format!(
                r#"{{"query":"Q2_PROFIT","year_month_created_at":{month},"item_name":{name},"profit_sum":{}}}"#,
                r[2]
            )
        };
        let header = ["year_month_created_at", "item_name", "profit_sum"];
        lines.extend(published("results_query_2_2.csv", &header, &[2], q2_profit)?);
        let q3 = |r: &[String]| {
            let (half, name) = (text(&r[0]), text(&r[1]));
            format!(r#"{{"query":"Q3","year_half_created_at":{half},"store_name":{name},"tpv":{}}}"#, r[2])
        };
        lines.extend(published("results_query_3.csv", &["year_half_created_at", "store_name", "tpv"], &[2], q3)?);
        Ok(lines)
    }

    /// The published Q4 rows: `(store_name, birthdate)`.
    pub fn published_q4() -> anyhow::Result<Vec<(String, String)>> {
        published("results_query_4.csv", &["store_name", "birthdate"], &[], |r| (r[0].clone(), r[1].clone()))
    }

    /// Checks a whole result set of the sample: Q1, Q2 and Q3 equal to the published results (as multisets,
    /// numbers as numbers), and Q4 by [`check_q4`].
    pub fn check_against_published(lines: &[String]) -> anyhow::Result<()> {
        let queries = ["Q1", "Q2_QTY", "Q2_PROFIT", "Q3"];
        let ours: Vec<String> = lines.iter().filter(|l| queries.contains(&query_of(l).as_str())).cloned().collect();
        let comparison = coffee_tools::compare::compare_lines(&published_results()?, &ours);
        if !comparison.all_equal() {
            bail!("Q1-Q3 differ from the published results (left: published, right: ours):\n{comparison}");
        }
        check_q4(lines)
    }

    /// Checks the Q4 lines of a result set of the sample against a recount of its transactions: per store, the
    /// 3 users with the most 2024-2025 purchases (fewer when fewer users bought there), a tie going to the lowest
    /// user id, with their counts and birthdates; and the published Q4 (another tie rule) picks users with the
    /// same counts.
    pub fn check_q4(lines: &[String]) -> anyhow::Result<()> {
        let sample = Sample::read(&peer_sample_dir())?;
        let expected = sample.q4_lines();
        let ours: Vec<String> = lines.iter().filter(|l| query_of(l) == "Q4").cloned().collect();
        let comparison = coffee_tools::compare::compare_lines(&expected, &ours);
        if !comparison.all_equal() {
            bail!("Q4 differs from a recount of the sample (left: recount, right: ours):\n{comparison}");
        }
        sample.check_published_q4_counts(&published_q4()?)
    }

    /// The `query` field of a result line ("" when there is none).
    pub fn query_of(line: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        value["query"].as_str().unwrap_or_default().to_owned()
    }

    /// A JSON string literal.
    fn text(s: &str) -> String {
        serde_json::to_string(s).expect("a string always serializes")
    }

    /// Reads a published CSV with the given header, checks that the `numeric` columns are JSON numbers, and maps
    /// each row.
    fn published<T>(
        file: &str,
        header: &[&str],
        numeric: &[usize],
        row: impl Fn(&[String]) -> T,
    ) -> anyhow::Result<Vec<T>> {
        let path = published_results_dir().join(file);
        let mut reader = csv::Reader::from_path(&path).with_context(|| path.display().to_string())?;
        let found: Vec<&str> = reader.headers()?.iter().collect();
        if found != header {
            bail!("{}: header {found:?}, expected {header:?}", path.display());
        }
        let mut rows = Vec::new();
        for record in reader.records() {
            let fields: Vec<String> = record?.iter().map(|f| f.trim().to_owned()).collect();
            for &i in numeric {
                if !serde_json::from_str::<serde_json::Value>(&fields[i]).is_ok_and(|v| v.is_number()) {
                    bail!("{}: `{}` is not a number", path.display(), fields[i]);
                }
            }
            rows.push(row(&fields));
        }
        Ok(rows)
    }

    /// What Q4 needs from the sample, read with the csv crate directly (no project parsing code).
    struct Sample {
        store_names: HashMap<u32, String>,
        birthdates: HashMap<u32, String>,
        /// Purchases per (store, user) in 2024 and 2025.
        purchases: HashMap<(u32, u32), u64>,
    }

    impl Sample {
        fn read(dir: &Path) -> anyhow::Result<Sample> {
            let mut sample =
                Sample { store_names: HashMap::new(), birthdates: HashMap::new(), purchases: HashMap::new() };
            for_each_row(&dir.join("stores"), |r| {
                sample.store_names.insert(id(&r["store_id"])?, r["store_name"].to_owned());
                Ok(())
            })?;
            for_each_row(&dir.join("users"), |r| {
                sample.birthdates.insert(id(&r["user_id"])?, r["birthdate"].to_owned());
                Ok(())
            })?;
            for_each_row(&dir.join("transactions"), |r| {
                let year = &r["created_at"][..4];
                if (year == "2024" || year == "2025") && !r["user_id"].is_empty() {
                    *sample.purchases.entry((id(&r["store_id"])?, id(&r["user_id"])?)).or_default() += 1;
                }
                Ok(())
            })?;
            Ok(sample)
        }

        /// Per store: `(count, user)` from most purchases down, a tie going to the lowest user id.
        fn ranking(&self) -> HashMap<u32, Vec<(u64, u32)>> {
            let mut per_store: HashMap<u32, Vec<(u64, u32)>> = HashMap::new();
            for (&(store, user), &count) in &self.purchases {
                per_store.entry(store).or_default().push((count, user));
            }
            for candidates in per_store.values_mut() {
                candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            }
            per_store
        }

        fn q4_lines(&self) -> Vec<String> {
            let mut lines = Vec::new();
            for (store, candidates) in self.ranking() {
                for &(count, user) in candidates.iter().take(3) {
                    lines.push(format!(
                        r#"{{"query":"Q4","store_name":{},"birthdate":{},"user_id":{user},"purchases_qty":{count}}}"#,
                        text(&self.store_names[&store]),
                        text(self.birthdates.get(&user).map_or("", String::as_str)),
                    ));
                }
            }
            lines
        }

        /// The published Q4 names, per store, as many users as ours, and users whose counts (found back by store
        /// and birthdate) are our top counts.
        fn check_published_q4_counts(&self, published: &[(String, String)]) -> anyhow::Result<()> {
            let ranking = self.ranking();
            for (store, candidates) in &ranking {
                let name = &self.store_names[store];
                let mut counts: Vec<u64> = Vec::new();
                for (_, birthdate) in published.iter().filter(|(s, _)| s == name) {
                    // The best count among this store's buyers born that day (usually exactly one user).
                    let count =
                        candidates.iter().filter(|(_, u)| self.birthdates.get(u) == Some(birthdate)).map(|c| c.0).max();
                    counts.push(count.with_context(|| format!("published Q4 {name} {birthdate}: no such buyer"))?);
                }
                counts.sort_by(|a, b| b.cmp(a));
                let ours: Vec<u64> = candidates.iter().take(3).map(|c| c.0).collect();
                if counts != ours {
                    bail!("published Q4 for {name}: counts {counts:?}, recount gives {ours:?}");
                }
            }
            let stores = published.iter().filter(|(s, _)| !ranking.keys().any(|k| &self.store_names[k] == s)).count();
            if stores > 0 {
                bail!("published Q4 has {stores} rows of stores without identified purchases");
            }
            Ok(())
        }
    }

    /// An id written as `17272` or `17272.0`.
    fn id(text: &str) -> anyhow::Result<u32> {
        let whole = text.strip_suffix(".0").unwrap_or(text);
        whole.parse().with_context(|| format!("`{text}` is not an id"))
    }

    /// Calls `f` with every row (by column name) of every CSV file in `dir`.
    fn for_each_row(
        dir: &Path,
        mut f: impl FnMut(&HashMap<String, String>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| dir.display().to_string())?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.retain(|p| p.extension().is_some_and(|e| e == "csv"));
        for path in files {
            let mut reader = csv::Reader::from_path(&path).with_context(|| path.display().to_string())?;
            let header: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
            for record in reader.records() {
                let record = record.with_context(|| path.display().to_string())?;
                let row: HashMap<String, String> =
                    header.iter().cloned().zip(record.iter().map(str::to_owned)).collect();
                f(&row).with_context(|| path.display().to_string())?;
            }
        }
        Ok(())
    }
}
