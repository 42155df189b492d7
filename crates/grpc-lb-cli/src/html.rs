//! The HTML report of a `call` load (`--html FILE`, `--format html`): one
//! self-contained page, inline CSS and SVG drawn here (no script, no font,
//! nothing fetched), with the run's numbers, the latency histogram, the calls
//! per second against the schedule's target, each backend's share of the
//! calls over time, and the state timeline of the channel and of each
//! subchannel.
//!
//! Every chart is an `<svg class="chart" id=...>` whose data points are
//! elements with a class and `data-` attributes (`rect.bar`, `rect.share`,
//! `circle.point`, `rect.state`), each with a `<title>` a browser shows on
//! hover; docs/cli.md names them for scripts that read the page.

use std::fmt::Write as _;
use std::time::Duration;

use grpc_lb::ConnectivityState;

use crate::load::{BUCKET, NO_BACKEND};
use crate::report::Report;
use crate::timeline::StateAt;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 220.0;
/// Left margin (the y axis' labels), right, top and bottom (the x axis').
const LEFT: f64 = 140.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 30.0;
/// The most bars of the histogram and columns of the time series.
const BINS: usize = 40;
const COLUMNS: u64 = 120;

/// Backend colours, in the order of the backends' addresses.
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];
/// The colour of calls no backend answered.
const NONE_COLOUR: &str = "#555555";

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;background:#fff}\
h1{font-size:20px}h2{font-size:16px;margin-top:28px}\
table.summary{border-collapse:collapse}table.summary td{padding:2px 12px 2px 0}\
svg.chart{border:1px solid #ddd;background:#fafafa;display:block}\
.axis{stroke:#888;stroke-width:1}.grid{stroke:#e4e4e4;stroke-width:1}\
text{font-size:11px;fill:#333}.bar{fill:#4e79a7}\
.throughput{fill:none;stroke:#4e79a7;stroke-width:2}.point{fill:#4e79a7}\
.target{fill:none;stroke:#e15759;stroke-width:1.5;stroke-dasharray:5 3}\
.legend span{display:inline-block;margin-right:16px}\
.swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}\
.s-IDLE{fill:#c8c8c8}.s-CONNECTING{fill:#f2c14e}.s-READY{fill:#59a14f}\
.s-TRANSIENT_FAILURE{fill:#e15759}.s-SHUTDOWN{fill:#333}";

/// The whole page.
pub(crate) fn render(report: &Report<'_>) -> String {
    let t = report.tally;
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>grpc-lb call {target}</title><style>{STYLE}</style></head><body>\n\
         <h1>grpc-lb call {target}</h1>\n<table class=\"summary\">",
        target = escape(report.target)
    );
    let rows = [
        ("method", report.method.to_owned()),
        ("policy", report.policy.to_owned()),
        (
            "requests",
            format!(
                "{} in {:.2} s ({:.1}/s): {} OK, {} failed{}",
                t.calls,
                report.elapsed.as_secs_f64(),
                report.rate(),
                t.ok,
                t.calls - t.ok,
                if t.skipped > 0 {
                    format!(", {} skipped", t.skipped)
                } else {
                    String::new()
                }
            ),
        ),
        (
            "load",
            format!(
                "{} schedule, windows of {:.2} s",
                report.schedule.name(),
                report.schedule.window().as_secs_f64()
            ),
        ),
        (
            "latency",
            format!(
                "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
                t.latency_ms(0.5),
                t.latency_ms(0.9),
                t.latency_ms(0.99),
                t.latency_ms(0.999),
                t.max_latency_ms()
            ),
        ),
        (
            "codes",
            t.codes
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ];
    for (name, value) in rows {
        let _ = write!(page, "<tr><td>{name}</td><td>{}</td></tr>", escape(&value));
    }
    page.push_str("</table>\n");
    let end = axis_end(report);
    page.push_str("<h2>Latency histogram</h2>\n");
    page.push_str(&histogram(report));
    page.push_str("<h2>Calls per second</h2>\n");
    page.push_str(&throughput(report, end));
    page.push_str("<h2>Each backend's share of the calls over time</h2>\n");
    page.push_str(&shares(report, end));
    page.push_str("<h2>Connectivity states: the channel and each subchannel</h2>\n");
    page.push_str(&states(report, end));
    page.push_str("</body></html>\n");
    page
}

/// The time axis' end, from the start of the command: the load's end, or the
/// last state change if later.
fn axis_end(report: &Report<'_>) -> Duration {
    let mut end = report.load_offset + report.elapsed;
    let seen = report.seen;
    let last = seen
        .states
        .iter()
        .chain(seen.subchannels.iter().flat_map(|(_, s)| s.iter()))
        .map(|s| s.t)
        .max()
        .unwrap_or_default();
    end = end.max(last);
    end.max(Duration::from_millis(1))
}

fn open_svg(out: &mut String, id: &str, height: f64) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"{id}\" width=\"{WIDTH}\" \
         height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\">"
    );
}

/// The x axis of time in seconds, with ticks and grid lines, for a plot
/// area from TOP to `bottom`.
fn time_axis(out: &mut String, end: Duration, bottom: f64) {
    let secs = end.as_secs_f64();
    let step = nice_step(secs / 8.0);
    let mut tick = 0.0;
    while tick <= secs + 1e-9 {
        let x = x_of(tick, secs);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{bottom}\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            bottom + 14.0,
            trim(tick, step)
        );
        tick += step;
    }
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\"/>\
         <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">s</text>",
        WIDTH - RIGHT,
        WIDTH - RIGHT,
        bottom + 26.0
    );
}

fn x_of(secs: f64, end_secs: f64) -> f64 {
    LEFT + (WIDTH - LEFT - RIGHT) * (secs / end_secs).clamp(0.0, 1.0)
}

/// 1, 2 or 5 times a power of ten, at least `rough`.
fn nice_step(rough: f64) -> f64 {
    if !(rough.is_finite() && rough > 0.0) {
        return 1.0;
    }
    let power = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * power)
}

/// A tick label: as many decimals as the step needs.
fn trim(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{value:.decimals$}")
}

/// The y axis from 0 to `max`, with a few labelled grid lines.
fn value_axis(out: &mut String, max: f64, bottom: f64, unit: &str) {
    let step = nice_step(max / 4.0);
    let mut tick = 0.0;
    while tick <= max + 1e-9 {
        let y = bottom - (bottom - TOP) * tick / max;
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            trim(tick, step)
        );
        tick += step;
    }
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{bottom}\"/>\
         <text x=\"4\" y=\"{:.1}\">{unit}</text>",
        TOP + 10.0
    );
}

