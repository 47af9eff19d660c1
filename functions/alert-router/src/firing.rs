//! An alert that fires or resolves, and a CloudWatch alarm notification read as one: the dedup
//! decision, the claim that makes one of many concurrent deliveries send, the sends, and the
//! incident written back. Each answers its record and whether any channel took the message.

use chrono::{DateTime, Duration as Span, Utc};
use serde_json::json;

use nbaops_shared::alerts::{Alert, AlertStatus};
use nbaops_shared::events::{AlarmChange, AlarmState};
use nbaops_shared::runtime::{Ctx, RecordReport, Work};
use nbaops_shared::Result;

use crate::alerts_topic::{alarm_dedup_key, alert_from_alarm};
use nbaops_shared::config::alerts::Channel;

use crate::channels::{on_call_of, Kind, Message, Sent};
use crate::incidents::record_sends;
use crate::plan::{
    decide_firing, earliest, group_for, resolution_due, window_bucket, Firing, Incident,
    IncidentStatus,
};
use crate::router::AlertRouter;

impl AlertRouter {
    pub(crate) async fn on_alert(
        &self,
        alert: &Alert,
        event_id: &str,
        ctx: &Ctx<'_>,
    ) -> Result<(RecordReport, bool)> {
        let now = ctx.now();
        let mut w = ctx.work(
            event_id,
            "alert",
            format!(
                "{} {:?} '{}' ({})",
                alert.severity, alert.status, alert.summary, alert.dedup_key
            ),
        );
        let store = self.incidents(ctx);
        let mut prev = store.load(&alert.dedup_key).await?;
        if alert.status == AlertStatus::Resolved {
            let delivered = self.on_resolve(alert, prev, &mut w).await?;
            return Ok((w.rec, delivered));
        }
        // A member of an open group: it counts on (and may raise) its group's incident.
        if let Some(member) = prev
            .clone()
            .filter(|p| !p.is_closed() && p.grouped_into.is_some())
        {
            if let Some(delivered) = self.on_member_firing(alert, member, &mut w).await? {
                return Ok((w.rec, delivered));
            }
            // Its group's incident is gone: the key starts over on its own.
            if let Some(p) = prev.as_mut() {
                p.status = IncidentStatus::Resolved;
                p.resolved_at = Some(now);
            }
        }
        let window = Span::minutes(self.cfg.dedup_window_minutes);
        let mut decision = decide_firing(prev.as_ref(), alert, now, window);
        // The claim is named after the state this decision saw: of two concurrent deliveries that
        // saw the same state, exactly one sends.
        let claim = match &prev {
            None => "notify#first".to_string(),
            Some(p) if p.is_closed() => format!(
                "notify#reopen#{}",
                p.resolved_at.map(|t| t.timestamp()).unwrap_or(0)
            ),
            Some(p) => format!(
                "notify#{}#{}#{}",
                p.opened_at.timestamp(),
                p.last_notified_at
                    .map(|t| window_bucket(t, window).to_string())
                    .unwrap_or_else(|| "never".into()),
                alert.severity
            ),
        };
        let claim_expiry = (now + window + Span::days(1)).timestamp();
        if decision != Firing::Duplicate
            && !store
                .claim(
                    &alert.dedup_key,
                    &claim,
                    &json!({"event_id": event_id, "at": now}),
                    claim_expiry,
                )
                .await?
        {
            decision = Firing::Duplicate;
        }
        if decision == Firing::New {
            if let Some(delivered) = self.join_group(alert, &mut w).await? {
                return Ok((w.rec, delivered));
            }
        }
        let mut inc = match (decision, prev) {
            (Firing::Duplicate, None) => {
                w.note("a concurrent delivery of this key is sending it: nothing new to send");
                return Ok((w.rec, true));
            }
            (Firing::Duplicate, Some(mut p)) => {
                p.count += 1;
                p.last_seen_at = now;
                store.save(&p, now).await?;
                w.note(format!(
                    "duplicate within {} min: counted ({} so far), nothing sent",
                    self.cfg.dedup_window_minutes, p.count
                ));
                return Ok((w.rec, true));
            }
            (Firing::New, _) => self.open_incident(alert, now),
            (Firing::Repeat, Some(mut p)) => {
                p.count += 1;
                p.last_seen_at = now;
                p.severity = p.severity.min(alert.severity);
                p.resolve_by = earliest(
                    p.resolve_by,
                    resolution_due(&self.cfg, p.severity, p.opened_at),
                );
                p.summary = alert.summary.clone();
                p
            }
            (Firing::Repeat, None) => self.open_incident(alert, now),
        };
        let kind = if decision == Firing::New {
            Kind::Firing
        } else {
            Kind::Repeat { count: inc.count }
        };
        let channels = self.cfg.channels(inc.severity).to_vec();
        let mut msg = Message::of_alert(alert, kind, self.ack_url(&alert.dedup_key, now));
        msg.on_call = on_call_of(&inc);
        msg.grouped = inc.members.iter().cloned().collect();
        msg.approval = self.approval_part(alert.approval_id.as_deref(), ctx).await;
        let sends = self.fan_out(ctx, &channels, &msg).await;
        w.rec.notes.extend(sends.iter().map(Sent::line));
        record_sends(
            &mut inc,
            &sends,
            now,
            if decision == Firing::New {
                "notified"
            } else {
                "re-notified"
            },
        );
        let delivered = sends.iter().any(|s| s.ok);
        if delivered {
            inc.last_notified_at = Some(now);
        } else {
            let where_to = self.dead_letter("alert", alert, &sends, now).await;
            w.note(format!("every channel failed: {where_to}"));
            inc.note(now, format!("undelivered: {where_to}"));
            // A retry of this invocation must be able to try again.
            store.release(&alert.dedup_key, &claim).await?;
        }
        store.save(&inc, now).await?;
        Ok((w.rec, delivered))
    }

