//! The `dns` resolver against a real DNS server: a `dnsmasq` child process on
//! loopback, one per test, serving a hosts file the test rewrites.
//!
//! These tests need `dnsmasq` (Debian: `apt-get install -y dnsmasq-base`); they
//! fail, rather than skip, when it is missing.
#![cfg(feature = "dns")]

#[path = "support/dnsmasq.rs"]
mod dnsmasq;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use grpc_lb_backoff::BackoffConfig;
use grpc_lb_core::{BoxError, ResolveNow};
use grpc_lb_resolve::dns::{DnsConfig, DnsResolver};
use grpc_lb_resolve::{Endpoint, Registry, Resolver, Target, Update, UpdateStream};

use dnsmasq::Dnsmasq;

/// The longest any single expected event may take.
const EVENT_DEADLINE: Duration = Duration::from_secs(5);

const TWO: &str = "127.0.0.2 greeter.test\n127.0.0.3 greeter.test\n";

fn start(hosts: &str) -> Dnsmasq {
    Dnsmasq::start(hosts, &[])
}

fn fast() -> DnsConfig {
    DnsConfig::default()
        .min_resolution_interval(Duration::from_millis(100))
        .resolve_timeout(Duration::from_secs(3))
        .error_backoff(BackoffConfig::try_from_secs_f64(0.1, 1.6, 0.2, 1.0, 20.0).unwrap())
}

fn resolve(config: DnsConfig, target: &str, resolve_now: &ResolveNow) -> UpdateStream {
    let target = Target::parse(target).unwrap();
    DnsResolver::new(config)
        .resolve(&target, resolve_now.clone())
        .unwrap()
}

fn endpoints(addrs: &[&str]) -> Vec<Endpoint> {
    addrs
        .iter()
        .map(|a| Endpoint::new(a.parse::<SocketAddr>().unwrap()))
        .collect()
}

/// The next item, which must come within [`EVENT_DEADLINE`].
async fn next(updates: &mut UpdateStream) -> Result<Update, BoxError> {
    tokio::time::timeout(EVENT_DEADLINE, updates.next())
        .await
        .expect("no update within the deadline")
        .expect("the stream ended")
}

/// The next item, a `Reset`, its endpoints sorted by address: the server
/// rotates its answers, and the resolver keeps their order.
async fn next_reset(updates: &mut UpdateStream) -> Vec<Endpoint> {
    match next(updates).await {
        Ok(Update::Reset(mut endpoints)) => {
            endpoints.sort_by(|a, b| a.address.cmp(&b.address));
            endpoints
        }
        other => panic!("expected a Reset, got {other:?}"),
    }
}

#[tokio::test]
async fn resolves_every_a_record_of_the_name() {
    let dns = start(TWO);
    let target = format!("dns://{}/greeter.test:50051", dns.authority());
    let mut updates = resolve(DnsConfig::default(), &target, &ResolveNow::new());
    assert_eq!(
        next_reset(&mut updates).await,
        endpoints(&["127.0.0.2:50051", "127.0.0.3:50051"])
    );
    // Nothing more until someone asks (and the 30 s interval has passed).
    assert!(updates.next().now_or_never().is_none());
}

// Issue 13, defect 4: the resolver sorted its addresses, so every pick_first
// client of a name connected to its lowest address. The answer's order is
// kept (grpc-go: only pick_first's shuffleAddressList reorders), checked
// against the order the same server answers a plain lookup in.
#[tokio::test]
async fn dns_results_keep_the_answers_order() {
    let hosts = "127.0.0.9 greeter.test\n127.0.0.2 greeter.test\n127.0.0.5 greeter.test\n";
    let dns = start(hosts);
    let target = format!("dns://{}/greeter.test:50051", dns.authority());
    // dnsmasq rotates its answers: fresh resolutions of the name see the
    // addresses in different orders, which a sorting resolver hid.
    let mut orders = Vec::new();
    for _ in 0..4 {
        let mut updates = resolve(DnsConfig::default(), &target, &ResolveNow::new());
        let order: Vec<String> = match next(&mut updates).await {
            Ok(Update::Reset(endpoints)) => {
                endpoints.iter().map(|e| e.address.to_string()).collect()
            }
            other => panic!("expected a Reset, got {other:?}"),
        };
        orders.push(order);
    }
    let sorted = vec!["127.0.0.2:50051", "127.0.0.5:50051", "127.0.0.9:50051"];
    for order in &orders {
        let mut set = order.clone();
        set.sort();
        assert_eq!(set, sorted);
    }
    assert!(
        orders.iter().any(|order| *order != sorted),
        "every resolution sorted: {orders:?}"
    );
}

