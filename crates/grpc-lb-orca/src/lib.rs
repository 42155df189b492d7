//! ORCA backend load reports ([gRFC A51]) for grpc-lb and tonic: backends
//! tell clients how loaded they are, so that a policy such as
//! weighted_round_robin ([gRFC A58]) can send them traffic in proportion.
//!
//! A report is an `xds.data.orca.v3.OrcaLoadReport`, here [`OrcaLoadReport`].
//! It travels two ways:
//!
//! - **Per call**, in the `endpoint-load-metrics-bin` trailer ([`TRAILER`]).
//!   The client side is one function, [`OrcaLoadReport::from_trailers`],
//!   which a pick's done callback calls with the call's trailers. The server
//!   side is [`OrcaCallMetricsLayer`]: each handler finds a
//!   [`CallMetricsRecorder`] in its request's extensions, and what it records
//!   is sent in the call's trailers.
//! - **Out of band**, on the `xds.service.orca.v3.OpenRcaService/StreamCoreMetrics`
//!   stream. The client side is [`OobLoadReports`]: one stream per connection,
//!   at the smallest interval its subscribers asked for, retried with
//!   backoff, stopped for good on `UNIMPLEMENTED`, cancelled when dropped.
//!   The server side is [`OrcaService`], which streams a
//!   [`ServerMetricsRecorder`] no more often than every 30 s by default.
//!
//! The protobuf types are generated from `proto/` and checked in ([`proto`]),
//! so building needs no `protoc`. To regenerate them after editing a proto:
//!
//! ```text
//! cargo run -p grpc-lb-orca --features codegen --bin regenerate
//! ```
//!
//! # Examples
//!
//! A tonic server that reports per call and out of band, and a client that
//! reads both, over a real loopback connection:
//!
//! ```
//! use std::time::Duration;
//! use grpc_lb_helloworld::proto::{Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest};
//! use grpc_lb_orca::{
//!     CallMetricsRecorder, OobLoadReports, OrcaCallMetricsLayer, OrcaLoadReport, OrcaService,
//!     ServerMetricsRecorder,
//! };
//! use tower::ServiceExt;
//!
//! struct Busy;
//!
//! #[tonic::async_trait]
//! impl Greeter for Busy {
//!     async fn say_hello(
//!         &self,
//!         request: tonic::Request<HelloRequest>,
//!     ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
//!         // The layer put a fresh recorder in the request.
//!         if let Some(recorder) = CallMetricsRecorder::from_request(&request) {
//!             recorder.set_request_cost("db_reads", 3.0);
//!         }
//!         Ok(tonic::Response::new(HelloReply { message: "hi".into() }))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // The server: its own load, sent with every call and on the OOB stream.
//! let load = ServerMetricsRecorder::new();
//! load.set_application_utilization(0.4)?;
//! load.set_qps(120.0)?;
//! let orca = OrcaService::new(load.clone()).min_reporting_interval(Duration::from_millis(10));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(
//!     tonic::transport::Server::builder()
//!         .layer(OrcaCallMetricsLayer::with_server_metrics(load.clone()))
//!         .add_service(GreeterServer::new(Busy))
//!         .add_service(orca.into_server())
//!         .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
//! );
//!
//! // The client's connection to that backend (one subchannel's).
//! let connection = grpc_lb_connect::Http2Connector::<tonic::body::Body>::new().oneshot(addr).await?;
//!
//! // Per call: what a done callback does with the trailers.
//! let response = GreeterClient::new(connection.clone())
//!     .say_hello(HelloRequest { name: "world".into() })
//!     .await?;
//! let trailers = response.metadata().clone().into_headers();
//! let report = OrcaLoadReport::from_trailers(&trailers)?.expect("the backend reports");
//! assert_eq!(report.application_utilization, 0.4);
//! assert_eq!(report.request_cost["db_reads"], 3.0);
//!
//! // Out of band: subscribe at an interval, read reports as they come.
//! let oob = OobLoadReports::new(connection);
//! let mut subscription = oob.subscribe(Duration::from_millis(10));
//! let report = subscription.changed().await.expect("a report");
//! assert_eq!(report.rps_fractional, 120.0);
//! # Ok(())
//! # }
//! ```
//!
//! # With a load-balancing policy
//!
//! A policy that wants per-call reports gives its picks a done callback
//! that receives the call's final status and trailers, and calls
//! [`OrcaLoadReport::from_trailers`] there; `Ok(None)` means the backend sent
//! no report, an error means it sent a malformed one (ignore it, as grpc-go
//! does). Decode once per call and share the result between interested
//! policies (gRFC A51). A policy that wants out-of-band reports asks the
//! subchannel's [`OobLoadReports`] for an [`OobSubscription`]; the subchannel
//! owns the `OobLoadReports` and drops it when it shuts down or its
//! connection is replaced (for example after a GOAWAY).
//!
//! See `docs/orca.md` for defaults, their sources and what is not done.
//!
//! [gRFC A51]: https://github.com/grpc/proposal/blob/master/A51-custom-backend-metrics.md
//! [gRFC A58]: https://github.com/grpc/proposal/blob/master/A58-client-side-weighted-round-robin-lb-policy.md

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

/// The error type of the connections [`OobLoadReports`] runs on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(test)]
mod send_sync {
    //! The handles are shared across tasks: a policy's worker, the
    //! subchannel, a server's handlers.
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<crate::OobLoadReports>();
        assert_send_sync::<crate::OobSubscription>();
        assert_send_sync::<crate::OrcaLoadReport>();
        assert_send_sync::<crate::OrcaError>();
        assert_send_sync::<crate::CallMetricsRecorder>();
        assert_send_sync::<crate::ServerMetricsRecorder>();
        assert_send_sync::<crate::OrcaService>();
        assert_send_sync::<crate::OrcaCallMetricsLayer>();
    }
}
