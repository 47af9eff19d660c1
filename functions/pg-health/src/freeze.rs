//! The immediate wraparound freeze (issue #22): a wraparound finding at its emergency level (P1,
//! past `vacuum_failsafe_age` or `pg.xid.emergency_age`) cannot wait for vacuum-trigger's
//! Tue/Thu schedule. pg-health creates a one-time EventBridge Scheduler schedule (a minute from
//! now) that invokes vacuum-trigger with an event naming the database and "emergency freeze";
//! vacuum-trigger freezes that database's oldest tables at once, through its guard, as a P1
//! emergency change (`functions/vacuum-trigger/src/emergency.rs`).
//!
//! Once per database and UTC day: the ledger remembers the day (`pgbase#<db>` / `emergency_freeze`)
//! and the schedule's name carries it (a second create of the same name is refused). Without
//! `pg.emergency_freeze.target_arn` / `role_arn` nothing is scheduled (a note says so); in
//! dry-run the schedule is only described.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use nbaops_shared::ports::OneTimeSchedule;
use nbaops_shared::runtime::Work;
use nbaops_shared::Result;

use crate::checks::{Finding, Level};
use crate::handler::PgHealth;

/// The `emergency` value vacuum-trigger accepts.
pub const EMERGENCY_FREEZE: &str = "freeze";

/// The schedule's name: one per environment, database and UTC day.
pub fn schedule_name(env: &str, db: &str, now: DateTime<Utc>) -> String {
    OneTimeSchedule::name_for(&format!(
        "nbaops-{env}-freeze-{db}-{}",
        now.format("%Y%m%d")
    ))
}

/// The event vacuum-trigger receives.
pub fn input(name: &str, db: &str, f: &Finding) -> Value {
    json!({"nbaops": {
        "task": "vacuum-trigger",
        "id": name,
        "emergency": EMERGENCY_FREEZE,
        "database": db,
        "requested_by": "pg-health",
        "finding": f.dedup_key(),
        "reason": f.summary,
    }})
}

/// The emergency wraparound finding of a scan, if any.
pub fn emergency(findings: &[Finding]) -> Option<&Finding> {
    findings
        .iter()
        .find(|f| f.signal == "wraparound" && f.level == Level::Emergency)
}

