//! What a `call` load prints: the summary for people, the `--json` object
//! (its schema in docs/cli.md, fields only ever added), one CSV row per
//! call, and the numbers the HTML report ([`crate::html`]) draws.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::channel::GrpcChannel;
use crate::load::Tally;
use crate::schedule::Schedule;
use crate::timeline::{Seen, StateAt};

/// Everything a report shows.
pub(crate) struct Report<'a> {
    pub(crate) target: &'a str,
    /// `package.Service/Method` of every call.
    pub(crate) method: &'a str,
    pub(crate) policy: &'a str,
    /// From the start of the load to the end of its last call.
    pub(crate) elapsed: Duration,
    pub(crate) tally: &'a Tally,
    pub(crate) seen: &'a Seen,
    /// `None` for a grpclb target (no channel; its facts are in `grpclb`).
    pub(crate) channel: Option<&'a GrpcChannel>,
    /// A grpclb target's facts (crate::grpclb).
    pub(crate) grpclb: Option<Value>,
    /// A tree policy stack's facts (crate::tree_stack).
    pub(crate) tree: Option<Value>,
    /// The service config in force at the end, as parsed.
    pub(crate) service_config: Option<Value>,
    pub(crate) service_config_source: &'static str,
    /// The channel settings the flags gave.
    pub(crate) options: Value,
    pub(crate) schedule: Schedule,
    /// How long calls were started for: `--duration`, or the whole load.
    pub(crate) span: Duration,
    /// When the load started, from the start of the command (the time of
    /// the state timelines).
    pub(crate) load_offset: Duration,
}

/// One window of the schedule, as the report counts it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window {
    /// Its start, from the start of the load.
    pub(crate) start: Duration,
    /// Its length: the schedule's window, or less for the last one.
    pub(crate) length: Duration,
    pub(crate) target_rps: Option<f64>,
    /// Calls started in it, skipped ones included.
    pub(crate) requests: u64,
}

impl Window {
    pub(crate) fn rps(&self) -> f64 {
        let secs = self.length.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }
}

/// Milliseconds with three decimals, as a JSON number.
pub(crate) fn ms(value: f64) -> Value {
    json!((value * 1000.0).round() / 1000.0)
}

fn t_ms(d: Duration) -> Value {
    ms(d.as_secs_f64() * 1000.0)
}

fn states_json(states: &[StateAt]) -> Vec<Value> {
    states
        .iter()
        .map(|s| json!({"t_ms": t_ms(s.t), "state": s.state.as_str()}))
        .collect()
}

