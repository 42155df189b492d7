//! The client's load report: calls counted between two `ClientStats`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::proto::{ClientStats, ClientStatsPerToken};

/// How a call to a backend of the server list ended, for the load report.
///
/// ```
/// use grpc_lb_grpclb::{CallOutcome, ClientStatsRecorder};
///
/// let stats = ClientStatsRecorder::new();
/// stats.call_started();
/// stats.call_finished(CallOutcome::FailedToSend);
/// assert_eq!(stats.take().num_calls_finished_with_client_failed_to_send, 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// The call failed before a response came back: counted in
    /// `num_calls_finished_with_client_failed_to_send`.
    FailedToSend,
    /// The backend answered (with any status): counted in
    /// `num_calls_finished_known_received`.
    KnownReceived,
}

/// Counts calls for the next `ClientStats` report; clones share the counts.
///
/// Each report takes the counts and starts them over, as the protocol says
/// (grpc-go's `toClientStats` swaps each counter with zero). The counters are
/// atomics; only a drop takes a lock, to count its token.
///
/// ```
/// use grpc_lb_grpclb::{CallOutcome, ClientStatsRecorder};
///
/// let stats = ClientStatsRecorder::new();
/// stats.call_started();
/// stats.call_finished(CallOutcome::KnownReceived);
/// stats.dropped("rate-limit");
/// let report = stats.take();
/// assert_eq!(report.num_calls_started, 2);
/// assert_eq!(report.num_calls_finished, 2);
/// assert_eq!(report.num_calls_finished_known_received, 1);
/// assert_eq!(report.calls_finished_with_drop[0].load_balance_token, "rate-limit");
/// assert_eq!(stats.take().num_calls_started, 0); // a report starts them over
/// ```
#[derive(Clone, Default)]
pub struct ClientStatsRecorder {
    inner: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    started: AtomicI64,
    finished: AtomicI64,
    failed_to_send: AtomicI64,
    known_received: AtomicI64,
    dropped: Mutex<HashMap<String, i64>>,
}

impl ClientStatsRecorder {
    /// A recorder with every count at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A call was sent to a backend of the server list.
    pub fn call_started(&self) {
        self.inner.started.fetch_add(1, Ordering::Relaxed);
    }

    /// A call counted by [`call_started`](Self::call_started) ended.
    pub fn call_finished(&self, outcome: CallOutcome) {
        let counts = &self.inner;
        match outcome {
            CallOutcome::FailedToSend => counts.failed_to_send.fetch_add(1, Ordering::Relaxed),
            CallOutcome::KnownReceived => counts.known_received.fetch_add(1, Ordering::Relaxed),
        };
        counts.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// A call was dropped by a drop entry with `token`: it counts as started
    /// and finished, and against the token.
    pub fn dropped(&self, token: &str) {
        let counts = &self.inner;
        counts.started.fetch_add(1, Ordering::Relaxed);
        {
            let mut dropped = counts.dropped.lock().unwrap_or_else(|e| e.into_inner());
            match dropped.get_mut(token) {
                Some(count) => *count += 1,
                None => {
                    dropped.insert(token.to_owned(), 1);
                }
            }
        }
        counts.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the counts since the last report (without a timestamp) and
    /// starts them over.
    pub fn take(&self) -> ClientStats {
        let counts = &self.inner;
        let dropped = {
            let mut dropped = counts.dropped.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *dropped)
        };
        let mut calls_finished_with_drop: Vec<ClientStatsPerToken> = dropped
            .into_iter()
            .map(|(load_balance_token, num_calls)| ClientStatsPerToken {
                load_balance_token,
                num_calls,
            })
            .collect();
        calls_finished_with_drop.sort_by(|a, b| a.load_balance_token.cmp(&b.load_balance_token));
        ClientStats {
            timestamp: None,
            num_calls_started: counts.started.swap(0, Ordering::Relaxed),
            num_calls_finished: counts.finished.swap(0, Ordering::Relaxed),
            num_calls_finished_with_client_failed_to_send: counts
                .failed_to_send
                .swap(0, Ordering::Relaxed),
            num_calls_finished_known_received: counts.known_received.swap(0, Ordering::Relaxed),
            calls_finished_with_drop,
        }
    }
}

/// Whether a report counts nothing (grpc-go's `isZeroStats`): two of them in a
/// row are not sent.
pub(crate) fn is_zero(stats: &ClientStats) -> bool {
    stats.calls_finished_with_drop.is_empty()
        && stats.num_calls_started == 0
        && stats.num_calls_finished == 0
        && stats.num_calls_finished_with_client_failed_to_send == 0
        && stats.num_calls_finished_known_received == 0
}

impl fmt::Debug for ClientStatsRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = &self.inner;
        f.debug_struct("ClientStatsRecorder")
            .field("started", &counts.started.load(Ordering::Relaxed))
            .field("finished", &counts.finished.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_drops_are_counted_apart() {
        let stats = ClientStatsRecorder::new();
        assert!(is_zero(&stats.take()));
        for _ in 0..3 {
            stats.call_started();
        }
        stats.call_finished(CallOutcome::FailedToSend);
        stats.call_finished(CallOutcome::KnownReceived);
        stats.dropped("b");
        stats.dropped("a");
        stats.dropped("b");
        let report = stats.take();
        assert_eq!(report.num_calls_started, 6);
        assert_eq!(report.num_calls_finished, 5);
        assert_eq!(report.num_calls_finished_with_client_failed_to_send, 1);
        assert_eq!(report.num_calls_finished_known_received, 1);
        let drops: Vec<(&str, i64)> = report
            .calls_finished_with_drop
            .iter()
            .map(|d| (d.load_balance_token.as_str(), d.num_calls))
            .collect();
        assert_eq!(drops, [("a", 1), ("b", 2)]);
        assert!(!is_zero(&report));
        assert!(is_zero(&stats.take()));
    }
}
