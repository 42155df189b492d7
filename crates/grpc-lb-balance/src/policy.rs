use std::sync::Arc;
use std::time::Duration;

use grpc_lb_core::ConnectivityState;
use grpc_lb_resolve::Address;

use crate::pick::Pick;

/// What a policy can ask of the channel that runs it (grpc-go's
/// `balancer.ClientConn`). Every call is made on the channel's own task, so a
/// policy needs no locks.
pub trait Helper {
    /// The state of the subchannel for `address`, if there is one.
    fn state(&self, address: &Address) -> Option<ConnectivityState>;
    /// Asks an idle subchannel to connect (grpc-go's `SubConn.Connect`).
    fn connect(&mut self, address: &Address);
    /// Drops the subchannel's connection or attempt; it goes IDLE.
    fn disconnect(&mut self, address: &Address);
    /// Asks for [`LoadBalancer::timer_fired`] to be called after `after`,
    /// replacing any timer asked for before.
    fn set_timer(&mut self, after: Duration);
    /// Asks the resolver to resolve again.
    fn resolve_now(&mut self);
}

/// A load-balancing policy (grpc-go's `balancer.Balancer`).
///
/// The channel tells the policy about the endpoint list and about every
/// subchannel state change; the policy answers through the [`Helper`] and through
/// [`state`](Self::state), [`pickable`](Self::pickable) and [`pick`](Self::pick),
/// which the channel reads after each event to publish a new picker. A failing
/// endpoint is never removed by a policy: it backs off and comes back by itself;
/// only the resolver removes endpoints.
pub trait LoadBalancer: Send + 'static {
    /// The policy's name, as used in `loadBalancingConfig`.
    fn name(&self) -> &str;

    /// The endpoint list changed; `addresses` is the whole list, in the
    /// resolver's order. Subchannels exist for every address, all IDLE until
    /// connected.
    fn update_addresses(&mut self, addresses: &[Address], helper: &mut dyn Helper);

    /// The subchannel for `address` moved to `state`.
    fn update_subchannel(
        &mut self,
        address: &Address,
        state: ConnectivityState,
        helper: &mut dyn Helper,
    );

    /// A timer asked for with [`Helper::set_timer`] fired.
    fn timer_fired(&mut self, helper: &mut dyn Helper) {
        let _ = helper;
    }

    /// A request arrived while the channel was IDLE (grpc-go's `ExitIdle`).
    fn exit_idle(&mut self, helper: &mut dyn Helper);

    /// The channel's connectivity state as this policy sees it.
    fn state(&self) -> ConnectivityState;

    /// The subchannels that may be picked, in the order the [`Pick`] sees them.
    /// Only those that are READY are used.
    fn pickable(&self) -> Vec<Address>;

    /// How to choose among the pickable subchannels.
    fn pick(&self) -> Arc<dyn Pick>;

    /// Whether the channel should gate this policy's subchannels on client-side
    /// health checks (gRFC A17) when health checking is configured. Yes by
    /// default; `pick_first` says no, as in gRPC: it sticks to one connection
    /// and has nowhere to move traffic to.
    fn uses_health_checks(&self) -> bool {
        true
    }
}
