//! Service configs from resolvers: the gRFC A2 choice list that DNS TXT
//! records carry, and what a resolver reports.
//!
//! A resolver may report a service config beside its addresses, as an
//! [`Update::ServiceConfig`](crate::Update::ServiceConfig): a new config, "no
//! config", or a config that could not be used. [`ResolverDiscover`] keeps the
//! latest good one and the latest error in
//! [`ResolverStatus::service_config`](crate::ResolverStatus::service_config): a
//! bad config never replaces a good one.
//!
//! In DNS (gRFC A2) the config is a TXT record at `_grpc_config.<host>` whose
//! text is `grpc_config=` followed by a JSON list of *choices*. The first
//! choice whose criteria match this client wins, and its `serviceConfig` is
//! the config:
//!
//! ```json
//! [
//!   {"clientLanguage": ["go"], "serviceConfig": {"loadBalancingPolicy": "pick_first"}},
//!   {"percentage": 10, "serviceConfig": {"loadBalancingConfig": [{"round_robin": {}}]}},
//!   {"serviceConfig": {"methodConfig": [{"name": [{}], "timeout": "1s"}]}}
//! ]
//! ```
//!
//! [`ResolverDiscover`]: crate::ResolverDiscover

use std::fmt;
use std::sync::Arc;

use grpc_lb_core::SharedError;
use grpc_lb_service_config::{ServiceConfig, ServiceConfigError};
use serde_json::{Map, Value};

/// The name prefix of the TXT record holding a host's service config (gRFC
/// A2): `_grpc_config.<host>`.
pub const TXT_RECORD_PREFIX: &str = "_grpc_config.";
/// The attribute that starts a TXT record's text (gRFC A2); a record without
/// it is not a service config.
pub const TXT_ATTRIBUTE: &str = "grpc_config=";
/// The language this client matches in a choice's `clientLanguage`.
pub const CLIENT_LANGUAGE: &str = "rust";

/// What the resolver has said about the service config, as
/// [`ResolverStatus::service_config`](crate::ResolverStatus::service_config)
/// keeps it.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::StreamExt;
/// use grpc_lb_core::ResolveNow;
/// use grpc_lb_resolve::{Endpoint, ManualResolver, ResolverDiscover};
///
/// let (resolver, handle) = ManualResolver::new("test");
/// let mut discover =
///     ResolverDiscover::new(resolver.stream(ResolveNow::new()), |e: &Endpoint| e.address.clone());
/// let status = discover.status();
///
/// handle.service_config(r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#);
/// handle.service_config(r#"{"loadBalancingConfig": "round_robin"}"#); // wrong type
/// handle.reset([Endpoint::new("127.0.0.1:50051".parse::<std::net::SocketAddr>().unwrap())]);
/// discover.next().await;
///
/// let config = status.borrow().service_config.clone();
/// // The good one stays; the bad one is reported.
/// let good = config.config.expect("the first config was good");
/// assert_eq!(good.load_balancing_config()[0].name(), "round_robin");
/// assert!(config.error.unwrap().to_string().contains("loadBalancingConfig"));
/// # }
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ServiceConfigStatus {
    /// The latest good config from the resolver; `None` before any, or after
    /// the resolver said there is none.
    pub config: Option<Arc<ServiceConfig>>,
    /// Why the latest config from the resolver could not be used; cleared by
    /// the next good config (or "no config"). The previous good config stays
    /// meanwhile.
    pub error: Option<SharedError>,
    /// How many service config updates (good, none or bad) the resolver has
    /// sent, so that a watcher can tell one from the next.
    pub updates: u64,
}

/// A resolver's word on the service config, carried by
/// [`Update::ServiceConfig`](crate::Update::ServiceConfig).
///
/// # Examples
///
/// ```
/// use grpc_lb_resolve::service_config::ServiceConfigUpdate;
///
/// let good = ServiceConfigUpdate::parse(r#"{"loadBalancingPolicy": "round_robin"}"#);
/// assert!(matches!(good, ServiceConfigUpdate::Config(_)));
/// let bad = ServiceConfigUpdate::parse(r#"{"methodConfig": {}}"#);
/// assert!(matches!(bad, ServiceConfigUpdate::Invalid(_)));
/// ```
#[derive(Clone, Debug)]
pub enum ServiceConfigUpdate {
    /// Use this config.
    Config(Arc<ServiceConfig>),
    /// The resolver has no config for the target (no TXT record, say): the
    /// channel's own applies.
    NoConfig,
    /// The resolver found a config that cannot be used, and why. The previous
    /// good config, if any, stays in use (grpc-go, and gRPC's service config
    /// error handling).
    Invalid(SharedError),
}

