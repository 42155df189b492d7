//! ORCA placeholder docs
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod proto;
mod report;

pub use report::{OrcaError, OrcaLoadReport, TRAILER};
