//! JSON logs in Lambda's shape (timestamp, level, message, requestId, function, env, cold_start),
//! with secret values redacted before anything reaches stdout, and metrics as CloudWatch EMF lines.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use serde_json::{json, Map, Value};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());
static COLD: AtomicBool = AtomicBool::new(true);

/// Every later log line has this value replaced by `***`. Call it for each secret as it is loaded.
pub fn register_secret(value: &str) {
    // Very short values would mangle ordinary words; they are not worth the redaction.
    if value.len() < 6 {
        return;
    }
    if let Ok(mut s) = SECRETS.write() {
        if !s.iter().any(|v| v == value) {
            s.push(value.to_string());
        }
    }
}

/// Masks registered secrets and the password part of `scheme://user:password@host` URLs.
pub fn redact(line: &str) -> String {
    let mut out = line.to_string();
    if let Ok(secrets) = SECRETS.read() {
        for s in secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
    }
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        result.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '/')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.find(':'), authority.rfind('@')) {
            (Some(c), Some(a)) if c < a => {
                result.push_str(&authority[..=c]);
                result.push_str("***");
                result.push_str(&authority[a..]);
            }
            _ => result.push_str(authority),
        }
        rest = &tail[end..];
    }
    result.push_str(rest);
    result
}

/// A writer that buffers one formatted event and writes it, redacted, when dropped.
pub struct RedactingLine<W: Write> {
    buf: Vec<u8>,
    out: W,
}

impl<W: Write> Write for RedactingLine<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for RedactingLine<W> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let _ = self.out.write_all(redact(&text).as_bytes());
        let _ = self.out.flush();
    }
}

#[derive(Clone, Copy, Default)]
pub struct RedactingStdout;

impl<'a> MakeWriter<'a> for RedactingStdout {
    type Writer = RedactingLine<std::io::Stdout>;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingLine {
            buf: Vec::with_capacity(512),
            out: std::io::stdout(),
        }
    }
}

/// Installs the JSON subscriber. Level from `AWS_LAMBDA_LOG_LEVEL`, then `RUST_LOG`, else info.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into())
        .to_ascii_lowercase();
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_ansi(false)
        .with_env_filter(filter)
        .with_writer(RedactingStdout)
        .try_init();
}

/// The span every invocation runs in; `cold_start` is true exactly once per process.
pub fn invocation_span(request_id: &str, function: &str, env: &str) -> tracing::Span {
    let cold = COLD.swap(false, Ordering::SeqCst);
    tracing::info_span!("invocation", requestId = %request_id, function = %function, env = %env, cold_start = cold)
}

/// A metric nbaops emits as EMF: CloudWatch names a metric by namespace, name and the *full* set
/// of its dimensions — "CloudWatch treats each unique combination of dimensions as a separate
/// metric", and a combination never published returns nothing
/// (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch_concepts.html#Dimension>,
/// <https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricStatistics.html>).
/// One EMF line may carry several dimension sets (`Dimensions` is an array of DimensionSets, each
/// of which becomes its own metric:
/// <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>),
/// so a metric is listed with every set it is emitted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub namespace: &'static str,
    pub name: &'static str,
    pub unit: &'static str,
    pub dimension_sets: &'static [&'static [&'static str]],
}

pub const ACTIONS_TAKEN: Metric = Metric {
    namespace: "nbaops",
    name: "ActionsTaken",
    unit: "Count",
    dimension_sets: &[&["function", "env"]],
};
pub const HANDLER_ERRORS: Metric = Metric {
    namespace: "nbaops",
    name: "HandlerErrors",
    unit: "Count",
    dimension_sets: &[&["function", "env"]],
};
pub const HANDLER_MILLIS: Metric = Metric {
    namespace: "nbaops",
    name: "HandlerMillis",
    unit: "Milliseconds",
    dimension_sets: &[&["function", "env"]],
};
pub const ALERT_MESSAGES_SENT: Metric = Metric {
    namespace: "nbaops",
    name: "AlertMessagesSent",
    unit: "Count",
    dimension_sets: &[&["function", "env"]],
};
/// Guarded actions of one invocation by outcome (`acted`, `would-act`, `skipped`, `failed`).
pub const ACTIONS: Metric = Metric {
    namespace: "nbaops",
    name: "Actions",
    unit: "Count",
    dimension_sets: &[&["function", "env", "outcome"]],
};
/// Actions a guard step stopped, by step (`kill_switch`, `cooldown`...); also summed over functions.
pub const GUARD_STOPS: Metric = Metric {
    namespace: "nbaops",
    name: "GuardStops",
    unit: "Count",
    dimension_sets: &[&["function", "env", "step"], &["env", "step"]],
};
/// Open incidents by severity, as alert-router's escalation sweep counts them (a gauge).
pub const OPEN_INCIDENTS: Metric = Metric {
    namespace: "nbaops",
    name: "OpenIncidents",
    unit: "Count",
    dimension_sets: &[&["env", "severity"]],
};
/// pg-health: one database's scan time, per database and over all of them.
pub const PG_SCAN_MILLIS: Metric = Metric {
    namespace: "nbaops/postgres",
    name: "ScanMillis",
    unit: "Milliseconds",
    dimension_sets: &[&["function", "env", "db"], &["function", "env"]],
};
/// pg-health: findings of one database's scan, per database and over all of them.
pub const PG_FINDINGS: Metric = Metric {
    namespace: "nbaops/postgres",
    name: "Findings",
    unit: "Count",
    dimension_sets: &[&["function", "env", "db"], &["function", "env"]],
};

