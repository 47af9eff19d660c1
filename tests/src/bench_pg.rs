//! `make bench`, PostgreSQL part: one full pg-health scan of a database shaped like
//! check_postgres's own benchmark, through the release binary, over TLS, as `nbaops_monitor`
//! (p50/p95 of `ScanMillis`; the scan must produce the expected findings and skip no check);
//! then the bloat estimate against ground truth (each table's size before and after
//! `VACUUM FULL`). [`estimate_vs_vacuum_full`] is also what `tests/tests/e2e_bloat_accuracy.rs`
//! asserts on a few smaller tables, so a regression in the estimate fails `make test`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::demo::Stack;
use crate::function::FunctionUnderTest;
use crate::postgres::Postgres;
use crate::HarnessError;
use nbaops_shared::sql::{self, BloatEstimate, TableStats};

fn pg_err(e: tokio_postgres::Error) -> HarnessError {
    let detail = e
        .as_db_error()
        .map(|d| format!("{}: {}", d.severity(), d.message()))
        .unwrap_or_else(|| e.to_string());
    HarnessError::Setup(format!("bench PostgreSQL: {detail}"))
}

fn setup_err(e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Setup(e.to_string())
}

/// The `pg` section with its defaults (the thresholds pg-health runs with), plus `overrides`
/// (`NBAOPS_PG__...` variables).
pub fn pg_config(
    overrides: &[(&str, &str)],
) -> Result<nbaops_shared::config::pg::PgConfig, HarnessError> {
    let vars: BTreeMap<String, String> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let settings =
        nbaops_shared::config::layer(nbaops_shared::config::Env::Dev, &vars, &Default::default())
            .map_err(setup_err)?;
    nbaops_shared::config::pg::from_settings(&settings).map_err(setup_err)
}

/// A superuser session (loopback, as the harness sets the cluster up) for set-up statements.
pub async fn superuser(pg: &Postgres, db: &str) -> Result<tokio_postgres::Client, HarnessError> {
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user=postgres dbname={db}", pg.port),
        tokio_postgres::NoTls,
    )
    .await
    .map_err(pg_err)?;
    tokio::spawn(conn);
    Ok(client)
}

/// One table's bloat estimate next to the truth.
#[derive(Debug, Clone)]
pub struct Accuracy {
    pub table: String,
    pub estimate: BloatEstimate,
    /// `100 * (1 - size after VACUUM FULL / size before)`: the share of the heap a rewrite
    /// (at the table's fillfactor) gives back — what "bloat" promises to be.
    pub truth: f64,
    pub bytes_before: i64,
    pub bytes_after: i64,
}

impl Accuracy {
    /// Absolute error in percentage points, when the estimate gave a number.
    pub fn error(&self) -> Option<f64> {
        self.estimate.percent().map(|p| (p - self.truth).abs())
    }
}