#[tokio::test]
async fn resolves_through_the_registry_with_the_default_port() {
    let dns = start(TWO);
    let mut registry = Registry::new();
    registry.register(DnsResolver::default());
    let target = format!("dns://{}/greeter.test", dns.authority());
    let mut updates = registry.resolve(&target, ResolveNow::new()).unwrap();
    assert_eq!(
        next_reset(&mut updates).await,
        endpoints(&["127.0.0.2:443", "127.0.0.3:443"])
    );
}

#[tokio::test]
async fn resolve_now_sees_a_changed_record() {
    let dns = start(TWO);
    let resolve_now = ResolveNow::new();
    let target = format!("dns://{}/greeter.test:50051", dns.authority());
    let mut updates = resolve(fast(), &target, &resolve_now);
    assert_eq!(
        next_reset(&mut updates).await,
        endpoints(&["127.0.0.2:50051", "127.0.0.3:50051"])
    );

    dns.set_hosts("127.0.0.3 greeter.test\n127.0.0.4 greeter.test\n");
    resolve_now.request();
    assert_eq!(
        next_reset(&mut updates).await,
        endpoints(&["127.0.0.3:50051", "127.0.0.4:50051"])
    );
}

#[tokio::test]
async fn an_unchanged_set_is_not_reported_again() {
    let dns = start(TWO);
    let resolve_now = ResolveNow::new();
    let target = format!("dns://{}/greeter.test:50051", dns.authority());
    let mut updates = resolve(fast(), &target, &resolve_now);
    next_reset(&mut updates).await;

    resolve_now.request();
    // The resolver looks again (dnsmasq logs the query) but says nothing.
    let quiet = tokio::time::timeout(Duration::from_millis(700), updates.next()).await;
    assert!(quiet.is_err(), "unexpected update {quiet:?}");
    assert!(
        dns.wait_for_log(|log| dnsmasq::count_a_queries(log, "greeter.test") >= 2),
        "no second lookup; log: {:#?}",
        dns.log()
    );

    // A change is reported.
    dns.set_hosts("127.0.0.4 greeter.test\n");
    resolve_now.request();
    assert_eq!(
        next_reset(&mut updates).await,
        endpoints(&["127.0.0.4:50051"])
    );
}

fn dns_a_queries(dns: &Dnsmasq) -> usize {
    dns.a_queries("greeter.test")
}

