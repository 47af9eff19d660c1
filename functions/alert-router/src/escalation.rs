//! The escalation sweep (the `alert-escalation-sweep` schedule): every open incident nobody
//! acknowledged in its severity's response time goes one level up the chain, once per level
//! however many sweeps run; the index of open incidents is tidied on the way. Having read them
//! all, it emits the `OpenIncidents` gauge by severity (`telemetry::OPEN_INCIDENTS`, every
//! severity, zeros included, so the dashboard falls back to 0 when incidents close). It also
//! expires the approval requests nobody answered in time (`approval::expire_approvals`).

use chrono::{DateTime, Utc};
use serde_json::json;

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::alerts::{Channel, EscalationTarget};
use nbaops_shared::events::ScheduledTick;
use nbaops_shared::runtime::{Ctx, RecordReport, Work};
use nbaops_shared::Result;

use crate::channels::{Kind, Message};
use crate::incidents::record_sends;
use crate::plan::{escalation_due, next_escalation, resolution_due, Incident, IncidentStatus};
use crate::router::AlertRouter;

impl AlertRouter {
    /// The sweep's record, and the keys whose escalation no channel took.
    pub(crate) async fn sweep(
        &self,
        tick: &ScheduledTick,
        ctx: &Ctx<'_>,
    ) -> Result<(RecordReport, Vec<String>)> {
        // The tick's scheduled time, never earlier than now: a late tick still sees the present.
        let now = tick.at.max(ctx.now());
        let mut w = ctx.work(
            &tick.event_id,
            "schedule",
            format!("escalation sweep at {}", now.to_rfc3339()),
        );
        let mut failed = vec![];
        let store = self.incidents(ctx);
        let env = ctx.env();
        let mut open = OpenCounts::default();
        for key in store.open_keys().await? {
            let Some(mut inc) = store.load(&key).await? else {
                store.forget_open(&key).await?;
                continue;
            };
            if inc.is_closed() {
                store.forget_open(&key).await?;
                continue;
            }
            open.add(inc.severity);
            if self
                .remind_past_resolution(&mut inc, now, ctx, &mut w)
                .await?
            {
                failed.push(key.clone());
            }
            let Some(level) = next_escalation(&self.cfg, &inc, now) else {
                if matches!(inc.status, IncidentStatus::Open | IncidentStatus::Escalated)
                    && inc.escalation_level < self.cfg.chain.len()
                {
                    let due = escalation_due(
                        &self.cfg,
                        inc.severity,
                        inc.opened_at,
                        inc.escalation_level + 1,
                    );
                    w.note(format!(
                        "{key}: {:?}, next escalation due {}",
                        inc.status,
                        due.to_rfc3339()
                    ));
                }
                continue;
            };
            let claim = format!("escalation#{}#{level}", inc.opened_at.timestamp());
            if !store
                .claim(&key, &claim, &json!({"at": now}), store.expiry(now))
                .await?
            {
                w.note(format!("{key}: level {level} already escalated"));
                continue;
            }
            let Some(target) = self.cfg.chain.get(level - 1) else {
                continue;
            };
            let mut msg = Message::of_incident(
                &inc,
                &env,
                Kind::Escalation {
                    level,
                    name: target.name.clone(),
                    mention: target.mention.clone(),
                },
                self.ack_url(&key, now),
            );
            msg.approval = self.approval_part(inc.approval_id.as_deref(), ctx).await;
            let mut sends = vec![];
            for t in &target.notify {
                sends.push(match t {
                    EscalationTarget::Slack => self.slack(&msg).await,
                    EscalationTarget::Email => {
                        self.topic(ctx, "email", self.cfg.email_topic_arn.as_deref(), &msg)
                            .await
                    }
                    EscalationTarget::Pagerduty => self.pagerduty(&msg).await,
                    EscalationTarget::Topic(arn) => self.topic(ctx, "sns", Some(arn), &msg).await,
                });
            }
            w.note(format!(
                "{key}: unacknowledged {} min after opening ({}): escalated to level {level} ({})",
                (now - inc.opened_at).num_minutes(),
                inc.severity,
                target.name
            ));
            w.rec
                .notes
                .extend(sends.iter().map(|s| format!("{key}: {}", s.line())));
            inc.escalation_level = level;
            inc.status = IncidentStatus::Escalated;
            inc.escalated_at = Some(now);
            record_sends(
                &mut inc,
                &sends,
                now,
                &format!("escalated to level {level} ({})", target.name),
            );
            if !sends.iter().any(|s| s.ok) {
                let where_to = self.dead_letter("escalation", &inc, &sends, now).await;
                w.note(format!("{key}: every channel failed: {where_to}"));
                failed.push(key.clone());
            }
            store.save(&inc, now).await?;
        }
        let approvals = self.expire_approvals(ctx, now).await?;
        if w.rec.notes.is_empty() && approvals.is_empty() {
            w.note("no open alert");
        }
        w.rec.notes.extend(approvals);
        open.lines(&env)
            .iter()
            .for_each(|line| nbaops_shared::telemetry::emit(line));
        Ok((w.rec, failed))
    }
}

