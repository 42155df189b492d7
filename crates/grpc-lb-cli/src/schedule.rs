//! Load schedules, as ghz names them: when each call of an open-loop load
//! starts. `const` keeps one rate (`--rps`), `step` changes it by
//! `--load-step` every `--load-step-duration`, `line` changes it by
//! `--load-step` per second, continuously; both from `--load-start`, up to
//! (or down to) `--load-end`.
//!
//! Call `n` (from 0) starts at the instant `t` where the calls the schedule
//! owes by then, the integral of its rate from 0 to `t`, reach `n`. Workers
//! take call numbers in turn, so a call starts on time when a worker is free
//! and as soon as one frees otherwise: `--concurrency` bounds the calls in
//! flight, never the schedule.

use std::time::Duration;

use serde_json::{json, Value};

/// The shortest step of a step schedule, in seconds.
const MIN_STEP_SECS: f64 = 0.001;

/// How fast calls start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Schedule {
    /// Each worker starts its next call when its last one ends.
    Unpaced,
    /// `rate` calls per second.
    Const { rate: f64 },
    /// `start + k * step` calls per second in the k-th step (from 0) of
    /// `step_duration`, clamped at `end`.
    Step {
        start: f64,
        step: f64,
        end: Option<f64>,
        step_duration: Duration,
    },
    /// `start + step * t` calls per second at `t` seconds, clamped at `end`.
    Line {
        start: f64,
        step: f64,
        end: Option<f64>,
    },
}

/// The flags a schedule is made of, as given.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ScheduleFlags<'a> {
    pub(crate) schedule: &'a str,
    pub(crate) rps: Option<f64>,
    pub(crate) start: Option<f64>,
    pub(crate) step: Option<f64>,
    pub(crate) end: Option<f64>,
    pub(crate) step_duration: Option<f64>,
}

impl Schedule {
    /// The schedule the flags describe, or why they do not describe one.
    pub(crate) fn from_flags(flags: ScheduleFlags<'_>) -> Result<Schedule, String> {
        let ramp = [flags.start, flags.step, flags.end, flags.step_duration];
        match flags.schedule {
            "const" => {
                if ramp.iter().any(Option::is_some) {
                    return Err(
                        "--load-start, --load-step, --load-end and --load-step-duration \
                                need --load-schedule step or line"
                            .to_owned(),
                    );
                }
                Ok(flags
                    .rps
                    .map_or(Schedule::Unpaced, |rate| Schedule::Const { rate }))
            }
            name @ ("step" | "line") => {
                if flags.rps.is_some() {
                    return Err(format!(
                        "--rps sets a const schedule's rate; --load-schedule {name} starts at \
                         --load-start"
                    ));
                }
                let (Some(start), Some(step)) = (flags.start, flags.step) else {
                    return Err(format!(
                        "--load-schedule {name} needs --load-start and --load-step"
                    ));
                };
                if !step.is_finite() || step == 0.0 {
                    return Err(format!("--load-step {step} is not a non-zero number"));
                }
                match flags.end {
                    None if step < 0.0 => {
                        return Err(
                            "a negative --load-step needs --load-end (the rate it stops at)"
                                .to_owned(),
                        )
                    }
                    Some(end) if step > 0.0 && end < start => {
                        return Err(format!(
                            "--load-end {end} is below --load-start {start}, but --load-step \
                             {step} goes up"
                        ))
                    }
                    Some(end) if step < 0.0 && end > start => {
                        return Err(format!(
                            "--load-end {end} is above --load-start {start}, but --load-step \
                             {step} goes down"
                        ))
                    }
                    _ => {}
                }
                if name == "line" {
                    if flags.step_duration.is_some() {
                        return Err(
                            "--load-step-duration is for --load-schedule step; line changes \
                             the rate by --load-step per second"
                                .to_owned(),
                        );
                    }
                    return Ok(Schedule::Line {
                        start,
                        step,
                        end: flags.end,
                    });
                }
                let Some(secs) = flags.step_duration else {
                    return Err("--load-schedule step needs --load-step-duration".to_owned());
                };
                if secs < MIN_STEP_SECS {
                    return Err(format!(
                        "--load-step-duration {secs} is shorter than a millisecond"
                    ));
                }
                Ok(Schedule::Step {
                    start,
                    step,
                    end: flags.end,
                    step_duration: Duration::from_secs_f64(secs),
                })
            }
            other => Err(format!("unknown load schedule {other:?}")),
        }
    }

