//! The stateless stages: the year and hour filters, Q1, and partial aggregation of each input batch before it
//! is routed by key (so a batch of a thousand rows becomes a few dozen partial sums on the wire).

use super::{unexpected, width, Emit, Operator, UnexpectedInput};
use crate::message::{Batch, ItemSales, Purchases, Query, StageKind, StoreTpv, Stream, YearHalf, YearMonth};
use crate::model::{Timestamp, Transaction, TransactionItem};
use crate::results::ResultRow;
use crate::topology::{partition, Topology};
use std::collections::HashMap;

/// Q1's amount threshold, in cents.
pub const Q1_MIN_AMOUNT: i64 = 75_00;

/// Every query looks at 2024 and 2025 only.
pub fn in_query_years(t: &Timestamp) -> bool {
    t.year == 2024 || t.year == 2025
}

/// Q1 and Q3's time window: 06:00:00 to 23:00:00, both ends included.
pub fn in_opening_hours(t: &Timestamp) -> bool {
    (6 * 3600..=23 * 3600).contains(&t.secs_of_day)
}

/// Splits keyed partial sums into one sorted batch per replica (sorted, so a re-run emits identical bytes).
fn spread<K: Ord + Copy, V: Copy, R>(
    sums: HashMap<K, V>,
    replicas: usize,
    owner: impl Fn(&K) -> usize,
    row: impl Fn(K, V) -> R,
) -> Vec<Vec<R>> {
    let mut sorted: Vec<(K, V)> = sums.into_iter().collect();
    sorted.sort_by_key(|&(k, _)| k);
    let mut out: Vec<Vec<R>> = (0..replicas).map(|_| Vec::new()).collect();
    for (k, v) in sorted {
        out[owner(&k)].push(row(k, v));
    }
    out
}

/// `tx_filter`: Q1 rows to the gateway, TPV per (semester, store) to `q3_agg`, counts per (store, user) to `q4_count`.
pub struct TxFilter {
    q3_replicas: usize,
    q4_replicas: usize,
}

impl TxFilter {
    pub fn new(topology: &Topology) -> Self {
        TxFilter { q3_replicas: width(topology, StageKind::Q3Agg), q4_replicas: width(topology, StageKind::Q4Count) }
    }

