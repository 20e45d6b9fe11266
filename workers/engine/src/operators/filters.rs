//! The stateless stages: the year and hour filters, Q1, and partial aggregation of each input batch before it
//! is routed by key (so a batch of a thousand rows becomes a few dozen partial sums on the wire).

use super::HashMap;
use super::{unexpected, Emit, Operator, UnexpectedInput};
use coffee_model::keys::{Query, YearHalf, YearMonth};
use coffee_model::message::{Batch, ItemSales, Purchases, StoreTpv, Stream};
use coffee_model::model::{Timestamp, Transaction, TransactionItem};
use coffee_model::node::StageKind;
use coffee_model::results::ResultRow;

/// Q1's amount threshold, in cents.
pub const Q1_MIN_AMOUNT: i64 = 75_00;

/// Every query looks at 2024 and 2025 only.
pub fn in_query_years(year: u16) -> bool {
    year == 2024 || year == 2025
}

/// Q1 and Q3's time window: 06:00:00 to 23:00:00, both ends included.
pub fn in_opening_hours(t: &Timestamp) -> bool {
    (6 * 3600..=23 * 3600).contains(&t.secs_of_day)
}

/// Keyed partial sums as rows sorted by key, so a re-run emits identical bytes (the runtime keeps the order when
/// it spreads them over the replicas). A map's keys are distinct, so an unstable sort gives the one order.
fn sorted_rows<K: Ord + Copy, V: Copy, R>(sums: HashMap<K, V>, row: impl Fn(K, V) -> R) -> Vec<R> {
    let mut sorted: Vec<(K, V)> = sums.into_iter().collect();
    sorted.sort_unstable_by_key(|&(k, _)| k);
    sorted.into_iter().map(|(k, v)| row(k, v)).collect()
}

/// `tx_filter`: Q1 rows to the gateway, TPV per (semester, store) to `q3_agg`, counts per (store, user) to `q4_count`.
pub struct TxFilter;

impl TxFilter {
    fn process(&self, rows: Vec<Transaction>, out: &mut Emit) {
        let mut q1 = Vec::new();
        let mut tpv: HashMap<(YearHalf, u32), i64> = HashMap::default();
        // Nearly every transaction of a batch is its own (store, user): sized once rather than grown.
        let mut purchases: HashMap<(u32, u32), u64> = HashMap::with_capacity_and_hasher(rows.len(), Default::default());
        for t in rows.into_iter().filter(|t| in_query_years(t.created_at.year)) {
            if let Some(user_id) = t.user_id {
                *purchases.entry((t.store_id, user_id)).or_default() += 1;
            }
            if in_opening_hours(&t.created_at) {
                *tpv.entry((YearHalf::of(t.created_at.year, t.created_at.month), t.store_id)).or_default() +=
                    t.final_amount;
                if t.final_amount >= Q1_MIN_AMOUNT {
                    q1.push(ResultRow::Q1 {
                        transaction_id: t.transaction_id.to_string(),
                        final_amount: t.final_amount,
                    });
                }
            }
        }
        let tpv = sorted_rows(tpv, |(half, store_id), cents| StoreTpv { half, store_id, cents });
        let purchases = sorted_rows(purchases, |(store_id, user_id), count| Purchases { store_id, user_id, count });
        out.send(Stream::Results(Query::Q1), Batch::Results(q1));
        out.send(Stream::Q3Partial, Batch::StoreTpv(tpv));
        out.send(Stream::Q4Partial, Batch::Purchases(purchases));
    }
}

impl Operator for TxFilter {
    type State = ();

    fn stage(&self) -> StageKind {
        StageKind::TxFilter
    }

    fn apply(&self, _: &mut (), stream: Stream, batch: Batch, out: &mut Emit) -> Result<(), UnexpectedInput> {
        match (stream, batch) {
            (Stream::Transactions, Batch::Transactions(rows)) => {
                self.process(rows, out);
                Ok(())
            }
            (stream, batch) => Err(unexpected(self.stage(), stream, &batch)),
        }
    }

    fn finish(&self, _: (), _: &mut Emit) {}
}

/// `item_filter`: quantity and subtotal per (month, item) to `q2_agg`, partitioned by month.
pub struct ItemFilter;

impl ItemFilter {
    fn process(&self, rows: Vec<TransactionItem>, out: &mut Emit) {
        let mut sales: HashMap<(YearMonth, u32), (i64, i64)> = HashMap::default();
        for item in rows.into_iter().filter(|i| in_query_years(i.created_in.year)) {
            let sum =
                sales.entry((YearMonth::new(item.created_in.year, item.created_in.month), item.item_id)).or_default();
            sum.0 += item.quantity;
            sum.1 += item.subtotal;
        }
        let sales = sorted_rows(sales, |(month, item_id), (quantity, subtotal)| ItemSales {
            month,
            item_id,
            quantity,
            subtotal,
        });
        out.send(Stream::Q2Partial, Batch::ItemSales(sales));
    }
}

