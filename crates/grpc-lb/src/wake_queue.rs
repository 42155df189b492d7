//! Which subchannels the worker must look at. Each subchannel is driven with
//! a waker of its own; waking it (its connection attempt ended, its backoff
//! timer fired, its connection closed, a handle asked it to connect, its
//! health watch answered) queues that one subchannel, once, and wakes the
//! worker, which then drives only the queued ones. So a state change costs the
//! worker the same whatever the endpoint count, and each subchannel's changes
//! reach the policy in the order they happened.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Wake, Waker};

use futures::task::AtomicWaker;
use grpc_lb_resolve::Address;

/// The subchannels woken since the worker last looked.
#[derive(Debug, Default)]
pub(crate) struct WakeQueue {
    woken: Mutex<Vec<Arc<SubchannelWake>>>,
    worker: AtomicWaker,
}

impl WakeQueue {
    pub(crate) fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The wake of a new subchannel for `address`.
    pub(crate) fn entry(self: &Arc<Self>, address: Address) -> Arc<SubchannelWake> {
        Arc::new(SubchannelWake {
            address,
            queued: AtomicBool::new(false),
            queue: Arc::downgrade(self),
        })
    }

    /// Wakes `waker` (the worker's) whenever a subchannel is queued.
    pub(crate) fn register(&self, waker: &Waker) {
        self.worker.register(waker);
    }

    /// Moves the queued subchannels into `into` (empty), oldest first,
    /// reusing its allocation.
    pub(crate) fn take_into(&self, into: &mut Vec<Arc<SubchannelWake>>) {
        let mut woken = self.woken.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut *woken, into);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.woken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

/// One subchannel's wake: queues it at most once until the worker drives it.
#[derive(Debug)]
pub(crate) struct SubchannelWake {
    address: Address,
    queued: AtomicBool,
    /// Weak: the queue holds the wakes it has queued.
    queue: Weak<WakeQueue>,
}

impl SubchannelWake {
    pub(crate) fn address(&self) -> &Address {
        &self.address
    }

    /// Queues the subchannel for the worker's next look.
    pub(crate) fn mark(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(queue) = self.queue.upgrade() {
            queue
                .woken
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(self.clone());
            queue.worker.wake();
        }
    }

    /// The worker is about to drive the subchannel: a wake from now on
    /// queues it again.
    pub(crate) fn start_drive(&self) {
        self.queued.store(false, Ordering::Release);
    }
}

impl Wake for SubchannelWake {
    fn wake(self: Arc<Self>) {
        self.mark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.mark();
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn a_subchannel_is_queued_once_until_driven() {
        let queue = WakeQueue::new();
        let a = queue.entry(Address::from(SocketAddr::from(([127, 0, 0, 1], 1))));
        let b = queue.entry(Address::from(SocketAddr::from(([127, 0, 0, 1], 2))));
        let waker = Waker::from(a.clone());
        waker.wake_by_ref();
        b.mark();
        waker.wake_by_ref();
        let mut woken = Vec::new();
        queue.take_into(&mut woken);
        let order: Vec<&Address> = woken.iter().map(|w| w.address()).collect();
        assert_eq!(order, [a.address(), b.address()]);
        assert!(queue.is_empty());
        a.start_drive();
        waker.wake();
        let mut again = Vec::new();
        queue.take_into(&mut again);
        assert_eq!(again.len(), 1);
        // b was not driven: still queued, not queued twice.
        b.mark();
        assert!(queue.is_empty());
    }
}
