//! `nbaops audit --since 24h [--function F] [--resource R]`: the audit trail, newest first, read
//! day by day from the ledger's by-day index (one `Query` per day, never a table scan).

use chrono::{DateTime, Duration, NaiveDate, Utc};
use nbaops_shared::guard::{audit_day, audit_of_day, AuditRecord};
use nbaops_shared::ports::Ledger;
use serde::Serialize;

use crate::account::{self, EnvArg};
use crate::output::{decision_line, CliError, CliResult, Output};

#[derive(clap::Args)]
pub struct Args {
    /// How far back: 90m, 24h, 7d.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Only this function's records.
    #[arg(long)]
    pub function: Option<String>,
    /// Only this resource's records (as audited: `asg:nbaops-dev-web`).
    #[arg(long)]
    pub resource: Option<String>,
    #[command(flatten)]
    pub env: EnvArg,
}

#[derive(Debug, Serialize)]
pub struct AuditReport {
    pub env: String,
    pub since: DateTime<Utc>,
    pub records: Vec<AuditRecord>,
    /// Items of the index this version cannot read, by key.
    pub unreadable: Vec<String>,
}

/// `90m`, `24h`, `7d` as a duration.
pub fn parse_since(s: &str) -> CliResult<Duration> {
    let s = s.trim();
    let bad = || {
        CliError::Usage(format!(
            "--since: expected a number and m, h or d (24h), got '{s}'"
        ))
    };
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    if n <= 0 || n > 400 * 24 * 60 {
        return Err(bad());
    }
    match unit {
        'm' => Ok(Duration::minutes(n)),
        'h' => Ok(Duration::hours(n)),
        'd' => Ok(Duration::days(n)),
        _ => Err(bad()),
    }
}

/// The UTC days from `since` to `now`, newest first.
pub fn days_back(since: DateTime<Utc>, now: DateTime<Utc>) -> Vec<String> {
    let first: NaiveDate = since.date_naive();
    let mut day = now.date_naive();
    let mut out = Vec::new();
    while day >= first {
        out.push(day.format("%Y-%m-%d").to_string());
        match day.pred_opt() {
            Some(d) => day = d,
            None => break,
        }
    }
    out
}

/// The records from `since` to `now` that pass the filters, newest first. `out`: where the
/// progress over the days goes (`None`: no progress shown, as inside `nbaops status`).
pub async fn read(
    ledger: &dyn Ledger,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    function: Option<&str>,
    resource: Option<&str>,
    out: Option<&Output>,
) -> CliResult<(Vec<AuditRecord>, Vec<String>)> {
    let days = days_back(since, now);
    let progress = out.map(|o| o.progress(days.len() as u64, "audit days read"));
    let mut records = Vec::new();
    let mut unreadable = Vec::new();
    for (i, day) in days.iter().enumerate() {
        for r in audit_of_day(ledger, day).await? {
            match r {
                Ok(rec) => {
                    let keep = rec.at >= since
                        && audit_day(rec.at) == *day
                        && function.is_none_or(|f| rec.function == f)
                        && resource.is_none_or(|r| rec.resource == r);
                    if keep {
                        records.push(rec);
                    }
                }
                Err(e) => unreadable.push(e),
            }
        }
        if let Some(p) = &progress {
            p.set(i as u64 + 1);
        }
    }
    if let Some(p) = &progress {
        p.finish();
    }
    // The index orders a day by sort key (the record's instant first); records of one instant
    // on two resources are ordered here, newest first throughout.
    records.sort_by_key(|r| std::cmp::Reverse(r.at));
    Ok((records, unreadable))
}

pub async fn run(args: Args, out: &Output) -> CliResult<i32> {
    let span = parse_since(&args.since)?;
    let aws = account::clients().await;
    let cfg = account::core_config(&aws, &args.env).await?;
    let ledger = account::ledger(&aws, &cfg);
    let now = nbaops_shared::clock::now();
    let since = now - span;
    let (records, unreadable) = read(
        &ledger,
        since,
        now,
        args.function.as_deref(),
        args.resource.as_deref(),
        Some(out),
    )
    .await?;
    let mut text = format!(
        "audit of {} since {} ({} records, newest first)\n",
        cfg.env,
        since.format("%Y-%m-%d %H:%M:%SZ"),
        records.len()
    );
    for r in &records {
        text.push_str(&format!("{} [{}]\n", decision_line(r), r.function));
    }
    for u in &unreadable {
        text.push_str(&format!("unreadable: {u}\n"));
    }
    let report = AuditReport {
        env: cfg.env.to_string(),
        since,
        records,
        unreadable,
    };
    out.emit(&report, &text)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_and_days() {
        assert_eq!(parse_since("24h").unwrap(), Duration::hours(24));
        assert_eq!(parse_since("7d").unwrap(), Duration::days(7));
        assert_eq!(parse_since("90m").unwrap(), Duration::minutes(90));
        for bad in ["", "h", "24", "-1h", "0d", "1w", "ẞh"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
        let now: DateTime<Utc> = "2026-03-01T01:00:00Z".parse().unwrap();
        let days = days_back(now - Duration::hours(26), now);
        assert_eq!(days, ["2026-03-01", "2026-02-28", "2026-02-27"]);
    }
}
