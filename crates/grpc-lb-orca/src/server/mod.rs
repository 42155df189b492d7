//! The server side: record load, send it per call and out of band.

mod call;
mod recorder;
mod service;

pub use call::{OrcaBody, OrcaCallMetrics, OrcaCallMetricsLayer, ResponseFuture};
pub use recorder::{CallMetricsRecorder, InvalidMetric, ServerMetricsRecorder};
pub use service::{OrcaService, ReportStream};
