//! The tests' example query (the `example-query` feature), added by the recipe of `docs/architecture.md`: per
//! store, how many transactions it had in 2024-2025. Transactions reach it by store, so each replica's counts are
//! final for its stores; the broadcast stores name them.

use super::filters::in_query_years;
use super::q3::store_name;
use super::HashMap;
use super::{unexpected, Emit, Operator, UnexpectedInput};
use coffee_model::keys::Query;
use coffee_model::message::{Batch, Stream};
use coffee_model::node::StageKind;
use coffee_model::results::ResultRow;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Q5State {
    transactions: BTreeMap<u32, u64>,
    stores: HashMap<u32, String>,
}

pub struct Q5Count;

impl Operator for Q5Count {
    type State = Q5State;

    fn stage(&self) -> StageKind {
        StageKind::Q5Count
    }

    fn apply(&self, state: &mut Q5State, stream: Stream, batch: Batch, _: &mut Emit) -> Result<(), UnexpectedInput> {
        match (stream, batch) {
            (Stream::Transactions, Batch::Transactions(rows)) => {
                for t in rows.iter().filter(|t| in_query_years(t.created_at.year)) {
                    *state.transactions.entry(t.store_id).or_default() += 1;
                }
            }
            (Stream::Stores, Batch::Stores(rows)) => {
                state.stores.extend(rows.into_iter().map(|s| (s.store_id, s.store_name)));
            }
            (stream, batch) => return Err(unexpected(self.stage(), stream, &batch)),
        }
        Ok(())
    }

    fn finish(&self, state: Q5State, out: &mut Emit) {
        let rows = state
            .transactions
            .into_iter()
            .map(|(store_id, transactions)| ResultRow::Q5 {
                store_name: store_name(&state.stores, store_id),
                transactions,
            })
            .collect();
        out.send(Stream::Results(Query::Q5), Batch::Results(rows));
    }
}
