//! A schedule tick of its own (`{"nbaops": {"task": "pg-health"}}`) scans every configured
//! database with the read-only monitor role (`scan`, the checks in `checks`), announces new or
//! changed findings and resolves cleared ones (open findings live in the ledger,
//! `pgopen#<db>/<dedup key>`), and emits EMF metrics per database (namespace `nbaops/postgres`).
//!
//! Fanned out (issue #20): a tick `{"nbaops": {"task": "dispatch", "work": "pg-health"}}` enqueues
//! one work item per database ([`Function::targets`]) on the function's SQS work queue; each work
//! item (`{"nbaops": {"task": "pg-health", "target": "<database>", ...}}`) scans that database
//! only. A database that cannot be reached fails its work item (the finding is recorded as on any
//! run) so that SQS delivers it again, then moves it to the dead-letter queue
//! (`nbaops_shared::runtime::fanout`).

use std::time::Duration as StdDuration;

use serde_json::json;

use nbaops_shared::adapters::{pg_access, AwsClients, SdkScheduler};
use nbaops_shared::alerts::AlertStatus;
use nbaops_shared::config::pg::{PgConfig, PgTarget};
use nbaops_shared::deadline::{Budget, MARGIN};
use nbaops_shared::events::{Delivery, Inbound, ScheduledTick};
use nbaops_shared::guard::report_unreadable_state;
use nbaops_shared::ports::{PgConnector, Scheduler};
use nbaops_shared::runtime::fanout::Target;
use nbaops_shared::runtime::{Ctx, Deps, Function, InvocationReport, RecordReport, Work};
use nbaops_shared::telemetry;
use nbaops_shared::{NbaopsError, Result};

use crate::checks::{self, OpenFinding};
use crate::scan::Scan;

pub const FUNCTION: &str = "pg-health";

/// The `pg` section and the connector, built once at init.
pub struct PgHealth {
    pub pg: PgConfig,
    pub connector: Box<dyn PgConnector>,
    /// The immediate wraparound freeze's one-time schedules ([`crate::freeze`]).
    pub scheduler: Box<dyn Scheduler>,
}

impl Function for PgHealth {
    const NAME: &'static str = FUNCTION;
    const TAKES: &'static str = "its own schedule ({\"nbaops\": {\"task\": \"pg-health\"}}) and the PostgreSQL log subscription ({\"awslogs\": …}, crate::logs)";
    type Reply = InvocationReport;

    async fn init(deps: &Deps, aws: &AwsClients) -> Result<Self> {
        let (pg, connector) = pg_access(&deps.cfg.settings)?;
        Ok(PgHealth {
            pg,
            connector,
            scheduler: Box::new(SdkScheduler(aws.scheduler())),
        })
    }

    /// Its own tick becomes one record per database ([`Function::records`]); anything else is
    /// not for it.
    async fn on(&self, inbound: Inbound, ctx: &Ctx<'_>) -> Result<RecordReport> {
        Ok(ctx.not_mine(&inbound))
    }

    /// Its own work fans out one work item per configured database.
    async fn targets(&self, work: &str, _ctx: &Ctx<'_>) -> Result<Option<Vec<Target>>> {
        Ok((work == FUNCTION).then(|| {
            self.pg
                .databases
                .iter()
                .map(|t| Target::local(&t.name))
                .collect()
        }))
    }

    async fn records(&self, inbound: Inbound, ctx: &Ctx<'_>) -> Result<Vec<RecordReport>> {
        match inbound {
            Inbound::Schedule(tick) if tick.task().as_deref() == Some(FUNCTION) => {
                self.on_tick(&tick, ctx).await
            }
            Inbound::Logs(batch) => Ok(vec![crate::logs::on_logs(&self.pg, &batch, ctx).await?]),
            other => Ok(vec![self.on(other, ctx).await?]),
        }
    }
}