impl ServiceConfigUpdate {
    /// A config parsed from JSON text: `Config`, or `Invalid` with the
    /// [`ServiceConfigError`] naming the field.
    pub fn parse(json: &str) -> Self {
        match ServiceConfig::from_json(json) {
            Ok(config) => ServiceConfigUpdate::Config(Arc::new(config)),
            Err(error) => ServiceConfigUpdate::Invalid(Arc::new(error)),
        }
    }
}

impl From<Result<Option<ServiceConfig>, ChoiceError>> for ServiceConfigUpdate {
    fn from(result: Result<Option<ServiceConfig>, ChoiceError>) -> Self {
        match result {
            Ok(Some(config)) => ServiceConfigUpdate::Config(Arc::new(config)),
            Ok(None) => ServiceConfigUpdate::NoConfig,
            Err(error) => ServiceConfigUpdate::Invalid(Arc::new(error)),
        }
    }
}

/// Equal configs are equal; errors are equal when they say the same thing.
impl PartialEq for ServiceConfigUpdate {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ServiceConfigUpdate::Config(a), ServiceConfigUpdate::Config(b)) => {
                Arc::ptr_eq(a, b) || a == b
            }
            (ServiceConfigUpdate::NoConfig, ServiceConfigUpdate::NoConfig) => true,
            (ServiceConfigUpdate::Invalid(a), ServiceConfigUpdate::Invalid(b)) => {
                a.to_string() == b.to_string()
            }
            _ => false,
        }
    }
}

// A parsed config holds no NaN (JSON has none, and every number is
// validated), so equality is an equivalence.
impl Eq for ServiceConfigUpdate {}

/// What this client is, for choosing among gRFC A2 choices.
///
/// # Examples
///
/// ```
/// use grpc_lb_resolve::service_config::{choose, ClientSelector};
///
/// let choices = r#"[
///     {"clientHostname": ["canary-1"], "serviceConfig": {"loadBalancingPolicy": "round_robin"}},
///     {"serviceConfig": {}}
/// ]"#;
/// let canary = ClientSelector::new().hostname("canary-1");
/// let config = choose(choices, &canary).unwrap().unwrap();
/// assert_eq!(config.load_balancing_policy(), Some("round_robin"));
///
/// let other = ClientSelector::new().hostname("web-7");
/// assert_eq!(choose(choices, &other).unwrap().unwrap().load_balancing_policy(), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSelector {
    language: String,
    hostname: Option<String>,
    /// This client's draw for `percentage`, 1 to 100: a choice with
    /// percentage `p` is chosen when `roll <= p`.
    roll: u8,
}

impl ClientSelector {
    /// A `rust` client with the machine's host name and a random draw.
    pub fn new() -> Self {
        ClientSelector {
            language: CLIENT_LANGUAGE.to_owned(),
            hostname: machine_hostname(),
            roll: random_roll(),
        }
    }

    /// Matches `clientHostname` against this name instead of the machine's.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Uses this draw for `percentage` (clamped to 1–100): a choice with
    /// percentage `p` applies when `roll <= p`, so a roll of 100 takes only
    /// choices at 100 % and a roll of 1 every choice above 0 %.
    pub fn roll(mut self, roll: u8) -> Self {
        self.roll = roll.clamp(1, 100);
        self
    }

    fn matches(&self, choice: &Choice<'_>) -> bool {
        let language = choice.languages.as_ref().is_none_or(|list| {
            list.is_empty() || list.iter().any(|l| l.eq_ignore_ascii_case(&self.language))
        });
        let hostname = choice.hostnames.as_ref().is_none_or(|list| {
            list.is_empty()
                || self
                    .hostname
                    .as_deref()
                    .is_some_and(|mine| list.contains(&mine))
        });
        let percentage = choice.percentage.is_none_or(|p| u64::from(self.roll) <= p);
        language && hostname && percentage
    }
}

impl Default for ClientSelector {
    fn default() -> Self {
        ClientSelector::new()
    }
}

