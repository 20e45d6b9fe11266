//! How the gateway spreads a client's input over the first stages. Pure, so the seqs it assigns are a function of
//! the client's own seqs: a re-sent batch gets the same ids and is dropped downstream as a duplicate.

use crate::message::{Batch, StageKind, Stream};
use crate::model::FileKind;
use crate::operators::Destination;
use crate::topology::{partition, round_robin_count, Topology};

/// One message the gateway publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed<T> {
    pub to: Destination,
    pub stream: Stream,
    pub seq: u64,
    pub payload: T,
}

/// The stream a file kind travels on.
pub fn stream_of(kind: FileKind) -> Stream {
    match kind {
        FileKind::Transactions => Stream::Transactions,
        FileKind::TransactionItems => Stream::TransactionItems,
        FileKind::Users => Stream::Users,
        FileKind::Stores => Stream::Stores,
        FileKind::MenuItems => Stream::MenuItems,
    }
}

fn replicas_of(topology: &Topology, stage: StageKind) -> impl Iterator<Item = Destination> {
    (0..topology.replicas(stage)).map(move |r| Destination::Stage(stage, r))
}

/// Where client batch `seq` of `kind` goes, and under which seq.
pub fn route_input(topology: &Topology, kind: FileKind, seq: u64, batch: Batch) -> Vec<Routed<Batch>> {
    let stream = stream_of(kind);
    let round_robin = |stage: StageKind, batch: Batch| {
        let n = u64::from(topology.replicas(stage));
        vec![Routed { to: Destination::Stage(stage, (seq % n) as u16), stream, seq: seq / n, payload: batch }]
    };
    let broadcast = |stages: &[StageKind], batch: Batch| {
        stages
            .iter()
            .flat_map(|&stage| replicas_of(topology, stage))
            .map(|to| Routed { to, stream, seq, payload: batch.clone() })
            .collect()
    };
    match (kind, batch) {
        (FileKind::Transactions, batch) => round_robin(StageKind::TxFilter, batch),
        (FileKind::TransactionItems, batch) => round_robin(StageKind::ItemFilter, batch),
        (FileKind::Stores, batch) => broadcast(&[StageKind::Q3Agg, StageKind::Q4Top], batch),
        (FileKind::MenuItems, batch) => broadcast(&[StageKind::Q2Agg], batch),
        (FileKind::Users, Batch::Users(users)) => {
            // Users live with the purchases that join on them: partitioned by user id, like tx_filter's output.
            let n = topology.replicas(StageKind::Q4Count);
            let mut parts: Vec<Vec<_>> = (0..n).map(|_| Vec::new()).collect();
            for user in users {
                parts[usize::from(partition(user.user_id.into(), n))].push(user);
            }
            parts
                .into_iter()
                .enumerate()
                .map(|(r, users)| Routed {
                    to: Destination::Stage(StageKind::Q4Count, r as u16),
                    stream,
                    seq,
                    payload: Batch::Users(users),
                })
                .collect()
        }
        (FileKind::Users, _) => Vec::new(),
    }
}

/// The EOFs that end `kind` after the client sent `batches` batches of it: one per destination, with the count of
/// messages that destination received.
pub fn input_eofs(topology: &Topology, kind: FileKind, batches: u64) -> Vec<Routed<u64>> {
    let stream = stream_of(kind);
    let every = |stages: &[StageKind]| -> Vec<Routed<u64>> {
        stages
            .iter()
            .flat_map(|&stage| replicas_of(topology, stage))
            .map(|to| Routed { to, stream, seq: batches, payload: batches })
            .collect()
    };
    let round_robin = |stage: StageKind| -> Vec<Routed<u64>> {
        let n = topology.replicas(stage);
        (0..n)
            .map(|r| {
                let count = round_robin_count(batches, r, n);
                Routed { to: Destination::Stage(stage, r), stream, seq: count, payload: count }
            })
            .collect()
    };
    match kind {
        FileKind::Transactions => round_robin(StageKind::TxFilter),
        FileKind::TransactionItems => round_robin(StageKind::ItemFilter),
        FileKind::Stores => every(&[StageKind::Q3Agg, StageKind::Q4Top]),
        FileKind::MenuItems => every(&[StageKind::Q2Agg]),
        FileKind::Users => every(&[StageKind::Q4Count]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Date, User};
    use std::collections::BTreeMap;

    #[test]
    fn round_robin_seqs_are_contiguous_per_replica_and_match_the_eofs() {
        let topology = Topology::with_replicas("t", "tx_filter=3").unwrap();
        let mut seqs: BTreeMap<Destination, Vec<u64>> = BTreeMap::new();
        for seq in 0..10 {
            for r in route_input(&topology, FileKind::Transactions, seq, Batch::Transactions(vec![])) {
                seqs.entry(r.to).or_default().push(r.seq);
            }
        }
        for eof in input_eofs(&topology, FileKind::Transactions, 10) {
            let got = &seqs[&eof.to];
            assert_eq!(got, &(0..eof.payload).collect::<Vec<_>>());
        }
    }

    #[test]
    fn users_are_partitioned_and_dimensions_broadcast() {
        let topology = Topology::default();
        let date = Date { year: 2000, month: 1, day: 1 };
        let users = (0..50).map(|user_id| User { user_id, birthdate: date }).collect();
        let routed = route_input(&topology, FileKind::Users, 4, Batch::Users(users));
        assert_eq!(routed.len(), 2);
        assert_eq!(routed.iter().map(|r| r.payload.len()).sum::<usize>(), 50);
        assert!(routed.iter().all(|r| r.seq == 4));
        let stores = route_input(&topology, FileKind::Stores, 0, Batch::Stores(vec![]));
        assert_eq!(stores.len(), 4, "two q3_agg and two q4_top replicas");
        assert!(stream_of(FileKind::Stores).carries(&Batch::Stores(vec![])));
        assert!(!stream_of(FileKind::Users).carries(&Batch::Stores(vec![])));
    }
}
