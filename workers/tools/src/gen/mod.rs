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

use coffee_model::model::{Cents, FileKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use text::{format_timestamp, push_amount, push_date, push_float_id, push_timestamp, push_uint};

/// How much data to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Scale {
    Tiny,
    /// About 300 k rows: sessions of a few seconds, for tests that need a fault to land mid-session.
    Small,
    Reduced,
    Full,
}

impl FromStr for Scale {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Scale> {
        match s {
            "tiny" => Ok(Scale::Tiny),
            "small" => Ok(Scale::Small),
            "reduced" => Ok(Scale::Reduced),
            "full" => Ok(Scale::Full),
            other => anyhow::bail!("unknown scale `{other}` (expected tiny, small, reduced or full)"),
        }
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scale::Tiny => "tiny",
            Scale::Small => "small",
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
            // 90 k users, 20 k transactions in each of four months.
            Scale::Small => {
                let tx = [(2024, 1), (2024, 7), (2025, 1), (2025, 6)].iter().map(|&(y, m)| Month::new(y, m)).collect();
                Plan::new(false, full_months, |i| 300 * (i + 1), tx, 20_000)
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
        for path in coffee_model::dataset::files_of(out, kind)? {
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

#[cfg(test)]
mod tests;
mod text;
mod tiny;
