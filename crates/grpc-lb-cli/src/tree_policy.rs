//! The policies of grpc-lb-balance's policy tree that `call` runs under
//! `Balance` (crate::tree_stack): which one a name or a service config
//! selects, and its `loadBalancingConfig` JSON read into the tree's config.
//!
//! Kept in this one file so that a registry in grpc-lb-balance can replace
//! it: [`selected`], [`by_name`] and [`TreePolicy::build`] are all the rest
//! of the tool uses.

use std::fmt;
use std::time::Duration;

use grpc_lb::balance::tree::{
    Endpoint, EndpointId, Helper, LeastRequest, Policy, RingHash, RingHashConfig,
    RingHashConfigError, SubchannelId, WeightedRoundRobin, WrrConfig, WrrConfigError,
};
use grpc_lb::service_config::ServiceConfig;
use serde_json::{json, Map, Value};

/// ring_hash's names: grpc-go registers `ring_hash_experimental`.
const RING_HASH: [&str; 2] = ["ring_hash", "ring_hash_experimental"];
/// weighted_round_robin's name (grpc-go's).
const WRR: &str = "weighted_round_robin";
/// least_request's name in grpc-go (`least_request` itself stays on the
/// channel's policy).
const LEAST_REQUEST: &str = "least_request_experimental";
/// least_request's default `choiceCount` (gRFC A48).
const DEFAULT_CHOICE_COUNT: u64 = 2;

/// Every name this module takes, for `--policy` and for choosing among
/// `loadBalancingConfig` entries.
pub(crate) const NAMES: [&str; 4] = [RING_HASH[0], RING_HASH[1], WRR, LEAST_REQUEST];

/// Whether `name` is a tree policy's name.
pub(crate) fn is_tree(name: &str) -> bool {
    NAMES.contains(&name)
}

/// A tree policy and its checked config.
#[derive(Clone, Debug)]
pub(crate) enum TreePolicy {
    RingHash(RingHashConfig),
    WeightedRoundRobin(WrrConfig),
    LeastRequest { choice_count: usize },
}

/// A tree policy's config that cannot be used: one line naming the field.
#[derive(Debug)]
pub(crate) enum TreePolicyError {
    RingHash(RingHashConfigError),
    Wrr(WrrConfigError),
    /// A field of the wrong JSON type or syntax.
    Field {
        policy: &'static str,
        field: &'static str,
        why: String,
    },
    /// `--ring-hash-header` with a policy other than ring_hash.
    HeaderWithoutRingHash(String),
}

impl fmt::Display for TreePolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TreePolicyError::RingHash(error) => error.fmt(f),
            TreePolicyError::Wrr(error) => error.fmt(f),
            TreePolicyError::Field { policy, field, why } => write!(f, "{policy} {field}: {why}"),
            TreePolicyError::HeaderWithoutRingHash(policy) => write!(
                f,
                "--ring-hash-header needs ring_hash, but the policy in force is {policy}"
            ),
        }
    }
}

impl std::error::Error for TreePolicyError {}

