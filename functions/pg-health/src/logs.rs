//! Autovacuum failures from the PostgreSQL server log (issue #22): RDS exports the log to
//! CloudWatch Logs (`EnableCloudwatchLogsExports: postgresql`), the template's subscription filter
//! delivers the matching lines here ([`nbaops_shared::events::LogBatch`]), and they count into
//! the SPEC's "VACUUM failures" signal — autovacuum's failures too, not only vacuum-trigger's.
//!
//! Each line is read with RDS's `log_line_prefix` `%t:%r:%u@%d:[%p]:`
//! (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_LogAccess.Concepts.PostgreSQL.overview.parameter-groups.html)
//! and classified ([`classify_lines`]):
//! - `ERROR:  canceling autovacuum task` → autovacuum canceled (a lock request of another
//!   session won), the table from the `CONTEXT:  automatic vacuum of table "<db>.<schema>.<table>"`
//!   line of the same process;
//! - `could not truncate ...` → vacuum error (the table from its CONTEXT line as above);
//! - `database "<db>" must be vacuumed within <n> transactions`, `oldest xmin is far in the past`,
//!   `database is not accepting commands ... to avoid wraparound data loss` → wraparound warning;
//! - anything else (autovacuum's own `LOG:  automatic vacuum of table ...` reports, a CONTEXT
//!   line whose error is not in the batch) is ignored: counted as such, never acted on.
//!
//! Counting (ledger `pglog#<source>/<day>`, one item per log event id, `put_if_absent`: a batch
//! delivered again counts nothing twice) per database/table and UTC day of the line. Alerts
//! (`pg-vacuum-failure#pg:<db>/<schema.table>`, ledger `pglogalert#<source>/<day>` so each is
//! raised once a day): the first failure of a table in a day → P2; `pg.vacuum_failure.repeat`
//! (3) or more in a day → P1 (escalated: repeated failures); a wraparound warning → P1
//! (`pg-vacuum-failure#pg:<db>/wraparound`). Nothing is acted on: alerts only.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::json;

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::pg::PgConfig;
use nbaops_shared::events::{LogBatch, LogLine};
use nbaops_shared::runtime::{Ctx, RecordReport};
use nbaops_shared::Result;

/// The phrases of the template's subscription filter (`?"<phrase>"` each, OR): every line
/// [`classify_lines`] counts holds one (infra/tests/check_template.py checks the template).
pub const FILTER_TERMS: &[&str] = &[
    "canceling autovacuum task",
    "automatic vacuum of table",
    "automatic analyze of table",
    "could not truncate",
    "must be vacuumed within",
    "oldest xmin is far in the past",
    "wraparound",
];

/// What a line says about VACUUM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    AutovacuumCanceled,
    VacuumError,
    WraparoundWarning,
}

impl Kind {
    fn says(self) -> &'static str {
        match self {
            Kind::AutovacuumCanceled => "autovacuum canceled",
            Kind::VacuumError => "vacuum error",
            Kind::WraparoundWarning => "wraparound warning",
        }
    }
}

/// One failure read from the log: the line that says it, and what it is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub kind: Kind,
    /// The log event id of the line saying it: the idempotency key of its count.
    pub id: String,
    pub at: DateTime<Utc>,
    /// The database (from the CONTEXT line's qualified name, the message, or the prefix's `%d`).
    pub db: Option<String>,
    /// `<schema>.<table>` from the CONTEXT line.
    pub table: Option<String>,
    /// The message without its prefix.
    pub text: String,
}

/// A batch read: the failures, and the lines ignored with why.
#[derive(Debug, Default, PartialEq)]
pub struct Classified {
    pub failures: Vec<Failure>,
    pub ignored: Vec<(String, &'static str)>,
}

/// A line split by RDS's `log_line_prefix` `%t:%r:%u@%d:[%p]:`: user, database, pid, severity,
/// text. Background processes (autovacuum workers) leave `%r`, `%u`, `%d` empty (`::@:`).
#[derive(Debug, Clone, PartialEq)]
pub struct Prefixed<'a> {
    pub user: &'a str,
    pub db: &'a str,
    pub pid: &'a str,
    pub severity: &'a str,
    pub text: &'a str,
}

