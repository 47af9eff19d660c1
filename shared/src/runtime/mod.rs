//! The wiring every function's `main` shares ([`run`]): telemetry, config (env + SSM), the shared
//! ports, the function's own `init`, the guard's live switches, then the Lambda runtime loop. A configuration error is
//! reported to the Runtime API as an init error (what Lambda shows the operator) and the process exits.

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use crate::adapters::{AwsClients, DynamoLedger, SdkNotifier, SdkParams, SdkWorkQueue};
use crate::alerts::{Alert, AlertPublisher};
use crate::config::Config;
use crate::error::{NbaopsError, Result};
use crate::guard::{Guard, GuardPorts, Switches};
use crate::ports::{Ledger, Notifier, Params, WorkQueue};
use crate::telemetry;

mod approved;
mod context;
pub mod fanout;
mod members;
pub use approved::{approved, differs, is_approved_task, Live};
pub use context::{
    dispatch, BatchItemFailure, Ctx, Function, Invocation, InvocationReport, RecordReport, Work,
};
pub use members::Fleet;

/// The ports every function shares (config, alerts and actions topics, SSM, the ledger, the
/// guard's live switches). A function's own ports live in its [`Function`] struct.
pub struct Deps {
    pub cfg: Config,
    pub notifier: Box<dyn Notifier>,
    pub params: Option<Box<dyn Params>>,
    pub ledger: Box<dyn Ledger>,
    pub switches: Switches,
    /// Where a `dispatch` tick sends work items (`fanout.queue_url`, issue #20): `None` when
    /// the function does not fan out (no SQS client is built then).
    pub work_queue: Option<Box<dyn WorkQueue>>,
}

/// What a handler returns: its JSON response and the metrics it wants emitted (EMF).
pub trait Reply {
    fn into_json(self) -> std::result::Result<Value, serde_json::Error>;
    fn metrics(&self) -> Vec<(&'static str, f64, &'static str)> {
        Vec::new()
    }
    /// EMF lines of the dimensioned metrics (`telemetry::METRICS`: actions by outcome, guard stops
    /// by step), emitted after [`Reply::metrics`].
    fn metric_lines(&self, _function: &str, _env: &str) -> Vec<String> {
        Vec::new()
    }
}

/// `Actions` by outcome and `GuardStops` by step for these audit records: one EMF line per outcome
/// and per step that occurred (a dashboard sums them; nothing is emitted for what did not happen).
pub fn action_metric_lines<'a>(
    function: &str,
    env: &str,
    actions: impl IntoIterator<Item = &'a crate::guard::AuditRecord>,
) -> Vec<String> {
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut stops: BTreeMap<String, usize> = BTreeMap::new();
    for a in actions {
        let outcome = serde_json::to_value(a.outcome)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        *outcomes.entry(outcome).or_default() += 1;
        if let Some(step) = a.stopped_by {
            *stops.entry(step.to_string()).or_default() += 1;
        }
    }
    let by = |metric: telemetry::Metric, key: &str, counts: BTreeMap<String, usize>| {
        counts
            .into_iter()
            .filter_map(|(value, n)| {
                telemetry::metric_line(
                    &[(metric, n as f64)],
                    &[("function", function), ("env", env), (key, &value)],
                )
                .map_err(|e| tracing::warn!(error = %e, "metric not emitted"))
                .ok()
            })
            .collect::<Vec<_>>()
    };
    let mut lines = by(telemetry::ACTIONS, "outcome", outcomes);
    lines.extend(by(telemetry::GUARD_STOPS, "step", stops));
    lines
}

impl Reply for InvocationReport {
    fn into_json(self) -> std::result::Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }
    fn metrics(&self) -> Vec<(&'static str, f64, &'static str)> {
        let acted = self
            .records
            .iter()
            .flat_map(|x| &x.actions)
            .filter(|a| a.outcome == crate::guard::Outcome::Acted)
            .count();
        vec![(telemetry::ACTIONS_TAKEN.name, acted as f64, "Count")]
    }
    fn metric_lines(&self, function: &str, env: &str) -> Vec<String> {
        action_metric_lines(function, env, self.records.iter().flat_map(|r| &r.actions))
    }
}