impl TreePolicy {
    /// The name the report gives: grpc-go's registered name.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            TreePolicy::RingHash(_) => RING_HASH[1],
            TreePolicy::WeightedRoundRobin(_) => WRR,
            TreePolicy::LeastRequest { .. } => LEAST_REQUEST,
        }
    }

    /// The tree policy to run.
    pub(crate) fn build(&self) -> Box<dyn Policy> {
        match self {
            TreePolicy::RingHash(config) => Box::new(ConnectEvery(RingHash::new(config.clone()))),
            TreePolicy::WeightedRoundRobin(config) => {
                Box::new(WeightedRoundRobin::new(config.clone()))
            }
            TreePolicy::LeastRequest { choice_count } => Box::new(LeastRequest::new(*choice_count)),
        }
    }

    /// Sets ring_hash's `requestHashHeader` (`--ring-hash-header`).
    pub(crate) fn with_hash_header(self, header: Option<&str>) -> Result<Self, TreePolicyError> {
        let Some(header) = header else {
            return Ok(self);
        };
        match self {
            TreePolicy::RingHash(config) => config
                .request_hash_header(header)
                .validate()
                .map(TreePolicy::RingHash)
                .map_err(TreePolicyError::RingHash),
            other => Err(TreePolicyError::HeaderWithoutRingHash(
                other.name().to_owned(),
            )),
        }
    }

    /// The config in use, in the service config's JSON names.
    pub(crate) fn json(&self) -> Value {
        let seconds = |d: Duration| json!(format!("{}s", d.as_secs_f64()));
        match self {
            TreePolicy::RingHash(c) => json!({
                "minRingSize": c.min_ring_size,
                "maxRingSize": c.max_ring_size,
                "requestHashHeader": c.request_hash_header,
            }),
            TreePolicy::WeightedRoundRobin(c) => json!({
                "enableOobLoadReport": c.enable_oob_load_report,
                "oobReportingPeriod": seconds(c.oob_reporting_period),
                "blackoutPeriod": seconds(c.blackout_period),
                "weightExpirationPeriod": seconds(c.weight_expiration_period),
                "weightUpdatePeriod": seconds(c.weight_update_period),
                "errorUtilizationPenalty": c.error_utilization_penalty,
            }),
            TreePolicy::LeastRequest { choice_count } => json!({ "choiceCount": choice_count }),
        }
    }
}

/// ring_hash as the tool runs it: each endpoint is connected when it is
/// added, not when a pick first lands on it (A42's lazy connection).
///
/// Why: `Balance` reserves an endpoint in `poll_ready`, before it has the
/// request; a hashed call whose endpoint is still IDLE then goes to the
/// reserved endpoint (grpc-go queues it until its endpoint connects), so
/// the first call of each key could land elsewhere. With every endpoint
/// connected (and crate::tree_stack waiting for that before the calls), a
/// key's calls reach its endpoint from the first on.
struct ConnectEvery<P>(P);

impl<P: Policy> Policy for ConnectEvery<P> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn add_endpoint(&mut self, endpoint: Endpoint<'_>, helper: &mut dyn Helper) {
        self.0.add_endpoint(endpoint, helper);
        // ring_hash's exit_idle connects one IDLE endpoint: one per added
        // endpoint connects them all.
        self.0.exit_idle(helper);
    }

    fn remove_endpoint(&mut self, endpoint: EndpointId, helper: &mut dyn Helper) {
        self.0.remove_endpoint(endpoint, helper)
    }

    fn subchannel_state(
        &mut self,
        subchannel: SubchannelId,
        state: &grpc_lb::core::Connectivity,
        helper: &mut dyn Helper,
    ) {
        self.0.subchannel_state(subchannel, state, helper)
    }

    fn resolver_error(&mut self, error: &grpc_lb::core::SharedError, helper: &mut dyn Helper) {
        self.0.resolver_error(error, helper)
    }

    fn timer_fired(&mut self, timer: grpc_lb::balance::tree::TimerId, helper: &mut dyn Helper) {
        self.0.timer_fired(timer, helper)
    }

    fn exit_idle(&mut self, helper: &mut dyn Helper) {
        self.0.exit_idle(helper)
    }

    fn uses_pick_info(&self) -> bool {
        self.0.uses_pick_info()
    }

    fn pick_queued(&mut self, helper: &mut dyn Helper) {
        self.0.pick_queued(helper)
    }
}

/// The tree policy `name` (a `--policy` value) selects, with its defaults;
/// `Ok(None)`: not a tree policy.
pub(crate) fn by_name(name: &str) -> Result<Option<TreePolicy>, TreePolicyError> {
    if is_tree(name) {
        from_json(name, &json!({})).map(Some)
    } else {
        Ok(None)
    }
}

