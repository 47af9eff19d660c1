//! `nbaops replay`: a recorded day (the AWS CLI's alarm history and RDS events, optionally metric
//! data) through the real functions and the real guard, on a simulated clock and a simulated
//! platform (docs/replay.md). Input parsing: [`input`]; the platform: [`platform`]; the schedules'
//! ticks: [`schedule`]; the run: [`engine`]; the page: [`html`].

use std::fmt::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::output::{CliError, CliResult, Output};

pub mod engine;
pub mod html;
pub mod input;
pub mod platform;
pub mod schedule;

use engine::ReplayResult;
use platform::{PlatformSpec, DEFAULT_PLATFORM};

#[derive(clap::Args)]
pub struct Args {
    /// `aws cloudwatch describe-alarm-history --history-item-type StateUpdate` output (JSON).
    #[arg(long, value_name = "H.json")]
    pub alarm_history: PathBuf,
    /// `aws rds describe-events` output (JSON).
    #[arg(long, value_name = "E.json")]
    pub rds_events: PathBuf,
    /// `aws cloudwatch get-metric-data` output merged with its MetricDataQueries (docs/replay.md).
    #[arg(long, value_name = "M.json")]
    pub metrics: Option<PathBuf>,
    /// The platform the day starts from (docs/replay.md); default: the dev platform of the demo.
    #[arg(long, value_name = "P.json")]
    pub platform: Option<PathBuf>,
    /// Start of the window (RFC 3339); default: midnight UTC of the first recorded item's day.
    #[arg(long)]
    pub from: Option<String>,
    /// End of the window, excluded (RFC 3339); default: midnight UTC after the last item's day.
    #[arg(long)]
    pub to: Option<String>,
    /// Also write the timeline and the capacity charts as one self-contained HTML page.
    #[arg(long, value_name = "OUT.html")]
    pub html: Option<PathBuf>,
}

fn read_json(path: &PathBuf) -> CliResult<Value> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| CliError::Io(name.clone(), e))?;
    serde_json::from_str(&text).map_err(|e| CliError::Json(name, e))
}

fn time_arg(flag: &str, v: &Option<String>) -> CliResult<Option<DateTime<Utc>>> {
    v.as_deref()
        .map(|s| {
            input::parse_time(s).ok_or_else(|| {
                CliError::Usage(format!(
                    "{flag} '{s}': expected an RFC 3339 time (2026-11-25T18:00:00Z)"
                ))
            })
        })
        .transpose()
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

pub async fn run(args: Args, out: &Output) -> CliResult<i32> {
    let spec_text = match &args.platform {
        Some(p) => {
            std::fs::read_to_string(p).map_err(|e| CliError::Io(p.display().to_string(), e))?
        }
        None => DEFAULT_PLATFORM.to_string(),
    };
    let spec_name = args
        .platform
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "default platform".into());
    let spec = PlatformSpec::parse(&spec_text, &spec_name).map_err(CliError::Usage)?;
    let usage = |e: input::InputError| CliError::Usage(e.to_string());
    let mut alarms = input::alarm_history(
        &read_json(&args.alarm_history)?,
        &file_name(&args.alarm_history),
        &spec.alarms_by_name(),
    )
    .map_err(usage)?;
    let rds = input::rds_events(&read_json(&args.rds_events)?, &file_name(&args.rds_events))
        .map_err(usage)?;
    let metrics = match &args.metrics {
        Some(m) => input::metrics(&read_json(m)?, &file_name(m)).map_err(usage)?,
        None => Vec::new(),
    };
    alarms.items.extend(rds.items);
    alarms.not_for_me.extend(rds.not_for_me);
    let (dfrom, dto) = engine::default_window(&alarms.items).unwrap_or_default();
    let from = time_arg("--from", &args.from)?.unwrap_or(dfrom);
    let to = time_arg("--to", &args.to)?.unwrap_or(dto);
    let bar = out.progress(engine::planned(&alarms.items, (from, to)), "replay");
    let progress = |done: u64, total: u64| {
        if let crate::output::Progress::Bar(b) = &bar {
            b.set_length(total);
        }
        bar.set(done);
    };
    let result = engine::replay(
        &spec,
        alarms.items,
        alarms.not_for_me,
        &metrics,
        (from, to),
        &progress,
    )
    .await
    .map_err(CliError::Usage)?;
    bar.finish();
    let totals = totals_text(&result);
    if let Some(path) = &args.html {
        std::fs::write(path, html::render(&result, &totals))
            .map_err(|e| CliError::Io(path.display().to_string(), e))?;
    }
    out.emit(&result, &text(&result, &totals))?;
    Ok(0)
}

/// The timeline, one line per decision, then the totals.
pub fn text(r: &ReplayResult, totals: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "replay of {} to {} on the {} platform: {} replayed",
        r.from.to_rfc3339(),
        r.to.to_rfc3339(),
        r.env,
        r.replayed.join(", ")
    );
    for n in &r.not_replayed {
        let _ = writeln!(s, "not replayed: {} ({})", n.function, n.why);
    }
    for n in &r.not_for_me {
        let _ = writeln!(s, "not for me: {n}");
    }
    s.push('\n');
    for d in &r.timeline {
        let _ = writeln!(s, "{:<16} {}", d.function, d.line);
    }
    s.push('\n');
    s.push_str(totals);
    s
}

fn join_counts(m: &std::collections::BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The totals block (the text output and the page show the same).
pub fn totals_text(r: &ReplayResult) -> String {
    let t = &r.totals;
    let mut s = String::new();
    let _ = writeln!(s, "totals:");
    let _ = writeln!(s, "  events in: {}", t.events_in);
    let _ = writeln!(s, "  not for me: {}", t.not_for_me);
    let _ = writeln!(s, "  outside the window: {}", t.outside_window);
    let _ = writeln!(s, "  schedule ticks: {}", t.schedule_ticks);
    let _ = writeln!(
        s,
        "  follow-ups: {} (pending after the window: {})",
        t.follow_ups, t.follow_ups_pending
    );
    let _ = writeln!(s, "  invocations: {}", join_counts(&t.invocations));
    let _ = writeln!(
        s,
        "  answered not for me: {}",
        join_counts(&t.not_for_me_records)
    );
    let _ = writeln!(s, "  decisions: {}", t.decisions);
    let _ = writeln!(s, "  acted: {}", t.acted);
    let _ = writeln!(s, "  would act: {}", t.would_act);
    let _ = writeln!(
        s,
        "  skipped: {} ({})",
        t.skipped,
        join_counts(&t.skipped_by)
    );
    let _ = writeln!(s, "  failed: {}", t.failed);
    let _ = writeln!(s, "  alerts: {}", join_counts(&t.alerts));
    let _ = writeln!(s, "  errors: {}", t.errors);
    s
}
