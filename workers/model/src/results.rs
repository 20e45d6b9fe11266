//! The pipeline's result rows and their NDJSON lines (the format of `QUERIES.md`).
//!
//! Money is printed from integer cents with exactly two decimals (`75.50`), a valid JSON number that compares
//! equal to `75.5`: the text is exact whatever the partitioning or the order of arrival.

use crate::keys::{Query, YearHalf, YearMonth};
use crate::model::{Cents, Date};
pub use coffee_types::ResultKind;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResultRow {
    Q1 {
        transaction_id: String,
        final_amount: Cents,
    },
    Q2Qty {
        month: YearMonth,
        item_name: String,
        sellings_qty: i64,
    },
    Q2Profit {
        month: YearMonth,
        item_name: String,
        profit_sum: Cents,
    },
    Q3 {
        half: YearHalf,
        store_name: String,
        tpv: Cents,
    },
    Q4 {
        store_name: String,
        birthdate: Option<Date>,
        user_id: u32,
        purchases_qty: u64,
    },
    /// The tests' example query: a store's transactions of 2024-2025.
    #[cfg(feature = "example-query")]
    Q5 {
        store_name: String,
        transactions: u64,
    },
}

/// Formats cents as a JSON number with two decimals.
pub fn money(cents: Cents) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

impl ResultRow {
    pub fn query(&self) -> Query {
        match self {
            ResultRow::Q1 { .. } => Query::Q1,
            ResultRow::Q2Qty { .. } | ResultRow::Q2Profit { .. } => Query::Q2,
            ResultRow::Q3 { .. } => Query::Q3,
            ResultRow::Q4 { .. } => Query::Q4,
            #[cfg(feature = "example-query")]
            ResultRow::Q5 { .. } => Query::Q5,
        }
    }

    /// The kind of this row's line (its `query` field).
    pub fn kind(&self) -> ResultKind {
        match self {
            ResultRow::Q1 { .. } => ResultKind::Q1,
            ResultRow::Q2Qty { .. } => ResultKind::Q2Qty,
            ResultRow::Q2Profit { .. } => ResultKind::Q2Profit,
            ResultRow::Q3 { .. } => ResultKind::Q3,
            ResultRow::Q4 { .. } => ResultKind::Q4,
            #[cfg(feature = "example-query")]
            ResultRow::Q5 { .. } => ResultKind::Q5,
        }
    }

    /// The NDJSON line of this row, without the trailing newline.
    pub fn to_ndjson(&self) -> String {
        match self {
            ResultRow::Q1 { transaction_id, final_amount } => format!(
                r#"{{"query":"Q1","transaction_id":{},"final_amount":{}}}"#,
                json_string(transaction_id),
                money(*final_amount)
            ),
            ResultRow::Q2Qty { month, item_name, sellings_qty } => format!(
                r#"{{"query":"Q2_QTY","year_month_created_at":"{month}","item_name":{},"sellings_qty":{sellings_qty}}}"#,
                json_string(item_name)
            ),
            ResultRow::Q2Profit { month, item_name, profit_sum } => format!(
                r#"{{"query":"Q2_PROFIT","year_month_created_at":"{month}","item_name":{},"profit_sum":{}}}"#,
                json_string(item_name),
                money(*profit_sum)
            ),
            ResultRow::Q3 { half, store_name, tpv } => format!(
                r#"{{"query":"Q3","year_half_created_at":"{half}","store_name":{},"tpv":{}}}"#,
                json_string(store_name),
                money(*tpv)
            ),
            ResultRow::Q4 { store_name, birthdate, user_id, purchases_qty } => format!(
                r#"{{"query":"Q4","store_name":{},"birthdate":{},"user_id":{user_id},"purchases_qty":{purchases_qty}}}"#,
                json_string(store_name),
                // A user missing from the users files keeps their rank with an empty birthdate.
                json_string(&birthdate.map(|d| d.to_string()).unwrap_or_default())
            ),
            #[cfg(feature = "example-query")]
            ResultRow::Q5 { store_name, transactions } => {
                format!(r#"{{"query":"Q5","store_name":{},"transactions":{transactions}}}"#, json_string(store_name))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_exact_text() {
        assert_eq!(money(7550), "75.50");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(-125), "-1.25");
        assert_eq!(money(1205538776), "12055387.76");
    }

    #[test]
    fn lines_are_valid_json_with_contract_fields() {
        let rows = [
            ResultRow::Q1 { transaction_id: "a\"b".into(), final_amount: 7550 },
            ResultRow::Q2Qty { month: YearMonth::new(2024, 1), item_name: "Latte".into(), sellings_qty: 3 },
            ResultRow::Q2Profit { month: YearMonth::new(2024, 1), item_name: "Latte".into(), profit_sum: 300 },
            ResultRow::Q3 { half: YearHalf::of(2025, 8), store_name: "G".into(), tpv: 1 },
            ResultRow::Q4 {
                store_name: "G".into(),
                birthdate: Some(Date { year: 1973, month: 10, day: 31 }),
                user_id: 17272,
                purchases_qty: 7,
            },
        ];
        let parsed: Vec<serde_json::Value> =
            rows.iter().map(|r| serde_json::from_str(&r.to_ndjson()).unwrap()).collect();
        assert_eq!(parsed[0]["transaction_id"], "a\"b");
        assert_eq!(parsed[0]["final_amount"].as_f64(), Some(75.5));
        assert_eq!(parsed[1]["year_month_created_at"], "2024-01");
        assert_eq!(parsed[2]["query"], "Q2_PROFIT");
        assert_eq!(parsed[3]["year_half_created_at"], "2025-H2");
        assert_eq!(parsed[4]["birthdate"], "1973-10-31");
        assert_eq!(parsed[4]["user_id"], 17272);
    }
}
