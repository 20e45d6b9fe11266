use super::*;
use coffee_model::dataset;
use coffee_model::model::{MenuItem, Store, Transaction, TransactionItem, User};
use std::collections::{HashMap, HashSet};

fn tiny(seed: u64) -> (tempfile::TempDir, GenSummary) {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(&GenOptions { scale: Scale::Tiny, seed, out: dir.path().to_owned() }).unwrap();
    (dir, summary)
}

fn contents(dir: &Path, summary: &GenSummary) -> Vec<(PathBuf, Vec<u8>)> {
    let read = |p: &PathBuf| (p.strip_prefix(dir).unwrap().to_owned(), std::fs::read(p).unwrap());
    summary.files.iter().map(read).collect()
}

#[test]
fn same_seed_same_bytes() {
    let (a, sa) = tiny(7);
    let (b, sb) = tiny(7);
    assert_eq!(contents(a.path(), &sa), contents(b.path(), &sb));
    let (c, sc) = tiny(8);
    assert_ne!(contents(a.path(), &sa), contents(c.path(), &sc));
}

#[test]
fn headers_and_line_ends() {
    let (dir, summary) = tiny(1);
    for path in &summary.files {
        let kind = FileKind::from_dir_name(path.parent().unwrap().file_name().unwrap().to_str().unwrap()).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let first = text.lines().next().unwrap().trim_end_matches('\r');
        assert_eq!(first, kind.header().join(","), "{}", path.display());
        if kind == FileKind::TransactionItems {
            assert!(text.contains("\r\n"), "{} should use CRLF", path.display());
        }
    }
    assert!(dir.path().join("transactions/transactions_202401.csv").is_file());
    assert!(dir.path().join("transaction_items/transaction_items_202312.csv").is_file());
    assert!(dir.path().join("users/users_202310.csv").is_file());
}

#[test]
fn every_row_parses_and_counts_match() {
    let (dir, summary) = tiny(3);
    let d = dir.path();
    let mut bad = Vec::new();
    let mut count = HashMap::new();
    let mut n = |k: FileKind| *count.entry(k).or_insert(0u64) += 1;
    dataset::read_all::<Store>(d, |_| n(FileKind::Stores), |p, b| bad.push((p.to_owned(), b.error))).unwrap();
    dataset::read_all::<MenuItem>(d, |_| n(FileKind::MenuItems), |p, b| bad.push((p.to_owned(), b.error))).unwrap();
    dataset::read_all::<User>(d, |_| n(FileKind::Users), |p, b| bad.push((p.to_owned(), b.error))).unwrap();
    let on_bad = |p: &Path, b: dataset::BadRow| bad.push((p.to_owned(), b.error));
    dataset::read_all::<Transaction>(d, |_| n(FileKind::Transactions), on_bad).unwrap();
    let on_bad = |p: &Path, b: dataset::BadRow| bad.push((p.to_owned(), b.error));
    dataset::read_all::<TransactionItem>(d, |_| n(FileKind::TransactionItems), on_bad).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(count.into_iter().collect::<BTreeMap<_, _>>(), summary.rows);
    assert!(summary.total_rows() > 3_000 && summary.total_rows() < 10_000, "{summary}");
}

#[test]
fn stores_with_commas_are_quoted() {
    let (dir, _) = tiny(1);
    let mut names = Vec::new();
    dataset::read_all::<Store>(dir.path(), |s| names.push(s.store_name), |_, b| panic!("{}", b.error)).unwrap();
    assert_eq!(names.len(), 10);
    assert!(names.contains(&"G Coffee @ Damansara Saujana, \"The Curve\"".to_owned()));
}

#[test]
fn transactions_are_consistent_with_items_and_users() {
    let (dir, _) = tiny(5);
    let d = dir.path();
    let mut registered = HashMap::new();
    let mut ids = HashSet::new();
    dataset::read_all::<User>(d, |u| assert!(ids.insert(u.user_id)), |_, _| panic!()).unwrap();
    // Registration time of each user, read raw since `User` does not keep it.
    for path in dataset::files_of(d, FileKind::Users).unwrap() {
        let mut reader = csv::Reader::from_path(path).unwrap();
        for row in reader.records() {
            let row = row.unwrap();
            registered.insert(row[0].parse::<u32>().unwrap(), row[3].to_owned());
        }
    }
    let mut amounts = HashMap::new();
    let mut anonymous = 0;
    let mut total = 0;
    let mut boundary_times = HashSet::new();
    dataset::read_all::<Transaction>(
        d,
        |t| {
            total += 1;
            let stamp = format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.created_at.year,
                t.created_at.month,
                t.created_at.day,
                t.created_at.secs_of_day / 3600,
                t.created_at.secs_of_day / 60 % 60,
                t.created_at.secs_of_day % 60
            );
            match t.user_id {
                None => anonymous += 1,
                Some(u) => assert!(registered[&u] < stamp, "user {u} buys at {stamp} before registering"),
            }
            if t.final_amount == 7500 {
                boundary_times.insert(t.created_at.secs_of_day);
            }
            amounts.insert(t.transaction_id.to_string(), (t.final_amount, t.created_at));
        },
        |_, _| panic!(),
    )
    .unwrap();
    assert!(anonymous * 4 > total && anonymous * 2 < total, "{anonymous} anonymous of {total}");
    for s in [5 * 3600 + 3599, 6 * 3600, 23 * 3600, 23 * 3600 + 1] {
        assert!(boundary_times.contains(&s), "no 75.00 transaction at second {s}");
    }
    // Items: each belongs to a transaction and carries its timestamp; sums of subtotals match amounts.
    let mut item_sums: HashMap<String, i64> = HashMap::new();
    for path in dataset::files_of(d, FileKind::TransactionItems).unwrap() {
        let mut reader = csv::Reader::from_path(path).unwrap();
        for row in reader.records() {
            let row = row.unwrap();
            let (_, created) = amounts[&row[0]];
            let item = TransactionItem::parse(&coffee_model::model::Record::from(row.iter())).unwrap();
            assert_eq!(item.created_in, created.into());
            let unit = coffee_model::model::parse_cents(row[3].as_bytes(), "unit_price").unwrap();
            assert_eq!(item.subtotal, unit * item.quantity);
            *item_sums.entry(row[0].to_owned()).or_default() += item.subtotal;
        }
    }
    // Without a voucher the final amount is the sum of the items; with one it is less.
    for (id, (amount, _)) in &amounts {
        assert!(*amount <= item_sums[id], "{id}");
    }
}