    /// Closes the open incident wherever it was opened; `false` when no channel took it. In a
    /// group, a key's resolve is recorded and the group's incident closes with its last key.
    async fn on_resolve(
        &self,
        alert: &Alert,
        prev: Option<Incident>,
        w: &mut Work<'_>,
    ) -> Result<bool> {
        let ctx = w.ctx;
        let now = ctx.now();
        let store = self.incidents(&ctx);
        let Some(mut inc) = prev.filter(|p| !p.is_closed()) else {
            w.note("resolve of an alert with no open incident: nothing to close");
            return Ok(true);
        };
        if let Some(head_key) = inc.grouped_into.clone() {
            // A member: closed quietly; its group's incident learns it.
            inc.status = IncidentStatus::Resolved;
            inc.resolved_at = Some(now);
            inc.last_seen_at = now;
            inc.note(now, format!("resolved (in the group of {head_key})"));
            store.save(&inc, now).await?;
            let Some(head) = store.load(&head_key).await?.filter(|h| !h.is_closed()) else {
                w.note(format!(
                    "resolved; its group's incident {head_key} is already closed"
                ));
                return Ok(true);
            };
            return self.clear_in_group(alert, head, w).await;
        }
        if !inc.members.is_empty() {
            return self.clear_in_group(alert, inc, w).await;
        }
        let claim = format!("resolve#{}", inc.opened_at.timestamp());
        if !store
            .claim(
                &alert.dedup_key,
                &claim,
                &json!({"at": now}),
                store.expiry(now),
            )
            .await?
        {
            w.note("already being resolved by a concurrent delivery");
            return Ok(true);
        }
        // Close it wherever it was opened: the channels of the incident's (highest) severity.
        let channels = self.cfg.channels(inc.severity).to_vec();
        let mut msg = Message::of_alert(alert, Kind::Resolved, None);
        msg.severity = inc.severity;
        self.close(inc, msg, &channels, &claim, w).await
    }