impl AlertRouter {
    /// An open incident past its resolution SLA (acknowledged or not): one reminder to its owner
    /// (Slack and email of its severity, never a page) and `breached` in its record, once.
    /// `true` when no channel took the reminder.
    async fn remind_past_resolution(
        &self,
        inc: &mut Incident,
        now: DateTime<Utc>,
        ctx: &Ctx<'_>,
        w: &mut Work<'_>,
    ) -> Result<bool> {
        let due = inc
            .resolve_by
            .or_else(|| resolution_due(&self.cfg, inc.severity, inc.opened_at));
        let Some(due) = due.filter(|d| now >= *d && !inc.breached) else {
            return Ok(false);
        };
        let store = self.incidents(ctx);
        let key = inc.dedup_key.clone();
        let claim = format!("resolution-sla#{}", inc.opened_at.timestamp());
        if !store
            .claim(&key, &claim, &json!({"at": now}), store.expiry(now))
            .await?
        {
            w.note(format!("{key}: resolution reminder already sent"));
            return Ok(false);
        }
        let msg = Message::of_incident(
            inc,
            &ctx.env(),
            Kind::Reminder {
                due: due.to_rfc3339(),
            },
            self.ack_url(&key, now),
        );
        let channels: Vec<Channel> = self
            .cfg
            .channels(inc.severity)
            .iter()
            .copied()
            .filter(|c| *c != Channel::Pagerduty)
            .collect();
        let sends = self.fan_out(ctx, &channels, &msg).await;
        inc.breached = true;
        inc.breached_at = Some(now);
        let owner = inc
            .assignee
            .clone()
            .unwrap_or_else(|| "nobody assigned".into());
        w.note(format!(
            "{key}: open past its resolution SLA ({}, due {}): reminder to {owner}",
            inc.severity,
            due.to_rfc3339()
        ));
        w.rec
            .notes
            .extend(sends.iter().map(|s| format!("{key}: {}", s.line())));
        record_sends(
            inc,
            &sends,
            now,
            &format!(
                "resolution SLA breached (due {}): reminded {owner}",
                due.to_rfc3339()
            ),
        );
        store.save(inc, now).await?;
        Ok(!sends.iter().any(|s| s.ok))
    }
}

/// Open incidents by severity, counted during a sweep.
#[derive(Debug, Default)]
pub(crate) struct OpenCounts([usize; 4]);

impl OpenCounts {
    fn add(&mut self, severity: Severity) {
        let i = match severity {
            Severity::P1 => 0,
            Severity::P2 => 1,
            Severity::P3 => 2,
            Severity::P4 => 3,
        };
        self.0[i] += 1;
    }

    /// One `OpenIncidents` EMF line per severity.
    fn lines(&self, env: &str) -> Vec<String> {
        [Severity::P1, Severity::P2, Severity::P3, Severity::P4]
            .iter()
            .zip(self.0)
            .filter_map(|(sev, n)| {
                let sev = sev.to_string();
                nbaops_shared::telemetry::metric_line(
                    &[(nbaops_shared::telemetry::OPEN_INCIDENTS, n as f64)],
                    &[("env", env), ("severity", &sev)],
                )
                .map_err(|e| tracing::warn!(error = %e, "metric not emitted"))
                .ok()
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn open_incidents_are_one_line_per_severity_zeros_included() {
        let mut open = OpenCounts::default();
        open.add(Severity::P1);
        open.add(Severity::P3);
        open.add(Severity::P3);
        let lines: Vec<serde_json::Value> = open
            .lines("dev")
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let got: Vec<(String, f64)> = lines
            .iter()
            .map(|v| {
                assert_eq!(v["env"], "dev");
                assert_eq!(
                    v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
                    json!([["env", "severity"]])
                );
                (
                    v["severity"].as_str().unwrap().to_string(),
                    v["OpenIncidents"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("P1".into(), 1.0),
                ("P2".into(), 0.0),
                ("P3".into(), 2.0),
                ("P4".into(), 0.0)
            ]
        );
    }

    use nbaops_shared::alerts::Severity;

    use crate::router::SWEEP_TASK;
    use crate::test_world::*;

    #[tokio::test]
    async fn sweep_escalates_once_per_level_even_with_kill_switch() {
        let w = world(&[("NBAOPS_GUARD__KILL_SWITCH", "true")]).await;
        fire(&w, Severity::P1, "k", "m1", "2026-11-25T10:00:00Z").await;
        assert_eq!(
            w.http.requests_to(SLACK).len(),
            1,
            "alerts flow with the kill switch on"
        );
        let tick = |at: &str| json!({"nbaops": {"task": SWEEP_TASK, "at": at}});
        let r = report(run(&w, tick("2026-11-25T10:14:00Z"), "2026-11-25T10:14:00Z").await);
        assert!(
            r.records[0].notes[0].contains("next escalation due"),
            "{:?}",
            r.records[0].notes
        );
        report(run(&w, tick("2026-11-25T10:16:00Z"), "2026-11-25T10:14:00Z").await);
        let slack = w.http.requests_to(SLACK);
        assert_eq!(slack.len(), 2);
        assert!(slack[1]["text"]
            .as_str()
            .unwrap()
            .contains("ESCALATED to level 1 (team-lead)"));
        assert!(slack[1]["text"].as_str().unwrap().contains("@team-lead"));
        // Same level twice: nothing.
        report(run(&w, tick("2026-11-25T10:20:00Z"), "2026-11-25T10:14:00Z").await);
        assert_eq!(w.http.requests_to(SLACK).len(), 2);
        // Level 2 after two response times, then the end of the chain.
        report(run(&w, tick("2026-11-25T10:31:00Z"), "2026-11-25T10:14:00Z").await);
        report(run(&w, tick("2026-11-25T12:00:00Z"), "2026-11-25T10:14:00Z").await);
        assert_eq!(w.http.requests_to(SLACK).len(), 3);
        let inc = load_incident(&w, "k").await.unwrap().unwrap();
        assert_eq!(
            (inc.status, inc.escalation_level),
            (IncidentStatus::Escalated, 2)
        );
        assert_eq!(
            w.sns.published().len(),
            3,
            "email at open and at each level"
        );
    }
}
