//! The fallback rules, on tokio's paused clock.

use std::time::Duration;

use futures::StreamExt;
use grpc_lb_core::{Connectivity, ConnectivityState};
use grpc_lb_resolve::{Endpoint, Update, UpdateStream};
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use super::*;
use crate::balancer::{BalancerStatus, ServerList};
use crate::proto;

const FALLBACK: Duration = Duration::from_secs(10);

struct Harness {
    status: watch::Sender<BalancerStatus>,
    resolved: watch::Sender<Resolved>,
    backends: watch::Sender<Option<watch::Receiver<Connectivity>>>,
    backend_state: watch::Sender<Connectivity>,
    active: watch::Receiver<Option<ServerList>>,
    mode: watch::Receiver<ModeStatus>,
    updates: UpdateStream,
}

fn harness() -> Harness {
    let (status, status_rx) = watch::channel(BalancerStatus::default());
    let fallback = Endpoint::new("127.0.0.1:7000".parse::<std::net::SocketAddr>().unwrap());
    let (resolved, resolved_rx) = watch::channel(Resolved {
        balancers: Arc::from([]),
        backends: Arc::from([fallback]),
        resolved: true,
    });
    let (backends, backends_rx) = watch::channel(None);
    let (backend_state, _) = watch::channel(Connectivity::new(ConnectivityState::Connecting));
    let active = Arc::new(watch::channel(None).0);
    let mode = Arc::new(watch::channel(ModeStatus::default()).0);
    let machine = ModeMachine::new(
        status_rx,
        resolved_rx,
        backends_rx,
        active.clone(),
        mode.clone(),
        FALLBACK,
    );
    Harness {
        status,
        resolved,
        backends,
        backend_state,
        active: active.subscribe(),
        mode: mode.subscribe(),
        updates: machine.into_updates(),
    }
}

fn list(ports: &[u16]) -> ServerList {
    let servers = ports
        .iter()
        .map(|port| proto::Server {
            ip_address: vec![127, 0, 0, 1],
            port: (*port).into(),
            load_balance_token: format!("tok-{port}"),
            drop: false,
        })
        .chain([proto::Server {
            load_balance_token: "lb".into(),
            drop: true,
            ..proto::Server::default()
        }])
        .collect();
    ServerList::from_proto(&proto::ServerList { servers })
}

fn send_list(harness: &Harness, ports: &[u16]) {
    harness.status.send_modify(|s| {
        s.connected = true;
        s.server_list = Some(list(ports));
        s.server_lists += 1;
    });
}

fn addresses(update: &Update) -> Vec<(String, Option<String>)> {
    let Update::Reset(endpoints) = update else {
        panic!("not a Reset: {update:?}");
    };
    endpoints
        .iter()
        .map(|e| {
            (
                e.address.to_string(),
                e.attributes.metadata.get(crate::LB_TOKEN_KEY).cloned(),
            )
        })
        .collect()
}

async fn next(harness: &mut Harness) -> Update {
    timeout(Duration::from_secs(3600), harness.updates.next())
        .await
        .expect("an update")
        .unwrap()
        .unwrap()
}

/// No update for an hour of paused time.
async fn quiet(harness: &mut Harness) {
    assert!(timeout(Duration::from_secs(3600), harness.updates.next())
        .await
        .is_err());
}

fn fallback_only() -> Vec<(String, Option<String>)> {
    vec![("127.0.0.1:7000".to_owned(), None)]
}