    /// Records that `alert`'s key of the group of `head` resolved; closes the group when it was
    /// the last key still firing.
    async fn clear_in_group(
        &self,
        alert: &Alert,
        mut head: Incident,
        w: &mut Work<'_>,
    ) -> Result<bool> {
        let ctx = w.ctx;
        let now = ctx.now();
        let store = self.incidents(&ctx);
        head.cleared.insert(alert.dedup_key.clone());
        head.last_seen_at = now;
        let firing: Vec<String> = head.still_firing().iter().map(|k| k.to_string()).collect();
        if !firing.is_empty() {
            head.note(
                now,
                format!(
                    "{} resolved; still firing: {}",
                    alert.dedup_key,
                    firing.join(", ")
                ),
            );
            store.save(&head, now).await?;
            w.note(format!(
                "{} resolved in the group of {}: the incident stays open, still firing: {}",
                alert.dedup_key,
                head.dedup_key,
                firing.join(", ")
            ));
            return Ok(true);
        }
        let claim = format!("resolve#{}", head.opened_at.timestamp());
        if !store
            .claim(
                &head.dedup_key,
                &claim,
                &json!({"at": now}),
                store.expiry(now),
            )
            .await?
        {
            w.note("already being resolved by a concurrent delivery");
            return Ok(true);
        }
        let channels = self.cfg.channels(head.severity).to_vec();
        let msg = Message::of_incident(&head, &ctx.env(), Kind::Resolved, None);
        let members: Vec<String> = head.members.iter().cloned().collect();
        let delivered = self.close(head, msg, &channels, &claim, w).await?;
        if delivered {
            // Members still marked open (their resolve was lost or never sent) close with it.
            for key in members {
                if let Some(mut m) = store.load(&key).await?.filter(|m| !m.is_closed()) {
                    m.status = IncidentStatus::Resolved;
                    m.resolved_at = Some(now);
                    m.note(now, "closed with its group");
                    store.save(&m, now).await?;
                }
            }
        }
        Ok(delivered)
    }

    /// Sends the resolution of `inc` and closes it (its resolution SLA judged in the record).
    async fn close(
        &self,
        mut inc: Incident,
        msg: Message,
        channels: &[Channel],
        claim: &str,
        w: &mut Work<'_>,
    ) -> Result<bool> {
        let ctx = w.ctx;
        let now = ctx.now();
        let store = self.incidents(&ctx);
        let sends = self.fan_out(&ctx, channels, &msg).await;
        w.rec.notes.extend(sends.iter().map(Sent::line));
        if !sends.iter().any(|s| s.ok) {
            let where_to = self.dead_letter("resolve", &inc, &sends, now).await;
            w.note(format!("every channel failed: {where_to}"));
            store.release(&inc.dedup_key, claim).await?;
            return Ok(false);
        }
        record_sends(&mut inc, &sends, now, "resolved");
        inc.status = IncidentStatus::Resolved;
        inc.resolved_at = Some(now);
        inc.last_seen_at = now;
        let sla = match inc.resolve_by {
            Some(due) if now > due || inc.breached => {
                if !inc.breached {
                    inc.breached = true;
                    inc.breached_at = Some(now);
                }
                format!(", past its resolution SLA of {}", due.to_rfc3339())
            }
            Some(due) => format!(", within its resolution SLA of {}", due.to_rfc3339()),
            None => String::new(),
        };
        inc.note(now, format!("closed{sla}"));
        store.save(&inc, now).await?;
        w.note(format!(
            "incident closed (open {} min, {} deliveries, escalation level {}{sla})",
            (now - inc.opened_at).num_minutes(),
            inc.count,
            inc.escalation_level
        ));
        Ok(true)
    }

    /// A new incident: its assignee (who is on call now) and its resolution deadline.
    pub(crate) fn open_incident(&self, alert: &Alert, now: DateTime<Utc>) -> Incident {
        let mut inc = Incident::open(alert, now);
        if let Some(p) = self.cfg.incidents.rota.on_call(now, self.cfg.business.tz) {
            inc.note(now, format!("assigned to {} (on call)", p.name));
            inc.assignee = Some(p.name);
            inc.assignee_mention = Some(p.mention);
        }
        inc.resolve_by = resolution_due(&self.cfg, inc.severity, now);
        inc
    }

    /// A new key that joins an open incident's thread (same resource, or caused by it): recorded
    /// on both, nothing sent unless it raises the severity. `None`: it joins nothing.
    async fn join_group(&self, alert: &Alert, w: &mut Work<'_>) -> Result<Option<bool>> {
        let ctx = w.ctx;
        let now = ctx.now();
        let store = self.incidents(&ctx);
        let entries = store.open_entries().await?;
        let Some((entry, why)) = group_for(&self.cfg, alert, &entries, now) else {
            return Ok(None);
        };
        let Some(mut head) = store
            .load(&entry.key)
            .await?
            .filter(|h| !h.is_closed() && h.grouped_into.is_none())
        else {
            return Ok(None);
        };
        let mut member = Incident::open(alert, now);
        member.grouped_into = Some(head.dedup_key.clone());
        member.note(now, format!("joined incident {} ({why})", head.dedup_key));
        store.save(&member, now).await?;
        head.members.insert(alert.dedup_key.clone());
        head.cleared.remove(&alert.dedup_key);
        head.count += 1;
        head.last_seen_at = now;
        head.note(
            now,
            format!(
                "{} joined ({why}, {}): {}",
                alert.dedup_key, alert.severity, alert.summary
            ),
        );
        w.note(format!(
            "joined the thread of incident {} ({why})",
            head.dedup_key
        ));
        self.count_or_raise(alert, head, w).await.map(Some)
    }

