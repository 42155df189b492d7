//! The clients compared: a bare hyper HTTP/2 connection (the floor), tonic's
//! `Channel` to one endpoint and its `balance_list`, tower's p2c behind a
//! `Buffer`, and grpc-lb's `Channel` under each policy.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use grpc_lb_helloworld::proto::GreeterClient;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::body::Body;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
use tower_service::Service;

use crate::load::{drive, Length, Sample};
use crate::Error;

/// A grpc-lb policy under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Policy {
    /// `pick_first`
    PickFirst,
    /// `round_robin`
    RoundRobin,
    /// `p2c`
    P2c,
}

impl Policy {
    /// The name the builder takes.
    pub fn name(self) -> &'static str {
        match self {
            Policy::PickFirst => "pick_first",
            Policy::RoundRobin => "round_robin",
            Policy::P2c => "p2c",
        }
    }
}

/// One client under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum System {
    /// One bare hyper HTTP/2 connection to the first endpoint: the floor.
    Floor,
    /// A bare connection to every endpoint, used in turn with no balancer at
    /// all: what spreading over N connections costs by itself, so that a
    /// balancer's own cost can be told from that of more connections.
    FloorPerEndpoint,
    /// tonic's `Channel` to the first endpoint.
    TonicOne,
    /// tonic's `Channel::balance_list` over every endpoint.
    TonicBalanceList,
    /// tower's p2c (PeakEWMA) over bare connections, behind a `Buffer`.
    TowerP2cBuffer,
    /// grpc-lb's `Channel`.
    GrpcLb(Policy),
}

impl System {
    /// Every system, the floor first.
    pub const ALL: [System; 8] = [
        System::Floor,
        System::FloorPerEndpoint,
        System::TonicOne,
        System::TonicBalanceList,
        System::TowerP2cBuffer,
        System::GrpcLb(Policy::PickFirst),
        System::GrpcLb(Policy::RoundRobin),
        System::GrpcLb(Policy::P2c),
    ];

    /// The name in tables and plots.
    pub fn name(self) -> &'static str {
        match self {
            System::Floor => "hyper h2 (floor)",
            System::FloorPerEndpoint => "hyper h2 ×N in turn",
            System::TonicOne => "tonic Channel",
            System::TonicBalanceList => "tonic balance_list",
            System::TowerP2cBuffer => "tower p2c+Buffer",
            System::GrpcLb(Policy::PickFirst) => "grpc-lb pick_first",
            System::GrpcLb(Policy::RoundRobin) => "grpc-lb round_robin",
            System::GrpcLb(Policy::P2c) => "grpc-lb p2c",
        }
    }

    /// Builds this system's client for `endpoints` and drives it, each call
    /// with `deadline` when given.
    pub async fn run(
        self,
        endpoints: &[SocketAddr],
        inflight: usize,
        warmup: impl Into<Length>,
        measure: impl Into<Length>,
        deadline: Option<Duration>,
    ) -> Result<Sample, Error> {
        let (warmup, measure) = (warmup.into(), measure.into());
        let first = *endpoints.first().ok_or("no endpoints")?;
        Ok(match self {
            System::Floor => {
                let client = GreeterClient::with_origin(bare(first).await?, origin(first)?);
                drive(client, inflight, warmup, measure, deadline).await
            }
            System::FloorPerEndpoint => {
                let mut connections = Vec::new();
                for addr in endpoints {
                    connections.push(bare(*addr).await?);
                }
                let rotate = Rotate {
                    connections,
                    next: Arc::new(AtomicUsize::new(0)),
                    current: 0,
                };
                let client = GreeterClient::with_origin(rotate, origin(first)?);
                drive(client, inflight, warmup, measure, deadline).await
            }
            System::TonicOne => {
                let channel = tonic_endpoint(first)?.connect().await?;
                drive(
                    GreeterClient::new(channel),
                    inflight,
                    warmup,
                    measure,
                    deadline,
                )
                .await
            }
            System::TonicBalanceList => {
                let channel = tonic_balance_list(endpoints)?;
                drive(
                    GreeterClient::new(channel),
                    inflight,
                    warmup,
                    measure,
                    deadline,
                )
                .await
            }
            System::TowerP2cBuffer => {
                let mut connections = Vec::new();
                for addr in endpoints {
                    connections.push(bare(*addr).await?);
                }
                let discover = PeakEwmaDiscover::new(
                    ServiceList::new(connections),
                    Duration::from_millis(30),
                    Duration::from_secs(10),
                    CompleteOnResponse::default(),
                );
                let balance = tower::balance::p2c::Balance::new(discover);
                let buffer = tower::buffer::Buffer::new(balance, 1024);
                let client = GreeterClient::with_origin(buffer, origin(first)?);
                drive(client, inflight, warmup, measure, deadline).await
            }
            System::GrpcLb(policy) => {
                let channel = grpc_lb_channel(policy, endpoints)?;
                drive(
                    GreeterClient::new(channel),
                    inflight,
                    warmup,
                    measure,
                    deadline,
                )
                .await
            }
        })
    }
}

/// A grpc-lb channel over `endpoints` as an `ipv4:` target.
pub fn grpc_lb_channel(
    policy: Policy,
    endpoints: &[SocketAddr],
) -> Result<grpc_lb::Channel<grpc_lb::connect::Http2Connection<Body>>, Error> {
    Ok(grpc_lb::Channel::builder(ipv4_target(endpoints))
        .policy(policy.name())
        .build()?)
}

/// `ipv4:a:p,b:p,…`
pub fn ipv4_target(endpoints: &[SocketAddr]) -> String {
    let list: Vec<String> = endpoints.iter().map(|a| a.to_string()).collect();
    format!("ipv4:{}", list.join(","))
}

/// tonic's `balance_list` over `endpoints`.
pub fn tonic_balance_list(endpoints: &[SocketAddr]) -> Result<tonic::transport::Channel, Error> {
    let list = endpoints
        .iter()
        .map(|a| tonic_endpoint(*a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(tonic::transport::Channel::balance_list(list.into_iter()))
}

fn tonic_endpoint(addr: SocketAddr) -> Result<tonic::transport::Endpoint, Error> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true))
}

fn origin(addr: SocketAddr) -> Result<http::Uri, Error> {
    Ok(format!("http://{addr}").parse()?)
}

/// One hyper HTTP/2 client connection and nothing else: the floor.
#[derive(Clone, Debug)]
pub struct Bare(http2::SendRequest<Body>);

/// Opens a [`Bare`] connection to `addr` (TCP_NODELAY, hyper's defaults).
pub async fn bare(addr: SocketAddr) -> Result<Bare, Error> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, connection) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(connection);
    Ok(Bare(send))
}

type BareFuture = Pin<
    Box<dyn Future<Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>> + Send>,
>;

impl Service<http::Request<Body>> for Bare {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    // Boxed because hyper's future cannot be named; grpc-lb's connection
    // boxes the same future, so both pay the same allocation.
    type Future = BareFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

/// Bare connections used in turn: a shared counter picks the next one at
/// `poll_ready`, with no readiness tracking, discovery or load accounting.
#[derive(Clone, Debug)]
pub struct Rotate {
    connections: Vec<Bare>,
    next: Arc<AtomicUsize>,
    current: usize,
}

impl Service<http::Request<Body>> for Rotate {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = BareFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.current = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[self.current].poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        self.connections[self.current].call(request)
    }
}