/// The tree policy `config` selects: its first supported `loadBalancingConfig`
/// entry (the channel's policies, grpclb and these counted as supported) is
/// one of them. `Ok(None)`: it selects something else, or nothing.
pub(crate) fn selected(config: &ServiceConfig) -> Result<Option<TreePolicy>, TreePolicyError> {
    let registry = grpc_lb::balance::PolicyRegistry::with_defaults();
    let chosen = config.choose_policy(|name| {
        is_tree(name)
            || registry.contains(name)
            || name == crate::grpclb::GRPCLB
            || name == grpc_lb::service_config::OUTLIER_DETECTION
    });
    match chosen {
        Ok(Some(entry)) if is_tree(entry.name()) => {
            from_json(entry.name(), entry.config()).map(Some)
        }
        _ => Ok(None),
    }
}

/// Reads one policy's `loadBalancingConfig` object.
fn from_json(name: &str, value: &Value) -> Result<TreePolicy, TreePolicyError> {
    let empty = Map::new();
    let object = value.as_object().unwrap_or(&empty);
    if RING_HASH.contains(&name) {
        let fields = Fields {
            policy: "ring_hash",
            object,
        };
        let mut config = RingHashConfig::default();
        if let Some(size) = fields.u64("minRingSize")? {
            config.min_ring_size = size;
        }
        if let Some(size) = fields.u64("maxRingSize")? {
            config.max_ring_size = size;
        }
        config.request_hash_header = fields.string("requestHashHeader")?;
        return config
            .validate()
            .map(TreePolicy::RingHash)
            .map_err(TreePolicyError::RingHash);
    }
    if name == WRR {
        let fields = Fields {
            policy: WRR,
            object,
        };
        let mut config = WrrConfig::default();
        if let Some(on) = fields.bool("enableOobLoadReport")? {
            config.enable_oob_load_report = on;
        }
        let durations = [
            ("oobReportingPeriod", &mut config.oob_reporting_period),
            ("blackoutPeriod", &mut config.blackout_period),
            (
                "weightExpirationPeriod",
                &mut config.weight_expiration_period,
            ),
            ("weightUpdatePeriod", &mut config.weight_update_period),
        ];
        for (field, slot) in durations {
            if let Some(duration) = fields.duration(field)? {
                *slot = duration;
            }
        }
        if let Some(penalty) = fields.f64("errorUtilizationPenalty")? {
            config.error_utilization_penalty = penalty;
        }
        return config
            .validate()
            .map(TreePolicy::WeightedRoundRobin)
            .map_err(TreePolicyError::Wrr);
    }
    let fields = Fields {
        policy: LEAST_REQUEST,
        object,
    };
    // gRFC A48: choiceCount below 2 is refused, above 10 is capped at 10.
    let choice_count = fields.u64("choiceCount")?.unwrap_or(DEFAULT_CHOICE_COUNT);
    if choice_count < 2 {
        return Err(fields.error("choiceCount", format!("{choice_count} is below 2")));
    }
    Ok(TreePolicy::LeastRequest {
        choice_count: choice_count.min(10) as usize,
    })
}

/// One policy's config object, read field by field.
struct Fields<'a> {
    policy: &'static str,
    object: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn error(&self, field: &'static str, why: impl Into<String>) -> TreePolicyError {
        TreePolicyError::Field {
            policy: self.policy,
            field,
            why: why.into(),
        }
    }

    fn u64(&self, field: &'static str) -> Result<Option<u64>, TreePolicyError> {
        match self.object.get(field) {
            None | Some(Value::Null) => Ok(None),
            // The JSON mapping of a uint64 takes a string of digits too.
            Some(Value::String(text)) => text
                .parse()
                .map(Some)
                .map_err(|_| self.error(field, format!("{text:?} is not a whole number"))),
            Some(value) => value
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.error(field, format!("{value} is not a whole number"))),
        }
    }

    fn f64(&self, field: &'static str) -> Result<Option<f64>, TreePolicyError> {
        match self.object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.error(field, format!("{value} is not a number"))),
        }
    }

    fn bool(&self, field: &'static str) -> Result<Option<bool>, TreePolicyError> {
        match self.object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.error(field, format!("{value} is not true or false"))),
        }
    }

    fn string(&self, field: &'static str) -> Result<Option<String>, TreePolicyError> {
        match self.object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(value) => Err(self.error(field, format!("{value} is not a string"))),
        }
    }

    fn duration(&self, field: &'static str) -> Result<Option<Duration>, TreePolicyError> {
        let Some(text) = self.string(field)? else {
            return Ok(None);
        };
        parse_duration(&text)
            .map(Some)
            .ok_or_else(|| self.error(field, format!("{text:?} is not a duration like \"1.5s\"")))
    }
}

