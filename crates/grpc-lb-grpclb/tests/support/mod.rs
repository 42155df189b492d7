//! A grpclb balancer and Greeter backends, served by tonic on loopback, that
//! a test can kill and restart on the same port; and the client stack.
// Each test file uses its own subset.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use grpc_lb::AddressConnector;
use grpc_lb_backoff::BackoffConfig;
use grpc_lb_balance::service::{Balance, ByConnectivity, HttpCalls};
use grpc_lb_balance::tree::{PickFirst, RoundRobin};
use grpc_lb_connect::Http2Connector;
use grpc_lb_grpclb::proto::load_balance_request::LoadBalanceRequestType;
use grpc_lb_grpclb::proto::load_balance_response::LoadBalanceResponseType;
use grpc_lb_grpclb::proto::load_balancer_server::{LoadBalancer, LoadBalancerServer};
use grpc_lb_grpclb::{
    proto, ChildPolicy, Grpclb, GrpclbConfig, GrpclbDiscover, GrpclbDrop, Mode, ModeStatus,
};
use grpc_lb_helloworld::proto::{Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest};
use grpc_lb_reconnect::{Reconnect, ReconnectConfig};
use grpc_lb_resolve::{Address, Endpoint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tonic::service::Routes;
use tonic::{Request, Response, Status, Streaming};

/// A guard against hangs: no wait in these tests should come near it.
pub(crate) const LIMIT: Duration = Duration::from_secs(20);

pub(crate) fn fast_backoff() -> BackoffConfig {
    BackoffConfig::try_new(
        Duration::from_millis(50),
        1.6,
        0.2,
        Duration::from_millis(500),
        Duration::from_secs(2),
    )
    .unwrap()
}

// ===== servers that die for real =====

/// Serves `routes` over HTTP/2 on a loopback port. `kill` closes the
/// listener and every connection at once (the client sees the sockets close,
/// as when a process dies); `restart` listens on the same port again.
pub(crate) struct KillableServer {
    routes: Routes,
    addr: SocketAddr,
    tasks: Option<JoinSet<()>>,
}

impl KillableServer {
    pub(crate) async fn start(routes: Routes) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server = KillableServer {
            routes,
            addr,
            tasks: None,
        };
        server.serve(listener);
        server
    }

    /// A port with nothing listening (bound, then closed), for a server that
    /// starts later with `restart`.
    pub(crate) async fn not_started(routes: Routes) -> Self {
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        KillableServer {
            routes,
            addr,
            tasks: None,
        }
    }

    fn serve(&mut self, listener: TcpListener) {
        let routes = self.routes.clone();
        let mut tasks = JoinSet::new();
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let held = connections.clone();
        tasks.spawn(async move {
            // The connections live in a set owned by this task: aborting it
            // drops them all.
            let _held = held;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = TowerToHyperService::new(routes.clone());
                let connection = async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                };
                connections.lock().unwrap().spawn(connection);
            }
        });
        self.tasks = Some(tasks);
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and every connection, and waits until they are.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
    }

    pub(crate) async fn restart(&mut self) {
        self.kill().await;
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

impl Drop for KillableServer {
    fn drop(&mut self) {
        if let Some(tasks) = &mut self.tasks {
            tasks.abort_all();
        }
    }
}

// ===== the backends =====

/// Answers "NAME TOKEN": its name, and the `lb-token` the call carried ("-"
/// for none).
#[derive(Clone)]
pub(crate) struct TokenGreeter(pub(crate) String);

#[tonic::async_trait]
impl Greeter for TokenGreeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let token = request
            .metadata()
            .get("lb-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        Ok(Response::new(HelloReply {
            message: format!("{} {token}", self.0),
        }))
    }
}

pub(crate) async fn backend(name: &str) -> KillableServer {
    KillableServer::start(Routes::new(GreeterServer::new(TokenGreeter(name.into())))).await
}

// ===== the balancer =====

/// What the test balancer sends and what it received.
#[derive(Default)]
pub(crate) struct Script {
    /// The current server list, sent to every stream when it changes.
    pub(crate) servers: Vec<proto::Server>,
    /// How many fallback responses to have sent.
    pub(crate) fallbacks: u64,
    /// The report interval it asks for.
    pub(crate) interval: Option<Duration>,
}

/// What the balancer received.
#[derive(Clone, Debug, Default)]
pub(crate) struct Received {
    /// The names of the initial requests, one per stream.
    pub(crate) names: Vec<String>,
    /// Every ClientStats received.
    pub(crate) reports: Vec<proto::ClientStats>,
}