/// `None` when the line does not carry the RDS prefix and a severity.
pub fn split_prefix(line: &str) -> Option<Prefixed<'_>> {
    // The pid segment `:[<digits>]:` ends the prefix; %t and %r may hold colons themselves.
    let mut search = 0;
    let (left, right, pid) = loop {
        let at = search + line[search..].find(":[")?;
        let after = &line[at + 2..];
        let close = after.find("]:")?;
        let pid = &after[..close];
        if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
            break (&line[..at], &after[close + 2..], pid);
        }
        search = at + 2;
    };
    let (head, db) = left.rsplit_once('@')?;
    let user = head.rsplit_once(':').map(|(_, u)| u).unwrap_or("");
    let (severity, text) = right.split_once(':')?;
    let severity = severity.trim();
    // ERROR, WARNING, LOG, CONTEXT, HINT, DEBUG1..5 ...
    if severity.is_empty()
        || !severity
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return None;
    }
    Some(Prefixed {
        user,
        db,
        pid,
        severity,
        text: text.trim(),
    })
}

/// `"<db>.<schema>.<table>"` after `automatic vacuum of table ` / `automatic analyze of table `
/// in a CONTEXT text (which may hold other context lines first): `(db, schema.table)`.
fn context_table(text: &str) -> Option<(String, String)> {
    let start = [
        "automatic vacuum of table \"",
        "automatic analyze of table \"",
    ]
    .iter()
    .find_map(|m| text.find(m).map(|i| i + m.len()))?;
    let rest = &text[start..];
    let name = &rest[..rest.find('"')?];
    let (db, table) = name.split_once('.')?;
    (!db.is_empty() && !table.is_empty()).then(|| (db.to_string(), table.to_string()))
}

/// The name in `database "<name>"` of a message.
fn quoted_database(text: &str) -> Option<String> {
    let start = text.find("database \"")? + "database \"".len();
    let rest = &text[start..];
    let name = &rest[..rest.find('"')?];
    (!name.is_empty()).then(|| name.to_string())
}

fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Reads a batch's lines in order (a CONTEXT line follows its error, same process).
pub fn classify_lines(lines: &[LogLine]) -> Classified {
    let mut out = Classified::default();
    // Per pid, the failure still waiting for its CONTEXT line.
    let mut waiting: HashMap<&str, usize> = HashMap::new();
    for line in lines {
        let Some(p) = split_prefix(&line.message) else {
            out.ignored
                .push((line.id.clone(), "no RDS log_line_prefix %t:%r:%u@%d:[%p]:"));
            continue;
        };
        let failure = |kind: Kind, db: Option<String>| Failure {
            kind,
            id: line.id.clone(),
            at: line.timestamp,
            db,
            table: None,
            text: p.text.chars().take(300).collect(),
        };
        let t = p.text;
        match p.severity {
            "CONTEXT" => match (context_table(t), waiting.remove(p.pid)) {
                (Some((db, table)), Some(i)) => {
                    let f = &mut out.failures[i];
                    f.db = Some(db);
                    f.table = Some(table);
                }
                (Some(_), None) => out.ignored.push((
                    line.id.clone(),
                    "autovacuum context without its error in this batch",
                )),
                (None, _) => out.ignored.push((
                    line.id.clone(),
                    "context of something other than autovacuum",
                )),
            },
            "ERROR" if t.starts_with("canceling autovacuum task") => {
                waiting.insert(p.pid, out.failures.len());
                out.failures
                    .push(failure(Kind::AutovacuumCanceled, some(p.db)));
            }
            "ERROR" | "WARNING" | "LOG" if t.contains("could not truncate") => {
                waiting.insert(p.pid, out.failures.len());
                out.failures.push(failure(Kind::VacuumError, some(p.db)));
            }
            "WARNING" | "ERROR" if t.contains("must be vacuumed within") => {
                let db = quoted_database(t).or_else(|| some(p.db));
                out.failures.push(failure(Kind::WraparoundWarning, db));
            }
            "WARNING" | "ERROR"
                if t.contains("oldest xmin is far in the past")
                    || (t.contains("not accepting commands") && t.contains("wraparound")) =>
            {
                let db = quoted_database(t).or_else(|| some(p.db));
                out.failures.push(failure(Kind::WraparoundWarning, db));
            }
            "LOG" if t.starts_with("automatic") => out
                .ignored
                .push((line.id.clone(), "autovacuum's own report of a finished run")),
            _ => out.ignored.push((
                line.id.clone(),
                "not an autovacuum failure or wraparound warning",
            )),
        }
    }
    out
}

