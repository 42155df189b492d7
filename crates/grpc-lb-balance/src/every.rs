use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use grpc_lb_core::ConnectivityState;
use grpc_lb_resolve::Address;

use crate::aggregate::aggregate;
use crate::pick::Pick;
use crate::policy::{Helper, LoadBalancer};

/// A policy that keeps a connection to every endpoint and picks among the ready
/// ones with a [`Pick`]: `round_robin`, `p2c` and `least_request` are this with
/// different picks.
///
/// It follows grpc-go's round_robin (endpointsharding with a pick_first child per
/// endpoint):
/// - every endpoint is connected, and a subchannel that reports IDLE (its
///   connection lost, or its backoff over) is reconnected at once;
/// - each subchannel is sticky in TRANSIENT_FAILURE: once failed it counts as
///   failed until it reports READY again, ignoring CONNECTING in between
///   (`doc/load-balancing.md`);
/// - the channel state is the aggregate of those effective states.
///
/// ```
/// use std::sync::Arc;
/// use grpc_lb_balance::{EveryEndpoint, LoadBalancer, RoundRobin};
/// use grpc_lb_core::ConnectivityState::{Connecting, Ready, TransientFailure};
/// # use std::time::Duration;
/// # use grpc_lb_balance::Helper;
/// # use grpc_lb_core::ConnectivityState;
/// # use grpc_lb_resolve::Address;
/// # /// Records what the policy asks for, as the channel's worker would act on it.
/// # #[derive(Default)]
/// # struct Recorder { connects: Vec<Address> }
/// # impl Helper for Recorder {
/// #     fn state(&self, _: &Address) -> Option<ConnectivityState> { Some(ConnectivityState::Idle) }
/// #     fn connect(&mut self, address: &Address) { self.connects.push(address.clone()) }
/// #     fn disconnect(&mut self, _: &Address) {}
/// #     fn set_timer(&mut self, _: Duration) {}
/// #     fn resolve_now(&mut self) {}
/// # }
///
/// let a = Address::Socket("10.0.0.1:50051".parse().unwrap());
/// let b = Address::Socket("10.0.0.2:50051".parse().unwrap());
/// let mut helper = Recorder::default();
/// let mut policy = EveryEndpoint::new("round_robin", Arc::new(RoundRobin::new()));
///
/// policy.update_addresses(&[a.clone(), b.clone()], &mut helper);
/// assert_eq!(helper.connects, [a.clone(), b.clone()]); // every endpoint, at once
///
/// policy.update_subchannel(&a, Connecting, &mut helper);
/// policy.update_subchannel(&b, TransientFailure, &mut helper);
/// assert_eq!(policy.state(), Connecting);
/// policy.update_subchannel(&a, Ready, &mut helper);
/// assert_eq!(policy.state(), Ready);
/// assert_eq!(policy.pickable(), [a]); // b backs off and is not picked
/// ```
#[derive(Debug)]
pub struct EveryEndpoint {
    name: &'static str,
    pick: Arc<dyn Pick>,
    order: Vec<Address>,
    children: HashMap<Address, Child>,
}

#[derive(Debug, Clone, Copy)]
struct Child {
    state: ConnectivityState,
    failed: bool,
}

impl Child {
    fn effective(self) -> ConnectivityState {
        if self.failed && self.state != ConnectivityState::Ready {
            ConnectivityState::TransientFailure
        } else {
            self.state
        }
    }
}

impl EveryEndpoint {
    /// A policy named `name` that picks with `pick`.
    pub fn new(name: &'static str, pick: Arc<dyn Pick>) -> Self {
        EveryEndpoint {
            name,
            pick,
            order: Vec::new(),
            children: HashMap::new(),
        }
    }
}

impl LoadBalancer for EveryEndpoint {
    fn name(&self) -> &str {
        self.name
    }

