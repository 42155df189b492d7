//! The transport's call guarantees against grpcio servers (C-core, from
//! Python): a GOAWAY takes its connection out of the picker at once, calls the
//! server never saw fail in a way transparent retry recognises, and a server's
//! MAX_CONCURRENT_STREAMS makes calls wait for a stream instead of failing.
//!
//! Each test prints its counts (`--nocapture` shows them); docs/channel.md and
//! docs/tls-and-connectors.md quote them.

mod support;

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use grpc_lb::{Channel, ConnectivityState};
use integration_tests::{ipv4_target, GreeterProcess};
use support::*;
use tokio::time::timeout;

/// What a failed call's cause says about the server having seen it, as
/// grpc-lb-retry's classifier reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    /// Never left the client (hyper canceled it, or the connection refused it
    /// while draining): transparently retryable.
    NeverSent,
    /// The server refused the stream, or its GOAWAY excluded it:
    /// transparently retryable once.
    Unprocessed,
    /// Anything else: the server may have seen it.
    Other,
}

fn failure(status: &tonic::Status) -> Failure {
    let mut next: Option<&(dyn Error + 'static)> = Some(status);
    while let Some(error) = next {
        if error.is::<grpc_lb_core::NotSent>() {
            return Failure::NeverSent;
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote())
            {
                return Failure::Unprocessed;
            }
        }
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            if hyper.is_canceled() {
                return Failure::NeverSent;
            }
        }
        next = error.source();
    }
    Failure::Other
}

/// The outcome of a load run: calls made, and the failures by kind with an
/// example message each.
#[derive(Debug, Default)]
struct Counts {
    calls: usize,
    failed: BTreeMap<Failure, (usize, String)>,
}

impl Counts {
    fn failures(&self) -> usize {
        self.failed.values().map(|(n, _)| n).sum()
    }

    fn of(&self, kind: Failure) -> usize {
        self.failed.get(&kind).map_or(0, |(n, _)| *n)
    }
}

/// `total` fail-fast SayHellos from `callers` tasks at once.
async fn load(channel: &GrpcChannel, callers: usize, total: usize) -> Counts {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (channel, next) = (channel.clone(), next.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut calls = 0;
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    calls += 1;
                    if let Err(status) = hello(&channel, false).await {
                        failures.push(status);
                    }
                }
                (calls, failures)
            })
        })
        .collect();
    let mut counts = Counts::default();
    for task in tasks {
        let (calls, failures) = task.await.unwrap();
        counts.calls += calls;
        for status in failures {
            let entry = counts
                .failed
                .entry(failure(&status))
                .or_insert_with(|| (0, format!("{status}")));
            entry.0 += 1;
        }
    }
    counts
}

fn python_server(options: &[(&str, i64)]) -> GreeterProcess {
    GreeterProcess::start_python_with_options("127.0.0.1:0", "solo", options)
}

/// grpcio limits each connection to 2 streams; 32 callers at once, each call
/// taking 5 ms in the server. grpc-js fails 0–1 of 1000 here, C-core and
/// grpc-go 1.33 more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_calls_wait_for_a_stream() {
    let server = python_server(&[
        ("grpc.max_concurrent_streams", 2),
        ("greeter.say_hello_delay_ms", 5),
    ]);
    let channel = Channel::builder(ipv4_target(std::slice::from_ref(&server)))
        .build()
        .unwrap();
    channel.connect();
    wait_for_state(&channel, ConnectivityState::Ready).await;
    let counts = load(&channel, 32, 1000).await;
    println!("max_concurrent_streams=2, 32 callers: {counts:?}");
    assert_eq!(counts.calls, 1000);
}

/// grpcio closes each connection 300 ms after it opened (GOAWAY, then 5 s of
/// grace); a pick_first channel under load moves to a new connection each
/// time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connection_age_under_load() {
    let server = python_server(&[
        ("grpc.max_connection_age_ms", 300),
        ("grpc.max_connection_age_grace_ms", 5000),
    ]);
    let channel = Channel::builder(ipv4_target(std::slice::from_ref(&server)))
        .build()
        .unwrap();
    channel.connect();
    wait_for_state(&channel, ConnectivityState::Ready).await;
    let counts = timeout(4 * LIMIT, load(&channel, 16, 20_000))
        .await
        .expect("the load ends");
    let connections: u64 = channel
        .subchannels()
        .iter()
        .map(|s| s.connect_attempts)
        .sum();
    println!("max_connection_age_ms=300, 16 callers, {connections} connections: {counts:?}");
    assert_eq!(counts.calls, 20_000);
}