/// The service config of the first choice in `choices` (the JSON after
/// `grpc_config=`) that matches `client`; `Ok(None)` when none matches.
///
/// Every choice is checked, matched or not: an unknown field, a field of the
/// wrong type, a percentage that is not a whole number from 0 to 100, or a
/// missing `serviceConfig` makes the whole record invalid (as gRPC C-core
/// does), and so does an invalid `serviceConfig` in the chosen entry.
pub fn choose(
    choices: &str,
    client: &ClientSelector,
) -> Result<Option<ServiceConfig>, ChoiceError> {
    let value: Value = serde_json::from_str(choices)
        .map_err(|e| ChoiceError::new(String::new(), ChoiceErrorKind::Syntax(e.to_string())))?;
    let Value::Array(entries) = &value else {
        return Err(ChoiceError::new(String::new(), wrong_type("array", &value)));
    };
    let mut parsed = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        parsed.push(Choice::parse(index, entry)?);
    }
    for choice in parsed {
        if client.matches(&choice) {
            return ServiceConfig::from_value(choice.service_config)
                .map(Some)
                .map_err(|error| {
                    ChoiceError::new(
                        format!("[{}].serviceConfig", choice.index),
                        ChoiceErrorKind::ServiceConfig(error),
                    )
                });
        }
    }
    Ok(None)
}

/// The service config in the text of a TXT record: `Ok(None)` when the text
/// does not start with `grpc_config=` (not a config) or no choice matches.
///
/// ```
/// use grpc_lb_resolve::service_config::{from_txt, ClientSelector};
///
/// let record = r#"grpc_config=[{"serviceConfig": {"loadBalancingPolicy": "round_robin"}}]"#;
/// let config = from_txt(record, &ClientSelector::new()).unwrap().unwrap();
/// assert_eq!(config.load_balancing_policy(), Some("round_robin"));
/// assert!(from_txt("v=spf1 -all", &ClientSelector::new()).unwrap().is_none());
/// ```
pub fn from_txt(text: &str, client: &ClientSelector) -> Result<Option<ServiceConfig>, ChoiceError> {
    match text.strip_prefix(TXT_ATTRIBUTE) {
        Some(choices) => choose(choices, client),
        None => Ok(None),
    }
}

/// One choice, checked.
struct Choice<'a> {
    index: usize,
    languages: Option<Vec<&'a str>>,
    hostnames: Option<Vec<&'a str>>,
    percentage: Option<u64>,
    service_config: &'a Value,
}

impl<'a> Choice<'a> {
    fn parse(index: usize, value: &'a Value) -> Result<Self, ChoiceError> {
        let path = |field: &str| {
            if field.is_empty() {
                format!("[{index}]")
            } else {
                format!("[{index}].{field}")
            }
        };
        let Value::Object(map) = value else {
            return Err(ChoiceError::new(path(""), wrong_type("object", value)));
        };
        if let Some(unknown) = map.keys().find(|key| !KNOWN_FIELDS.contains(&key.as_str())) {
            return Err(ChoiceError::new(
                path(unknown),
                ChoiceErrorKind::UnknownField,
            ));
        }
        let strings = |field: &str| -> Result<Option<Vec<&'a str>>, ChoiceError> {
            string_list(map, field).map_err(|kind| ChoiceError::new(path(field), kind))
        };
        let languages = strings("clientLanguage")?;
        let hostnames = strings("clientHostname")?;
        let percentage = match map.get("percentage") {
            None => None,
            Some(value) => Some(value.as_u64().filter(|p| *p <= 100).ok_or_else(|| {
                ChoiceError::new(
                    path("percentage"),
                    ChoiceErrorKind::Invalid(format!(
                        "must be a whole number from 0 to 100, got {value}"
                    )),
                )
            })?),
        };
        let service_config = match map.get("serviceConfig") {
            Some(config @ Value::Object(_)) => config,
            Some(other) => {
                return Err(ChoiceError::new(
                    path("serviceConfig"),
                    wrong_type("object", other),
                ))
            }
            None => {
                return Err(ChoiceError::new(
                    path("serviceConfig"),
                    ChoiceErrorKind::Missing,
                ))
            }
        };
        Ok(Choice {
            index,
            languages,
            hostnames,
            percentage,
            service_config,
        })
    }
}

const KNOWN_FIELDS: [&str; 4] = [
    "clientLanguage",
    "percentage",
    "clientHostname",
    "serviceConfig",
];

