//! One database's scan: the session as the monitor role, then the steps of [`checks::SCAN`] in
//! order. A check that cannot run leaves its signals unchecked (nothing of them resolves) and is
//! reported once per database (`check-failed`).
//!
//! Ledger items: `pgbase#<db>/counters` (counter baseline), `pgbase#<db>/tables` (dead tuples
//! and last vacuum of the tables worth watching), `pgbase#<db>/measured` (the last
//! pgstattuple_approx figure per bloat candidate), `pgmaint#<db>/<table oid>` (measured bloat
//! for vacuum-trigger, 1 day), `pgbase#<db>/wal` (the last WAL position and when), `pgbase#<db>/vacdelay` (the running
//! vacuums' delay samples); read: `pgvacfail#<db>/*` (vacuum-trigger's failed statements).

use std::collections::BTreeMap;

use chrono::Duration;
use serde_json::{json, Value};

use nbaops_shared::config::pg::PgTarget;
use nbaops_shared::guard::{decode_state, report_unreadable_state};
use nbaops_shared::ports::Postgres;
use nbaops_shared::runtime::Ctx;
use nbaops_shared::sql::indexes::IndexStats;
use nbaops_shared::sql::{self, Row, Server, TableStats};
use nbaops_shared::{NbaopsError, Result};

use crate::checks::{self, Check, Counters, Delta, Finding, Judged, Seen, Step};
use crate::handler::{PgHealth, FUNCTION};

/// Every signal: when the database cannot be reached, all but the refusal's are not checked.
const SIGNALS: &[&str] = &[
    "unreachable",
    "connections",
    "cache-hit",
    "deadlocks",
    "replication-lag",
    "wraparound",
    "bloat",
    "long-tx",
    "idle-in-tx",
    "lock-wait",
    "vacuum-failure",
    "vacuum-progress",
    "unused-index",
    "slow-query",
    "archiver",
    "index-bloat",
    "wal-rate",
    "vacuum-delay",
    "check-failed",
];

#[derive(Default)]
pub struct Scan {
    pub findings: Vec<Finding>,
    pub unchecked: Vec<&'static str>,
    /// Dedup keys of findings this run could neither confirm nor clear (kept open as they are).
    pub unjudged: Vec<String>,
    pub notes: Vec<String>,
    pub metrics: Vec<(&'static str, f64, &'static str)>,
    /// Checks that could not run, with the error: one check-failed finding at the end.
    failures: Vec<(Vec<&'static str>, String)>,
    /// Stalled vacuums (the tables step), reported after vacuum-trigger's own failures.
    stalled: Vec<Finding>,
}

impl Scan {
    fn failed(&mut self, signals: &[&'static str], e: &NbaopsError) {
        self.unchecked.extend_from_slice(signals);
        self.notes
            .push(format!("{} not checked: {e}", signals.join("/")));
        self.failures.push((signals.to_vec(), e.to_string()));
    }

    fn take(&mut self, j: Judged) {
        self.metrics.extend(j.metrics);
        self.findings.extend(j.findings);
        self.notes.extend(j.notes);
    }
}

async fn first_row(pg: &dyn Postgres, sql: &str) -> Result<Row> {
    pg.query(sql)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| NbaopsError::dependency("postgres", "query returned no row"))
}

/// One check: its SQL (after the extension it needs, if any), judged.
async fn run(check: &Check, pg: &dyn Postgres, seen: &Seen<'_>, s: &mut Scan) {
    if check.primary_only && seen.server.in_recovery {
        s.unchecked.extend_from_slice(check.signals);
        return;
    }
    if let Some((present, note)) = check.needs {
        match first_row(pg, present).await {
            Ok(r) if sql::bool_of(&r, "present") => {}
            Ok(_) => {
                s.unchecked.extend_from_slice(check.signals);
                s.notes.push(note.into());
                return;
            }
            Err(e) => return s.failed(check.signals, &e),
        }
    }
    let judged = match pg.query(&(check.sql)(seen.server, seen.cfg)).await {
        Ok(rows) => (check.judge)(seen, &rows),
        Err(e) => Err(e),
    };
    match judged {
        Ok(j) => s.take(j),
        Err(e) => s.failed(check.signals, &e),
    }
}

/// What the ledger-keeping steps share: the session, what it sees, and what earlier runs kept.
struct Steps<'a> {
    pg: &'a dyn Postgres,
    seen: Seen<'a>,
    ctx: &'a Ctx<'a>,
    /// `pgbase#<db>`: what earlier runs kept (counters, tables, measured), read once.
    base: BTreeMap<String, Value>,
}

