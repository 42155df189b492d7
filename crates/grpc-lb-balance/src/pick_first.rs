use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use grpc_lb_core::ConnectivityState;
use grpc_lb_resolve::Address;
use rand::seq::SliceRandom;

use crate::pick::{Pick, SingleReady};
use crate::policy::{Helper, LoadBalancer};

/// gRFC A61's Connection Attempt Delay: how long pick_first waits on one address
/// before also trying the next (grpc-go `connectionDelayInterval`).
pub const CONNECTION_DELAY: Duration = Duration::from_millis(250);

/// `pick_first`: one connection, to the first address that answers.
///
/// Follows gRFC A62 and grpc-go's `balancer/pickfirst`:
/// - a first pass tries the addresses in order, starting the next one after
///   [`CONNECTION_DELAY`] without cancelling the earlier attempt (A61 Happy
///   Eyeballs), or at once when the current one fails; the first READY wins and
///   the others are dropped;
/// - when every address has failed once the channel is TRANSIENT_FAILURE and
///   stays so (sticky) until a connection succeeds, reconnecting each subchannel
///   as its backoff ends and asking for re-resolution;
/// - an address update that keeps the READY address changes nothing;
/// - losing the connection makes the channel IDLE; the next request starts a new
///   first pass from the first address;
/// - with `shuffle_address_list` the list is shuffled on every update (A62).
///
/// Address order is the resolver's; A61's IPv4/IPv6 interleaving is not applied.
///
/// ```
/// use grpc_lb_balance::{LoadBalancer, PickFirst};
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
/// let mut policy = PickFirst::new(false);
///
/// policy.update_addresses(&[a.clone(), b.clone()], &mut helper);
/// assert_eq!(helper.connects, [a.clone()]);
/// assert_eq!(policy.state(), Connecting);
///
/// // The first address fails: on to the next one, without waiting for the timer.
/// policy.update_subchannel(&a, TransientFailure, &mut helper);
/// assert_eq!(helper.connects, [a.clone(), b.clone()]);
/// policy.update_subchannel(&b, Ready, &mut helper);
/// assert_eq!(policy.state(), Ready);
/// assert_eq!(policy.pickable(), [b]);
/// ```
#[derive(Debug)]
pub struct PickFirst {
    shuffle: bool,
    addresses: Vec<Address>,
    selected: Option<Address>,
    state: ConnectivityState,
    first_pass: Option<FirstPass>,
    pick: Arc<dyn Pick>,
}

#[derive(Debug, Default)]
struct FirstPass {
    /// How many addresses of the list have been started.
    started: usize,
    failed: HashSet<Address>,
}

impl PickFirst {
    /// pick_first, shuffling each new address list when `shuffle_address_list`.
    pub fn new(shuffle_address_list: bool) -> Self {
        PickFirst {
            shuffle: shuffle_address_list,
            addresses: Vec::new(),
            selected: None,
            state: ConnectivityState::Idle,
            first_pass: None,
            pick: Arc::new(SingleReady),
        }
    }

    fn start_first_pass(&mut self, helper: &mut dyn Helper) {
        if self.state != ConnectivityState::TransientFailure {
            self.state = ConnectivityState::Connecting;
        }
        self.first_pass = Some(FirstPass::default());
        self.start_next(helper);
    }

    /// Starts the next address of the first pass, if any is left.
    fn start_next(&mut self, helper: &mut dyn Helper) {
        let Some(pass) = &mut self.first_pass else {
            return;
        };
        while pass.started < self.addresses.len() {
            let address = &self.addresses[pass.started];
            pass.started += 1;
            if pass.failed.contains(address) {
                continue;
            }
            helper.connect(address);
            helper.set_timer(CONNECTION_DELAY);
            return;
        }
    }

    fn select(&mut self, address: &Address, helper: &mut dyn Helper) {
        self.selected = Some(address.clone());
        self.state = ConnectivityState::Ready;
        self.first_pass = None;
        for other in &self.addresses {
            if other != address {
                helper.disconnect(other);
            }
        }
    }
}

impl Default for PickFirst {
    fn default() -> Self {
        PickFirst::new(false)
    }
}

impl LoadBalancer for PickFirst {
    fn name(&self) -> &str {
        "pick_first"
    }

    fn update_addresses(&mut self, addresses: &[Address], helper: &mut dyn Helper) {
        let mut seen = HashSet::new();
        let mut list: Vec<Address> = addresses
            .iter()
            .filter(|a| seen.insert((*a).clone()))
            .cloned()
            .collect();
        if self.shuffle {
            list.shuffle(&mut rand::rng());
        }
        self.addresses = list;

        if let Some(selected) = &self.selected {
            if self.addresses.contains(selected)
                && helper.state(selected) == Some(ConnectivityState::Ready)
            {
                return;
            }
            self.selected = None;
        }
        if self.addresses.is_empty() {
            self.first_pass = None;
            self.state = ConnectivityState::TransientFailure;
            return;
        }
        // A new list without the READY address: connect from the top of it, even
        // while idle, as grpc-go does on every address update.
        self.start_first_pass(helper);
    }

    fn update_subchannel(
        &mut self,
        address: &Address,
        state: ConnectivityState,
        helper: &mut dyn Helper,
    ) {
        if !self.addresses.contains(address) {
            return;
        }
        if state == ConnectivityState::Ready {
            self.select(address, helper);
            return;
        }
        if self.selected.as_ref() == Some(address) {
            // Lost the connection: go idle until a request asks again.
            self.selected = None;
            self.state = ConnectivityState::Idle;
            for other in &self.addresses {
                helper.disconnect(other);
            }
            return;
        }
        match state {
            ConnectivityState::TransientFailure => {
                let Some(pass) = &mut self.first_pass else {
                    // After the first pass: stay sticky in TRANSIENT_FAILURE.
                    return;
                };
                pass.failed.insert(address.clone());
                if pass.failed.len() >= self.addresses.len() {
                    self.first_pass = None;
                    self.state = ConnectivityState::TransientFailure;
                    helper.resolve_now();
                } else {
                    self.start_next(helper);
                }
            }
            ConnectivityState::Idle
                if self.first_pass.is_none()
                    && self.state == ConnectivityState::TransientFailure =>
            {
                // Backoff over: keep trying every address until one connects.
                helper.connect(address);
            }
            _ => {}
        }
    }

