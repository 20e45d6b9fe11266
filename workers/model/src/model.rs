//! Typed rows of the five input files and their parsing from CSV records.
//!
//! Parsing is the one piece of code the pipeline and the reference share (the contract allows it): both see the
//! same typed rows, so a disagreement between them is always a disagreement about query logic.
//!
//! Money is exact: amounts are parsed straight from their decimal text into integer cents, never through `f64`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount of money in integer cents.
pub type Cents = i64;

/// Why one CSV row was rejected. The row is skipped and counted; the rest of the file goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("expected {expected} fields, found {found}")]
    FieldCount { expected: usize, found: usize },
    #[error("field `{field}`: {problem}")]
    Field { field: &'static str, problem: String },
}

fn field_error(field: &'static str, problem: impl Into<String>) -> RowError {
    RowError::Field { field, problem: problem.into() }
}

/// A `created_at` timestamp reduced to what the queries look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    /// Seconds since midnight.
    pub secs_of_day: u32,
}

/// A calendar date (`birthdate`), kept so it prints back exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A transaction's id, printed back exactly as the file wrote it. An id in a UUID's canonical text (36
/// lowercase hex digits and hyphens, as every id of the course's data is) travels as its 16 bytes: as text, ids
/// were half of every byte the broker carried. Any other id is kept as its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransactionId {
    Uuid([u8; 16]),
    Text(String),
}

impl TransactionId {
    pub fn new(text: &str) -> TransactionId {
        let b = text.as_bytes();
        let canonical = b.len() == 36
            && b.iter().enumerate().all(|(i, &c)| match i {
                8 | 13 | 18 | 23 => c == b'-',
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
            });
        match uuid::Uuid::try_parse_ascii(b) {
            Ok(uuid) if canonical => TransactionId::Uuid(uuid.into_bytes()),
            _ => TransactionId::Text(text.to_owned()),
        }
    }
}

impl From<&str> for TransactionId {
    fn from(text: &str) -> Self {
        TransactionId::new(text)
    }
}

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransactionId::Uuid(bytes) => fmt::Display::fmt(&uuid::Uuid::from_bytes(*bytes).hyphenated(), f),
            TransactionId::Text(text) => f.write_str(text),
        }
    }
}

impl PartialEq<&str> for TransactionId {
    fn eq(&self, other: &&str) -> bool {
        *self == TransactionId::new(other)
    }
}

/// One row of `transactions/*.csv`, projected to the columns the queries use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub transaction_id: TransactionId,
    pub store_id: u32,
    pub user_id: Option<u32>,
    pub final_amount: Cents,
    pub created_at: Timestamp,
}

/// The month a timestamp falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Month {
    pub year: u16,
    pub month: u8,
}

impl From<Timestamp> for Month {
    fn from(t: Timestamp) -> Month {
        Month { year: t.year, month: t.month }
    }
}

/// One row of `transaction_items/*.csv`, projected: of its `created_at`, only the month (all any query looks
/// at), which keeps the largest file's rows at about half their size on the wire. The whole timestamp is still
/// checked when the row is parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionItem {
    pub item_id: u32,
    pub quantity: i64,
    pub subtotal: Cents,
    pub created_in: Month,
}

/// One row of `users/*.csv`, projected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub user_id: u32,
    pub birthdate: Date,
}

/// One row of `stores/stores.csv`, projected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    pub store_id: u32,
    pub store_name: String,
}

/// One row of `menu_items/menu_items.csv`, projected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MenuItem {
    pub item_id: u32,
    pub item_name: String,
}

/// The five kinds of input file, in the order a client sends them (dimension tables first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FileKind {
    Stores,
    MenuItems,
    Users,
    Transactions,
    TransactionItems,
}

impl FileKind {
    pub const ALL: [FileKind; 5] =
        [FileKind::Stores, FileKind::MenuItems, FileKind::Users, FileKind::Transactions, FileKind::TransactionItems];

