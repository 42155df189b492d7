//! What one HTTP/2 connection's handles, its driver task and its frame watch
//! share: whether it closed or is draining, and its stream slots.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Waker;

use futures::task::AtomicWaker;
use grpc_lb_core::SharedError;

use crate::error::GoAway;
use crate::keepalive::{Keepalive, TooManyPings};

/// Set by the task that drives the connection (closed) and by the frame watch
/// (GOAWAY, the server's stream limit); read by every handle.
#[derive(Debug)]
pub(crate) struct ConnectionState {
    closed: AtomicBool,
    cause: OnceLock<SharedError>,
    /// The first GOAWAY: from then on the connection takes no new request.
    go_away: OnceLock<Arc<GoAway>>,
    /// What the connection's errors name as the reason from then on: the
    /// GOAWAY, or the [`TooManyPings`] it caused.
    go_away_cause: OnceLock<SharedError>,
    /// The connector's keepalive and the time this connection pings with,
    /// for a `too_many_pings` GOAWAY to double.
    keepalive: Option<(Arc<Keepalive>, std::time::Duration)>,
    /// The subchannel's task: woken on close and on GOAWAY.
    watcher: AtomicWaker,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS; unlimited until it sets
    /// one (RFC 9113 §6.5.2).
    limit: AtomicUsize,
    /// Fewer streams than that, after the server refused one (see
    /// [`ConnectionState::refused`]); `usize::MAX` when not lowered.
    lowered: AtomicUsize,
    /// Counts the refusals, so that a stream knows whether it was opened
    /// under the latest lowered limit.
    refusals: AtomicUsize,
    /// Requests holding a stream slot: from `call` until the response body
    /// ends or is dropped.
    in_flight: AtomicUsize,
    /// Tasks waiting for a slot, or for the connection to stop taking
    /// requests; all woken at once.
    waiters: Mutex<Vec<Waker>>,
    has_waiters: AtomicBool,
    /// What the GOAWAYs handed to h2 so far failed: [`NO_GOAWAY`], only
    /// streams never written ([`UNWRITTEN_ONLY`]), or perhaps written ones
    /// ([`MAYBE_WRITTEN`]).
    go_aways_failed: AtomicU8,
}

const NO_GOAWAY: u8 = 0;
const UNWRITTEN_ONLY: u8 = 1;
const MAYBE_WRITTEN: u8 = 2;

impl Default for ConnectionState {
    fn default() -> Self {
        ConnectionState {
            closed: AtomicBool::new(false),
            cause: OnceLock::new(),
            go_away: OnceLock::new(),
            go_away_cause: OnceLock::new(),
            keepalive: None,
            watcher: AtomicWaker::new(),
            limit: AtomicUsize::new(usize::MAX),
            lowered: AtomicUsize::new(usize::MAX),
            refusals: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            waiters: Mutex::new(Vec::new()),
            has_waiters: AtomicBool::new(false),
            go_aways_failed: AtomicU8::new(NO_GOAWAY),
        }
    }
}

impl ConnectionState {
    /// The state of a connection that pings every `time` with `keepalive`.
    pub(crate) fn with_keepalive(keepalive: Arc<Keepalive>, time: std::time::Duration) -> Self {
        ConnectionState {
            keepalive: Some((keepalive, time)),
            ..ConnectionState::default()
        }
    }