    fn timer_fired(&mut self, helper: &mut dyn Helper) {
        if self.first_pass.is_some() && self.selected.is_none() {
            self.start_next(helper);
        }
    }

    fn exit_idle(&mut self, helper: &mut dyn Helper) {
        if self.state == ConnectivityState::Idle && !self.addresses.is_empty() {
            self.start_first_pass(helper);
        }
    }

    fn state(&self) -> ConnectivityState {
        self.state
    }

    fn pickable(&self) -> Vec<Address> {
        self.selected.iter().cloned().collect()
    }

    // gRFC A17 leaves pick_first out of health checking, and grpc-go's
    // pick_first does not ask for health updates unless a parent policy does.
    fn uses_health_checks(&self) -> bool {
        false
    }

    fn pick(&self) -> Arc<dyn Pick> {
        self.pick.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use super::*;
    use ConnectivityState::*;

    #[derive(Default)]
    struct FakeHelper {
        states: HashMap<Address, ConnectivityState>,
        connects: Vec<Address>,
        disconnects: Vec<Address>,
        timers: usize,
        resolve_now: usize,
    }

    impl Helper for FakeHelper {
        fn state(&self, address: &Address) -> Option<ConnectivityState> {
            self.states.get(address).copied()
        }
        fn connect(&mut self, address: &Address) {
            self.connects.push(address.clone());
        }
        fn disconnect(&mut self, address: &Address) {
            self.disconnects.push(address.clone());
        }
        fn set_timer(&mut self, _after: Duration) {
            self.timers += 1;
        }
        fn resolve_now(&mut self) {
            self.resolve_now += 1;
        }
    }

    fn addr(port: u16) -> Address {
        Address::Socket(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn first_pass_moves_on_after_the_delay_and_on_failure() {
        let mut pf = PickFirst::default();
        let mut helper = FakeHelper::default();
        pf.update_addresses(&[addr(1), addr(2), addr(3)], &mut helper);
        assert_eq!(pf.state(), Connecting);
        assert_eq!(helper.connects, [addr(1)]);

        pf.timer_fired(&mut helper); // Happy Eyeballs: 2 starts, 1 keeps going
        assert_eq!(helper.connects, [addr(1), addr(2)]);
        pf.update_subchannel(&addr(2), TransientFailure, &mut helper);
        assert_eq!(helper.connects, [addr(1), addr(2), addr(3)]);

        pf.update_subchannel(&addr(1), Ready, &mut helper);
        assert_eq!(pf.state(), Ready);
        assert_eq!(pf.pickable(), [addr(1)]);
        assert_eq!(helper.disconnects, [addr(2), addr(3)]);
    }

    #[test]
    fn all_failed_is_sticky_transient_failure() {
        let mut pf = PickFirst::default();
        let mut helper = FakeHelper::default();
        pf.update_addresses(&[addr(1), addr(2)], &mut helper);
        pf.update_subchannel(&addr(1), TransientFailure, &mut helper);
        pf.update_subchannel(&addr(2), TransientFailure, &mut helper);
        assert_eq!(pf.state(), TransientFailure);
        assert_eq!(helper.resolve_now, 1);

        // Backoff over: reconnect, but CONNECTING does not leave TF.
        pf.update_subchannel(&addr(1), Idle, &mut helper);
        assert_eq!(helper.connects.last(), Some(&addr(1)));
        pf.update_subchannel(&addr(1), Connecting, &mut helper);
        assert_eq!(pf.state(), TransientFailure);
        pf.update_subchannel(&addr(1), Ready, &mut helper);
        assert_eq!(pf.state(), Ready);
    }

    #[test]
    fn update_keeping_the_ready_address_changes_nothing() {
        let mut pf = PickFirst::default();
        let mut helper = FakeHelper::default();
        pf.update_addresses(&[addr(1), addr(2)], &mut helper);
        pf.update_subchannel(&addr(1), Ready, &mut helper);
        helper.states.insert(addr(1), Ready);
        let connects = helper.connects.len();
        pf.update_addresses(&[addr(3), addr(1)], &mut helper);
        assert_eq!(pf.state(), Ready);
        assert_eq!(pf.pickable(), [addr(1)]);
        assert_eq!(helper.connects.len(), connects);
    }

    #[test]
    fn lost_connection_goes_idle_and_a_request_restarts_from_the_first() {
        let mut pf = PickFirst::default();
        let mut helper = FakeHelper::default();
        pf.update_addresses(&[addr(1), addr(2)], &mut helper);
        pf.update_subchannel(&addr(2), Ready, &mut helper);
        pf.update_subchannel(&addr(2), Idle, &mut helper);
        assert_eq!(pf.state(), Idle);
        assert!(pf.pickable().is_empty());
        helper.connects.clear();
        pf.exit_idle(&mut helper);
        assert_eq!(pf.state(), Connecting);
        assert_eq!(helper.connects, [addr(1)]);
    }

    #[test]
    fn empty_list_is_transient_failure() {
        let mut pf = PickFirst::default();
        let mut helper = FakeHelper::default();
        pf.update_addresses(&[], &mut helper);
        assert_eq!(pf.state(), TransientFailure);
    }
}