    /// A member that fires again: counted on its group's incident. `None`: that incident is gone.
    async fn on_member_firing(
        &self,
        alert: &Alert,
        mut member: Incident,
        w: &mut Work<'_>,
    ) -> Result<Option<bool>> {
        let ctx = w.ctx;
        let now = ctx.now();
        let store = self.incidents(&ctx);
        let head_key = member.grouped_into.clone().unwrap_or_default();
        let Some(mut head) = store.load(&head_key).await?.filter(|h| !h.is_closed()) else {
            return Ok(None);
        };
        member.count += 1;
        member.last_seen_at = now;
        store.save(&member, now).await?;
        head.count += 1;
        head.last_seen_at = now;
        head.cleared.remove(&alert.dedup_key);
        w.note(format!("member of incident {head_key}: counted there"));
        self.count_or_raise(alert, head, w).await.map(Some)
    }

    /// Saves the group's incident; when `alert` is more severe, raises it and sends that on the
    /// new severity's channels (a P1 pages), once per severity.
    async fn count_or_raise(
        &self,
        alert: &Alert,
        mut head: Incident,
        w: &mut Work<'_>,
    ) -> Result<bool> {
        let ctx = w.ctx;
        let now = ctx.now();
        let store = self.incidents(&ctx);
        if alert.severity >= head.severity {
            w.note(format!(
                "nothing sent: {} is {} ({} deliveries in the group)",
                head.dedup_key, head.severity, head.count
            ));
            store.save(&head, now).await?;
            return Ok(true);
        }
        let claim = format!("raise#{}#{}", head.opened_at.timestamp(), alert.severity);
        if !store
            .claim(
                &head.dedup_key,
                &claim,
                &json!({"at": now}),
                store.expiry(now),
            )
            .await?
        {
            w.note("a concurrent delivery is raising the incident");
            store.save(&head, now).await?;
            return Ok(true);
        }
        let from = head.severity;
        head.severity = alert.severity;
        head.resolve_by = earliest(
            head.resolve_by,
            resolution_due(&self.cfg, head.severity, head.opened_at),
        );
        let msg = Message::of_incident(
            &head,
            &ctx.env(),
            Kind::Raised {
                by: alert.dedup_key.clone(),
            },
            self.ack_url(&head.dedup_key, now),
        );
        let channels = self.cfg.channels(head.severity).to_vec();
        let sends = self.fan_out(&ctx, &channels, &msg).await;
        w.rec.notes.extend(sends.iter().map(Sent::line));
        w.note(format!(
            "raised {} from {from} to {} by {}",
            head.dedup_key, head.severity, alert.dedup_key
        ));
        let what = format!(
            "raised from {from} to {} by {}",
            head.severity, alert.dedup_key
        );
        record_sends(&mut head, &sends, now, &what);
        let delivered = sends.iter().any(|s| s.ok);
        if delivered {
            head.last_notified_at = Some(now);
        } else {
            let where_to = self.dead_letter("alert", alert, &sends, now).await;
            w.note(format!("every channel failed: {where_to}"));
            store.release(&head.dedup_key, &claim).await?;
        }
        store.save(&head, now).await?;
        Ok(delivered)
    }

