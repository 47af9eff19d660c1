//! alert-router's set-up (its config section, the HTTP client, the dead-letter queue, the
//! secrets) and the routing of what it receives: a function URL request to the acknowledgement
//! endpoint (`ack`), a batch of SNS records from the alerts topic to `firing`, the
//! escalation-sweep schedule to `escalation`.
//!
//! Sends are notifications, not infrastructure changes: they do not pass the guard, and the kill
//! switch does not stop them (an operator who stops every action still needs to hear about it).

use chrono::{DateTime, Duration as Span, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use nbaops_shared::adapters::{AwsClients, HyperHttpPost, SdkDeadLetter, SdkScheduler};
use nbaops_shared::config::alerts::{self, AlertsConfig};
use nbaops_shared::events::Inbound;
use nbaops_shared::ports::{DeadLetter, HttpPost, Params, Scheduler};
use nbaops_shared::runtime::{dispatch, Ctx, Deps, Function, InvocationReport, RecordReport};
use nbaops_shared::telemetry::register_secret;
use nbaops_shared::{NbaopsError, Result};

use crate::ack::UrlRequest;
use crate::alerts_topic::{alarm_dedup_key, incoming_of, Incoming};
use crate::incidents::Incidents;
use crate::link;

pub const FUNCTION: &str = "alert-router";
/// Scheduler input `{"nbaops": {"task": "alert-escalation-sweep"}}` (every few minutes).
pub const SWEEP_TASK: &str = "alert-escalation-sweep";

/// alert-router: its config section, the ports it sends through and its secrets, built once at init.
pub struct AlertRouter {
    pub cfg: AlertsConfig,
    pub http: Box<dyn HttpPost>,
    pub dead_letter: Box<dyn DeadLetter>,
    pub slack_webhook_url: Option<String>,
    pub pagerduty_routing_key: Option<String>,
    /// Acknowledgement-link keys: the current one signs, the previous one (during a rotation)
    /// still verifies.
    pub keys: link::Keyring,
    /// `nbaops plan`: no Slack or PagerDuty post and no dead letter, each described instead.
    /// Not in a dry-run deployment: an environment in dry-run still alerts people (the guard's
    /// dry-run is about actions; alerts are how that environment is watched).
    pub plan: bool,
    /// Where approved actions are scheduled (`None`: not dispatched, said so).
    pub scheduler: Option<Box<dyn Scheduler>>,
}

async fn read_secret(params: Option<&dyn Params>, name: &str) -> Result<Option<String>> {
    let Some(p) = params else {
        return Ok(None);
    };
    let v = p.get(name).await?.map(|v| v.trim().to_string());
    let v = v.filter(|v| !v.is_empty());
    match &v {
        Some(v) => register_secret(v),
        None => tracing::warn!(
            parameter = name,
            "secret not set: the channel it serves is unavailable"
        ),
    }
    Ok(v)
}

/// One link-signing key from its SSM SecureString, at least 16 bytes.
async fn signing_key(
    params: Option<&dyn Params>,
    name: &str,
    kid: &str,
) -> Result<Option<link::SigningKey>> {
    let Some(key) = read_secret(params, name).await? else {
        return Ok(None);
    };
    if key.len() < 16 {
        return Err(NbaopsError::config(format!(
            "{name}: the link-signing key must be at least 16 bytes"
        )));
    }
    Ok(Some(link::SigningKey {
        kid: kid.to_string(),
        key: key.into_bytes(),
    }))
}

impl Function for AlertRouter {
    const NAME: &'static str = FUNCTION;
    // ALERT_SCHEMA and SWEEP_TASK spelled out (a const cannot format them); a test keeps them in step.
    const TAKES: &'static str = "nbaops.alert/v1 messages and CloudWatch alarm notifications from SNS, acknowledgement and approval links and the 'alert-escalation-sweep' schedule";
    type Reply = Reply;

    /// The section config, the HTTP client, SQS, and the secrets.
    async fn init(deps: &Deps, aws: &AwsClients) -> Result<Self> {
        let cfg = alerts::from_settings(&deps.cfg.settings)?;
        let mut router = AlertRouter::load(
            cfg,
            Box::new(HyperHttpPost::new()?),
            Box::new(SdkDeadLetter(aws.sqs())),
            deps.params.as_deref(),
        )
        .await?;
        router.plan = deps.switches.is_forced_dry_run();
        router.scheduler = Some(Box::new(SdkScheduler(aws.scheduler())));
        Ok(router)
    }

    async fn on(&self, inbound: Inbound, ctx: &Ctx<'_>) -> Result<RecordReport> {
        match inbound {
            Inbound::Schedule(tick) if tick.task().as_deref() == Some(SWEEP_TASK) => {
                let (rec, failed) = self.sweep(&tick, ctx).await?;
                self.all_delivered(&rec, &failed)?;
                Ok(rec)
            }
            other => Ok(ctx.not_mine(&other)),
        }
    }

    /// A function URL request goes to the acknowledgement endpoint, a batch of records to the
    /// alerts topic's reading, anything else (the sweep's schedule) to `dispatch`.
    async fn handle(&self, payload: Value, ctx: &Ctx<'_>) -> Result<Reply> {
        if let Some(request) = UrlRequest::of(&payload) {
            return self.on_url_request(&request, ctx).await;
        }
        let Some(records) = payload.get("Records").and_then(Value::as_array) else {
            return dispatch(self, payload, ctx).await.map(Reply::Report);
        };
        let mut report = ctx.report();
        let mut undelivered: Vec<String> = vec![];
        for record in records {
            let event_id = record
                .pointer("/Sns/MessageId")
                .and_then(Value::as_str)
                .unwrap_or("");
            let rec = match incoming_of(record) {
                Ok(Incoming::Alert(alert)) => {
                    let (rec, delivered) = self.on_alert(&alert, event_id, ctx).await?;
                    if !delivered {
                        undelivered.push(alert.dedup_key);
                    }
                    rec
                }
                Ok(Incoming::Alarm(alarm)) => {
                    let (rec, delivered) = self.on_alarm(&alarm, event_id, ctx).await?;
                    if !delivered {
                        undelivered.push(alarm_dedup_key(&alarm));
                    }
                    rec
                }
                Err(reason) => RecordReport::not_for_me(event_id, "sns", reason),
            };
            report.records.push(rec);
        }
        self.all_delivered(&report, &undelivered)?;
        Ok(Reply::Report(report))
    }
}

impl AlertRouter {
    pub async fn load(
        cfg: AlertsConfig,
        http: Box<dyn HttpPost>,
        dead_letter: Box<dyn DeadLetter>,
        params: Option<&dyn Params>,
    ) -> Result<AlertRouter> {
        let slack_webhook_url = read_secret(params, &cfg.secrets.slack_webhook_url).await?;
        if slack_webhook_url
            .as_ref()
            .is_some_and(|u| !u.starts_with("https://") && !u.starts_with("http://"))
        {
            // Never echo the value: it is the secret.
            return Err(NbaopsError::config(format!(
                "{}: expected an https:// Slack incoming-webhook URL",
                cfg.secrets.slack_webhook_url
            )));
        }
        let pagerduty_routing_key = read_secret(params, &cfg.secrets.pagerduty_routing_key).await?;
        let current = signing_key(params, &cfg.secrets.link_signing_key, &cfg.ack_key_id).await?;
        let previous = match &cfg.ack_previous_key_id {
            Some(kid) => {
                let k = signing_key(params, &cfg.secrets.previous_link_signing_key, kid).await?;
                if k.is_none() {
                    tracing::warn!(
                        kid = %kid,
                        "alerts.ack.previous_key_id is set but its key is not: links signed with it are refused"
                    );
                }
                k
            }
            None => None,
        };
        Ok(AlertRouter {
            cfg,
            http,
            dead_letter,
            slack_webhook_url,
            pagerduty_routing_key,
            keys: link::Keyring { current, previous },
            plan: false,
            scheduler: None,
        })
    }

    /// The signed acknowledgement link of a key, when links are configured.
    pub(crate) fn ack_url(&self, dedup_key: &str, now: DateTime<Utc>) -> Option<String> {
        let base = self.cfg.ack_base_url.as_deref()?;
        let key = self.keys.current.as_ref()?;
        Some(link::ack_link(
            base,
            key,
            dedup_key,
            now + Span::hours(self.cfg.ack_ttl_hours),
        ))
    }

    /// The incident store of this invocation.
    pub(crate) fn incidents<'a>(&self, ctx: &Ctx<'a>) -> Incidents<'a> {
        Incidents {
            ledger: ctx.deps.ledger.as_ref(),
            record_ttl_days: self.cfg.record_ttl_days,
        }
    }

    /// An error naming the keys no channel took, if any: it makes Lambda count a failed
    /// invocation (and SNS/async retry it); what was done is in the log for the operator.
    fn all_delivered(&self, done: &impl Serialize, undelivered: &[String]) -> Result<()> {
        if undelivered.is_empty() {
            return Ok(());
        }
        let body = serde_json::to_string(done).unwrap_or_default();
        tracing::error!(report = %body, keys = ?undelivered, "alerts undelivered on every channel");
        Err(NbaopsError::Dependency {
            service: "alert channels",
            message: format!(
                "every channel failed for {}; {}",
                undelivered.join(", "),
                if self.cfg.dead_letter_queue_url.is_some() {
                    "sent to the dead-letter queue"
                } else {
                    "no dead-letter queue configured: the alert is in this log"
                }
            ),
            retryable: true,
        })
    }
}