impl PgHealth {
    async fn on_tick(&self, tick: &ScheduledTick, ctx: &Ctx<'_>) -> Result<Vec<RecordReport>> {
        // `{"nbaops": {"database": "app"}}` narrows a run to one database, and so does a work
        // item's `target`.
        let only = tick.param("target").or_else(|| tick.param("database"));
        let targets: Vec<&PgTarget> = self
            .pg
            .databases
            .iter()
            .filter(|t| only.as_deref().is_none_or(|o| o == t.name))
            .collect();
        if targets.is_empty() {
            let mut w = ctx.work(&tick.event_id, "schedule", "no database to scan");
            w.note(match only {
                Some(o) => format!("'{o}' is not in pg.databases"),
                None => "pg.databases is empty".into(),
            });
            return Ok(vec![w.rec]);
        }
        // A scan's longest part is a connection (connect timeout) and a statement (statement
        // timeout): a database that could not be scanned before the deadline is left, named.
        let needs = StdDuration::from_secs(self.pg.connect_timeout_seconds)
            + StdDuration::from_millis(self.pg.statement_timeout_ms);
        let mut budget = Budget::new(ctx.inv, MARGIN, needs);
        let mut records = vec![];
        for target in targets {
            if !budget.admit(format!("scan of pg:{}", target.name)) {
                continue;
            }
            let started = std::time::Instant::now();
            let scan = self.scan(target, ctx).await?;
            let summary = format!(
                "pg:{}: {} finding(s){}",
                target.name,
                scan.findings.len(),
                if scan.unchecked.is_empty() {
                    String::new()
                } else {
                    format!(", not checked: {}", scan.unchecked.join(", "))
                }
            );
            let mut w = ctx.work(&tick.event_id, "schedule", summary);
            w.rec.notes = scan.notes.clone();
            if let Some(f) = scan.findings.iter().find(|f| f.signal == "unreachable") {
                // Recorded and announced below as on every run; a work item also fails, for SQS
                // to deliver it again.
                w.rec.failed = Some(format!("pg:{}: {}", target.name, f.summary));
            }
            announce(&target.name, &scan, &mut w).await?;
            self.emergency_freeze(&target.name, &scan.findings, &mut w)
                .await?;
            let env = ctx.env();
            let dims = [("function", FUNCTION), ("env", &env), ("db", &target.name)];
            if !scan.metrics.is_empty() {
                telemetry::emit(&telemetry::emf_line_in(
                    telemetry::PG_SCAN_MILLIS.namespace,
                    &dims,
                    &scan.metrics,
                ));
            }
            // Also over all databases (a second dimension set): what the dashboard shows.
            telemetry::emit_metric(
                &[
                    (
                        telemetry::PG_SCAN_MILLIS,
                        started.elapsed().as_secs_f64() * 1000.0,
                    ),
                    (telemetry::PG_FINDINGS, scan.findings.len() as f64),
                ],
                &dims,
            );
            records.push(w.rec);
        }
        if let Some(note) = budget.report() {
            // Their open findings are neither confirmed nor resolved: nothing was looked at.
            let mut left = ctx.work(
                &tick.event_id,
                "schedule",
                format!("not scanned: {}", budget.left().join(", ")),
            );
            left.note(note.clone());
            if tick.delivery == Delivery::Queue {
                // A work item not done: SQS delivers it again.
                left.rec.failed = Some(note);
            }
            records.push(left.rec);
        }
        Ok(records)
    }
}

