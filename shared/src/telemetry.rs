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
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": crate::clock::now().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimensions.iter().map(|(name, _)| *name).collect::<Vec<_>>()],
                "Metrics": metrics.iter().map(|(n, _, u)| json!({"Name": n, "Unit": u})).collect::<Vec<_>>(),
            }]
        }),
    );
    for (name, value) in dimensions {
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
}