fn string_list<'a>(
    map: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<Vec<&'a str>>, ChoiceErrorKind> {
    let Some(value) = map.get(field) else {
        return Ok(None);
    };
    let Value::Array(items) = value else {
        return Err(wrong_type("array of strings", value));
    };
    items
        .iter()
        .map(|item| {
            item.as_str()
                .ok_or_else(|| wrong_type("array of strings", item))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn wrong_type(expected: &'static str, found: &Value) -> ChoiceErrorKind {
    ChoiceErrorKind::WrongType {
        expected,
        found: grpc_lb_service_config::json_type_name(found),
    }
}

/// A `grpc_config` TXT record that cannot be used, and where.
///
/// The message names the place by its JSON path within the choice list, e.g.
/// `invalid grpc_config: [1].percentage: must be a whole number from 0 to 100,
/// got 150`.
///
/// # Examples
///
/// ```
/// use grpc_lb_resolve::service_config::{choose, ChoiceErrorKind, ClientSelector};
///
/// let error = choose(r#"[{"serviceConfig": {}, "clientOS": ["linux"]}]"#, &ClientSelector::new())
///     .unwrap_err();
/// assert_eq!(error.path(), "[0].clientOS");
/// assert!(matches!(error.kind(), ChoiceErrorKind::UnknownField));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChoiceError {
    path: String,
    kind: ChoiceErrorKind,
}

/// What is wrong with a `grpc_config` TXT record.
///
/// # Examples
///
/// ```
/// use grpc_lb_resolve::service_config::{choose, ChoiceErrorKind, ClientSelector};
///
/// let client = ClientSelector::new();
/// let error = choose(r#"[{"percentage": 150, "serviceConfig": {}}]"#, &client).unwrap_err();
/// assert!(matches!(error.kind(), ChoiceErrorKind::Invalid(_)));
///
/// let error = choose(r#"[{"serviceConfig": {"methodConfig": 1}}]"#, &client).unwrap_err();
/// match error.kind() {
///     ChoiceErrorKind::ServiceConfig(inner) => assert_eq!(inner.field(), "methodConfig"),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChoiceErrorKind {
    /// The text after `grpc_config=` is not JSON.
    Syntax(String),
    /// A value of the wrong JSON type.
    WrongType {
        /// What the place must hold.
        expected: &'static str,
        /// What it holds.
        found: &'static str,
    },
    /// A field gRFC A2 does not define (which makes the record invalid).
    UnknownField,
    /// A required field is absent.
    Missing,
    /// The right type, but a value gRFC A2 does not accept.
    Invalid(String),
    /// The chosen `serviceConfig` is not a valid service config.
    ServiceConfig(ServiceConfigError),
}

impl ChoiceError {
    fn new(path: String, kind: ChoiceErrorKind) -> Self {
        ChoiceError { path, kind }
    }

    #[cfg_attr(not(feature = "dns"), allow(dead_code))]
    pub(crate) fn not_utf8() -> Self {
        ChoiceError::new(
            String::new(),
            ChoiceErrorKind::Syntax("not UTF-8".to_owned()),
        )
    }

    /// The JSON path of the offending place in the choice list; empty for the
    /// whole text.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong with it.
    pub fn kind(&self) -> &ChoiceErrorKind {
        &self.kind
    }
}

impl fmt::Display for ChoiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid grpc_config: ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        match &self.kind {
            ChoiceErrorKind::Syntax(message) => write!(f, "not JSON: {message}"),
            ChoiceErrorKind::WrongType { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            ChoiceErrorKind::UnknownField => f.write_str("unknown field"),
            ChoiceErrorKind::Missing => f.write_str("required but missing"),
            ChoiceErrorKind::Invalid(reason) => f.write_str(reason),
            ChoiceErrorKind::ServiceConfig(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for ChoiceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ChoiceErrorKind::ServiceConfig(error) => Some(error),
            _ => None,
        }
    }
}

/// The machine's host name, for `clientHostname`.
fn machine_hostname() -> Option<String> {
    #[cfg(unix)]
    {
        let name = rustix::system::uname();
        let name = name.nodename().to_string_lossy().into_owned();
        (!name.is_empty()).then_some(name)
    }
    #[cfg(not(unix))]
    {
        std::env::var("COMPUTERNAME").ok()
    }
}