    /// A CloudWatch alarm notification: routed like any alert, its severity from
    /// `alerts.alarm_severity` by alarm name, its dedup key the alarm ARN. ALARM fires, OK
    /// resolves, INSUFFICIENT_DATA is noted; one older than the last seen for the same alarm (SNS
    /// does not keep order) changes nothing.
    pub(crate) async fn on_alarm(
        &self,
        alarm: &AlarmChange,
        event_id: &str,
        ctx: &Ctx<'_>,
    ) -> Result<(RecordReport, bool)> {
        let now = ctx.now();
        let (severity, pattern) = self.cfg.alarm_severity(&alarm.alarm_name);
        let key = alarm_dedup_key(alarm);
        let summary = format!(
            "{severity} {} CloudWatch alarm '{}' (severity {}) ({key})",
            alarm.state,
            alarm.alarm_name,
            match pattern {
                Some(p) => format!("from pattern '{p}'"),
                None => "by default: no alerts.alarm_severity pattern matched".into(),
            }
        );
        let mut w = ctx.work(event_id, "alarm", summary.clone());
        let store = self.incidents(ctx);
        if let Some(seen) = store
            .alarm_seen_at(&key)
            .await?
            .filter(|seen| *seen > alarm.changed_at)
        {
            w.note(format!(
                "{} of {} is older than the last notification of this alarm ({}): nothing changes",
                alarm.state,
                alarm.changed_at.to_rfc3339(),
                seen.to_rfc3339()
            ));
            return Ok((w.rec, true));
        }
        store.see_alarm(&key, alarm, event_id, now).await?;
        if alarm.state == AlarmState::InsufficientData {
            let what = format!(
                "CloudWatch alarm {} is INSUFFICIENT_DATA{}",
                alarm.alarm_name,
                if alarm.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", alarm.reason.chars().take(300).collect::<String>())
                }
            );
            match store.load(&key).await?.filter(|i| !i.is_closed()) {
                Some(mut inc) => {
                    inc.note(now, &what);
                    store.save(&inc, now).await?;
                    w.note(
                        "INSUFFICIENT_DATA: noted on the open incident, nothing sent (the alarm neither fires nor clears)",
                    );
                }
                None => w.note("INSUFFICIENT_DATA with no open incident: noted here, nothing sent"),
            }
            tracing::info!(dedup_key = %key, "{what}");
            return Ok((w.rec, true));
        }
        let alert = alert_from_alarm(alarm, severity, &ctx.env());
        let (mut inner, delivered) = self.on_alert(&alert, event_id, ctx).await?;
        inner.kind = w.rec.kind;
        inner.summary = summary;
        Ok((inner, delivered))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::Value;

    use nbaops_shared::alerts::Severity;
    use nbaops_shared::fakes::Scripted;

    use crate::incidents::OPEN_PK;
    use crate::link;
    use crate::test_world::*;

    #[tokio::test]
    async fn routing_per_severity() {
        let w = world(&[]).await;
        fire(&w, Severity::P1, "k1", "m1", "2026-11-25T10:00:00Z").await;
        assert_eq!(w.http.requests_to(SLACK).len(), 1);
        assert_eq!(w.http.requests_to(PD).len(), 1);
        assert_eq!(w.http.requests_to(PD)[0]["event_action"], "trigger");
        assert_eq!(w.sns.published().len(), 1, "email for P1");
        assert_eq!(w.sns.published()[0].topic_arn, EMAIL);

        fire(&w, Severity::P2, "k2", "m2", "2026-11-25T10:00:00Z").await;
        assert_eq!(
            (
                w.http.requests_to(SLACK).len(),
                w.http.requests_to(PD).len(),
                w.sns.published().len()
            ),
            (2, 1, 2)
        );
        fire(&w, Severity::P3, "k3", "m3", "2026-11-25T10:00:00Z").await;
        fire(&w, Severity::P4, "k4", "m4", "2026-11-25T10:00:00Z").await;
        assert_eq!(
            (
                w.http.requests_to(SLACK).len(),
                w.http.requests_to(PD).len(),
                w.sns.published().len()
            ),
            (4, 1, 2)
        );
        // Every message carries a link that verifies.
        let text = w.http.requests_to(SLACK)[0]["text"]
            .as_str()
            .unwrap()
            .to_string();
        let url = text.split("<").last().unwrap().split('|').next().unwrap();
        assert_eq!(
            link::verify(
                &w.router.keys,
                &link::query_of(url),
                t("2026-11-25T10:00:00Z")
            ),
            Ok("k1".into())
        );
    }