    fn update_addresses(&mut self, addresses: &[Address], helper: &mut dyn Helper) {
        // A set, not `addresses.contains`: that scan made every update
        // quadratic in the endpoint count (225 ms for one Add at 10,000).
        let listed: HashSet<&Address> = addresses.iter().collect();
        self.children.retain(|address, _| listed.contains(address));
        self.order.clear();
        for address in addresses {
            if self.children.contains_key(address) {
                self.order.push(address.clone());
                continue;
            }
            let state = helper.state(address).unwrap_or(ConnectivityState::Idle);
            self.children.insert(
                address.clone(),
                Child {
                    state,
                    failed: state == ConnectivityState::TransientFailure,
                },
            );
            self.order.push(address.clone());
            if state == ConnectivityState::Idle {
                helper.connect(address);
            }
        }
    }

    fn update_subchannel(
        &mut self,
        address: &Address,
        state: ConnectivityState,
        helper: &mut dyn Helper,
    ) {
        let Some(child) = self.children.get_mut(address) else {
            return;
        };
        child.state = state;
        match state {
            ConnectivityState::Ready => child.failed = false,
            ConnectivityState::TransientFailure => child.failed = true,
            ConnectivityState::Idle => helper.connect(address),
            ConnectivityState::Connecting | ConnectivityState::Shutdown => {}
        }
    }

    fn replace_subchannel(
        &mut self,
        address: &Address,
        state: ConnectivityState,
        helper: &mut dyn Helper,
    ) {
        let Some(child) = self.children.get_mut(address) else {
            return;
        };
        // A new subchannel: the old one's READY (or failure) is gone with it.
        *child = Child {
            state,
            failed: state == ConnectivityState::TransientFailure,
        };
        if state == ConnectivityState::Idle {
            helper.connect(address);
        }
    }

    fn exit_idle(&mut self, helper: &mut dyn Helper) {
        for (address, child) in &self.children {
            if child.state == ConnectivityState::Idle {
                helper.connect(address);
            }
        }
    }

    fn state(&self) -> ConnectivityState {
        aggregate(self.children.values().map(|c| c.effective()))
    }

    fn pickable(&self) -> Vec<Address> {
        self.order
            .iter()
            .filter(|a| self.children[*a].state == ConnectivityState::Ready)
            .cloned()
            .collect()
    }

    fn pick(&self) -> Arc<dyn Pick> {
        self.pick.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::pick::RoundRobin;
    use ConnectivityState::*;

    #[derive(Default)]
    struct Recorder {
        connects: Vec<Address>,
    }

    impl Helper for Recorder {
        fn state(&self, _: &Address) -> Option<ConnectivityState> {
            Some(Idle)
        }
        fn connect(&mut self, address: &Address) {
            self.connects.push(address.clone());
        }
        fn disconnect(&mut self, _: &Address) {}
        fn set_timer(&mut self, _: Duration) {}
        fn resolve_now(&mut self) {}
    }

    // Issue 13, defect 2: an endpoint inserted again with new attributes has
    // a new IDLE subchannel; keeping the old one's READY left the channel
    // READY with nothing to pick, and nothing connected the new one.
    #[test]
    fn replaced_endpoint_is_connected_and_not_ready_until_it_is() {
        let a = Address::Socket(SocketAddr::from(([127, 0, 0, 1], 1)));
        let mut helper = Recorder::default();
        let mut policy = EveryEndpoint::new("round_robin", Arc::new(RoundRobin::new()));
        policy.update_addresses(std::slice::from_ref(&a), &mut helper);
        policy.update_subchannel(&a, Ready, &mut helper);
        assert_eq!(policy.state(), Ready);
        helper.connects.clear();
        policy.replace_subchannel(&a, Idle, &mut helper);
        assert_eq!(helper.connects, std::slice::from_ref(&a));
        assert_eq!(policy.state(), Idle);
        assert!(policy.pickable().is_empty());
        policy.update_subchannel(&a, Connecting, &mut helper);
        policy.update_subchannel(&a, Ready, &mut helper);
        assert_eq!(policy.pickable(), [a]);
    }
}
