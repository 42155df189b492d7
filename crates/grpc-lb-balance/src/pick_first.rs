use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
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
/// Follows gRFC A62, A61 and grpc-go's `balancer/pickfirst`:
/// - the list is de-duplicated, shuffled with `shuffle_address_list` (A62),
///   then IPv6 and IPv4 addresses are interleaved, starting with the first
///   address's family (A61, RFC 8305 §4); otherwise the resolver's order is
///   kept;
/// - a first pass tries the addresses in that order, starting the next one
///   after [`CONNECTION_DELAY`] without cancelling the earlier attempt (A61
///   Happy Eyeballs), or at once when the current one fails; the first READY
///   wins and the others are let go (what they report afterwards, a second
///   READY of the same moment included, is ignored);
/// - when every address has failed once the channel is TRANSIENT_FAILURE and
///   stays so (sticky) until a connection succeeds: every subchannel whose
///   backoff has ended is connected at once, and each other one as its
///   backoff ends; re-resolution is asked for;
/// - an address update that keeps the READY address changes nothing; one
///   that comes while IDLE connects nothing; a first list, or one after an
///   empty list, is CONNECTING;
/// - losing the connection makes the channel IDLE; the next request starts a
///   new first pass from the first address.
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
    /// The list in the order the first pass tries it: de-duplicated, shuffled
    /// when asked, IPv6 and IPv4 interleaved (A61).
    addresses: Vec<Address>,
    /// What pick_first knows of each listed address's subchannel.
    subchannels: HashMap<Address, Tracked>,
    selected: Option<Address>,
    state: ConnectivityState,
    first_pass: bool,
    /// The address of the first pass being tried (an index into
    /// `addresses`); `addresses.len()` once every address was started.
    current: usize,
    /// The `current` the Happy Eyeballs timer was set for; a timer set for an
    /// address the pass has since left behind is ignored when it fires.
    timer_for: Option<usize>,
    /// Failures after the first pass, modulo the address count (grpc-go
    /// `numTF`): TRANSIENT_FAILURE is re-reported, with re-resolution, each
    /// time it wraps.
    failures: usize,
    pick: Arc<dyn Pick>,
}

/// pick_first's view of one subchannel (grpc-go's `scData`).
#[derive(Debug, Clone, Copy)]
struct Tracked {
    /// The subchannel's last reported state.
    state: ConnectivityState,
    /// It failed during the current first pass.
    failed: bool,
    /// Whether pick_first is using it. Once another address wins, or the
    /// connection is lost, the others are let go (grpc-go shuts them down),
    /// and what they report, a READY from the same batch included, is stale
    /// until a new first pass takes them up again.
    active: bool,
}

impl PickFirst {
    /// pick_first, shuffling each new address list when `shuffle_address_list`.
    pub fn new(shuffle_address_list: bool) -> Self {
        PickFirst {
            shuffle: shuffle_address_list,
            addresses: Vec::new(),
            subchannels: HashMap::new(),
            selected: None,
            state: ConnectivityState::Idle,
            first_pass: false,
            current: 0,
            timer_for: None,
            failures: 0,
            pick: Arc::new(SingleReady),
        }
    }

    /// Starts a pass from the first address (grpc-go `startFirstPassLocked`).
    /// The state is the caller's to set: CONNECTING, or TRANSIENT_FAILURE
    /// kept (sticky, A62).
    fn start_first_pass(&mut self, helper: &mut dyn Helper) {
        self.first_pass = true;
        self.failures = 0;
        self.current = 0;
        for tracked in self.subchannels.values_mut() {
            tracked.failed = false;
            tracked.active = true;
        }
        self.request_connection(helper);
    }

    /// Connects the current address of the pass, or moves past those still
    /// backing off from an earlier pass (grpc-go `requestConnectionLocked`).
    fn request_connection(&mut self, helper: &mut dyn Helper) {
        self.timer_for = None;
        while let Some(address) = self.addresses.get(self.current) {
            let Some(tracked) = self.subchannels.get_mut(address) else {
                self.current += 1;
                continue;
            };
            match tracked.state {
                ConnectivityState::Idle => {
                    helper.connect(address);
                    self.schedule_next(helper);
                    return;
                }
                ConnectivityState::Connecting => {
                    self.schedule_next(helper);
                    return;
                }
                ConnectivityState::Ready => {
                    let address = address.clone();
                    self.select(&address, helper);
                    return;
                }
                ConnectivityState::TransientFailure | ConnectivityState::Shutdown => {
                    tracked.failed = true;
                    self.current += 1;
                }
            }
        }
        self.end_first_pass_if_possible(helper);
    }

