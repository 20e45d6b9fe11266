//! Q4 in two steps. `q4_count` owns a partition of users: it counts purchases per (store, user), joins its users'
//! birthdates, and sends each store's local top 3 to the `q4_top` replica owning that store. Since every user
//! lives on one replica, the global top 3 of a store is within the union of the local ones.

use super::q3::store_name;
use super::topk::top_k;
use super::HashMap;
use super::{unexpected, Emit, Operator, UnexpectedInput};
use coffee_model::keys::Query;
use coffee_model::message::{Batch, Candidate, Stream};
use coffee_model::model::Date;
use coffee_model::node::StageKind;
use coffee_model::results::ResultRow;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many customers per store Q4 reports.
pub const TOP_CUSTOMERS: usize = 3;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Q4CountState {
    purchases: HashMap<(u32, u32), u64>,
    birthdates: HashMap<u32, Date>,
}

pub struct Q4Count;

impl Operator for Q4Count {
    type State = Q4CountState;

    fn stage(&self) -> StageKind {
        StageKind::Q4Count
    }

    fn apply(
        &self,
        state: &mut Q4CountState,
        stream: Stream,
        batch: Batch,
        _: &mut Emit,
    ) -> Result<(), UnexpectedInput> {
        match (stream, batch) {
            (Stream::Q4Partial, Batch::Purchases(rows)) => {
                for p in rows {
                    *state.purchases.entry((p.store_id, p.user_id)).or_default() += p.count;
                }
            }
            (Stream::Users, Batch::Users(rows)) => {
                state.birthdates.extend(rows.into_iter().map(|u| (u.user_id, u.birthdate)));
            }
            (stream, batch) => return Err(unexpected(self.stage(), stream, &batch)),
        }
        Ok(())
    }

    fn finish(&self, state: Q4CountState, out: &mut Emit) {
        let mut per_store: BTreeMap<u32, Vec<(u32, u64)>> = BTreeMap::new();
        for ((store, user), count) in state.purchases {
            per_store.entry(store).or_default().push((user, count));
        }
        let mut candidates = Vec::new();
        for (store_id, users) in per_store {
            for (user_id, count) in top_k(users, TOP_CUSTOMERS, |&(user, count)| (count, user)) {
                let birthdate = state.birthdates.get(&user_id).copied();
                candidates.push(Candidate { store_id, user_id, count, birthdate });
            }
        }
        out.send(Stream::Q4Candidates, Batch::Candidates(candidates));
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Q4TopState {
    candidates: BTreeMap<u32, Vec<Candidate>>,
    stores: HashMap<u32, String>,
}

/// `q4_top`: the final top 3 of the stores this replica owns, named from the broadcast stores.
pub struct Q4Top;

impl Operator for Q4Top {
    type State = Q4TopState;

    fn stage(&self) -> StageKind {
        StageKind::Q4Top
    }

    fn apply(&self, state: &mut Q4TopState, stream: Stream, batch: Batch, _: &mut Emit) -> Result<(), UnexpectedInput> {
        match (stream, batch) {
            (Stream::Q4Candidates, Batch::Candidates(rows)) => {
                for c in rows {
                    state.candidates.entry(c.store_id).or_default().push(c);
                }
            }
            (Stream::Stores, Batch::Stores(rows)) => {
                state.stores.extend(rows.into_iter().map(|s| (s.store_id, s.store_name)));
            }
            (stream, batch) => return Err(unexpected(self.stage(), stream, &batch)),
        }
        Ok(())
    }

    fn finish(&self, state: Q4TopState, out: &mut Emit) {
        let mut rows = Vec::new();
        for (store_id, candidates) in state.candidates {
            for c in top_k(candidates, TOP_CUSTOMERS, |c| (c.count, c.user_id)) {
                rows.push(ResultRow::Q4 {
                    store_name: store_name(&state.stores, store_id),
                    birthdate: c.birthdate,
                    user_id: c.user_id,
                    purchases_qty: c.count,
                });
            }
        }
        out.send(Stream::Results(Query::Q4), Batch::Results(rows));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffee_model::message::Purchases;
    use coffee_model::model::{Store, User};

    #[test]
    fn two_partitions_merge_to_the_global_top_three() {
        let count = Q4Count;
        let p = |user_id, n| Purchases { store_id: 1, user_id, count: n };
        let date = Date { year: 1990, month: 1, day: 2 };
        // Partition A: users 10 (5), 11 (3), 12 (3), 13 (3). Partition B: users 4 (3), 20 (4).
        let partitions = [vec![p(10, 2), p(11, 3), p(12, 3), p(13, 3), p(10, 3)], vec![p(4, 3), p(20, 4)]];
        let mut top_state = Q4TopState::default();
        for rows in partitions {
            let mut state = Q4CountState::default();
            let mut out = Emit::default();
            let users: Vec<User> = rows.iter().map(|r| User { user_id: r.user_id, birthdate: date }).collect();
            count.apply(&mut state, Stream::Users, Batch::Users(users), &mut out).unwrap();
            count.apply(&mut state, Stream::Q4Partial, Batch::Purchases(rows), &mut out).unwrap();
            count.finish(state, &mut out);
            let batch = out.take(Stream::Q4Candidates).unwrap();
            let Batch::Candidates(c) = &batch else { panic!() };
            assert!(c.len() <= TOP_CUSTOMERS);
            Q4Top.apply(&mut top_state, Stream::Q4Candidates, batch, &mut Emit::default()).unwrap();
        }
        let stores = vec![Store { store_id: 1, store_name: "S".into() }];
        Q4Top.apply(&mut top_state, Stream::Stores, Batch::Stores(stores), &mut Emit::default()).unwrap();
        let mut out = Emit::default();
        Q4Top.finish(top_state, &mut out);
        let Some(Batch::Results(rows)) = out.get(Stream::Results(Query::Q4)) else { panic!() };
        let picked: Vec<(u32, u64)> = rows
            .iter()
            .map(|r| match r {
                ResultRow::Q4 { user_id, purchases_qty, .. } => (*user_id, *purchases_qty),
                _ => panic!(),
            })
            .collect();
        // 10 (5), 20 (4), then the tie at 3 goes to the lowest id: 4.
        assert_eq!(picked, vec![(10, 5), (20, 4), (4, 3)]);
    }
}