impl Received {
    pub(crate) fn started(&self) -> i64 {
        self.reports.iter().map(|r| r.num_calls_started).sum()
    }
    pub(crate) fn finished(&self) -> i64 {
        self.reports.iter().map(|r| r.num_calls_finished).sum()
    }
    pub(crate) fn known_received(&self) -> i64 {
        self.reports
            .iter()
            .map(|r| r.num_calls_finished_known_received)
            .sum()
    }
    pub(crate) fn failed_to_send(&self) -> i64 {
        self.reports
            .iter()
            .map(|r| r.num_calls_finished_with_client_failed_to_send)
            .sum()
    }
    pub(crate) fn dropped(&self, token: &str) -> i64 {
        self.reports
            .iter()
            .flat_map(|r| &r.calls_finished_with_drop)
            .filter(|d| d.load_balance_token == token)
            .map(|d| d.num_calls)
            .sum()
    }
}

#[derive(Clone)]
pub(crate) struct TestBalancer {
    script: Arc<watch::Sender<Script>>,
    received: Arc<watch::Sender<Received>>,
}

impl TestBalancer {
    pub(crate) fn new(interval: Option<Duration>) -> Self {
        TestBalancer {
            script: Arc::new(
                watch::channel(Script {
                    interval,
                    ..Script::default()
                })
                .0,
            ),
            received: Arc::new(watch::channel(Received::default()).0),
        }
    }

    pub(crate) fn set_servers(&self, servers: Vec<proto::Server>) {
        self.script.send_modify(|s| s.servers = servers);
    }

    pub(crate) fn send_fallback(&self) {
        self.script.send_modify(|s| s.fallbacks += 1);
    }

    pub(crate) fn received(&self) -> watch::Receiver<Received> {
        self.received.subscribe()
    }

    pub(crate) fn routes(&self) -> Routes {
        Routes::new(LoadBalancerServer::new(self.clone()))
    }

    /// Waits until what it received satisfies `done`.
    pub(crate) async fn wait_received(&self, done: impl FnMut(&Received) -> bool) -> Received {
        let mut received = self.received();
        let seen = timeout(LIMIT, received.wait_for(done))
            .await
            .expect("the balancer receives it in time")
            .unwrap()
            .clone();
        seen
    }
}

type Responses = Pin<Box<dyn Stream<Item = Result<proto::LoadBalanceResponse, Status>> + Send>>;

fn response(kind: LoadBalanceResponseType) -> Result<proto::LoadBalanceResponse, Status> {
    Ok(proto::LoadBalanceResponse {
        load_balance_response_type: Some(kind),
    })
}

#[tonic::async_trait]
impl LoadBalancer for TestBalancer {
    type BalanceLoadStream = Responses;

    async fn balance_load(
        &self,
        request: Request<Streaming<proto::LoadBalanceRequest>>,
    ) -> Result<Response<Responses>, Status> {
        let mut requests = request.into_inner();
        let first = requests.message().await?;
        let Some(proto::LoadBalanceRequest {
            load_balance_request_type: Some(LoadBalanceRequestType::InitialRequest(initial)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first request is not an initial request",
            ));
        };
        self.received.send_modify(|r| r.names.push(initial.name));
        // Record the client's reports for as long as the stream lasts.
        let received = self.received.clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                if let Some(LoadBalanceRequestType::ClientStats(stats)) =
                    request.load_balance_request_type
                {
                    received.send_modify(|r| r.reports.push(stats));
                }
            }
        });
        let mut script = self.script.subscribe();
        let interval = script.borrow().interval.map(|d| proto::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        });
        let initial = response(LoadBalanceResponseType::InitialResponse(
            proto::InitialLoadBalanceResponse {
                client_stats_report_interval: interval,
            },
        ));
        let mut fallbacks_sent = script.borrow().fallbacks;
        let updates = async_stream(move |sender| async move {
            let mut last: Option<Vec<proto::Server>> = None;
            loop {
                let (servers, fallbacks) = {
                    let now = script.borrow_and_update();
                    (now.servers.clone(), now.fallbacks)
                };
                if fallbacks != fallbacks_sent {
                    fallbacks_sent = fallbacks;
                    // The list in force is not sent again: only a new one
                    // ends the fallback.
                    last = Some(servers.clone());
                    if sender
                        .send(response(LoadBalanceResponseType::FallbackResponse(
                            proto::FallbackResponse {},
                        )))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if !servers.is_empty() && last.as_ref() != Some(&servers) {
                    last = Some(servers.clone());
                    let list = LoadBalanceResponseType::ServerList(proto::ServerList { servers });
                    if sender.send(response(list)).await.is_err() {
                        return;
                    }
                }
                if script.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            futures::stream::iter([initial]).chain(updates),
        )))
    }
}

/// A stream fed by a task through a channel.
fn async_stream<F, Fut>(
    body: F,
) -> impl Stream<Item = Result<proto::LoadBalanceResponse, Status>> + Send
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<proto::LoadBalanceResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    tokio::spawn(body(sender));
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

