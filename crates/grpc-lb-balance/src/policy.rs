use std::sync::Arc;
use std::time::Duration;

use grpc_lb_core::ConnectivityState;
use grpc_lb_resolve::Address;

use crate::pick::Pick;

/// What a policy can ask of the channel that runs it (grpc-go's
/// `balancer.ClientConn`). Every call is made on the channel's own task, so a
/// policy needs no locks.
///
/// The channel's worker is the real helper; a test of a policy uses one that
/// records what it is asked:
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_balance::{Helper, LoadBalancer, PickFirst};
/// use grpc_lb_core::ConnectivityState;
/// use grpc_lb_resolve::Address;
///
/// #[derive(Default)]
/// struct Recorder {
///     connects: Vec<Address>,
///     timer: Option<Duration>,
/// }
///
/// impl Helper for Recorder {
///     fn state(&self, _: &Address) -> Option<ConnectivityState> {
///         Some(ConnectivityState::Idle)
///     }
///     fn connect(&mut self, address: &Address) {
///         self.connects.push(address.clone());
///     }
///     fn disconnect(&mut self, _: &Address) {}
///     fn set_timer(&mut self, after: Duration) {
///         self.timer = Some(after);
///     }
///     fn resolve_now(&mut self) {}
/// }
///
/// let a = Address::Socket("10.0.0.1:50051".parse().unwrap());
/// let b = Address::Socket("10.0.0.2:50051".parse().unwrap());
/// let mut helper = Recorder::default();
/// let mut policy = PickFirst::default();
/// policy.update_addresses(&[a.clone(), b], &mut helper);
///
/// // pick_first connects to the first address and gives it 250 ms (Happy Eyeballs).
/// assert_eq!(helper.connects, [a]);
/// assert_eq!(helper.timer, Some(Duration::from_millis(250)));
/// ```
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
///
/// A policy of your own, registered by name like grpc-go's balancer registry:
///
/// ```
/// use std::sync::Arc;
/// use grpc_lb_balance::{aggregate, Helper, LoadBalancer, Pick, PolicyRegistry, RoundRobin};
/// use grpc_lb_core::ConnectivityState;
/// use grpc_lb_resolve::Address;
///
/// /// Connects only to the first `n` endpoints and spreads requests over them.
/// #[derive(Debug)]
/// struct FirstN {
///     n: usize,
///     chosen: Vec<(Address, ConnectivityState)>,
///     pick: Arc<RoundRobin>,
/// }
///
/// impl LoadBalancer for FirstN {
///     fn name(&self) -> &str {
///         "first_n"
///     }
///     fn update_addresses(&mut self, addresses: &[Address], helper: &mut dyn Helper) {
///         self.chosen = addresses.iter().take(self.n).map(|a| {
///             let state = helper.state(a).unwrap_or(ConnectivityState::Idle);
///             (a.clone(), state)
///         }).collect();
///         self.exit_idle(helper);
///     }
///     fn update_subchannel(&mut self, address: &Address, state: ConnectivityState, helper: &mut dyn Helper) {
///         if let Some(entry) = self.chosen.iter_mut().find(|(a, _)| a == address) {
///             entry.1 = state;
///             if state == ConnectivityState::Idle {
///                 helper.connect(address);
///             }
///         }
///     }
///     fn exit_idle(&mut self, helper: &mut dyn Helper) {
///         for (address, state) in &self.chosen {
///             if *state == ConnectivityState::Idle {
///                 helper.connect(address);
///             }
///         }
///     }
///     fn state(&self) -> ConnectivityState {
///         aggregate(self.chosen.iter().map(|(_, state)| *state))
///     }
///     fn pickable(&self) -> Vec<Address> {
///         self.chosen.iter().map(|(a, _)| a.clone()).collect()
///     }
///     fn pick(&self) -> Arc<dyn Pick> {
///         self.pick.clone()
///     }
/// }
///
/// let mut registry = PolicyRegistry::with_defaults();
/// registry.register("first_n", || {
///     Box::new(FirstN { n: 2, chosen: Vec::new(), pick: Arc::new(RoundRobin::new()) })
/// });
/// assert_eq!(registry.build("first_n").unwrap().name(), "first_n");
/// // Builder::policy_registry hands the registry to a channel, and
/// // Builder::policy("first_n") or a service config's loadBalancingConfig picks it.
/// ```
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

    /// The subchannel for `address` was replaced by a new one, now in
    /// `state`: the resolver inserted the endpoint again (with new
    /// attributes: etcd metadata, an SRV weight). Nothing the policy knew of
    /// the old subchannel holds: its connection is gone with it, and the new
    /// one connects only when asked. The address list is unchanged, so no
    /// [`update_addresses`](Self::update_addresses) comes with it.
    ///
    /// By default this is told as a state change to `state`.
    fn replace_subchannel(
        &mut self,
        address: &Address,
        state: ConnectivityState,
        helper: &mut dyn Helper,
    ) {
        self.update_subchannel(address, state, helper);
    }

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
