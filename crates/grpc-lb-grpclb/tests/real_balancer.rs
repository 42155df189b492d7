//! grpclb against a real balancer: a tonic `grpc.lb.v1` balancer and tonic
//! Greeter backends on loopback, which the tests change, kill and restart.

use std::time::{Duration, Instant};

use grpc_lb_grpclb::{GrpclbConfig, Mode, DROP_MESSAGE};

mod support;
use support::*;

/// Share of `part` in `whole`.
fn share(part: usize, whole: usize) -> f64 {
    part as f64 / whole as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_follows_each_server_list_with_its_tokens() {
    let a = backend("a").await;
    let b = backend("b").await;
    let c = backend("c").await;
    let balancer = TestBalancer::new(None);
    let lb = KillableServer::start(balancer.routes()).await;
    balancer.set_servers(vec![server(a.addr(), "tok-a"), server(b.addr(), "tok-b")]);
    let config = GrpclbConfig::default().with_service_name("greeter.example");
    let (grpclb, mut stack) = client(lb.addr(), &[], config);

    // The first list: a and b, each call with its backend's token.
    call_until(&mut stack, |r| r == "b tok-b").await;
    call_until(&mut stack, |r| r == "a tok-a").await;
    let (replies, failures) = spread(&mut stack, 200).await;
    assert!(failures.is_empty(), "{failures:?}");
    let (to_a, to_b) = (replies["a tok-a"], replies["b tok-b"]);
    assert_eq!(to_a + to_b, 200, "{replies:?}");
    assert!((share(to_a, 200) - 0.5).abs() <= 0.10, "{replies:?}");

    // The second list: b and c; a gets nothing once c answers.
    balancer.set_servers(vec![server(b.addr(), "tok-b2"), server(c.addr(), "tok-c")]);
    call_until(&mut stack, |r| r == "c tok-c").await;
    call_until(&mut stack, |r| r == "b tok-b2").await;
    let (replies, failures) = spread(&mut stack, 200).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(
        (share(replies["c tok-c"], 200) - 0.5).abs() <= 0.10,
        "{replies:?}"
    );

    // A third list, one backend with a new token: once a reply carries it,
    // the list is in force (a Reset is applied whole, before the next pick).
    balancer.set_servers(vec![server(c.addr(), "tok-c3")]);
    call_until(&mut stack, |r| r == "c tok-c3").await;
    let (replies, _) = spread(&mut stack, 20).await;
    assert_eq!(replies.get("c tok-c3"), Some(&20), "{replies:?}");

    let received = balancer.received().borrow().clone();
    assert_eq!(received.names, ["greeter.example"]);
    assert_eq!(grpclb.status().borrow().server_lists, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_follow_the_list_and_every_call_is_reported() {
    let a = backend("a").await;
    let b = backend("b").await;
    let balancer = TestBalancer::new(Some(Duration::from_millis(100)));
    let lb = KillableServer::start(balancer.routes()).await;
    // One call in three of each pass is dropped, against two tokens.
    balancer.set_servers(vec![
        server(a.addr(), "tok-a"),
        drop_entry("lb-rate"),
        server(b.addr(), "tok-b"),
        server(a.addr(), "tok-a"),
        drop_entry("lb-load"),
        server(b.addr(), "tok-b"),
    ]);
    // Nothing moves before the first call (the stack is polled by calls,
    // as tower's balancers are); the first calls wait for the list. The
    // warm-up's calls are counted, as the balancer hears of them too.
    let (grpclb, mut stack) = client(lb.addr(), &[], GrpclbConfig::default());
    let (mut warm_calls, mut warm_drops) = (0i64, 0i64);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        warm_calls += 1;
        match say_hello(&mut stack).await {
            Ok(reply) => {
                seen.insert(reply);
            }
            Err(status) if status.message() == DROP_MESSAGE => warm_drops += 1,
            Err(status) => panic!("{status}"),
        }
    }
    assert_eq!(grpclb.mode().borrow().mode, Mode::Balancer);

    let n = 600;
    let (replies, failures) = spread(&mut stack, n).await;
    let dropped: usize = failures
        .iter()
        .filter(|(message, _)| message.contains(DROP_MESSAGE) && message.starts_with("Unavailable"))
        .map(|(_, count)| count)
        .sum();
    let failed_otherwise: usize = failures.values().sum::<usize>() - dropped;
    assert_eq!(failed_otherwise, 0, "{failures:?}");
    assert!(
        (share(dropped, n) - 2.0 / 6.0).abs() <= 0.05,
        "dropped {dropped} of {n}: {failures:?}"
    );
    let served: usize = replies.values().sum();
    assert_eq!(served + dropped, n);
    assert!(
        (share(replies["a tok-a"], served) - 0.5).abs() <= 0.10,
        "{replies:?}"
    );

    // The balancer hears of every call: started, finished, received, drops by token.
    let total = warm_calls + n as i64;
    let received = balancer
        .wait_received(|r| r.started() >= total && r.finished() >= total)
        .await;
    assert_eq!(received.started(), total, "{:?}", received.reports);
    assert_eq!(received.finished(), total);
    let all_drops = warm_drops + dropped as i64;
    assert_eq!(received.known_received(), total - all_drops);
    assert_eq!(received.failed_to_send(), 0);
    assert_eq!(
        received.dropped("lb-rate") + received.dropped("lb-load"),
        all_drops
    );
    assert!((received.dropped("lb-rate") - received.dropped("lb-load")).abs() <= 1);
    assert!(received.reports.iter().all(|r| r.timestamp.is_some()));
    assert!(!received.reports.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_balancer_means_fallback_after_the_timeout_until_a_list_arrives() {
    let fallback = backend("fallback").await;
    let a = backend("a").await;
    let balancer = TestBalancer::new(None);
    // Nothing listens on the balancer's port yet.
    let mut lb = KillableServer::not_started(balancer.routes()).await;
    balancer.set_servers(vec![server(a.addr(), "tok-a")]);
    let fallback_timeout = Duration::from_secs(2);
    let config = GrpclbConfig::default().with_fallback_timeout(fallback_timeout);
    let started = Instant::now();
    let (grpclb, mut stack) = client(lb.addr(), &[fallback.addr()], config);

    // The first call waits for the fallback, and reaches the fallback backend
    // without a token.
    let reply = say_hello(&mut stack).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(reply, "fallback -");
    assert!(elapsed >= fallback_timeout, "{elapsed:?}");
    assert!(
        elapsed < fallback_timeout + Duration::from_secs(1),
        "{elapsed:?}"
    );
    println!("first call reached the fallback backend after {elapsed:?}");
    assert_eq!(grpclb.mode().borrow().mode, Mode::Fallback);

    // The balancer comes up: its list ends the fallback.
    lb.restart().await;
    call_until(&mut stack, |r| r == "a tok-a").await;
    assert_eq!(grpclb.mode().borrow().mode, Mode::Balancer);
    let (replies, failures) = spread(&mut stack, 20).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(replies.get("a tok-a"), Some(&20), "{replies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_balancer_keeps_its_list_until_the_backends_go_then_recovers() {
    let fallback = backend("fallback").await;
    let mut a = backend("a").await;
    let b = backend("b").await;
    let balancer = TestBalancer::new(None);
    let mut lb = KillableServer::start(balancer.routes()).await;
    balancer.set_servers(vec![server(a.addr(), "tok-a")]);
    let config = GrpclbConfig::default()
        .with_fallback_timeout(Duration::from_secs(2))
        .with_backoff(fast_backoff());
    let (grpclb, mut stack) = client(lb.addr(), &[fallback.addr()], config);
    call_until(&mut stack, |r| r == "a tok-a").await;

    // The balancer dies; a is still READY, so its list stays in use.
    lb.kill().await;
    let mut status = grpclb.status();
    tokio::time::timeout(LIMIT, status.wait_for(|s| !s.connected))
        .await
        .unwrap()
        .unwrap();
    let (replies, failures) = spread(&mut stack, 20).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(replies.get("a tok-a"), Some(&20), "{replies:?}");
    assert_eq!(grpclb.mode().borrow().mode, Mode::Balancer);

    // Then a dies too: with no backend READY and no balancer, fallback.
    a.kill().await;
    let lost = Instant::now();
    call_until(&mut stack, |r| r == "fallback -").await;
    let elapsed = lost.elapsed();
    println!("calls reached the fallback backend {elapsed:?} after the last backend died");
    assert!(
        elapsed < Duration::from_secs(2) + Duration::from_secs(1),
        "{elapsed:?}"
    );
    assert_eq!(grpclb.mode().borrow().fallbacks, 1);

    // The balancer comes back on its port with a new list: the stream is
    // opened again (backoff), and the list ends the fallback.
    balancer.set_servers(vec![server(b.addr(), "tok-b")]);
    lb.restart().await;
    call_until(&mut stack, |r| r == "b tok-b").await;
    assert_eq!(grpclb.mode().borrow().mode, Mode::Balancer);
    let received = balancer.received().borrow().clone();
    assert_eq!(received.names.len(), 2, "{:?}", received.names);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_response_switches_to_fallback_and_a_new_list_ends_it() {
    let fallback = backend("fallback").await;
    let a = backend("a").await;
    let b = backend("b").await;
    let balancer = TestBalancer::new(None);
    let lb = KillableServer::start(balancer.routes()).await;
    balancer.set_servers(vec![server(a.addr(), "tok-a")]);
    let (grpclb, mut stack) = client(lb.addr(), &[fallback.addr()], GrpclbConfig::default());
    call_until(&mut stack, |r| r == "a tok-a").await;

    // Eager fallback, though a is healthy.
    balancer.send_fallback();
    call_until(&mut stack, |r| r == "fallback -").await;
    let (replies, _) = spread(&mut stack, 10).await;
    assert_eq!(replies.get("fallback -"), Some(&10), "{replies:?}");
    assert_eq!(grpclb.mode().borrow().mode, Mode::Fallback);

    balancer.set_servers(vec![server(b.addr(), "tok-b")]);
    call_until(&mut stack, |r| r == "b tok-b").await;
    let (replies, _) = spread(&mut stack, 10).await;
    assert_eq!(replies.get("b tok-b"), Some(&10), "{replies:?}");
    assert_eq!(grpclb.mode().borrow().mode, Mode::Balancer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_first_as_the_child_policy_sticks_to_one_backend_until_it_goes() {
    let mut a = backend("a").await;
    let b = backend("b").await;
    let balancer = TestBalancer::new(None);
    let lb = KillableServer::start(balancer.routes()).await;
    balancer.set_servers(vec![server(a.addr(), "tok-a"), server(b.addr(), "tok-b")]);
    let config = GrpclbConfig::from_json(r#"{"childPolicy":[{"pick_first":{}}]}"#).unwrap();
    let (_grpclb, mut stack) = client(lb.addr(), &[], config);
    // pick_first takes the list's first backend, and only it.
    let first = say_hello(&mut stack).await.unwrap();
    assert_eq!(first, "a tok-a");
    let (replies, failures) = spread(&mut stack, 20).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        replies.get("a tok-a"),
        Some(&20),
        "one backend only: {replies:?}"
    );

    // Its backend dies: pick_first moves to the next one of the list.
    a.kill().await;
    call_until(&mut stack, |r| r == "b tok-b").await;
    let (replies, _) = spread(&mut stack, 10).await;
    assert_eq!(replies.get("b tok-b"), Some(&10), "{replies:?}");
    drop(lb);
}