    /// The schedule's name, as `--load-schedule` takes it (`const` for an
    /// unpaced load too).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Schedule::Unpaced | Schedule::Const { .. } => "const",
            Schedule::Step { .. } => "step",
            Schedule::Line { .. } => "line",
        }
    }

    /// When call `n` (from 0) starts, from the start of the load; `None`
    /// for an unpaced load (at once).
    pub(crate) fn start_of(&self, n: u64) -> Option<Duration> {
        let n = n as f64;
        let secs = match *self {
            Schedule::Unpaced => return None,
            Schedule::Const { rate } => n / rate,
            Schedule::Step {
                start,
                step,
                end,
                step_duration,
            } => step_start_of(start, step, end, step_duration.as_secs_f64(), n),
            Schedule::Line { start, step, end } => {
                // Calls owed by t: start t + step t^2 / 2, until the rate
                // reaches `end` at t_end; then end per second.
                let t_end = end.map_or(f64::INFINITY, |end| (end - start) / step);
                let owed_at_end = start * t_end + step * t_end * t_end / 2.0;
                if n <= owed_at_end || end.is_none() {
                    // The root of step/2 t^2 + start t - n = 0 with t >= 0,
                    // in the form that stays exact when step is small.
                    2.0 * n / (start + (start * start + 2.0 * step * n).max(0.0).sqrt())
                } else {
                    t_end + (n - owed_at_end) / end.unwrap_or(start)
                }
            }
        };
        Some(Duration::from_secs_f64(secs.clamp(0.0, 1e9)))
    }

    /// The width of the windows the report counts calls in: a step of a
    /// step schedule, a second otherwise.
    pub(crate) fn window(&self) -> Duration {
        match *self {
            Schedule::Step { step_duration, .. } => step_duration,
            _ => Duration::from_secs(1),
        }
    }

    /// The rate the schedule asks for over window `k`, on average; `None`
    /// for an unpaced load.
    pub(crate) fn target_rate(&self, k: u64) -> Option<f64> {
        match *self {
            Schedule::Unpaced => None,
            Schedule::Const { rate } => Some(rate),
            Schedule::Step {
                start, step, end, ..
            } => Some(step_rate(start, step, end, k)),
            Schedule::Line { start, step, end } => {
                // Calls owed over [k, k + 1) seconds.
                let owed = |t: f64| {
                    let t_end = end.map_or(f64::INFINITY, |end| (end - start) / step);
                    let before = t.min(t_end);
                    let after = (t - t_end).max(0.0);
                    start * before + step * before * before / 2.0 + end.unwrap_or(0.0) * after
                };
                let k = k as f64;
                Some(owed(k + 1.0) - owed(k))
            }
        }
    }

    /// The schedule as the JSON's `load` object shows it (without its
    /// windows).
    pub(crate) fn json(&self) -> Value {
        match *self {
            Schedule::Unpaced => json!({"schedule": "const", "rps": null}),
            Schedule::Const { rate } => json!({"schedule": "const", "rps": rate}),
            Schedule::Step {
                start,
                step,
                end,
                step_duration,
            } => json!({
                "schedule": "step",
                "start": start,
                "step": step,
                "end": end,
                "step_duration_ms": step_duration.as_secs_f64() * 1000.0,
            }),
            Schedule::Line { start, step, end } => json!({
                "schedule": "line",
                "start": start,
                "step": step,
                "end": end,
            }),
        }
    }
}