impl Deps {
    /// Production wiring: config (env + SSM), the shared ports on SDK clients, and the clients
    /// themselves for the function's own ports (built on first use).
    pub async fn from_env_with_clients(function: &str) -> Result<(Deps, AwsClients)> {
        let vars: BTreeMap<String, String> = std::env::vars().collect();
        let aws = AwsClients::from_env().await;
        let params = SdkParams(aws.ssm());
        let use_ssm = vars.get("NBAOPS_SSM").map(|v| v != "off").unwrap_or(true);
        let cfg = Config::load(function, &vars, if use_ssm { Some(&params) } else { None }).await?;
        let deps = Deps {
            notifier: Box::new(SdkNotifier(aws.sns())),
            ledger: Box::new(DynamoLedger {
                client: aws.dynamodb(),
                table: cfg.ledger_table.clone(),
            }),
            params: if use_ssm {
                Some(Box::new(params))
            } else {
                None
            },
            switches: Switches::seeded(&cfg),
            work_queue: if cfg.fanout.queue_url.is_empty() {
                None
            } else {
                Some(Box::new(SdkWorkQueue(aws.sqs())))
            },
            cfg,
        };
        Ok((deps, aws))
    }

    pub fn guard(&self, event_id: &str, inv: &Invocation) -> Guard<'_> {
        Guard::new(
            GuardPorts {
                cfg: &self.cfg,
                ledger: self.ledger.as_ref(),
                notifier: self.notifier.as_ref(),
                params: self.params.as_deref(),
                switches: &self.switches,
            },
            event_id,
            &inv.request_id,
            inv.now,
        )
        .with_deadline(inv.deadline)
    }

    pub fn alerts(&self) -> AlertPublisher<'_> {
        AlertPublisher {
            notifier: self.notifier.as_ref(),
            topic_arn: &self.cfg.alerts_topic_arn,
        }
    }
}

async fn report_init_error(err: &NbaopsError) {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body = serde_json::json!({"errorType": format!("Runtime.{}", err.error_type()), "errorMessage": err.to_string()}).to_string();
    let req = format!(
        "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\nLambda-Runtime-Function-Error-Type: Runtime.{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        err.error_type(),
        body.len()
    );
    if let Ok(mut s) = tokio::net::TcpStream::connect(api.as_str()).await {
        let _ = s.write_all(req.as_bytes()).await;
        let _ = s.shutdown().await;
    }
}

/// Runs function `F`: shared ports and SDK clients, `F::init`, then the runtime loop handing each
/// payload to [`Function::handle`]. Never returns on success.
pub async fn run<F: Function>() -> std::result::Result<(), lambda_runtime::Error> {
    telemetry::init();
    let built = match Deps::from_env_with_clients(F::NAME).await {
        Ok((deps, aws)) => F::init(&deps, &aws).await.map(|f| (deps, f, aws)),
        Err(e) => Err(e),
    };
    let (deps, f, aws) = match built {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, error_type = e.error_type(), "init failed");
            report_init_error(&e).await;
            return Err(Box::new(e));
        }
    };
    // They live as long as the process: every invocation's future borrows them.
    let deps: &'static Deps = Box::leak(Box::new(deps));
    let f: &'static F = Box::leak(Box::new(f));
    let aws: &'static AwsClients = Box::leak(Box::new(aws));
    let fleet: Option<&'static Fleet> = match Fleet::new(&deps.cfg, aws) {
        Ok(fleet) => fleet.map(|fl| &*Box::leak(Box::new(fl))),
        Err(e) => {
            tracing::error!(error = %e, error_type = e.error_type(), "init failed");
            report_init_error(&e).await;
            return Err(Box::new(e));
        }
    };
    run_loop(F::NAME, deps, move |payload, inv, deps| async move {
        let ctx = Ctx::of::<F>(deps, &inv).with_fleet(fleet);
        f.handle(payload, &ctx).await
    })
    .await
}

