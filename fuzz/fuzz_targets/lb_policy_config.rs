//! A service config's `loadBalancingConfig` from arbitrary text, built into a
//! tree policy by `PolicyRegistry`: never a panic; a policy is built only
//! for a registered name, and the same text always chooses the same way.
#![no_main]

use grpc_lb_balance::tree::{PolicyConfigError, PolicyRegistry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let registry = PolicyRegistry::new();
    // Also as the bare list, the part this target is about.
    for json in [text.to_string(), format!(r#"{{"loadBalancingConfig": {text}}}"#)] {
        let first = registry.from_service_config_json(&json);
        match &first {
            Ok(Some((name, policy))) => {
                assert!(registry.contains(name), "{name}");
                assert!(!policy.name().is_empty());
            }
            Ok(None) => {}
            Err(error) => assert!(!error.to_string().is_empty()),
        }
        let again = registry.from_service_config_json(&json);
        let chosen = |r: &Result<Option<(String, _)>, PolicyConfigError>| match r {
            Ok(Some((name, _))) => Ok(Some(name.clone())),
            Ok(None) => Ok(None),
            Err(error) => Err(error.clone()),
        };
        assert_eq!(chosen(&first), chosen(&again));
    }
});