/// When call `n` of a step schedule starts, in seconds: in the step `k`
/// where the calls owed before it are at most `n`, found by bisection on
/// the closed form of those owed calls (no walk over the steps).
fn step_start_of(start: f64, step: f64, end: Option<f64>, width: f64, n: f64) -> f64 {
    // The first step whose rate is clamped at `end`; none without one.
    let clamped_from = end.map(|end| ((end - start) / step).ceil().max(0.0));
    // Calls owed before step k (k at most `clamped_from`).
    let owed_before = |k: f64| width * (k * start + step * k * (k - 1.0) / 2.0);
    if let (Some(k), Some(end)) = (clamped_from, end) {
        let owed = owed_before(k);
        if n >= owed {
            return k * width + (n - owed) / end;
        }
    }
    // The largest k with owed_before(k) <= n, below `clamped_from`.
    let mut high = clamped_from.unwrap_or(f64::INFINITY).min(1.0);
    while owed_before(high) <= n && clamped_from.is_none_or(|c| high < c) {
        high *= 2.0;
    }
    if let Some(c) = clamped_from {
        high = high.min(c);
    }
    let mut low = 0.0;
    // Invariant: owed_before(low) <= n < owed_before(high).
    while high - low > 1.0 {
        let mid = ((low + high) / 2.0).floor();
        if owed_before(mid) <= n {
            low = mid;
        } else {
            high = mid;
        }
    }
    low * width + (n - owed_before(low)) / step_rate(start, step, end, low as u64)
}