/// The Runtime API's deadline (epoch ms on the system clock) as an instant on [`crate::clock`]:
/// what is left of the invocation, counted from the clock's now.
fn deadline_on_clock(deadline_ms: u64) -> Option<DateTime<Utc>> {
    let deadline = i64::try_from(deadline_ms)
        .ok()
        .filter(|ms| *ms > 0)
        .and_then(DateTime::from_timestamp_millis)?;
    Some(crate::clock::now() + (deadline - Utc::now()))
}

async fn run_loop<F, Fut, R>(
    function: &'static str,
    deps: &'static Deps,
    handler: F,
) -> std::result::Result<(), lambda_runtime::Error>
where
    F: Fn(Value, Invocation, &'static Deps) -> Fut,
    Fut: Future<Output = Result<R>>,
    R: Reply,
{
    tracing::info!(env = %deps.cfg.env, dry_run = deps.cfg.function_dry_run(), "initialised");
    let env = deps.cfg.env.to_string();
    lambda_runtime::run(service_fn(|ev: LambdaEvent<Value>| {
        let inv = Invocation {
            request_id: ev.context.request_id.clone(),
            now: crate::clock::now(),
            deadline: deadline_on_clock(ev.context.deadline),
        };
        let span = telemetry::invocation_span(&inv.request_id, function, &env);
        let env = env.clone();
        let now = inv.now;
        let fut = handler(ev.payload, inv, deps);
        async move {
            let started = std::time::Instant::now();
            let res = fut.await;
            let mut metrics = match &res {
                Ok(r) => r.metrics(),
                Err(_) => Vec::new(),
            };
            metrics.push((
                telemetry::HANDLER_ERRORS.name,
                if res.is_err() { 1.0 } else { 0.0 },
                "Count",
            ));
            metrics.push((
                telemetry::HANDLER_MILLIS.name,
                started.elapsed().as_secs_f64() * 1000.0,
                "Milliseconds",
            ));
            telemetry::emit_metrics(function, &env, &metrics);
            if let Ok(r) = &res {
                r.metric_lines(function, &env)
                    .iter()
                    .for_each(|line| telemetry::emit(line));
            }
            match res {
                Ok(report) => report.into_json().map_err(|e| Diagnostic {
                    error_type: "Serialize".into(),
                    error_message: e.to_string(),
                }),
                Err(e) => {
                    tracing::error!(error = %e, error_type = e.error_type(), "invocation failed");
                    if let Some(alert) = gave_up_alert(function, &env, &e, now) {
                        publish_gave_up(deps, &alert).await;
                    }
                    Err(Diagnostic::from(e))
                }
            }
        }
        .instrument(span)
    }))
    .await
}

/// The P2 a function raises when it gives up on a dependency (an AWS service or PostgreSQL still
/// failing after the SDK's retries and timeouts): the invocation fails so that Lambda's retry or
/// the next schedule tries again, and someone is told now rather than at the error alarm's next
/// evaluation. Not for alert-router: its failures already reach people through its error alarm and
/// dead-letter queue, and an alert about itself on its own input topic could loop.
fn gave_up_alert(
    function: &str,
    env: &str,
    err: &NbaopsError,
    now: DateTime<Utc>,
) -> Option<Alert> {
    let NbaopsError::Dependency { service, .. } = err else {
        return None;
    };
    if function == "alert-router" {
        return None;
    }
    Some(
        Alert::new(
            crate::alerts::Severity::P2,
            env,
            function,
            &format!("lambda:{function}"),
            format!("gave-up#{function}#{service}"),
            format!("{function} gave up: {err}"),
            now,
        )
        .with_details(serde_json::json!({"service": service, "error": err.to_string()}))
        .with_action(
            "the invocation failed after the SDK's retries; any action already started is in the audit trail; Lambda's retry or the next run tries again",
        ),
    )
}

/// Best effort, bounded: the alerts topic may be the very thing that is failing.
async fn publish_gave_up(deps: &Deps, alert: &Alert) {
    let publish = deps.alerts();
    match tokio::time::timeout(
        crate::adapters::SDK_OPERATION_TIMEOUT,
        publish.publish(alert),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the give-up alert could not be published"),
        Err(_) => tracing::error!("the give-up alert timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(outcome: &str, stopped_by: Option<&str>) -> crate::guard::AuditRecord {
        serde_json::from_value(serde_json::json!({
            "schema": "nbaops.action/v1", "at": "2026-06-17T14:00:00Z", "env": "dev",
            "function": "scale-on-alarm", "request_id": "r", "event_id": "e",
            "action": "asg.scale_out", "resource": "asg:web", "reason": "cpu", "severity": "P3",
            "outcome": outcome, "dry_run": false, "stopped_by": stopped_by,
            "emergency_change": false, "steps": [], "before": {}, "after": {}, "error": null
        }))
        .unwrap_or_else(|e| panic!("audit record: {e}"))
    }

    #[test]
    fn actions_by_outcome_and_guard_stops_by_step_are_emf_lines() {
        let records = [
            audit("acted", None),
            audit("acted", None),
            audit("skipped", Some("cooldown")),
            audit("would-act", Some("dry_run")),
        ];
        let lines: Vec<Value> = action_metric_lines("scale-on-alarm", "dev", &records)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_default())
            .collect();
        let got: Vec<(String, String, f64)> = lines
            .iter()
            .map(|v| {
                let d = &v["_aws"]["CloudWatchMetrics"][0];
                let name = d["Metrics"][0]["Name"].as_str().unwrap_or("").to_string();
                let key = if name == "Actions" { "outcome" } else { "step" };
                assert_eq!(d["Namespace"], "nbaops");
                assert_eq!(
                    (&v["function"], &v["env"]),
                    (&Value::from("scale-on-alarm"), &Value::from("dev"))
                );
                let sets = if name == "Actions" {
                    serde_json::json!([["function", "env", "outcome"]])
                } else {
                    serde_json::json!([["function", "env", "step"], ["env", "step"]])
                };
                assert_eq!(d["Dimensions"], sets, "{v}");
                (
                    name.clone(),
                    v[key].as_str().unwrap_or("").to_string(),
                    v[&name].as_f64().unwrap_or(-1.0),
                )
            })
            .collect();
        let want: Vec<(String, String, f64)> = [
            ("Actions", "acted", 2.0),
            ("Actions", "skipped", 1.0),
            ("Actions", "would-act", 1.0),
            ("GuardStops", "cooldown", 1.0),
            ("GuardStops", "dry_run", 1.0),
        ]
        .iter()
        .map(|(a, b, n)| (a.to_string(), b.to_string(), *n))
        .collect();
        assert_eq!(got, want);
        assert!(action_metric_lines("f", "dev", &[]).is_empty());
    }

    #[test]
    fn giving_up_on_a_dependency_is_a_p2_and_nothing_else_is() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let throttled =
            NbaopsError::dependency("autoscaling", "ThrottlingException: Rate exceeded");
        let a = gave_up_alert("scale-on-alarm", "dev", &throttled, now);
        let a = a.as_ref();
        assert_eq!(a.map(|a| a.severity), Some(crate::alerts::Severity::P2));
        assert_eq!(
            a.map(|a| a.dedup_key.as_str()),
            Some("gave-up#scale-on-alarm#autoscaling")
        );
        assert_eq!(a.map(|a| a.env.as_str()), Some("dev"));
        // Bad input is not giving up; alert-router's own failures go through its alarm and DLQ.
        let bad = NbaopsError::InvalidEvent("not JSON".into());
        assert!(gave_up_alert("scale-on-alarm", "dev", &bad, now).is_none());
        assert!(gave_up_alert("alert-router", "dev", &throttled, now).is_none());
    }
}