/// For each `schema.table` of `names` (already filled, deleted from, vacuumed or not, and
/// ANALYZEd): the estimate exactly as nbaops computes it (`sql::tables` read over TLS through the
/// shared session adapter, then `sql::bloat_estimate` with the default `pg` config), then the
/// truth: the heap's size (`pg_relation_size`, main fork) before and after `VACUUM FULL`. The
/// tables are rewritten: call it last. The session is the cluster's superuser, which reads every
/// table's `pg_stats` (a `pg_monitor`-only role reads none: its estimates are "unreliable").
pub async fn estimate_vs_vacuum_full(
    pg: &Postgres,
    db: &str,
    names: &[String],
) -> Result<Vec<Accuracy>, HarnessError> {
    use nbaops_shared::ports::Postgres as _;
    let cfg = pg_config(&[])?;
    let client = superuser(pg, db).await?;
    let version = client
        .query_one("select current_setting('server_version_num')::int8", &[])
        .await
        .map_err(pg_err)?
        .get::<_, i64>(0);
    let session = nbaops_shared::adapters::PgSession::connect(
        &pg.url(db),
        None,
        &nbaops_shared::adapters::PgTls::new(
            Some(&std::fs::read(crate::postgres::tls_dir().join("ca.pem"))?),
            false,
        )
        .map_err(setup_err)?,
    )
    .await
    .map_err(setup_err)?;
    let rows = session
        .query(&sql::tables(sql::PgVersion(version), cfg.bloat_min_bytes))
        .await
        .map_err(setup_err)?;
    let stats: BTreeMap<String, TableStats> = rows
        .iter()
        .map(TableStats::from_row)
        .map(|t| (t.name(), t))
        .collect();
    // Judged on the server's clock, as pg-health does.
    let epoch_ms: i64 = client
        .query_one("select (extract(epoch from now()) * 1000)::int8", &[])
        .await
        .map_err(pg_err)?
        .get(0);
    let now = chrono::DateTime::from_timestamp_millis(epoch_ms)
        .ok_or_else(|| HarnessError::Setup(format!("server clock {epoch_ms}")))?;
    let mut out = vec![];
    for name in names {
        let t = stats
            .get(name)
            .ok_or_else(|| HarnessError::Setup(format!("{name}: not in sql::tables")))?;
        let estimate = sql::bloat_estimate(t, &cfg, now);
        let size = format!("select pg_relation_size({})::int8", t.oid);
        let before: i64 = client.query_one(&size, &[]).await.map_err(pg_err)?.get(0);
        client
            .batch_execute(&format!(
                "vacuum full {}",
                sql::qualified(&t.schema, &t.table)
            ))
            .await
            .map_err(pg_err)?;
        let after: i64 = client.query_one(&size, &[]).await.map_err(pg_err)?.get(0);
        out.push(Accuracy {
            table: name.clone(),
            estimate,
            truth: 100.0 * (1.0 - after as f64 / before.max(1) as f64),
            bytes_before: before,
            bytes_after: after,
        });
    }
    Ok(out)
}

/// check_postgres's benchmark shape: 10,000 tables in 4 schemas, each with a primary key, a TOAST
/// table (text columns) and 10 rows; then 50 tables of 20,000 wider rows (bool, int2, int4,
/// numeric, timestamptz, text with NULLs, a 0.8-1 kB body), 60 % deleted in two patterns
/// (every row whose id % 5 < 3 on even tables, the first 12,000 on odd ones), not vacuumed,
/// autovacuum off on them. A commit every 500 tables keeps the lock table small.
const SHAPE_CHECK_POSTGRES: &str = "do $$ begin \
  for s in 1..4 loop execute format('create schema s%s', s); end loop; \
  for i in 1..10000 loop \
    execute format('create table s%s.t%s (id int primary key, label text not null, note text)', 1 + i % 4, i); \
    execute format('insert into s%s.t%s select g, ''label '' || g, case when g %% 3 = 0 then null else repeat(''n'', 20) end from generate_series(1, 10) g', 1 + i % 4, i); \
    if i % 500 = 0 then commit; end if; \
  end loop; \
  for i in 1..50 loop \
    execute format('create table s%s.w%s (id int8 primary key, flag bool, small int2, qty int4, price numeric(12,2), at timestamptz, code text, body text) with (autovacuum_enabled = false)', 1 + i % 4, i); \
    execute format('insert into s%s.w%s select g, g %% 2 = 0, (g %% 1000)::int2, g, (g * 1.37)::numeric(12,2), timestamptz ''2026-01-01 00:00Z'' + g * interval ''1 minute'', case when g %% 4 = 0 then null else ''code-'' || g end, case when g %% 10 = 0 then null else left(repeat(md5(g::text), 40), %s) end from generate_series(1, 20000) g', 1 + i % 4, i, 780 + 4 * i); \
    if i % 2 = 0 then \
      execute format('delete from s%s.w%s where id %% 5 < 3', 1 + i % 4, i); \
    else \
      execute format('delete from s%s.w%s where id <= 12000', 1 + i % 4, i); \
    end if; \
    commit; \
  end loop; \
end $$";