/// The rate of step `k`: `start + k * step`, clamped at `end`.
fn step_rate(start: f64, step: f64, end: Option<f64>, k: u64) -> f64 {
    let rate = start + k as f64 * step;
    match end {
        Some(end) if step > 0.0 => rate.min(end),
        Some(end) => rate.max(end),
        None => rate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Option<Duration>) -> f64 {
        d.unwrap().as_secs_f64()
    }

    fn flags(schedule: &str) -> ScheduleFlags<'_> {
        ScheduleFlags {
            schedule,
            ..ScheduleFlags::default()
        }
    }

    #[test]
    fn a_const_schedule_spaces_calls_evenly() {
        let s = Schedule::Const { rate: 4.0 };
        assert_eq!(secs(s.start_of(0)), 0.0);
        assert!((secs(s.start_of(6)) - 1.5).abs() < 1e-9);
        assert_eq!(s.target_rate(3), Some(4.0));
        assert_eq!(Schedule::Unpaced.start_of(5), None);
        assert_eq!(Schedule::Unpaced.target_rate(0), None);
    }

    #[test]
    fn a_step_schedule_raises_the_rate_each_step_up_to_its_end() {
        // 10/s for 2 s (20 calls), 20/s for 2 s (40), then 25/s for good.
        let s = Schedule::Step {
            start: 10.0,
            step: 10.0,
            end: Some(25.0),
            step_duration: Duration::from_secs(2),
        };
        assert!((secs(s.start_of(10)) - 1.0).abs() < 1e-9);
        assert!((secs(s.start_of(20)) - 2.0).abs() < 1e-9);
        assert!((secs(s.start_of(40)) - 3.0).abs() < 1e-9);
        assert!((secs(s.start_of(60)) - 4.0).abs() < 1e-9);
        assert!((secs(s.start_of(110)) - 6.0).abs() < 1e-9);
        let rates: Vec<f64> = (0..4).map(|k| s.target_rate(k).unwrap()).collect();
        assert_eq!(rates, [10.0, 20.0, 25.0, 25.0]);
        assert_eq!(s.window(), Duration::from_secs(2));
        // Down, to its end.
        let down = Schedule::Step {
            start: 30.0,
            step: -10.0,
            end: Some(5.0),
            step_duration: Duration::from_secs(1),
        };
        let rates: Vec<f64> = (0..5).map(|k| down.target_rate(k).unwrap()).collect();
        assert_eq!(rates, [30.0, 20.0, 10.0, 5.0, 5.0]);
        // 30 + 20 + 10 calls in the first three steps, then 5 a second.
        assert!((secs(down.start_of(60)) - 3.0).abs() < 1e-9);
        assert!((secs(down.start_of(65)) - 4.0).abs() < 1e-9);
        // No end: 1, 2, 3, ... calls per 1 s step; call 5050 (after 100
        // steps) starts at 100 s, and call 10^9 is found at once.
        let rising = Schedule::Step {
            start: 1.0,
            step: 1.0,
            end: None,
            step_duration: Duration::from_secs(1),
        };
        assert!((secs(rising.start_of(5050)) - 100.0).abs() < 1e-6);
        assert!((secs(rising.start_of(5049)) - 99.99).abs() < 1e-6);
        let far = secs(rising.start_of(1_000_000_000));
        assert!((44_720.0..44_722.0).contains(&far), "{far}");
    }

    #[test]
    fn a_line_schedule_owes_the_integral_of_its_rate() {
        // 10/s rising 10/s each second: 15 calls owed by 1 s, 40 by 2 s.
        let s = Schedule::Line {
            start: 10.0,
            step: 10.0,
            end: None,
        };
        assert!((secs(s.start_of(15)) - 1.0).abs() < 1e-9);
        assert!((secs(s.start_of(40)) - 2.0).abs() < 1e-9);
        assert_eq!(s.target_rate(0), Some(15.0));
        assert_eq!(s.target_rate(1), Some(25.0));
        // Clamped at 20/s from 1 s on: 15 by 1 s, then 20 per second.
        let clamped = Schedule::Line {
            start: 10.0,
            step: 10.0,
            end: Some(20.0),
        };
        assert!((secs(clamped.start_of(55)) - 3.0).abs() < 1e-9);
        assert_eq!(clamped.target_rate(2), Some(20.0));
        // Going down to 5/s.
        let down = Schedule::Line {
            start: 25.0,
            step: -10.0,
            end: Some(5.0),
        };
        assert!((secs(down.start_of(20)) - 1.0).abs() < 1e-9);
        // 20 by 1 s, 10 more by 2 s where the rate reaches 5/s, then 5 a
        // second.
        assert!((secs(down.start_of(30)) - 2.0).abs() < 1e-9);
        assert!((secs(down.start_of(35)) - 3.0).abs() < 1e-9);
        let rates: Vec<f64> = (0..3).map(|k| down.target_rate(k).unwrap()).collect();
        assert_eq!(rates, [20.0, 10.0, 5.0]);
    }

    #[test]
    fn bad_schedule_flags_say_what_is_missing() {
        let err = |f: ScheduleFlags<'_>| Schedule::from_flags(f).unwrap_err();
        assert!(err(flags("step")).contains("needs --load-start and --load-step"));
        let ramp = ScheduleFlags {
            start: Some(10.0),
            step: Some(5.0),
            ..flags("step")
        };
        assert!(err(ramp).contains("needs --load-step-duration"));
        assert!(err(ScheduleFlags {
            rps: Some(3.0),
            ..ramp
        })
        .contains("--rps sets a const schedule's rate"));
        assert!(err(ScheduleFlags {
            step: Some(-1.0),
            ..ramp
        })
        .contains("needs --load-end"));
        assert!(err(ScheduleFlags {
            end: Some(1.0),
            ..ramp
        })
        .contains("below --load-start"));
        assert!(err(ScheduleFlags {
            step: Some(0.0),
            ..ramp
        })
        .contains("non-zero"));
        assert!(err(ScheduleFlags {
            step_duration: Some(1e-300),
            ..ramp
        })
        .contains("shorter than a millisecond"));
        assert!(err(ScheduleFlags {
            start: Some(1.0),
            ..flags("const")
        })
        .contains("need --load-schedule step or line"));
        assert!(err(ScheduleFlags {
            step_duration: Some(1.0),
            ..ScheduleFlags {
                schedule: "line",
                ..ramp
            }
        })
        .contains("for --load-schedule step"));
        assert_eq!(
            Schedule::from_flags(ScheduleFlags {
                rps: Some(5.0),
                ..flags("const")
            }),
            Ok(Schedule::Const { rate: 5.0 })
        );
        assert_eq!(Schedule::from_flags(flags("const")), Ok(Schedule::Unpaced));
    }
}
