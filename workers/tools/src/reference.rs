//! The reference (oracle): a plain, single-process, single-pass implementation of Q1-Q4 (`shared/QUERIES.md`).
//!
//! It shares no query code with the pipeline, only the row parsing of [`coffee_model::model`] and [`coffee_model::dataset`], so
//! comparing the two checks the distributed query logic. It streams every file once and keeps only aggregates:
//! store and item names, users' birthdates, Q1's result lines, and the sums and counts of Q2, Q3 and Q4.
//!
//! Joins with a dimension table never change which rows are chosen: rows are ranked first, and a name or
//! birthdate that the dimension files lack prints as an empty string. The real data always has them; this only
//! makes the rule explicit, so the pipeline can follow the same one (see [`q4_lines`]).

use coffee_model::dataset::{self, BadRow};
use coffee_model::model::{Cents, Date, MenuItem, Store, Transaction, TransactionItem, User};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

/// The result of one reference run.
#[derive(Debug, Clone)]
pub struct ReferenceReport {
    /// One NDJSON result line each, in a fixed order: Q1 in file order, then Q2_QTY, Q2_PROFIT, Q3 and Q4, each
    /// sorted by its key.
    pub lines: Vec<String>,
    /// Data rows read from every file, good and malformed (headers excluded).
    pub rows_read: u64,
    /// Rows that failed to parse and were skipped.
    pub malformed: u64,
    /// Files skipped whole for a wrong header, with why (the client refuses the same files).
    pub refused: Vec<String>,
    pub elapsed: Duration,
}