/// The alert resource of a failure: `pg:<db>/<schema.table>`, `pg:<db>/wraparound`, `pg:<db>`;
/// `rds:<instance>` when the line names no database.
pub fn resource(f: &Failure, source: &str) -> String {
    let base = match &f.db {
        Some(db) => format!("pg:{db}"),
        None => format!("rds:{source}"),
    };
    match (f.kind, &f.table) {
        (Kind::WraparoundWarning, _) => format!("{base}/wraparound"),
        (_, Some(t)) => format!("{base}/{t}"),
        (_, None) => base,
    }
}

const RUNBOOK: &str = "From the PostgreSQL log: autovacuum canceled again and again means a lock it cannot get (long transactions, frequent DDL, LOCK TABLE); a wraparound warning means VACUUM must run now: vacuum-trigger freezes the oldest tables first, check what blocks autovacuum.";

/// One batch: counted in the ledger per log event, alerted once per table/day and severity.
pub async fn on_logs(pg: &PgConfig, batch: &LogBatch, ctx: &Ctx<'_>) -> Result<RecordReport> {
    let read = classify_lines(&batch.lines);
    let mut w = ctx.work(
        &batch.event_id,
        "logs",
        format!(
            "{}: {} line(s), {} failure(s), {} ignored",
            batch.log_group,
            batch.lines.len(),
            read.failures.len(),
            read.ignored.len()
        ),
    );
    let ledger = &ctx.deps.ledger;
    // (day, resource) -> the failures of it in this batch.
    let mut groups: BTreeMap<(String, String), Vec<&Failure>> = BTreeMap::new();
    for f in &read.failures {
        let day = f.at.format("%Y-%m-%d").to_string();
        groups
            .entry((day, resource(f, &batch.source_id)))
            .or_default()
            .push(f);
    }
    let mut counted = 0usize;
    let mut again = 0usize;
    for ((day, res), failures) in &groups {
        let pk = format!("pglog#{}/{day}", batch.source_id);
        let expires = failures[0]
            .at
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .map_or(0, |d| (d.and_utc() + Duration::days(3)).timestamp());
        for f in failures {
            let data =
                json!({"kind": f.kind, "at": f.at, "text": f.text, "log_group": batch.log_group});
            if ledger
                .put_if_absent(&pk, &format!("{res}#{}", f.id), &data, expires)
                .await?
            {
                counted += 1;
            } else {
                again += 1;
            }
        }
        let today = ledger.query(&pk, &format!("{res}#")).await?;
        let count = today.len();
        let kind = failures[failures.len() - 1].kind;
        let (severity, why) = if kind == Kind::WraparoundWarning {
            (Severity::P1, "wraparound warning".to_string())
        } else if count >= pg.vacuum_failure_repeat {
            (
                Severity::P1,
                format!(
                    "repeated: {count} >= pg.vacuum_failure.repeat ({})",
                    pg.vacuum_failure_repeat
                ),
            )
        } else {
            (Severity::P2, "any failure".to_string())
        };
        let marks = format!("pglogalert#{}/{day}", batch.source_id);
        let mark = format!("{res}#{severity}");
        let first = ledger
            .put_if_absent(&marks, &mark, &json!({"count": count}), expires)
            .await?;
        if !first {
            w.note(format!(
                "{res}: {count} on {day}, {severity} already raised today"
            ));
            continue;
        }
        let last = failures[failures.len() - 1];
        let what = match &last.table {
            Some(t) => format!("{} of {t}", kind.says()),
            None => kind.says().to_string(),
        };
        let summary = format!(
            "{}: {what}, {count} time(s) on {day} in the server log of {} ({why}): {}",
            last.db.as_deref().unwrap_or(&batch.source_id),
            batch.source_id,
            last.text
        );
        let alert = ctx
            .alert(severity, res, format!("pg-vacuum-failure#{res}"), summary)
            .with_details(json!({
                "signal": "vacuum-failure",
                "from": "postgresql-log",
                "kind": kind,
                "count_today": count,
                "repeat": pg.vacuum_failure_repeat,
                "day": day,
                "source": batch.source_id,
                "log_group": batch.log_group,
                "log_event_ids": failures.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
            }))
            .with_runbook(RUNBOOK);
        if let Err(e) = ctx.publish(&alert).await {
            // Not published: the next delivery (Lambda retries an asynchronous invocation) tries again.
            ledger.delete(&marks, &mark).await?;
            return Err(e);
        }
        w.rec.alerts.push(alert);
    }
    w.note(format!(
        "{counted} failure line(s) counted, {again} already counted (delivered again)"
    ));
    for (id, why) in &read.ignored {
        w.note(format!("ignored {id}: {why}"));
    }
    Ok(w.rec)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
