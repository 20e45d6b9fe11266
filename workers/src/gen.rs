//! Deterministic synthetic dataset generator in the real layout and value formats (see `shared/QUERIES.md`).
//!
//! Three scales:
//! - `full`: 24 months (2023-07..2025-06), about 0.5 M transactions and 1.2 M item rows a month, 2.2 M users;
//!   about 3 GB of CSV, written as a stream (nothing is held whole in memory).
//! - `reduced`: what the course calls "reduced": the transactions and items of 2024-01 and 2025-01 only, at full
//!   density, plus all users, stores and menu items.
//! - `tiny`: a few thousand rows over a few months of 2023, 2024 and 2025, plus hand-placed rows on every edge of
//!   the contract (see [`tiny`](#tiny-scenarios) below), for fast tests.
//!
//! Determinism: every file (users of a month, transactions and items of a month) draws from its own ChaCha8
//! stream derived from the seed and the month, so a file does not depend on which other files are written: the
//! `reduced` months are byte-identical to the same months of `full` with the same seed.
//!
//! Shape of the data (so the queries mean something):
//! - user ids are sequential in registration order; a transaction's user registered on an earlier day;
//! - about a third of transactions are anonymous (empty `user_id`);
//! - a small share of purchases come from a few heavy users (Zipf-like ranks, each with a home store), so Q4's
//!   top 3 are clear leaders, while the long tail of casual users ties a lot, as in the real data;
//! - item rows carry their transaction's `created_at`, `subtotal = quantity * unit_price`, and
//!   `original_amount` is the sum of the subtotals; a few transactions use a voucher (a percentage discount), which
//!   gives amounts such as `57.15`.
//!
//! # Tiny scenarios
//! On top of the random rows, `tiny` writes, in every month:
//! - transactions with `final_amount` 74.99, 75.00 and 75.01 at 05:59:59, 06:00:00, 23:00:00 and 23:00:01 (the
//!   edges of Q1 and Q3), also in 2023 months, which no query may count;
//! - for Q4, store [`TIE_STORE`] gets identified purchases only from the scenario (random identified purchases go to
//!   the other stores), so its expected top 3 is known: users 20 and 21 with 4 purchases each, then users 9, 10
//!   and 12 tie at 2 and user 9 wins the third place (a text comparison of ids would pick 10). User 4 buys there 10
//!   times, but only in 2023.
//! - for Q2, extra item rows make two items tie for the top of a month: in 2024-01 Latte and Cappuccino (same
//!   price) tie on both quantity and profit, in 2024-07 Flat White and Matcha Latte tie on profit, in 2025-01
//!   Espresso and Americano tie on quantity. The lowest item id wins each tie.

use crate::model::{Cents, FileKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// How much data to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Scale {
    Tiny,
    Reduced,
    Full,
}

impl FromStr for Scale {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Scale> {
        match s {
            "tiny" => Ok(Scale::Tiny),
            "reduced" => Ok(Scale::Reduced),
            "full" => Ok(Scale::Full),
            other => anyhow::bail!("unknown scale `{other}` (expected tiny, reduced or full)"),
        }
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scale::Tiny => "tiny",
            Scale::Reduced => "reduced",
            Scale::Full => "full",
        })
    }
}

/// What to generate and where.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub scale: Scale,
    pub seed: u64,
    /// The dataset folder; `<out>/<kind>/*.csv` are created (existing files of the same names are overwritten).
    pub out: PathBuf,
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GenSummary {
    /// Data rows (headers excluded) written per kind of file.
    pub rows: BTreeMap<FileKind, u64>,
    /// Every file written, in writing order.
    pub files: Vec<PathBuf>,
}

impl GenSummary {
    /// Data rows written over all files.
    pub fn total_rows(&self) -> u64 {
        self.rows.values().sum()
    }
}

impl fmt::Display for GenSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} files, {} rows (", self.files.len(), self.total_rows())?;
        for (i, (kind, rows)) in self.rows.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{kind} {rows}")?;
        }
        f.write_str(")")
    }
}

/// The store that, in `tiny`, gets identified purchases only from the Q4 tie scenario.
pub const TIE_STORE: u32 = 10;

