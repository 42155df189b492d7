//! Service configs from the resolver: DNS TXT `grpc_config=` records (gRFC
//! A2) served by a real dnsmasq, and configs pushed through the manual
//! resolver, as `ResolverStatus::service_config` reports them and as the
//! `Channel` applies them to real calls. A bad config never replaces a good
//! one.

#[path = "../../crates/grpc-lb-resolve/tests/support/dnsmasq.rs"]
mod dnsmasq;
mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dnsmasq::Dnsmasq;
use futures::StreamExt;
use grpc_lb::resolve::dns::{DnsConfig, DnsResolver};
use grpc_lb::resolve::{
    Address, Endpoint, ManualResolver, Registry, ResolverDiscover, ResolverStatus,
    ServiceConfigStatus,
};
use grpc_lb_core::ResolveNow;
use grpc_lb_service_config::ServiceConfig;
use tokio::sync::watch;
use tokio::time::timeout;

/// A guard against hangs; each wait ends on a status change well before.
const LIMIT: Duration = Duration::from_secs(20);

const HOSTS: &str = "127.0.0.2 greeter.test\n";

/// dnsmasq's `txt-record` for greeter.test's service config with `text`,
/// in a config file of its own: on the command line dnsmasq splits the text
/// at every comma and keeps quotes, while in a file a quoted text (with its
/// quotes escaped) stays whole. Text over 255 bytes is served as several
/// strings, which the resolver joins.
struct TxtRecord {
    path: PathBuf,
    arg: String,
}

fn txt_record(text: &str) -> TxtRecord {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "grpc-lb-txt-{}-{}.conf",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', " ");
    std::fs::write(
        &path,
        format!("txt-record=_grpc_config.greeter.test,\"{escaped}\"\n"),
    )
    .expect("write the dnsmasq config file");
    let arg = format!("--conf-file={}", path.display());
    TxtRecord { path, arg }
}

impl Drop for TxtRecord {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

const ROUND_ROBIN: &str = r#"grpc_config=[
    {"clientLanguage": ["go"], "serviceConfig": {"loadBalancingPolicy": "pick_first"}},
    {"serviceConfig": {"loadBalancingConfig": [{"round_robin": {}}],
                       "methodConfig": [{"name": [{"service": "helloworld.Greeter"}], "timeout": "1.5s"}]}}
]"#;

/// Valid JSON, invalid config: a timeout that is no duration.
const BAD_TIMEOUT: &str =
    r#"grpc_config=[{"serviceConfig": {"methodConfig": [{"name": [{}], "timeout": "soon"}]}}]"#;

/// Not even a choice list.
const NOT_JSON: &str = "grpc_config=[{\"serviceConfig\": ";

const PICK_FIRST: &str =
    r#"grpc_config=[{"serviceConfig": {"loadBalancingConfig": [{"pick_first": {}}]}}]"#;

/// Only Go clients get a config.
const GO_ONLY: &str = r#"grpc_config=[{"clientLanguage": ["go"], "serviceConfig": {}}]"#;

/// A DNS update stream for greeter.test on `dns`, re-resolving often, fed
/// into a `ResolverDiscover` that a task drains; its status watch.
fn watch_dns(dns: &Dnsmasq) -> watch::Receiver<ResolverStatus> {
    let mut registry = Registry::with_defaults();
    registry.register(DnsResolver::new(
        DnsConfig::default()
            .min_resolution_interval(Duration::from_millis(50))
            .refresh_interval(Duration::from_millis(100)),
    ));
    let target = format!("dns://{}/greeter.test:50051", dns.authority());
    let updates = registry.resolve(&target, ResolveNow::new()).unwrap();
    let mut discover = ResolverDiscover::new(updates, |e: &Endpoint| e.address.clone());
    let status = discover.status();
    tokio::spawn(async move { while discover.next().await.is_some() {} });
    status
}