/// 1 to 100, from the standard library's randomly seeded hasher (no `rand`
/// dependency for one draw per resolver).
fn random_roll() -> u8 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x5eed);
    (hasher.finish() % 100) as u8 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientSelector {
        ClientSelector::new().hostname("host-a").roll(50)
    }

    fn policy(choices: &str, client: &ClientSelector) -> Option<String> {
        choose(choices, client)
            .unwrap()
            .map(|c| c.load_balancing_policy().unwrap_or("").to_owned())
    }

    #[test]
    fn the_first_matching_choice_wins() {
        let choices = r#"[
            {"clientLanguage": ["go", "java"], "serviceConfig": {"loadBalancingPolicy": "go"}},
            {"clientLanguage": ["RUST"], "clientHostname": ["host-b"], "serviceConfig": {"loadBalancingPolicy": "b"}},
            {"percentage": 49, "serviceConfig": {"loadBalancingPolicy": "p49"}},
            {"percentage": 50, "clientLanguage": [], "serviceConfig": {"loadBalancingPolicy": "p50"}},
            {"serviceConfig": {"loadBalancingPolicy": "all"}}
        ]"#;
        assert_eq!(policy(choices, &client()).as_deref(), Some("p50"));
        assert_eq!(
            policy(choices, &client().hostname("host-b")).as_deref(),
            Some("b"),
            "language is case-insensitive"
        );
        assert_eq!(policy(choices, &client().roll(100)).as_deref(), Some("all"));
        assert_eq!(policy(choices, &client().roll(1)).as_deref(), Some("p49"));
    }

    #[test]
    fn no_matching_choice_is_no_config() {
        let choices = r#"[{"percentage": 0, "serviceConfig": {}},
                          {"clientHostname": ["elsewhere"], "serviceConfig": {}}]"#;
        assert_eq!(choose(choices, &client().roll(1)).unwrap(), None);
        assert_eq!(choose("[]", &client()).unwrap(), None);
        assert_eq!(from_txt("not_grpc_config=[]", &client()).unwrap(), None);
    }

    #[test]
    fn bad_records_are_typed_errors_naming_the_place() {
        let cases: &[(&str, &str, &str)] = &[
            ("", "", "not JSON"),
            ("{}", "", "expected array, found an object"),
            ("[1]", "[0]", "expected object, found a number"),
            (
                r#"[{"serviceConfig": {}, "extra": 1}]"#,
                "[0].extra",
                "unknown field",
            ),
            (
                r#"[{"percentage": 101, "serviceConfig": {}}]"#,
                "[0].percentage",
                "0 to 100",
            ),
            (
                r#"[{"percentage": -1, "serviceConfig": {}}]"#,
                "[0].percentage",
                "0 to 100",
            ),
            (
                r#"[{"percentage": 2.5, "serviceConfig": {}}]"#,
                "[0].percentage",
                "0 to 100",
            ),
            (
                r#"[{"percentage": "5", "serviceConfig": {}}]"#,
                "[0].percentage",
                "0 to 100",
            ),
            (
                r#"[{"clientLanguage": "rust", "serviceConfig": {}}]"#,
                "[0].clientLanguage",
                "array of strings",
            ),
            (
                r#"[{"clientHostname": [1], "serviceConfig": {}}]"#,
                "[0].clientHostname",
                "array of strings",
            ),
            (r#"[{"percentage": 100}]"#, "[0].serviceConfig", "required"),
            (
                r#"[{"serviceConfig": []}]"#,
                "[0].serviceConfig",
                "expected object",
            ),
            // A bad later choice spoils the record even when an earlier one matches.
            (
                r#"[{"serviceConfig": {}}, {"serviceConfig": 1}]"#,
                "[1].serviceConfig",
                "expected object",
            ),
            (
                r#"[{"serviceConfig": {"methodConfig": [{"timeout": "soon"}]}}]"#,
                "[0].serviceConfig",
                "methodConfig[0].timeout",
            ),
        ];
        for (text, path, message) in cases {
            let error = choose(text, &client()).expect_err(text);
            assert_eq!(error.path(), *path, "{text}: {error}");
            assert!(error.to_string().contains(message), "{text}: {error}");
        }
    }

    #[test]
    fn a_non_matching_choice_is_not_parsed_as_a_service_config() {
        // Only the chosen serviceConfig is validated as one, as gRPC does.
        let choices = r#"[{"clientLanguage": ["go"], "serviceConfig": {"methodConfig": 1}},
                          {"serviceConfig": {"loadBalancingPolicy": "ok"}}]"#;
        assert_eq!(policy(choices, &client()).as_deref(), Some("ok"));
    }

    #[test]
    fn rolls_are_clamped_and_random_ones_in_range() {
        assert_eq!(ClientSelector::new().roll(0).roll, 1);
        assert_eq!(ClientSelector::new().roll(200).roll, 100);
        for _ in 0..100 {
            assert!((1..=100).contains(&random_roll()));
        }
    }
}
