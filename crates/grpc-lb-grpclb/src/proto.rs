//! The `grpc.lb.v1` messages, client and server, generated from `proto/`
//! (see `src/bin/regenerate.rs`) and checked in, so that building this crate
//! needs no `protoc`.
//!
//! Most code needs none of this: [`Grpclb`](crate::Grpclb) runs the client
//! side of the protocol. These are here for code that speaks it itself, such
//! as a balancer written with tonic
//! ([`load_balancer_server::LoadBalancer`]).
//!
//! ```
//! use grpc_lb_grpclb::proto::{InitialLoadBalanceRequest, LoadBalanceRequest};
//! use grpc_lb_grpclb::proto::load_balance_request::LoadBalanceRequestType;
//! use prost::Message;
//!
//! let request = LoadBalanceRequest {
//!     load_balance_request_type: Some(LoadBalanceRequestType::InitialRequest(
//!         InitialLoadBalanceRequest { name: "greeter.example".into() },
//!     )),
//! };
//! let bytes = request.encode_to_vec();
//! assert_eq!(LoadBalanceRequest::decode(bytes.as_slice()).unwrap(), request);
//! ```

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
    pub mod grpc {
        pub mod lb {
            pub mod v1 {
                include!("generated/grpc.lb.v1.rs");
            }
        }
    }
}

pub use generated::google::protobuf::{Duration, Timestamp};
pub use generated::grpc::lb::v1::{
    load_balance_request, load_balance_response, load_balancer_client, load_balancer_server,
    ClientStats, ClientStatsPerToken, FallbackResponse, InitialLoadBalanceRequest,
    InitialLoadBalanceResponse, LoadBalanceRequest, LoadBalanceResponse, Server, ServerList,
};

/// The gRPC path of the balancer stream, `/grpc.lb.v1.LoadBalancer/BalanceLoad`.
pub const BALANCE_LOAD_PATH: &str = "/grpc.lb.v1.LoadBalancer/BalanceLoad";