/// The same 10,000 tables, but 2,000 of them above `pg.bloat.min_bytes` (1 MiB): 8,000 rows of
/// ~150 bytes each (~1.3 MB); 50 of those 60 % deleted (not vacuumed), the rest tight.
const SHAPE_SIZED: &str = "do $$ begin \
  for s in 1..4 loop execute format('create schema s%s', s); end loop; \
  for i in 1..8000 loop \
    execute format('create table s%s.t%s (id int primary key, label text not null, note text)', 1 + i % 4, i); \
    execute format('insert into s%s.t%s select g, ''label '' || g, case when g %% 3 = 0 then null else repeat(''n'', 20) end from generate_series(1, 10) g', 1 + i % 4, i); \
    if i % 500 = 0 then commit; end if; \
  end loop; \
  for i in 1..2000 loop \
    execute format('create table s%s.m%s (id int8 primary key, flag bool, qty int4, note text) with (autovacuum_enabled = false)', 1 + i % 4, i); \
    execute format('insert into s%s.m%s select g, g %% 2 = 0, g, case when g %% 9 = 0 then null else rpad(g::text, 90 + g %% 40, ''x'') end from generate_series(1, 8000) g', 1 + i % 4, i); \
    if i <= 50 then execute format('delete from s%s.m%s where id %% 5 < 3', 1 + i % 4, i); end if; \
    if i % 100 = 0 then commit; end if; \
  end loop; \
end $$";

/// What the scans of one database measured.
pub struct ScanFigures {
    pub setup_s: f64,
    /// ScanMillis of the first run (connect, counter baseline, first measurements).
    pub cold_ms: f64,
    /// ScanMillis of every later run.
    pub warm_ms: Vec<f64>,
    /// Open findings after the last run, by dedup key.
    pub open: std::collections::BTreeSet<String>,
    /// Runs until every bloat candidate had a figure (the rotation).
    pub runs_to_full_cover: Option<usize>,
}

/// `p` in [0, 1], nearest rank.
pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Builds `db` with `shape` (as the superuser, then ANALYZE everywhere), then runs the release
/// pg-health `runs` times as `nbaops_monitor` over TLS. Every run must succeed, check every
/// signal (no "not checked" after the first, which takes the counter baseline), and fail no
/// check; the open findings are tracked from the alerts each run publishes.
async fn scan_shape(
    stack: &Stack,
    pg: &Postgres,
    bin: &std::path::Path,
    db: &str,
    shape: &str,
    runs: usize,
) -> Result<ScanFigures, HarnessError> {
    let setup = Instant::now();
    pg.as_rds(db)?;
    let client = superuser(pg, db).await?;
    client.batch_execute(shape).await.map_err(pg_err)?;
    // A backend flushes its table counters when it ends: ANALYZE from a new session, or the
    // inserts would count as changes since the ANALYZE (stale statistics).
    drop(client);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let client = superuser(pg, db).await?;
    client.batch_execute("analyze").await.map_err(pg_err)?;
    client
        .batch_execute("select pg_stat_statements_reset()")
        .await
        .map_err(pg_err)?;
    let setup_s = setup.elapsed().as_secs_f64();

    let roles = stack.put_pg_passwords(pg, db, db).await?;
    let env: Vec<(&str, &str)> = roles
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let f = FunctionUnderTest::start(bin, "pg-health", &stack.function_env(&env), 1).await?;
    let mut open = std::collections::BTreeSet::new();
    let mut runs_to_full_cover = None;
    for i in 0..runs {
        let p = serde_json::json!({"nbaops": {"task": f.name(), "id": format!("pg-bench-{db}-{i}-{}", std::process::id())}});
        let v = match f.invoke(p, Duration::from_secs(60)).await?.outcome {
            crate::runtime_api::Outcome::Response(v) => v,
            other => {
                return Err(HarnessError::Setup(format!(
                    "pg-health run {i} on {db} failed: {other:?}\n{}",
                    f.logs()
                )))
            }
        };
        let rec = v["records"]
            .as_array()
            .and_then(|r| r.first())
            .cloned()
            .unwrap_or(Value::Null);
        let summary = rec["summary"].as_str().unwrap_or("");
        let notes: Vec<&str> = rec["notes"]
            .as_array()
            .map(|n| n.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !summary.starts_with(&format!("pg:{db}:")) {
            return Err(HarnessError::Setup(format!(
                "run {i}: no scan of {db}: {v}"
            )));
        }
        if i > 0 && summary.contains("not checked") {
            return Err(HarnessError::Setup(format!(
                "run {i} skipped checks: {summary}"
            )));
        }
        for a in rec["alerts"].as_array().into_iter().flatten() {
            let key = a["dedup_key"].as_str().unwrap_or("").to_string();
            if a["status"] == "resolved" {
                open.remove(&key);
            } else {
                open.insert(key);
            }
        }
        if open.iter().any(|k| k.starts_with("pg-check-failed#")) {
            return Err(HarnessError::Setup(format!(
                "run {i}: a check failed: {}",
                notes.join("; ")
            )));
        }
        let uncovered = notes
            .iter()
            .any(|n| n.starts_with("bloat:") && !n.contains(", 0 not measured yet"));
        if !uncovered && runs_to_full_cover.is_none() {
            runs_to_full_cover = Some(i + 1);
        }
    }
    let scans: Vec<f64> = f
        .logs()
        .lines()
        .filter(|l| l.contains("\"ScanMillis\""))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["db"] == db)
        .filter_map(|m| m["ScanMillis"].as_f64())
        .collect();
    drop(f);
    let Some((cold, warm)) = scans.split_first() else {
        return Err(HarnessError::Setup(format!(
            "pg-health logged no ScanMillis for {db}"
        )));
    };
    if scans.len() != runs {
        return Err(HarnessError::Setup(format!(
            "{} ScanMillis lines for {runs} runs of {db}",
            scans.len()
        )));
    }
    Ok(ScanFigures {
        setup_s,
        cold_ms: *cold,
        warm_ms: warm.to_vec(),
        open,
        runs_to_full_cover,
    })
}

