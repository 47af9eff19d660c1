//! The escalation sweep (the `alert-escalation-sweep` schedule): every open incident nobody
//! acknowledged in its severity's response time goes one level up the chain, once per level
//! however many sweeps run; the index of open incidents is tidied on the way.

use serde_json::json;

use nbaops_shared::config::alerts::EscalationTarget;
use nbaops_shared::events::ScheduledTick;
use nbaops_shared::runtime::{Ctx, RecordReport};
use nbaops_shared::Result;

use crate::channels::{Kind, Message};
use crate::incidents::record_sends;
use crate::plan::{escalation_due, next_escalation, IncidentStatus};
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
        for key in store.open_keys().await? {
            let Some(mut inc) = store.load(&key).await? else {
                store.forget_open(&key).await?;
                continue;
            };
            if inc.is_closed() {
                store.forget_open(&key).await?;
                continue;
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
            let msg = Message::of_incident(
                &inc,
                &env,
                Kind::Escalation {
                    level,
                    name: target.name.clone(),
                    mention: target.mention.clone(),
                },
                self.ack_url(&key, now),
            );
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
        if w.rec.notes.is_empty() {
            w.note("no open alert");
        }
        Ok((w.rec, failed))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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