    fn process(&self, rows: Vec<Transaction>, out: &mut Emit) {
        let mut q1 = Vec::new();
        let mut tpv: HashMap<(YearHalf, u32), i64> = HashMap::new();
        let mut purchases: HashMap<(u32, u32), u64> = HashMap::new();
        for t in rows.into_iter().filter(|t| in_query_years(&t.created_at)) {
            if let Some(user_id) = t.user_id {
                *purchases.entry((t.store_id, user_id)).or_default() += 1;
            }
            if in_opening_hours(&t.created_at) {
                *tpv.entry((YearHalf::of(t.created_at.year, t.created_at.month), t.store_id)).or_default() +=
                    t.final_amount;
                if t.final_amount >= Q1_MIN_AMOUNT {
                    q1.push(ResultRow::Q1 { transaction_id: t.transaction_id, final_amount: t.final_amount });
                }
            }
        }
        let (n3, n4) = (self.q3_replicas, self.q4_replicas);
        let tpv = spread(
            tpv,
            n3,
            |&(_, store)| usize::from(partition(store.into(), n3 as u16)),
            |(half, store_id), cents| StoreTpv { half, store_id, cents },
        );
        let purchases = spread(
            purchases,
            n4,
            |&(_, user)| usize::from(partition(user.into(), n4 as u16)),
            |(store_id, user_id), count| Purchases { store_id, user_id, count },
        );
        out.to_gateway(Stream::Results(Query::Q1), Batch::Results(q1));
        out.to_each_replica(Stream::Q3Partial, StageKind::Q3Agg, tpv.into_iter().map(Batch::StoreTpv).collect());
        out.to_each_replica(
            Stream::Q4Partial,
            StageKind::Q4Count,
            purchases.into_iter().map(Batch::Purchases).collect(),
        );
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
pub struct ItemFilter {
    q2_replicas: usize,
}

impl ItemFilter {
    pub fn new(topology: &Topology) -> Self {
        ItemFilter { q2_replicas: width(topology, StageKind::Q2Agg) }
    }

    fn process(&self, rows: Vec<TransactionItem>, out: &mut Emit) {
        let mut sales: HashMap<(YearMonth, u32), (i64, i64)> = HashMap::new();
        for item in rows.into_iter().filter(|i| in_query_years(&i.created_at)) {
            let sum =
                sales.entry((YearMonth::new(item.created_at.year, item.created_at.month), item.item_id)).or_default();
            sum.0 += item.quantity;
            sum.1 += item.subtotal;
        }
        let n = self.q2_replicas;
        let batches = spread(
            sales,
            n,
            |&(month, _)| usize::from(partition(month.0.into(), n as u16)),
            |(month, item_id), (quantity, subtotal)| ItemSales { month, item_id, quantity, subtotal },
        );
        out.to_each_replica(Stream::Q2Partial, StageKind::Q2Agg, batches.into_iter().map(Batch::ItemSales).collect());
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
    use crate::model::parse_timestamp;
    use crate::operators::{Destination, Target};

    fn tx(id: &str, store: u32, user: Option<u32>, cents: i64, at: &str) -> Transaction {
        Transaction {
            transaction_id: id.into(),
            store_id: store,
            user_id: user,
            final_amount: cents,
            created_at: parse_timestamp(at, "t").unwrap(),
        }
    }

    fn batch_for(out: &Emit, stream: Stream, to: Destination) -> &Batch {
        &out.batches.iter().find(|(t, _)| *t == Target { stream, to }).expect("emitted").1
    }

    #[test]
    fn tx_filter_applies_years_hours_and_amount() {
        let topology = Topology::with_replicas("t", "q3_agg=1,q4_count=1").unwrap();
        let op = TxFilter::new(&topology);
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
        assert_eq!(out.batches.len(), 3, "one batch per destination");
        let Batch::Results(q1) = batch_for(&out, Stream::Results(Query::Q1), Destination::Gateway) else { panic!() };
        let ids: Vec<_> = q1.iter().map(|r| r.to_ndjson()).collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids[0].contains("\"a\"") && ids[1].contains("\"c\""));
        let Batch::StoreTpv(tpv) = batch_for(&out, Stream::Q3Partial, Destination::Stage(StageKind::Q3Agg, 0)) else {
            panic!()
        };
        let h1_2024 = YearHalf { year: 2024, half: 1 };
        assert_eq!(tpv.iter().find(|t| t.half == h1_2024 && t.store_id == 1).unwrap().cents, 7500 + 7499);
        assert_eq!(tpv.iter().map(|t| t.cents).sum::<i64>(), 7500 + 7499 + 9000);
        let Batch::Purchases(p) = batch_for(&out, Stream::Q4Partial, Destination::Stage(StageKind::Q4Count, 0)) else {
            panic!()
        };
        // User 7 at store 1 twice (any hour), user 8 once (23:00:01 counts for Q4), 2023 and anonymous skipped.
        let count = |s, u| p.iter().find(|x| x.store_id == s && x.user_id == u).map(|x| x.count);
        assert_eq!((count(1, 7), count(1, 8), count(2, 7)), (Some(2), Some(1), Some(1)));
    }

    #[test]
    fn filters_emit_to_every_replica_even_when_empty() {
        let topology = Topology::with_replicas("t", "all=3").unwrap();
        let mut out = Emit::default();
        TxFilter::new(&topology).apply(&mut (), Stream::Transactions, Batch::Transactions(vec![]), &mut out).unwrap();
        assert_eq!(out.batches.len(), 1 + 3 + 3);
        let mut out = Emit::default();
        ItemFilter::new(&topology)
            .apply(&mut (), Stream::TransactionItems, Batch::TransactionItems(vec![]), &mut out)
            .unwrap();
        assert_eq!(out.batches.len(), 3);
        assert!(TxFilter::new(&topology).apply(&mut (), Stream::Users, Batch::Users(vec![]), &mut out).is_err());
    }

    #[test]
    fn item_filter_sums_per_month_and_item() {
        let topology = Topology::with_replicas("t", "q2_agg=1").unwrap();
        let item = |id, qty, cents, at| TransactionItem {
            item_id: id,
            quantity: qty,
            subtotal: cents,
            created_at: parse_timestamp(at, "t").unwrap(),
        };
        let rows = vec![
            item(1, 2, 1000, "2024-01-01 01:00:00"),
            item(1, 3, 1500, "2024-01-31 23:59:59"),
            item(1, 1, 500, "2024-02-01 00:00:00"),
            item(2, 9, 9000, "2023-01-01 10:00:00"),
        ];
        let mut out = Emit::default();
        ItemFilter::new(&topology)
            .apply(&mut (), Stream::TransactionItems, Batch::TransactionItems(rows), &mut out)
            .unwrap();
        let Batch::ItemSales(sales) = &out.batches[0].1 else { panic!() };
        assert_eq!(
            sales,
            &vec![
                ItemSales { month: YearMonth::new(2024, 1), item_id: 1, quantity: 5, subtotal: 2500 },
                ItemSales { month: YearMonth::new(2024, 2), item_id: 1, quantity: 1, subtotal: 500 },
            ]
        );
    }
}
