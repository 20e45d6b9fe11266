//! The query logic, as pure operators: each takes typed batches and returns typed batches. They know nothing of
//! AMQP, dedup, persistence or EOFs; the [`crate::runtime`] around them does.
//!
//! An operator emits either once per input message (the filters: exactly one message per destination replica per
//! input, even an empty one, so the runtime can reuse the input's seq and count what it sent), or only when the
//! session's inputs are complete (the aggregators). Never both on one stream.

pub mod filters;
pub mod q2;
pub mod q3;
pub mod q4;
pub mod topk;

use crate::message::{Batch, StageKind, Stream};
use crate::topology::{Endpoint, Topology};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Where one emitted batch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    pub stream: Stream,
    pub to: Destination,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Destination {
    Gateway,
    Stage(StageKind, u16),
}

/// The batches an operator produced for one step.
#[derive(Debug, Default)]
pub struct Emit {
    pub batches: Vec<(Target, Batch)>,
}

impl Emit {
    pub fn to_gateway(&mut self, stream: Stream, batch: Batch) {
        self.batches.push((Target { stream, to: Destination::Gateway }, batch));
    }

    /// One batch per replica of `stage`, in replica order.
    pub fn to_each_replica(&mut self, stream: Stream, stage: StageKind, batches: Vec<Batch>) {
        for (replica, batch) in batches.into_iter().enumerate() {
            self.batches.push((Target { stream, to: Destination::Stage(stage, replica as u16) }, batch));
        }
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

/// Builds the unexpected-input error for `batch`.
pub(crate) fn unexpected(stage: StageKind, stream: Stream, batch: &Batch) -> UnexpectedInput {
    let what = match batch {
        Batch::Transactions(_) => "transactions",
        Batch::TransactionItems(_) => "transaction items",
        Batch::Users(_) => "users",
        Batch::Stores(_) => "stores",
        Batch::MenuItems(_) => "menu items",
        Batch::ItemSales(_) => "item sales",
        Batch::StoreTpv(_) => "store TPV",
        Batch::Purchases(_) => "purchases",
        Batch::Candidates(_) => "candidates",
        Batch::Results(_) => "results",
    };
    UnexpectedInput { stage, stream, what }
}

/// The replica count of a stage, for an operator routing to it.
pub(crate) fn width(topology: &Topology, stage: StageKind) -> usize {
    usize::from(topology.width(Endpoint::Stage(stage)))
}