/// Latency bins: `(low µs, high µs, calls)`, log-spaced when the latencies
/// span more than a factor of 20.
fn latency_bins(report: &Report<'_>) -> Vec<(f64, f64, u64)> {
    let histogram = &report.tally.latency_us;
    if histogram.is_empty() {
        return Vec::new();
    }
    let low = histogram.min().max(1) as f64;
    let high = (histogram.max() as f64).max(low + 1.0);
    let log = high / low > 20.0;
    let edge = |i: usize| {
        let f = i as f64 / BINS as f64;
        if log {
            low * (high / low).powf(f)
        } else {
            low + (high - low) * f
        }
    };
    let mut bins: Vec<(f64, f64, u64)> = (0..BINS).map(|i| (edge(i), edge(i + 1), 0)).collect();
    for value in histogram.iter_recorded() {
        let v = value.value_iterated_to() as f64;
        let i = bins
            .iter()
            .position(|(_, hi, _)| v <= *hi)
            .unwrap_or(BINS - 1);
        bins[i].2 += value.count_at_value();
    }
    bins
}

fn histogram(report: &Report<'_>) -> String {
    let mut out = String::new();
    open_svg(&mut out, "latency-histogram", HEIGHT);
    let bottom = HEIGHT - BOTTOM;
    let bins = latency_bins(report);
    let max = bins.iter().map(|b| b.2).max().unwrap_or(0).max(1) as f64;
    value_axis(&mut out, max, bottom, "calls");
    let width = (WIDTH - LEFT - RIGHT) / BINS as f64;
    for (i, (low, high, count)) in bins.iter().enumerate() {
        let h = (bottom - TOP) * *count as f64 / max;
        let x = LEFT + i as f64 * width;
        let _ = write!(
            out,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" \
             data-count=\"{count}\" data-low-ms=\"{:.3}\" data-high-ms=\"{:.3}\">\
             <title>{:.3} to {:.3} ms: {count} calls</title></rect>",
            bottom - h,
            (width - 1.0).max(1.0),
            low / 1000.0,
            high / 1000.0,
            low / 1000.0,
            high / 1000.0,
        );
        if i % 8 == 0 || i + 1 == bins.len() {
            let _ = write!(
                out,
                "<text x=\"{x:.1}\" y=\"{:.1}\">{:.2}</text>",
                bottom + 14.0,
                low / 1000.0
            );
        }
    }
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\"/>\
         <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">ms</text></svg>",
        WIDTH - RIGHT,
        WIDTH - RIGHT,
        bottom + 26.0
    );
    out
}