    /// The folder of the dataset that holds files of this kind.
    pub fn dir_name(self) -> &'static str {
        match self {
            FileKind::Stores => "stores",
            FileKind::MenuItems => "menu_items",
            FileKind::Users => "users",
            FileKind::Transactions => "transactions",
            FileKind::TransactionItems => "transaction_items",
        }
    }

    /// The exact header a file of this kind starts with.
    pub fn header(self) -> &'static [&'static str] {
        match self {
            FileKind::Stores => {
                &["store_id", "store_name", "street", "postal_code", "city", "state", "latitude", "longitude"]
            }
            FileKind::MenuItems => {
                &["item_id", "item_name", "category", "price", "is_seasonal", "available_from", "available_to"]
            }
            FileKind::Users => &["user_id", "gender", "birthdate", "registered_at"],
            FileKind::Transactions => &[
                "transaction_id",
                "store_id",
                "payment_method_id",
                "voucher_id",
                "user_id",
                "original_amount",
                "discount_applied",
                "final_amount",
                "created_at",
            ],
            FileKind::TransactionItems => {
                &["transaction_id", "item_id", "quantity", "unit_price", "subtotal", "created_at"]
            }
        }
    }

    pub fn from_dir_name(name: &str) -> Option<FileKind> {
        FileKind::ALL.into_iter().find(|k| k.dir_name() == name)
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir_name())
    }
}

/// One CSV record: its fields as bytes, unquoted.
pub type Record = simd_csv::ByteRecord;

fn check_len(record: &Record, expected: usize) -> Result<(), RowError> {
    if record.len() == expected {
        Ok(())
    } else {
        Err(RowError::FieldCount { expected, found: record.len() })
    }
}

/// A field whose value is text (ids, names): it must be UTF-8.
fn text<'r>(record: &'r Record, index: usize, field: &'static str) -> Result<&'r str, RowError> {
    std::str::from_utf8(&record[index]).map_err(|_| field_error(field, "not UTF-8"))
}

/// A field whose value is a number, a date or a timestamp: ASCII when it is valid, so it is read as bytes with
/// no UTF-8 pass; only an error message shows it as text.
fn number(record: &Record, index: usize) -> &[u8] {
    &record[index]
}

/// The bytes of a field as text for an error message.
fn shown(s: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(s)
}

/// Decimal digits after an optional `+`, as `str::parse` reads an unsigned integer; `None` if there are none,
/// another byte is among them, or the value passes `u64`.
fn unsigned(s: &[u8]) -> Option<u64> {
    let digits = s.strip_prefix(b"+").unwrap_or(s);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &b| {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// An integer with an optional sign, as `str::parse::<i64>` reads it.
fn signed(s: &[u8]) -> Option<i64> {
    match s.strip_prefix(b"-") {
        Some(magnitude) if !magnitude.starts_with(b"+") => {
            let magnitude = unsigned(magnitude)?;
            // `i64::MIN`'s magnitude is one past `i64::MAX`.
            (magnitude <= i64::MAX as u64 + 1).then(|| (magnitude as i64).wrapping_neg())
        }
        Some(_) => None,
        None => i64::try_from(unsigned(s)?).ok(),
    }
}

/// Parses a whole number with an optional sign (`2`, `-1`).
pub fn parse_integer(s: &[u8], field: &'static str) -> Result<i64, RowError> {
    signed(s.trim_ascii()).ok_or_else(|| field_error(field, format!("`{}` is not a whole number", shown(s))))
}

/// Parses an id written as integer text (`17272`) or float text with a zero fraction (`17272.0`).
pub fn parse_id(s: &[u8], field: &'static str) -> Result<u32, RowError> {
    let t = s.trim_ascii();
    let whole = match t.iter().position(|&b| b == b'.') {
        Some(dot) if t[dot + 1..].iter().all(|&b| b == b'0') => &t[..dot],
        Some(_) => return Err(field_error(field, format!("`{}` is not a whole id", shown(t)))),
        None => t,
    };
    unsigned(whole)
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| field_error(field, format!("`{}` is not a whole number", shown(whole))))
}

/// Parses a decimal amount with at most two decimals (`63.5`, `-0.05`, `12`) into exact cents.
pub fn parse_cents(s: &[u8], field: &'static str) -> Result<Cents, RowError> {
    let bad = || field_error(field, format!("`{}` is not an amount with at most two decimals", shown(s)));
    let t = s.trim_ascii();
    let (negative, t) = match t.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (whole, frac) = match t.iter().position(|&b| b == b'.') {
        Some(dot) => (&t[..dot], &t[dot + 1..]),
        None => (t, &[][..]),
    };
    if whole.is_empty() || !whole.iter().all(u8::is_ascii_digit) || !frac.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    // Extra decimals are accepted only when they are zeros ("75.500" is still exact).
    let (cents_digits, rest) = frac.split_at(frac.len().min(2));
    if !rest.iter().all(|&b| b == b'0') {
        return Err(bad());
    }
    let whole = i64::try_from(unsigned(whole).ok_or_else(bad)?).map_err(|_| bad())?;
    let cents = match cents_digits {
        [] => 0,
        [tenths] => i64::from(tenths - b'0') * 10,
        [tenths, hundredths] => i64::from(tenths - b'0') * 10 + i64::from(hundredths - b'0'),
        _ => unreachable!("at most two digits"),
    };
    let value = whole.checked_mul(100).and_then(|w| w.checked_add(cents)).ok_or_else(bad)?;
    Ok(if negative { -value } else { value })
}

/// `b` as an array of `N` bytes if it has the shape of `shape`: an ASCII digit where `shape` has `d`, the same byte
/// elsewhere. Every byte is looked at (no early exit), so the loop unrolls into straight-line code: dates and
/// timestamps are on every row, and a digit-by-digit parse was a tenth of the client's time.
fn shaped<'b, const N: usize>(b: &'b [u8], shape: &[u8; N]) -> Option<&'b [u8; N]> {
    let b: &[u8; N] = b.try_into().ok()?;
    let fits = b
        .iter()
        .zip(shape)
        .fold(true, |fits, (&byte, &want)| fits & if want == b'd' { byte.is_ascii_digit() } else { byte == want });
    fits.then_some(b)
}

