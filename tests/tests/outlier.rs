//! Outlier detection (gRFC A50) in the channel, against real tonic servers on
//! loopback, some of which fail a share of their calls.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grpc_lb::balance::outlier::{FailurePercentage, OutlierDetectionConfig};
use grpc_lb::resolve::Address;
use grpc_lb::Channel;
use grpc_lb_helloworld::proto::{Greeter, GreeterServer, HelloReply, HelloRequest};
use support::{hello, wait_for_ready_count, GrpcChannel, LIMIT};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tonic::{Request, Response, Status};

/// A Greeter that fails one call in `fail_one_in` (0: never, 1: every call)
/// with `INTERNAL`.
struct Flaky {
    name: String,
    fail_one_in: usize,
    calls: AtomicUsize,
}

#[tonic::async_trait]
impl Greeter for Flaky {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        if self.fail_one_in != 0 && call.is_multiple_of(self.fail_one_in) {
            return Err(Status::internal(format!("{} failed on purpose", self.name)));
        }
        let name = request.into_inner().name;
        Ok(Response::new(HelloReply {
            message: format!("Hello {name} from {}", self.name),
        }))
    }
}

struct Backend {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start(name: &str, fail_one_in: usize) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let greeter = Flaky {
        name: name.to_owned(),
        fail_one_in,
        calls: AtomicUsize::new(0),
    };
    let router = tonic::transport::Server::builder().add_service(GreeterServer::new(greeter));
    tokio::spawn(router.serve_with_incoming_shutdown(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        async {
            let _ = stopped.await;
        },
    ));
    Backend { addr, _stop: stop }
}

fn round_robin(backends: &[&Backend], config: OutlierDetectionConfig) -> GrpcChannel {
    let addrs: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    Channel::builder(format!("ipv4:{}", addrs.join(",")))
        .policy("round_robin")
        .backoff(support::fast_backoff())
        .outlier_detection(config)
        .build()
        .unwrap()
}

