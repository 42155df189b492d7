//! The policies' timers: one `Sleep` for the earliest, O(log n) per timer.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::tree::TimerId;

#[derive(Debug, Default)]
pub(crate) struct Timers {
    by_deadline: BTreeSet<(Instant, u64)>,
    deadlines: HashMap<u64, Instant>,
    next_id: u64,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timers {
    pub(crate) fn set(&mut self, after: Duration) -> TimerId {
        self.next_id += 1;
        let id = self.next_id;
        let deadline = Instant::now() + after;
        self.by_deadline.insert((deadline, id));
        self.deadlines.insert(id, deadline);
        TimerId::from_raw(id)
    }

    pub(crate) fn cancel(&mut self, timer: TimerId) {
        let id = timer_raw(timer);
        if let Some(deadline) = self.deadlines.remove(&id) {
            self.by_deadline.remove(&(deadline, id));
        }
    }

    /// The next timer that is due, if any; otherwise arms the sleep for the
    /// earliest so that `cx` is woken then.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<TimerId> {
        let &(deadline, id) = self.by_deadline.first()?;
        if deadline <= Instant::now() {
            self.by_deadline.pop_first();
            self.deadlines.remove(&id);
            return Some(TimerId::from_raw(id));
        }
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        if sleep.as_mut().poll(cx).is_ready() {
            // Due between the check and the poll: wake at once.
            cx.waker().wake_by_ref();
        }
        None
    }
}

fn timer_raw(timer: TimerId) -> u64 {
    timer.raw()
}