/// The two digits at `at` as a number (the shape was checked).
fn two_digits(b: &[u8], at: usize) -> u32 {
    u32::from(b[at] - b'0') * 10 + u32::from(b[at + 1] - b'0')
}

/// The date in the first ten bytes of a shape-checked `YYYY-MM-DD...`, if its month and day are in range.
fn date_of(b: &[u8]) -> Option<Date> {
    let (year, month, day) = (two_digits(b, 0) * 100 + two_digits(b, 2), two_digits(b, 5), two_digits(b, 8));
    ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some(Date {
        year: year as u16,
        month: month as u8,
        day: day as u8,
    })
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(s: &[u8], field: &'static str) -> Result<Date, RowError> {
    shaped(s.trim_ascii(), b"dddd-dd-dd")
        .and_then(|b| date_of(b))
        .ok_or_else(|| field_error(field, format!("`{}` is not a YYYY-MM-DD date", shown(s))))
}

/// Parses `YYYY-MM-DD HH:MM:SS`.
pub fn parse_timestamp(s: &[u8], field: &'static str) -> Result<Timestamp, RowError> {
    let parsed = shaped(s.trim_ascii(), b"dddd-dd-dd dd:dd:dd").and_then(|b| {
        let date = date_of(b)?;
        let (h, m, sec) = (two_digits(b, 11), two_digits(b, 14), two_digits(b, 17));
        (h <= 23 && m <= 59 && sec <= 60).then_some(Timestamp {
            year: date.year,
            month: date.month,
            day: date.day,
            secs_of_day: h * 3600 + m * 60 + sec,
        })
    });
    parsed.ok_or_else(|| field_error(field, format!("`{}` is not a YYYY-MM-DD HH:MM:SS timestamp", shown(s))))
}

/// The most bytes postcard (the wire's encoding, `crate::wire`) takes for each field type: a varint spends one
/// byte per 7 bits, a `u8` one byte, an `Option` a tag byte, a string its length as a varint then its bytes.
/// A row's bound lets the client cut batches that fit in a frame without encoding them twice.
mod encoded {
    pub const U8: usize = 1;
    pub const U16: usize = 3;
    pub const U32: usize = 5;
    pub const I64: usize = 10;
    pub const OPTION_TAG: usize = 1;
    /// An enum's variant (any of fewer than 128 variants).
    pub const ENUM_TAG: usize = 1;
    pub const TIMESTAMP: usize = U16 + U8 + U8 + U32;
    pub const DATE: usize = U16 + U8 + U8;

    /// A string of `len` bytes.
    pub fn string(len: usize) -> usize {
        10 + len
    }
}

impl Transaction {
    /// At least the bytes of this row encoded on the wire.
    pub fn encoded_bound(&self) -> usize {
        use encoded::*;
        let id = match &self.transaction_id {
            TransactionId::Uuid(bytes) => bytes.len(),
            TransactionId::Text(text) => string(text.len()),
        };
        ENUM_TAG + id + U32 + OPTION_TAG + U32 + I64 + TIMESTAMP
    }
}

impl TransactionItem {
    /// At least the bytes of this row encoded on the wire.
    pub fn encoded_bound(&self) -> usize {
        use encoded::*;
        U32 + I64 + I64 + U16 + U8
    }
}

impl User {
    /// At least the bytes of this row encoded on the wire.
    pub fn encoded_bound(&self) -> usize {
        encoded::U32 + encoded::DATE
    }
}

impl Store {
    /// At least the bytes of this row encoded on the wire.
    pub fn encoded_bound(&self) -> usize {
        encoded::U32 + encoded::string(self.store_name.len())
    }
}

impl MenuItem {
    /// At least the bytes of this row encoded on the wire.
    pub fn encoded_bound(&self) -> usize {
        encoded::U32 + encoded::string(self.item_name.len())
    }
}

impl Transaction {
    pub fn parse(record: &Record) -> Result<Self, RowError> {
        check_len(record, 9)?;
        let transaction_id = text(record, 0, "transaction_id")?.trim();
        if transaction_id.is_empty() {
            return Err(field_error("transaction_id", "empty"));
        }
        let user_id = number(record, 4);
        Ok(Transaction {
            transaction_id: TransactionId::new(transaction_id),
            store_id: parse_id(number(record, 1), "store_id")?,
            user_id: if user_id.trim_ascii().is_empty() { None } else { Some(parse_id(user_id, "user_id")?) },
            final_amount: parse_cents(number(record, 7), "final_amount")?,
            created_at: parse_timestamp(number(record, 8), "created_at")?,
        })
    }
}

impl TransactionItem {
    pub fn parse(record: &Record) -> Result<Self, RowError> {
        check_len(record, 6)?;
        Ok(TransactionItem {
            item_id: parse_id(number(record, 1), "item_id")?,
            quantity: parse_integer(number(record, 2), "quantity")?,
            subtotal: parse_cents(number(record, 4), "subtotal")?,
            created_in: parse_timestamp(number(record, 5), "created_at")?.into(),
        })
    }
}

impl User {
    pub fn parse(record: &Record) -> Result<Self, RowError> {
        check_len(record, 4)?;
        Ok(User {
            user_id: parse_id(number(record, 0), "user_id")?,
            birthdate: parse_date(number(record, 2), "birthdate")?,
        })
    }
}

impl Store {
    pub fn parse(record: &Record) -> Result<Self, RowError> {
        check_len(record, 8)?;
        Ok(Store {
            store_id: parse_id(number(record, 0), "store_id")?,
            store_name: text(record, 1, "store_name")?.to_owned(),
        })
    }
}

impl MenuItem {
    pub fn parse(record: &Record) -> Result<Self, RowError> {
        check_len(record, 7)?;
        Ok(MenuItem {
            item_id: parse_id(number(record, 0), "item_id")?,
            item_name: text(record, 1, "item_name")?.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &[&str]) -> Record {
        Record::from(fields.to_vec())
    }

    #[test]
    fn transaction_ids_print_back_exactly_and_travel_small_when_they_are_canonical_uuids() {
        let canonical = "4f50dc7e-a5ec-4446-aeae-99e46f3e32e6";
        let id = TransactionId::new(canonical);
        assert!(matches!(id, TransactionId::Uuid(_)), "{id:?}");
        assert_eq!(id.to_string(), canonical);
        assert_eq!(postcard::to_allocvec(&id).unwrap().len(), 17, "a tag and 16 bytes");
        for other in ["4F50DC7E-A5EC-4446-AEAE-99E46F3E32E6", "4f50dc7ea5ec4446aeae99e46f3e32e6", "d,1", "x"] {
            let id = TransactionId::new(other);
            assert!(matches!(id, TransactionId::Text(_)), "{other}: {id:?}");
            assert_eq!(id.to_string(), other);
        }
    }

    #[test]
    fn cents_are_exact() {
        assert_eq!(parse_cents(b"63.5", "x"), Ok(6350));
        assert_eq!(parse_cents(b"75", "x"), Ok(7500));
        assert_eq!(parse_cents(b"0.05", "x"), Ok(5));
        assert_eq!(parse_cents(b"-1.25", "x"), Ok(-125));
        assert_eq!(parse_cents(b"12.500", "x"), Ok(1250));
        assert!(parse_cents(b"12.345", "x").is_err());
        assert!(parse_cents(b"", "x").is_err());
        assert!(parse_cents(b"1e3", "x").is_err());
        assert!(parse_cents(b".5", "x").is_err());
    }

    #[test]
    fn integers_span_i64() {
        assert_eq!(parse_integer(b"-9223372036854775808", "q"), Ok(i64::MIN));
        assert_eq!(parse_integer(b" 9223372036854775807 ", "q"), Ok(i64::MAX));
        assert!(parse_integer(b"9223372036854775808", "q").is_err());
        assert!(parse_integer(b"-+1", "q").is_err());
        assert_eq!(parse_integer(b"+2", "q"), Ok(2));
        assert!(parse_integer(b"", "q").is_err());
    }

    #[test]
    fn ids_accept_float_text() {
        assert_eq!(parse_id(b"17272.0", "u"), Ok(17272));
        assert_eq!(parse_id(b"17272", "u"), Ok(17272));
        assert!(parse_id(b"17272.5", "u").is_err());
        assert!(parse_id(b"abc", "u").is_err());
    }

    #[test]
    fn timestamps_and_dates() {
        let t = parse_timestamp(b"2024-01-01 10:06:50", "t").unwrap();
        assert_eq!((t.year, t.month, t.day, t.secs_of_day), (2024, 1, 1, 10 * 3600 + 6 * 60 + 50));
        assert!(parse_timestamp(b"2024-13-01 10:06:50", "t").is_err());
        assert!(parse_timestamp(b"2024-01-01T10:06:50", "t").is_err());
        assert!(parse_timestamp(b"2024-01-01 24:00:00", "t").is_err());
        assert_eq!(parse_date(b"2003-01-06", "d").unwrap().to_string(), "2003-01-06");
        assert!(parse_date(b"2003/01/06", "d").is_err());
    }

    #[test]
    fn transaction_rows() {
        let ok = record(&["ac6f", "5", "1", "", "17272.0", "63.5", "0.0", "63.5", "2024-01-01 10:06:50"]);
        let t = Transaction::parse(&ok).unwrap();
        assert_eq!((t.store_id, t.user_id, t.final_amount), (5, Some(17272), 6350));
        let anonymous = record(&["ac6f", "5", "1", "", "", "63.5", "0.0", "63.5", "2024-01-01 10:06:50"]);
        assert_eq!(Transaction::parse(&anonymous).unwrap().user_id, None);
        let short = record(&["ac6f", "5"]);
        assert_eq!(Transaction::parse(&short), Err(RowError::FieldCount { expected: 9, found: 2 }));
    }

    #[test]
    fn dimension_rows() {
        let s = Store::parse(&record(&["1", "G Coffee @ USJ 89q", "a, b", "1", "c", "d", "3.1", "101.6"])).unwrap();
        assert_eq!(s.store_name, "G Coffee @ USJ 89q");
        let m = MenuItem::parse(&record(&["2", "Americano", "coffee", "7.0", "False", "", ""])).unwrap();
        assert_eq!(m.item_id, 2);
        let u = User::parse(&record(&["5775", "male", "1988-09-25", "2023-11-01 07:03:11"])).unwrap();
        assert_eq!(u.birthdate.to_string(), "1988-09-25");
        let i = TransactionItem::parse(&record(&["x", "8", "2", "9.0", "18.0", "2024-01-01 15:15:53"])).unwrap();
        assert_eq!((i.item_id, i.quantity, i.subtotal), (8, 2, 1800));
    }
}

/// Property tests: no row of arbitrary bytes crashes a parser, and printed values parse back to themselves. The
/// value strategies are shared with the message tests.
#[cfg(test)]
pub(crate) mod prop_tests {
    use super::*;
    use proptest::prelude::*;

    /// One CSV field: raw bytes, or text near the shapes the parsers expect (numbers, dates, timestamps).
    fn field() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..24),
            "[ 0-9.-]{0,12}".prop_map(String::into_bytes),
            "[0-9]{4}-[0-9]{2}-[0-9]{2}( [0-9]{2}:[0-9]{2}:[0-9]{2})?".prop_map(String::into_bytes),
            "\\PC{0,20}".prop_map(String::into_bytes),
        ]
    }

    pub(crate) fn date() -> impl Strategy<Value = Date> {
        (0u16..=9999, 1u8..=12, 1u8..=31).prop_map(|(year, month, day)| Date { year, month, day })
    }

    pub(crate) fn timestamp() -> impl Strategy<Value = Timestamp> {
        (date(), 0u32..24, 0u32..60, 0u32..=60).prop_map(|(d, h, m, s)| Timestamp {
            year: d.year,
            month: d.month,
            day: d.day,
            secs_of_day: h * 3600 + m * 60 + s,
        })
    }

    /// Any amount but `i64::MIN`, whose magnitude has no `i64`.
    pub(crate) fn cents() -> impl Strategy<Value = Cents> {
        (i64::MIN + 1)..=i64::MAX
    }

    /// Ids in a UUID's canonical text, in other UUID texts (upper case, no hyphens) and in any other text.
    pub(crate) fn transaction_id() -> impl Strategy<Value = TransactionId> {
        prop_oneof![
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
            "[0-9a-f]{32}",
            "[0-9a-f]{1,8}(-[0-9a-f]{1,8}){0,4}",
        ]
        .prop_map(|text| TransactionId::new(&text))
    }

    pub(crate) fn transaction() -> impl Strategy<Value = Transaction> {
        (transaction_id(), any::<u32>(), any::<Option<u32>>(), cents(), timestamp()).prop_map(
            |(transaction_id, store_id, user_id, final_amount, created_at)| Transaction {
                transaction_id,
                store_id,
                user_id,
                final_amount,
                created_at,
            },
        )
    }

    pub(crate) fn transaction_item() -> impl Strategy<Value = TransactionItem> {
        (any::<u32>(), any::<i64>(), cents(), timestamp()).prop_map(|(item_id, quantity, subtotal, created_at)| {
            TransactionItem { item_id, quantity, subtotal, created_in: created_at.into() }
        })
    }

    pub(crate) fn user() -> impl Strategy<Value = User> {
        (any::<u32>(), date()).prop_map(|(user_id, birthdate)| User { user_id, birthdate })
    }

    pub(crate) fn store() -> impl Strategy<Value = Store> {
        (any::<u32>(), "\\PC{0,30}").prop_map(|(store_id, store_name)| Store { store_id, store_name })
    }

    pub(crate) fn menu_item() -> impl Strategy<Value = MenuItem> {
        (any::<u32>(), "\\PC{0,30}").prop_map(|(item_id, item_name)| MenuItem { item_id, item_name })
    }

    fn money(cents: Cents) -> String {
        let sign = if cents < 0 { "-" } else { "" };
        format!("{sign}{}.{:02}", cents.unsigned_abs() / 100, cents.unsigned_abs() % 100)
    }

    fn time(t: &Timestamp) -> String {
        let s = t.secs_of_day;
        format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", t.year, t.month, t.day, s / 3600, s / 60 % 60, s % 60)
    }

    fn row(fields: &[String]) -> Record {
        Record::from(fields.to_vec())
    }

    proptest! {
        /// The client cuts batches by these bounds to fit a frame: a row must never encode longer.
        #[test]
        fn no_row_encodes_longer_than_its_bound(
            t in transaction(), i in transaction_item(), u in user(), s in store(), m in menu_item(),
        ) {
            fn len(row: &impl Serialize) -> usize {
                postcard::to_allocvec(row).expect("rows serialize").len()
            }
            prop_assert!(len(&t) <= t.encoded_bound(), "{t:?}");
            prop_assert!(len(&i) <= i.encoded_bound(), "{i:?}");
            prop_assert!(len(&u) <= u.encoded_bound(), "{u:?}");
            prop_assert!(len(&s) <= s.encoded_bound(), "{s:?}");
            prop_assert!(len(&m) <= m.encoded_bound(), "{m:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_rows_never_panic(fields in prop::collection::vec(field(), 0..12)) {
            let record = Record::from(fields);
            let _ = Transaction::parse(&record);
            let _ = TransactionItem::parse(&record);
            let _ = User::parse(&record);
            let _ = Store::parse(&record);
            let _ = MenuItem::parse(&record);
        }

        /// Numbers are read from the field's bytes, not through `str::parse`: on any field they agree with it
        /// (after trimming ASCII whitespace), so reading bytes changes no row's fate.
        #[test]
        fn numbers_read_from_bytes_agree_with_str_parse(
            field in prop_oneof![field(), "[ +-]{0,2}[0-9]{0,21}([.][0-9]{0,3})?[ ]?".prop_map(String::into_bytes)],
        ) {
            let text = std::str::from_utf8(&field).ok().map(str::trim_ascii);
            prop_assert_eq!(parse_integer(&field, "x").ok(), text.and_then(|t| t.parse::<i64>().ok()));
            let id = text.and_then(|t| match t.split_once('.') {
                Some((whole, fraction)) if fraction.bytes().all(|b| b == b'0') => whole.parse::<u32>().ok(),
                Some(_) => None,
                None => t.parse::<u32>().ok(),
            });
            prop_assert_eq!(parse_id(&field, "x").ok(), id);
        }

        #[test]
        fn scalars_round_trip(cents in cents(), id in any::<u32>(), zeros in 0usize..4, t in timestamp()) {
            prop_assert_eq!(parse_cents(money(cents).as_bytes(), "x"), Ok(cents));
            prop_assert_eq!(parse_cents(format!("{}{}", money(cents), "0".repeat(zeros)).as_bytes(), "x"), Ok(cents));
            prop_assert_eq!(parse_id(id.to_string().as_bytes(), "x"), Ok(id));
            prop_assert_eq!(parse_id(format!("{id}.{}", "0".repeat(zeros)).as_bytes(), "x"), Ok(id));
            let date = Date { year: t.year, month: t.month, day: t.day };
            prop_assert_eq!(parse_date(date.to_string().as_bytes(), "x"), Ok(date));
            prop_assert_eq!(parse_timestamp(time(&t).as_bytes(), "x"), Ok(t));
        }

        #[test]
        fn printed_rows_parse_back(
            t in transaction(), i in transaction_item(), u in user(), s in store(), m in menu_item()
        ) {
            let registered = time(&t.created_at);
            let user_id = t.user_id.map_or_else(String::new, |u| format!("{u}.0"));
            let amount = money(t.final_amount);
            let fields = [&t.transaction_id.to_string(), &t.store_id.to_string(), "1", "", &user_id, &amount, "0", &amount,
                &time(&t.created_at)].map(str::to_owned);
            prop_assert_eq!(Transaction::parse(&row(&fields)), Ok(t));
            let fields = ["x", &i.item_id.to_string(), &i.quantity.to_string(), "1.0", &money(i.subtotal),
                &format!("{:04}-{:02}-15 12:34:56", i.created_in.year, i.created_in.month)].map(str::to_owned);
            prop_assert_eq!(TransactionItem::parse(&row(&fields)), Ok(i));
            let fields = [u.user_id.to_string(), "female".into(), u.birthdate.to_string(), registered];
            prop_assert_eq!(User::parse(&row(&fields)), Ok(u));
            let mut fields = vec![String::new(); 8];
            (fields[0], fields[1]) = (s.store_id.to_string(), s.store_name.clone());
            prop_assert_eq!(Store::parse(&row(&fields)), Ok(s));
            let mut fields = vec![String::new(); 7];
            (fields[0], fields[1]) = (m.item_id.to_string(), m.item_name.clone());
            prop_assert_eq!(MenuItem::parse(&row(&fields)), Ok(m));
        }
    }
}
