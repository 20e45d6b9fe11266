//! Coffee Shop Analysis: a fault-tolerant distributed pipeline for four queries over a coffee-shop chain's CSV files.
//!
//! Layout (one crate, one binary `coffee`, a module per role):
//! - [`model`], [`dataset`]: typed rows and reading the CSV layout (shared by the client and the reference).
//! - [`reference`]: the plain single-process oracle of Q1-Q4, sharing no query code with the pipeline.
//! - [`gen`]: the deterministic synthetic dataset generator.
//! - [`compare`]: comparing two result files as multisets, per query.

pub mod amqp;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod compare;
pub mod compose;
pub mod dataset;
pub mod docker;
pub mod gateway;
pub mod gen;
pub mod message;
pub mod model;
pub mod operators;
pub mod orchestrator;
pub mod protocol;
pub mod reference;
pub mod results;
pub mod runtime;
pub mod state;
pub mod topology;

/// A failpoint for the tests that kill a node at a chosen instruction. Inert unless the `FAILPOINTS`
/// environment variable names it (`fail` crate syntax, e.g. `FAILPOINTS=after-log-before-ack=2*off->return`):
/// then the process aborts there, as abruptly as a SIGKILL (no destructor runs, no buffer is flushed).
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        fail::fail_point!($name, |_| {
            tracing::error!(failpoint = $name, "failpoint reached: aborting");
            std::process::abort()
        })
    };
}
pub mod bench;
pub mod chaos;
pub mod control;
pub mod heartbeat;
pub mod monitor;
