//! `q2_agg`: per month (this replica owns whole months), the best-selling and the most profitable item, named
//! from the broadcast menu.

use super::topk::best;
use super::HashMap;
use super::{unexpected, Emit, Operator, UnexpectedInput};
use coffee_model::keys::{Query, YearMonth};
use coffee_model::message::{Batch, Stream};
use coffee_model::node::StageKind;
use coffee_model::results::ResultRow;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Q2State {
    /// (quantity, subtotal) per (month, item).
    sales: HashMap<(YearMonth, u32), (i64, i64)>,
    menu: HashMap<u32, String>,
}

pub struct Q2Agg;

/// The name of an item, or an empty name when the menu does not list it: a join never drops a ranked row (the
/// reference's rule too).
fn item_name(menu: &HashMap<u32, String>, item_id: u32) -> String {
    menu.get(&item_id).cloned().unwrap_or_default()
}

impl Operator for Q2Agg {
    type State = Q2State;

    fn stage(&self) -> StageKind {
        StageKind::Q2Agg
    }

    fn apply(&self, state: &mut Q2State, stream: Stream, batch: Batch, _: &mut Emit) -> Result<(), UnexpectedInput> {
        match (stream, batch) {
            (Stream::Q2Partial, Batch::ItemSales(rows)) => {
                for s in rows {
                    let sum = state.sales.entry((s.month, s.item_id)).or_default();
                    sum.0 += s.quantity;
                    sum.1 += s.subtotal;
                }
            }
            (Stream::MenuItems, Batch::MenuItems(rows)) => {
                state.menu.extend(rows.into_iter().map(|m| (m.item_id, m.item_name)));
            }
            (stream, batch) => return Err(unexpected(self.stage(), stream, &batch)),
        }
        Ok(())
    }

    fn finish(&self, state: Q2State, out: &mut Emit) {
        let mut per_month: BTreeMap<YearMonth, Vec<(u32, i64, i64)>> = BTreeMap::new();
        for ((month, item), (qty, subtotal)) in state.sales {
            per_month.entry(month).or_default().push((item, qty, subtotal));
        }
        let mut rows = Vec::new();
        for (month, items) in per_month {
            if let Some((item, qty, _)) = best(items.iter().copied(), |&(id, q, _)| (q, id)) {
                rows.push(ResultRow::Q2Qty { month, item_name: item_name(&state.menu, item), sellings_qty: qty });
            }
            if let Some((item, _, profit)) = best(items.iter().copied(), |&(id, _, p)| (p, id)) {
                rows.push(ResultRow::Q2Profit { month, item_name: item_name(&state.menu, item), profit_sum: profit });
            }
        }
        out.send(Stream::Results(Query::Q2), Batch::Results(rows));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffee_model::message::ItemSales;
    use coffee_model::model::MenuItem;

    #[test]
    fn best_per_month_with_ties_to_lowest_item() {
        let mut state = Q2State::default();
        let jan = YearMonth::new(2024, 1);
        let sales = |item_id, quantity, subtotal| ItemSales { month: jan, item_id, quantity, subtotal };
        let mut out = Emit::default();
        let op = Q2Agg;
        op.apply(&mut state, Stream::Q2Partial, Batch::ItemSales(vec![sales(3, 5, 100), sales(2, 4, 900)]), &mut out)
            .unwrap();
        // Item 2 catches up on quantity (tie at 5: lowest id wins) and item 3 on profit (tie at 900).
        op.apply(&mut state, Stream::Q2Partial, Batch::ItemSales(vec![sales(2, 1, 0), sales(3, 0, 800)]), &mut out)
            .unwrap();
        let menu = vec![MenuItem { item_id: 2, item_name: "Latte".into() }];
        op.apply(&mut state, Stream::MenuItems, Batch::MenuItems(menu), &mut out).unwrap();
        assert_eq!(out.streams().count(), 0, "aggregators emit only at the end");
        op.finish(state, &mut out);
        let Some(Batch::Results(rows)) = out.get(Stream::Results(Query::Q2)) else { panic!() };
        assert_eq!(
            rows,
            &vec![
                ResultRow::Q2Qty { month: jan, item_name: "Latte".into(), sellings_qty: 5 },
                ResultRow::Q2Profit { month: jan, item_name: "Latte".into(), profit_sum: 900 },
            ]
        );
    }
}