/// Failure percentage with small volumes, so that a test needs few calls.
fn config(base_ejection_time: Duration, max_ejection_percent: u32) -> OutlierDetectionConfig {
    OutlierDetectionConfig {
        interval: Duration::from_millis(50),
        base_ejection_time,
        max_ejection_percent,
        failure_percentage: Some(FailurePercentage {
            threshold: 30,
            minimum_hosts: 3,
            request_volume: 10,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Sends calls one after another until `done` says so; returns how many
/// succeeded per backend and how many failed.
async fn traffic_until(
    channel: &GrpcChannel,
    mut done: impl FnMut() -> bool,
) -> (HashMap<String, usize>, usize) {
    let mut served: HashMap<String, usize> = HashMap::new();
    let mut failed = 0;
    timeout(LIMIT, async {
        while !done() {
            match hello(channel, false).await {
                Ok(message) => *served.entry(support::backend(&message)).or_default() += 1,
                Err(_) => failed += 1,
            }
        }
    })
    .await
    .expect("the condition is met under traffic");
    (served, failed)
}

/// Sends calls until `c` (which fails half of them) leaves the picker, then
/// checks that the calls that follow all go elsewhere and all succeed.
async fn traffic_ejects_c(channel: &GrpcChannel, c_address: &Address) {
    let (served, failed) =
        traffic_until(channel, || !channel.ready_addresses().contains(c_address)).await;
    assert!(
        failed > 0 && served.contains_key("c"),
        "{served:?} {failed}"
    );
    let counts = support::spread(channel, 20).await;
    assert_eq!(counts.get("c"), None, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_failing_half_its_calls_is_ejected_then_returns() {
    let a = start("a", 0).await;
    let b = start("b", 0).await;
    let c = start("c", 2).await;
    // Long enough that the calls below all run while c is ejected.
    let channel = round_robin(&[&a, &b, &c], config(Duration::from_secs(5), 50));
    channel.connect();
    wait_for_ready_count(&channel, 3).await;
    let c_address = Address::from(c.addr);

    traffic_ejects_c(&channel, &c_address).await;
    assert_eq!(channel.ready_addresses().len(), 2);
    assert_eq!(channel.state(), grpc_lb::ConnectivityState::Ready);

    // Back after its ejection time, with no traffic needed.
    wait_for_ready_count(&channel, 3).await;
    let (served, _) = traffic_until(&channel, {
        let mut calls = 0;
        move || {
            calls += 1;
            calls > 6
        }
    })
    .await;
    assert!(served.contains_key("c"), "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ejection_percent_caps_how_many_are_ejected() {
    let a = start("a", 0).await;
    let b = start("b", 0).await;
    let c = start("c", 1).await;
    let d = start("d", 1).await;
    // 25 % of 4: one ejection at a time, although c and d both fail.
    let channel = round_robin(&[&a, &b, &c, &d], config(Duration::from_secs(1), 25));
    channel.connect();
    wait_for_ready_count(&channel, 4).await;
    let failing: HashSet<Address> = [Address::from(c.addr), Address::from(d.addr)].into();

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let channel = channel.clone();
        let stop = stop.clone();
        async move { traffic_until(&channel, || stop.load(Ordering::Relaxed)).await }
    });
    let mut picker = channel.watch_picker();
    let ready = |channel: &GrpcChannel| -> HashSet<Address> {
        channel.ready_addresses().into_iter().collect()
    };
    // The first ejection...
    let ejected = timeout(LIMIT, async {
        loop {
            let now = ready(&channel);
            if now.len() < 4 {
                break now;
            }
            picker.changed().await.unwrap();
        }
    })
    .await
    .expect("an ejection");
    assert_eq!(ejected.len(), 3, "one ejected: {ejected:?}");
    let first = failing
        .iter()
        .find(|a| !ejected.contains(*a))
        .expect("a failing one was ejected")
        .clone();
    // ...lasts until it returns, and the other failing backend, judged every
    // interval meanwhile, is never ejected beside it.
    let mut fewest = ejected.len();
    timeout(LIMIT, async {
        loop {
            let now = ready(&channel);
            fewest = fewest.min(now.len());
            if now.contains(&first) {
                break;
            }
            picker.changed().await.unwrap();
        }
    })
    .await
    .expect("the ejected backend returns");
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(fewest, 3, "never two ejected at once");
}

/// `outlier_detection_experimental` in a service config from the resolver:
/// its child policy balances, its settings eject, and a config without it
/// turns outlier detection off again (the ejected backend returns at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_from_the_resolvers_service_config() {
    let a = start("a", 0).await;
    let b = start("b", 0).await;
    let c = start("c", 2).await;
    let (channel, resolver) = support::manual_channel("pick_first", support::fast_backoff());
    let mut events = channel.events();
    resolver.service_config(
        r#"{"loadBalancingConfig": [{"outlier_detection_experimental": {
            "interval": "0.05s", "baseEjectionTime": "30s", "maxEjectionPercent": 50,
            "failurePercentageEjection": {"threshold": 30, "minimumHosts": 3, "requestVolume": 10},
            "childPolicy": [{"round_robin": {}}]}}]}"#,
    );
    resolver.reset([&a, &b, &c].map(|backend| grpc_lb::resolve::Endpoint::new(backend.addr)));
    let policy = wait_for_policy(&mut events).await;
    assert_eq!(policy, "round_robin", "the child policy balances");
    channel.connect();
    wait_for_ready_count(&channel, 3).await;
    let c_address = Address::from(c.addr);

    traffic_ejects_c(&channel, &c_address).await;

    // Without it: no more ejections, c is back long before its 30 s are over.
    resolver.service_config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#);
    wait_for_policy(&mut events).await;
    wait_for_ready_count(&channel, 3).await;
}

/// The policy of the next service config the channel applies.
async fn wait_for_policy(
    events: &mut tokio::sync::broadcast::Receiver<grpc_lb::ChannelEvent>,
) -> String {
    timeout(LIMIT, async {
        loop {
            if let grpc_lb::ChannelEvent::ServiceConfig { policy, .. } =
                events.recv().await.unwrap()
            {
                return policy;
            }
        }
    })
    .await
    .expect("a service config was applied")
}