/// Every metric the dashboard (infra/template.yaml) may show: infra/tests/check_template.py reads
/// this table and refuses a widget whose namespace, name or dimension set is not in it.
pub const METRICS: &[Metric] = &[
    ACTIONS_TAKEN,
    HANDLER_ERRORS,
    HANDLER_MILLIS,
    ALERT_MESSAGES_SENT,
    ACTIONS,
    GUARD_STOPS,
    OPEN_INCIDENTS,
    PG_SCAN_MILLIS,
    PG_FINDINGS,
];

/// The values of the dimensions the dashboard names one by one (the others — function, env, db —
/// come from the deployment).
pub const OUTCOMES: &[&str] = &["acted", "would-act", "skipped", "failed", "needs-approval"];
pub const GUARD_STEPS: &[&str] = &[
    "kill_switch",
    "dry_run",
    "protected_tag",
    "bounds",
    "cooldown",
    "change_window",
    "blast_radius",
    "idempotency",
];
pub const SEVERITIES: &[&str] = &["P1", "P2", "P3", "P4"];

/// One EMF line of `metrics` (all of one namespace and the same dimension sets, from [`METRICS`])
/// with these dimension values: every dimension the sets name must have a value, and no other.
/// An inconsistent call is a bug: it is refused (an error naming it), never emitted half right.
pub fn metric_line(metrics: &[(Metric, f64)], values: &[(&str, &str)]) -> Result<String, String> {
    let Some((first, _)) = metrics.first() else {
        return Err("no metric".into());
    };
    if let Some((other, _)) = metrics
        .iter()
        .find(|(m, _)| m.namespace != first.namespace || m.dimension_sets != first.dimension_sets)
    {
        return Err(format!(
            "{} and {} differ in namespace or dimension sets",
            first.name, other.name
        ));
    }
    let mut named: Vec<&str> = first
        .dimension_sets
        .iter()
        .flat_map(|s| s.iter().copied())
        .collect();
    named.sort_unstable();
    named.dedup();
    let mut given: Vec<&str> = values.iter().map(|(k, _)| *k).collect();
    given.sort_unstable();
    if named != given {
        return Err(format!(
            "{}: dimensions {given:?} given, {named:?} expected",
            first.name
        ));
    }
    let rows: Vec<(&str, f64, &str)> = metrics.iter().map(|(m, v)| (m.name, *v, m.unit)).collect();
    Ok(emf_line_sets(
        first.namespace,
        first.dimension_sets,
        values,
        &rows,
    ))
}

/// [`metric_line`], written to stdout; a refused line is logged as a warning instead.
pub fn emit_metric(metrics: &[(Metric, f64)], values: &[(&str, &str)]) {
    match metric_line(metrics, values) {
        Ok(line) => emit(&line),
        Err(e) => tracing::warn!(error = %e, "metric not emitted"),
    }
}

/// One CloudWatch Embedded Metric Format line: CloudWatch turns it into metrics, no API call.
pub fn emf_line(function: &str, env: &str, metrics: &[(&str, f64, &str)]) -> String {
    emf_line_in("nbaops", &[("function", function), ("env", env)], metrics)
}

/// An EMF line in `namespace` with these dimensions (name, value), in this order.
pub fn emf_line_in(
    namespace: &str,
    dimensions: &[(&str, &str)],
    metrics: &[(&str, f64, &str)],
) -> String {
    let set: Vec<&str> = dimensions.iter().map(|(name, _)| *name).collect();
    emf_line_sets(namespace, &[&set], dimensions, metrics)
}

/// An EMF line whose metrics are emitted with each of `sets` (dimension names; `values` holds the
/// value of every name any set uses).
fn emf_line_sets(
    namespace: &str,
    sets: &[&[&str]],
    values: &[(&str, &str)],
    metrics: &[(&str, f64, &str)],
) -> String {
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": crate::clock::now().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": sets,
                "Metrics": metrics.iter().map(|(n, _, u)| json!({"Name": n, "Unit": u})).collect::<Vec<_>>(),
            }]
        }),
    );
    for (name, value) in values {
        root.insert((*name).into(), Value::String((*value).into()));
    }
    for (n, v, _) in metrics {
        root.insert((*n).into(), json!(v));
    }
    Value::Object(root).to_string()
}

pub fn emit_metrics(function: &str, env: &str, metrics: &[(&str, f64, &str)]) {
    emit(&emf_line(function, env, metrics));
}

