//! Coffee Shop Analysis: a fault-tolerant distributed pipeline for four queries over a coffee-shop chain's CSV
//! files. This crate is the `coffee` binary's command line ([`cli`]) over the others: `coffee-model` (rows, keys,
//! messages), `coffee-engine` (topology, operators, runtime, gateway, client), `coffee-ops` (orchestrators,
//! monitors, chaos, compose) and `coffee-tools` (generator, reference, compare, bench). `docs/architecture.md`
//! draws them.

pub mod cli;