    pub(crate) fn close(&self, cause: Option<SharedError>) {
        if let Some(cause) = cause {
            let _ = self.cause.set(cause);
        }
        self.closed.store(true, Ordering::Release);
        self.watcher.wake();
        self.wake_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn cause(&self) -> Option<SharedError> {
        self.cause.get().cloned()
    }

    /// The server sent a GOAWAY. Only the first one is kept: a later one can
    /// only lower the last stream id, which h2 applies to the streams itself.
    ///
    /// A `too_many_pings` GOAWAY doubles the keepalive time of the
    /// connector's later connections here, as it is read (grpc-go
    /// `addrConn.adjustParams`), so that the error the subchannel sees at
    /// once already says so.
    pub(crate) fn go_away(&self, go_away: GoAway) {
        let go_away = Arc::new(go_away);
        if self.go_away.set(go_away.clone()).is_err() {
            return;
        }
        let cause: SharedError = match &self.keepalive {
            Some((keepalive, used)) if go_away.is_too_many_pings() => {
                let new_time = keepalive.too_many_pings(*used);
                tracing::warn!(
                    ?used,
                    ?new_time,
                    "server sent GOAWAY too_many_pings; keepalive time raised"
                );
                Arc::new(TooManyPings::new(
                    *used,
                    new_time,
                    Box::new((*go_away).clone()),
                ))
            }
            _ => go_away,
        };
        let _ = self.go_away_cause.set(cause);
        self.watcher.wake();
        self.wake_waiters();
    }

    /// A GOAWAY is about to reach h2, which fails the streams above the
    /// last-stream-id it gets; `unwritten_only` when none of those streams
    /// had its HEADERS written (the id was at least the highest written).
    pub(crate) fn go_away_for_h2(&self, unwritten_only: bool) {
        if unwritten_only {
            let _ = self.go_aways_failed.compare_exchange(
                NO_GOAWAY,
                UNWRITTEN_ONLY,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        } else {
            self.go_aways_failed.store(MAYBE_WRITTEN, Ordering::Release);
        }
    }

    /// Every stream a GOAWAY failed on this connection so far was never
    /// written: a request failed by one never left the client (gRFC A6's
    /// unlimited transparent retry, not the once of an unprocessed one).
    pub(crate) fn go_aways_failed_unwritten_only(&self) -> bool {
        self.go_aways_failed.load(Ordering::Acquire) == UNWRITTEN_ONLY
    }

    pub(crate) fn draining(&self) -> Option<&Arc<GoAway>> {
        self.go_away.get()
    }

    /// The GOAWAY (or the `TooManyPings` it caused), once one arrived.
    pub(crate) fn draining_cause(&self) -> Option<SharedError> {
        self.go_away_cause.get().cloned()
    }

    /// Closed or draining: no new request may go out.
    pub(crate) fn is_unusable(&self) -> bool {
        self.is_closed() || self.go_away.get().is_some()
    }

    pub(crate) fn register_watcher(&self, waker: &Waker) {
        self.watcher.register(waker);
    }

    pub(crate) fn set_limit(&self, limit: u32) {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let previous = self.limit.swap(limit, Ordering::AcqRel);
        if limit > previous {
            self.wake_waiters();
        }
    }

    /// The server's limit (what it advertised).
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// The streams this connection opens at once: the server's limit, or
    /// fewer after a refusal.
    fn usable(&self) -> usize {
        self.limit().min(self.lowered.load(Ordering::Acquire))
    }

    /// The server refused a stream (RST_STREAM REFUSED_STREAM) although this
    /// connection kept to its limit: it counts streams this client already
    /// sees closed. C-core does (with `grpc.http.overload_protection`, on by
    /// default, a stream counts until its call is freed, after its
    /// trailers are written), so a stream opened the moment another ends is
    /// refused, and so is its transparent retry if it goes straight out.
    /// From now on the connection opens only as many streams as it had open
    /// besides the refused one (at least one), so that the retry waits for
    /// one of them to end; each stream opened at that level that ends well
    /// raises it by one again, back to the server's limit.
    pub(crate) fn refused(&self, others_open: usize) {
        let lowered = others_open.max(1);
        self.refusals.fetch_add(1, Ordering::AcqRel);
        self.lowered.fetch_min(lowered, Ordering::AcqRel);
        tracing::debug!(
            limit = self.limit(),
            lowered = self.usable(),
            "server refused a stream; fewer streams until one ends well"
        );
    }

    /// A stream opened after the `refusals`-th refusal ended well: the server
    /// had room for it, so there may be room for one more.
    fn ended_well(&self, refusals: usize) {
        if refusals != self.refusals.load(Ordering::Acquire) {
            return;
        }
        let raised = self
            .lowered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |lowered| {
                (lowered != usize::MAX).then(|| {
                    let raised = lowered + 1;
                    if raised >= self.limit() {
                        usize::MAX
                    } else {
                        raised
                    }
                })
            });
        if raised.is_ok() {
            self.wake_waiters();
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn has_slot(&self) -> bool {
        self.in_flight() < self.usable()
    }

    /// Takes a stream slot if one is free.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<StreamSlot> {
        let refusals = self.refusals.load(Ordering::Acquire);
        let limit = self.usable();
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current >= limit {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(StreamSlot {
                        state: self.clone(),
                        refusals,
                    })
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Wakes `waker` when a slot frees, the limit rises, or the connection
    /// closes or drains. The caller checks again after registering.
    pub(crate) fn wait(&self, waker: &Waker) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
        }
        // SeqCst with the loads in `has_slot` and `release`: a waiter that
        // registers and then finds no slot, and a release that frees one and
        // then finds no waiter, cannot both happen (a lost wake-up).
        self.has_waiters.store(true, Ordering::SeqCst);
    }

    fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.has_waiters.load(Ordering::SeqCst) {
            self.wake_waiters();
        }
    }

    /// Wakes every waiter: a new connection to the endpoint has streams.
    pub(crate) fn notify(&self) {
        self.wake_waiters();
    }

    fn wake_waiters(&self) {
        let waiters = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            self.has_waiters.store(false, Ordering::SeqCst);
            std::mem::take(&mut *waiters)
        };
        for waker in waiters {
            waker.wake();
        }
    }
}

