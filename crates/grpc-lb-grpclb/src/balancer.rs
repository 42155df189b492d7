//! The balancer stream: `grpc.lb.v1.LoadBalancer/BalanceLoad`, kept open, its
//! server lists published, client stats sent at the interval asked.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use grpc_lb_backoff::{Backoff, BackoffConfig};
use grpc_lb_core::{BoxError, SharedError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::proto::load_balance_request::LoadBalanceRequestType;
use crate::proto::load_balance_response::LoadBalanceResponseType;
use crate::proto::load_balancer_client::LoadBalancerClient;
use crate::proto::{self, InitialLoadBalanceRequest, LoadBalanceRequest, Timestamp};
use crate::stats::{is_zero, ClientStatsRecorder};

/// One entry of a server list.
///
/// ```
/// use grpc_lb_grpclb::{proto, ServerEntry, ServerList};
///
/// let drop = proto::Server { load_balance_token: "lb".into(), drop: true, ..Default::default() };
/// let list = ServerList::from_proto(&proto::ServerList { servers: vec![drop] });
/// assert_eq!(list.entries(), [ServerEntry::Drop { token: "lb".into() }]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEntry {
    /// A backend, and the token its calls carry as `lb-token` metadata.
    Backend {
        /// Where it listens.
        address: SocketAddr,
        /// Its load-balance token.
        token: String,
    },
    /// A drop entry: the calls that land on it fail with UNAVAILABLE and
    /// are counted against `token`.
    Drop {
        /// Its load-balance token.
        token: String,
    },
}

/// A server list as the balancer sent it, in order, backends and drops.
///
/// An entry whose address is neither 4 nor 16 bytes, or whose port is not a
/// port, is left out (with a warning): there is nothing to connect to.
///
/// ```
/// use grpc_lb_grpclb::{proto, ServerEntry, ServerList};
///
/// let list = ServerList::from_proto(&proto::ServerList {
///     servers: vec![
///         proto::Server { ip_address: vec![127, 0, 0, 1], port: 50051, load_balance_token: "a".into(), drop: false },
///         proto::Server { ip_address: vec![], port: 0, load_balance_token: "lb".into(), drop: true },
///         proto::Server { ip_address: vec![1, 2, 3], port: 1, load_balance_token: "bad".into(), drop: false },
///     ],
/// });
/// assert_eq!(list.entries().len(), 2);
/// assert_eq!(list.backends().next().unwrap().0.to_string(), "127.0.0.1:50051");
/// assert!(matches!(&list.entries()[1], ServerEntry::Drop { token } if token == "lb"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerList {
    entries: Arc<[ServerEntry]>,
}

impl ServerList {
    /// The list a `ServerList` message describes.
    pub fn from_proto(list: &proto::ServerList) -> Self {
        let entries = list
            .servers
            .iter()
            .filter_map(|server| {
                let token = server.load_balance_token.clone();
                if server.drop {
                    return Some(ServerEntry::Drop { token });
                }
                let ip = match server.ip_address.len() {
                    4 => {
                        let octets: [u8; 4] = server.ip_address[..].try_into().ok()?;
                        IpAddr::V4(Ipv4Addr::from(octets))
                    }
                    16 => {
                        let octets: [u8; 16] = server.ip_address[..].try_into().ok()?;
                        IpAddr::V6(Ipv6Addr::from(octets))
                    }
                    len => {
                        tracing::warn!(len, "grpclb: server entry with a bad address; skipped");
                        return None;
                    }
                };
                let Ok(port) = u16::try_from(server.port) else {
                    tracing::warn!(
                        port = server.port,
                        "grpclb: server entry with a bad port; skipped"
                    );
                    return None;
                };
                Some(ServerEntry::Backend {
                    address: SocketAddr::new(ip, port),
                    token,
                })
            })
            .collect();
        ServerList { entries }
    }

    /// The entries, in the balancer's order.
    pub fn entries(&self) -> &[ServerEntry] {
        &self.entries
    }

    /// The backends, in order, with their tokens.
    pub fn backends(&self) -> impl Iterator<Item = (SocketAddr, &str)> + '_ {
        self.entries.iter().filter_map(|entry| match entry {
            ServerEntry::Backend { address, token } => Some((*address, token.as_str())),
            ServerEntry::Drop { .. } => None,
        })
    }

    /// Whether any entry is a drop entry.
    pub fn has_drops(&self) -> bool {
        self.entries
            .iter()
            .any(|entry| matches!(entry, ServerEntry::Drop { .. }))
    }
}

