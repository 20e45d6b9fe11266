//! Per session, what a receiver has applied from each expected (stream, sender): duplicate detection and counted
//! ends of stream. A stream is complete when its sender's EOF is in and every message it counted was applied,
//! whatever order data and EOF arrived in.

use crate::message::{NodeId, Stream};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A set of sequence numbers, kept small for the common case of seqs arriving nearly in order: everything below
/// `floor` has been seen, plus the sparse set above it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqSet {
    floor: u64,
    above: BTreeSet<u64>,
}

impl SeqSet {
    pub fn contains(&self, seq: u64) -> bool {
        seq < self.floor || self.above.contains(&seq)
    }

    /// Adds `seq`; false when it was already there.
    pub fn insert(&mut self, seq: u64) -> bool {
        if self.contains(seq) {
            return false;
        }
        self.above.insert(seq);
        while self.above.remove(&self.floor) {
            self.floor += 1;
        }
        true
    }

    pub fn len(&self) -> u64 {
        self.floor + self.above.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    applied: SeqSet,
    eof: Option<u64>,
}

impl Progress {
    fn complete(&self) -> bool {
        self.eof == Some(self.applied.len())
    }
}

/// What to do with an arriving message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// New: apply it (it is now recorded as applied).
    Apply,
    /// Seen before (a redelivery or a re-publish after a crash): drop it.
    Duplicate,
    /// From a sender or on a stream this receiver does not expect: drop it and log.
    Unexpected,
    /// Its seq is at or past its sender's announced count: drop it and log.
    BeyondEof,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTracker {
    inputs: BTreeMap<(Stream, NodeId), Progress>,
}

impl InputTracker {
    /// A tracker expecting each `(stream, sender)`.
    pub fn new(expected: impl IntoIterator<Item = (Stream, NodeId)>) -> Self {
        InputTracker { inputs: expected.into_iter().map(|k| (k, Progress::default())).collect() }
    }

    /// Whether `(stream, sender)` is one of the inputs this tracker waits for.
    pub fn expects(&self, stream: Stream, sender: NodeId) -> bool {
        self.inputs.contains_key(&(stream, sender))
    }

    pub fn admit_data(&mut self, stream: Stream, sender: NodeId, seq: u64) -> Admission {
        let Some(progress) = self.inputs.get_mut(&(stream, sender)) else {
            return Admission::Unexpected;
        };
        if progress.eof.is_some_and(|count| seq >= count) {
            return Admission::BeyondEof;
        }
        if progress.applied.insert(seq) {
            Admission::Apply
        } else {
            Admission::Duplicate
        }
    }

    pub fn admit_eof(&mut self, stream: Stream, sender: NodeId, count: u64) -> Admission {
        let Some(progress) = self.inputs.get_mut(&(stream, sender)) else {
            return Admission::Unexpected;
        };
        match progress.eof {
            Some(_) => Admission::Duplicate,
            None => {
                progress.eof = Some(count);
                Admission::Apply
            }
        }
    }

    /// Every expected sender on `stream` has ended it and all it counted was applied.
    pub fn stream_complete(&self, stream: Stream) -> bool {
        self.inputs.iter().filter(|((s, _), _)| *s == stream).all(|(_, p)| p.complete())
    }

    pub fn is_complete(&self) -> bool {
        self.inputs.values().all(Progress::complete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Role, StageKind};

    fn node(replica: u16) -> NodeId {
        NodeId { role: Role::Stage(StageKind::TxFilter), replica }
    }

    #[test]
    fn seq_set_compacts_and_detects_duplicates() {
        let mut s = SeqSet::default();
        for seq in [2, 0, 1, 5, 3] {
            assert!(s.insert(seq));
        }
        assert!(!s.insert(1) && !s.insert(5));
        assert_eq!(s.len(), 5);
        assert_eq!(s.floor, 4, "0..=3 folded into the floor");
        assert!(!s.contains(4));
    }

    #[test]
    fn eof_before_data_waits_for_every_counted_message() {
        let mut t = InputTracker::new([(Stream::Q3Partial, node(0)), (Stream::Q3Partial, node(1))]);
        assert_eq!(t.admit_eof(Stream::Q3Partial, node(0), 2), Admission::Apply);
        assert_eq!(t.admit_eof(Stream::Q3Partial, node(1), 0), Admission::Apply);
        assert!(!t.is_complete());
        assert_eq!(t.admit_data(Stream::Q3Partial, node(0), 1), Admission::Apply);
        assert_eq!(t.admit_data(Stream::Q3Partial, node(0), 1), Admission::Duplicate);
        assert!(!t.is_complete());
        assert_eq!(t.admit_data(Stream::Q3Partial, node(0), 0), Admission::Apply);
        assert!(t.is_complete());
        assert_eq!(t.admit_data(Stream::Q3Partial, node(0), 2), Admission::BeyondEof);
        assert_eq!(t.admit_eof(Stream::Q3Partial, node(0), 2), Admission::Duplicate);
    }

    #[test]
    fn unexpected_senders_and_streams_are_refused() {
        let mut t = InputTracker::new([(Stream::Stores, node(0))]);
        assert_eq!(t.admit_data(Stream::Stores, node(1), 0), Admission::Unexpected);
        assert_eq!(t.admit_data(Stream::Users, node(0), 0), Admission::Unexpected);
        assert_eq!(t.admit_eof(Stream::Users, node(0), 0), Admission::Unexpected);
        assert!(!t.stream_complete(Stream::Stores));
        t.admit_eof(Stream::Stores, node(0), 0);
        assert!(t.stream_complete(Stream::Stores) && t.is_complete());
    }
}
