//! HTTP/1.1 through the Channel: a pool of connections per endpoint, balanced
//! and reconnected like gRPC, against axum servers on loopback.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::fast_backoff;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use grpc_lb::connect::Http1Pool;
use grpc_lb::resolve::Address;
use grpc_lb::{Channel, ConnectivityState};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tower::{Service, ServiceExt};

type RestChannel = Channel<Http1Pool<Empty<Bytes>>>;

const LIMIT: Duration = Duration::from_secs(20);

/// An axum app served over HTTP/1.1 by hyper, counting the connections it
/// accepts and the requests it is holding. Dropping it kills the server and
/// every connection it has.
struct Server {
    addr: SocketAddr,
    accepted: watch::Sender<usize>,
    holding: watch::Sender<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `GET /` answers the server's name; `GET /held` answers once `gate` lets it.
async fn serve(name: &'static str, gate: Arc<Semaphore>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = watch::Sender::new(0);
    let holding = watch::Sender::new(0);
    let held = holding.clone();
    let app = Router::new()
        .route("/", get(move || async move { name }))
        .route(
            "/held",
            get(move || {
                let gate = gate.clone();
                let held = held.clone();
                async move {
                    held.send_modify(|n| *n += 1);
                    let _ = gate.acquire().await.unwrap();
                    name
                }
            }),
        );
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            counter.send_modify(|n| *n += 1);
            let app = app.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| app.clone().call(request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Server {
        addr,
        accepted,
        holding,
        task,
    }
}

fn channel(servers: &[&Server], max: usize) -> RestChannel {
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    Channel::builder(format!("ipv4:{}", addrs.join(",")))
        .policy("round_robin")
        .backoff(fast_backoff())
        .max_connections_per_endpoint(max)
        .build_http1()
        .unwrap()
}

async fn get_body(channel: &RestChannel, path: &str) -> String {
    let request = http::Request::get(path).body(Empty::new()).unwrap();
    let response = timeout(LIMIT, async {
        let mut channel = channel.clone();
        channel.ready().await?.call(request).await
    })
    .await
    .expect("the request ends")
    .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

async fn wait_ready(channel: &RestChannel, addrs: &[SocketAddr]) {
    let want: Vec<Address> = addrs.iter().copied().map(Address::Socket).collect();
    let mut picker = channel.watch_picker();
    timeout(LIMIT, async {
        loop {
            let mut ready = channel.ready_addresses();
            ready.sort();
            if ready == want {
                return;
            }
            picker.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("ready {want:?}, have {:?}", channel.ready_addresses()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_channel_balances_across_axum_servers() {
    let gate = Arc::new(Semaphore::new(0));
    let (a, b, c) = (
        serve("a", gate.clone()).await,
        serve("b", gate.clone()).await,
        serve("c", gate).await,
    );
    let channel = channel(&[&a, &b, &c], 4);
    let mut addrs = vec![a.addr, b.addr, c.addr];
    addrs.sort();
    wait_ready(&channel, &addrs).await;

    let mut seen = BTreeSet::new();
    for _ in 0..9 {
        seen.insert(get_body(&channel, "/").await);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
    // One request at a time: each server's first connection served them all.
    for server in [&a, &b, &c] {
        assert_eq!(
            *server.accepted.borrow(),
            1,
            "connections to {}",
            server.addr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_opens_a_connection_per_request_in_flight_up_to_its_bound_and_reuses_them() {
    let gate = Arc::new(Semaphore::new(0));
    let server = serve("only", gate.clone()).await;
    let channel = channel(&[&server], 2);
    wait_ready(&channel, &[server.addr]).await;

    let mut requests = JoinSet::new();
    for _ in 0..3 {
        let channel = channel.clone();
        requests.spawn(async move { get_body(&channel, "/held").await });
    }
    // Two are held by the server, on two connections; the third waits in the
    // pool for one of them.
    let mut holding = server.holding.subscribe();
    timeout(LIMIT, holding.wait_for(|n| *n == 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*server.accepted.borrow(), 2);

    gate.add_permits(3);
    while let Some(reply) = requests.join_next().await {
        assert_eq!(reply.unwrap(), "only");
    }
    assert_eq!(*server.holding.borrow(), 3);
    for _ in 0..5 {
        assert_eq!(get_body(&channel, "/").await, "only");
    }
    assert_eq!(
        *server.accepted.borrow(),
        2,
        "the two connections are reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_http1_endpoint_leaves_the_picker_while_the_other_serves() {
    let gate = Arc::new(Semaphore::new(0));
    let a = serve("a", gate.clone()).await;
    let b = serve("b", gate).await;
    let channel = channel(&[&a, &b], 4);
    let mut addrs = vec![a.addr, b.addr];
    addrs.sort();
    wait_ready(&channel, &addrs).await;

    let dead = b.addr;
    drop(b);
    // Its connection closes, its pool reports closed, the subchannel goes
    // IDLE and reconnects, is refused, and backs off: only `a` is picked.
    wait_ready(&channel, &[a.addr]).await;
    assert_eq!(channel.state(), ConnectivityState::Ready);
    for _ in 0..6 {
        assert_eq!(get_body(&channel, "/").await, "a");
    }
    assert!(!channel.ready_addresses().contains(&Address::Socket(dead)));
}
