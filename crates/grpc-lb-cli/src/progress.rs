//! The progress bar of a `call` load: on stderr, only when stderr is a
//! terminal, so that pipes, files and tests see none; cleared at the end.

use std::io::IsTerminal as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use crate::load::{Live, Plan};

/// The bar and the task that redraws it.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub(crate) fn start(
        plan: &Plan,
        duration: Option<f64>,
        live: &Arc<Live>,
        start: Instant,
    ) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                ticker: None,
            };
        }
        // By calls, or by milliseconds of a --duration run.
        let (length, by_time) = match (plan.requests, duration) {
            (Some(n), _) => (n, false),
            (None, Some(secs)) => ((secs * 1000.0) as u64, true),
            (None, None) => (0, false),
        };
        let bar = ProgressBar::new(length);
        let template = if by_time {
            "{bar:40} {elapsed_precise} {msg}"
        } else {
            "{bar:40} {pos}/{len} calls {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        let ticker_bar = bar.clone();
        let live = live.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            // Calls per second over the last second, from ten ticks ago.
            let mut recent = std::collections::VecDeque::from([0u64]);
            loop {
                tick.tick().await;
                let done = live.done.load(Ordering::Relaxed);
                let ok = live.ok.load(Ordering::Relaxed);
                recent.push_back(done);
                if recent.len() > 11 {
                    recent.pop_front();
                }
                let span = (recent.len() - 1).max(1) as f64 / 10.0;
                let rate = (done - recent.front().copied().unwrap_or(0)) as f64 / span;
                if by_time {
                    ticker_bar.set_position(start.elapsed().as_millis() as u64);
                } else {
                    ticker_bar.set_position(done);
                }
                let failed = done - ok;
                ticker_bar.set_message(match duration {
                    Some(secs) if by_time => {
                        format!("of {secs}s: {done} calls, {failed} failed, {rate:.0}/s")
                    }
                    _ => format!("({failed} failed, {rate:.0}/s)"),
                });
            }
        });
        Progress {
            bar,
            ticker: Some(ticker),
        }
    }

    pub(crate) fn finish(self) {
        if let Some(ticker) = self.ticker {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}