/// Ground-truth tables for the estimate: four layouts (mixed alignment with NULLs; TOASTed text;
/// twelve sparse columns; worst-order fixed-width padding) x three variations of rows (40,000 to
/// 120,000: ANALYZE samples 30,000), fillfactor (70 to 100) and what happened to them (dead
/// tuples left; deleted and vacuumed: free space; untouched).
fn accuracy_tables() -> Vec<(String, String)> {
    let layouts: [(&str, &str, &str, &str); 4] = [
        (
            "mixed",
            "(a int2, b int8, c bool, d text, e numeric, f timestamptz)",
            "select (g % 100)::int2, g, g % 2 = 0, case when g % 5 = 0 then null else 'name-' || g end, \
             case when g % 7 = 0 then null else g * 1.5 end, \
             case when g % 3 = 0 then null else timestamptz '2026-01-01 00:00Z' + g * interval '1 second' end",
            "b",
        ),
        (
            "toasted",
            "(id int8, flag bool, small int2, body text, note text)",
            "select g, g % 3 = 0, (g % 500)::int2, \
             case when g % 4 = 0 then (select string_agg(md5(g::text || ':' || k), '') from generate_series(1, 128) k) \
               else 'short body ' || g end, \
             case when g % 2 = 0 then null else repeat('n', 10 + g % 40) end",
            "id",
        ),
        (
            "sparse",
            "(i1 int4, i2 int4, i3 int4, i4 int4, t1 text, t2 text, t3 text, t4 text, b1 int8, b2 int8, f1 bool, f2 bool)",
            "select g, nullif(g % 3, 0), case when g % 2 = 0 then g end, case when g % 5 = 0 then g end, \
             'row ' || g, case when g % 2 = 1 then md5(g::text) end, case when g % 4 = 0 then repeat('t', g % 90) end, null, \
             g * 3, case when g % 3 = 0 then g end, g % 2 = 0, case when g % 6 = 0 then true end",
            "i1",
        ),
        (
            "padded",
            "(c1 bool, a int8, c2 bool, d int4, e int2, f timestamptz, c3 bool)",
            "select g % 2 = 0, g, g % 3 = 0, g, (g % 30000)::int2, timestamptz '2026-01-01 00:00Z' + g * interval '1 minute', true",
            "a",
        ),
    ];
    // (rows, fillfactor, percent deleted, vacuum after)
    let variations = [
        (40_000, 100, 35, false),
        (80_000, 85, 60, true),
        (120_000, 70, 0, false),
    ];
    let mut out = vec![];
    for (name, def, fill, key) in layouts {
        for (k, (rows, ff, pct, vacuum)) in variations.iter().enumerate() {
            let t = format!("acc.{name}_{k}");
            let mut sql = format!(
                "create table {t} {def} with (fillfactor = {ff}, autovacuum_enabled = false); \
                 insert into {t} {fill} from generate_series(1, {rows}) g; "
            );
            if *pct > 0 {
                sql.push_str(&format!("delete from {t} where {key} % 100 < {pct}; "));
            }
            if *vacuum {
                sql.push_str(&format!("vacuum {t}; "));
            }
            out.push((t, sql));
        }
    }
    out
}

