//! The engine: what runs a query end to end, given a broker.
//!
//! - [`topology`]: the stages, their replicas, the edges between them and how rows spread over them.
//! - [`operators`]: the query logic as pure functions over batches; [`runtime`] runs one over a stage replica's
//!   queue (dedup and EOFs with [`tracker`], durable state in [`state`], group commit, acks).
//! - [`gateway`] and [`client`]: the client's session over TCP ([`protocol`]), routed into the pipeline.
//! - Around them: [`amqp`] (connections, failover, publishing with confirms), [`heartbeat`] and [`metrics`] (what
//!   a node says about itself), [`lease`] (abandoned sessions purged), [`incarnation`] (one live process per node),
//!   [`ownership`] (one consumer and one state folder per replica, across hosts).

pub mod amqp;
pub mod client;
pub mod dead_letters;
pub mod gateway;
pub mod heartbeat;
pub mod incarnation;
pub mod lease;
pub mod metrics;
pub mod operators;
pub mod ownership;
pub mod planted;
pub mod protocol;
pub mod runtime;
pub mod state;
pub mod topology;
pub mod tracker;

/// A failpoint for the tests that kill a node at a chosen instruction. Compiled to nothing without the
/// `failpoints` feature (only the tests' build has it); with it, inert unless the `FAILPOINTS`
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
/// A failpoint that makes the enclosing function return an error (`FAILPOINTS=NAME=1*return`), as the broker's
/// failure at that point would; inert unless armed.
#[macro_export]
macro_rules! failpoint_error {
    ($name:literal) => {
        fail::fail_point!($name, |_| {
            tracing::error!(failpoint = $name, "failpoint reached: failing");
            Err($crate::amqp::BrokerError::Lost(concat!("failpoint ", $name).to_owned()).into())
        })
    };
}
/// A failpoint that pauses the enclosing async function for as many milliseconds as it is armed with
/// (`FAILPOINTS=NAME=return(3000)`), without blocking the runtime's thread (the `fail` crate's own `sleep`
/// would); inert unless armed.
#[macro_export]
macro_rules! failpoint_delay {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        {
            fn armed() -> Option<u64> {
                fail::fail_point!($name, |arg: Option<String>| arg.and_then(|ms| ms.parse().ok()));
                None
            }
            if let Some(ms) = armed() {
                tracing::warn!(failpoint = $name, ms, "failpoint reached: pausing");
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
        }
    };
}
