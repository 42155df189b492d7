//! The ORCA per-call trailer (`endpoint-load-metrics-bin`) from arbitrary
//! bytes: never a panic, and every report that parses survives a round trip.
#![no_main]

use grpc_lb_orca::{OrcaLoadReport, TRAILER};
use libfuzzer_sys::fuzz_target;

/// Equal, with NaN equal to NaN (a report may carry any f64 bits). -0.0
/// equals 0.0: proto3 drops a default value, and prost counts -0.0 as one.
fn same(a: &OrcaLoadReport, b: &OrcaLoadReport) -> bool {
    let f = |x: f64, y: f64| x == y || (x.is_nan() && y.is_nan());
    let map = |x: &std::collections::HashMap<String, f64>,
               y: &std::collections::HashMap<String, f64>| {
        x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| f(*v, *w)))
    };
    f(a.cpu_utilization, b.cpu_utilization)
        && f(a.mem_utilization, b.mem_utilization)
        && f(a.application_utilization, b.application_utilization)
        && f(a.rps_fractional, b.rps_fractional)
        && f(a.eps, b.eps)
        && map(&a.request_cost, &b.request_cost)
        && map(&a.utilization, &b.utilization)
        && map(&a.named_metrics, &b.named_metrics)
}

fuzz_target!(|data: &[u8]| {
    // As raw protobuf (one message of the out-of-band stream).
    if let Ok(report) = OrcaLoadReport::decode(data) {
        let again = OrcaLoadReport::decode(&report.encode_to_vec()).expect("re-encoded report");
        assert!(same(&report, &again));
    }
    // As a trailer value (base64 text), alone and repeated.
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let mut trailers = http::HeaderMap::new();
    trailers.insert(TRAILER, value.clone());
    match OrcaLoadReport::from_trailers(&trailers) {
        Ok(Some(report)) => {
            trailers.insert(TRAILER, report.to_header_value());
            let again = OrcaLoadReport::from_trailers(&trailers).expect("re-encoded trailer");
            assert!(same(&report, &again.expect("a report")));
        }
        Ok(None) => unreachable!("the trailer is present"),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
    trailers.append(TRAILER, value);
    assert!(OrcaLoadReport::from_trailers(&trailers).is_err());
});
