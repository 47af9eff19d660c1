//! The immediate wraparound freeze (issue #22): pg-health's one-time schedule invokes
//! vacuum-trigger with `{"nbaops": {"task": "vacuum-trigger", "emergency": "freeze", "database":
//! "<name>", "finding": ..., "reason": ...}}` when a wraparound finding reaches its emergency
//! (P1) level. vacuum-trigger then freezes that database's tables past `pg.vacuum.freeze_age`
//! at once — oldest first, at most `pg.vacuum.max_tables_per_run` — and nothing else (no
//! vacuum, no rebuild, no session ended). Each freeze is a P1 action through the guard: kill
//! switch, dry-run, protected tag, cooldown, blast radius and idempotency apply as always; the
//! change window is passed as a P1 emergency change and audited so (`emergency_change`).
//!
//! Anything else carrying `emergency` is refused explicitly (a record that says why, no
//! session): another kind, no database, a database not in `pg.databases`.

use std::time::Instant;

use nbaops_shared::events::ScheduledTick;
use nbaops_shared::runtime::{Ctx, RecordReport, Work};
use nbaops_shared::sql::{self, Maintenance};
use nbaops_shared::Result;

use crate::handler::VacuumTrigger;
use crate::statement::DbSession;

/// The one emergency vacuum-trigger accepts (pg-health's `freeze::EMERGENCY_FREEZE`).
pub const FREEZE: &str = "freeze";

/// Why an emergency event is refused, or the database it names.
pub fn check(
    kind: &str,
    database: Option<&str>,
    known: &[&str],
) -> std::result::Result<String, String> {
    if kind != FREEZE {
        return Err(format!(
            "emergency '{kind}' refused: vacuum-trigger takes only an emergency '{FREEZE}'"
        ));
    }
    let Some(db) = database.filter(|d| !d.is_empty()) else {
        return Err("emergency freeze refused: no database named (nbaops.database)".into());
    };
    if !known.contains(&db) {
        return Err(format!(
            "emergency freeze refused: '{db}' is not in pg.databases"
        ));
    }
    Ok(db.to_string())
}

impl VacuumTrigger {
    pub(crate) async fn on_emergency(
        &self,
        tick: &ScheduledTick,
        kind: &str,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<RecordReport>> {
        let known: Vec<&str> = self.pg.databases.iter().map(|t| t.name.as_str()).collect();
        let db = match check(kind, tick.param("database").as_deref(), &known) {
            Ok(db) => db,
            Err(why) => {
                let mut w = ctx.work(&tick.event_id, "schedule", why.clone());
                w.rec.failed = Some(why);
                return Ok(vec![w.rec]);
            }
        };
        let Some(target) = self.pg.databases.iter().find(|t| t.name == db) else {
            return Ok(vec![]);
        };
        let by = tick.param("requested_by").unwrap_or_else(|| "?".into());
        let finding = tick.param("finding").unwrap_or_default();
        let mut w = ctx.work(
            &tick.event_id,
            "schedule",
            format!("pg:{db}: emergency freeze (requested by {by})"),
        );
        w.note(format!(
            "emergency freeze of {db} requested by {by}{}{}",
            if finding.is_empty() { "" } else { " for " },
            finding
        ));
        if let Some(reason) = tick.param("reason") {
            w.note(format!("finding: {reason}"));
        }
        if let Err(e) = self.freeze_now(target, &finding, &mut w).await {
            w.note(format!("emergency freeze not done: {e}"));
            w.rec.failed = Some(e.to_string());
        }
        Ok(vec![w.rec])
    }

    async fn freeze_now(
        &self,
        target: &nbaops_shared::config::pg::PgTarget,
        finding: &str,
        w: &mut Work<'_>,
    ) -> Result<()> {
        let cfg = &self.pg;
        let ctx = w.ctx;
        let db = target.name.as_str();
        let started = Instant::now();
        let (pg, server) = self.open(target, &ctx).await?;
        let pg = pg.as_ref();
        if server.in_recovery {
            w.note("a standby: the freeze happens on the primary");
            return Ok(());
        }
        let (tables, measured) = self.table_inputs(pg, &server, db, &ctx).await?;
        let db_now = server.now.unwrap_or(ctx.now());
        let plan: Vec<_> =
            sql::plan_maintenance(&tables, cfg, &|t| measured.get(&t.oid).copied(), db_now)
                .into_iter()
                .filter(|(_, n)| n.kind == Maintenance::Freeze)
                .collect();
        w.rec.summary = format!(
            "pg:{db}: emergency freeze, {} table(s) past pg.vacuum.freeze_age",
            plan.len()
        );
        if plan.is_empty() {
            w.note("no table past pg.vacuum.freeze_age: nothing to freeze (the age is elsewhere: a long transaction, a slot, a prepared transaction holds it)");
        }
        w.guard = ctx.guard(&w.rec.event_id).with_fleet_size(tables.len());
        let s = DbSession {
            db,
            pg,
            version: server.version,
            emergency: Some(if finding.is_empty() {
                "emergency freeze".to_string()
            } else {
                format!("emergency freeze for {finding}")
            }),
        };
        let max = cfg.vacuum.max_tables_per_run;
        for (i, (t, need)) in plan.iter().enumerate() {
            if i >= max {
                w.note(format!(
                    "{} more table(s) left for the next run (pg.vacuum.max_tables_per_run {max})",
                    plan.len() - i
                ));
                break;
            }
            let now = ctx.now() + chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
            let ms =
                match crate::plan::budget(started.elapsed(), now, ctx.inv.deadline, &cfg.vacuum) {
                    crate::plan::Budget::Go {
                        statement_timeout_ms,
                    } => statement_timeout_ms,
                    crate::plan::Budget::Stop(why) => {
                        w.note(format!("emergency freeze stopped: {why}"));
                        break;
                    }
                };
            pg.execute(&format!("SET statement_timeout = {ms}")).await?;
            self.maintain_table(&s, t, need, w).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_freeze_of_a_configured_database_is_taken() {
        let known = ["app", "stats"];
        assert_eq!(check("freeze", Some("app"), &known), Ok("app".into()));
        for (kind, db, says) in [
            ("drop", Some("app"), "emergency 'drop' refused"),
            ("FREEZE", Some("app"), "refused"),
            ("freeze", None, "no database named"),
            ("freeze", Some(""), "no database named"),
            ("freeze", Some("other"), "'other' is not in pg.databases"),
        ] {
            let e = check(kind, db, &known).unwrap_err();
            assert!(e.contains(says), "{kind} {db:?}: {e}");
        }
    }
}
