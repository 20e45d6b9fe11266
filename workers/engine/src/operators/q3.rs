//! `q3_agg`: TPV per (semester, store) for the stores this replica owns, named from the broadcast stores.

use super::HashMap;
use super::{unexpected, Emit, Operator, UnexpectedInput};
use coffee_model::keys::{Query, YearHalf};
use coffee_model::message::{Batch, Stream};
use coffee_model::node::StageKind;
use coffee_model::results::ResultRow;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Q3State {
    tpv: BTreeMap<(YearHalf, u32), i64>,
    stores: HashMap<u32, String>,
}

pub struct Q3Agg;

/// The name of a store, or an empty name when the stores file does not list it (a join never drops a row).
pub(crate) fn store_name(stores: &HashMap<u32, String>, store_id: u32) -> String {
    stores.get(&store_id).cloned().unwrap_or_default()
}

impl Operator for Q3Agg {
    type State = Q3State;

    fn stage(&self) -> StageKind {
        StageKind::Q3Agg
    }

    fn apply(&self, state: &mut Q3State, stream: Stream, batch: Batch, _: &mut Emit) -> Result<(), UnexpectedInput> {
        match (stream, batch) {
            (Stream::Q3Partial, Batch::StoreTpv(rows)) => {
                for r in rows {
                    *state.tpv.entry((r.half, r.store_id)).or_default() += r.cents;
                }
            }
            (Stream::Stores, Batch::Stores(rows)) => {
                state.stores.extend(rows.into_iter().map(|s| (s.store_id, s.store_name)));
            }
            (stream, batch) => return Err(unexpected(self.stage(), stream, &batch)),
        }
        Ok(())
    }

    fn finish(&self, state: Q3State, out: &mut Emit) {
        let rows = state
            .tpv
            .into_iter()
            .map(|((half, store), tpv)| ResultRow::Q3 { half, store_name: store_name(&state.stores, store), tpv })
            .collect();
        out.send(Stream::Results(Query::Q3), Batch::Results(rows));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffee_model::message::StoreTpv;
    use coffee_model::model::Store;

    #[test]
    fn sums_exact_cents_per_semester_and_store() {
        let op = Q3Agg;
        let mut state = Q3State::default();
        let mut out = Emit::default();
        let h1 = YearHalf { year: 2024, half: 1 };
        let part = |store_id, cents| StoreTpv { half: h1, store_id, cents };
        op.apply(&mut state, Stream::Q3Partial, Batch::StoreTpv(vec![part(1, 10), part(2, 5)]), &mut out).unwrap();
        op.apply(&mut state, Stream::Q3Partial, Batch::StoreTpv(vec![part(1, 1)]), &mut out).unwrap();
        let stores = vec![Store { store_id: 1, store_name: "G Coffee @ USJ 89q".into() }];
        op.apply(&mut state, Stream::Stores, Batch::Stores(stores), &mut out).unwrap();
        op.finish(state, &mut out);
        let Some(Batch::Results(rows)) = out.get(Stream::Results(Query::Q3)) else { panic!() };
        assert_eq!(rows[0], ResultRow::Q3 { half: h1, store_name: "G Coffee @ USJ 89q".into(), tpv: 11 });
        assert_eq!(rows[1], ResultRow::Q3 { half: h1, store_name: String::new(), tpv: 5 });
    }
}