/// A protobuf JSON duration: seconds with up to nine fractional digits and
/// an `s` (`"10s"`, `"0.1s"`).
fn parse_duration(text: &str) -> Option<Duration> {
    let number = text.strip_suffix('s')?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: u64 = whole.parse().ok()?;
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().ok()?
    };
    Some(Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> ServiceConfig {
        ServiceConfig::from_json(text).unwrap()
    }

    #[test]
    fn ring_hash_fields_are_read_and_checked() {
        let chosen = selected(&config(
            r#"{"loadBalancingConfig":[{"ring_hash_experimental":{"minRingSize":8,"maxRingSize":"16","requestHashHeader":"X-User"}}]}"#,
        ))
        .unwrap()
        .unwrap();
        let TreePolicy::RingHash(ring) = &chosen else {
            panic!("{chosen:?}")
        };
        assert_eq!((ring.min_ring_size, ring.max_ring_size), (8, 16));
        assert_eq!(ring.request_hash_header.as_deref(), Some("x-user"));
        let zero = selected(&config(
            r#"{"loadBalancingConfig":[{"ring_hash":{"minRingSize":0}}]}"#,
        ))
        .unwrap_err();
        assert_eq!(zero.to_string(), "ring_hash minRingSize must be at least 1");
        let above = by_name("ring_hash")
            .unwrap()
            .unwrap()
            .with_hash_header(Some("k-bin"))
            .unwrap_err();
        assert!(above.to_string().contains("binary header"), "{above}");
        let typed = selected(&config(
            r#"{"loadBalancingConfig":[{"ring_hash":{"maxRingSize":"many"}}]}"#,
        ))
        .unwrap_err();
        assert_eq!(
            typed.to_string(),
            "ring_hash maxRingSize: \"many\" is not a whole number"
        );
    }

    #[test]
    fn wrr_fields_are_read_and_checked() {
        let chosen = selected(&config(
            r#"{"loadBalancingConfig":[{"weighted_round_robin":{"blackoutPeriod":"0.5s","weightUpdatePeriod":"0.01s","errorUtilizationPenalty":2}}]}"#,
        ))
        .unwrap()
        .unwrap();
        let TreePolicy::WeightedRoundRobin(wrr) = &chosen else {
            panic!("{chosen:?}")
        };
        assert_eq!(wrr.blackout_period, Duration::from_millis(500));
        assert_eq!(wrr.weight_update_period, Duration::from_millis(100));
        assert_eq!(wrr.error_utilization_penalty, 2.0);
        let bad = selected(&config(
            r#"{"loadBalancingConfig":[{"weighted_round_robin":{"blackoutPeriod":"10"}}]}"#,
        ))
        .unwrap_err();
        assert!(bad
            .to_string()
            .starts_with("weighted_round_robin blackoutPeriod:"));
        let oob = by_name(WRR).unwrap().unwrap();
        assert!(oob.with_hash_header(Some("x")).is_err());
    }

    #[test]
    fn the_first_supported_entry_decides() {
        let first_rr =
            config(r#"{"loadBalancingConfig":[{"round_robin":{}},{"ring_hash_experimental":{}}]}"#);
        assert!(selected(&first_rr).unwrap().is_none());
        let unknown_first = config(
            r#"{"loadBalancingConfig":[{"no_such":{}},{"least_request_experimental":{"choiceCount":3}}]}"#,
        );
        let chosen = selected(&unknown_first).unwrap().unwrap();
        assert!(matches!(
            chosen,
            TreePolicy::LeastRequest { choice_count: 3 }
        ));
    }

    #[test]
    fn durations_are_protobuf_json() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("0.25s"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration(".5s"), None);
    }
}
