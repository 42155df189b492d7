//! The etcd resolver against a real etcd on loopback (one server per test).
//!
//! Needs the `etcd` binary: `apt-get install -y etcd-server`. Without it these
//! tests fail; they are never skipped.
#![cfg(feature = "etcd")]

#[path = "support/etcd_server.rs"]
mod etcd_server;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use etcd_server::EtcdServer;
use futures::StreamExt;
use grpc_lb_backoff::BackoffConfig;
use grpc_lb_core::{BoxError, ResolveNow};
use grpc_lb_resolve::etcd::EtcdResolver;
use grpc_lb_resolve::{Address, Endpoint, Registry, Update, UpdateStream};
use tokio::time::timeout;

const PREFIX: &str = "services/greeter";

/// How long any single item may take where no particular bound is asserted.
const ITEM_DEADLINE: Duration = Duration::from_secs(10);

fn key(addr: &str) -> String {
    format!("{PREFIX}/{addr}")
}

fn value(addr: &str) -> String {
    format!(r#"{{"Addr":"{addr}"}}"#)
}

fn endpoint(addr: &str) -> Endpoint {
    Endpoint::new(addr.parse::<std::net::SocketAddr>().unwrap())
}

fn socket(addr: &str) -> Address {
    Address::Socket(addr.parse().unwrap())
}

/// A resolver with a quick reconnect, for tests that break the connection.
fn fast_resolver(server: &EtcdServer) -> EtcdResolver {
    let backoff = BackoffConfig::try_new(
        Duration::from_millis(100),
        1.6,
        0.2,
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .unwrap();
    EtcdResolver::new([server.endpoint()])
        .with_backoff(backoff)
        .with_connect_timeout(Duration::from_secs(2))
}

fn resolve(resolver: EtcdResolver, target: &str) -> UpdateStream {
    let mut registry = Registry::new();
    registry.register(resolver);
    registry
        .resolve(target, ResolveNow::new())
        .unwrap_or_else(|e| panic!("resolve {target}: {e}"))
}

async fn next_within(updates: &mut UpdateStream, limit: Duration) -> Result<Update, BoxError> {
    timeout(limit, updates.next())
        .await
        .unwrap_or_else(|_| panic!("no update within {limit:?}"))
        .expect("the resolver's stream ended")
}

async fn next(updates: &mut UpdateStream) -> Update {
    next_within(updates, ITEM_DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("unexpected resolution error: {e}"))
}

fn sorted(mut endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
    endpoints.sort_by(|a, b| a.address.cmp(&b.address));
    endpoints
}

fn expect_reset(update: Update) -> Vec<Endpoint> {
    match update {
        Update::Reset(endpoints) => sorted(endpoints),
        other => panic!("expected a Reset, got {other:?}"),
    }
}

/// Applies an update to a set, as the Discover adapter would.
fn apply(set: &mut BTreeMap<Address, Endpoint>, update: Update) {
    match update {
        Update::Reset(endpoints) => {
            *set = endpoints
                .into_iter()
                .map(|e| (e.address.clone(), e))
                .collect()
        }
        Update::Add(endpoints) => {
            for e in endpoints {
                set.insert(e.address.clone(), e);
            }
        }
        Update::Remove(addresses) => {
            for a in addresses {
                set.remove(&a);
            }
        }
        Update::ServiceConfig(_) => {}
    }
}

#[tokio::test]
async fn reports_pre_registered_endpoints_as_a_reset() {
    let server = EtcdServer::start().await;
    server
        .put(
            &key("127.0.0.1:50051"),
            r#"{"Addr":"127.0.0.1:50051","Metadata":{"zone":"a","version":2}}"#,
        )
        .await;
    server
        .put(&key("127.0.0.1:50052"), value("127.0.0.1:50052"))
        .await;
    // A sibling prefix that must not be picked up.
    server
        .put("services/greeter-canary/127.0.0.1:1", value("127.0.0.1:1"))
        .await;

    let mut updates = resolve(fast_resolver(&server), &format!("etcd:///{PREFIX}"));
    let started = Instant::now();
    let endpoints = expect_reset(next(&mut updates).await);
    println!("first Reset after {:?}", started.elapsed());
    assert_eq!(
        endpoints,
        vec![
            endpoint("127.0.0.1:50051")
                .with_metadata("zone", "a")
                .with_metadata("version", "2"),
            endpoint("127.0.0.1:50052"),
        ]
    );
}

#[tokio::test]
async fn reports_registrations_and_removals_while_watching() {
    let server = EtcdServer::start().await;
    server
        .put(&key("127.0.0.1:50051"), value("127.0.0.1:50051"))
        .await;
    server
        .put(&key("127.0.0.1:50052"), value("127.0.0.1:50052"))
        .await;
    let mut updates = resolve(fast_resolver(&server), &format!("etcd:///{PREFIX}"));
    assert_eq!(
        expect_reset(next(&mut updates).await),
        vec![endpoint("127.0.0.1:50051"), endpoint("127.0.0.1:50052")]
    );

    let started = Instant::now();
    server
        .put(&key("127.0.0.1:50053"), value("127.0.0.1:50053"))
        .await;
    let update = next_within(&mut updates, Duration::from_secs(1))
        .await
        .unwrap();
    println!("Add after {:?}", started.elapsed());
    assert_eq!(update, Update::Add(vec![endpoint("127.0.0.1:50053")]));

    let started = Instant::now();
    server.delete(&key("127.0.0.1:50051")).await;
    let update = next_within(&mut updates, Duration::from_secs(1))
        .await
        .unwrap();
    println!("Remove after {:?}", started.elapsed());
    assert_eq!(update, Update::Remove(vec![socket("127.0.0.1:50051")]));

    // Nothing else is pending.
    assert!(timeout(Duration::from_millis(200), updates.next())
        .await
        .is_err());
}

#[tokio::test]
async fn skips_malformed_values() {
    let server = EtcdServer::start().await;
    server.put(&key("garbage"), "not json at all").await;
    server
        .put(&key("bad-addr"), r#"{"Addr":"not an address"}"#)
        .await;
    server.put(&key("no-addr"), r#"{"Metadata":{}}"#).await;
    server.put(&key("number"), r#"{"Addr":50051}"#).await;
    server.put(&key("binary"), vec![0xff, 0xfe, 0x00]).await;
    server
        .put(&key("127.0.0.1:50051"), value("127.0.0.1:50051"))
        .await;
    server
        .put(&key("localhost:50052"), value("localhost:50052"))
        .await;

    let mut updates = resolve(fast_resolver(&server), &format!("etcd:///{PREFIX}"));
    assert_eq!(
        expect_reset(next(&mut updates).await),
        vec![
            endpoint("127.0.0.1:50051"),
            Endpoint::new(Address::Name("localhost:50052".into())),
        ]
    );

    // While watching: a bad value is skipped, the next good one still arrives.
    server.put(&key("more-garbage"), "{").await;
    server
        .put(&key("127.0.0.1:50053"), value("127.0.0.1:50053"))
        .await;
    assert_eq!(
        next(&mut updates).await,
        Update::Add(vec![endpoint("127.0.0.1:50053")])
    );

    // A bad value over a good one leaves the good one (as etcd's own watcher
    // does); deleting the key removes it.
    server.put(&key("127.0.0.1:50053"), "oops").await;
    server.delete(&key("127.0.0.1:50053")).await;
    assert_eq!(
        next(&mut updates).await,
        Update::Remove(vec![socket("127.0.0.1:50053")])
    );
    // Deleting a key whose value was bad changes nothing.
    server.delete(&key("garbage")).await;
    assert!(timeout(Duration::from_millis(300), updates.next())
        .await
        .is_err());
}

#[tokio::test]
async fn recovers_after_etcd_restarts() {
    let mut server = EtcdServer::start().await;
    server
        .put(&key("127.0.0.1:50051"), value("127.0.0.1:50051"))
        .await;
    server
        .put(&key("127.0.0.1:50052"), value("127.0.0.1:50052"))
        .await;
    let mut updates = resolve(fast_resolver(&server), &format!("etcd:///{PREFIX}"));
    let mut set = BTreeMap::new();
    apply(&mut set, next(&mut updates).await);
    assert_eq!(set.len(), 2);

    let killed = Instant::now();
    server.kill();
    let error = next_within(&mut updates, Duration::from_secs(5))
        .await
        .expect_err("an error after etcd died");
    println!("Err after {:?}: {error}", killed.elapsed());

    server.restart().await;
    let restarted = Instant::now();
    println!("etcd back after {:?}", killed.elapsed());
    server.delete(&key("127.0.0.1:50051")).await;
    server
        .put(&key("127.0.0.1:50053"), value("127.0.0.1:50053"))
        .await;

    let expected: BTreeMap<Address, Endpoint> = [
        (socket("127.0.0.1:50052"), endpoint("127.0.0.1:50052")),
        (socket("127.0.0.1:50053"), endpoint("127.0.0.1:50053")),
    ]
    .into_iter()
    .collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut resets = 0;
    let mut errors = 0;
    while resets == 0 || set != expected {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "not recovered in time: {resets} resets, {errors} errors since the restart, set {set:?}"
        );
        match next_within(&mut updates, left).await {
            Ok(update) => {
                if matches!(update, Update::Reset(_)) {
                    resets += 1;
                }
                apply(&mut set, update);
            }
            Err(_) => errors += 1,
        }
    }
    println!(
        "recovered {:?} after the restart ({errors} more errors, {resets} resets)",
        restarted.elapsed()
    );
}

#[tokio::test]
async fn resolves_through_the_registry_with_and_without_authority() {
    let server = EtcdServer::start().await;
    server
        .put(&key("127.0.0.1:50051"), value("127.0.0.1:50051"))
        .await;

    // No authority: the resolver's own endpoints.
    let mut registry = Registry::with_defaults();
    registry.register(EtcdResolver::new([server.endpoint()]));
    let mut updates = registry
        .resolve(&format!("etcd:///{PREFIX}"), ResolveNow::new())
        .unwrap();
    assert_eq!(
        expect_reset(next(&mut updates).await),
        vec![endpoint("127.0.0.1:50051")]
    );

    // With an authority: that etcd, not the resolver's (unreachable) one.
    let mut registry = Registry::with_defaults();
    registry.register(
        EtcdResolver::new(["http://127.0.0.1:1"]).with_connect_timeout(Duration::from_secs(1)),
    );
    let target = format!("etcd://{}/{PREFIX}", server.authority());
    let mut updates = registry.resolve(&target, ResolveNow::new()).unwrap();
    assert_eq!(
        expect_reset(next(&mut updates).await),
        vec![endpoint("127.0.0.1:50051")]
    );

    // Without one, that unreachable endpoint is used, and reported as an error.
    let mut updates = registry
        .resolve(&format!("etcd:///{PREFIX}"), ResolveNow::new())
        .unwrap();
    let started = Instant::now();
    let error = next_within(&mut updates, Duration::from_secs(5))
        .await
        .expect_err("no etcd at 127.0.0.1:1");
    println!(
        "unreachable etcd reported after {:?}: {error}",
        started.elapsed()
    );
    assert!(error.to_string().contains("127.0.0.1:1"), "{error}");

    // A target with no prefix is refused up front.
    assert!(registry
        .resolve(
            &format!("etcd://{}/", server.authority()),
            ResolveNow::new()
        )
        .is_err());
}
