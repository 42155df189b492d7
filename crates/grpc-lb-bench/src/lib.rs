//! The benchmark and chaos suite of grpc-lb (issue 7), as a library so that the
//! harness binary (`src/main.rs`) and the criterion benches (`benches/`) share
//! the in-memory channel, the load generator and the report writers.
//!
//! How to run it and what it measures: `docs/benchmarks.md`.

pub mod chaos;
pub mod heap;
pub mod inmem;
pub mod load;
pub mod proc;
pub mod report;
pub mod scale;
pub mod server;
pub mod state_changes;
pub mod systems;
pub mod throughput;

/// Every error of the harness: a message for the operator, with its cause.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