fn runbook(signal: &str) -> &'static str {
    match signal {
        "unreachable" => "Check the instance status and security groups; RDS events tell whether a failover or reboot is under way.",
        "connections" => "Look for idle sessions and connection leaks (pg_stat_activity by application); consider a pooler before raising max_connections.",
        "cache-hit" => "Check for new sequential scans (pg_stat_statements) and the instance's memory; a class change waits for the window.",
        "deadlocks" => "Read the server log's deadlock reports; fix the lock order in the application.",
        "replication-lag" => "Check the standby's I/O and long queries on it; lag on an idle primary is 0 by this check, so this is real.",
        "wraparound" => "vacuum-trigger freezes the oldest tables first; check what blocks autovacuum (long transactions, slots, prepared transactions).",
        "bloat" => "vacuum-trigger runs VACUUM (ANALYZE); severe bloat needs VACUUM FULL or pg_repack in a change window.",
        "long-tx" | "idle-in-tx" => "Ask the owner of the session; past the critical threshold vacuum-trigger may end it if its role/application is allow-listed.",
        "lock-wait" => "Find the blocker with pg_blocking_pids() and the long transaction behind it.",
        "vacuum-failure" => "Something stops VACUUM: end the holder (prepared transaction, slot) or give the maintenance role ownership of the table.",
        "unused-index" => "Confirm on every replica (usage is per instance) and with the application owner; nbaops never drops indexes.",
        "slow-query" => "EXPLAIN (ANALYZE, BUFFERS) the statement; look for missing indexes and sequential scans.",
        "vacuum-progress" => "A long VACUUM is usually I/O-throttled or repeatedly scanning indexes; check maintenance_work_mem and cost settings.",
        "check-failed" => "A check timed out or was refused: raise pg.statement_timeout_ms or grant pg_monitor to the monitor role.",
        "archiver" => "Check archive_command / the S3 destination; WAL piles up until archiving succeeds.",
        "index-bloat" => "vacuum-trigger rebuilds it (REINDEX CONCURRENTLY) in the change window over pg.index.reindex_percent; recurring: lower the index's fillfactor.",
        "vacuum-delay" => "The vacuum is throttled by vacuum_cost_delay/cost_limit: raise autovacuum_vacuum_cost_limit (or the table's) if it must finish sooner.",
        "wal-rate" => "Find the writer (pg_stat_statements wal_bytes); a planned bulk job: batch it; normal load: raise pg.wal.*.",
        _ => "",
    }
}

