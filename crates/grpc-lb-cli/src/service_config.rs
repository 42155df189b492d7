//! The part of a gRPC service config the tool honours today: the
//! load-balancing policy. A full service-config parser is being written
//! separately; [`lb_policy`] is the one place to swap for it.

use serde_json::Value;

/// The policy a service config (JSON text) selects, among `supported` names:
///
/// - `loadBalancingConfig`: a list of one-key objects such as
///   `[{"round_robin":{}}]`; the first supported policy wins (gRFC A24), and a
///   list with none supported is an error;
/// - else `loadBalancingPolicy`: a policy name (any case), as grpc-go reads it;
/// - else `None`: the config does not choose.
///
/// Invalid JSON, a config that is not an object, or fields of the wrong shape
/// are errors, with a message for the user.
pub(crate) fn lb_policy(json: &str, supported: &[String]) -> Result<Option<String>, String> {
    let config: Value =
        serde_json::from_str(json).map_err(|error| format!("invalid JSON: {error}"))?;
    let Value::Object(config) = config else {
        return Err("a service config is a JSON object".into());
    };
    if let Some(list) = config.get("loadBalancingConfig") {
        let Value::Array(list) = list else {
            return Err("loadBalancingConfig must be a list, e.g. [{\"round_robin\":{}}]".into());
        };
        let mut names = Vec::new();
        for entry in list {
            let name = match entry {
                Value::Object(entry) if entry.len() == 1 => entry.keys().next().cloned(),
                _ => None,
            };
            let Some(name) = name else {
                return Err(format!(
                    "each loadBalancingConfig entry is an object with one key, the \
                     policy name; got {entry}"
                ));
            };
            if supported.contains(&name) {
                return Ok(Some(name));
            }
            names.push(name);
        }
        return Err(format!(
            "no supported policy in loadBalancingConfig {names:?} (supported: {})",
            supported.join(", ")
        ));
    }
    if let Some(policy) = config.get("loadBalancingPolicy") {
        let Value::String(policy) = policy else {
            return Err("loadBalancingPolicy must be a string".into());
        };
        let name = policy.to_ascii_lowercase();
        if supported.contains(&name) {
            return Ok(Some(name));
        }
        return Err(format!(
            "unsupported loadBalancingPolicy {policy:?} (supported: {})",
            supported.join(", ")
        ));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supported() -> Vec<String> {
        ["pick_first", "round_robin", "p2c", "least_request"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn policy(json: &str) -> Result<Option<String>, String> {
        lb_policy(json, &supported())
    }

    #[test]
    fn the_first_supported_policy_wins() {
        assert_eq!(
            policy(r#"{"loadBalancingConfig":[{"round_robin":{}}]}"#),
            Ok(Some("round_robin".into()))
        );
        assert_eq!(
            policy(
                r#"{"loadBalancingConfig":[{"weighted_round_robin":{}},{"least_request":{"choiceCount":3}},{"pick_first":{}}]}"#
            ),
            Ok(Some("least_request".into()))
        );
    }

    #[test]
    fn load_balancing_policy_is_the_fallback() {
        assert_eq!(
            policy(r#"{"loadBalancingPolicy":"ROUND_ROBIN"}"#),
            Ok(Some("round_robin".into()))
        );
        assert_eq!(
            policy(
                r#"{"methodConfig":[{"name":[{"service":"helloworld.Greeter"}],"waitForReady":true}]}"#
            ),
            Ok(None)
        );
        assert_eq!(policy("{}"), Ok(None));
    }

    #[test]
    fn bad_configs_are_errors_that_say_why() {
        let error = policy("{not json").unwrap_err();
        assert!(error.starts_with("invalid JSON"), "{error}");
        assert!(policy("[]").unwrap_err().contains("object"));
        assert!(policy(r#"{"loadBalancingConfig":{"round_robin":{}}}"#)
            .unwrap_err()
            .contains("must be a list"));
        assert!(policy(r#"{"loadBalancingConfig":[{"grpclb":{}}]}"#)
            .unwrap_err()
            .contains("no supported policy"));
        assert!(policy(r#"{"loadBalancingConfig":["round_robin"]}"#)
            .unwrap_err()
            .contains("one key"));
        assert!(policy(r#"{"loadBalancingPolicy":"ring_hash"}"#)
            .unwrap_err()
            .contains("unsupported"));
    }
}