pub(crate) fn server(addr: SocketAddr, token: &str) -> proto::Server {
    let ip = match addr.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    proto::Server {
        ip_address: ip,
        port: addr.port().into(),
        load_balance_token: token.into(),
        drop: false,
    }
}

pub(crate) fn drop_entry(token: &str) -> proto::Server {
    proto::Server {
        load_balance_token: token.into(),
        drop: true,
        ..proto::Server::default()
    }
}

// ===== the client =====

pub(crate) type Body = tonic::body::Body;
pub(crate) type Connector = Http2Connector<Body, AddressConnector>;
pub(crate) type Backend = Reconnect<Connector, Address>;
pub(crate) type Stack =
    GrpclbDrop<Balance<GrpclbDiscover<Backend>, http::Request<Body>, ByConnectivity, HttpCalls>>;

/// The grpclb stack: a pick_first `grpc_lb::Channel` to the balancer, the
/// backends under the config's child policy, drops on top.
pub(crate) fn client(
    balancer: SocketAddr,
    fallback: &[SocketAddr],
    config: GrpclbConfig,
) -> (Grpclb, Stack) {
    let balancer_channel = grpc_lb::Channel::builder(format!("ipv4:{balancer}"))
        .policy("pick_first")
        .backoff(fast_backoff())
        .wait_for_ready(true)
        .build()
        .unwrap();
    let fallback = grpc_lb_resolve::static_list(fallback.iter().copied().map(Endpoint::from));
    let grpclb = Grpclb::new(config, "greeter.test", fallback, balancer_channel);
    let stack = stack_over(&grpclb);
    (grpclb, stack)
}

/// The backends' half of the stack, over any `Grpclb`.
pub(crate) fn stack_over(grpclb: &Grpclb) -> Stack {
    let connector = Http2Connector::new().with_transport(AddressConnector::new());
    let reconnect = ReconnectConfig::default().backoff(fast_backoff());
    let discover = grpclb.discover(move |address| {
        Reconnect::with_config(connector.clone(), address.clone(), reconnect.clone())
    });
    let balance = match grpclb.config().child_policy() {
        ChildPolicy::RoundRobin => Balance::new(discover, RoundRobin::new()),
        ChildPolicy::PickFirst => Balance::new(discover, PickFirst::new()),
    }
    .subchannels()
    .http();
    grpclb.watch_backends(balance.connectivity());
    tower::Layer::layer(&grpclb.drop_layer(), balance)
}

/// One call: the reply's "NAME TOKEN", or the status.
pub(crate) async fn say_hello(stack: &mut Stack) -> Result<String, Status> {
    let mut client = GreeterClient::new(stack);
    let request = HelloRequest {
        name: "test".into(),
    };
    match timeout(LIMIT, client.say_hello(request)).await {
        Ok(reply) => reply.map(|r| r.into_inner().message),
        Err(_) => Err(Status::deadline_exceeded(
            "the call did not finish within the test's limit",
        )),
    }
}

/// Calls until a reply satisfies `done`; the reply.
pub(crate) async fn call_until(stack: &mut Stack, mut done: impl FnMut(&str) -> bool) -> String {
    let reached = async {
        loop {
            if let Ok(reply) = say_hello(stack).await {
                if done(&reply) {
                    return reply;
                }
            }
        }
    };
    timeout(LIMIT, reached)
        .await
        .expect("a call reaches the backend in time")
}

/// Waits until the mode satisfies `done`.
pub(crate) async fn wait_mode(
    grpclb: &Grpclb,
    done: impl FnMut(&ModeStatus) -> bool,
) -> ModeStatus {
    let mut mode = grpclb.mode();
    let seen = *timeout(LIMIT, mode.wait_for(done))
        .await
        .expect("the mode is reached")
        .unwrap();
    seen
}

pub(crate) fn in_mode(mode: Mode) -> impl FnMut(&ModeStatus) -> bool {
    move |now| now.mode == mode
}

/// Counts `n` calls' replies by backend name (the part before the token),
/// and the calls that failed, by status message.
pub(crate) async fn spread(
    stack: &mut Stack,
    n: usize,
) -> (
    std::collections::BTreeMap<String, usize>,
    std::collections::BTreeMap<String, usize>,
) {
    let mut replies = std::collections::BTreeMap::new();
    let mut failures = std::collections::BTreeMap::new();
    for _ in 0..n {
        match say_hello(stack).await {
            Ok(reply) => *replies.entry(reply).or_insert(0) += 1,
            Err(status) => {
                *failures
                    .entry(format!("{:?}: {}", status.code(), status.message()))
                    .or_insert(0) += 1
            }
        }
    }
    (replies, failures)
}
