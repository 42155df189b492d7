//! A channel whose target is resolved by a real dnsmasq: when the DNS records
//! change, the endpoint set and the traffic follow.

#[path = "../../crates/grpc-lb-resolve/tests/support/dnsmasq.rs"]
mod dnsmasq;

use std::collections::HashSet;
use std::time::Duration;

use dnsmasq::Dnsmasq;
use grpc_lb::resolve::dns::{DnsConfig, DnsResolver};
use grpc_lb::resolve::Registry;
use grpc_lb::Channel;
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use integration_tests::GreeterProcess;
use tokio::time::timeout;

const SERVER: &str = env!("CARGO_BIN_EXE_test-greeter-server");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_set_and_traffic_follow_dns_changes() {
    // Three backends on one port, on three loopback addresses.
    let first = GreeterProcess::start(SERVER, "127.0.0.2:0", "two");
    let port = first.addr().port();
    let second = GreeterProcess::start(SERVER, &format!("127.0.0.3:{port}"), "three");
    let third = GreeterProcess::start(SERVER, &format!("127.0.0.4:{port}"), "four");
    let dns = Dnsmasq::start("127.0.0.2 greeter.test\n127.0.0.3 greeter.test\n", &[]);

    let mut registry = Registry::with_defaults();
    registry.register(DnsResolver::new(
        DnsConfig::default()
            .min_resolution_interval(Duration::from_millis(100))
            .refresh_interval(Duration::from_millis(200)),
    ));
    let target = format!("dns://{}/greeter.test:{port}", dns.authority());
    let channel = Channel::builder(target)
        .resolver_registry(registry)
        .policy("round_robin")
        .build()
        .unwrap();

    let backends = |channel: &Channel<_>| -> HashSet<String> {
        channel
            .ready_addresses()
            .iter()
            .map(|a| a.to_string())
            .collect()
    };
    let wait_for = |want: &'static [&'static str]| {
        let channel = channel.clone();
        async move {
            let want: HashSet<String> = want.iter().map(|a| format!("{a}:{port}")).collect();
            let mut picker = channel.watch_picker();
            timeout(Duration::from_secs(10), async {
                while backends(&channel) != want {
                    picker.changed().await.unwrap();
                }
            })
            .await
            .unwrap_or_else(|_| panic!("ready set {:?}, wanted {want:?}", backends(&channel)));
        }
    };
    let served = |channel: Channel<_>| async move {
        let mut client = GreeterClient::new(channel);
        let mut names = HashSet::new();
        for _ in 0..20 {
            let request = HelloRequest { name: "dns".into() };
            let reply = client
                .say_hello(request)
                .await
                .unwrap()
                .into_inner()
                .message;
            names.insert(reply.rsplit(' ').next().unwrap().to_owned());
        }
        names
    };

    wait_for(&["127.0.0.2", "127.0.0.3"]).await;
    assert_eq!(
        served(channel.clone()).await,
        HashSet::from(["two".into(), "three".into()])
    );

    dns.set_hosts("127.0.0.3 greeter.test\n127.0.0.4 greeter.test\n");
    wait_for(&["127.0.0.3", "127.0.0.4"]).await;
    assert_eq!(
        served(channel.clone()).await,
        HashSet::from(["three".into(), "four".into()])
    );
    drop((first, second, third));
}
