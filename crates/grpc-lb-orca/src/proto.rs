//! The ORCA protobuf messages, client and server, generated from `proto/`
//! (see `src/bin/regenerate.rs`) and checked in.
//!
//! Most code needs none of this: [`OrcaLoadReport`](crate::OrcaLoadReport) is
//! the typed report, [`OobLoadReports`](crate::OobLoadReports) runs the client
//! stream and [`OrcaService`](crate::OrcaService) the server. These are here
//! for code that speaks the protocol itself.

#[allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    rustdoc::all
)]
mod generated {
    pub mod google {
        pub mod protobuf {
            include!("generated/google.protobuf.rs");
        }
    }
    pub mod xds {
        pub mod data {
            pub mod orca {
                pub mod v3 {
                    include!("generated/xds.data.orca.v3.rs");
                }
            }
        }
        pub mod service {
            pub mod orca {
                pub mod v3 {
                    include!("generated/xds.service.orca.v3.rs");
                }
            }
        }
    }
}

pub use generated::google::protobuf::Duration;
pub use generated::xds::data::orca::v3::OrcaLoadReport;
pub use generated::xds::service::orca::v3::{
    open_rca_service_client, open_rca_service_server, OrcaLoadReportRequest,
};

/// The gRPC path of the out-of-band stream,
/// `/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics`.
pub const STREAM_CORE_METRICS_PATH: &str = "/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics";