impl Report<'_> {
    pub(crate) fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.tally.calls as f64 / secs
        } else {
            0.0
        }
    }

    /// The schedule's windows over the span of the load; a window the load
    /// ended in is counted over the part it ran (none shorter than a
    /// hundredth of a window is shown).
    pub(crate) fn windows(&self) -> Vec<Window> {
        let width = self.schedule.window();
        let mut windows = Vec::new();
        let mut k = 0u64;
        loop {
            let start = width * k as u32;
            if start >= self.span {
                break;
            }
            let length = width.min(self.span - start);
            if length < width / 100 && k > 0 {
                break;
            }
            windows.push(Window {
                start,
                length,
                target_rps: self.schedule.target_rate(k),
                requests: self.tally.windows.get(&k).copied().unwrap_or(0),
            });
            k += 1;
            if k > 100_000 {
                break;
            }
        }
        windows
    }

    /// The `--json` object; its schema is documented in docs/cli.md and kept
    /// stable: fields are only ever added.
    pub(crate) fn json(&self) -> Value {
        let t = self.tally;
        let codes: Map<String, Value> = t
            .codes
            .iter()
            .map(|(code, n)| ((*code).to_owned(), json!(n)))
            .collect();
        let backends: Map<String, Value> = t
            .backends
            .iter()
            .map(|(addr, n)| (addr.clone(), json!(n)))
            .collect();
        let errors: Vec<Value> = t
            .top_errors(10)
            .into_iter()
            .map(|(code, message, count)| json!({"code": code, "message": message, "count": count}))
            .collect();
        let subchannels: Vec<Value> = self
            .channel
            .map(|channel| channel.subchannels())
            .unwrap_or_default()
            .into_iter()
            .map(|s| {
                json!({
                    "address": s.address.to_string(),
                    "state": s.state.as_str(),
                    "connect_attempts": s.connect_attempts,
                })
            })
            .collect();
        let subchannel_states: Map<String, Value> = self
            .seen
            .subchannels
            .iter()
            .map(|(address, states)| (address.clone(), json!(states_json(states))))
            .collect();
        let windows: Vec<Value> = self
            .windows()
            .iter()
            .map(|w| {
                json!({
                    "t_ms": t_ms(w.start),
                    "duration_ms": t_ms(w.length),
                    "target_rps": w.target_rps.map(ms),
                    "requests": w.requests,
                    "rps": ms(w.rps()),
                })
            })
            .collect();
        let mut load = self.schedule.json();
        load["windows"] = json!(windows);
        let mut object = json!({
            "target": self.target,
            "method": self.method,
            "policy": self.policy,
            "requests": t.calls,
            "ok": t.ok,
            "failed": t.calls - t.ok,
            "skipped": t.skipped,
            "duration_ms": t_ms(self.elapsed),
            "rps": ms(self.rate()),
            "codes": codes,
            "backends": backends,
            "latency_ms": {
                "p50": ms(t.latency_ms(0.5)),
                "p90": ms(t.latency_ms(0.9)),
                "p99": ms(t.latency_ms(0.99)),
                "p999": ms(t.latency_ms(0.999)),
                "max": ms(t.max_latency_ms()),
            },
            "load": load,
            "states": states_json(&self.seen.states),
            "subchannel_states": subchannel_states,
            "errors": errors,
            "subchannels": subchannels,
            "service_config": self.service_config,
            "service_config_source": self.service_config_source,
            "options": self.options,
        });
        if let Some(grpclb) = &self.grpclb {
            object["grpclb"] = grpclb.clone();
        }
        if let Some(tree) = &self.tree {
            object["tree"] = tree.clone();
        }
        object
    }

    /// The summary for people (`--format summary`, the default).
    pub(crate) fn text(&self) -> String {
        let t = self.tally;
        let mut out = String::new();
        let _ = writeln!(out, "target     {} ({})", self.target, self.policy);
        let _ = writeln!(out, "method     {}", self.method);
        if let Some(config) = &self.service_config {
            let _ = writeln!(
                out,
                "config     {config} (from {})",
                self.service_config_source
            );
        }
        if let Some(grpclb) = &self.grpclb {
            let _ = writeln!(
                out,
                "grpclb     balancers {} (from {}), mode {} at the end, {} dropped",
                grpclb["balancers"],
                grpclb["balancers_from"].as_str().unwrap_or(""),
                grpclb["mode"].as_str().unwrap_or(""),
                grpclb["dropped"]
            );
        }
        let _ = writeln!(
            out,
            "requests   {} in {:.2} s ({:.1}/s): {} OK, {} failed",
            t.calls,
            self.elapsed.as_secs_f64(),
            self.rate(),
            t.ok,
            t.calls - t.ok
        );
        if t.skipped > 0 {
            let _ = writeln!(
                out,
                "skipped    {} (made, not counted: --skip-first)",
                t.skipped
            );
        }
        if self.schedule != Schedule::Unpaced {
            let windows: Vec<String> = self
                .windows()
                .iter()
                .map(|w| match w.target_rps {
                    Some(target) => format!("{:.1}/s (of {target:.1})", w.rps()),
                    None => format!("{:.1}/s", w.rps()),
                })
                .collect();
            let _ = writeln!(
                out,
                "load       {} every {:.2} s: {}",
                self.schedule.name(),
                self.schedule.window().as_secs_f64(),
                windows.join(", ")
            );
        }
        let codes: Vec<String> = t.codes.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let _ = writeln!(out, "codes      {}", codes.join(", "));
        let mut label = "backends";
        if t.backends.is_empty() {
            let _ = writeln!(out, "backends   none answered");
        }
        for (addr, n) in &t.backends {
            let share = 100.0 * *n as f64 / t.calls.max(1) as f64;
            let _ = writeln!(out, "{label:<10} {addr:<24} {n:>8} ({share:.1}%)");
            label = "";
        }
        let _ = writeln!(
            out,
            "latency    p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            t.latency_ms(0.5),
            t.latency_ms(0.9),
            t.latency_ms(0.99),
            t.latency_ms(0.999),
            t.max_latency_ms()
        );
        let states: Vec<String> = self
            .seen
            .states
            .iter()
            .map(|s| format!("{:.1} ms {}", s.t.as_secs_f64() * 1000.0, s.state))
            .collect();
        // A grpclb target has no channel, so no states.
        if !states.is_empty() {
            let _ = writeln!(out, "states     {}", states.join(" -> "));
        }
        let mut label = "errors";
        for (code, message, count) in t.top_errors(5) {
            let _ = writeln!(out, "{label:<10} {count} x {code}: {message}");
            label = "";
        }
        out
    }

    /// `--format csv`: a header, then one row per tallied call in the order
    /// they started.
    pub(crate) fn csv(&self) -> String {
        let mut out = String::from("start_ms,latency_ms,status,backend,error\n");
        for record in &self.tally.records {
            let _ = writeln!(
                out,
                "{:.3},{:.3},{},{},{}",
                record.start.as_secs_f64() * 1000.0,
                record.latency.as_secs_f64() * 1000.0,
                record.code,
                csv_field(record.backend.as_deref().unwrap_or("")),
                csv_field(&record.error),
            );
        }
        out
    }
}

/// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line
/// break, its quotes doubled.
pub(crate) fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

impl std::fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Report")
            .field("target", &self.target)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("127.0.0.1:80"), "127.0.0.1:80");
        assert_eq!(csv_field(""), "");
        assert_eq!(csv_field("a, b"), "\"a, b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
