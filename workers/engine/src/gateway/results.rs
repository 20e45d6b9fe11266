//! One session's results as the gateway must forward them, without a broker or a socket: which messages of the
//! session's results queue become numbered frames for the client, which are dropped as already forwarded, and
//! when a delivery may be acked. A result's delivery is acked only once the client acked the frame that carried
//! it (the client writes and flushes first), so a gateway that dies in between has it redelivered to its
//! successor; a resumed client says what it has, and that is never sent again. The connection's loop
//! (`session.rs`) performs this on RabbitMQ and the socket; the simulator (`coffee sim`) on its broker and its
//! client, and can restart the gateway between any two steps.

use crate::planted::{self, Bug};
use crate::protocol::{GatewayFrame, ReceivedStream, ResultId};
use crate::topology::{result_source, Endpoint, Topology};
use crate::tracker::{Admission, InputTracker, SeqSet};
use coffee_model::keys::Query;
use coffee_model::message::{Batch, Stream};
use coffee_model::wire::{Body, Envelope};
use std::collections::{BTreeSet, VecDeque};

/// The result streams a session waits for: one per query, from every replica of the stage that answers it.
pub fn result_tracker(topology: &Topology) -> InputTracker {
    InputTracker::new(Query::ALL.into_iter().flat_map(|q| {
        topology.senders(Endpoint::Stage(result_source(q))).into_iter().map(move |s| (Stream::Results(q), s))
    }))
}

/// The session's result tracker with what a resuming client says it has (`received`) already in.
fn tracker_with(topology: &Topology, received: &[ReceivedStream]) -> InputTracker {
    let mut tracker = result_tracker(topology);
    for stream in received {
        let seqs = SeqSet::from_ranges(stream.seqs.iter().copied());
        tracker.absorb(Stream::Results(stream.query), stream.sender, seqs, stream.eof);
    }
    tracker
}

/// Whether a resuming client that says it has `received` has every result of its session.
pub fn has_every_result(topology: &Topology, received: &[ReceivedStream]) -> bool {
    tracker_with(topology, received).is_complete()
}

/// What to do with one message of a session's results queue; `D` is its delivery (what acks it).
#[derive(Debug)]
pub enum Handling<D> {
    /// Send the frame; its delivery is acked once the client acks the frame ([`Forward::client_acked`]).
    Send(GatewayFrame),
    /// Nothing for the client (it has it already, or it adds nothing): ack the delivery now.
    Drop(D, ResultId, Admission),
    /// Not a result of this session: set it aside (never redelivered) with why, then ack it.
    Poison(D, String),
}

/// Result bytes (as the broker delivered them) forwarded to a client and not acked by it, past which the gateway
/// takes no more deliveries for it: a window of a few large result messages, so a client that reads slowly or
/// not at all costs the gateway this much besides its prefetch, not every result its consumer holds.
pub const UNACKED_BYTES: usize = 8 << 20;

/// Where the forwarding of one session's results stands, on one connection.
#[derive(Debug)]
pub struct Forward<D> {
    tracker: InputTracker,
    /// Queries whose end the client was sent.
    done: BTreeSet<Query>,
    /// Frames sent and not yet acked by the client: each result's delivery and its message's bytes, and `None`
    /// for a query's end.
    pending: VecDeque<(u64, Option<D>, usize)>,
    /// The bytes of the messages in `pending`.
    unacked_bytes: usize,
    /// The last frame's number.
    n: u64,
}

impl<D> Forward<D> {
    /// The forwarding of a session to a client that says it has `received` already (nothing for a new one).
    pub fn new(topology: &Topology, received: Vec<ReceivedStream>) -> Forward<D> {
        let tracker = tracker_with(topology, &received);
        Forward { tracker, done: BTreeSet::new(), pending: VecDeque::new(), unacked_bytes: 0, n: 0 }
    }

    /// The frames that end the queries now complete, each sent once; the client acks them as it acks results.
    pub fn query_ends(&mut self) -> Vec<GatewayFrame> {
        let mut frames = Vec::new();
        for query in Query::ALL {
            if !self.done.contains(&query) && self.tracker.stream_complete(Stream::Results(query)) {
                self.done.insert(query);
                self.n += 1;
                frames.push(GatewayFrame::QueryDone { n: self.n, query });
                self.pending.push_back((self.n, None, 0));
            }
        }
        frames
    }

