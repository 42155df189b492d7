//! Per-endpoint wakers feeding a queue of endpoints to poll: an endpoint is
//! polled when it woke, never because another did.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

use futures::task::AtomicWaker;

/// Indices of the endpoints that woke, and the balancer's task to wake.
#[derive(Debug, Default)]
pub(crate) struct Woken {
    indices: Mutex<Vec<u32>>,
    /// True while `indices` may be non-empty, so that an idle balancer checks
    /// an atomic instead of taking the lock.
    pending: AtomicBool,
    /// A pick from a [`PickHandle`](super::PickHandle) queued: the policy
    /// hears of it (exit idle, `pick_queued`) on the balancer's task.
    pick_queued: AtomicBool,
    task: AtomicWaker,
}

impl Woken {
    pub(crate) fn register(&self, waker: &Waker) {
        self.task.register(waker);
    }

    /// A handle's pick queued: wakes the balancer's task, once until it looks.
    pub(crate) fn pick_queued(&self) {
        if !self.pick_queued.swap(true, Ordering::AcqRel) {
            self.task.wake();
        }
    }

    /// True if a handle's pick queued since the last call.
    pub(crate) fn take_pick_queued(&self) -> bool {
        self.pick_queued.load(Ordering::Acquire) && self.pick_queued.swap(false, Ordering::AcqRel)
    }

    /// Moves the woken indices into `into` (cleared first). The lock is held
    /// for a swap only.
    pub(crate) fn take(&self, into: &mut Vec<u32>) {
        into.clear();
        if !self.pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut indices = self.indices.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *indices, into);
    }
}

/// The waker an endpoint is polled with.
#[derive(Debug)]
pub(crate) struct EndpointWaker {
    index: u32,
    /// True while the index is in the queue, so that a busy endpoint is
    /// queued once however often it wakes.
    queued: AtomicBool,
    woken: Arc<Woken>,
}

impl EndpointWaker {
    pub(crate) fn new(index: u32, woken: Arc<Woken>) -> Arc<Self> {
        Arc::new(EndpointWaker {
            index,
            queued: AtomicBool::new(false),
            woken,
        })
    }

    /// Called before the endpoint is polled, so that a wake during the poll
    /// queues it again.
    pub(crate) fn unqueue(&self) {
        self.queued.store(false, Ordering::Release);
    }
}

impl Wake for EndpointWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.woken
                .indices
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.index);
            self.woken.pending.store(true, Ordering::Release);
            self.woken.task.wake();
        }
    }
}