/// Writes a dataset of `opts.scale` into `opts.out`.
///
/// Refuses to write into a folder that already holds CSV files of the layout that this run would not overwrite
/// (e.g. a `full` dataset when generating `reduced`): readers take every file of a folder, so a mix would be a
/// different dataset.
pub fn generate(opts: &GenOptions) -> anyhow::Result<GenSummary> {
    let plan = Plan::of(opts.scale);
    check_no_stale_files(&opts.out, &plan)?;
    let mut summary = GenSummary::default();
    write_stores(&opts.out, &mut summary)?;
    write_menu_items(&opts.out, &mut summary)?;
    for ui in 0..plan.user_months.len() {
        write_users_month(&opts.out, &plan, opts.seed, ui, &mut summary)?;
    }
    for &month in &plan.tx_months {
        write_transactions_month(&opts.out, &plan, opts.seed, month, &mut summary)?;
    }
    Ok(summary)
}

// ---------------------------------------------------------------------------------------------------------------
// The plan of a scale: which months, how many rows.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Month {
    year: u16,
    month: u8,
}

impl Month {
    const fn new(year: u16, month: u8) -> Month {
        Month { year, month }
    }

    /// Months since year 0, so consecutive months have consecutive indexes.
    fn index(self) -> u32 {
        u32::from(self.year) * 12 + u32::from(self.month) - 1
    }

    fn from_index(i: u32) -> Month {
        Month { year: (i / 12) as u16, month: (i % 12 + 1) as u8 }
    }

    fn days(self) -> u32 {
        days_in_month(self.year, self.month)
    }

    /// `YYYYMM`, the suffix of the monthly file names.
    fn tag(self) -> String {
        format!("{:04}{:02}", self.year, self.month)
    }
}

fn days_in_month(year: u16, month: u8) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        _ => 31,
    }
}

fn month_range(first: Month, last: Month) -> Vec<Month> {
    (first.index()..=last.index()).map(Month::from_index).collect()
}

struct Plan {
    tiny: bool,
    /// Consecutive months with a users file; every transaction month is one of them.
    user_months: Vec<Month>,
    /// `user_start[i]` is the first user id registered in `user_months[i]`; one extra entry ends the last month.
    user_start: Vec<u32>,
    tx_months: Vec<Month>,
    tx_per_month: u32,
    /// Heavy users are ids `1..=heavy_users` (the earliest customers); `heavy_share` of identified purchases are
    /// theirs.
    heavy_users: u32,
    heavy_share: f64,
}

impl Plan {
    fn of(scale: Scale) -> Plan {
        let full_months = month_range(Month::new(2023, 7), Month::new(2025, 6));
        match scale {
            // A linear ramp of sign-ups, 7,333 the first month to 176,000 the last: 2.2 M users.
            Scale::Full => Plan::new(false, full_months.clone(), |i| 7_333 * (i + 1), full_months, 500_000),
            Scale::Reduced => {
                let tx = vec![Month::new(2024, 1), Month::new(2025, 1)];
                Plan::new(false, full_months, |i| 7_333 * (i + 1), tx, 500_000)
            }
            Scale::Tiny => {
                let users = month_range(Month::new(2023, 10), Month::new(2025, 6));
                let tx = [(2023, 11), (2023, 12), (2024, 1), (2024, 6), (2024, 7), (2024, 12), (2025, 1), (2025, 6)];
                let tx = tx.iter().map(|&(y, m)| Month::new(y, m)).collect();
                Plan::new(true, users, |i| 10 + 2 * i, tx, 150)
            }
        }
    }

    fn new(
        tiny: bool,
        user_months: Vec<Month>,
        sign_ups: impl Fn(u32) -> u32,
        tx_months: Vec<Month>,
        tx_per_month: u32,
    ) -> Plan {
        let mut user_start = vec![1];
        for i in 0..user_months.len() as u32 {
            user_start.push(user_start[i as usize] + sign_ups(i));
        }
        let total_users = user_start[user_months.len()] - 1;
        let heavy_users = if tiny { 20 } else { total_users / 200 };
        let heavy_share = if tiny { 0.1 } else { 0.01 };
        Plan { tiny, user_months, user_start, tx_months, tx_per_month, heavy_users, heavy_share }
    }

    fn user_month_index(&self, month: Month) -> usize {
        (month.index() - self.user_months[0].index()) as usize
    }

    fn sign_ups(&self, ui: usize) -> u32 {
        self.user_start[ui + 1] - self.user_start[ui]
    }