/// Item ids with the highest month sum of quantity (or of subtotal) in a tiny dataset.
fn top_items(dir: &Path, year: u16, month: u8, profit: bool) -> Vec<u32> {
    let mut sums: BTreeMap<u32, i64> = BTreeMap::new();
    let add = |i: TransactionItem| {
        if (i.created_in.year, i.created_in.month) == (year, month) {
            *sums.entry(i.item_id).or_default() += if profit { i.subtotal } else { i.quantity };
        }
    };
    dataset::read_all::<TransactionItem>(dir, add, |_, _| panic!()).unwrap();
    let top = sums.values().max().copied().unwrap();
    sums.into_iter().filter(|&(_, v)| v == top).map(|(item, _)| item).collect()
}

#[test]
fn tiny_holds_the_edge_cases_for_any_seed() {
    for seed in [2, 99] {
        let (dir, _) = tiny(seed);
        let d = dir.path();
        assert_eq!(top_items(d, 2024, 1, false), [3, 4]);
        assert_eq!(top_items(d, 2024, 1, true), [3, 4]);
        assert_eq!(top_items(d, 2024, 7, true), [5, 8]);
        assert_eq!(top_items(d, 2025, 1, false), [1, 2]);
        let mut tie_store: BTreeMap<(bool, u32), u32> = BTreeMap::new();
        let count = |t: Transaction| {
            if let (TIE_STORE, Some(user)) = (t.store_id, t.user_id) {
                *tie_store.entry((t.created_at.year >= 2024, user)).or_default() += 1;
            }
        };
        dataset::read_all::<Transaction>(d, count, |_, _| panic!()).unwrap();
        let expected =
            [((false, 4), 10), ((true, 9), 2), ((true, 10), 2), ((true, 12), 2), ((true, 20), 4), ((true, 21), 4)];
        assert_eq!(tie_store.into_iter().collect::<Vec<_>>(), expected);
    }
}

#[test]
fn full_plan_has_the_real_scale() {
    let plan = Plan::of(Scale::Full);
    assert_eq!(plan.user_months.len(), 24);
    assert_eq!(plan.tx_months.len(), 24);
    let users = plan.user_start[24] - 1;
    assert!((2_150_000..2_250_000).contains(&users), "{users}");
    let reduced = Plan::of(Scale::Reduced);
    assert_eq!(reduced.user_start, plan.user_start);
    assert_eq!(reduced.tx_months, vec![Month::new(2024, 1), Month::new(2025, 1)]);
    // Nobody can buy on the first day of the first month; the last day sees almost every user.
    assert_eq!(plan.users_before(Month::new(2023, 7), 0), 0);
    assert!(plan.users_before(Month::new(2025, 6), 29) > users - 6_000);
}

#[test]
fn amounts_are_written_like_the_real_files() {
    let text = |cents| {
        let mut b = Vec::new();
        push_amount(&mut b, cents);
        String::from_utf8(b).unwrap()
    };
    assert_eq!(text(6350), "63.5");
    assert_eq!(text(7500), "75.0");
    assert_eq!(text(1225), "12.25");
    assert_eq!(text(5), "0.05");
    assert_eq!(text(-125), "-1.25");
    assert_eq!(text(309_844_000), "3098440.0");
}

#[test]
fn scale_names_round_trip() {
    for scale in [Scale::Tiny, Scale::Small, Scale::Reduced, Scale::Full] {
        assert_eq!(scale.to_string().parse::<Scale>().unwrap(), scale);
    }
    assert!("huge".parse::<Scale>().is_err());
}

#[test]
fn refuses_a_folder_with_other_months() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("transactions");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("transactions_203001.csv"), "x\n").unwrap();
    let opts = GenOptions { scale: Scale::Tiny, seed: 1, out: dir.path().to_owned() };
    assert!(generate(&opts).unwrap_err().to_string().contains("transactions_203001.csv"));
}
