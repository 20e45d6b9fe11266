//! How the gateway spreads a client's input over the first stages. Pure, so the seqs it assigns are a function of
//! the client's own seqs: a re-sent batch gets the same ids and is dropped downstream as a duplicate.

use crate::topology::{from_gateway, round_robin_count, Destination, Spread, Topology};
use coffee_model::message::{Batch, Stream};
use coffee_model::model::FileKind;

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

/// Where client batch `seq` of `kind` goes, and under which seq: along every edge of its stream from the
/// gateway. Round robin sends the batch whole to one replica, renumbered among that replica's batches; the other
/// spreads give every replica one batch under the client's seq.
pub fn route_input(topology: &Topology, kind: FileKind, seq: u64, batch: Batch) -> Vec<Routed<Batch>> {
    let stream = stream_of(kind);
    let edges: Vec<_> = from_gateway(stream).collect();
    let mut routed = Vec::new();
    let mut batch = Some(batch);
    for (i, edge) in edges.iter().enumerate() {
        // The last edge takes the batch itself rather than a copy.
        let batch = if i + 1 == edges.len() { batch.take() } else { batch.clone() }.expect("one batch per edge");
        match edge.spread {
            Spread::RoundRobin => {
                let n = u64::from(topology.width(edge.to));
                let to = topology.destinations(edge.to).nth((seq % n) as usize).expect("a replica");
                routed.push(Routed { to, stream, seq: seq / n, payload: batch });
            }
            Spread::Broadcast | Spread::ByKey => {
                // A client's rows of the wrong kind never get here (the session checks what a stream carries).
                let parts = topology.spread(edge, batch).expect("client rows spread by their edge");
                routed.extend(parts.into_iter().map(|(to, payload)| Routed { to, stream, seq, payload }));
            }
        }
    }
    routed
}

/// The EOFs that end `kind` after the client sent `batches` batches of it: one per destination, with the count of
/// messages that destination received.
pub fn input_eofs(topology: &Topology, kind: FileKind, batches: u64) -> Vec<Routed<u64>> {
    let stream = stream_of(kind);
    let mut eofs = Vec::new();
    for edge in from_gateway(stream) {
        let n = topology.width(edge.to);
        for (replica, to) in topology.destinations(edge.to).enumerate() {
            let count = match edge.spread {
                Spread::RoundRobin => round_robin_count(batches, replica as u16, n),
                Spread::Broadcast | Spread::ByKey => batches,
            };
            eofs.push(Routed { to, stream, seq: count, payload: count });
        }
    }
    eofs
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffee_model::model::{Date, User};
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
        let readers: u16 = from_gateway(Stream::Stores).map(|e| topology.width(e.to)).sum();
        assert_eq!(stores.len(), usize::from(readers), "every replica of every stage that reads stores");
        assert!(readers >= 4, "two q3_agg and two q4_top replicas at least");
        assert!(stream_of(FileKind::Stores).carries(&Batch::Stores(vec![])));
        assert!(!stream_of(FileKind::Users).carries(&Batch::Stores(vec![])));
    }
}
