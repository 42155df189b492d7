//! The etcd resolver: endpoints registered in etcd under a key prefix, kept
//! current with a watch (cargo feature `etcd`).
//!
//! It reads the convention of etcd's own gRPC naming package
//! (`go.etcd.io/etcd/client/v3/naming/endpoints`, which grpc-go services use to
//! register themselves): every endpoint of a service is one key under the
//! service's prefix, conventionally `<prefix>/<addr>`, whose value is JSON:
//!
//! ```text
//! services/greeter/127.0.0.1:50051 = {"Addr": "127.0.0.1:50051", "Metadata": {"zone": "a"}}
//! ```
//!
//! - `Addr` is a socket address (`127.0.0.1:50051`, `[::1]:50051`), or a
//!   `host:port` whose host is a name, which becomes an [`Address::Name`] for the
//!   connector to resolve.
//! - `Metadata` is optional. A JSON object becomes [`Attributes::metadata`](crate::Attributes::metadata):
//!   string values as they are, other values as their JSON text. Any other JSON
//!   value is kept whole, as JSON text, under the key `"metadata"`.
//! - Field names match as Go's `encoding/json` matches them: exactly, or else
//!   without regard to case. Other fields (such as the old `Op`) are ignored.
//! - A value that is not such JSON, or whose `Addr` is not an address, is
//!   skipped with a warning naming the key: bad input never fails the
//!   resolution nor removes good endpoints. A bad value written over a good one
//!   leaves the good one in place, as etcd's own watcher does.
//!
//! # Targets
//!
//! | target | etcd cluster | key prefix |
//! |---|---|---|
//! | `etcd:///services/greeter` | the endpoints given to [`EtcdResolver::new`] | `services/greeter/` |
//! | `etcd://127.0.0.1:2379/services/greeter` | `http://127.0.0.1:2379` | `services/greeter/` |
//! | `etcd://10.0.0.1:2379,10.0.0.2:2379/services/greeter` | both | `services/greeter/` |
//!
//! The prefix always ends with `/`, so `services/greeter` does not pick up the
//! keys of `services/greeter-canary`.
//!
//! # Behaviour
//!
//! The stream connects, lists the prefix and reports the whole set as an
//! [`Update::Reset`], then watches the prefix from the revision after the list,
//! so that no change between the two is lost: a put is an [`Update::Add`], a
//! delete an [`Update::Remove`]. On any failure (connecting, listing, the watch
//! failing, ending or being cancelled, say because its revision was compacted)
//! it yields one `Err` naming the cause, so the last good set stays in use,
//! waits out the reconnect backoff (gRPC's connection backoff unless set with
//! [`EtcdResolver::with_backoff`]), and starts over with a fresh list and
//! `Reset`, which [`ResolverDiscover`](crate::ResolverDiscover) diffs against the
//! set it has, so endpoints that stayed do not flap. The backoff starts over
//! once a watch is established.
//!
//! The stream never ends on its own, spawns no tasks and holds one etcd
//! connection while it is polled; dropping it closes the connection. It does
//! nothing per request, and ignores `ResolveNow`: the watch already reports
//! every change as it happens.
//!
//! # Examples
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//!
//! use futures::StreamExt;
//! use grpc_lb_core::ResolveNow;
//! use grpc_lb_resolve::etcd::EtcdResolver;
//! use grpc_lb_resolve::Registry;
//!
//! let mut registry = Registry::with_defaults();
//! registry.register(
//!     EtcdResolver::new(["http://127.0.0.1:2379"]).with_connect_timeout(Duration::from_secs(5)),
//! );
//! let mut updates = registry.resolve("etcd:///services/greeter", ResolveNow::new())?;
//! while let Some(update) = updates.next().await {
//!     println!("{update:?}");
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, KeyValue, WatchOptions, WatchResponse,
    WatchStream,
};
use futures::stream;
use grpc_lb_backoff::{Backoff, BackoffConfig};
use grpc_lb_core::{BoxError, ResolveNow};
use serde_json::Value;

use crate::resolver::{Resolver, UpdateStream};
use crate::target::Target;
use crate::update::{Address, Endpoint, Update};

/// The scheme this resolver answers for: `etcd`.
pub const SCHEME: &str = "etcd";

/// How long connecting to etcd and listing the prefix may take by default:
/// 20 seconds, gRPC's minimum connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = BackoffConfig::DEFAULT_MIN_CONNECT_TIMEOUT;