    /// How many users (ids `1..=n`) registered before day `day0` (0-based) of `month`.
    fn users_before(&self, month: Month, day0: u32) -> u32 {
        let ui = self.user_month_index(month);
        let spread = Spread::new(self.sign_ups(ui), month.days());
        self.user_start[ui] - 1 + spread.first_of_day(day0)
    }

    /// Every file this plan writes, relative to the dataset folder.
    fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![PathBuf::from("stores/stores.csv"), PathBuf::from("menu_items/menu_items.csv")];
        files.extend(self.user_months.iter().map(|m| monthly_file(FileKind::Users, *m)));
        for m in &self.tx_months {
            files.push(monthly_file(FileKind::Transactions, *m));
            files.push(monthly_file(FileKind::TransactionItems, *m));
        }
        files
    }
}

fn monthly_file(kind: FileKind, month: Month) -> PathBuf {
    Path::new(kind.dir_name()).join(format!("{}_{}.csv", kind.dir_name(), month.tag()))
}

fn check_no_stale_files(out: &Path, plan: &Plan) -> anyhow::Result<()> {
    let planned = plan.files();
    for kind in FileKind::ALL {
        for path in crate::dataset::files_of(out, kind)? {
            let relative = path.strip_prefix(out).unwrap_or(&path);
            if !planned.iter().any(|p| p == relative) {
                anyhow::bail!(
                    "{} holds {}, which this scale does not write: use an empty folder",
                    out.display(),
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// Spreads `n` events in order over the days of a month: event `i` falls on day `i * days / n` (0-based).
struct Spread {
    n: u64,
    days: u64,
}

impl Spread {
    fn new(n: u32, days: u32) -> Spread {
        Spread { n: u64::from(n), days: u64::from(days) }
    }

    /// The first event of day `day0`, i.e. how many events fall on earlier days.
    fn first_of_day(&self, day0: u32) -> u32 {
        ((u64::from(day0) * self.n).div_ceil(self.days)) as u32
    }

    /// The (0-based) day of event `i`, its rank within that day and how many events that day has.
    fn slot(&self, i: u32) -> (u32, u32, u32) {
        let day0 = (u64::from(i) * self.days / self.n) as u32;
        let first = self.first_of_day(day0);
        (day0, i - first, self.first_of_day(day0 + 1) - first)
    }

    /// Second of day of the `rank`-th of `count` events spread over `[start, start + span)`: evenly spaced with
    /// jitter, never going backwards, so files come out in time order like the real ones.
    fn second(rank: u32, count: u32, start: u32, span: u32, rng: &mut ChaCha8Rng) -> u32 {
        let offset = (u64::from(rank) * u64::from(span) + rng.gen_range(0..u64::from(span))) / u64::from(count);
        start + offset as u32
    }
}

/// A fresh random stream for one file: `kind` separates users from transactions, `month` separates months.
fn stream(seed: u64, kind: u64, month: Month) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((kind << 32) | u64::from(month.index()));
    rng
}

// ---------------------------------------------------------------------------------------------------------------
// Dimension tables.

/// id, name, street, postal code, city, state, latitude, longitude. Store 7's name holds a comma and quotes and
/// some streets hold commas, so writers and readers must quote.
#[rustfmt::skip]
const STORES: [[&str; 8]; 10] = [
    ["1", "G Coffee @ USJ 89q", "Jalan Dewan Bahasa 5/9", "50998", "USJ 89q", "Kuala Lumpur", "3.117134", "101.615027"],
    ["2", "G Coffee @ Kondominium Putra", "Jln Yew 6X", "63826", "Kondominium Putra", "Selangor Darul Ehsan", "2.959571", "101.51772"],
    ["3", "G Coffee @ USJ 57W", "Lot 12, Jalan Bukit Petaling 5/16C", "62094", "USJ 57W", "Putrajaya", "2.951038", "101.663698"],
    ["4", "G Coffee @ Kampung Changkat", "Jln 6/6A", "62941", "Kampung Changkat", "Putrajaya", "2.914594", "101.704486"],
    ["5", "G Coffee @ Seksyen 21", "Jalan Anson 4k", "62595", "Seksyen 21", "Putrajaya", "2.937599", "101.698478"],
    ["6", "G Coffee @ Alam Tun Hussein Onn", "Jln Pasar Besar 63s", "63518", "Alam Tun Hussein Onn", "Selangor Darul Ehsan", "3.279175", "101.784923"],
    ["7", "G Coffee @ Damansara Saujana, \"The Curve\"", "No. 8, Jln 8/74", "65438", "Damansara Saujana", "Selangor Darul Ehsan", "3.22081", "101.58459"],
    ["8", "G Coffee @ Bandar Seri Mulia", "Jalan Wisma Putra", "58621", "Bandar Seri Mulia", "Kuala Lumpur", "3.140674", "101.706562"],
    ["9", "G Coffee @ PJS8", "Jalan 7/3o", "62418", "PJS8", "Putrajaya", "2.952444", "101.702623"],
    ["10", "G Coffee @ Taman Damansara", "Jln 2", "67102", "Taman Damansara", "Selangor Darul Ehsan", "3.497178", "101.595271"],
];

/// The menu: item ids are `1..=8` (index + 1); prices in cents.
const MENU: [(&str, &str, Cents); 8] = [
    ("Espresso", "coffee", 600),
    ("Americano", "coffee", 700),
    ("Latte", "coffee", 800),
    ("Cappuccino", "coffee", 800),
    ("Flat White", "coffee", 900),
    ("Mocha", "coffee", 950),
    ("Hot Chocolate", "non-coffee", 900),
    ("Matcha Latte", "non-coffee", 1000),
];

fn price(item: u8) -> Cents {
    MENU[usize::from(item) - 1].2
}

/// A CSV writer of one file, counting its rows into the summary when finished.
struct CsvFile {
    kind: FileKind,
    path: PathBuf,
    writer: csv::Writer<File>,
    rows: u64,
    /// Reused for formatting numbers, so writing a field does not allocate.
    scratch: Vec<u8>,
}

impl CsvFile {
    /// Creates `<out>/<relative>` and writes the header. The csv writer has its own large buffer (it plays the part
    /// of a `BufWriter`); CRLF line ends are used for some kinds so that readers are tested on them.
    fn create(out: &Path, relative: &Path, kind: FileKind, crlf: bool) -> anyhow::Result<CsvFile> {
        let path = out.join(relative);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let terminator = if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') };
        let file = File::create(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut writer = csv::WriterBuilder::new().buffer_capacity(1 << 18).terminator(terminator).from_writer(file);
        writer.write_record(kind.header())?;
        Ok(CsvFile { kind, path, writer, rows: 0, scratch: Vec::with_capacity(64) })
    }

    fn field(&mut self, bytes: &[u8]) -> csv::Result<()> {
        self.writer.write_field(bytes)
    }

    /// Writes a field formatted by `format` into the scratch buffer.
    fn formatted(&mut self, format: impl FnOnce(&mut Vec<u8>)) -> csv::Result<()> {
        self.scratch.clear();
        format(&mut self.scratch);
        self.writer.write_field(&self.scratch)
    }

    fn end_row(&mut self) -> csv::Result<()> {
        self.rows += 1;
        self.writer.write_record(None::<&[u8]>)
    }

    fn finish(self, summary: &mut GenSummary) -> anyhow::Result<()> {
        self.writer.into_inner().map_err(|e| anyhow::anyhow!("{}: {}", self.path.display(), e.error()))?;
        *summary.rows.entry(self.kind).or_default() += self.rows;
        summary.files.push(self.path);
        Ok(())
    }
}

fn write_stores(out: &Path, summary: &mut GenSummary) -> anyhow::Result<()> {
    let mut file = CsvFile::create(out, Path::new("stores/stores.csv"), FileKind::Stores, false)?;
    for store in STORES {
        for field in store {
            file.field(field.as_bytes())?;
        }
        file.end_row()?;
    }
    file.finish(summary)
}

fn write_menu_items(out: &Path, summary: &mut GenSummary) -> anyhow::Result<()> {
    let mut file = CsvFile::create(out, Path::new("menu_items/menu_items.csv"), FileKind::MenuItems, false)?;
    for (i, (name, category, price)) in MENU.iter().enumerate() {
        file.formatted(|b| push_uint(b, i as u64 + 1))?;
        file.field(name.as_bytes())?;
        file.field(category.as_bytes())?;
        file.formatted(|b| push_amount(b, *price))?;
        for field in ["False", "", ""] {
            file.field(field.as_bytes())?;
        }
        file.end_row()?;
    }
    file.finish(summary)
}

const USERS_STREAM: u64 = 1;
const TRANSACTIONS_STREAM: u64 = 2;

/// The users who signed up in user month `ui`, in id (= registration) order, between 08:00 and 22:00.
fn write_users_month(out: &Path, plan: &Plan, seed: u64, ui: usize, summary: &mut GenSummary) -> anyhow::Result<()> {
    let month = plan.user_months[ui];
    let mut rng = stream(seed, USERS_STREAM, month);
    // Users files use CRLF in odd months, LF in even ones: both kinds of line end within one folder.
    let crlf = month.month % 2 == 1;
    let mut file = CsvFile::create(out, &monthly_file(FileKind::Users, month), FileKind::Users, crlf)?;
    let n = plan.sign_ups(ui);
    let spread = Spread::new(n, month.days());
    for i in 0..n {
        let (day0, rank, count) = spread.slot(i);
        let second = Spread::second(rank, count, 8 * 3600, 14 * 3600, &mut rng);
        let birth_year = rng.gen_range(1960..=2009u16);
        let birth_month = rng.gen_range(1..=12u8);
        let birth_day = rng.gen_range(1..=days_in_month(birth_year, birth_month)) as u8;
        file.formatted(|b| push_uint(b, u64::from(plan.user_start[ui] + i)))?;
        file.field(if rng.gen_bool(0.5) { b"female" } else { b"male" })?;
        file.formatted(|b| push_date(b, birth_year, birth_month, birth_day))?;
        file.formatted(|b| push_timestamp(b, month, day0 + 1, second))?;
        file.end_row()?;
    }
    file.finish(summary)
}

// ---------------------------------------------------------------------------------------------------------------
// Transactions and their items.

/// One transaction and its item rows, before formatting.
#[derive(Debug, Clone, Default)]
struct Tx {
    id: [u8; 16],
    store: u32,
    payment: u32,
    voucher: Option<u32>,
    user: Option<u32>,
    /// `(item_id, quantity)`; only the first `n_items` are used.
    items: [(u8, u8); 4],
    n_items: usize,
    discount: Cents,
    /// 1-based day of the month.
    day: u32,
    second: u32,
}

impl Tx {
    fn original(&self) -> Cents {
        self.lines().iter().map(|&(item, qty)| price(item) * Cents::from(qty)).sum()
    }

    fn lines(&self) -> &[(u8, u8)] {
        &self.items[..self.n_items]
    }

    fn push_item(&mut self, item: u8, qty: u8) {
        self.items[self.n_items] = (item, qty);
        self.n_items += 1;
    }
}

/// The transactions and items files of one month, being written together.
struct MonthFiles {
    month: Month,
    transactions: CsvFile,
    items: CsvFile,
    /// Per item (index = id - 1): the month's quantity and subtotal so far, to place the tiny Q2 ties.
    qty: [i64; 8],
    profit: [Cents; 8],
}

impl MonthFiles {
    fn write(&mut self, tx: &Tx) -> anyhow::Result<()> {
        let mut id_text = [0u8; 36];
        let id = uuid::Builder::from_random_bytes(tx.id).into_uuid();
        let id_text = id.hyphenated().encode_lower(&mut id_text).as_bytes();
        let mut stamp = [0u8; 19];
        format_timestamp(&mut stamp, self.month, tx.day, tx.second);
        let original = tx.original();

        let t = &mut self.transactions;
        t.field(id_text)?;
        t.formatted(|b| push_uint(b, u64::from(tx.store)))?;
        t.formatted(|b| push_uint(b, u64::from(tx.payment)))?;
        t.formatted(|b| tx.voucher.iter().for_each(|&v| push_float_id(b, v)))?;
        t.formatted(|b| tx.user.iter().for_each(|&u| push_float_id(b, u)))?;
        t.formatted(|b| push_amount(b, original))?;
        t.formatted(|b| push_amount(b, tx.discount))?;
        t.formatted(|b| push_amount(b, original - tx.discount))?;
        t.field(&stamp)?;
        t.end_row()?;

        for &(item, qty) in tx.lines() {
            let subtotal = price(item) * Cents::from(qty);
            self.qty[usize::from(item) - 1] += i64::from(qty);
            self.profit[usize::from(item) - 1] += subtotal;
            let f = &mut self.items;
            f.field(id_text)?;
            f.formatted(|b| push_uint(b, u64::from(item)))?;
            f.formatted(|b| push_uint(b, u64::from(qty)))?;
            f.formatted(|b| push_amount(b, price(item)))?;
            f.formatted(|b| push_amount(b, subtotal))?;
            f.field(&stamp)?;
            f.end_row()?;
        }
        Ok(())
    }
}

/// Transactions run from 05:00 to midnight, so about a tenth fall outside Q1's and Q3's 06:00-23:00 window.
const OPEN: u32 = 5 * 3600;
const OPEN_SPAN: u32 = 19 * 3600;

fn write_transactions_month(
    out: &Path,
    plan: &Plan,
    seed: u64,
    month: Month,
    summary: &mut GenSummary,
) -> anyhow::Result<()> {
    let mut rng = stream(seed, TRANSACTIONS_STREAM, month);
    let kinds = (FileKind::Transactions, FileKind::TransactionItems);
    let mut files = MonthFiles {
        month,
        transactions: CsvFile::create(out, &monthly_file(kinds.0, month), kinds.0, false)?,
        items: CsvFile::create(out, &monthly_file(kinds.1, month), kinds.1, true)?,
        qty: [0; 8],
        profit: [0; 8],
    };
    let spread = Spread::new(plan.tx_per_month, month.days());
    let mut tx = Tx::default();
    for i in 0..plan.tx_per_month {
        let (day0, rank, count) = spread.slot(i);
        let second = Spread::second(rank, count, OPEN, OPEN_SPAN, &mut rng);
        random_tx(&mut tx, plan, month, day0, second, &mut rng);
        files.write(&tx)?;
    }
    if plan.tiny {
        tiny::write_scenarios(&mut files, &mut rng)?;
    }
    files.transactions.finish(summary)?;
    files.items.finish(summary)
}

/// Fills `tx` with a random transaction on day `day0` (0-based) at `second`.
fn random_tx(tx: &mut Tx, plan: &Plan, month: Month, day0: u32, second: u32, rng: &mut ChaCha8Rng) {
    tx.id = rng.gen();
    tx.day = day0 + 1;
    tx.second = second;
    tx.payment = rng.gen_range(1..=5);
    tx.store = rng.gen_range(1..=STORES.len() as u32);
    tx.user = None;
    let known = plan.users_before(month, day0);
    if known > 0 && rng.gen_ratio(2, 3) {
        let user = pick_user(plan, known, rng);
        tx.user = Some(user);
        if user <= plan.heavy_users && rng.gen_ratio(4, 5) {
            tx.store = home_store(user);
        }
        // In tiny, the Q4 tie store gets identified purchases from its scenario only, so its top 3 is known.
        if plan.tiny && tx.store == TIE_STORE {
            tx.store = rng.gen_range(1..TIE_STORE);
        }
    }
    random_items(tx, rng);
    tx.voucher = None;
    tx.discount = 0;
    if rng.gen_ratio(1, 25) {
        let percent = Cents::from(rng.gen_range(1..=4u8)) * 5;
        tx.voucher = Some(rng.gen_range(1..=30));
        tx.discount = (tx.original() * percent + 50) / 100;
    }
}

/// A user among ids `1..=known`: a heavy user with probability `heavy_share` (rank `r` drawn with probability
/// about proportional to `1/r`), otherwise any user.
fn pick_user(plan: &Plan, known: u32, rng: &mut ChaCha8Rng) -> u32 {
    let heavy = plan.heavy_users.min(known);
    if heavy > 0 && rng.gen_bool(plan.heavy_share) {
        // floor((heavy + 1)^u) for uniform u is r with probability ln((r + 1) / r) / ln(heavy + 1) ~ 1/r.
        let rank = (f64::from(heavy + 1).ln() * rng.gen::<f64>()).exp() as u32;
        rank.clamp(1, heavy)
    } else {
        rng.gen_range(1..=known)
    }
}

/// The store a heavy user usually buys at (spread over all stores).
fn home_store(user: u32) -> u32 {
    (user.wrapping_mul(2_654_435_761) >> 16) % STORES.len() as u32 + 1
}

/// One to four distinct items (2.4 rows per transaction, like the real data), each one to three units, mostly
/// one: about 1.7% of transactions reach 75.00, close to the real share of Q1 rows (1.2%).
fn random_items(tx: &mut Tx, rng: &mut ChaCha8Rng) {
    let n = match rng.gen_range(0..100) {
        0..=19 => 1,
        20..=54 => 2,
        55..=84 => 3,
        _ => 4,
    };
    tx.n_items = 0;
    let mut used = 0u16;
    while tx.n_items < n {
        let item = rng.gen_range(1..=MENU.len() as u8);
        if used & (1 << item) == 0 {
            used |= 1 << item;
            let qty = match rng.gen_range(0..10) {
                0..=4 => 1,
                5..=7 => 2,
                _ => 3,
            };
            tx.push_item(item, qty);
        }
    }
}

/// The hand-placed rows of the `tiny` scale (see the module documentation).
mod tiny {
    use super::*;

    pub(super) fn write_scenarios(files: &mut MonthFiles, rng: &mut ChaCha8Rng) -> anyhow::Result<()> {
        boundaries(files, rng)?;
        q4_ties(files, rng)?;
        // Last, so that the sums the ties are placed against include every other row of the month.
        match (files.month.year, files.month.month) {
            (2024, 1) => q2_quantity_tie(files, rng, 3, 4),
            (2024, 7) => q2_profit_tie(files, rng, 5, 8),
            (2025, 1) => q2_quantity_tie(files, rng, 1, 2),
            _ => Ok(()),
        }
    }

    fn anonymous(rng: &mut ChaCha8Rng, store: u32, day: u32, second: u32) -> Tx {
        Tx { id: rng.gen(), store, payment: 1, day, second, ..Tx::default() }
    }

    /// Final amounts just below, at and above 75.00 at both edges of the 06:00-23:00 window, on the 15th.
    fn boundaries(files: &mut MonthFiles, rng: &mut ChaCha8Rng) -> anyhow::Result<()> {
        let seconds = [5 * 3600 + 59 * 60 + 59, 6 * 3600, 23 * 3600, 23 * 3600 + 1];
        for (i, &second) in seconds.iter().enumerate() {
            for (j, discount) in [501, 0, 499].into_iter().enumerate() {
                let mut tx = anonymous(rng, (i * 3 + j) as u32 % 9 + 1, 15, second);
                if discount == 0 {
                    // 30.00 + 27.00 + 18.00 = 75.00 with no discount.
                    [(8, 3), (5, 3), (7, 2)].into_iter().for_each(|(item, qty)| tx.push_item(item, qty));
                } else {
                    // 30.00 + 27.00 + 16.00 + 7.00 = 80.00, less 5.01 or 4.99 with a voucher.
                    [(8, 3), (5, 3), (3, 2), (2, 1)].into_iter().for_each(|(item, qty)| tx.push_item(item, qty));
                    tx.voucher = Some(7);
                    tx.discount = discount;
                }
                files.write(&tx)?;
            }
        }
        Ok(())
    }

    /// Store [`TIE_STORE`]: users 21 and 20 buy twice a month in 2024-01 and 2025-01, users 12, 10 and 9 once
    /// (4, 4, 2, 2, 2 in all); user 4 buys ten times in 2023-12. Written from the highest id down, so that taking
    /// the first user seen is not the same as taking the lowest id.
    fn q4_ties(files: &mut MonthFiles, rng: &mut ChaCha8Rng) -> anyhow::Result<()> {
        let purchases: &[(u32, u32)] = match (files.month.year, files.month.month) {
            (2024, 1) | (2025, 1) => &[(21, 2), (20, 2), (12, 1), (10, 1), (9, 1)],
            (2023, 12) => &[(4, 10)],
            _ => &[],
        };
        let mut second = 12 * 3600;
        for &(user, times) in purchases {
            for _ in 0..times {
                let mut tx = anonymous(rng, TIE_STORE, 20, second);
                tx.user = Some(user);
                tx.push_item(1, 1);
                files.write(&tx)?;
                second += 1;
            }
        }
        Ok(())
    }

    /// Adds units of items `a` and `b` (same price or not) until both sell exactly one unit more than any item
    /// did; when they have the same price their profit ties too, and it is raised above every other item's.
    fn q2_quantity_tie(files: &mut MonthFiles, rng: &mut ChaCha8Rng, a: u8, b: u8) -> anyhow::Result<()> {
        let mut target = files.qty.iter().max().copied().unwrap_or(0) + 1;
        if price(a) == price(b) {
            let top_profit = files.profit.iter().max().copied().unwrap_or(0);
            target = target.max(top_profit / price(a) + 1);
        }
        let add_a = target - files.qty[usize::from(a) - 1];
        let add_b = target - files.qty[usize::from(b) - 1];
        add_units(files, rng, (b, add_b), (a, add_a))
    }

    /// Adds units of items `a` and `b` (different prices) until both have the same profit, the smallest common
    /// multiple of their prices above every item's profit.
    fn q2_profit_tie(files: &mut MonthFiles, rng: &mut ChaCha8Rng, a: u8, b: u8) -> anyhow::Result<()> {
        let step = lcm(price(a), price(b));
        let top_profit = files.profit.iter().max().copied().unwrap_or(0);
        let target = (top_profit / step + 1) * step;
        let add_a = (target - files.profit[usize::from(a) - 1]) / price(a);
        let add_b = (target - files.profit[usize::from(b) - 1]) / price(b);
        add_units(files, rng, (b, add_b), (a, add_a))
    }

    /// Writes anonymous transactions on the last day of the month holding up to 3 units of each of two items
    /// until `first.1` units of `first.0` and `second.1` units of `second.0` are added.
    fn add_units(
        files: &mut MonthFiles,
        rng: &mut ChaCha8Rng,
        mut first: (u8, i64),
        mut second: (u8, i64),
    ) -> anyhow::Result<()> {
        let day = files.month.days();
        let mut clock = 12 * 3600;
        while first.1 > 0 || second.1 > 0 {
            let mut tx = anonymous(rng, clock % 9 + 1, day, clock);
            for (item, left) in [&mut first, &mut second] {
                if *left > 0 {
                    let qty = (*left).min(3);
                    tx.push_item(*item, qty as u8);
                    *left -= qty;
                }
            }
            files.write(&tx)?;
            clock += 1;
        }
        Ok(())
    }

    fn lcm(a: Cents, b: Cents) -> Cents {
        let (mut x, mut y) = (a, b);
        while y != 0 {
            (x, y) = (y, x % y);
        }
        a / x * b
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Formatting without allocation.

fn push_uint(buf: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// An id written as float text, like the real `user_id` and `voucher_id` columns: `17272.0`.
fn push_float_id(buf: &mut Vec<u8>, id: u32) {
    push_uint(buf, u64::from(id));
    buf.extend_from_slice(b".0");
}

/// An amount written like the real files (Python float text): `63.5`, `75.0`, `12.25`, `0.05`.
fn push_amount(buf: &mut Vec<u8>, cents: Cents) {
    if cents < 0 {
        buf.push(b'-');
    }
    let cents = cents.unsigned_abs();
    push_uint(buf, cents / 100);
    buf.push(b'.');
    let fraction = cents % 100;
    buf.push(b'0' + (fraction / 10) as u8);
    if !fraction.is_multiple_of(10) {
        buf.push(b'0' + (fraction % 10) as u8);
    }
}

fn push_two(buf: &mut [u8], at: usize, v: u32) {
    buf[at] = b'0' + (v / 10 % 10) as u8;
    buf[at + 1] = b'0' + (v % 10) as u8;
}

fn push_date(buf: &mut Vec<u8>, year: u16, month: u8, day: u8) {
    let mut text = *b"0000-00-00";
    push_two(&mut text, 0, u32::from(year) / 100);
    push_two(&mut text, 2, u32::from(year) % 100);
    push_two(&mut text, 5, u32::from(month));
    push_two(&mut text, 8, u32::from(day));
    buf.extend_from_slice(&text);
}

fn format_timestamp(text: &mut [u8; 19], month: Month, day: u32, second: u32) {
    *text = *b"0000-00-00 00:00:00";
    push_two(text, 0, u32::from(month.year) / 100);
    push_two(text, 2, u32::from(month.year) % 100);
    push_two(text, 5, u32::from(month.month));
    push_two(text, 8, day);
    push_two(text, 11, second / 3600);
    push_two(text, 14, second / 60 % 60);
    push_two(text, 17, second % 60);
}

fn push_timestamp(buf: &mut Vec<u8>, month: Month, day: u32, second: u32) {
    let mut text = [0u8; 19];
    format_timestamp(&mut text, month, day, second);
    buf.extend_from_slice(&text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset;
    use crate::model::{MenuItem, Store, Transaction, TransactionItem, User};
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
                amounts.insert(t.transaction_id, (t.final_amount, t.created_at));
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
                let item = TransactionItem::parse(&row.as_byte_record().clone()).unwrap();
                assert_eq!(item.created_at, created);
                let unit = crate::model::parse_cents(&row[3], "unit_price").unwrap();
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
            if (i.created_at.year, i.created_at.month) == (year, month) {
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
        for scale in [Scale::Tiny, Scale::Reduced, Scale::Full] {
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
}
