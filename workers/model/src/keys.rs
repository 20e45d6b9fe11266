//! The keys the queries group, order and partition by: the query itself, the calendar month (Q2) and semester
//! (Q3), which print exactly as `QUERIES.md` writes them, and the partition of a key among replicas.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The result streams the gateway collects, one per query (Q2 carries both of its result kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Query {
    Q1,
    Q2,
    Q3,
    Q4,
    /// The tests' example query (the `example-query` feature): last, so the others' wire encoding is unchanged.
    #[cfg(feature = "example-query")]
    Q5,
}

impl Query {
    #[cfg(not(feature = "example-query"))]
    pub const ALL: [Query; 4] = [Query::Q1, Query::Q2, Query::Q3, Query::Q4];
    #[cfg(feature = "example-query")]
    pub const ALL: [Query; 5] = [Query::Q1, Query::Q2, Query::Q3, Query::Q4, Query::Q5];
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `YYYY-MM` as a number of months since year 0, so it orders and hashes cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct YearMonth(pub u32);

impl YearMonth {
    pub fn new(year: u16, month: u8) -> Self {
        YearMonth(u32::from(year) * 12 + u32::from(month) - 1)
    }
    pub fn year(self) -> u32 {
        self.0 / 12
    }
    pub fn month(self) -> u32 {
        self.0 % 12 + 1
    }
}

impl fmt::Display for YearMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.month())
    }
}

/// `YYYY-H1` / `YYYY-H2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct YearHalf {
    pub year: u16,
    pub half: u8,
}

impl YearHalf {
    pub fn of(year: u16, month: u8) -> Self {
        YearHalf { year, half: if month <= 6 { 1 } else { 2 } }
    }
}

impl fmt::Display for YearHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-H{}", self.year, self.half)
    }
}

/// The replica that owns `key` among `replicas`. Stable across processes and runs (no random hasher seed).
pub fn partition(key: u64, replicas: u16) -> u16 {
    // Fibonacci hashing spreads consecutive ids (store 1, 2, 3...) evenly.
    let mixed = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) % u64::from(replicas)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_keys_print_as_the_contract_says() {
        assert_eq!(YearMonth::new(2024, 1).to_string(), "2024-01");
        assert_eq!(YearMonth::new(2025, 12).to_string(), "2025-12");
        assert!(YearMonth::new(2024, 12) < YearMonth::new(2025, 1));
        assert_eq!(YearHalf::of(2024, 6).to_string(), "2024-H1");
        assert_eq!(YearHalf::of(2024, 7).to_string(), "2024-H2");
    }
}