/// One of the server's concurrent streams, held by a request until its
/// response ends; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    state: Arc<ConnectionState>,
    /// The connection's refusals when the stream was opened.
    refusals: usize,
}

impl StreamSlot {
    /// The connection this slot is on.
    pub(crate) fn connection(&self) -> &ConnectionState {
        &self.state
    }

    /// The server refused this stream: frees the slot and lowers the
    /// connection's stream count to the others still open.
    pub(crate) fn refused(self) {
        let others_open = self.state.in_flight().saturating_sub(1);
        self.state.refused(others_open);
    }

    /// The response ended to its last frame: frees the slot, and counts
    /// it toward raising a lowered stream count.
    pub(crate) fn ended_well(self) {
        self.state.ended_well(self.refusals);
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.state.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn slots_follow_the_limit_and_wake_waiters() {
        let state = Arc::new(ConnectionState::default());
        state.set_limit(2);
        let a = state.try_acquire().unwrap();
        let _b = state.try_acquire().unwrap();
        assert!(state.try_acquire().is_none());
        assert!(!state.has_slot());

        let woken = Arc::new(Count::default());
        let waker = Waker::from(woken.clone());
        state.wait(&waker);
        state.wait(&waker); // the same task once
        drop(a);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(state.in_flight(), 1);
        assert!(state.try_acquire().is_some());

        // A raised limit wakes; the GOAWAY wakes and makes it unusable.
        state.wait(&waker);
        state.set_limit(10);
        assert_eq!(woken.0.load(Ordering::SeqCst), 2);
        state.wait(&waker);
        state.go_away(GoAway::new(1, 0, Vec::new()));
        assert_eq!(woken.0.load(Ordering::SeqCst), 3);
        assert!(state.is_unusable());
        assert_eq!(state.draining().unwrap().last_stream_id(), 1);
    }

    #[test]
    fn a_refusal_lowers_the_streams_until_one_opened_after_it_ends_well() {
        let state = Arc::new(ConnectionState::default());
        state.set_limit(3);
        let before = state.try_acquire().unwrap();
        let other = state.try_acquire().unwrap();
        let refused = state.try_acquire().unwrap();
        // Refused with two others open: two at once from now on.
        refused.refused();
        assert_eq!(state.in_flight(), 2);
        assert!(!state.has_slot());
        // A stream opened before the refusal ending proves nothing...
        let woken = Arc::new(Count::default());
        let waker = Waker::from(woken.clone());
        before.ended_well();
        assert!(state.has_slot());
        let retry = state.try_acquire().unwrap();
        assert!(state.try_acquire().is_none(), "still two at once");
        // ...one opened after it does: back to the server's three.
        state.wait(&waker);
        retry.ended_well();
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        let _a = state.try_acquire().unwrap();
        let _b = state.try_acquire().unwrap();
        assert!(state.try_acquire().is_none());
        drop(other);

        // Refused with none open: one at a time, never none.
        let state = Arc::new(ConnectionState::default());
        state.set_limit(2);
        state.try_acquire().unwrap().refused();
        let only = state.try_acquire().unwrap();
        assert!(state.try_acquire().is_none());
        only.ended_well();
        assert!(state.try_acquire().is_some());
        assert!(state.try_acquire().is_some());
    }
}
