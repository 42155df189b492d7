//! ORCA placeholder docs
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod oob;
pub mod proto;
mod report;
pub mod server;

pub use oob::{LatestReport, OobLoadReports, OobStreamState, OobSubscription};
pub use report::{OrcaError, OrcaLoadReport, TRAILER};
pub use server::{
    CallMetricsRecorder, InvalidMetric, OrcaCallMetrics, OrcaCallMetricsLayer, OrcaService,
    ReportStream, ServerMetricsRecorder,
};

/// The error type of the services this crate wraps.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