    /// Whether frames sent to the client wait for its ack.
    pub fn unacked(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether another message may be forwarded: under [`UNACKED_BYTES`] sent and not acked by the client. The
    /// gateway takes no delivery beyond that, so what a slow or silent client makes it hold is bounded in bytes
    /// (its frames, queued or in the socket) besides the results consumer's prefetch.
    pub fn has_room(&self) -> bool {
        self.unacked_bytes < UNACKED_BYTES
    }

    /// Whether the client acked every result and every query's end: the session is over (the caller cleans up,
    /// then says `Done`).
    pub fn finished(&self) -> bool {
        self.done.len() == Query::ALL.len() && self.pending.is_empty()
    }

    /// One message from the session's results queue, and its delivery.
    pub fn message(&mut self, bytes: &[u8], delivery: D) -> Handling<D> {
        let envelope = match Envelope::decode(bytes) {
            Ok(envelope) => envelope,
            Err(e) => return Handling::Poison(delivery, e.to_string()),
        };
        let (query, eof, rows) = match (envelope.stream, envelope.body) {
            (Stream::Results(query), Body::Eof { count }) => (query, Some(count), Vec::new()),
            (Stream::Results(query), Body::Data(batch)) => match batch {
                Batch::Results(rows) => (query, None, rows),
                _ => return Handling::Poison(delivery, "wrong rows".to_owned()),
            },
            _ => return Handling::Poison(delivery, "not a result".to_owned()),
        };
        let id = ResultId { query, sender: envelope.sender, seq: envelope.seq, eof };
        let admission = match id.eof {
            Some(count) => self.tracker.admit_eof(Stream::Results(query), id.sender, count),
            None => self.tracker.admit_data(Stream::Results(query), id.sender, id.seq),
        };
        match admission {
            Admission::Apply => {
                self.n += 1;
                self.pending.push_back((self.n, Some(delivery), bytes.len()));
                self.unacked_bytes += bytes.len();
                Handling::Send(GatewayFrame::Result { n: self.n, id, rows })
            }
            admission => Handling::Drop(delivery, id, admission),
        }
    }

    /// The client acked every frame up to `upto`: the deliveries that may be acked now, in order.
    pub fn client_acked(&mut self, upto: u64) -> Vec<D> {
        // The planted bug acks every frame sent so far, as a `multiple` ack of the newest delivery would.
        let upto = if planted::active(Bug::ResultsAckedPastTheClient) { u64::MAX } else { upto };
        let mut acked = Vec::new();
        while self.pending.front().is_some_and(|(n, _, _)| *n <= upto) {
            let (_, delivery, bytes) = self.pending.pop_front().expect("checked");
            self.unacked_bytes -= bytes;
            if let Some(delivery) = delivery {
                acked.push(delivery);
            }
        }
        acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffee_model::results::ResultRow;

    fn result(topology: &Topology, query: Query, replica: usize, seq: u64) -> Vec<u8> {
        let sender = topology.senders(Endpoint::Stage(result_source(query)))[replica];
        let row = ResultRow::Q1 { transaction_id: "t".into(), final_amount: 7500 };
        let body = Body::Data(Batch::Results(vec![row]));
        Envelope { session: uuid::Uuid::nil(), sender, stream: Stream::Results(query), seq, body }.encode()
    }

    /// A result's delivery is acked only once the client acked its frame; a duplicate, or what a resumed client
    /// has, is acked at once and never sent; what is not a result is set aside.
    #[test]
    fn deliveries_are_acked_after_the_client_and_what_it_has_is_not_sent_again() {
        let topology = Topology::default();
        let mut forward: Forward<&str> = Forward::new(&topology, Vec::new());
        assert!(forward.query_ends().is_empty());
        assert!(matches!(forward.message(&result(&topology, Query::Q1, 0, 0), "a"), Handling::Send(_)));
        assert!(matches!(forward.message(&result(&topology, Query::Q1, 1, 0), "b"), Handling::Send(_)));
        let again = forward.message(&result(&topology, Query::Q1, 0, 0), "a again");
        assert!(matches!(again, Handling::Drop("a again", _, Admission::Duplicate)), "{again:?}");
        assert!(matches!(forward.message(b"junk", "j"), Handling::Poison("j", _)));
        assert_eq!(forward.client_acked(0), Vec::<&str>::new());
        assert_eq!(forward.client_acked(1), vec!["a"]);
        assert_eq!(forward.client_acked(2), vec!["b"]);

        let sender = topology.senders(Endpoint::Stage(result_source(Query::Q1)))[0];
        let received = vec![ReceivedStream { query: Query::Q1, sender, seqs: vec![(0, 1)], eof: None }];
        let mut resumed: Forward<&str> = Forward::new(&topology, received);
        let had = resumed.message(&result(&topology, Query::Q1, 0, 0), "a");
        assert!(matches!(had, Handling::Drop("a", _, Admission::Duplicate)), "{had:?}");
        assert!(!resumed.finished());
    }

    #[test]
    fn a_client_is_sent_at_most_a_window_of_unacked_bytes() {
        let topology = Topology::default();
        let sender = topology.senders(Endpoint::Stage(result_source(Query::Q1)))[0];
        let row = ResultRow::Q1 { transaction_id: "t".repeat(1 << 20), final_amount: 7500 };
        let big = |seq| {
            let body = Body::Data(Batch::Results(vec![row.clone()]));
            Envelope { session: uuid::Uuid::nil(), sender, stream: Stream::Results(Query::Q1), seq, body }.encode()
        };
        let mut forward: Forward<u64> = Forward::new(&topology, Vec::new());
        let mut sent = 0;
        let mut seq = 0;
        while forward.has_room() {
            let message = big(seq);
            sent += message.len();
            assert!(matches!(forward.message(&message, seq), Handling::Send(_)));
            seq += 1;
        }
        assert!((UNACKED_BYTES..UNACKED_BYTES + (1 << 20) + 64).contains(&sent), "{sent} bytes sent");
        assert_eq!(forward.client_acked(1), vec![0], "an ack of frame 1 frees the bytes of its message");
        assert!(forward.has_room());
    }
}