/// Waits until the resolver's service config satisfies `done`.
async fn wait_for_config(
    status: &mut watch::Receiver<ResolverStatus>,
    what: &str,
    done: impl Fn(&ServiceConfigStatus) -> bool,
) -> ServiceConfigStatus {
    let result = timeout(LIMIT, status.wait_for(|s| done(&s.service_config)))
        .await
        .map(|seen| seen.map(|s| s.service_config.clone()));
    match result {
        Ok(Ok(config)) => config,
        _ => panic!(
            "never {what}; service config status: {:?}",
            status.borrow().service_config
        ),
    }
}

fn policy(config: &ServiceConfig) -> Option<&str> {
    config.load_balancing_config().first().map(|p| p.name())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_txt_config_is_chosen_kept_over_bad_ones_and_cleared() {
    let record = txt_record(ROUND_ROBIN);
    let mut dns = Dnsmasq::start(HOSTS, &[&record.arg]);
    let mut status = watch_dns(&dns);

    // The rust client skips the Go choice and takes the next.
    let good = wait_for_config(&mut status, "configured", |c| c.config.is_some()).await;
    let config = good.config.unwrap();
    assert_eq!(policy(&config), Some("round_robin"));
    let method = config
        .method_config("/helloworld.Greeter/SayHello")
        .unwrap();
    assert_eq!(method.timeout(), Some(Duration::from_millis(1500)));
    assert!(good.error.is_none());
    // The config comes first, then the addresses.
    timeout(LIMIT, status.wait_for(|s| s.endpoints == 1))
        .await
        .expect("the addresses came too")
        .unwrap();

    // A record that parses but is no valid config: reported, the good one stays.
    let record = txt_record(BAD_TIMEOUT);
    dns.restart(&[&record.arg]);
    let bad = wait_for_config(&mut status, "reported the bad config", |c| {
        c.error.is_some()
    })
    .await;
    let message = bad.error.unwrap().to_string();
    assert!(
        message.contains("[0].serviceConfig") && message.contains("methodConfig[0].timeout"),
        "{message}"
    );
    assert!(
        Arc::ptr_eq(bad.config.as_ref().unwrap(), &config),
        "the good config stays"
    );

    // A good record clears the error.
    let record = txt_record(PICK_FIRST);
    dns.restart(&[&record.arg]);
    let next = wait_for_config(&mut status, "took the new config", |c| {
        c.error.is_none() && c.config.as_deref().and_then(policy) == Some("pick_first")
    })
    .await;
    assert!(next.config.is_some());

    // Not JSON at all: reported, pick_first stays.
    let record = txt_record(NOT_JSON);
    dns.restart(&[&record.arg]);
    let bad = wait_for_config(&mut status, "reported the malformed record", |c| {
        c.error.is_some()
    })
    .await;
    assert!(bad.error.unwrap().to_string().contains("not JSON"));
    assert_eq!(bad.config.as_deref().and_then(policy), Some("pick_first"));

    // No record: no config from the resolver.
    dns.restart(&[]);
    wait_for_config(&mut status, "cleared", |c| {
        c.config.is_none() && c.error.is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_txt_config_with_no_choice_for_rust_is_no_config() {
    let record = txt_record(PICK_FIRST);
    let mut dns = Dnsmasq::start(HOSTS, &[&record.arg]);
    let mut status = watch_dns(&dns);
    wait_for_config(&mut status, "configured", |c| c.config.is_some()).await;

    let record = txt_record(GO_ONLY);
    dns.restart(&[&record.arg]);
    let none = wait_for_config(&mut status, "cleared", |c| c.config.is_none()).await;
    assert!(none.error.is_none(), "no matching choice is not an error");
    // The TXT lookup was really made, at the gRFC A2 name. dnsmasq may log
    // the query after answering it: wait for the line.
    assert!(
        dns.wait_for_log(|log| log
            .iter()
            .any(|line| line.contains("query[TXT] _grpc_config.greeter.test"))),
        "{:#?}",
        dns.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_txt_lookup_can_be_turned_off() {
    let record = txt_record(PICK_FIRST);
    let dns = Dnsmasq::start(HOSTS, &[&record.arg]);
    let mut registry = Registry::with_defaults();
    registry.register(DnsResolver::new(DnsConfig::default().service_config(false)));
    let target = format!("dns://{}/greeter.test:50051", dns.authority());
    let updates = registry.resolve(&target, ResolveNow::new()).unwrap();
    let mut discover = ResolverDiscover::new(updates, |e: &Endpoint| e.address.clone());
    let status = discover.status();
    timeout(LIMIT, discover.next()).await.unwrap();
    assert_eq!(status.borrow().endpoints, 1);
    assert_eq!(status.borrow().service_config.updates, 0);
    assert!(
        !dns.log().iter().any(|line| line.contains("query[TXT]")),
        "{:#?}",
        dns.log()
    );
}

#[tokio::test]
async fn manual_resolver_pushes_configs_and_bad_ones_keep_the_good() {
    let (resolver, handle) = ManualResolver::new("test");
    let addr = Address::Socket("127.0.0.1:50051".parse().unwrap());
    handle.service_config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#);
    handle.reset([Endpoint::new(addr.clone())]);

    let mut discover = ResolverDiscover::new(resolver.stream(ResolveNow::new()), |e: &Endpoint| {
        e.address.clone()
    });
    let status = discover.status();
    discover.next().await;
    let now = status.borrow().service_config.clone();
    assert_eq!(now.config.as_deref().and_then(policy), Some("round_robin"));
    assert_eq!(now.updates, 1);

    handle.service_config(r#"{"loadBalancingConfig": [{"round_robin": []}]}"#);
    handle.remove([addr]);
    discover.next().await;
    let now = status.borrow().service_config.clone();
    assert_eq!(now.config.as_deref().and_then(policy), Some("round_robin"));
    let error = now.error.unwrap().to_string();
    assert!(
        error.contains("loadBalancingConfig[0].round_robin"),
        "{error}"
    );
    assert_eq!(now.updates, 2);
}

// ---------------------------------------------------------------------------
// The Channel applying the resolver's config.
// ---------------------------------------------------------------------------

use grpc_lb::core::SharedError;
use grpc_lb::{Channel, ChannelEvent, ConnectivityState};
use grpc_lb_helloworld::proto::GreeterServer;
use grpc_lb_helloworld::NamedGreeter;
use integration_tests::GreeterProcess;
use support::{
    backend, fast_backoff, hello, manual_channel, spread, wait_for_ready_count, wait_for_state,
    GrpcChannel,
};
use tokio::sync::broadcast;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

const GREETER: &str = "helloworld.Greeter";

/// Wait-for-ready and a short timeout for every Greeter method.
const WAIT_300MS: &str = r#"{"methodConfig": [{"name": [{"service": "helloworld.Greeter"}],
                                               "waitForReady": true, "timeout": "0.3s"}]}"#;

/// Waits for the channel to report a service config change that `done`
/// accepts, and returns the policy it reported.
async fn wait_for_config_event(
    events: &mut broadcast::Receiver<ChannelEvent>,
    what: &str,
    done: impl Fn(Option<&ServiceConfig>, Option<&SharedError>, &str) -> bool,
) -> String {
    let seen = timeout(LIMIT, async {
        loop {
            if let ChannelEvent::ServiceConfig {
                config,
                error,
                policy,
            } = events.recv().await.expect("the channel is alive")
            {
                if done(config.as_deref(), error.as_ref(), &policy) {
                    return policy;
                }
            }
        }
    })
    .await;
    seen.unwrap_or_else(|_| panic!("the channel never reported {what}"))
}

/// Waits for the channel to add a subchannel for `address`: every update the
/// resolver sent before it has been applied.
async fn wait_for_added(events: &mut broadcast::Receiver<ChannelEvent>, address: &Address) {
    let seen = timeout(LIMIT, async {
        loop {
            if let ChannelEvent::SubchannelAdded { address: a, .. } = events.recv().await.unwrap() {
                if a == *address {
                    return;
                }
            }
        }
    })
    .await;
    seen.unwrap_or_else(|_| panic!("{address} was never added"));
}

/// An address on loopback where nothing listens: connections are refused.
fn refusing_address() -> Address {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    Address::Socket(listener.local_addr().unwrap())
}

fn endpoint(address: &Address) -> Endpoint {
    Endpoint::new(address.clone())
}

/// A channel whose only endpoint refuses connections: TRANSIENT_FAILURE.
async fn failing_channel() -> (GrpcChannel, grpc_lb::resolve::ManualHandle) {
    let (channel, resolver) = manual_channel("pick_first", fast_backoff());
    resolver.reset([endpoint(&refusing_address())]);
    channel.connect();
    wait_for_state(&channel, ConnectivityState::TransientFailure).await;
    (channel, resolver)
}

/// A call that waited for a connection until the config's 0.3 s timeout.
async fn assert_waits_for_the_config_timeout(channel: &GrpcChannel) {
    let start = tokio::time::Instant::now();
    let status = hello(channel, false).await.unwrap_err();
    let waited = start.elapsed();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("while waiting for a connection"),
        "{status:?}"
    );
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_method_config_applies_to_calls_without_rebuilding_the_channel() {
    let (channel, resolver) = failing_channel().await;
    let mut events = channel.events();
    // No config: fail-fast, at once.
    let status = hello(&channel, false).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    // The resolver's config makes the same call wait for ready, until its
    // timeout.
    resolver.service_config(WAIT_300MS);
    wait_for_config_event(&mut events, "the method config", |c, _, _| c.is_some()).await;
    assert!(channel.service_config().is_some());
    assert_waits_for_the_config_timeout(&channel).await;
    // The request's own choice still wins over the config's default.
    let mut request =
        tonic::Request::new(grpc_lb_helloworld::proto::HelloRequest { name: "own".into() });
    request
        .extensions_mut()
        .insert(grpc_lb::WaitForReady(false));
    let status = support::say_hello(&channel, request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    // A config without method configs: fail-fast again.
    resolver.service_config("{}");
    wait_for_config_event(&mut events, "the empty config", |c, _, _| {
        c.is_some_and(|c| c.method_configs().is_empty())
    })
    .await;
    let status = hello(&channel, false).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_after_a_good_one_keeps_the_good_one() {
    let (channel, resolver) = failing_channel().await;
    let mut events = channel.events();
    resolver.service_config(WAIT_300MS);
    wait_for_config_event(&mut events, "the method config", |c, _, _| c.is_some()).await;
    let good = channel.service_config().unwrap();

    // Valid JSON, invalid config; then an address, whose subchannel tells
    // when the worker has read both.
    resolver.service_config(r#"{"methodConfig": [{"name": [{}], "timeout": "soon"}]}"#);
    let second = refusing_address();
    resolver.add([endpoint(&second)]);
    wait_for_added(&mut events, &second).await;
    assert!(Arc::ptr_eq(&channel.service_config().unwrap(), &good));
    assert_eq!(channel.state(), ConnectivityState::TransientFailure);
    assert_waits_for_the_config_timeout(&channel).await;

    // A config naming only policies this channel does not have is as bad.
    resolver.service_config(r#"{"loadBalancingConfig": [{"grpclb": {}}]}"#);
    let third = refusing_address();
    resolver.add([endpoint(&third)]);
    wait_for_added(&mut events, &third).await;
    assert!(Arc::ptr_eq(&channel.service_config().unwrap(), &good));
    assert_waits_for_the_config_timeout(&channel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_first_config_fails_the_channel_until_a_good_one_comes() {
    let server = GreeterProcess::start(support::SERVER, "127.0.0.1:0", "solo");
    let (channel, resolver) = manual_channel("pick_first", fast_backoff());
    let mut events = channel.events();
    resolver.service_config(r#"{"methodConfig": [{"name": [{}], "timeout": "soon"}]}"#);
    resolver.reset([Endpoint::new(server.addr())]);
    channel.connect();
    let error = wait_for_config_event(&mut events, "the failure", |_, e, _| e.is_some());
    drop(error.await);
    wait_for_state(&channel, ConnectivityState::TransientFailure).await;
    let last_error = channel.watch_state().borrow().last_error.clone().unwrap();
    let last_error = last_error.to_string();
    assert!(
        last_error.starts_with("error parsing service config: ")
            && last_error.contains("methodConfig[0].timeout"),
        "{last_error}"
    );
    assert!(channel.ready_addresses().is_empty());
    // Every call fails with it, wait-for-ready ones too (grpc-go's failing
    // picker).
    for wait_for_ready in [false, true] {
        let status = hello(&channel, wait_for_ready).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("methodConfig[0].timeout"),
            "{status:?}"
        );
    }

    // A good config: the channel recovers and serves.
    resolver.service_config("{}");
    wait_for_state(&channel, ConnectivityState::Ready).await;
    assert_eq!(backend(&hello(&channel, false).await.unwrap()), "solo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_first_config_with_a_default_uses_the_default() {
    let server = GreeterProcess::start(support::SERVER, "127.0.0.1:0", "solo");
    let (resolver, handle) = ManualResolver::new("test");
    let mut registry = Registry::with_defaults();
    registry.register(resolver);
    let default: ServiceConfig =
        r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#.parse().unwrap();
    let channel = Channel::builder("test:///greeter")
        .resolver_registry(registry)
        .service_config(default)
        .backoff(fast_backoff())
        .build()
        .unwrap();
    handle.service_config(r#"{"loadBalancingConfig": "round_robin"}"#);
    handle.reset([Endpoint::new(server.addr())]);
    assert_eq!(backend(&hello(&channel, false).await.unwrap()), "solo");
    let config = channel.service_config().expect("the default");
    assert_eq!(policy(&config), Some("round_robin"));
}

const HOSTS_3: &str = "127.0.0.2 greeter.test\n127.0.0.3 greeter.test\n127.0.0.4 greeter.test\n";

const JUST_ROUND_ROBIN: &str =
    r#"grpc_config=[{"serviceConfig": {"loadBalancingConfig": [{"round_robin": {}}]}}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_txt_config_switches_pick_first_to_round_robin() {
    // Three backends on one port, on three loopback addresses.
    let first = GreeterProcess::start(support::SERVER, "127.0.0.2:0", "two");
    let port = first.addr().port();
    let _second = GreeterProcess::start(support::SERVER, &format!("127.0.0.3:{port}"), "three");
    let _third = GreeterProcess::start(support::SERVER, &format!("127.0.0.4:{port}"), "four");
    let record = txt_record(PICK_FIRST);
    let mut dns = Dnsmasq::start(HOSTS_3, &[&record.arg]);

    let mut registry = Registry::with_defaults();
    registry.register(DnsResolver::new(
        DnsConfig::default()
            .min_resolution_interval(Duration::from_millis(50))
            .refresh_interval(Duration::from_millis(100)),
    ));
    let channel = Channel::builder(format!("dns://{}/greeter.test:{port}", dns.authority()))
        .resolver_registry(registry)
        .backoff(fast_backoff())
        .build()
        .unwrap();
    let mut events = channel.events();
    channel.connect();
    wait_for_state(&channel, ConnectivityState::Ready).await;
    let counts = spread(&channel, 30).await;
    assert_eq!(counts.len(), 1, "pick_first: one backend, {counts:?}");

    let record = txt_record(JUST_ROUND_ROBIN);
    dns.restart(&[&record.arg]);
    wait_for_config_event(&mut events, "round_robin", |_, _, policy| {
        policy == "round_robin"
    })
    .await;
    wait_for_ready_count(&channel, 3).await;
    let counts = spread(&channel, 30).await;
    for name in ["two", "three", "four"] {
        assert_eq!(counts.get(name), Some(&10), "{counts:?}");
    }

    // And back: pick_first keeps one of the connections it is handed.
    let record = txt_record(PICK_FIRST);
    dns.restart(&[&record.arg]);
    wait_for_config_event(&mut events, "pick_first", |_, _, policy| {
        policy == "pick_first"
    })
    .await;
    wait_for_ready_count(&channel, 1).await;
    let counts = spread(&channel, 30).await;
    assert_eq!(counts.len(), 1, "pick_first: one backend, {counts:?}");
    assert_eq!(channel.state(), ConnectivityState::Ready);
}

/// A Greeter named `name` on 127.0.0.1 with `grpc.health.v1` beside it,
/// [`GREETER`] SERVING until set otherwise; stops when dropped.
struct HealthBackend {
    address: Address,
    reporter: HealthReporter,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl HealthBackend {
    async fn start(name: &str) -> HealthBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = Address::Socket(listener.local_addr().unwrap());
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(GREETER, ServingStatus::Serving)
            .await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .add_service(GreeterServer::new(NamedGreeter::new(name)))
            .add_service(health);
        tokio::spawn(router.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        ));
        HealthBackend {
            address,
            reporter,
            _stop: stop,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_config_from_the_resolver_turns_health_checking_on_and_off() {
    let a = HealthBackend::start("a").await;
    let b = HealthBackend::start("b").await;
    let (channel, resolver) = manual_channel("round_robin", fast_backoff());
    let mut events = channel.events();
    resolver.reset([endpoint(&a.address), endpoint(&b.address)]);
    channel.connect();
    wait_for_ready_count(&channel, 2).await;

    // Not checked yet: b NOT_SERVING still gets calls.
    b.reporter
        .set_service_status(GREETER, ServingStatus::NotServing)
        .await;
    let counts = spread(&channel, 20).await;
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");

    resolver.service_config(
        r#"{"loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": "helloworld.Greeter"}}"#,
    );
    wait_for_config_event(&mut events, "health checking", |c, _, _| {
        c.is_some_and(|c| c.health_check().is_some())
    })
    .await;
    wait_for_ready_count(&channel, 1).await;
    assert_eq!(channel.ready_addresses(), std::slice::from_ref(&a.address));
    let counts = spread(&channel, 20).await;
    assert_eq!(counts.get("a"), Some(&20), "{counts:?}");

    // A config without it turns it off again.
    resolver.service_config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#);
    wait_for_config_event(&mut events, "no health checking", |c, _, _| {
        c.is_some_and(|c| c.health_check().is_none())
    })
    .await;
    wait_for_ready_count(&channel, 2).await;
    let counts = spread(&channel, 20).await;
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builders_health_check_wins_over_the_resolvers_config() {
    let a = HealthBackend::start("a").await;
    let b = HealthBackend::start("b").await;
    b.reporter
        .set_service_status(GREETER, ServingStatus::NotServing)
        .await;
    let (resolver, handle) = ManualResolver::new("test");
    let mut registry = Registry::with_defaults();
    registry.register(resolver);
    let channel = Channel::builder("test:///greeter")
        .resolver_registry(registry)
        .policy("round_robin")
        .health_check(GREETER)
        .backoff(fast_backoff())
        .build()
        .unwrap();
    let mut events = channel.events();
    // The resolver's config has no healthCheckConfig: checking stays on.
    handle.service_config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#);
    handle.reset([endpoint(&a.address), endpoint(&b.address)]);
    wait_for_config_event(&mut events, "the config", |c, _, _| c.is_some()).await;
    wait_for_ready_count(&channel, 1).await;
    assert_eq!(channel.ready_addresses(), std::slice::from_ref(&a.address));
}
