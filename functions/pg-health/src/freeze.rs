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
        let created = self.scheduler.create_once(&s).await?;
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
