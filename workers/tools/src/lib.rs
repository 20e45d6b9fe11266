//! The tools around the pipeline: [`gen`] writes deterministic synthetic datasets in the real layout,
//! [`reference`] is the plain single-process oracle of Q1-Q4 (it shares no query code with the pipeline),
//! [`compare`] compares two result files per query as multisets, and [`bench`] measures the pipeline beside the
//! reference.

pub mod bench;
pub mod compare;
pub mod gen;
pub mod reference;
pub mod sim;
