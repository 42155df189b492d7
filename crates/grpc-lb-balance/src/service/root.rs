//! The balancer's state apart from its policy, and the root policy's helper.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use grpc_lb_core::{Connectivity, ConnectivityState, ResolveNow, SharedError};
use tokio::sync::watch;

use super::handle::Publish;
use super::timers::Timers;
use super::wakers::{EndpointWaker, Woken};
use crate::tree::{
    EndpointAttributes, EndpointId, GracefulSwitch, Helper, Picker, SubchannelId, TimerId,
};

pub(super) struct Slot<S, St> {
    pub(super) id: SubchannelId,
    pub(super) service: S,
    pub(super) probe: St,
    pub(super) waker: Arc<EndpointWaker>,
    /// `waker` as a `Waker`, made once.
    pub(super) task_waker: Waker,
    pub(super) wanted: bool,
    /// The state last told to the policy.
    pub(super) reported: ConnectivityState,
    /// What [`Balance::describe_endpoints`] said about it.
    pub(super) attributes: Option<EndpointAttributes>,
}

/// Everything but the policy, so that it can be the policy's [`Helper`].
pub(super) struct Core<K, S, St> {
    pub(super) slots: Vec<Option<Slot<S, St>>>,
    pub(super) generations: Vec<u32>,
    pub(super) free: Vec<u32>,
    pub(super) by_key: HashMap<K, u32>,
    pub(super) woken: Arc<Woken>,
    /// Endpoints to poll that this task queued itself (no lock needed).
    pub(super) local: Vec<u32>,
    pub(super) batch: Vec<u32>,
    pub(super) timers: Timers,
    pub(super) state: watch::Sender<Connectivity>,
    pub(super) resolve_now: Option<ResolveNow>,
    pub(super) describe: Option<Describe<K>>,
    /// The root policy's latest picker, which `poll_ready` picks from.
    pub(super) picker: Arc<dyn Picker>,
    /// Where the picker and the endpoints' services are published for
    /// [`PickHandle`]s, once one was asked for.
    pub(super) published: Option<Box<dyn Publish<S> + Send>>,
    /// The picker or the endpoints changed since they were last published.
    pub(super) unpublished: bool,
}

/// Names an endpoint by its key, for the policies that hash or weigh them.
pub(super) type Describe<K> = Arc<dyn Fn(&K) -> EndpointAttributes + Send + Sync>;

pub(super) fn index_of(id: SubchannelId) -> u32 {
    id.raw() as u32
}

impl<K, S, St> Core<K, S, St> {
    pub(super) fn slot_mut(&mut self, id: SubchannelId) -> Option<&mut Slot<S, St>> {
        self.slots
            .get_mut(index_of(id) as usize)?
            .as_mut()
            .filter(|slot| slot.id == id)
    }

    pub(super) fn queue(&mut self, index: u32) {
        self.local.push(index);
    }

    /// Publishes the latest picker (and services) to the handles, if they
    /// changed since last time: once per batch of events, however many
    /// pickers the policy reported in it.
    pub(super) fn flush(&mut self) {
        if !std::mem::take(&mut self.unpublished) {
            return;
        }
        if let Some(published) = &mut self.published {
            published.publish(&self.picker, self.state.borrow().state);
        }
    }
}

/// The root policy and its helper, borrowed together.
pub(super) type PolicyAndHelper<'a, K, S, St> = (&'a mut GracefulSwitch, RootHelper<'a, K, S, St>);

/// The helper of the root policy. `P` is named by the caller through
/// `connect`'s probe function.
pub(super) struct RootHelper<'a, K, S, St> {
    pub(super) core: &'a mut Core<K, S, St>,
    pub(super) connect: fn(&mut S, &mut St),
    pub(super) disconnect: fn(&mut S, &mut St),
    pub(super) request_resolution: fn(&S),
}

impl<K, S, St> Helper for RootHelper<'_, K, S, St> {
    fn connect(&mut self, subchannel: SubchannelId) {
        let connect = self.connect;
        if let Some(slot) = self.core.slot_mut(subchannel) {
            slot.wanted = true;
            connect(&mut slot.service, &mut slot.probe);
            let index = index_of(subchannel);
            self.core.queue(index);
        }
    }

    fn disconnect(&mut self, subchannel: SubchannelId) {
        let disconnect = self.disconnect;
        if let Some(slot) = self.core.slot_mut(subchannel) {
            slot.wanted = false;
            disconnect(&mut slot.service, &mut slot.probe);
            let index = index_of(subchannel);
            self.core.queue(index);
        }
    }

    fn update_state(
        &mut self,
        state: ConnectivityState,
        error: Option<SharedError>,
        picker: Arc<dyn Picker>,
    ) {
        self.core.picker = picker;
        self.core.unpublished = true;
        // A new picker in the same state with the same error is no news to
        // the state's watchers.
        self.core.state.send_if_modified(|current| {
            let same_error = match (&current.last_error, &error) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if current.state == state && same_error {
                return false;
            }
            tracing::debug!(%state, "balancer state");
            *current = Connectivity {
                state,
                last_error: error,
            };
            true
        });
    }

    fn set_timer(&mut self, after: Duration) -> TimerId {
        self.core.timers.set(after)
    }

    fn cancel_timer(&mut self, timer: TimerId) {
        self.core.timers.cancel(timer)
    }

    fn endpoint_attributes(&self, endpoint: EndpointId) -> Option<EndpointAttributes> {
        let id = SubchannelId::from_raw(endpoint.raw());
        let slot = self.core.slots.get(index_of(id) as usize)?.as_ref()?;
        slot.attributes.clone().filter(|_| slot.id == id)
    }

    fn resolve_now(&mut self) {
        if let Some(signal) = &self.core.resolve_now {
            return signal.request();
        }
        // Through any subchannel: those of one resolver share its signal.
        let any = self.core.slots.iter().flatten().next();
        if let Some(slot) = any {
            (self.request_resolution)(&slot.service);
        }
    }
}

impl<K, S, St> Drop for Core<K, S, St> {
    fn drop(&mut self) {
        self.state
            .send_replace(Connectivity::new(ConnectivityState::Shutdown));
        if let Some(published) = &mut self.published {
            published.close(|| super::error::Closed::new().into());
        }
    }
}