/// HTTP/2 keepalive on the etcd connection, so a silently dead server ends the
/// watch. etcd refuses pings more often than every 5 s (`--grpc-keepalive-min-time`).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves `etcd` targets: the endpoints registered under a key prefix in etcd.
///
/// See the [module documentation](self) for the key convention, the target
/// syntax and the behaviour on failure.
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_resolve::{etcd::EtcdResolver, Registry};
///
/// let etcd = EtcdResolver::new(["http://127.0.0.1:2379"])
///     .with_connect_timeout(Duration::from_secs(5));
/// let mut registry = Registry::with_defaults();
/// registry.register(etcd);
///
/// // Targets such as etcd:///services/greeter now resolve through that cluster;
/// // nothing connects until one is resolved.
/// assert!(registry.parse("etcd:///services/greeter").is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct EtcdResolver {
    endpoints: Vec<String>,
    backoff: BackoffConfig,
    connect_timeout: Duration,
}

impl EtcdResolver {
    /// A resolver whose targets without an authority (`etcd:///prefix`) are
    /// looked up in the etcd cluster at `endpoints`, such as
    /// `["http://127.0.0.1:2379"]`. An endpoint without `http://` means plain
    /// HTTP; `https://` endpoints are not supported (etcd-client is built
    /// without TLS).
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        EtcdResolver {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            backoff: BackoffConfig::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Sets the backoff between attempts to reconnect to etcd after a failure
    /// (default: gRPC's connection backoff, 1 s growing ×1.6 with ±20 % jitter
    /// up to 120 s).
    pub fn with_backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets how long one attempt to connect to etcd and list the prefix may
    /// take before it counts as failed (default: [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

impl Resolver for EtcdResolver {
    fn scheme(&self) -> &str {
        SCHEME
    }

    fn resolve(&self, target: &Target, _resolve_now: ResolveNow) -> Result<UpdateStream, BoxError> {
        let Target::Custom {
            authority,
            endpoint,
            ..
        } = target
        else {
            return Err(format!("the etcd resolver cannot resolve {target}").into());
        };
        let endpoints: Vec<String> = match authority {
            Some(authority) => authority
                .split(',')
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect(),
            None => self.endpoints.clone(),
        };
        if endpoints.is_empty() {
            return Err(format!(
                "no etcd endpoints for {target}: name them in the target \
                 (etcd://host:port/prefix) or give them to EtcdResolver::new"
            )
            .into());
        }
        let prefix = endpoint.trim_start_matches('/');
        if prefix.is_empty() {
            return Err(format!("{target} names no key prefix").into());
        }
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let run = Run {
            context: Context {
                endpoints,
                prefix,
                connect_timeout: self.connect_timeout,
            },
            backoff: Backoff::new(self.backoff),
            keys: KeySet::default(),
            pending: VecDeque::new(),
            session: None,
            delay: None,
        };
        Ok(Box::pin(stream::unfold(run, |mut run| async move {
            loop {
                if let Some(item) = run.pending.pop_front() {
                    return Some((item, run));
                }
                run.step().await;
            }
        })))
    }
}

/// Where one stream looks.
#[derive(Debug)]
struct Context {
    endpoints: Vec<String>,
    prefix: String,
    connect_timeout: Duration,
}

impl Context {
    fn error(&self, cause: impl fmt::Display) -> BoxError {
        format!(
            "etcd resolver for prefix {:?} at {}: {cause}",
            self.prefix,
            self.endpoints.join(",")
        )
        .into()
    }

    async fn connect(&self) -> Result<Client, etcd_client::Error> {
        let options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
            // A member cut off from its cluster cancels the watch rather than
            // keeping it open and silent.
            .with_require_leader(true);
        Client::connect(&self.endpoints, Some(options)).await
    }

    /// Connects and lists the prefix: the client, the keys, and the revision
    /// they were read at.
    async fn list(&self) -> Result<(Client, Vec<KeyValue>, i64), String> {
        let mut client = self
            .connect()
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let mut response = client
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| format!("listing the prefix failed: {e}"))?;
        let revision = response
            .header()
            .map(|h| h.revision())
            .ok_or("the list response has no revision")?;
        Ok((client, response.take_kvs(), revision))
    }

    async fn watch(&self, client: &mut Client, revision: i64) -> Result<WatchStream, String> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        client
            .watch(self.prefix.as_str(), Some(options))
            .await
            .map_err(|e| format!("cannot start the watch: {e}"))
    }
}

/// An established connection and its watch.
struct Session {
    // Kept so the connection outlives nothing but this session.
    _client: Client,
    watch: WatchStream,
}

