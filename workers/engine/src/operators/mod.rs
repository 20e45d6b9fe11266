//! The query logic, as pure operators: each takes typed batches and returns typed batches. They know nothing of
//! AMQP, dedup, persistence or EOFs; the [`crate::runtime`] around them does.
//!
//! An operator emits rows per stream, not per destination: the runtime spreads them along the stream's edge of
//! the topology ([`crate::topology::EDGES`]), and sends every replica of every edge exactly one batch, an empty
//! one if the operator emitted nothing there. It does so for each input message on the edges marked
//! [`PerInput`](crate::topology::Emitted::PerInput) (the filters), and once when the session's inputs are complete on those marked
//! [`AtEnd`](crate::topology::Emitted::AtEnd) (the aggregators): so a receiver always knows how many messages to wait for.

pub mod filters;
pub mod q2;
pub mod q3;
pub mod q4;
#[cfg(feature = "example-query")]
pub mod q5;
pub mod topk;

use coffee_model::message::{Batch, Stream};

use coffee_model::node::StageKind;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::btree_map::{BTreeMap, Entry};

/// The operators' hash map: std's, with foldhash's hasher instead of SipHash. Their keys are small integers
/// (ids, months, half-years), hashed once or more per row, and SipHash showed in `q4_count`'s profile
/// (docs/benchmarks.md). foldhash is seeded at random per process like std's, so colliding keys cannot be
/// picked in advance (it promises no more than that against a determined attacker), and nothing depends on a
/// map's order (finals are sorted before they go out).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The rows an operator produced for one step, per stream.
#[derive(Debug, Default)]
pub struct Emit {
    batches: BTreeMap<Stream, Batch>,
}

impl Emit {
    /// Emits `batch` on `stream`; a second batch on the same stream is appended to the first.
    pub fn send(&mut self, stream: Stream, batch: Batch) {
        match self.batches.entry(stream) {
            Entry::Vacant(slot) => {
                slot.insert(batch);
            }
            Entry::Occupied(mut slot) => slot.get_mut().append(batch),
        }
    }

    /// What was emitted on `stream`, taken out.
    pub fn take(&mut self, stream: Stream) -> Option<Batch> {
        self.batches.remove(&stream)
    }

    /// What was emitted on `stream`.
    pub fn get(&self, stream: Stream) -> Option<&Batch> {
        self.batches.get(&stream)
    }

    /// The streams emitted on and not taken.
    pub fn streams(&self) -> impl Iterator<Item = Stream> + '_ {
        self.batches.keys().copied()
    }
}

/// A batch that this stage does not consume: a message on the wrong queue, or a poisoned one.
#[derive(Debug, thiserror::Error)]
#[error("stage {stage} does not consume {what} on stream {stream:?}")]
pub struct UnexpectedInput {
    pub stage: StageKind,
    pub stream: Stream,
    pub what: &'static str,
}

/// The state of one session at one stage replica, and the step functions over it.
pub trait Operator: Send + Sync + 'static {
    /// Serializable, because it is snapshotted to disk.
    type State: Default + Send + Serialize + DeserializeOwned + 'static;

    fn stage(&self) -> StageKind;

    /// Applies one data message of the session.
    fn apply(
        &self,
        state: &mut Self::State,
        stream: Stream,
        batch: Batch,
        out: &mut Emit,
    ) -> Result<(), UnexpectedInput>;

    /// Every input of the session has arrived: emit the final batches.
    fn finish(&self, state: Self::State, out: &mut Emit);
}

/// Whatever runs a stage's operator (the runtime's replica): [`with_operator`] hands it the operator of its stage.
pub trait WithOperator {
    type Output;
    fn with<O: Operator>(self, operator: O) -> Self::Output;
}

/// The registry of stages: the operator each stage runs. A new stage's operator is added here.
pub fn with_operator<W: WithOperator>(stage: StageKind, runner: W) -> W::Output {
    match stage {
        StageKind::TxFilter => runner.with(filters::TxFilter),
        StageKind::ItemFilter => runner.with(filters::ItemFilter),
        StageKind::Q2Agg => runner.with(q2::Q2Agg),
        StageKind::Q3Agg => runner.with(q3::Q3Agg),
        StageKind::Q4Count => runner.with(q4::Q4Count),
        StageKind::Q4Top => runner.with(q4::Q4Top),
        #[cfg(feature = "example-query")]
        StageKind::Q5Count => runner.with(q5::Q5Count),
    }
}

/// Builds the unexpected-input error for `batch`.
pub(crate) fn unexpected(stage: StageKind, stream: Stream, batch: &Batch) -> UnexpectedInput {
    UnexpectedInput { stage, stream, what: batch.kind_name() }
}
