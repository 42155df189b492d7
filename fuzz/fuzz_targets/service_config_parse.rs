//! Fuzzes service config parsing: no input may panic, an error always names a
//! reason, and every accepted config answers its lookups.
#![no_main]

use grpc_lb_service_config::ServiceConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    match ServiceConfig::from_json(&input) {
        Ok(config) => {
            for path in ["/helloworld.Greeter/SayHello", "/s/m", "", "/"] {
                if let Some(method) = config.method_config(path) {
                    if let Some(policy) = method.retry_policy() {
                        assert!((2..=5).contains(&policy.max_attempts()));
                        for retry in 0..10 {
                            assert!(policy.nominal_backoff(retry) <= policy.max_backoff());
                        }
                    }
                }
            }
            let _ = config.choose_policy(|name| name == "round_robin");
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