/// The state of one update stream.
struct Run {
    context: Context,
    backoff: Backoff,
    keys: KeySet,
    pending: VecDeque<Result<Update, BoxError>>,
    session: Option<Session>,
    /// How long to wait before the next connection attempt.
    delay: Option<Duration>,
}

impl Run {
    /// Does one unit of work, which may queue items in `pending`.
    async fn step(&mut self) {
        let message = match self.session.as_mut() {
            None => return self.connect().await,
            Some(session) => session.watch.message().await,
        };
        match message {
            Ok(Some(response)) => self.on_watch_response(response),
            Ok(None) => self.fail("the watch stream ended"),
            Err(e) => self.fail(format!("the watch failed: {e}")),
        }
    }

    async fn connect(&mut self) {
        if let Some(delay) = self.delay.take() {
            tokio::time::sleep(delay).await;
        }
        let context = &self.context;
        tracing::debug!(prefix = %context.prefix, endpoints = ?context.endpoints, "etcd resolver connecting");
        let attempt = async {
            let (mut client, kvs, revision) = context.list().await?;
            let watch = context.watch(&mut client, revision).await;
            Ok::<_, String>((client, kvs, revision, watch))
        };
        let (client, kvs, revision, watch) =
            match tokio::time::timeout(context.connect_timeout, attempt).await {
                Ok(Ok(connected)) => connected,
                Ok(Err(cause)) => return self.fail(cause),
                Err(_) => {
                    return self.fail(format!(
                        "connecting and listing timed out after {:?}",
                        context.connect_timeout
                    ))
                }
            };
        let endpoints = self.keys.reset(&kvs);
        tracing::info!(
            prefix = %context.prefix,
            endpoints = ?context.endpoints,
            revision,
            count = endpoints.len(),
            "etcd resolver listed the prefix"
        );
        self.pending.push_back(Ok(Update::Reset(endpoints)));
        match watch {
            Ok(watch) => {
                self.session = Some(Session {
                    _client: client,
                    watch,
                })
            }
            Err(cause) => self.fail(cause),
        }
    }

    fn on_watch_response(&mut self, response: WatchResponse) {
        if response.canceled() || response.compact_revision() != 0 {
            let cause = if response.compact_revision() != 0 {
                format!(
                    "the watch was cancelled: its revision was compacted (compact revision {})",
                    response.compact_revision()
                )
            } else if response.cancel_reason().is_empty() {
                "the watch was cancelled".to_owned()
            } else {
                format!("the watch was cancelled: {}", response.cancel_reason())
            };
            return self.fail(cause);
        }
        if response.created() {
            tracing::debug!(prefix = %self.context.prefix, "etcd resolver watching");
            self.backoff.reset();
        }
        let mut batch = Batch::default();
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let key = key_name(kv.key());
            match event.event_type() {
                EventType::Put => {
                    if let Some(endpoint) = parse_endpoint(&key, kv.value()) {
                        self.keys.apply(&key, Some(endpoint), &mut batch);
                    }
                }
                EventType::Delete => self.keys.apply(&key, None, &mut batch),
            }
        }
        for update in batch.0 {
            tracing::debug!(prefix = %self.context.prefix, ?update, "etcd resolver update");
            self.pending.push_back(Ok(update));
        }
    }

    /// Reports `cause`, drops the connection and schedules a reconnect.
    fn fail(&mut self, cause: impl fmt::Display) {
        let delay = self.backoff.next_delay();
        let error = self.context.error(cause);
        tracing::warn!(%error, ?delay, "etcd resolver failed; reconnecting after the delay");
        self.session = None;
        self.delay = Some(delay);
        self.pending.push_back(Err(error));
    }
}

/// The endpoints by the key that registers them.
///
/// Several keys may name one address; the last key (in key order) wins, and
/// the address goes only when no key names it any more.
#[derive(Debug, Default)]
struct KeySet {
    by_key: BTreeMap<String, Endpoint>,
}

impl KeySet {
    /// Replaces everything with the listed keys; returns the set.
    fn reset(&mut self, kvs: &[KeyValue]) -> Vec<Endpoint> {
        self.by_key = kvs
            .iter()
            .filter_map(|kv| {
                let key = key_name(kv.key());
                let endpoint = parse_endpoint(&key, kv.value())?;
                Some((key, endpoint))
            })
            .collect();
        let mut by_address = BTreeMap::new();
        for endpoint in self.by_key.values() {
            by_address.insert(endpoint.address.clone(), endpoint.clone());
        }
        by_address.into_values().collect()
    }

    /// What the set says for `address`.
    fn effective(&self, address: &Address) -> Option<&Endpoint> {
        self.by_key.values().rfind(|e| e.address == *address)
    }