impl Operator for ItemFilter {
    type State = ();

    fn stage(&self) -> StageKind {
        StageKind::ItemFilter
    }

    fn apply(&self, _: &mut (), stream: Stream, batch: Batch, out: &mut Emit) -> Result<(), UnexpectedInput> {
        match (stream, batch) {
            (Stream::TransactionItems, Batch::TransactionItems(rows)) => {
                self.process(rows, out);
                Ok(())
            }
            (stream, batch) => Err(unexpected(self.stage(), stream, &batch)),
        }
    }

    fn finish(&self, _: (), _: &mut Emit) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffee_model::model::parse_timestamp;

    fn tx(id: &str, store: u32, user: Option<u32>, cents: i64, at: &str) -> Transaction {
        Transaction {
            transaction_id: id.into(),
            store_id: store,
            user_id: user,
            final_amount: cents,
            created_at: parse_timestamp(at.as_bytes(), "t").unwrap(),
        }
    }

    fn batch_for(out: &Emit, stream: Stream) -> &Batch {
        out.get(stream).expect("emitted")
    }

    #[test]
    fn tx_filter_applies_years_hours_and_amount() {
        let op = TxFilter;
        let rows = vec![
            tx("a", 1, Some(7), 7500, "2024-01-01 06:00:00"),
            tx("b", 1, Some(7), 7499, "2024-01-01 12:00:00"),
            tx("c", 1, None, 9000, "2025-07-01 23:00:00"),
            tx("d", 1, Some(8), 9000, "2025-07-01 23:00:01"),
            tx("e", 2, Some(7), 9000, "2023-12-31 12:00:00"),
            tx("f", 2, Some(7), 9000, "2024-03-01 05:59:59"),
        ];
        let mut out = Emit::default();
        op.apply(&mut (), Stream::Transactions, Batch::Transactions(rows), &mut out).unwrap();
        assert_eq!(out.streams().count(), 3, "one batch per stream");
        let Batch::Results(q1) = batch_for(&out, Stream::Results(Query::Q1)) else { panic!() };
        let ids: Vec<_> = q1.iter().map(|r| r.to_ndjson()).collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids[0].contains("\"a\"") && ids[1].contains("\"c\""));
        let Batch::StoreTpv(tpv) = batch_for(&out, Stream::Q3Partial) else { panic!() };
        let h1_2024 = YearHalf { year: 2024, half: 1 };
        assert_eq!(tpv.iter().find(|t| t.half == h1_2024 && t.store_id == 1).unwrap().cents, 7500 + 7499);
        assert_eq!(tpv.iter().map(|t| t.cents).sum::<i64>(), 7500 + 7499 + 9000);
        let Batch::Purchases(p) = batch_for(&out, Stream::Q4Partial) else { panic!() };
        // User 7 at store 1 twice (any hour), user 8 once (23:00:01 counts for Q4), 2023 and anonymous skipped.
        let count = |s, u| p.iter().find(|x| x.store_id == s && x.user_id == u).map(|x| x.count);
        assert_eq!((count(1, 7), count(1, 8), count(2, 7)), (Some(2), Some(1), Some(1)));
    }

    #[test]
    fn filters_refuse_rows_they_do_not_consume() {
        let mut out = Emit::default();
        assert!(TxFilter.apply(&mut (), Stream::Users, Batch::Users(vec![]), &mut out).is_err());
        assert!(ItemFilter.apply(&mut (), Stream::Transactions, Batch::Transactions(vec![]), &mut out).is_err());
        assert_eq!(out.streams().count(), 0);
    }

    #[test]
    fn item_filter_sums_per_month_and_item() {
        let item = |id, qty, cents, at: &str| TransactionItem {
            item_id: id,
            quantity: qty,
            subtotal: cents,
            created_in: parse_timestamp(at.as_bytes(), "t").unwrap().into(),
        };
        let rows = vec![
            item(1, 2, 1000, "2024-01-01 01:00:00"),
            item(1, 3, 1500, "2024-01-31 23:59:59"),
            item(1, 1, 500, "2024-02-01 00:00:00"),
            item(2, 9, 9000, "2023-01-01 10:00:00"),
        ];
        let mut out = Emit::default();
        ItemFilter.apply(&mut (), Stream::TransactionItems, Batch::TransactionItems(rows), &mut out).unwrap();
        let Some(Batch::ItemSales(sales)) = out.get(Stream::Q2Partial) else { panic!() };
        assert_eq!(
            sales,
            &vec![
                ItemSales { month: YearMonth::new(2024, 1), item_id: 1, quantity: 5, subtotal: 2500 },
                ItemSales { month: YearMonth::new(2024, 2), item_id: 1, quantity: 1, subtotal: 500 },
            ]
        );
    }
}
