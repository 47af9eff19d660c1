//! The recurring schedules of the replayed functions (infra/template.yaml, each function's
//! `ScheduleV2` events, with the parameters' defaults and `ScheduleTimeZone` UTC) and the ticks
//! they make in a window. A test reads the template and fails when the two disagree.
//!
//! Rate schedules are taken as aligned on the epoch (a `rate(5 minutes)` fires at :00, :05...):
//! EventBridge Scheduler starts counting when the schedule is created, which a recording does
//! not say. Cron expressions: fixed minutes and hours, every day (`cron(M H * * ? *)`), what the
//! replayed schedules use.

use chrono::{DateTime, Duration, DurationRound, Timelike, Utc};
use serde_json::{json, Value};

use super::input::Route;

/// (function, task, expression), as in the template.
pub const SCHEDULES: &[(Route, &str, &str)] = &[
    (
        Route::ScaleOnAlarm,
        "off-peak-scale-in",
        "cron(0 23 * * ? *)",
    ),
    (Route::ScaleOnAlarm, "alarm-drift", "cron(15 6 * * ? *)"),
    (Route::ScaleOnAlarm, "game-night-plan", "cron(0 6 * * ? *)"),
    (Route::FailoverNotify, "failover-sweep", "rate(1 minute)"),
    (Route::Offhours, "offhours", "rate(5 minutes)"),
];

/// When an expression fires: every `step` from an aligned start, or once a day at (h, m).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Every {
    Rate(Duration),
    Daily(u32, u32),
}

pub fn parse(expr: &str) -> Result<Every, String> {
    if let Some(body) = expr.strip_prefix("rate(").and_then(|s| s.strip_suffix(')')) {
        let (n, unit) = body
            .split_once(' ')
            .ok_or_else(|| format!("'{expr}': expected rate(N unit)"))?;
        let n: i64 = n
            .parse()
            .map_err(|_| format!("'{expr}': '{n}' is not a whole number"))?;
        let step = match unit {
            "minute" | "minutes" => Duration::minutes(n),
            "hour" | "hours" => Duration::hours(n),
            "day" | "days" => Duration::days(n),
            _ => return Err(format!("'{expr}': unknown unit '{unit}'")),
        };
        if n < 1 {
            return Err(format!("'{expr}': the rate must be at least 1"));
        }
        return Ok(Every::Rate(step));
    }
    if let Some(body) = expr.strip_prefix("cron(").and_then(|s| s.strip_suffix(')')) {
        let f: Vec<&str> = body.split(' ').collect();
        if let [m, h, "*", "*", "?", "*"] = f.as_slice() {
            let m: u32 = m.parse().map_err(|_| format!("'{expr}': minute '{m}'"))?;
            let h: u32 = h.parse().map_err(|_| format!("'{expr}': hour '{h}'"))?;
            if m < 60 && h < 24 {
                return Ok(Every::Daily(h, m));
            }
        }
        return Err(format!(
            "'{expr}': the replay takes daily crons cron(M H * * ? *) only"
        ));
    }
    Err(format!("'{expr}': not a rate() or cron() expression"))
}

/// The times `every` fires in [from, to).
pub fn times(every: Every, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    match every {
        Every::Rate(step) => {
            let Ok(mut t) = from.duration_trunc(step) else {
                return out;
            };
            if t < from {
                t += step;
            }
            while t < to {
                out.push(t);
                t += step;
            }
        }
        Every::Daily(h, m) => {
            let mut day = from.date_naive();
            while let Some(t) = day.and_hms_opt(h, m, 0).map(|n| n.and_utc()) {
                if t >= to {
                    break;
                }
                if t >= from {
                    out.push(t);
                }
                let Some(next) = day.succ_opt() else { break };
                day = next;
            }
        }
    }
    out
}

/// The input a schedule hands its function (the template's `Input`, the execution id filled in).
pub fn tick_payload(task: &str, at: DateTime<Utc>) -> Value {
    json!({"nbaops": {"task": task, "id": format!("replay-{task}-{}", at.format("%Y-%m-%dT%H:%MZ")), "at": at.with_nanosecond(0).unwrap_or(at).to_rfc3339()}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const TEMPLATE: &str = include_str!("../../../infra/template.yaml");

    /// The expression of the `ScheduleV2` event whose input names `task` (or dispatches it),
    /// parameters resolved to their defaults.
    fn template_expression(task: &str) -> Option<String> {
        let lines: Vec<&str> = TEMPLATE.lines().collect();
        let at = lines.iter().position(|l| {
            // The task itself, or a dispatch of it (issue #20: fanned out on SQS).
            l.contains(&format!("\"task\":\"{task}\""))
                || l.contains(&format!("\"task\":\"dispatch\",\"work\":\"{task}\""))
        })?;
        let expr = lines[at.saturating_sub(4)..at]
            .iter()
            .find_map(|l| l.trim().strip_prefix("ScheduleExpression:"))?
            .trim()
            .trim_matches('"')
            .to_string();
        let Some(param) = expr.strip_prefix("!Ref ") else {
            return Some(expr);
        };
        let p = lines
            .iter()
            .position(|l| l.trim_end() == format!("  {param}:"))?;
        lines[p..p + 4]
            .iter()
            .find_map(|l| l.trim().strip_prefix("Default:"))
            .map(|d| d.trim().trim_matches('"').to_string())
    }

    #[test]
    fn the_replay_schedules_are_the_templates() {
        for (_, task, expr) in SCHEDULES {
            assert_eq!(
                template_expression(task).as_deref(),
                Some(*expr),
                "schedule of '{task}'"
            );
            assert!(parse(expr).is_ok(), "{expr}");
        }
        // The replay assumes the schedules run in UTC: the template's default.
        let tz = TEMPLATE
            .split("  ScheduleTimeZone:")
            .nth(1)
            .and_then(|s| s.lines().find(|l| l.trim().starts_with("Default:")))
            .map(|l| l.trim().to_string());
        assert_eq!(tz.as_deref(), Some("Default: UTC"));
    }

    #[test]
    fn ticks_of_a_day() {
        let from = Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap();
        let to = from + Duration::days(1);
        assert_eq!(
            times(parse("rate(1 minute)").unwrap(), from, to).len(),
            1440
        );
        assert_eq!(
            times(parse("rate(5 minutes)").unwrap(), from, to).len(),
            288
        );
        let daily = times(parse("cron(0 23 * * ? *)").unwrap(), from, to);
        assert_eq!(daily, vec![from + Duration::hours(23)]);
        let late = from + Duration::minutes(7);
        assert_eq!(
            times(
                parse("rate(5 minutes)").unwrap(),
                late,
                late + Duration::minutes(6)
            ),
            vec![from + Duration::minutes(10)]
        );
        assert!(parse("cron(0 23 ? * MON *)").is_err());
        assert!(parse("rate(0 minutes)").is_err());
    }
}