/// What the balancer stream has said so far.
///
/// ```
/// use grpc_lb_grpclb::BalancerStatus;
///
/// let status = BalancerStatus::default(); // before any stream
/// assert!(!status.connected && status.server_list.is_none() && status.handshakes == 0);
/// ```
#[derive(Clone, Debug, Default)]
pub struct BalancerStatus {
    /// A stream is open (its response headers came back).
    pub connected: bool,
    /// The last server list received; kept when the stream is lost.
    pub server_list: Option<ServerList>,
    /// How many server lists that differed from the one before arrived.
    pub server_lists: u64,
    /// How many `FallbackResponse`s arrived.
    pub fallback_responses: u64,
    /// The report interval of the current stream, when positive.
    pub report_interval: Option<Duration>,
    /// How many streams completed the handshake (the initial response).
    pub handshakes: u64,
    /// How many `ClientStats` were sent.
    pub reports_sent: u64,
    /// How many open streams were lost (a count, so that a watcher that
    /// looks only now and then sees every loss).
    pub streams_lost: u64,
    /// Why the last stream ended.
    pub last_error: Option<SharedError>,
}

/// The client side of the balancer stream, run as a task by
/// [`spawn`](Self::spawn).
///
/// Each stream opens with `InitialLoadBalanceRequest{name}` and must be
/// answered by an `InitialLoadBalanceResponse`; then server lists and
/// fallback responses are published on a watch, and `ClientStats` go out at
/// the interval the response asked for (none if it is not positive; a report
/// that counts nothing is not sent twice in a row). A stream that ends after
/// its handshake is opened again at once; one that fails before it waits for
/// the next delay of `backoff`, as grpc-go's `watchRemoteBalancer` does.
///
/// `balancer` is any gRPC service to the balancer: a
/// `grpc_lb::Channel` with pick_first over the balancer addresses (what
/// grpc-go dials), or a single connection.
///
/// ```
/// use grpc_lb_backoff::BackoffConfig;
/// use grpc_lb_grpclb::{BalancerClient, ClientStatsRecorder};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A "balancer" that refuses every stream: the client backs off and retries.
/// let refusing = tower::service_fn(|_: http::Request<tonic::body::Body>| async {
///     Ok::<_, std::convert::Infallible>(tonic::Status::unavailable("down").into_http::<tonic::body::Body>())
/// });
/// let client = BalancerClient::new(refusing, "greeter.example", ClientStatsRecorder::new(), BackoffConfig::default());
/// let (mut status, _guard) = client.spawn(); // dropping the guard stops it
/// let failed = status.wait_for(|s| s.last_error.is_some()).await.unwrap();
/// assert!(failed.last_error.as_ref().unwrap().to_string().contains("down"));
/// # }
/// ```
pub struct BalancerClient<T> {
    client: LoadBalancerClient<T>,
    name: String,
    stats: ClientStatsRecorder,
    backoff: BackoffConfig,
}