/// Writes one EMF line ([`emf_line`], [`emf_line_in`]) to stdout, where Lambda's log agent reads it.
pub fn emit(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secret_and_url_password_are_masked() {
        register_secret("hooks-T000-SECRET-xyz");
        let line = r#"{"msg":"posting to https://hooks.example/hooks-T000-SECRET-xyz","db":"postgres://monitor:pa55word@db:5432/app"}"#;
        let r = redact(line);
        assert!(!r.contains("hooks-T000-SECRET-xyz"), "{r}");
        assert!(!r.contains("pa55word"), "{r}");
        assert!(r.contains("postgres://monitor:***@db:5432/app"), "{r}");
    }

    #[test]
    fn emf_line_is_valid_emf() {
        let v: Value =
            serde_json::from_str(&emf_line("f", "dev", &[("ActionsTaken", 2.0, "Count")])).unwrap();
        assert_eq!(v["ActionsTaken"], 2.0);
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "ActionsTaken"
        );
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "nbaops");
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["function", "env"]])
        );
        let v: Value = serde_json::from_str(&emf_line_in(
            "nbaops/postgres",
            &[("function", "pg-health"), ("env", "dev"), ("db", "app")],
            &[("Findings", 1.0, "Count")],
        ))
        .unwrap();
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "nbaops/postgres"
        );
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["function", "env", "db"]])
        );
        assert_eq!((&v["db"], &v["Findings"]), (&json!("app"), &json!(1.0)));
    }

    #[test]
    fn a_table_metric_is_emitted_with_each_of_its_dimension_sets() {
        let line = metric_line(
            &[(PG_SCAN_MILLIS, 12.5), (PG_FINDINGS, 2.0)],
            &[("function", "pg-health"), ("env", "dev"), ("db", "app")],
        )
        .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        let d = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(d["Namespace"], "nbaops/postgres");
        assert_eq!(
            d["Dimensions"],
            json!([["function", "env", "db"], ["function", "env"]])
        );
        assert_eq!(
            d["Metrics"],
            json!([{"Name": "ScanMillis", "Unit": "Milliseconds"}, {"Name": "Findings", "Unit": "Count"}])
        );
        assert_eq!(
            (&v["ScanMillis"], &v["Findings"]),
            (&json!(12.5), &json!(2.0))
        );
        assert_eq!(
            (&v["function"], &v["env"], &v["db"]),
            (&json!("pg-health"), &json!("dev"), &json!("app"))
        );
    }

    #[test]
    fn a_line_missing_or_adding_a_dimension_is_refused() {
        let missing = metric_line(
            &[(GUARD_STOPS, 1.0)],
            &[("env", "dev"), ("step", "cooldown")],
        );
        assert!(missing.unwrap_err().contains("GuardStops"));
        let extra = metric_line(
            &[(OPEN_INCIDENTS, 1.0)],
            &[("env", "dev"), ("severity", "P1"), ("function", "x")],
        );
        assert!(extra.is_err());
        let mixed = metric_line(
            &[(ACTIONS, 1.0), (GUARD_STOPS, 1.0)],
            &[("function", "f"), ("env", "dev"), ("outcome", "acted")],
        );
        assert!(mixed.is_err());
        assert!(metric_line(&[], &[]).is_err());
    }

    #[test]
    fn the_named_dimension_values_are_the_guard_s_and_the_alerts_own() {
        use crate::alerts::Severity;
        use crate::guard::{GuardStep, Outcome};
        let name = |v: Value| v.as_str().unwrap().to_string();
        // Exhaustive: a new variant fails to compile here until the table knows it.
        let outcomes = [
            Outcome::Acted,
            Outcome::WouldAct,
            Outcome::Skipped,
            Outcome::Failed,
            Outcome::NeedsApproval,
        ];
        for o in outcomes {
            match o {
                Outcome::Acted
                | Outcome::WouldAct
                | Outcome::Skipped
                | Outcome::Failed
                | Outcome::NeedsApproval => {}
            }
        }
        let got: Vec<String> = outcomes
            .iter()
            .map(|o| name(serde_json::to_value(o).unwrap()))
            .collect();
        assert_eq!(got, OUTCOMES);
        let steps = [
            GuardStep::KillSwitch,
            GuardStep::DryRun,
            GuardStep::ProtectedTag,
            GuardStep::Bounds,
            GuardStep::Cooldown,
            GuardStep::ChangeWindow,
            GuardStep::BlastRadius,
            GuardStep::Idempotency,
        ];
        for s in steps {
            match s {
                GuardStep::KillSwitch
                | GuardStep::DryRun
                | GuardStep::ProtectedTag
                | GuardStep::Bounds
                | GuardStep::Cooldown
                | GuardStep::ChangeWindow
                | GuardStep::BlastRadius
                | GuardStep::Idempotency => {}
            }
        }
        let got: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, GUARD_STEPS);
        let sev = [Severity::P1, Severity::P2, Severity::P3, Severity::P4];
        let got: Vec<String> = sev.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, SEVERITIES);
    }

    #[test]
    fn every_table_metric_has_a_dimension_set_and_one_definition() {
        for m in METRICS {
            assert!(!m.dimension_sets.is_empty(), "{}", m.name);
            let same = METRICS
                .iter()
                .filter(|o| o.namespace == m.namespace && o.name == m.name)
                .count();
            assert_eq!(same, 1, "{} listed twice", m.name);
        }
    }
}