/// `nbaops-local bench-pg` and the PostgreSQL part of `make bench`.
pub async fn run_pg_bench(stack: &Stack, target: &std::path::Path) -> Result<(), HarnessError> {
    let bin = target.join("release").join("pg-health");
    if !bin.exists() {
        return Err(HarnessError::Setup(format!(
            "{} missing: cargo build --release -p pg-health",
            bin.display()
        )));
    }
    let cfg = pg_config(&[])?;
    let pg = Postgres::start()?;
    // As an instance with memory for its working set (RDS's default is a quarter of the RAM):
    // with the test cluster's 128 MB, the 800 MB of bloated tables pgstattuple_approx reads on
    // an otherwise idle database would be its only block traffic, and a poor cache-hit ratio.
    pg.psql("postgres", "alter system set shared_buffers = '1GB'")?;
    pg.restart()?;
    const RUNS: usize = 25;
    println!(
        "\npg-health full scan, release binary, TLS, as nbaops_monitor ({RUNS} runs each; ScanMillis)"
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9}  findings",
        "database", "setup s", "cold ms", "p50 ms", "p95 ms"
    );
    let shapes: [(&str, &str, &str, usize); 2] = [
        ("bench", SHAPE_CHECK_POSTGRES, "w", WIDE_BLOATED),
        ("bench2k", SHAPE_SIZED, "m", WIDE_BLOATED),
    ];
    let mut failures = vec![];
    for (db, shape, prefix, bloated) in shapes {
        let s = scan_shape(stack, &pg, &bin, db, shape, RUNS).await?;
        let bloat: Vec<&String> = s
            .open
            .iter()
            .filter(|k| k.starts_with("pg-bloat#"))
            .collect();
        let others: Vec<&String> = s
            .open
            .iter()
            .filter(|k| !k.starts_with("pg-bloat#"))
            .collect();
        // Expected: exactly the deleted-from tables, each found bloated.
        let expected_ok = bloat.len() == bloated
            && bloat.iter().all(|k| {
                k.rsplit('.').next().is_some_and(|t| {
                    t.starts_with(prefix) && t[1..].parse::<usize>().is_ok_and(|n| n <= bloated)
                })
            });
        let label = if db == "bench" {
            "10,000 tables + 50 bloated (check_postgres)"
        } else {
            "10,000 tables, 2,000 over 1 MiB, 50 bloated"
        };
        let p50 = percentile(s.warm_ms.clone(), 0.5);
        let p95 = percentile(s.warm_ms.clone(), 0.95);
        println!(
            "{label:<44} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {} bloat{} (every candidate measured by run {})",
            s.setup_s,
            s.cold_ms,
            p50,
            p95,
            bloat.len(),
            if others.is_empty() {
                String::new()
            } else {
                format!(" + {others:?}")
            },
            s.runs_to_full_cover
                .map(|r| r.to_string())
                .unwrap_or_else(|| "never".into())
        );
        if !expected_ok || !others.is_empty() {
            failures.push(format!(
                "{db}: expected {bloated} bloat findings on {prefix}1..{prefix}{bloated} and nothing else, got {:?}",
                s.open
            ));
        }
        if p95 > SCAN_TARGET_MS {
            println!("  ^ p95 above the {SCAN_TARGET_MS} ms target");
        }
        // The machine's load while the scans ran: on a shared box, the figures include waiting
        // for a core.
        println!(
            "  load average after the scans: {}",
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!(
        "target: full scan <= {SCAN_TARGET_MS} ms; pgstattuple_approx is bounded to pg.bloat.measure_per_run ({}) tables per run, rotating",
        cfg.bloat_measure_per_run
    );

    // The estimate against VACUUM FULL: the ground-truth tables, and the 50 wide tables of the
    // check_postgres shape (8-9 rows per page: expected to be flagged unreliable).
    let setup = Instant::now();
    let client = superuser(&pg, "bench").await?;
    client
        .batch_execute("create schema acc")
        .await
        .map_err(pg_err)?;
    let tables = accuracy_tables();
    for (_, sql) in &tables {
        for stmt in sql.split("; ").filter(|s| !s.trim().is_empty()) {
            client.batch_execute(stmt).await.map_err(pg_err)?;
        }
    }
    drop(client);
    tokio::time::sleep(Duration::from_secs(1)).await;
    superuser(&pg, "bench")
        .await?
        .batch_execute("analyze")
        .await
        .map_err(pg_err)?;
    let mut names: Vec<String> = tables.iter().map(|(t, _)| t.clone()).collect();
    names.extend((1..=WIDE_BLOATED).map(|i| format!("s{}.w{i}", 1 + i % 4)));
    let results = estimate_vs_vacuum_full(&pg, "bench", &names).await?;
    let acc_s = setup.elapsed().as_secs_f64();
    let errors: Vec<f64> = results.iter().filter_map(Accuracy::error).collect();
    let unreliable: Vec<&Accuracy> = results
        .iter()
        .filter(|r| r.estimate.percent().is_none())
        .collect();
    let mean = errors.iter().sum::<f64>() / errors.len().max(1) as f64;
    let max = errors.iter().cloned().fold(0.0f64, f64::max);
    println!(
        "\nbloat estimate vs the heap's size before/after VACUUM FULL ({} tables, {acc_s:.0} s incl. set-up)",
        results.len()
    );
    for r in &results {
        println!(
            "  {:<22} truth {:>6.2} %  estimate {}",
            r.table,
            r.truth,
            match &r.estimate {
                BloatEstimate::Percent { percent, .. } => format!(
                    "{percent:>6.2} %  error {:.2} pp",
                    (percent - r.truth).abs()
                ),
                BloatEstimate::Unreliable { reason } => format!("unreliable: {reason}"),
            }
        );
    }
    println!(
        "{:<44} {:>9.2} pp  <= 1 pp (max {max:.2} pp, target <= 3 pp) over {} tables with a number",
        "mean error",
        mean,
        errors.len()
    );
    println!(
        "{:<44} {:>9}  (no number given: flagged unreliable)",
        "flagged unreliable",
        unreliable.len()
    );
    if mean > 1.0 || max > 3.0 {
        failures.push(format!(
            "bloat estimate error mean {mean:.2} pp, max {max:.2} pp"
        ));
    }
    if !failures.is_empty() {
        return Err(HarnessError::Setup(failures.join("\n")));
    }
    Ok(())
}

/// The bloated tables of each bench shape.
const WIDE_BLOATED: usize = 50;
/// Issue #15's target for one full scan.
const SCAN_TARGET_MS: f64 = 350.0;

/// `nbaops-local bench-pg`: the PostgreSQL part alone, on a fresh local stack.
pub async fn run_bench_pg() -> Result<(), HarnessError> {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| crate::workspace_root().join("target"));
    let stack = Stack::start(false).await?;
    run_pg_bench(&stack, &target).await
}