    /// Happy Eyeballs: the next address starts after [`CONNECTION_DELAY`]
    /// unless this one settles first.
    fn schedule_next(&mut self, helper: &mut dyn Helper) {
        if self.current + 1 < self.addresses.len() {
            self.timer_for = Some(self.current);
            helper.set_timer(CONNECTION_DELAY);
        }
    }

    /// Ends the first pass once every address was started and has failed:
    /// TRANSIENT_FAILURE, re-resolution, and every subchannel whose backoff
    /// is already over is connected again (grpc-go
    /// `endFirstPassIfPossibleLocked`); the others are as their backoff ends.
    fn end_first_pass_if_possible(&mut self, helper: &mut dyn Helper) {
        if !self.first_pass
            || self.current < self.addresses.len()
            || self.subchannels.values().any(|tracked| !tracked.failed)
        {
            return;
        }
        self.first_pass = false;
        self.timer_for = None;
        self.state = ConnectivityState::TransientFailure;
        helper.resolve_now();
        for address in &self.addresses {
            if self.subchannels[address].state == ConnectivityState::Idle {
                helper.connect(address);
            }
        }
    }

    /// The first READY wins: every other subchannel is let go.
    fn select(&mut self, address: &Address, helper: &mut dyn Helper) {
        self.selected = Some(address.clone());
        self.state = ConnectivityState::Ready;
        self.first_pass = false;
        self.timer_for = None;
        self.let_go_of_all_but(address, helper);
    }