/// The time series' columns: (start from the start of the load, width,
/// calls per backend in the order of `backends`).
struct Columns {
    width: Duration,
    backends: Vec<String>,
    columns: Vec<(Duration, Vec<u64>)>,
}

fn columns(report: &Report<'_>) -> Columns {
    let t = report.tally;
    let mut backends: Vec<String> = t.backends.keys().cloned().collect();
    if t.series.keys().any(|(_, b)| b == NO_BACKEND) {
        backends.push(NO_BACKEND.to_owned());
    }
    let buckets = t.series.keys().map(|(b, _)| *b + 1).max().unwrap_or(0);
    let merge = buckets.div_ceil(COLUMNS).max(1);
    let width = BUCKET * merge as u32;
    let count = buckets.div_ceil(merge);
    let mut columns: Vec<(Duration, Vec<u64>)> = (0..count)
        .map(|j| (width * j as u32, vec![0; backends.len()]))
        .collect();
    for ((bucket, backend), calls) in &t.series {
        let Some(i) = backends.iter().position(|b| b == backend) else {
            continue;
        };
        columns[(*bucket / merge) as usize].1[i] += calls;
    }
    Columns {
        width,
        backends,
        columns,
    }
}

fn colour(backend: &str, index: usize) -> &'static str {
    if backend == NO_BACKEND {
        NONE_COLOUR
    } else {
        PALETTE[index % PALETTE.len()]
    }
}

fn throughput(report: &Report<'_>, end: Duration) -> String {
    let mut out = String::new();
    open_svg(&mut out, "throughput", HEIGHT);
    let bottom = HEIGHT - BOTTOM;
    let series = columns(report);
    let per_sec = series.width.as_secs_f64();
    let rates: Vec<(Duration, f64)> = series
        .columns
        .iter()
        .map(|(start, calls)| {
            let mid = report.load_offset + *start + series.width / 2;
            (mid, calls.iter().sum::<u64>() as f64 / per_sec)
        })
        .collect();
    let windows = report.windows();
    let max = rates
        .iter()
        .map(|r| r.1)
        .chain(windows.iter().filter_map(|w| w.target_rps))
        .fold(1.0, f64::max)
        * 1.1;
    value_axis(&mut out, max, bottom, "calls/s");
    time_axis(&mut out, end, bottom);
    let secs = end.as_secs_f64();
    let y = |rate: f64| bottom - (bottom - TOP) * rate / max;
    // The target: flat over each window of the schedule.
    let target: Vec<String> = windows
        .iter()
        .filter_map(|w| w.target_rps.map(|r| (w, r)))
        .flat_map(|(w, rate)| {
            let from = (report.load_offset + w.start).as_secs_f64();
            let to = (report.load_offset + w.start + w.length).as_secs_f64();
            [
                format!("{:.1},{:.1}", x_of(from, secs), y(rate)),
                format!("{:.1},{:.1}", x_of(to, secs), y(rate)),
            ]
        })
        .collect();
    if !target.is_empty() {
        let _ = write!(
            out,
            "<polyline class=\"target\" id=\"target-rate\" points=\"{}\"><title>the \
             schedule's target rate</title></polyline>",
            target.join(" ")
        );
    }
    let points: Vec<String> = rates
        .iter()
        .map(|(t, rate)| format!("{:.1},{:.1}", x_of(t.as_secs_f64(), secs), y(*rate)))
        .collect();
    let _ = write!(
        out,
        "<polyline class=\"throughput\" points=\"{}\"/>",
        points.join(" ")
    );
    for (t, rate) in &rates {
        let _ = write!(
            out,
            "<circle class=\"point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" data-t-ms=\"{:.0}\" \
             data-rps=\"{rate:.1}\"><title>{:.2} s: {rate:.1} calls/s</title></circle>",
            x_of(t.as_secs_f64(), secs),
            y(*rate),
            t.as_secs_f64() * 1000.0,
            t.as_secs_f64()
        );
    }
    out.push_str("</svg>\n");
    out
}