impl PgHealth {
    /// After a scan of `db`: schedules vacuum-trigger's freeze at once when the scan found a
    /// wraparound emergency (see the module).
    pub async fn emergency_freeze(
        &self,
        db: &str,
        findings: &[Finding],
        w: &mut Work<'_>,
    ) -> Result<()> {
        let Some(f) = emergency(findings) else {
            return Ok(());
        };
        let ctx = w.ctx;
        let target = &self.pg.emergency_freeze;
        if !target.enabled() {
            w.note("wraparound emergency: no immediate freeze scheduled (pg.emergency_freeze.target_arn / role_arn not set): vacuum-trigger freezes on its own schedule");
            return Ok(());
        }
        let now = ctx.now();
        let day = now.format("%Y-%m-%d").to_string();
        let pk = format!("pgbase#{db}");
        let ledger = &ctx.deps.ledger;
        if ledger
            .get(&pk, "emergency_freeze")
            .await?
            .is_some_and(|v| v["day"] == day.as_str())
        {
            w.note(format!(
                "wraparound emergency: the immediate freeze of {db} was already scheduled today ({day})"
            ));
            return Ok(());
        }
        let name = schedule_name(&ctx.env(), db, now);
        let s = OneTimeSchedule {
            group: target.group.clone(),
            name: name.clone(),
            at: now + Duration::minutes(1),
            target_arn: target.target_arn.clone(),
            role_arn: target.role_arn.clone(),
            input: input(&name, db, f),
        };
        if ctx.dry_run().await {
            w.note(format!(
                "dry-run: would schedule vacuum-trigger's emergency freeze of {db} at {} ({}/{})",
                s.at.to_rfc3339(),
                s.group,
                s.name
            ));
            return Ok(());
        }
        let created = match self.scheduler.create_once(&s).await {
            Ok(c) => c,
            // The P1 alert is out already; the scan's report stands. Tried again next run.
            Err(e) => {
                w.note(format!(
                    "wraparound emergency: could not schedule vacuum-trigger's freeze of {db} ({}/{}): {e}; tried again next run",
                    s.group, s.name
                ));
                return Ok(());
            }
        };
        ledger
            .put(
                &pk,
                "emergency_freeze",
                &json!({"day": day, "schedule": format!("{}/{}", s.group, s.name), "at": s.at.to_rfc3339(), "finding": f.dedup_key()}),
                Some((now + Duration::days(2)).timestamp()),
            )
            .await?;
        w.note(if created {
            format!(
                "wraparound emergency: vacuum-trigger's freeze of {db} scheduled at {} ({}/{})",
                s.at.to_rfc3339(),
                s.group,
                s.name
            )
        } else {
            format!(
                "wraparound emergency: the freeze of {db} was already scheduled ({}/{})",
                s.group, s.name
            )
        });
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::checks::{wraparound, Level};
    use chrono::TimeZone;
    use nbaops_shared::fakes::{leak, test_deps, FakeScheduler, RefusingPg, Shared};
    use nbaops_shared::runtime::{Ctx, Invocation};

    const ARN: &str =
        "arn:aws:lambda:us-east-1:123456789012:function:nbaops-dev-vacuum-trigger:live";
    const ROLE: &str = "arn:aws:iam::123456789012:role/nbaops-dev-pg-emergency";

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, h, 0, 0).unwrap()
    }

    fn finding(age: i64) -> Vec<Finding> {
        let cfg = nbaops_shared::config::pg::from_settings(
            &test_deps("pg-health", &[]).unwrap().deps.cfg.settings,
        )
        .unwrap();
        let row = serde_json::json!({"xid_age": age, "mxid_age": 0, "failsafe_age": 1_600_000_000})
            .as_object()
            .unwrap()
            .clone();
        wraparound("app", &row, &cfg).1.into_iter().collect()
    }

    async fn run(
        vars: &[(&str, &str)],
        findings: &[Finding],
        hours: &[u32],
    ) -> (&'static FakeScheduler, Vec<Vec<String>>) {
        let mut all = vec![
            (
                "NBAOPS_ALERTS_TOPIC_ARN",
                "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
            ),
            (
                "NBAOPS_PG__DATABASES",
                "app=postgres://nbaops_monitor@db.nbaops.test:5432/app",
            ),
        ];
        all.extend_from_slice(vars);
        let t = test_deps(crate::handler::FUNCTION, &all).unwrap();
        let scheduler = leak(FakeScheduler::default());
        let f = PgHealth {
            pg: nbaops_shared::config::pg::from_settings(&t.deps.cfg.settings).unwrap(),
            connector: Box::new(Shared(leak(RefusingPg::default()))),
            scheduler: Box::new(Shared(scheduler)),
        };
        let mut notes = vec![];
        for h in hours {
            let inv = Invocation::at("req", at(*h));
            let ctx = Ctx::of::<PgHealth>(t.deps, &inv);
            let mut w = ctx.work("ev", "schedule", "x");
            f.emergency_freeze("app", findings, &mut w).await.unwrap();
            notes.push(w.rec.notes.clone());
        }
        (scheduler, notes)
    }

    #[tokio::test]
    async fn only_an_emergency_once_a_day_and_only_when_configured() {
        let on = [
            ("NBAOPS_PG__EMERGENCY_FREEZE__TARGET_ARN", ARN),
            ("NBAOPS_PG__EMERGENCY_FREEZE__ROLE_ARN", ROLE),
        ];
        // Critical (1 B) is not the emergency: nothing scheduled.
        let crit = finding(1_200_000_000);
        assert_eq!(crit[0].level, Level::Critical);
        let (s, notes) = run(&on, &crit, &[10]).await;
        assert!(s.all().is_empty() && notes[0].is_empty(), "{notes:?}");

        // Past the failsafe: one schedule a minute from now, named for the day, the event says
        // which database and "freeze"; the next runs that day schedule nothing more.
        let p1 = finding(1_700_000_000);
        assert_eq!(p1[0].level, Level::Emergency);
        let (s, notes) = run(&on, &p1, &[10, 11, 12]).await;
        assert_eq!(
            s.mutations(),
            vec!["create_once default/nbaops-dev-freeze-app-20261125 at(2026-11-25T10:01:00)"]
        );
        let one = &s.all()[0];
        assert_eq!(
            (one.target_arn.as_str(), one.role_arn.as_str()),
            (ARN, ROLE)
        );
        assert_eq!(one.input["nbaops"]["emergency"], EMERGENCY_FREEZE);
        assert_eq!(one.input["nbaops"]["database"], "app");
        assert_eq!(one.input["nbaops"]["finding"], "pg-wraparound#pg:app");
        assert!(notes[1][0].contains("already scheduled today"), "{notes:?}");

        // Scheduler refuses (e.g. AccessDenied): said, nothing remembered, the scan unharmed.
        let t = test_deps(
            crate::handler::FUNCTION,
            &[
                (
                    "NBAOPS_PG__DATABASES",
                    "app=postgres://nbaops_monitor@db.nbaops.test:5432/app",
                ),
                on[0],
                on[1],
            ],
        )
        .unwrap();
        let refusing = leak(FakeScheduler::default());
        *refusing.refuse_creates.lock().unwrap() = Some("AccessDeniedException".into());
        let f = PgHealth {
            pg: nbaops_shared::config::pg::from_settings(&t.deps.cfg.settings).unwrap(),
            connector: Box::new(Shared(leak(RefusingPg::default()))),
            scheduler: Box::new(Shared(refusing)),
        };
        let inv = Invocation::at("req", at(10));
        let ctx = Ctx::of::<PgHealth>(t.deps, &inv);
        let mut w = ctx.work("ev", "schedule", "x");
        f.emergency_freeze("app", &p1, &mut w).await.unwrap();
        assert!(
            w.rec.notes[0].contains("could not schedule"),
            "{:?}",
            w.rec.notes
        );
        assert_eq!(
            t.ledger.len_with_prefix("pgbase#app"),
            0,
            "nothing remembered"
        );

        // Not configured: said, nothing created. Dry-run: described, nothing created.
        let (s, notes) = run(&[], &p1, &[10]).await;
        assert!(s.all().is_empty());
        assert!(
            notes[0][0].contains("pg.emergency_freeze.target_arn"),
            "{notes:?}"
        );
        let dry = [on[0], on[1], ("NBAOPS_GUARD__DRY_RUN", "true")];
        let (s, notes) = run(&dry, &p1, &[10]).await;
        assert!(s.all().is_empty());
        assert!(
            notes[0][0].starts_with("dry-run: would schedule"),
            "{notes:?}"
        );
    }

    #[test]
    fn config_needs_both_arns() {
        let bad = test_deps(
            "pg-health",
            &[("NBAOPS_PG__EMERGENCY_FREEZE__TARGET_ARN", ARN)],
        )
        .unwrap();
        let e = nbaops_shared::config::pg::from_settings(&bad.deps.cfg.settings).unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
    }
}