#[tokio::test]
async fn resolve_now_is_rate_limited_and_coalesced() {
    let interval = Duration::from_secs(1);
    let dns = start(TWO);
    let resolve_now = ResolveNow::new();
    let target = format!("dns://{}/greeter.test:50051", dns.authority());
    let started = Instant::now();
    let mut updates = resolve(
        fast().min_resolution_interval(interval),
        &target,
        &resolve_now,
    );
    next_reset(&mut updates).await;

    // Two requests right away: one resolution, once the interval has passed
    // since the first one (which finished after `started`).
    dns.set_hosts("127.0.0.3 greeter.test\n127.0.0.4 greeter.test\n");
    resolve_now.request();
    resolve_now.request();
    assert_eq!(
        next_reset(&mut updates).await,
        endpoints(&["127.0.0.3:50051", "127.0.0.4:50051"])
    );
    assert!(
        started.elapsed() >= interval,
        "re-resolved after {:?}, before the minimum interval",
        started.elapsed()
    );

    // The two requests were one: no further resolution without a new request,
    // even though the record has changed again.
    dns.set_hosts("127.0.0.5 greeter.test\n");
    let quiet = tokio::time::timeout(interval + interval / 2, updates.next()).await;
    assert!(quiet.is_err(), "unexpected update {quiet:?}");
    assert_eq!(dns_a_queries(&dns), 2, "log: {:#?}", dns.log());

    // A new request is answered (the interval has long passed).
    resolve_now.request();
    assert_eq!(
        next_reset(&mut updates).await,
        endpoints(&["127.0.0.5:50051"])
    );
    // dnsmasq may log the query just after answering it: wait for the line.
    dns.wait_for_log(|log| dnsmasq::count_a_queries(log, "greeter.test") >= 3);
    assert_eq!(dns_a_queries(&dns), 3, "log: {:#?}", dns.log());
}

#[tokio::test]
async fn nxdomain_is_an_error_and_is_retried_with_backoff() {
    let dns = start(TWO);
    let target = format!("dns://{}/missing.test:50051", dns.authority());
    let mut updates = resolve(fast(), &target, &ResolveNow::new());

    let error = next(&mut updates).await.unwrap_err().to_string();
    assert!(error.contains("missing.test"), "{error}");
    assert!(error.contains("NXDOMAIN"), "{error}");

    // The name appears; a retry (no ResolveNow needed) finds it.
    dns.set_hosts(&format!("{TWO}127.0.0.9 missing.test\n"));
    let deadline = Instant::now() + EVENT_DEADLINE;
    loop {
        match next(&mut updates).await {
            Ok(update) => {
                assert_eq!(update, Update::Reset(endpoints(&["127.0.0.9:50051"])));
                break;
            }
            Err(error) => {
                assert!(error.to_string().contains("missing.test"), "{error}");
                assert!(Instant::now() < deadline, "still failing: {error}");
            }
        }
    }
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_naming_the_host() {
    // A port nothing listens on.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("dns://127.0.0.1:{port}/greeter.test:50051");
    let config = fast().resolve_timeout(Duration::from_millis(500));
    let mut updates = resolve(config, &target, &ResolveNow::new());
    let error = next(&mut updates).await.unwrap_err().to_string();
    assert!(error.contains("greeter.test"), "{error}");
    // And it keeps trying.
    assert!(next(&mut updates).await.is_err());
}

#[tokio::test]
async fn dropping_the_stream_leaves_no_task_behind() {
    let dns = start(TWO);
    let target = format!("dns://{}/greeter.test:50051", dns.authority());
    let mut updates = resolve(fast(), &target, &ResolveNow::new());
    next_reset(&mut updates).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    drop(updates);
    // Aborted tasks go once the runtime gets to them: give it turns.
    let deadline = Instant::now() + EVENT_DEADLINE;
    while metrics.num_alive_tasks() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} tasks outlived the stream",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_ip_literal_needs_no_dns_server() {
    let resolve_now = ResolveNow::new();
    let mut updates = resolve(DnsConfig::default(), "dns:///127.0.0.1:50051", &resolve_now);
    let first = updates
        .next()
        .now_or_never()
        .expect("an IP literal is reported at once")
        .expect("the stream ended")
        .unwrap();
    assert_eq!(first, Update::Reset(endpoints(&["127.0.0.1:50051"])));
    // Never re-resolved, and the stream does not end.
    resolve_now.request();
    assert!(updates.next().now_or_never().is_none());
}

