//! Operations: who owns the nodes and keeps them running. Layered without cycles: [`orchestrator`] is the one trait
//! for whoever owns the nodes (a leaf); [`chaos`] and [`monitor`] (with its [`control`] queue) work over it;
//! [`docker`] and [`cluster`] implement it (the local cluster also supervises its processes and runs the chaos loop
//! beside that); [`compose`] writes the compose file from the cluster's node commands, and [`stack`] the swarm's stack from it; [`orchestration`] picks an
//! orchestrator from the command line.

pub mod chaos;
pub mod cluster;
pub mod compose;
pub mod control;
pub mod docker;
pub mod monitor;
pub mod orchestration;
pub mod orchestrator;
pub mod stack;