    fn let_go_of_all_but(&mut self, keep: &Address, helper: &mut dyn Helper) {
        for other in &self.addresses {
            if other == keep {
                continue;
            }
            if let Some(tracked) = self.subchannels.get_mut(other) {
                if tracked.active {
                    tracked.active = false;
                    helper.disconnect(other);
                }
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
            .filter(|a| seen.insert(*a))
            .cloned()
            .collect();
        if self.shuffle {
            list.shuffle(&mut rand::rng());
        }
        let list = interleave_families(list);

        let had_addresses = !self.addresses.is_empty();
        let kept_ready = self.selected.as_ref().filter(|selected| {
            self.subchannels
                .get(*selected)
                .is_some_and(|t| t.state == ConnectivityState::Ready)
        });
        let was_ready = kept_ready.is_some();
        let keep = kept_ready
            .filter(|selected| list.contains(selected))
            .cloned();

        // Reconcile what is known with the new list: addresses gone are
        // forgotten, new ones start as their subchannel is, not yet used.
        let listed: HashSet<&Address> = list.iter().collect();
        self.subchannels
            .retain(|address, _| listed.contains(address));
        for address in &list {
            self.subchannels
                .entry(address.clone())
                .or_insert_with(|| Tracked {
                    state: helper.state(address).unwrap_or(ConnectivityState::Idle),
                    failed: false,
                    active: false,
                });
        }
        self.addresses = list;

        // The READY address is still listed: keep it, change nothing.
        if keep.is_some() {
            return;
        }
        self.selected = None;
        if self.addresses.is_empty() {
            self.first_pass = false;
            self.timer_for = None;
            self.state = ConnectivityState::TransientFailure;
            return;
        }
        // grpc-go `UpdateClientConnState`: a first list, a list after an empty
        // one (whose TRANSIENT_FAILURE is no connection failure, so not
        // sticky), or a list that drops the READY address, or one that comes
        // while connecting, connects from the top, CONNECTING. In sticky
        // TRANSIENT_FAILURE a new pass starts and the state stays. While
        // IDLE, nothing connects until a request asks (`exit_idle`).
        if was_ready || self.state == ConnectivityState::Connecting || !had_addresses {
            self.state = ConnectivityState::Connecting;
            self.start_first_pass(helper);
        } else if self.state == ConnectivityState::TransientFailure {
            self.start_first_pass(helper);
        }
    }

    fn update_subchannel(
        &mut self,
        address: &Address,
        state: ConnectivityState,
        helper: &mut dyn Helper,
    ) {
        let Some(tracked) = self.subchannels.get_mut(address) else {
            return;
        };
        tracked.state = state;
        if !tracked.active || state == ConnectivityState::Shutdown {
            return;
        }
        if state == ConnectivityState::TransientFailure {
            tracked.failed = true;
        }
        if state == ConnectivityState::Ready {
            self.select(address, helper);
            return;
        }
        if self.selected.as_ref() == Some(address) {
            // The connection was lost: IDLE, and the next request starts a
            // new pass from the first address.
            self.selected = None;
            self.state = ConnectivityState::Idle;
            self.current = 0;
            self.let_go_of_all_but(address, helper);
            return;
        }
        if self.state == ConnectivityState::Idle {
            // Nothing is wanted until a request asks; only a READY (above,
            // from a subchannel that reconnects by itself) is taken.
            return;
        }
        if self.first_pass {
            match state {
                // Sticky: TRANSIENT_FAILURE stays until READY (A62).
                ConnectivityState::Connecting
                    if self.state != ConnectivityState::TransientFailure =>
                {
                    self.state = ConnectivityState::Connecting;
                }
                ConnectivityState::TransientFailure => {
                    // The address being tried failed: on to the next at once.
                    // An earlier one's failure (Happy Eyeballs) moves nothing.
                    if self.addresses.get(self.current) == Some(address) {
                        self.current += 1;
                        self.request_connection(helper);
                    } else {
                        self.end_first_pass_if_possible(helper);
                    }
                }
                // A backoff that ends during the pass: connected when the
                // pass ends.
                _ => {}
            }
            return;
        }
        // After the first pass: keep reconnecting every subchannel as its
        // backoff ends, staying TRANSIENT_FAILURE until one is READY.
        match state {
            ConnectivityState::TransientFailure => {
                self.failures = (self.failures + 1) % self.addresses.len().max(1);
                if self.failures == 0 {
                    self.state = ConnectivityState::TransientFailure;
                    helper.resolve_now();
                }
            }
            ConnectivityState::Idle => helper.connect(address),
            _ => {}
        }
    }

    fn replace_subchannel(
        &mut self,
        address: &Address,
        state: ConnectivityState,
        helper: &mut dyn Helper,
    ) {
        let Some(tracked) = self.subchannels.get_mut(address) else {
            return;
        };
        tracked.state = state;
        tracked.failed = state == ConnectivityState::TransientFailure;
        if self.selected.as_ref() == Some(address) {
            // The connection in use went with the old subchannel: connect
            // again from the top, as grpc-go does for a list without the
            // READY address.
            self.selected = None;
            self.state = ConnectivityState::Connecting;
            self.start_first_pass(helper);
            return;
        }
        let started = self
            .addresses
            .iter()
            .position(|a| a == address)
            .is_some_and(|index| index <= self.current);
        if self.first_pass && tracked.active && started {
            // The pass had started the old one; the new one takes its place.
            if state == ConnectivityState::Idle {
                helper.connect(address);
            }
        }
    }

    fn timer_fired(&mut self, helper: &mut dyn Helper) {
        if self.first_pass && self.timer_for == Some(self.current) {
            // Happy Eyeballs: the next address, without giving up this one.
            self.current += 1;
            self.request_connection(helper);
        }
    }

    fn exit_idle(&mut self, helper: &mut dyn Helper) {
        if self.state == ConnectivityState::Idle && !self.addresses.is_empty() {
            self.state = ConnectivityState::Connecting;
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

/// An address's family for A61's interleaving; an IPv4-mapped IPv6 address
/// counts as IPv4, as in grpc-go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
    Other,
}

fn family(address: &Address) -> Family {
    match address.as_socket() {
        Some(SocketAddr::V4(_)) => Family::V4,
        Some(SocketAddr::V6(v6)) if v6.ip().to_ipv4_mapped().is_some() => Family::V4,
        Some(SocketAddr::V6(_)) => Family::V6,
        None => Family::Other,
    }
}

/// gRFC A61 (RFC 8305 §4): alternates address families, starting with the
/// family of the first address and keeping each family's own order (grpc-go
/// `interleaveAddresses`).
fn interleave_families(addresses: Vec<Address>) -> Vec<Address> {
    let mut order: Vec<Family> = Vec::new();
    let mut by_family: Vec<std::collections::VecDeque<Address>> = Vec::new();
    for address in addresses {
        let family = family(&address);
        let slot = match order.iter().position(|f| *f == family) {
            Some(slot) => slot,
            None => {
                order.push(family);
                by_family.push(Default::default());
                order.len() - 1
            }
        };
        by_family[slot].push_back(address);
    }
    if by_family.len() < 2 {
        return by_family.pop().map(Vec::from).unwrap_or_default();
    }
    let total = by_family.iter().map(|queue| queue.len()).sum();
    let mut interleaved = Vec::with_capacity(total);
    while interleaved.len() < total {
        for queue in &mut by_family {
            if let Some(address) = queue.pop_front() {
                interleaved.push(address);
            }
        }
    }
    interleaved
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

    // Issue 13, defect 1: an address whose backoff ended while the first
    // pass was still trying the others was never connected again. grpc-go's
    // endFirstPassIfPossibleLocked connects every IDLE subchannel.
    #[test]
    fn pick_first_retries_addresses_whose_backoff_ended_during_the_first_pass() {
        let (a, b) = (addr(1), addr(2));
        let mut pf = PickFirst::default();
        let mut helper = FakeHelper::default();
        pf.update_addresses(&[a.clone(), b.clone()], &mut helper);
        pf.update_subchannel(&a, Connecting, &mut helper);
        pf.update_subchannel(&a, TransientFailure, &mut helper); // refused
        pf.update_subchannel(&b, Connecting, &mut helper); // never answers
        pf.update_subchannel(&a, Idle, &mut helper); // a's backoff is over
        assert_eq!(
            helper.connects,
            [a.clone(), b.clone()],
            "not during the pass"
        );
        assert_eq!(pf.state(), Connecting);
        pf.update_subchannel(&b, TransientFailure, &mut helper); // b's timeout
        assert_eq!(pf.state(), TransientFailure);
        assert_eq!(helper.connects, [a.clone(), b.clone(), a.clone()]);
        // And each as its backoff ends, for as long as it takes.
        pf.update_subchannel(&b, Idle, &mut helper);
        assert_eq!(helper.connects.last(), Some(&b));
        pf.update_subchannel(&a, Connecting, &mut helper);
        pf.update_subchannel(&a, Ready, &mut helper);
        assert_eq!(pf.state(), Ready);
        assert_eq!(pf.pickable(), [a]);
    }

    // Issue 13, defect 4: grpc-go reports CONNECTING for a good list after an
    // empty one (the empty list's TRANSIENT_FAILURE is not sticky).
    #[test]
    fn pick_first_good_list_after_an_empty_one_is_connecting() {
        let mut pf = PickFirst::default();
        let mut helper = FakeHelper::default();
        pf.update_addresses(&[addr(1)], &mut helper);
        pf.update_subchannel(&addr(1), Ready, &mut helper);
        pf.update_addresses(&[], &mut helper);
        assert_eq!(pf.state(), TransientFailure);
        helper.connects.clear();
        pf.update_addresses(&[addr(2)], &mut helper);
        assert_eq!(pf.state(), Connecting);
        assert_eq!(helper.connects, [addr(2)]);
    }

    // Issue 13, defect 4: a new list while IDLE connects nothing (grpc-go
    // stays IDLE until a pick asks).
    #[test]
    fn pick_first_new_list_while_idle_stays_idle() {
        let mut pf = PickFirst::default();
        let mut helper = FakeHelper::default();
        pf.update_addresses(&[addr(1)], &mut helper);
        pf.update_subchannel(&addr(1), Ready, &mut helper);
        pf.update_subchannel(&addr(1), Idle, &mut helper);
        assert_eq!(pf.state(), Idle);
        helper.connects.clear();
        pf.update_addresses(&[addr(2), addr(3)], &mut helper);
        assert_eq!(pf.state(), Idle);
        assert!(helper.connects.is_empty(), "{:?}", helper.connects);
        pf.exit_idle(&mut helper);
        assert_eq!(pf.state(), Connecting);
        assert_eq!(helper.connects, [addr(2)]);
    }

    // Issue 13, defect 4: two Happy Eyeballs attempts that both succeed and
    // are reported in one batch; the first READY wins, the second (stale: it
    // was let go) changes nothing.
    #[test]
    fn pick_first_two_happy_eyeballs_readies_in_one_batch_keep_the_first() {
        let (a, b) = (addr(1), addr(2));
        let mut pf = PickFirst::default();
        let mut helper = FakeHelper::default();
        pf.update_addresses(&[a.clone(), b.clone()], &mut helper);
        pf.timer_fired(&mut helper);
        assert_eq!(helper.connects, [a.clone(), b.clone()]);
        pf.update_subchannel(&a, Ready, &mut helper);
        pf.update_subchannel(&b, Ready, &mut helper);
        assert_eq!(pf.state(), Ready);
        assert_eq!(pf.pickable(), std::slice::from_ref(&a));
        assert_eq!(
            helper.disconnects,
            std::slice::from_ref(&b),
            "a is never torn down"
        );
        // b's disconnect is reported later; still nothing moves.
        pf.update_subchannel(&b, Idle, &mut helper);
        assert_eq!(pf.pickable(), [a]);
        assert_eq!(helper.connects.len(), 2);
    }

    // Issue 13, defect 4: gRFC A61's interleaving of IPv6 and IPv4 addresses
    // (RFC 8305 §4), starting with the first address's family.
    #[test]
    fn pick_first_interleaves_ipv6_and_ipv4_addresses() {
        let v6 = |port| Address::Socket(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port)));
        let mapped = Address::Socket("[::ffff:10.0.0.1]:9".parse().unwrap());
        let unix = Address::Unix("/tmp/s".into());
        let list = [
            v6(1),
            v6(2),
            v6(3),
            addr(4),
            addr(5),
            mapped.clone(),
            unix.clone(),
        ];
        assert_eq!(
            interleave_families(list.to_vec()),
            [v6(1), addr(4), unix, v6(2), addr(5), v6(3), mapped]
        );
        let mut pf = PickFirst::default();
        let mut helper = FakeHelper::default();
        pf.update_addresses(&[addr(1), addr(2), v6(3)], &mut helper);
        pf.update_subchannel(&addr(1), TransientFailure, &mut helper);
        assert_eq!(helper.connects, [addr(1), v6(3)]);
    }

    // Issue 13, defect 2: the endpoint in use is inserted again with new
    // attributes, so its subchannel (and connection) is a new, IDLE one.
    #[test]
    fn pick_first_replaced_ready_endpoint_connects_again() {
        let mut pf = PickFirst::default();
        let mut helper = FakeHelper::default();
        pf.update_addresses(&[addr(1), addr(2)], &mut helper);
        pf.update_subchannel(&addr(1), Ready, &mut helper);
        helper.connects.clear();
        pf.replace_subchannel(&addr(1), Idle, &mut helper);
        assert_eq!(pf.state(), Connecting);
        assert!(pf.pickable().is_empty());
        assert_eq!(helper.connects, [addr(1)]);
        pf.update_subchannel(&addr(1), Ready, &mut helper);
        assert_eq!(pf.pickable(), [addr(1)]);
    }

    #[test]
    fn stale_happy_eyeballs_timer_is_ignored() {
        let mut pf = PickFirst::default();
        let mut helper = FakeHelper::default();
        pf.update_addresses(&[addr(1), addr(2), addr(3)], &mut helper);
        pf.update_subchannel(&addr(1), TransientFailure, &mut helper);
        pf.update_subchannel(&addr(2), TransientFailure, &mut helper);
        assert_eq!(helper.connects, [addr(1), addr(2), addr(3)]);
        // The timer set for addr(2) fires after addr(3) was started.
        pf.timer_fired(&mut helper);
        pf.update_subchannel(&addr(3), TransientFailure, &mut helper);
        assert_eq!(pf.state(), TransientFailure);
    }

    #[test]
    fn empty_list_is_transient_failure() {
        let mut pf = PickFirst::default();
        let mut helper = FakeHelper::default();
        pf.update_addresses(&[], &mut helper);
        assert_eq!(pf.state(), TransientFailure);
    }
}