impl<T> BalancerClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Send + 'static,
    T::Future: Send,
    T::Error: Into<BoxError>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    /// A client that asks `balancer` for the backends of `name` and reports
    /// the calls counted by `stats`.
    pub fn new(
        balancer: T,
        name: impl Into<String>,
        stats: ClientStatsRecorder,
        backoff: BackoffConfig,
    ) -> Self {
        BalancerClient {
            client: LoadBalancerClient::new(balancer),
            name: name.into(),
            stats,
            backoff,
        }
    }

    /// Runs the stream in a task; the returned guard stops it when dropped.
    pub fn spawn(self) -> (watch::Receiver<BalancerStatus>, TaskGuard) {
        let (status, receiver) = watch::channel(BalancerStatus::default());
        let task = tokio::spawn(self.run(status));
        (receiver, TaskGuard(task))
    }

    /// Keeps a stream open for as long as `status` has receivers.
    pub async fn run(mut self, status: watch::Sender<BalancerStatus>) {
        let mut backoff = Backoff::new(self.backoff);
        while !status.is_closed() {
            let (handshook, error) = self.one_stream(&status).await;
            tracing::debug!(name = %self.name, handshook, "grpclb: balancer stream ended: {error}");
            status.send_modify(|now| {
                if now.connected {
                    now.streams_lost += 1;
                }
                now.connected = false;
                now.report_interval = None;
                now.last_error = Some(Arc::from(error));
            });
            if handshook {
                backoff.reset();
                continue;
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// One stream, until it fails: whether its handshake completed, and why
    /// it ended.
    async fn one_stream(&mut self, status: &watch::Sender<BalancerStatus>) -> (bool, BoxError) {
        let (requests, outgoing) = mpsc::channel::<LoadBalanceRequest>(4);
        let initial = LoadBalanceRequest {
            load_balance_request_type: Some(LoadBalanceRequestType::InitialRequest(
                InitialLoadBalanceRequest {
                    name: self.name.clone(),
                },
            )),
        };
        if requests.send(initial).await.is_err() {
            return (false, "the request stream closed".into());
        }
        let response = match self
            .client
            .balance_load(ReceiverStream::new(outgoing))
            .await
        {
            Ok(response) => response,
            Err(status) => return (false, Box::new(status)),
        };
        status.send_modify(|now| now.connected = true);
        let mut inbound = response.into_inner();
        let interval = match inbound.message().await {
            Ok(Some(proto::LoadBalanceResponse {
                load_balance_response_type: Some(LoadBalanceResponseType::InitialResponse(initial)),
            })) => initial
                .client_stats_report_interval
                .and_then(positive_duration),
            Ok(Some(_)) => {
                return (
                    false,
                    "the balancer's first message was not an initial response".into(),
                )
            }
            Ok(None) => {
                return (
                    false,
                    "the balancer ended the stream before its initial response".into(),
                )
            }
            Err(status) => return (false, Box::new(status)),
        };
        status.send_modify(|now| {
            now.handshakes += 1;
            now.report_interval = interval;
        });
        let mut reports = interval.map(|every| {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker
        });
        let mut last_zero = false;
        loop {
            let tick = async {
                match reports.as_mut() {
                    Some(ticker) => ticker.tick().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.handle(message, status),
                    Ok(None) => return (true, "the balancer ended the stream".into()),
                    Err(status) => return (true, Box::new(status)),
                },
                _ = tick => {
                    let mut stats = self.stats.take();
                    let zero = is_zero(&stats);
                    if zero && last_zero {
                        continue;
                    }
                    last_zero = zero;
                    stats.timestamp = Some(now());
                    let report = LoadBalanceRequest {
                        load_balance_request_type: Some(LoadBalanceRequestType::ClientStats(stats)),
                    };
                    if requests.send(report).await.is_err() {
                        return (true, "the request stream closed".into());
                    }
                    status.send_modify(|now| now.reports_sent += 1);
                }
            }
        }
    }

    fn handle(&self, message: proto::LoadBalanceResponse, status: &watch::Sender<BalancerStatus>) {
        match message.load_balance_response_type {
            Some(LoadBalanceResponseType::ServerList(list)) => {
                let list = ServerList::from_proto(&list);
                tracing::debug!(entries = list.entries().len(), "grpclb: server list");
                status.send_if_modified(|now| {
                    // The same list again changes nothing (grpc-go's
                    // serverListEqual), so the drop order goes on.
                    if now.server_list.as_ref() == Some(&list) {
                        return false;
                    }
                    now.server_list = Some(list);
                    now.server_lists += 1;
                    true
                });
            }
            Some(LoadBalanceResponseType::FallbackResponse(_)) => {
                tracing::debug!("grpclb: the balancer asks for fallback");
                status.send_modify(|now| {
                    now.fallback_responses += 1;
                    // A list after the fallback is a new one, even if equal.
                    now.server_list = None;
                });
            }
            Some(LoadBalanceResponseType::InitialResponse(_)) | None => {
                tracing::debug!("grpclb: unexpected message from the balancer; ignored");
            }
        }
    }
}

impl<T> fmt::Debug for BalancerClient<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancerClient")
            .field("name", &self.name)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// Stops a task when dropped (see [`BalancerClient::spawn`]'s example).
#[derive(Debug)]
pub struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TaskGuard {
    pub(crate) fn new(task: JoinHandle<()>) -> Self {
        TaskGuard(task)
    }
}

fn positive_duration(duration: proto::Duration) -> Option<Duration> {
    if duration.seconds < 0 || duration.nanos < 0 || (duration.seconds == 0 && duration.nanos == 0)
    {
        return None;
    }
    let nanos = u32::try_from(duration.nanos).ok()?;
    Some(Duration::new(
        u64::try_from(duration.seconds).ok()?,
        nanos.min(999_999_999),
    ))
}

fn now() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
#[path = "balancer_tests.rs"]
mod stream_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_count_only_when_positive() {
        let d = |seconds, nanos| proto::Duration { seconds, nanos };
        assert_eq!(positive_duration(d(0, 0)), None);
        assert_eq!(positive_duration(d(-1, 0)), None);
        assert_eq!(positive_duration(d(0, -5)), None);
        assert_eq!(positive_duration(d(1, 500)), Some(Duration::new(1, 500)));
    }

    #[test]
    fn ipv6_entries_are_read() {
        let list = ServerList::from_proto(&proto::ServerList {
            servers: vec![
                proto::Server {
                    ip_address: Ipv6Addr::LOCALHOST.octets().to_vec(),
                    port: 443,
                    load_balance_token: "t".into(),
                    drop: false,
                },
                proto::Server {
                    ip_address: vec![127, 0, 0, 1],
                    port: 70_000,
                    load_balance_token: "bad port".into(),
                    drop: false,
                },
            ],
        });
        let backends: Vec<String> = list.backends().map(|(a, _)| a.to_string()).collect();
        assert_eq!(backends, ["[::1]:443"]);
        assert!(!list.has_drops());
    }
}
