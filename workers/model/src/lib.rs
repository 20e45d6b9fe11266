//! The model of Coffee Shop Analysis: the typed rows of the client's CSV files and how they are read
//! ([`model`], [`dataset`]), the keys the queries group and partition by ([`keys`]), who is who in the pipeline
//! ([`node`]), what flows between stages ([`message`]) in which envelope ([`wire`]), and the result rows and their
//! NDJSON lines ([`results`]). No I/O beyond reading CSV files; everything else builds on it.

pub mod dataset;
pub mod keys;
pub mod message;
pub mod model;
pub mod node;
pub mod results;
pub mod wire;