/// The handler's reply: the usual report, or an HTTP response for a function URL request.
#[derive(Debug, Clone)]
pub enum Reply {
    Report(InvocationReport),
    Http {
        status: u16,
        content_type: &'static str,
        body: String,
    },
}

impl From<InvocationReport> for Reply {
    fn from(report: InvocationReport) -> Reply {
        Reply::Report(report)
    }
}

impl Reply {
    pub(crate) fn http(status: u16, body: impl Into<String>) -> Reply {
        Reply::Http {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Reply::Report(r) => serde_json::to_value(r).unwrap_or(Value::Null),
            Reply::Http {
                status,
                content_type,
                body,
            } => json!({
                "statusCode": status,
                "headers": {"content-type": content_type, "cache-control": "no-store"},
                "body": body,
            }),
        }
    }

    pub fn messages_sent(&self) -> usize {
        match self {
            Reply::Report(r) => r
                .records
                .iter()
                .flat_map(|x| &x.notes)
                .filter(|n| n.contains(": sent ("))
                .count(),
            Reply::Http { .. } => 0,
        }
    }
}

impl nbaops_shared::runtime::Reply for Reply {
    fn into_json(self) -> std::result::Result<Value, serde_json::Error> {
        Ok(self.to_value())
    }
    fn metrics(&self) -> Vec<(&'static str, f64, &'static str)> {
        vec![(
            nbaops_shared::telemetry::ALERT_MESSAGES_SENT.name,
            self.messages_sent() as f64,
            "Count",
        )]
    }
    fn metric_lines(&self, function: &str, env: &str) -> Vec<String> {
        match self {
            Reply::Report(r) => r.metric_lines(function, env),
            Reply::Http { .. } => Vec::new(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use nbaops_shared::alerts::{Severity, ALERT_SCHEMA};
    use nbaops_shared::fakes::*;

    use crate::alerts_topic::alert_of;
    use crate::test_world::*;

    #[tokio::test]
    async fn not_for_me_and_missing_secrets() {
        let w = world(&[]).await;
        let alarm: Value = serde_json::from_str(include_str!(
            "../../../events/not-for-me/sns-unknown-message.json"
        ))
        .unwrap();
        let r = report(run(&w, alarm, "2026-11-25T10:00:00Z").await);
        assert!(r.records[0].not_for_me.is_some());
        let r = report(
            run(
                &w,
                json!({"nbaops": {"task": "offhours"}}),
                "2026-11-25T10:00:00Z",
            )
            .await,
        );
        assert!(r.records[0].not_for_me.is_some());
        let mut wrong = alert(Severity::P1, "k");
        wrong.schema = "nbaops.action/v1".into();
        let r = report(run(&w, sns_alert(&wrong, "m"), "2026-11-25T10:00:00Z").await);
        assert!(r.records[0]
            .not_for_me
            .as_deref()
            .unwrap()
            .contains("schema"));
        assert!(w.http.requests().is_empty());

        // No secrets at all: links absent, URL requests refused, Slack counted as failed.
        let cfg = alerts::from_settings(&w.deps.cfg.settings).unwrap();
        let empty = FakeParams::default();
        let bare = AlertRouter::load(
            cfg,
            Box::new(FakeHttpPost::default()),
            Box::new(FakeDeadLetter::default()),
            Some(&empty),
        )
        .await
        .unwrap();
        assert!(bare.slack_webhook_url.is_none() && bare.keys.is_empty());
        assert!(bare
            .ack_url(
                "k",
                chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()
            )
            .is_none());
        let short =
            FakeParams::with(&[("/nbaops/dev/secrets/alerts/link_signing_key", "short-key")]);
        let cfg = alerts::from_settings(&w.deps.cfg.settings).unwrap();
        assert!(AlertRouter::load(
            cfg,
            Box::new(FakeHttpPost::default()),
            Box::new(FakeDeadLetter::default()),
            Some(&short)
        )
        .await
        .is_err());
    }

    #[test]
    fn what_it_takes_names_the_schema_and_the_sweep() {
        let takes = AlertRouter::TAKES;
        assert!(takes.starts_with(ALERT_SCHEMA), "{takes}");
        assert!(
            takes.contains(&format!("'{SWEEP_TASK}' schedule")),
            "{takes}"
        );
    }

    mod properties {
        use super::*;
        use nbaops_shared::events::arbitrary;
        use proptest::prelude::*;

        /// Something alert-router takes: an alert or alarm notification, a schedule, or a request
        /// on its function URL (answered, e.g. 403 for a forged link, but never a send).
        fn for_the_router(payload: &Value) -> bool {
            let records = payload
                .get("Records")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            arbitrary::understood(payload) || records.iter().any(|r| alert_of(r).is_ok())
        }

        proptest! {
            #![proptest_config(arbitrary::config(48))]

            /// Arbitrary JSON and damaged fixtures (alerts included): never a panic; what is
            /// neither an alert nor anything else it understands sends nothing anywhere.
            #[test]
            fn any_payload_is_answered_and_garbage_sends_nothing(payload in arbitrary::payload()) {
                let routed = for_the_router(&payload);
                let (w, res) = arbitrary::block_on(async {
                    let w = world(&[]).await;
                    let res = run(&w, payload, "2026-11-25T10:00:00Z").await;
                    (w, res)
                });
                if !routed {
                    prop_assert!(w.http.requests().is_empty(), "sent {:?}", w.http.requests());
                    prop_assert!(w.dlq.sent().is_empty());
                    prop_assert!(w.sns.published().is_empty());
                    let _ = res;
                }
            }
        }
    }
}
