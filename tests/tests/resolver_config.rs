//! Service configs from the resolver: DNS TXT `grpc_config=` records (gRFC
//! A2) served by a real dnsmasq, and configs pushed through the manual
//! resolver, as `ResolverStatus::service_config` reports them. A bad config
//! never replaces a good one.

#[path = "../../crates/grpc-lb-resolve/tests/support/dnsmasq.rs"]
mod dnsmasq;

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