/// Runs the four queries over the dataset folder `data_dir` (`<kind>/*.csv`).
///
/// Malformed rows are counted and skipped, a file with a wrong header is skipped and listed (as the client does);
/// an unreadable file is an error.
pub fn run(data_dir: &Path) -> anyhow::Result<ReferenceReport> {
    let start = Instant::now();
    let mut rows = RowCounts::default();
    let stores = read_dimension::<Store, _>(data_dir, &mut rows, |s| (s.store_id, s.store_name))?;
    let items = read_dimension::<MenuItem, _>(data_dir, &mut rows, |m| (m.item_id, m.item_name))?;
    let birthdates = read_dimension::<User, _>(data_dir, &mut rows, |u| (u.user_id, u.birthdate))?;

    let mut transactions = TransactionAggregates::default();
    read_counted::<Transaction>(data_dir, &mut rows, |t| transactions.add(&t))?;
    let mut months = ItemSums::default();
    read_counted::<TransactionItem>(data_dir, &mut rows, |i| months.add(&i))?;

    let mut lines = transactions.q1_lines;
    lines.extend(q2_lines(&months, &items));
    lines.extend(q3_lines(&transactions.tpv, &stores));
    lines.extend(q4_lines(&transactions.purchases, &stores, &birthdates));
    #[cfg(feature = "example-query")]
    lines.extend(transactions.per_store.iter().map(|(store, count)| {
        let name = json(stores.get(store).map_or("", String::as_str));
        format!(r#"{{"query":"Q5","store_name":{name},"transactions":{count}}}"#)
    }));
    Ok(ReferenceReport {
        lines,
        rows_read: rows.good + rows.bad,
        malformed: rows.bad,
        refused: rows.refused,
        elapsed: start.elapsed(),
    })
}

/// Runs [`run`] and writes its lines to `out`, one per line.
pub fn write(data_dir: &Path, out: &Path) -> anyhow::Result<ReferenceReport> {
    use std::io::Write;
    let report = run(data_dir)?;
    let file = std::fs::File::create(out).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    for line in &report.lines {
        writer.write_all(line.as_bytes())?;
        writer.write_all(b"\n")?;
    }
    writer.flush()?;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------------------------
// Reading.

#[derive(Default)]
struct RowCounts {
    good: u64,
    bad: u64,
    refused: Vec<String>,
}

/// Reads every row of `R`'s files, counting good and malformed rows and skipping files with a wrong header.
fn read_counted<R: dataset::Row>(
    data_dir: &Path,
    rows: &mut RowCounts,
    mut on_row: impl FnMut(R),
) -> anyhow::Result<()> {
    let RowCounts { good, bad, refused } = rows;
    for path in dataset::files_of(data_dir, R::KIND)? {
        let outcome = dataset::read_file::<R>(
            &path,
            |row| {
                *good += 1;
                on_row(row);
            },
            |_: BadRow| *bad += 1,
        );
        match outcome {
            Ok(()) => {}
            Err(e @ dataset::DatasetError::Header { .. }) => refused.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads a dimension table into a map from id to the value a query joins with.
fn read_dimension<R: dataset::Row, V>(
    data_dir: &Path,
    rows: &mut RowCounts,
    entry: impl Fn(R) -> (u32, V),
) -> anyhow::Result<HashMap<u32, V>> {
    let mut map = HashMap::new();
    read_counted::<R>(data_dir, rows, |row| {
        let (id, value) = entry(row);
        map.insert(id, value);
    })?;
    Ok(map)
}

/// The only years any query counts.
fn in_years(year: u16) -> bool {
    year == 2024 || year == 2025
}

/// Q1's and Q3's time window: 06:00:00 to 23:00:00, both ends included.
fn in_hours(secs_of_day: u32) -> bool {
    (6 * 3600..=23 * 3600).contains(&secs_of_day)
}

const Q1_MIN_AMOUNT: Cents = 7500;

/// Semester key of Q3: year and half (1 for months 1-6, 2 for 7-12).
type Half = (u16, u8);

/// What the transactions contribute: Q1's lines as found, Q3's sums, Q4's counts.
#[derive(Default)]
struct TransactionAggregates {
    q1_lines: Vec<String>,
    /// Q3: total payment value per (semester, store).
    tpv: HashMap<(Half, u32), Cents>,
    /// Q4: purchases per (store, user).
    purchases: HashMap<(u32, u32), u64>,
    /// The tests' example query: transactions per store.
    #[cfg(feature = "example-query")]
    per_store: BTreeMap<u32, u64>,
}

impl TransactionAggregates {
    fn add(&mut self, t: &Transaction) {
        let at = t.created_at;
        if !in_years(at.year) {
            return;
        }
        #[cfg(feature = "example-query")]
        {
            *self.per_store.entry(t.store_id).or_default() += 1;
        }
        if in_hours(at.secs_of_day) {
            if t.final_amount >= Q1_MIN_AMOUNT {
                self.q1_lines.push(q1_line(&t.transaction_id.to_string(), t.final_amount));
            }
            let half = if at.month <= 6 { 1 } else { 2 };
            *self.tpv.entry(((at.year, half), t.store_id)).or_default() += t.final_amount;
        }
        if let Some(user) = t.user_id {
            *self.purchases.entry((t.store_id, user)).or_default() += 1;
        }
    }
}

/// Q2: quantity and subtotal sums per (year, month, item).
#[derive(Default)]
struct ItemSums {
    sums: HashMap<(u16, u8, u32), (i64, Cents)>,
}

impl ItemSums {
    fn add(&mut self, i: &TransactionItem) {
        let at = i.created_in;
        if in_years(at.year) {
            let sum = self.sums.entry((at.year, at.month, i.item_id)).or_default();
            sum.0 += i.quantity;
            sum.1 += i.subtotal;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Results.

fn q1_line(transaction_id: &str, final_amount: Cents) -> String {
    format!(r#"{{"query":"Q1","transaction_id":{},"final_amount":{}}}"#, json(transaction_id), money(final_amount))
}

/// The best `(value, item_id)` of a month so far, if any.
type Best = Option<(i64, u32)>;

/// Whether `candidate` beats `best`: a higher value wins, an equal value goes to the lower item id.
fn better(candidate: (i64, u32), best: Best) -> bool {
    match best {
        None => true,
        Some((value, item)) => candidate.0 > value || (candidate.0 == value && candidate.1 < item),
    }
}

/// Q2: per month, the item with the most units sold and the item with the highest subtotal sum.
fn q2_lines(months: &ItemSums, names: &HashMap<u32, String>) -> Vec<String> {
    // Per (year, month): the best (quantity, item) and the best (profit, item).
    let mut best: BTreeMap<(u16, u8), (Best, Best)> = BTreeMap::new();
    for (&(year, month, item), &(qty, profit)) in &months.sums {
        let (top_qty, top_profit) = best.entry((year, month)).or_default();
        if better((qty, item), *top_qty) {
            *top_qty = Some((qty, item));
        }
        if better((profit, item), *top_profit) {
            *top_profit = Some((profit, item));
        }
    }
    let name = |item: u32| json(names.get(&item).map_or("", String::as_str));
    let mut qty_lines = Vec::new();
    let mut profit_lines = Vec::new();
    for ((year, month), (top_qty, top_profit)) in best {
        let ym = json(&format!("{year:04}-{month:02}"));
        if let Some((qty, item)) = top_qty {
            qty_lines.push(format!(
                r#"{{"query":"Q2_QTY","year_month_created_at":{ym},"item_name":{},"sellings_qty":{qty}}}"#,
                name(item)
            ));
        }
        if let Some((profit, item)) = top_profit {
            profit_lines.push(format!(
                r#"{{"query":"Q2_PROFIT","year_month_created_at":{ym},"item_name":{},"profit_sum":{}}}"#,
                name(item),
                money(profit)
            ));
        }
    }
    qty_lines.extend(profit_lines);
    qty_lines
}

/// Q3: one line per (semester, store) that had a transaction in the window.
fn q3_lines(tpv: &HashMap<(Half, u32), Cents>, stores: &HashMap<u32, String>) -> Vec<String> {
    let sorted: BTreeMap<_, _> = tpv.iter().collect();
    sorted
        .into_iter()
        .map(|(&((year, half), store), &cents)| {
            format!(
                r#"{{"query":"Q3","year_half_created_at":"{year}-H{half}","store_name":{},"tpv":{}}}"#,
                json(stores.get(&store).map_or("", String::as_str)),
                money(cents)
            )
        })
        .collect()
}

/// Q4: per store, the 3 users with the most purchases (fewer if the store has fewer identified buyers), a tie
/// going to the lowest user id.
///
/// Decision for a user without a row in the users files (never the case in the real data): the user is ranked
/// like any other (the ranking uses the transactions only) and printed with an empty `birthdate`; the run does
/// not fail and the user is not skipped, so the top 3 never depends on the users files.
fn q4_lines(
    purchases: &HashMap<(u32, u32), u64>,
    stores: &HashMap<u32, String>,
    birthdates: &HashMap<u32, Date>,
) -> Vec<String> {
    let mut per_store: BTreeMap<u32, Vec<(u64, u32)>> = BTreeMap::new();
    for (&(store, user), &count) in purchases {
        per_store.entry(store).or_default().push((count, user));
    }
    let mut lines = Vec::new();
    for (store, mut candidates) in per_store {
        // Most purchases first; among equal counts, the lowest user id first.
        candidates.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let store_name = json(stores.get(&store).map_or("", String::as_str));
        for &(count, user) in candidates.iter().take(3) {
            let birthdate = birthdates.get(&user).map(Date::to_string).unwrap_or_default();
            lines.push(format!(
                r#"{{"query":"Q4","store_name":{store_name},"birthdate":{},"user_id":{user},"purchases_qty":{count}}}"#,
                json(&birthdate)
            ));
        }
    }
    lines
}

/// A JSON string literal.
fn json(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// Exact cents as a JSON number with two decimals: `75.50`, `3098440.00`, `-0.05`.
fn money(cents: Cents) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffee_model::model::FileKind;
    use std::path::PathBuf;

    /// A dataset folder written from CSV bodies (the header is added).
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let f = Fixture { dir: tempfile::tempdir().unwrap() };
            f.file(
                FileKind::Stores,
                "stores.csv",
                &["1,Store One,s,1,c,st,1.0,2.0", "2,\"Two, \"\"Quoted\"\"\",s,1,c,st,1,2"],
            );
            f.file(
                FileKind::MenuItems,
                "menu_items.csv",
                &["1,Espresso,coffee,6.0,False,,", "2,Latte,coffee,8.0,False,,", "3,Mocha,coffee,9.5,False,,"],
            );
            f
        }

        fn file(&self, kind: FileKind, name: &str, rows: &[&str]) -> PathBuf {
            let dir = self.dir.path().join(kind.dir_name());
            std::fs::create_dir_all(&dir).unwrap();
            let mut body = kind.header().join(",");
            for row in rows {
                body.push_str("\r\n");
                body.push_str(row);
            }
            body.push('\n');
            let path = dir.join(name);
            std::fs::write(&path, body).unwrap();
            path
        }

        fn transactions(&self, name: &str, rows: &[&str]) {
            self.file(FileKind::Transactions, name, rows);
        }

        fn items(&self, name: &str, rows: &[&str]) {
            self.file(FileKind::TransactionItems, name, rows);
        }

        fn users(&self, rows: &[&str]) {
            self.file(FileKind::Users, "users_202401.csv", rows);
        }

        fn lines(&self, query: &str) -> Vec<String> {
            let report = run(self.dir.path()).unwrap();
            let tag = format!(r#"{{"query":"{query}","#);
            report.lines.into_iter().filter(|l| l.starts_with(&tag)).collect()
        }
    }

    /// A transaction row: id, store, user (empty or float text), final amount, timestamp.
    fn tx(id: &str, store: u32, user: &str, amount: &str, at: &str) -> String {
        format!("{id},{store},1,,{user},{amount},0.0,{amount},{at}")
    }

    fn item(item: u32, qty: u32, unit: &str, subtotal: &str, at: &str) -> String {
        format!("t,{item},{qty},{unit},{subtotal},{at}")
    }

    #[test]
    fn q1_window_amount_and_years() {
        let f = Fixture::new();
        let rows = [
            tx("at-06", 1, "", "75.0", "2024-03-01 06:00:00"),
            tx("at-23", 1, "", "75.50", "2025-03-01 23:00:00"),
            tx("before-06", 1, "", "80.0", "2024-03-01 05:59:59"),
            tx("after-23", 1, "", "80.0", "2024-03-01 23:00:01"),
            tx("below", 1, "", "74.99", "2024-03-01 12:00:00"),
            tx("year-2023", 1, "", "90.0", "2023-12-31 12:00:00"),
            tx("year-2026", 1, "", "90.0", "2026-01-01 12:00:00"),
            tx("big", 2, "7.0", "1234.05", "2024-12-31 22:59:59"),
        ];
        f.transactions("transactions_202403.csv", &rows.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            f.lines("Q1"),
            [
                r#"{"query":"Q1","transaction_id":"at-06","final_amount":75.00}"#,
                r#"{"query":"Q1","transaction_id":"at-23","final_amount":75.50}"#,
                r#"{"query":"Q1","transaction_id":"big","final_amount":1234.05}"#,
            ]
        );
    }

    #[test]
    fn q3_sums_exact_cents_per_half_and_store() {
        let f = Fixture::new();
        let rows = [
            tx("a", 1, "", "0.10", "2024-06-30 06:00:00"),
            tx("b", 1, "", "0.20", "2024-01-01 23:00:00"),
            tx("c", 1, "", "1000.00", "2024-06-30 05:59:59"),
            tx("d", 1, "", "5.0", "2024-07-01 12:00:00"),
            tx("e", 2, "", "12.25", "2025-02-01 12:00:00"),
            tx("f", 2, "", "9.0", "2023-02-01 12:00:00"),
        ];
        f.transactions("t.csv", &rows.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            f.lines("Q3"),
            [
                r#"{"query":"Q3","year_half_created_at":"2024-H1","store_name":"Store One","tpv":0.30}"#,
                r#"{"query":"Q3","year_half_created_at":"2024-H2","store_name":"Store One","tpv":5.00}"#,
                r#"{"query":"Q3","year_half_created_at":"2025-H1","store_name":"Two, \"Quoted\"","tpv":12.25}"#,
            ]
        );
    }

    #[test]
    fn q2_per_month_with_ties_to_the_lowest_item() {
        let f = Fixture::new();
        let rows = [
            // 2024-01: quantities 1 -> 5, 2 -> 5 (tie: item 1); profit 1 -> 30.00, 2 -> 40.00, 3 -> 40.00 (tie: 2).
            item(2, 5, "8.0", "40.0", "2024-01-31 23:59:59"),
            item(1, 5, "6.0", "30.0", "2024-01-01 00:00:00"),
            item(3, 2, "20.0", "40.0", "2024-01-15 12:00:00"),
            // 2025-06: no hour filter for Q2; item 3 alone.
            item(3, 1, "9.5", "9.5", "2025-06-30 03:00:00"),
            // 2023 never counts, even with the largest sums.
            item(1, 100, "6.0", "600.0", "2023-12-31 12:00:00"),
        ];
        f.items("i.csv", &rows.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            f.lines("Q2_QTY"),
            [
                r#"{"query":"Q2_QTY","year_month_created_at":"2024-01","item_name":"Espresso","sellings_qty":5}"#,
                r#"{"query":"Q2_QTY","year_month_created_at":"2025-06","item_name":"Mocha","sellings_qty":1}"#,
            ]
        );
        assert_eq!(
            f.lines("Q2_PROFIT"),
            [
                r#"{"query":"Q2_PROFIT","year_month_created_at":"2024-01","item_name":"Latte","profit_sum":40.00}"#,
                r#"{"query":"Q2_PROFIT","year_month_created_at":"2025-06","item_name":"Mocha","profit_sum":9.50}"#,
            ]
        );
    }

    #[test]
    fn q4_top_three_per_store_ties_to_the_lowest_user() {
        let f = Fixture::new();
        f.users(&[
            "9,male,1990-01-09,2023-01-01 00:00:00",
            "10,female,1990-01-10,2023-01-01 00:00:00",
            "12,male,1990-01-12,2023-01-01 00:00:00",
            "20,male,1990-01-20,2023-01-01 00:00:00",
        ]);
        let mut rows = Vec::new();
        // Store 1: user 20 buys 3 times (any hour), users 12, 10 and 9 twice (9 wins the tie, not "10"), user 4
        // five times in 2023 only; anonymous purchases never count.
        for (user, n, at) in [
            (20, 3, "2024-05-01 02:00:00"),
            (12, 2, "2025-01-01 23:59:59"),
            (10, 2, "2024-01-01 12:00:00"),
            (9, 2, "2024-01-01 12:00:00"),
            (4, 5, "2023-12-31 12:00:00"),
        ] {
            rows.extend((0..n).map(|i| tx(&format!("s1-{user}-{i}"), 1, &format!("{user}.0"), "1.0", at)));
        }
        rows.extend((0..9).map(|i| tx(&format!("anon-{i}"), 1, "", "1.0", "2024-01-01 12:00:00")));
        // Store 2: a single buyer, with no users row.
        rows.push(tx("s2", 2, "77", "1.0", "2024-01-01 12:00:00"));
        f.transactions("t.csv", &rows.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            f.lines("Q4"),
            [
                r#"{"query":"Q4","store_name":"Store One","birthdate":"1990-01-20","user_id":20,"purchases_qty":3}"#,
                r#"{"query":"Q4","store_name":"Store One","birthdate":"1990-01-09","user_id":9,"purchases_qty":2}"#,
                r#"{"query":"Q4","store_name":"Store One","birthdate":"1990-01-10","user_id":10,"purchases_qty":2}"#,
                r#"{"query":"Q4","store_name":"Two, \"Quoted\"","birthdate":"","user_id":77,"purchases_qty":1}"#,
            ]
        );
    }

    #[test]
    fn malformed_rows_are_counted_and_skipped() {
        let f = Fixture::new();
        let good = tx("ok", 1, "", "80.0", "2024-01-01 12:00:00");
        f.transactions("t.csv", &[&good, "bad,1,1,,,x,0.0,x,2024-01-01 12:00:00", "short,1"]);
        f.items("i.csv", &[&item(1, 1, "6.0", "6.0", "2024-01-01 12:00:00"), "t,1,one,6.0,6.0,2024-01-01 12:00:00"]);
        let report = run(f.dir.path()).unwrap();
        // 2 stores + 3 menu items + 3 transactions + 2 items.
        assert_eq!((report.rows_read, report.malformed), (10, 3));
        assert_eq!(report.lines.iter().filter(|l| l.contains(r#""Q1""#)).count(), 1);
    }

    #[test]
    fn missing_names_print_empty_and_write_makes_ndjson() {
        let f = Fixture::new();
        f.items("i.csv", &[&item(42, 1, "6.0", "6.0", "2024-01-01 12:00:00")]);
        f.transactions("t.csv", &[&tx("x", 42, "", "1.0", "2024-01-01 12:00:00")]);
        let out = f.dir.path().join("out.ndjson");
        let report = write(f.dir.path(), &out).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text.lines().collect::<Vec<_>>(), report.lines);
        assert!(text.contains(r#""item_name":"","sellings_qty":1"#), "{text}");
        assert!(text.contains(r#""store_name":"","tpv":1.00"#), "{text}");
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    #[test]
    fn money_has_two_decimals() {
        assert_eq!(money(7550), "75.50");
        assert_eq!(money(309_844_000), "3098440.00");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(-5), "-0.05");
        assert_eq!(money(0), "0.00");
    }
}