#[tokio::test]
async fn srv_records_give_ports_and_weights() {
    let dns = Dnsmasq::start(
        TWO,
        &["--srv-host=_grpc._tcp.greeter.test,greeter.test,50051,0,5"],
    );
    let target = format!("dns://{}/greeter.test", dns.authority());
    let config = fast().srv_service("_grpc._tcp");
    let mut updates = resolve(config, &target, &ResolveNow::new());
    let srv = |addr: &str| {
        Endpoint::new(addr.parse::<SocketAddr>().unwrap())
            .with_weight(5)
            .with_metadata("srv.priority", "0")
            .with_metadata("srv.weight", "5")
            .with_metadata("srv.port", "50051")
            .with_metadata("srv.target", "greeter.test.")
    };
    assert_eq!(
        next_reset(&mut updates).await,
        vec![srv("127.0.0.2:50051"), srv("127.0.0.3:50051")]
    );
}

#[tokio::test]
async fn without_srv_records_the_host_is_used() {
    let dns = Dnsmasq::start(
        TWO,
        &["--srv-host=_grpc._tcp.other.test,greeter.test,50051,0,5"],
    );
    let target = format!("dns://{}/greeter.test:8080", dns.authority());
    let config = fast().srv_service("_grpc._tcp");
    let mut updates = resolve(config, &target, &ResolveNow::new());
    assert_eq!(
        next_reset(&mut updates).await,
        endpoints(&["127.0.0.2:8080", "127.0.0.3:8080"])
    );
}

const WITH_BALANCER: &str = "127.0.0.2 greeter.test\n127.0.0.3 greeter.test\n127.0.0.9 lb.test\n";
const GRPCLB_SRV: &str = "--srv-host=_grpclb._tcp.greeter.test,lb.test,9000,0,0";

fn balancer(addr: &str) -> Endpoint {
    Endpoint::new(addr.parse::<SocketAddr>().unwrap())
        .with_weight(1)
        .with_metadata("srv.priority", "0")
        .with_metadata("srv.weight", "0")
        .with_metadata("srv.port", "9000")
        .with_metadata("srv.target", "lb.test.")
        .with_metadata(grpc_lb_resolve::dns::GRPCLB_BALANCER_KEY, "lb.test.")
}

#[tokio::test]
async fn grpclb_srv_records_add_marked_balancers() {
    let dns = Dnsmasq::start(WITH_BALANCER, &[GRPCLB_SRV]);
    let target = format!("dns://{}/greeter.test:50051", dns.authority());
    let config = fast().grpclb_balancers(true);
    let mut updates = resolve(config, &target, &ResolveNow::new());
    let mut expected = endpoints(&["127.0.0.2:50051", "127.0.0.3:50051"]);
    expected.push(balancer("127.0.0.9:9000"));
    assert_eq!(next_reset(&mut updates).await, expected);
    assert!(dns.wait_for_log(|log| log
        .iter()
        .any(|line| line.contains("query[SRV] _grpclb._tcp.greeter.test"))));
}

#[tokio::test]
async fn grpclb_balancers_alone_are_a_result() {
    let dns = Dnsmasq::start(
        "127.0.0.9 lb.test\n",
        &["--srv-host=_grpclb._tcp.nobackends.test,lb.test,9000,0,0"],
    );
    let target = format!("dns://{}/nobackends.test:50051", dns.authority());
    let mut updates = resolve(fast().grpclb_balancers(true), &target, &ResolveNow::new());
    assert_eq!(
        next_reset(&mut updates).await,
        vec![balancer("127.0.0.9:9000")]
    );

    // Without the lookup the same name has no addresses: an error.
    let mut updates = resolve(fast(), &target, &ResolveNow::new());
    assert!(next(&mut updates).await.is_err());
}

#[tokio::test]
async fn grpclb_srv_records_are_not_looked_up_unless_asked() {
    let dns = Dnsmasq::start(WITH_BALANCER, &[GRPCLB_SRV]);
    let target = format!("dns://{}/greeter.test:50051", dns.authority());
    let mut updates = resolve(fast(), &target, &ResolveNow::new());
    assert_eq!(
        next_reset(&mut updates).await,
        endpoints(&["127.0.0.2:50051", "127.0.0.3:50051"])
    );
    assert!(!dns
        .log()
        .iter()
        .any(|line| line.contains("query[SRV] _grpclb._tcp")));
}
