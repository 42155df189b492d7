//! The resolver's weights and hash keys reach the policies through
//! `Balance::describe_resolved`.

use std::sync::{Arc, Mutex};

use futures::future::poll_fn;
use grpc_lb_core::{Connectivity, NewSubchannel};
use grpc_lb_resolve::{Address, Endpoint, ManualResolver, Registry, ResolveLayer};
use tower::Layer;

use crate::service::Balance;
use crate::tree::{
    Endpoint as TreeEndpoint, EndpointAttributes, EndpointId, Helper, Policy, RoundRobin,
    SubchannelId, TimerId,
};

/// round_robin, writing down what its helper says of each endpoint added.
#[derive(Debug)]
struct Recording {
    child: RoundRobin,
    seen: Arc<Mutex<Vec<Option<EndpointAttributes>>>>,
}

impl Policy for Recording {
    fn name(&self) -> &str {
        "recording"
    }
    fn add_endpoint(&mut self, endpoint: TreeEndpoint<'_>, helper: &mut dyn Helper) {
        let attributes = helper.endpoint_attributes(endpoint.id);
        self.seen.lock().unwrap().push(attributes);
        self.child.add_endpoint(endpoint, helper)
    }
    fn remove_endpoint(&mut self, endpoint: EndpointId, helper: &mut dyn Helper) {
        self.child.remove_endpoint(endpoint, helper)
    }
    fn subchannel_state(
        &mut self,
        id: SubchannelId,
        state: &Connectivity,
        helper: &mut dyn Helper,
    ) {
        self.child.subchannel_state(id, state, helper)
    }
    fn timer_fired(&mut self, timer: TimerId, helper: &mut dyn Helper) {
        self.child.timer_fired(timer, helper)
    }
    fn exit_idle(&mut self, helper: &mut dyn Helper) {
        self.child.exit_idle(helper)
    }
}

#[tokio::test]
async fn the_resolvers_weight_and_hash_key_reach_the_policy_as_endpoints_are_added() {
    let (resolver, handle) = ManualResolver::new("example");
    let mut registry = Registry::new();
    registry.register(resolver);
    let make = tower::service_fn(|_: NewSubchannel<Address>| async {
        Ok::<_, std::convert::Infallible>(tower::service_fn(|_: ()| async {
            Ok::<_, std::convert::Infallible>(())
        }))
    });
    let discover = ResolveLayer::with_registry("example:///x", registry)
        .unwrap()
        .layer(make);
    let attributes = discover.attributes();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let policy = Recording {
        child: RoundRobin::new(),
        seen: seen.clone(),
    };
    let mut balance = Balance::new(discover, policy).describe_resolved(attributes);

    let weighted: std::net::SocketAddr = "10.0.0.1:50051".parse().unwrap();
    let plain: std::net::SocketAddr = "10.0.0.2:50051".parse().unwrap();
    handle.reset([
        Endpoint::new(weighted)
            .with_weight(3)
            .with_metadata("hash_key", "shard-7"),
        Endpoint::new(plain),
    ]);
    // Discovery is driven by the balancer's own events, with no call (the
    // timeout only turns a hang into a failure).
    let added = poll_fn(|cx| {
        let _ = balance.poll_events(cx);
        if seen.lock().unwrap().len() == 2 {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    });
    tokio::time::timeout(std::time::Duration::from_secs(30), added)
        .await
        .expect("both endpoints added");

    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by(|a, b| {
        a.as_ref()
            .map(|a| a.name.clone())
            .cmp(&b.as_ref().map(|b| b.name.clone()))
    });
    assert_eq!(
        seen,
        [
            Some(
                EndpointAttributes::named("10.0.0.1:50051")
                    .with_weight(3)
                    .with_hash_key("shard-7")
            ),
            Some(EndpointAttributes::named("10.0.0.2:50051")),
        ]
    );
}