impl PgHealth {
    pub async fn scan(&self, target: &PgTarget, ctx: &Ctx<'_>) -> Result<Scan> {
        let cfg = &self.pg;
        let db = target.name.as_str();
        let mut s = Scan::default();
        let setup = sql::session_setup(
            "nbaops-pg-health",
            cfg.statement_timeout_ms,
            cfg.lock_timeout_ms,
            true,
        );
        let opened =
            sql::open_session(ctx, cfg, self.connector.as_ref(), target, "monitor", &setup).await;
        let server = match opened {
            Ok(pg) => first_row(pg.as_ref(), sql::SERVER)
                .await
                .map(|r| (pg, Server::from_row(&r))),
            Err(e) => Err(e),
        };
        let (pg, server) = match server {
            Ok(v) => v,
            Err(e) => {
                // Connected but the first query failed (e.g. statement timeout): refused() tells.
                let f = checks::refused(db, &e.to_string());
                s.unchecked = SIGNALS
                    .iter()
                    .copied()
                    .filter(|sig| *sig != f.signal)
                    .collect();
                s.notes.push(format!("cannot connect: {e}"));
                s.findings.push(f);
                s.metrics.push(("Reachable", 0.0, "Count"));
                return Ok(s);
            }
        };
        let pg = pg.as_ref();
        if !server.sees_all_sessions {
            // Not silently empty: a role without pg_monitor sees other sessions as NULLs.
            s.failed(
                &["long-tx", "idle-in-tx", "lock-wait", "slow-query", "replication-lag"],
                &NbaopsError::dependency(
                    "postgres",
                    format!(
                        "no privilege: role {} is not a member of pg_monitor (pg_read_all_stats), so other roles' sessions, statements and replication progress are hidden",
                        server.role
                    ),
                ),
            );
        }
        s.metrics.push(("Reachable", 1.0, "Count"));
        s.notes.push(format!(
            "PostgreSQL {} {} as {}",
            server.version.major(),
            if server.in_recovery {
                "standby"
            } else {
                "primary"
            },
            server.role
        ));
        let base = ctx
            .deps
            .ledger
            .query(&format!("pgbase#{db}"), "")
            .await?
            .into_iter()
            .collect();
        let steps = Steps {
            pg,
            seen: Seen {
                db,
                server: &server,
                cfg,
                // Database timestamps are compared on the database's clock.
                now: server.now.unwrap_or(ctx.now()),
            },
            ctx,
            base,
        };
        for step in checks::SCAN {
            match step {
                Step::Check(check) => run(check, pg, &steps.seen, &mut s).await,
                Step::Counters => steps.counters(&mut s).await?,
                Step::Tables => steps.tables(&mut s).await?,
                Step::OwnVacuumFailures => steps.own_vacuum_failures(&mut s).await?,
                Step::IndexBloat => steps.index_bloat(&mut s).await,
                Step::WalRate => steps.wal_rate(&mut s).await?,
                Step::VacuumDelay => steps.vacuum_delay(&mut s).await?,
            }
        }
        s.findings.extend(checks::check_failed(db, &s.failures));
        Ok(s)
    }
}

