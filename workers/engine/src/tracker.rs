//! Per session, what a receiver has applied from each expected (stream, sender): duplicate detection and counted
//! ends of stream. A stream is complete when its sender's EOF is in and every message it counted was applied,
//! whatever order data and EOF arrived in.

use coffee_model::message::Stream;

use coffee_model::node::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A set of sequence numbers, kept as ranges: everything below `floor` has been seen, plus disjoint, non-adjacent
/// ranges above it. Its size grows with the gaps between the seqs seen, not with their number, so it stays small
/// for seqs that arrive nearly in order (the common case), and a whole range can be added at once.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqSet {
    floor: u64,
    /// `start -> end` (exclusive), every `start > floor`.
    above: BTreeMap<u64, u64>,
}

impl SeqSet {
    pub fn contains(&self, seq: u64) -> bool {
        seq < self.floor || self.above.range(..=seq).next_back().is_some_and(|(_, &end)| seq < end)
    }

    /// Adds `seq`; false when it was already there.
    pub fn insert(&mut self, seq: u64) -> bool {
        if self.contains(seq) {
            return false;
        }
        self.insert_range(seq, seq.saturating_add(1));
        true
    }

    /// Adds every seq of `start..end`, in time proportional to the ranges it merges, not to its length.
    pub fn insert_range(&mut self, start: u64, end: u64) {
        if start >= end || end <= self.floor {
            return;
        }
        let (mut start, mut end) = (start.max(self.floor), end);
        // Merge with every range that overlaps or touches `start..end`.
        let touching: Vec<u64> =
            self.above.range(..=end).rev().take_while(|(_, &e)| e >= start).map(|(&s, _)| s).collect();
        for s in touching {
            let e = self.above.remove(&s).expect("listed");
            start = start.min(s);
            end = end.max(e);
        }
        if start == self.floor {
            self.floor = end;
        } else {
            self.above.insert(start, end);
        }
    }

    pub fn len(&self) -> u64 {
        self.floor + self.above.iter().map(|(s, e)| e - s).sum::<u64>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The set as half-open ranges, in order.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let floor = (self.floor > 0).then_some((0, self.floor));
        floor.into_iter().chain(self.above.iter().map(|(&s, &e)| (s, e))).collect()
    }

    /// The set of the seqs in `ranges` (which may overlap, or come in any order).
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> SeqSet {
        let mut set = SeqSet::default();
        for (start, end) in ranges {
            set.insert_range(start, end);
        }
        set
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    applied: SeqSet,
    eof: Option<u64>,
}

impl Progress {
    fn complete(&self) -> bool {
        if crate::planted::active(crate::planted::Bug::EofBeforeData) {
            return self.eof.is_some();
        }
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
        if progress.applied.insert(seq) || crate::planted::active(crate::planted::Bug::DedupOff) {
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

    /// Takes `seqs` and `eof` as applied from `(stream, sender)` (what a resuming client says it has): later
    /// admissions of them are duplicates. An end beyond which seqs were claimed is not believed: the stream
    /// could then never complete. Nothing happens for a stream this tracker does not expect.
    pub fn absorb(&mut self, stream: Stream, sender: NodeId, seqs: SeqSet, eof: Option<u64>) {
        let Some(progress) = self.inputs.get_mut(&(stream, sender)) else { return };
        for (start, end) in seqs.ranges() {
            progress.applied.insert_range(start, end);
        }
        let highest_end = progress.applied.ranges().last().map_or(0, |&(_, end)| end);
        if progress.eof.is_none() && eof.is_some_and(|count| count >= highest_end) {
            progress.eof = eof;
        }
    }

    /// Forgets which inputs were applied, keeping the EOFs: only for [`crate::planted::Bug::SnapshotWithoutDedup`].
    pub(crate) fn forget_applied(&mut self) {
        self.inputs.values_mut().for_each(|progress| progress.applied = SeqSet::default());
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
    use coffee_model::node::{Role, StageKind};

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
        assert_eq!(s.ranges(), vec![(0, 4), (5, 6)]);
    }

    #[test]
    fn a_huge_range_costs_nothing_and_merges_with_its_neighbours() {
        let mut s = SeqSet::from_ranges([(10, 20), (30, 40)]);
        s.insert_range(15, u64::MAX);
        assert_eq!(s.ranges(), vec![(10, u64::MAX)]);
        s.insert_range(0, 10);
        assert_eq!(s.ranges(), vec![(0, u64::MAX)]);
        assert!(s.contains(u64::MAX - 1) && !s.contains(u64::MAX));
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

/// Property test: a [`SeqSet`] behaves as the plain set of the seqs inserted, however they arrive.
#[cfg(test)]
mod prop_tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn a_seq_set_is_the_set_of_what_was_inserted(
            ops in prop::collection::vec((0u64..200, 0u64..8, any::<bool>()), 0..80),
        ) {
            let mut set = SeqSet::default();
            let mut model = BTreeSet::new();
            for (start, len, one) in ops {
                if one {
                    prop_assert_eq!(set.insert(start), model.insert(start));
                } else {
                    set.insert_range(start, start + len);
                    model.extend(start..start + len);
                }
            }
            prop_assert_eq!(set.len(), model.len() as u64);
            for seq in 0..220 {
                prop_assert_eq!(set.contains(seq), model.contains(&seq), "seq {}", seq);
            }
            let from_ranges = SeqSet::from_ranges(set.ranges());
            prop_assert_eq!(&from_ranges, &set);
            let flattened: BTreeSet<u64> = set.ranges().into_iter().flat_map(|(s, e)| s..e).collect();
            prop_assert_eq!(flattened, model);
        }
    }
}