    /// Sets (or with `None` deletes) `key`, recording the changes to the set.
    fn apply(&mut self, key: &str, new: Option<Endpoint>, batch: &mut Batch) {
        let mut touched: Vec<Address> = Vec::with_capacity(2);
        if let Some(old) = self.by_key.get(key) {
            touched.push(old.address.clone());
        }
        if let Some(new) = &new {
            if !touched.contains(&new.address) {
                touched.push(new.address.clone());
            }
        }
        let before: Vec<Option<Endpoint>> =
            touched.iter().map(|a| self.effective(a).cloned()).collect();
        match new {
            Some(endpoint) => self.by_key.insert(key.to_owned(), endpoint),
            None => self.by_key.remove(key),
        };
        for (address, before) in touched.into_iter().zip(before) {
            match (before, self.effective(&address)) {
                (before, Some(after)) if before.as_ref() != Some(after) => batch.add(after.clone()),
                (Some(_), None) => batch.remove(address),
                _ => {}
            }
        }
    }
}

/// Updates from one watch response, adjacent ones of a kind merged.
#[derive(Debug, Default)]
struct Batch(Vec<Update>);

impl Batch {
    fn add(&mut self, endpoint: Endpoint) {
        match self.0.last_mut() {
            Some(Update::Add(endpoints)) => endpoints.push(endpoint),
            _ => self.0.push(Update::Add(vec![endpoint])),
        }
    }

    fn remove(&mut self, address: Address) {
        match self.0.last_mut() {
            Some(Update::Remove(addresses)) => addresses.push(address),
            _ => self.0.push(Update::Remove(vec![address])),
        }
    }
}

fn key_name(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// The endpoint a key's value describes, or `None` (with a warning) if the value
/// does not follow the convention.
fn parse_endpoint(key: &str, value: &[u8]) -> Option<Endpoint> {
    match endpoint_from_json(value) {
        Ok(endpoint) => Some(endpoint),
        Err(reason) => {
            tracing::warn!(
                key,
                reason,
                "etcd resolver skipped a key whose value is not an endpoint"
            );
            None
        }
    }
}

fn endpoint_from_json(value: &[u8]) -> Result<Endpoint, String> {
    let value: Value = serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("not a JSON object".to_owned());
    };
    let addr = match field(&object, "Addr") {
        Some(Value::String(addr)) => addr,
        Some(_) => return Err("Addr is not a string".to_owned()),
        None => return Err("no Addr".to_owned()),
    };
    let address = parse_address(addr).map_err(|reason| format!("Addr {addr:?}: {reason}"))?;
    let mut endpoint = Endpoint::new(address);
    match field(&object, "Metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(metadata)) => {
            for (k, v) in metadata {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                endpoint.attributes.metadata.insert(k.clone(), v);
            }
        }
        Some(other) => {
            endpoint
                .attributes
                .metadata
                .insert("metadata".to_owned(), other.to_string());
        }
    }
    Ok(endpoint)
}

/// A field as Go's `encoding/json` finds it: the exact name, else any case.
fn field<'a>(object: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// A socket address, or a `host:port` with a host name.
fn parse_address(addr: &str) -> Result<Address, &'static str> {
    if let Ok(socket) = addr.parse::<SocketAddr>() {
        if socket.port() == 0 {
            return Err("port 0 is not a port to connect to");
        }
        return Ok(Address::Socket(socket));
    }
    let (host, port) = addr.rsplit_once(':').ok_or("no port")?;
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err("not a socket address or host:port with a valid port"),
        Ok(_) => {}
    }
    if !is_host_name(host) {
        return Err("not a socket address or host:port with a valid host name");
    }
    Ok(Address::Name(addr.to_owned()))
}