fn shares(report: &Report<'_>, end: Duration) -> String {
    let mut out = String::new();
    let series = columns(report);
    out.push_str("<div class=\"legend\" id=\"backend-legend\">");
    for (i, backend) in series.backends.iter().enumerate() {
        let calls = report.tally.backends.get(backend).copied().unwrap_or(0);
        let _ = write!(
            out,
            "<span><svg class=\"swatch\" width=\"12\" height=\"12\"><rect width=\"12\" \
             height=\"12\" fill=\"{}\"/></svg>{}{}</span>",
            colour(backend, i),
            escape(backend),
            if backend == NO_BACKEND {
                String::new()
            } else {
                format!(" ({calls} calls)")
            }
        );
    }
    out.push_str("</div>\n");
    open_svg(&mut out, "backend-share", HEIGHT);
    let bottom = HEIGHT - BOTTOM;
    value_axis(&mut out, 100.0, bottom, "% of calls");
    time_axis(&mut out, end, bottom);
    let secs = end.as_secs_f64();
    for (start, calls) in &series.columns {
        let total: u64 = calls.iter().sum();
        if total == 0 {
            continue;
        }
        let from = (report.load_offset + *start).as_secs_f64();
        let to = (report.load_offset + *start + series.width).as_secs_f64();
        let (x, w) = (
            x_of(from, secs),
            (x_of(to, secs) - x_of(from, secs)).max(1.0),
        );
        let mut y = bottom;
        for (i, n) in calls.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let share = *n as f64 / total as f64;
            let h = (bottom - TOP) * share;
            y -= h;
            let backend = &series.backends[i];
            let _ = write!(
                out,
                "<rect class=\"share\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" \
                 height=\"{h:.1}\" fill=\"{}\" data-backend=\"{}\" data-calls=\"{n}\" \
                 data-t-ms=\"{:.0}\"><title>{:.2} s, {}: {n} of {total} calls ({:.1}%)</title>\
                 </rect>",
                colour(backend, i),
                escape(backend),
                from * 1000.0,
                from,
                escape(backend),
                share * 100.0
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

const STATES: [ConnectivityState; 5] = [
    ConnectivityState::Idle,
    ConnectivityState::Connecting,
    ConnectivityState::Ready,
    ConnectivityState::TransientFailure,
    ConnectivityState::Shutdown,
];

fn states(report: &Report<'_>, end: Duration) -> String {
    let mut out = String::from("<div class=\"legend\">");
    for state in STATES {
        let _ = write!(
            out,
            "<span><svg class=\"swatch\" width=\"12\" height=\"12\"><rect class=\"s-{state}\" \
             width=\"12\" height=\"12\"/></svg>{state}</span>",
            state = state.as_str()
        );
    }
    out.push_str("</div>\n");
    let mut rows: Vec<(String, &[StateAt])> = vec![("channel".to_owned(), &report.seen.states)];
    for (address, states) in &report.seen.subchannels {
        rows.push((address.clone(), states));
    }
    let row_height = 24.0;
    let bottom = TOP + row_height * rows.len() as f64;
    let height = bottom + BOTTOM;
    open_svg(&mut out, "state-timeline", height);
    time_axis(&mut out, end, bottom);
    let secs = end.as_secs_f64();
    for (r, (name, states)) in rows.iter().enumerate() {
        let y = TOP + r as f64 * row_height + 3.0;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            y + 13.0,
            escape(&short(name))
        );
        for (i, at) in states.iter().enumerate() {
            let until = states.get(i + 1).map_or(end, |next| next.t);
            let (from, to) = (
                x_of(at.t.as_secs_f64(), secs),
                x_of(until.as_secs_f64(), secs),
            );
            let _ = write!(
                out,
                "<rect class=\"state s-{state}\" x=\"{from:.1}\" y=\"{y:.1}\" width=\"{:.1}\" \
                 height=\"{:.1}\" data-row=\"{}\" data-state=\"{state}\" data-t-ms=\"{:.3}\">\
                 <title>{}: {state} from {:.3} s</title></rect>",
                (to - from).max(1.0),
                row_height - 6.0,
                escape(name),
                at.t.as_secs_f64() * 1000.0,
                escape(name),
                at.t.as_secs_f64(),
                state = at.state.as_str()
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// A row label that fits the margin: the end of a long address (its port
/// and the end of its host), whole otherwise.
fn short(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= 22 {
        return name.to_owned();
    }
    let tail: String = chars[chars.len() - 21..].iter().collect();
    format!("…{tail}")
}

/// Text for HTML, in an element or an attribute.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_html() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn steps_are_round_and_labels_short() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(0.03), 0.05);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(trim(0.25, 0.05), "0.25");
        assert_eq!(trim(4.0, 2.0), "4");
        assert_eq!(short("127.0.0.1:50051"), "127.0.0.1:50051");
        assert_eq!(
            short("[2001:db8::1234:5678:9abc]:50051"),
            "…1234:5678:9abc]:50051"
        );
        assert_eq!(short("channel"), "channel");
    }
}
