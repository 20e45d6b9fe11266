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
pub mod dataset;
pub mod gateway;
pub mod gen;
pub mod message;
pub mod model;
pub mod operators;
pub mod protocol;
pub mod reference;
pub mod results;
pub mod runtime;
pub mod topology;