    #[tokio::test]
    async fn duplicate_counts_then_resolve_closes_everywhere() {
        let w = world(&[]).await;
        let a = alert(Severity::P1, "db#down");
        report(run(&w, sns_alert(&a, "m1"), "2026-11-25T10:00:00Z").await);
        let r = report(run(&w, sns_alert(&a, "m2"), "2026-11-25T10:10:00Z").await);
        assert!(
            r.records[0].notes[0].contains("duplicate"),
            "{:?}",
            r.records[0]
        );
        assert_eq!(w.http.requests().len(), 2, "nothing new sent");
        let inc = load_incident(&w, "db#down").await.unwrap().unwrap();
        assert_eq!((inc.count, inc.status), (2, IncidentStatus::Open));

        let mut resolved = a.clone();
        resolved.status = AlertStatus::Resolved;
        report(run(&w, sns_alert(&resolved, "m3"), "2026-11-25T10:20:00Z").await);
        let pd = w.http.requests_to(PD);
        assert_eq!(pd.last().unwrap()["event_action"], "resolve");
        assert_eq!(pd.last().unwrap()["dedup_key"], "db#down");
        assert!(w.http.requests_to(SLACK).last().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("RESOLVED"));
        let inc = load_incident(&w, "db#down").await.unwrap().unwrap();
        assert_eq!(inc.status, IncidentStatus::Resolved);
        assert_eq!(inc.resolved_at, Some(t("2026-11-25T10:20:00Z")));
        assert!(w.deps.ledger.query(OPEN_PK, "").await.unwrap().is_empty());
        // A second resolve sends nothing; a new firing opens a new incident.
        let before = w.http.requests().len();
        report(run(&w, sns_alert(&resolved, "m4"), "2026-11-25T10:21:00Z").await);
        assert_eq!(w.http.requests().len(), before);
        report(run(&w, sns_alert(&a, "m5"), "2026-11-25T10:22:00Z").await);
        assert_eq!(w.http.requests().len(), before + 2);
        // After the window, a repeat re-notifies on the same incident.
        report(run(&w, sns_alert(&a, "m6"), "2026-11-25T11:30:00Z").await);
        let inc = load_incident(&w, "db#down").await.unwrap().unwrap();
        assert_eq!((inc.count, inc.opened_at), (2, t("2026-11-25T10:22:00Z")));
        assert!(w.http.requests_to(SLACK).last().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("still firing"));
    }

    /// `nbaops plan`: the alert is routed as usual, nothing is posted or dead-lettered, and the
    /// report says what would have been sent.
    #[tokio::test]
    async fn in_a_plan_nothing_is_posted() {
        let mut w = world(&[]).await;
        w.router.plan = true;
        let a = alert(Severity::P1, "db#down");
        let r = report(run(&w, sns_alert(&a, "m1"), "2026-11-25T10:00:00Z").await);
        assert!(w.http.requests().is_empty());
        assert!(w.dlq.sent().is_empty());
        let text = format!("{:?}", r.records[0]);
        assert!(text.contains("would send to slack, not sent"), "{text}");
        assert!(text.contains("would send to pagerduty, not sent"), "{text}");
        // Email goes through the notifier, which a plan captures.
        assert_eq!(w.sns.published().len(), 1);
    }

    #[tokio::test]
    async fn retry_then_dead_letter_and_error() {
        let w = world(&[]).await;
        w.http.fail(SLACK, Scripted::Status(500), 2);
        fire(&w, Severity::P3, "k", "m1", "2026-11-25T10:00:00Z").await;
        assert_eq!(
            w.http.requests_to(SLACK).len(),
            3,
            "two failures then success"
        );
        assert!(w.dlq.sent().is_empty());

        w.http.fail(SLACK, Scripted::Status(429), 3);
        let err = run(
            &w,
            sns_alert(&alert(Severity::P3, "k2"), "m2"),
            "2026-11-25T10:00:00Z",
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("every channel failed"), "{err}");
        let dlq = w.dlq.sent();
        assert_eq!(dlq.len(), 1);
        assert_eq!(dlq[0].0, DLQ);
        assert!(dlq[0].1.contains("\"dedup_key\":\"k2\""), "{}", dlq[0].1);
        assert!(
            !dlq[0].1.contains("SECRETSECRET"),
            "no webhook URL in the dead letter"
        );
        // The retry of the invocation tries again (the claim was released) and succeeds.
        fire(&w, Severity::P3, "k2", "m2", "2026-11-25T10:00:05Z").await;
        assert_eq!(
            load_incident(&w, "k2")
                .await
                .unwrap()
                .unwrap()
                .last_notified_at,
            Some(t("2026-11-25T10:00:05Z"))
        );

        // A 4xx is not retried.
        w.http.fail(SLACK, Scripted::Status(404), 1);
        let before = w.http.requests_to(SLACK).len();
        let _ = run(
            &w,
            sns_alert(&alert(Severity::P4, "k3"), "m3"),
            "2026-11-25T10:00:00Z",
        )
        .await;
        assert_eq!(w.http.requests_to(SLACK).len(), before + 1);
    }