#[tokio::test(start_paused = true)]
async fn without_a_list_the_fallback_starts_at_the_timeout() {
    let mut harness = harness();
    let start = Instant::now();
    let update = next(&mut harness).await;
    assert_eq!(start.elapsed(), FALLBACK);
    assert_eq!(addresses(&update), fallback_only());
    assert_eq!(harness.mode.borrow().mode, Mode::Fallback);
    assert_eq!(harness.mode.borrow().fallbacks, 1);
    assert_eq!(*harness.active.borrow(), None, "no drops in fallback");

    // New fallback backends are followed while in fallback.
    let other = Endpoint::new("127.0.0.1:7001".parse::<std::net::SocketAddr>().unwrap());
    harness
        .resolved
        .send_modify(|r| r.backends = Arc::from([other]));
    assert_eq!(
        addresses(&next(&mut harness).await),
        [("127.0.0.1:7001".to_owned(), None)]
    );

    // A list ends it.
    send_list(&harness, &[8000]);
    assert_eq!(
        addresses(&next(&mut harness).await),
        [("127.0.0.1:8000".to_owned(), Some("tok-8000".to_owned()))]
    );
    assert_eq!(harness.mode.borrow().mode, Mode::Balancer);
    assert!(harness.active.borrow().is_some());
}

#[tokio::test(start_paused = true)]
async fn a_list_before_the_timeout_means_no_fallback_timer() {
    let mut harness = harness();
    send_list(&harness, &[8000, 8001, 8000]);
    assert_eq!(
        addresses(&next(&mut harness).await),
        [
            ("127.0.0.1:8000".to_owned(), Some("tok-8000".to_owned())),
            ("127.0.0.1:8001".to_owned(), Some("tok-8001".to_owned())),
        ],
        "each address once, in order"
    );
    quiet(&mut harness).await;
    assert_eq!(harness.mode.borrow().fallbacks, 0);
}

#[tokio::test(start_paused = true)]
async fn a_lost_balancer_falls_back_only_once_no_backend_is_ready() {
    let mut harness = harness();
    harness
        .backends
        .send_replace(Some(harness.backend_state.subscribe()));
    send_list(&harness, &[8000]);
    next(&mut harness).await;
    harness
        .backend_state
        .send_replace(Connectivity::new(ConnectivityState::Ready));
    harness.status.send_modify(|s| {
        s.connected = false;
        s.streams_lost += 1;
    });
    quiet(&mut harness).await;
    assert_eq!(harness.mode.borrow().mode, Mode::Balancer);

    harness
        .backend_state
        .send_replace(Connectivity::new(ConnectivityState::TransientFailure));
    assert_eq!(addresses(&next(&mut harness).await), fallback_only());
    assert_eq!(harness.mode.borrow().mode, Mode::Fallback);
}

#[tokio::test(start_paused = true)]
async fn without_a_backend_watch_a_lost_balancer_keeps_its_list() {
    let mut harness = harness();
    send_list(&harness, &[8000]);
    next(&mut harness).await;
    harness.status.send_modify(|s| {
        s.connected = false;
        s.streams_lost += 1;
    });
    quiet(&mut harness).await;
    assert_eq!(harness.mode.borrow().mode, Mode::Balancer);
}

#[tokio::test(start_paused = true)]
async fn a_stream_lost_before_any_list_falls_back_at_once() {
    let mut harness = harness();
    // A stream opened and lost between two looks: the loss is still seen.
    harness.status.send_modify(|s| s.connected = true);
    let start = Instant::now();
    harness.status.send_modify(|s| {
        s.connected = false;
        s.streams_lost += 1;
    });
    let update = next(&mut harness).await;
    assert!(start.elapsed() < FALLBACK);
    assert_eq!(addresses(&update), fallback_only());
}

#[tokio::test(start_paused = true)]
async fn a_fallback_response_then_a_list() {
    let mut harness = harness();
    send_list(&harness, &[8000]);
    next(&mut harness).await;
    harness.status.send_modify(|s| {
        s.fallback_responses += 1;
        s.server_list = None;
    });
    assert_eq!(addresses(&next(&mut harness).await), fallback_only());
    assert_eq!(*harness.active.borrow(), None);
    send_list(&harness, &[8000]);
    assert_eq!(
        addresses(&next(&mut harness).await),
        [("127.0.0.1:8000".to_owned(), Some("tok-8000".to_owned()))]
    );
    assert_eq!(harness.mode.borrow().lists_used, 2);
}