/// Publishes what is new or changed and resolves what cleared, against the open findings of
/// earlier runs (ledger `pgopen#<db>`).
async fn announce(db: &str, scan: &Scan, w: &mut Work<'_>) -> Result<()> {
    let ctx = w.ctx;
    let ledger = &ctx.deps.ledger;
    let pk = format!("pgopen#{db}");
    let mut open: Vec<(String, OpenFinding)> = Vec::new();
    for (k, v) in ledger.query(&pk, "").await? {
        match serde_json::from_value(v) {
            Ok(o) => open.push((k, o)),
            // Not silently "not open": say so (P2), the report names the item.
            Err(e) => {
                let (note, alert) = report_unreadable_state(
                    ctx.cfg(),
                    ctx.deps.notifier.as_ref(),
                    &format!("pg:{db}"),
                    &format!("open finding {k}"),
                    &e.to_string(),
                    ctx.now(),
                )
                .await?;
                w.note(note);
                w.rec.alerts.push(alert);
            }
        }
    }
    let mut t = checks::transitions(&open, &scan.findings, &scan.unchecked);
    t.resolved.retain(|(key, _)| {
        let keep = scan.unjudged.contains(key);
        if keep {
            w.rec.notes.push(format!(
                "{key}: not judged this run (no measurement, no trustworthy estimate): stays open"
            ));
        }
        !keep
    });
    for f in &t.publish {
        let alert = ctx
            .alert(f.severity, &f.resource, f.dedup_key(), f.summary.clone())
            .with_details(json!({"signal": f.signal, "level": f.level, "observed": f.details}))
            .with_runbook(runbook(f.signal));
        ctx.publish(&alert).await?;
        let since = open
            .iter()
            .find(|(k, _)| *k == f.dedup_key())
            .map(|(_, o)| o.since)
            .unwrap_or(ctx.now());
        let item = OpenFinding {
            severity: f.severity,
            resource: f.resource.clone(),
            summary: f.summary.clone(),
            since,
        };
        let data = serde_json::to_value(&item)
            .map_err(|e| NbaopsError::InvalidEvent(format!("finding: {e}")))?;
        ledger.put(&pk, &f.dedup_key(), &data, None).await?;
        w.rec.alerts.push(alert);
    }
    for f in &t.unchanged {
        w.note(format!(
            "still {}: {} (already announced)",
            f.severity, f.summary
        ));
    }
    for (key, o) in &t.resolved {
        let mut alert = ctx
            .alert(
                o.severity,
                &o.resource,
                key.clone(),
                format!("resolved: {}", o.summary),
            )
            .with_details(json!({"since": o.since}));
        alert.status = AlertStatus::Resolved;
        ctx.publish(&alert).await?;
        ledger.delete(&pk, key).await?;
        w.rec.alerts.push(alert);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use nbaops_shared::fakes::{leak, test_deps, FakeScheduler, RefusingPg, Shared};
    use nbaops_shared::runtime::{dispatch, Invocation};

    #[tokio::test]
    async fn only_its_own_schedule_is_taken() {
        let t = test_deps(
            FUNCTION,
            &[
                (
                    "NBAOPS_ALERTS_TOPIC_ARN",
                    "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
                ),
                (
                    "NBAOPS_PG__DATABASES",
                    "app=postgres://nbaops_monitor@db.nbaops.test:5432/app",
                ),
            ],
        )
        .unwrap();
        let pg = leak(RefusingPg::default());
        let f = PgHealth {
            pg: nbaops_shared::config::pg::from_settings(&t.deps.cfg.settings).unwrap(),
            connector: Box::new(Shared(pg)),
            scheduler: Box::new(FakeScheduler::default()),
        };
        let inv = Invocation::at(
            "req",
            chrono::Utc
                .with_ymd_and_hms(2026, 11, 26, 21, 0, 0)
                .unwrap(),
        );
        let ctx = Ctx::of::<PgHealth>(t.deps, &inv);
        // Another function's tick, or a tick without a task: not for me, no session, nothing said.
        for other in [
            json!({"nbaops": {"task": "vacuum-trigger"}}),
            json!({"nbaops": {"id": "x"}}),
        ] {
            let r = dispatch(&f, other, &ctx).await.unwrap();
            assert_eq!(r.records.len(), 1, "{r:?}");
            let why = r.records[0].not_for_me.clone().unwrap_or_default();
            assert!(why.starts_with("pg-health takes its own schedule"), "{why}");
            assert!(pg.urls().is_empty(), "a session for another task");
            assert!(t.notifier.published().is_empty());
        }
        // Its own tick scans each database: refused here, a P1 "cannot connect".
        let r = dispatch(&f, json!({"nbaops": {"task": "pg-health"}}), &ctx)
            .await
            .unwrap();
        assert_eq!(pg.urls().len(), 1);
        assert!(
            r.records[0].summary.starts_with("pg:app: 1 finding(s)"),
            "{r:?}"
        );
        assert_eq!(r.records[0].alerts[0].dedup_key, "pg-unreachable#pg:app");

        // Fanned out: its targets are the databases; a work item of an unreachable database
        // fails its message (the finding still recorded), a work item of another target is done.
        let targets = f.targets(FUNCTION, &ctx).await.unwrap().unwrap();
        assert_eq!(targets, vec![Target::local("app")]);
        assert!(f.targets("vacuum-trigger", &ctx).await.unwrap().is_none());
        let item = |id: &str, target: &str| {
            json!({"messageId": id, "eventSource": "aws:sqs", "attributes": {"ApproximateReceiveCount": "1"},
                   "body": json!({"nbaops": {"task": "pg-health", "target": target, "account": "123456789012",
                                  "region": "us-east-1", "dispatched_at": "2026-11-26T21:00:00Z"}}).to_string()})
        };
        let batch = json!({"Records": [item("m-app", "app"), item("m-gone", "gone")]});
        let r = dispatch(&f, batch, &ctx).await.unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["batchItemFailures"],
            json!([{"itemIdentifier": "m-app"}]),
            "{v}"
        );
        assert_eq!(
            pg.urls().len(),
            2,
            "one more session: the work item's database only"
        );
        // The finding is kept as on any run (announced by the tick above, so "still P1" now).
        let app = r
            .records
            .iter()
            .find(|x| x.summary.starts_with("pg:app: 1 finding(s)"));
        assert!(
            app.is_some_and(|x| x
                .notes
                .iter()
                .any(|n| n.starts_with("still P1: app: cannot connect"))),
            "{v}"
        );
        assert!(
            app.and_then(|x| x.failed.as_deref())
                .is_some_and(|f| f.contains("cannot connect")),
            "{v}"
        );
    }
}