    /// The fixture with another state, state-change time and SNS message id.
    fn alarm_as(name: &str, state: &str, changed: &str, id: &str) -> Value {
        let mut v = alarm_fixture(name);
        let sns = &mut v["Records"][0]["Sns"];
        let mut msg: Value = serde_json::from_str(sns["Message"].as_str().unwrap()).unwrap();
        msg["NewStateValue"] = json!(state);
        msg["StateChangeTime"] = json!(changed);
        sns["Message"] = json!(msg.to_string());
        sns["MessageId"] = json!(id);
        v
    }

    #[tokio::test]
    async fn every_cloudwatch_alarm_shape_on_the_alerts_topic_is_routed() {
        // (fixture, severity, dedup key, pages?)
        let cases = [
            ("sns-single-metric-alarm.json", "P3", "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-web-cpu-high", false),
            ("sns-metric-math.json", "P3", "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-web-5xx-rate", false),
            ("sns-anomaly-detection.json", "P3", "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-web-network-anomaly", false),
            ("sns-composite.json", "P3", "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-web-degraded", false),
            ("sns-memcached-memory-alarm.json", "P3", "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-cache-memory-low", false),
            // No ARN, account "None": keyed by the name.
            ("sns-nulls-and-none.json", "P3", "cloudwatch-alarm:nbaops-dev-db-cpu-high", false),
            ("sns-nbaops-function-errors-alarm.json", "P2", PG_ERRORS_ARN, false),
            ("sns-transaction-ids-alarm.json", "P1", "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-db-transaction-ids-critical", true),
        ];
        for (i, (fixture, sev, key, pages)) in cases.into_iter().enumerate() {
            let w = world(&[]).await;
            let r = report(run(&w, alarm_fixture(fixture), "2026-11-25T22:00:00Z").await);
            assert!(
                r.records[0].not_for_me.is_none(),
                "{fixture}: {:?}",
                r.records[0]
            );
            let slack = slack_texts(&w);
            assert_eq!(slack.len(), 1, "{fixture}");
            assert!(
                slack[0].contains(&format!("[{sev}][dev]")),
                "{fixture}: {}",
                slack[0]
            );
            assert!(slack[0].contains(key), "{fixture}: {}", slack[0]);
            let inc = load_incident(&w, key).await.unwrap().unwrap();
            assert_eq!(
                (inc.severity.to_string(), inc.status),
                (sev.to_string(), IncidentStatus::Open),
                "{fixture}"
            );
            assert_eq!(
                w.http.requests_to(PD).len(),
                usize::from(pages),
                "{fixture}"
            );
            assert_eq!(
                w.sns.published().len(),
                usize::from(sev != "P3"),
                "{fixture}: email for P1/P2"
            );
            assert!(
                r.records[0].summary.contains(sev),
                "case {i}: {}",
                r.records[0].summary
            );
        }
    }