/// A DNS name: labels of letters, digits, `-` and `_`, the last not all digits
/// (so a broken IPv4 literal is not taken for a name).
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    let last_not_numeric = host
        .rsplit('.')
        .next()
        .is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && last_not_numeric
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(s: &str) -> Address {
        Address::Socket(s.parse().unwrap())
    }

    #[test]
    fn parses_the_endpoints_convention() {
        let e = endpoint_from_json(br#"{"Addr":"127.0.0.1:50051"}"#).unwrap();
        assert_eq!(e, Endpoint::new(socket("127.0.0.1:50051")));

        let e = endpoint_from_json(
            br#"{"Op":0,"Addr":"[::1]:80","Metadata":{"zone":"a","weight":3,"tags":["x"]}}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            Endpoint::new(socket("[::1]:80"))
                .with_metadata("zone", "a")
                .with_metadata("weight", "3")
                .with_metadata("tags", r#"["x"]"#)
        );

        let e = endpoint_from_json(br#"{"addr":"greeter.local:50051","metadata":"v1"}"#).unwrap();
        assert_eq!(
            e,
            Endpoint::new(Address::Name("greeter.local:50051".into()))
                .with_metadata("metadata", r#""v1""#)
        );

        let e = endpoint_from_json(br#"{"Addr":"localhost:1","Metadata":null}"#).unwrap();
        assert_eq!(e, Endpoint::new(Address::Name("localhost:1".into())));
    }

    #[test]
    fn refuses_what_is_not_an_endpoint() {
        for bad in [
            &b"not json"[..],
            b"",
            b"\xff\xfe",
            b"[]",
            b"\"127.0.0.1:1\"",
            br#"{}"#,
            br#"{"Addr":5}"#,
            br#"{"Addr":""}"#,
            br#"{"Addr":"not an address"}"#,
            br#"{"Addr":"127.0.0.1"}"#,
            br#"{"Addr":"127.0.0.1:0"}"#,
            br#"{"Addr":"127.0.0.1:99999"}"#,
            br#"{"Addr":"1.2.3:80"}"#,
            br#"{"Addr":"999.1.1.1:80"}"#,
            br#"{"Addr":":80"}"#,
            br#"{"Addr":"-bad-.example:80"}"#,
            br#"{"Addr":"[::1]"}"#,
        ] {
            assert!(
                endpoint_from_json(bad).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn kv_apply(keys: &mut KeySet, key: &str, addr: Option<&str>) -> Vec<Update> {
        let mut batch = Batch::default();
        let endpoint = addr.map(|a| Endpoint::new(parse_address(a).unwrap()));
        keys.apply(key, endpoint, &mut batch);
        batch.0
    }

    #[test]
    fn keys_map_to_addresses() {
        let mut keys = KeySet::default();
        let a = "127.0.0.1:1";
        let b = "127.0.0.1:2";
        assert_eq!(
            kv_apply(&mut keys, "p/a", Some(a)),
            [Update::Add(vec![Endpoint::new(socket(a))])]
        );
        // The same again changes nothing.
        assert_eq!(kv_apply(&mut keys, "p/a", Some(a)), []);
        // A second key for the same address: nothing new.
        assert_eq!(kv_apply(&mut keys, "p/a2", Some(a)), []);
        // Deleting one of the two keeps the address.
        assert_eq!(kv_apply(&mut keys, "p/a", None), []);
        // Moving the remaining key to another address.
        assert_eq!(
            kv_apply(&mut keys, "p/a2", Some(b)),
            [
                Update::Remove(vec![socket(a)]),
                Update::Add(vec![Endpoint::new(socket(b))])
            ]
        );
        assert_eq!(
            kv_apply(&mut keys, "p/a2", None),
            [Update::Remove(vec![socket(b)])]
        );
        // Deleting an unknown key (say one whose value was bad) changes nothing.
        assert_eq!(kv_apply(&mut keys, "p/unknown", None), []);
    }

    #[test]
    fn batches_merge_adjacent_updates() {
        let mut batch = Batch::default();
        batch.add(Endpoint::new(socket("127.0.0.1:1")));
        batch.add(Endpoint::new(socket("127.0.0.1:2")));
        batch.remove(socket("127.0.0.1:3"));
        batch.add(Endpoint::new(socket("127.0.0.1:3")));
        assert_eq!(batch.0.len(), 3);
    }

    #[test]
    fn targets_choose_endpoints_and_prefix() {
        let resolver = EtcdResolver::new(Vec::<String>::new());
        let custom = |authority: Option<&str>, endpoint: &str| Target::Custom {
            scheme: "etcd".into(),
            authority: authority.map(Into::into),
            endpoint: endpoint.into(),
        };
        // No endpoints anywhere.
        assert!(resolver
            .resolve(&custom(None, "services/greeter"), ResolveNow::new())
            .is_err());
        // No prefix.
        assert!(resolver
            .resolve(&custom(Some("127.0.0.1:2379"), "/"), ResolveNow::new())
            .is_err());
        // Not an etcd target.
        let ipv4 = Target::parse("ipv4:127.0.0.1:1").unwrap();
        assert!(resolver.resolve(&ipv4, ResolveNow::new()).is_err());
        // Starting a stream does no I/O.
        assert!(resolver
            .resolve(
                &custom(Some("127.0.0.1:2379"), "services/greeter"),
                ResolveNow::new()
            )
            .is_ok());
    }
}