impl Steps<'_> {
    fn pk(&self) -> String {
        format!("pgbase#{}", self.seen.db)
    }

    /// An earlier run's item this version cannot read: loud (P2), and taken as a first run.
    async fn unreadable(&self, what: &str, e: &str, s: &mut Scan) -> Result<()> {
        let deps = self.ctx.deps;
        let (note, _) = report_unreadable_state(
            &deps.cfg,
            deps.notifier.as_ref(),
            &format!("pg:{}", self.seen.db),
            what,
            e,
            self.seen.now,
        )
        .await?;
        s.notes.push(note);
        Ok(())
    }

    async fn counters(&self, s: &mut Scan) -> Result<()> {
        let (db, cfg) = (self.seen.db, self.seen.cfg);
        let r = match first_row(self.pg, sql::DATABASE_COUNTERS).await {
            Ok(r) => r,
            Err(e) => {
                s.failed(&["cache-hit", "deadlocks"], &e);
                return Ok(());
            }
        };
        let cur = Counters::from_row(&r, self.seen.now);
        let prev: Option<Counters> = match decode_state(self.base.get("counters").cloned()) {
            Ok(p) => p,
            // No rate this time, nothing acted on.
            Err(e) => {
                self.unreadable("counters baseline", &e, s).await?;
                None
            }
        };
        let d = checks::delta(prev.as_ref(), &cur);
        // No rate this run: an open cache-hit/deadlocks finding is neither confirmed nor
        // resolved by it.
        match &d {
            Delta::First => {
                s.unchecked.extend(["cache-hit", "deadlocks"]);
                s.notes.push("first run: counter baseline taken".into())
            }
            Delta::Reset(why) => {
                s.unchecked.extend(["cache-hit", "deadlocks"]);
                s.notes.push(format!(
                    "counters restarted ({why}): baseline re-taken, no rates this run"
                ))
            }
            Delta::Since { .. } => {}
        }
        let (ratio, f) = checks::cache_hit(db, &d, cfg);
        if let Some(r) = ratio {
            s.metrics.push(("CacheHitPercent", r, "Percent"));
        }
        s.findings.extend(f);
        let (rate, f) = checks::deadlocks(db, &d, cfg);
        if let Some(r) = rate {
            s.metrics.push(("DeadlocksPerHour", r, "Count"));
        }
        s.findings.extend(f);
        let data = serde_json::to_value(&cur)
            .map_err(|e| NbaopsError::InvalidEvent(format!("counters: {e}")))?;
        self.ctx
            .deps
            .ledger
            .put(&self.pk(), "counters", &data, None)
            .await
    }

    /// A standby's tables are the primary's: judged (and vacuumed) there.
    async fn tables(&self, s: &mut Scan) -> Result<()> {
        let (db, cfg, now) = (self.seen.db, self.seen.cfg, self.seen.now);
        if self.seen.server.in_recovery {
            s.unchecked.push("bloat");
            return Ok(());
        }
        let query = sql::tables::tables_for_health(
            self.seen.server.version,
            cfg.bloat_min_bytes,
            cfg.vacuum.min_dead_tuples,
        );
        let rows = match self.pg.query(&query).await {
            Ok(rows) => rows,
            Err(e) => {
                s.failed(&["bloat", "vacuum-failure"], &e);
                return Ok(());
            }
        };
        let ledger = &self.ctx.deps.ledger;
        let tables: Vec<TableStats> = rows.iter().map(TableStats::from_row).collect();
        let memory = self
            .base
            .get("measured")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok());
        let (mut measured, remember) = self.measure(&tables, memory, s).await;
        let (fs, notes) = checks::bloat(db, &tables, &measured, cfg, now);
        s.unjudged
            .extend(checks::bloat_unjudged(db, &tables, &measured, cfg, now));
        s.metrics.push(("BloatedTables", fs.len() as f64, "Count"));
        s.findings.extend(fs);
        s.notes.extend(notes);
        self.hand_off(&tables, &mut measured).await?;
        if remember {
            let fresh = measured.iter().filter(|m| m.1.fresh);
            let reused = measured.iter().filter(|m| !m.1.fresh);
            let keep = checks::measurement_memory(
                &fresh.map(|(k, v)| (*k, v.clone())).collect(),
                &reused.map(|(k, v)| (*k, v.clone())).collect(),
            );
            let data = serde_json::to_value(&keep)
                .map_err(|e| NbaopsError::InvalidEvent(format!("measured: {e}")))?;
            ledger.put(&self.pk(), "measured", &data, None).await?;
        }
        let prev: BTreeMap<String, checks::TableSnap> =
            match decode_state(self.base.get("tables").cloned()) {
                Ok(p) => p.unwrap_or_default(),
                // No stalled-vacuum verdict this time.
                Err(e) => {
                    self.unreadable("tables baseline", &e, s).await?;
                    BTreeMap::new()
                }
            };
        s.stalled = checks::stalled_vacuums(db, &prev, &tables, cfg, now);
        let snap = serde_json::to_value(checks::table_snapshot(&tables, cfg))
            .map_err(|e| NbaopsError::InvalidEvent(format!("tables: {e}")))?;
        ledger.put(&self.pk(), "tables", &snap, None).await
    }

    /// Confirms bloat candidates with pgstattuple_approx when the extension is installed, at
    /// most `pg.bloat.measure_per_run` per run (`checks::plan_measurements`: never measured
    /// first, then the oldest figure); the others keep their figure of the last day (`memory`:
    /// ledger `pgbase#<db>` / `measured`), and what had neither is said in a note. Returns the
    /// figures (this run's and the kept ones) and whether they are to be remembered.
    async fn measure(
        &self,
        tables: &[TableStats],
        memory: Option<BTreeMap<String, checks::Measurement>>,
        s: &mut Scan,
    ) -> (BTreeMap<i64, checks::Measurement>, bool) {
        let (pg, cfg, now) = (self.pg, self.seen.cfg, self.ctx.now());
        let mut out = BTreeMap::new();
        let candidates = checks::worth_measuring(tables, cfg, now, usize::MAX);
        if candidates.is_empty() {
            return (out, false);
        }
        let present = first_row(pg, sql::PGSTATTUPLE_PRESENT)
            .await
            .map(|r| sql::bool_of(&r, "present"))
            .unwrap_or(false);
        if !present {
            s.notes.push(format!(
                "{} bloat candidate(s) not confirmed: pgstattuple is not installed",
                candidates.len()
            ));
            return (out, false);
        }
        let memory = memory.unwrap_or_default();
        let plan = checks::plan_measurements(&candidates, &memory, cfg.bloat_measure_per_run, now);
        for t in &plan.measure {
            match first_row(pg, &sql::pgstattuple_approx(t.oid)).await {
                Ok(r) => {
                    if let Some(p) = sql::f64_of(&r, "wasted_percent") {
                        let before = memory.get(&t.oid.to_string());
                        out.insert(
                            t.oid,
                            checks::Measurement {
                                percent: p,
                                at: now,
                                bytes: t.bytes,
                                fresh: true,
                                handed_off: before.and_then(|m| m.handed_off),
                                previous: before.map(|m| m.percent),
                            },
                        );
                    }
                }
                Err(e) => s
                    .notes
                    .push(format!("{}: pgstattuple_approx failed: {e}", t.name())),
            }
        }
        s.metrics.push((
            "BloatCandidatesUnmeasured",
            (plan.reuse.len() + plan.unconfirmed.len()) as f64,
            "Count",
        ));
        if !plan.reuse.is_empty() || !plan.unconfirmed.is_empty() {
            let names: Vec<String> = plan.unconfirmed.iter().take(20).map(|t| t.name()).collect();
            s.notes.push(format!(
                "bloat: {} candidate(s), {} measured this run (pg.bloat.measure_per_run = {}), {} kept an earlier figure, {} not measured yet{}{}",
                candidates.len(),
                plan.measure.len(),
                cfg.bloat_measure_per_run,
                plan.reuse.len(),
                plan.unconfirmed.len(),
                if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) },
                if plan.unconfirmed.len() > names.len() { ", ..." } else { "" }
            ));
        }
        out.extend(plan.reuse);
        (out, true)
    }

    /// Leaves measured bloat figures for vacuum-trigger, which still re-reads the table's
    /// statistics itself before acting (a stale request can never cause a VACUUM on its own).
    async fn hand_off(
        &self,
        tables: &[TableStats],
        measured: &mut BTreeMap<i64, checks::Measurement>,
    ) -> Result<()> {
        let (db, cfg, now) = (self.seen.db, self.seen.cfg, self.ctx.now());
        let expires = (now + Duration::days(1)).timestamp();
        for t in tables {
            // This run's figures only, and only new ones (checks::needs_hand_off).
            let Some(m) = measured
                .get_mut(&t.oid)
                .filter(|m| checks::needs_hand_off(m, cfg.bloat_percent.warn, now))
            else {
                continue;
            };
            let pct = m.percent;
            m.handed_off = Some(now);
            self.ctx.deps.ledger
                .put(
                    &format!("pgmaint#{db}"),
                    &t.oid.to_string(),
                    &json!({"schema": t.schema, "table": t.table, "measured_bloat": pct, "at": now.to_rfc3339(), "by": FUNCTION}),
                    Some(expires),
                )
                .await?;
        }
        Ok(())
    }

    /// Btree index bloat (issue #22): every index of the database (the query vacuum-trigger
    /// plans rebuilds from), the largest candidates measured with pgstatindex (at most
    /// `pg.bloat.measure_per_run`), the others judged by the pg_stats estimate when it can be
    /// made, else left unjudged (their open finding stays open). A standby's indexes are the
    /// primary's.
    async fn index_bloat(&self, s: &mut Scan) {
        let (db, cfg) = (self.seen.db, self.seen.cfg);
        if self.seen.server.in_recovery {
            s.unchecked.push("index-bloat");
            return;
        }
        let indexes: Vec<IndexStats> = match self
            .pg
            .query(&sql::indexes::indexes(self.seen.server.version))
            .await
        {
            Ok(rows) => rows.iter().map(IndexStats::from_row).collect(),
            Err(e) => return s.failed(&["index-bloat"], &e),
        };
        let candidates = checks::index_bloat_candidates(&indexes, cfg, cfg.bloat_measure_per_run);
        let mut measured = BTreeMap::new();
        if !candidates.is_empty() {
            let present = first_row(self.pg, sql::PGSTATTUPLE_PRESENT)
                .await
                .map(|r| sql::bool_of(&r, "present"))
                .unwrap_or(false);
            if present {
                for ix in &candidates {
                    match first_row(self.pg, &sql::indexes::pgstatindex(ix.oid)).await {
                        Ok(r) => {
                            let density = sql::f64_of(&r, "avg_leaf_density").unwrap_or(f64::NAN);
                            if let Some(p) = sql::index_bloat_measured(density, ix.fillfactor) {
                                measured.insert(ix.oid, p);
                            }
                        }
                        Err(e) => s
                            .notes
                            .push(format!("{}: pgstatindex failed: {e}", ix.name())),
                    }
                }
            } else {
                s.notes.push(format!(
                    "index bloat: {} candidate(s) not measured: pgstattuple is not installed",
                    candidates.len()
                ));
            }
        }
        let (fs, unjudged) = checks::index_bloat(db, &indexes, &measured, cfg);
        if !unjudged.is_empty() {
            s.notes.push(format!(
                "index bloat: {} index(es) not judged this run (no pgstatindex figure, no pg_stats estimate)",
                unjudged.len()
            ));
        }
        s.unjudged.extend(unjudged);
        s.metrics.push(("BloatedIndexes", fs.len() as f64, "Count"));
        s.findings.extend(fs);
    }

    /// WAL generated per second since the last run (issue #22): the position and the injected
    /// clock's time kept in the ledger (`pgbase#<db>` / `wal`). A standby generates none (its
    /// signal is not checked, said in a note); the first run, a position gone backwards or a
    /// new timeline (failover, restore) take a baseline without a rate.
    async fn wal_rate(&self, s: &mut Scan) -> Result<()> {
        let (db, cfg) = (self.seen.db, self.seen.cfg);
        if self.seen.server.in_recovery {
            s.unchecked.push("wal-rate");
            s.notes
                .push("wal-rate: not measured on a standby (it replays the primary's WAL)".into());
            return Ok(());
        }
        let r = match first_row(self.pg, checks::WAL_POSITION).await {
            Ok(r) => r,
            Err(e) => {
                s.failed(&["wal-rate"], &e);
                return Ok(());
            }
        };
        let (Some(lsn), Some(bytes)) = (sql::str_of(&r, "lsn"), sql::i64_of(&r, "bytes")) else {
            s.failed(
                &["wal-rate"],
                &NbaopsError::dependency("postgres", "no WAL position in the answer"),
            );
            return Ok(());
        };
        let cur = checks::WalMark {
            lsn,
            bytes,
            at: self.ctx.now(),
            timeline: sql::i64_of(&r, "timeline"),
        };
        let prev: Option<checks::WalMark> = match decode_state(self.base.get("wal").cloned()) {
            Ok(p) => p,
            Err(e) => {
                self.unreadable("WAL position baseline", &e, s).await?;
                None
            }
        };
        match checks::wal_rate(prev.as_ref(), &cur) {
            checks::WalRate::First => {
                s.unchecked.push("wal-rate");
                s.notes.push(format!(
                    "wal-rate: first run, baseline taken at {}",
                    cur.lsn
                ));
            }
            checks::WalRate::Reset(why) => {
                s.unchecked.push("wal-rate");
                s.notes.push(format!(
                    "wal-rate: {why}: baseline re-taken, no rate this run"
                ));
            }
            checks::WalRate::BytesPerSecond(rate) => {
                s.metrics.push(("WalBytesPerSecond", rate, "Bytes/Second"));
                if let Some(p) = prev.as_ref() {
                    s.findings
                        .extend(checks::judge_wal_rate(db, rate, p, &cur, cfg));
                }
            }
        }
        let data = serde_json::to_value(&cur)
            .map_err(|e| NbaopsError::InvalidEvent(format!("wal: {e}")))?;
        self.ctx
            .deps
            .ledger
            .put(&self.pk(), "wal", &data, None)
            .await
    }

    /// Vacuums sleeping in their cost-based delay (issue #22, `checks::vacuum_delay` says what
    /// is measured): up to `pg.vacuum_delay.samples_per_run` samples while a vacuum runs, added
    /// to the earlier runs' in the ledger (`pgbase#<db>` / `vacdelay`). A standby runs none.
    async fn vacuum_delay(&self, s: &mut Scan) -> Result<()> {
        let (db, cfg) = (self.seen.db, self.seen.cfg);
        if self.seen.server.in_recovery {
            s.unchecked.push("vacuum-delay");
            return Ok(());
        }
        let query = checks::vacuum_delay_sql(self.seen.server.version);
        let mut rounds: Vec<Vec<checks::VacuumSample>> = vec![];
        for i in 0..cfg.vacuum_delay.samples_per_run {
            if i > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(
                    cfg.vacuum_delay.sample_interval_ms,
                ))
                .await;
            }
            match self.pg.query(&query).await {
                Ok(rows) => rounds.push(rows.iter().map(checks::VacuumSample::from_row).collect()),
                Err(e) => {
                    s.failed(&["vacuum-delay"], &e);
                    return Ok(());
                }
            }
            if rounds.last().is_some_and(|r| r.is_empty()) {
                // No vacuum running: no more samples this run.
                break;
            }
        }
        let prev: BTreeMap<String, checks::DelayTrack> =
            match decode_state(self.base.get("vacdelay").cloned()) {
                Ok(p) => p.unwrap_or_default(),
                Err(e) => {
                    self.unreadable("vacuum delay samples", &e, s).await?;
                    BTreeMap::new()
                }
            };
        let (next, fs) = checks::vacuum_delay(db, &prev, &rounds, cfg);
        for t in next.values() {
            let (pct, how) = t.sleep_percent();
            s.notes.push(format!(
                "vacuum-delay: {} (pid {}) slept {pct:.0} % ({how}: {} of {} samples over {} run(s))",
                t.table, t.pid, t.sleeping, t.samples, t.runs
            ));
        }
        s.findings.extend(fs);
        if prev.is_empty() && next.is_empty() {
            return Ok(());
        }
        let data = serde_json::to_value(&next)
            .map_err(|e| NbaopsError::InvalidEvent(format!("vacdelay: {e}")))?;
        self.ctx
            .deps
            .ledger
            .put(&self.pk(), "vacdelay", &data, None)
            .await
    }

    /// vacuum-trigger's failed statements of the last day, then the stalled vacuums: one
    /// finding per table and signal (our own failures say more than the growth).
    async fn own_vacuum_failures(&self, s: &mut Scan) -> Result<()> {
        let (db, cfg) = (self.seen.db, self.seen.cfg);
        let since = self.ctx.now() - Duration::days(1);
        let failures: Vec<(String, String)> = self
            .ctx
            .deps
            .ledger
            .query(&format!("pgvacfail#{db}"), "")
            .await?
            .into_iter()
            .filter(|(_, v)| {
                v["at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t >= since)
            })
            .map(|(_, v)| {
                (
                    v["table"].as_str().unwrap_or("?").to_string(),
                    v["error"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        s.findings
            .extend(checks::own_vacuum_failures(db, &failures, cfg));
        for f in std::mem::take(&mut s.stalled) {
            if !s.findings.iter().any(|g| g.dedup_key() == f.dedup_key()) {
                s.findings.push(f);
            }
        }
        Ok(())
    }
}