    #[tokio::test]
    async fn alarm_then_repeat_insufficient_data_ok_and_a_stale_alarm() {
        let w = world(&[]).await;
        let f = "sns-nbaops-function-errors-alarm.json";
        report(
            run(
                &w,
                alarm_as(f, "ALARM", "2026-11-25T20:41:05.412+0000", "m1"),
                "2026-11-25T20:41:06Z",
            )
            .await,
        );
        assert_eq!(slack_texts(&w).len(), 1);
        assert!(
            slack_texts(&w)[0].starts_with("*[P2][dev]"),
            "{:?}",
            slack_texts(&w)
        );
        assert!(w.http.requests_to(PD).is_empty());
        assert_eq!(w.sns.published().len(), 1);

        // The same ALARM again (a second notification, a redelivery): a duplicate.
        let r = report(
            run(
                &w,
                alarm_as(f, "ALARM", "2026-11-25T20:41:05.412+0000", "m2"),
                "2026-11-25T20:42:00Z",
            )
            .await,
        );
        assert!(
            r.records[0].notes.iter().any(|n| n.contains("duplicate")),
            "{:?}",
            r.records[0]
        );
        assert_eq!(slack_texts(&w).len(), 1);

        // INSUFFICIENT_DATA: noted on the incident, nothing sent, still open.
        let r = report(
            run(
                &w,
                alarm_as(f, "INSUFFICIENT_DATA", "2026-11-25T20:45:00.000+0000", "m3"),
                "2026-11-25T20:45:01Z",
            )
            .await,
        );
        assert!(r.records[0].not_for_me.is_none());
        assert!(
            r.records[0]
                .notes
                .iter()
                .any(|n| n.contains("INSUFFICIENT_DATA")),
            "{:?}",
            r.records[0]
        );
        assert_eq!((slack_texts(&w).len(), w.sns.published().len()), (1, 1));
        let inc = load_incident(&w, PG_ERRORS_ARN).await.unwrap().unwrap();
        assert_eq!(inc.status, IncidentStatus::Open);
        assert!(
            inc.history.iter().any(|h| h.contains("INSUFFICIENT_DATA")),
            "{:?}",
            inc.history
        );

        // OK resolves the same incident where it was opened (Slack and email).
        let ok = alarm_as(
            "sns-nbaops-function-errors-ok.json",
            "OK",
            "2026-11-25T20:52:05.090+0000",
            "m4",
        );
        report(run(&w, ok, "2026-11-25T20:52:06Z").await);
        let slack = slack_texts(&w);
        assert_eq!(slack.len(), 2);
        assert!(slack[1].starts_with("*RESOLVED [P2][dev]"), "{}", slack[1]);
        assert_eq!(w.sns.published().len(), 2);
        let inc = load_incident(&w, PG_ERRORS_ARN).await.unwrap().unwrap();
        assert_eq!(inc.status, IncidentStatus::Resolved);
        assert_eq!(inc.resolved_at, Some(t("2026-11-25T20:52:06Z")));

        // An ALARM older than that OK arriving late (SNS does not keep order) reopens nothing.
        let r = report(
            run(
                &w,
                alarm_as(f, "ALARM", "2026-11-25T20:50:00.000+0000", "m5"),
                "2026-11-25T20:53:00Z",
            )
            .await,
        );
        assert!(
            r.records[0].notes.iter().any(|n| n.contains("older than")),
            "{:?}",
            r.records[0]
        );
        assert_eq!(slack_texts(&w).len(), 2);
        // A newer ALARM opens a new incident.
        report(
            run(
                &w,
                alarm_as(f, "ALARM", "2026-11-25T21:30:00.000+0000", "m6"),
                "2026-11-25T21:30:01Z",
            )
            .await,
        );
        assert_eq!(slack_texts(&w).len(), 3);
        let inc = load_incident(&w, PG_ERRORS_ARN).await.unwrap().unwrap();
        assert_eq!(
            (inc.status, inc.opened_at),
            (IncidentStatus::Open, t("2026-11-25T21:30:01Z"))
        );

        // OK of an alarm with no open incident, INSUFFICIENT_DATA with none: nothing sent.
        let w = world(&[]).await;
        report(
            run(
                &w,
                alarm_as(f, "OK", "2026-11-25T20:41:05.412+0000", "n1"),
                "2026-11-25T20:41:06Z",
            )
            .await,
        );
        let r = report(
            run(
                &w,
                alarm_as(f, "INSUFFICIENT_DATA", "2026-11-25T20:42:05.412+0000", "n2"),
                "2026-11-25T20:42:06Z",
            )
            .await,
        );
        assert!(r.records[0].not_for_me.is_none(), "{:?}", r.records[0]);
        assert!(w.http.requests().is_empty());
        assert!(w.sns.published().is_empty());
    }

    #[tokio::test]
    async fn alarm_severity_comes_from_config_and_an_unmatched_alarm_gets_the_default() {
        let w = world(&[
            ("NBAOPS_ALERTS__ALARM_SEVERITY", "nbaops-dev-web-*=P1"),
            ("NBAOPS_ALERTS__ALARM_SEVERITY_DEFAULT", "P4"),
        ])
        .await;
        report(
            run(
                &w,
                alarm_fixture("sns-single-metric-alarm.json"),
                "2026-11-25T22:00:00Z",
            )
            .await,
        );
        assert_eq!(w.http.requests_to(PD).len(), 1, "P1 by pattern pages");
        report(
            run(
                &w,
                alarm_fixture("sns-nbaops-function-errors-alarm.json"),
                "2026-11-25T22:00:00Z",
            )
            .await,
        );
        let slack = slack_texts(&w);
        assert!(
            slack[1].contains("[P4][dev]"),
            "the configured default: {}",
            slack[1]
        );
    }
}
