//! Delivery: each channel's send (Slack and PagerDuty over HTTP, email and escalation topics
//! through SNS) with its bounded retry, the fan-out to a severity's channels, and the
//! dead-letter queue as the last resort. A failed send is an outcome ([`Sent`]), never an error.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use nbaops_shared::config::alerts::Channel;
use nbaops_shared::runtime::Ctx;
use nbaops_shared::NbaopsError;

use crate::channels::{with_retry, Attempt, Message, Sent};
use crate::router::AlertRouter;

impl AlertRouter {
    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.cfg.http_timeout_ms)
    }

    pub(crate) async fn slack(&self, msg: &Message) -> Sent {
        let Some(url) = &self.slack_webhook_url else {
            return Sent::skipped("slack", "Slack webhook secret not set");
        };
        let body = msg.slack();
        self.post("slack", url, &body).await
    }

    pub(crate) async fn pagerduty(&self, msg: &Message) -> Sent {
        let Some(key) = &self.pagerduty_routing_key else {
            return Sent::skipped("pagerduty", "PagerDuty routing key secret not set");
        };
        let body = msg.pagerduty(key);
        self.post("pagerduty", &self.cfg.pagerduty_events_url, &body)
            .await
    }

    /// An email (or an escalation target's message) published to an SNS topic.
    pub(crate) async fn topic(
        &self,
        ctx: &Ctx<'_>,
        channel: &str,
        topic: Option<&str>,
        msg: &Message,
    ) -> Sent {
        let Some(topic) = topic else {
            return Sent::skipped(channel, "alerts.email_topic_arn not set");
        };
        let (subject, body) = msg.email();
        let mut attrs = std::collections::BTreeMap::new();
        attrs.insert("severity".to_string(), msg.severity.to_string());
        attrs.insert("dedup_key".to_string(), msg.dedup_key.clone());
        with_retry(channel, &self.cfg.retry, || async {
            match ctx
                .deps
                .notifier
                .publish(topic, &subject, &body, &attrs)
                .await
            {
                Ok(id) => Attempt::Sent(format!("message {id}")),
                Err(
                    e @ NbaopsError::Dependency {
                        retryable: true, ..
                    },
                ) => Attempt::Retry(e.to_string()),
                Err(e) => Attempt::GiveUp(e.to_string()),
            }
        })
        .await
    }

    pub(crate) async fn send(&self, ctx: &Ctx<'_>, channel: Channel, msg: &Message) -> Sent {
        match channel {
            Channel::Slack => self.slack(msg).await,
            Channel::Email => {
                self.topic(ctx, "email", self.cfg.email_topic_arn.as_deref(), msg)
                    .await
            }
            Channel::Pagerduty => self.pagerduty(msg).await,
        }
    }

    async fn post(&self, channel: &str, url: &str, body: &Value) -> Sent {
        if self.plan {
            return Sent::planned(channel);
        }
        with_retry(channel, &self.cfg.retry, || async {
            match self.http.post_json(url, body, self.timeout()).await {
                Ok(reply) if reply.is_success() => Attempt::Sent(format!("HTTP {}", reply.status)),
                Ok(reply) if reply.is_retryable() => {
                    Attempt::Retry(format!("HTTP {}", reply.status))
                }
                Ok(reply) => Attempt::GiveUp(format!(
                    "HTTP {} {}",
                    reply.status,
                    reply.body.chars().take(200).collect::<String>()
                )),
                Err(e) => Attempt::Retry(e.to_string()),
            }
        })
        .await
    }

    /// Sends `msg` on every channel; returns the outcomes (never fails: a failure is an outcome).
    pub(crate) async fn fan_out(
        &self,
        ctx: &Ctx<'_>,
        channels: &[Channel],
        msg: &Message,
    ) -> Vec<Sent> {
        let mut out = Vec::new();
        for c in channels {
            let s = self.send(ctx, *c, msg).await;
            if !s.ok {
                tracing::warn!(channel = %s.channel, dedup_key = %msg.dedup_key, detail = %s.detail, "channel failed");
            }
            out.push(s);
        }
        out
    }

    /// The last resort: the dead-letter queue, else the log (at error level, the whole message).
    /// Says where the message went.
    pub(crate) async fn dead_letter(
        &self,
        what: &str,
        subject: &impl Serialize,
        sends: &[Sent],
        now: DateTime<Utc>,
    ) -> String {
        let body = json!({
            "schema": "nbaops.alert-undelivered/v1",
            "what": what,
            "failures": sends,
            "message": serde_json::to_value(subject).unwrap_or_default(),
            "at": now,
        })
        .to_string();
        if self.plan {
            return "dry-run (nbaops plan): would dead-letter it, not sent".into();
        }
        match &self.cfg.dead_letter_queue_url {
            Some(q) => match self.dead_letter.send(q, &body).await {
                Ok(id) => format!("dead-lettered (message {id})"),
                Err(e) => {
                    tracing::error!(undelivered = %body, error = %e, "dead-letter queue failed too: alert kept in the log");
                    format!("dead-letter queue failed too ({e}): alert kept in the log")
                }
            },
            None => {
                tracing::error!(undelivered = %body, "no dead-letter queue configured: alert kept in the log");
                "no dead-letter queue configured: alert kept in the log".into()
            }
        }
    }
}
