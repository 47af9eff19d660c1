//! `make bench`: per function, the cold start (spawning the release binary to its first response,
//! served through the Runtime API against the local stack), a warm invocation, peak RSS, the AWS
//! calls of each (from the emulator's recording) and the deployment zip size; every measured
//! invocation does real work or the bench fails (`bench_fn`). Then parse + plan CPU time in
//! process, and pg-health at scale. Targets: cold start <= 40 ms, peak RSS <= 20 MB, zip <= 5 MB.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bench_fn::{Bench, RUNS, SUBJECTS};
use crate::demo::Stack;
use crate::function::FunctionUnderTest;
use crate::{workspace_root, HarnessError};
use nbaops_shared::ports::GroupState;

fn target_dir() -> std::path::PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"))
}

/// The release build of a function: what is deployed, and what ignores the test clock.
pub fn release_binary(name: &str) -> Result<std::path::PathBuf, HarnessError> {
    let bin = target_dir().join("release").join(name);
    if bin.exists() {
        Ok(bin)
    } else {
        Err(HarnessError::Setup(format!(
            "{} missing: cargo build --release --workspace --bins",
            bin.display()
        )))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Bytes -> JSON -> classify -> plan, in-process: what a warm invocation spends before any I/O.
/// Returns how many records were planned as a scaling step.
fn parse_and_plan(
    bytes: &[u8],
    cfg: &nbaops_shared::config::ScaleConfig,
    group: &GroupState,
) -> usize {
    use nbaops_shared::events::{classify, Inbound};
    use scale_on_alarm::plan::{intent_for, plan_group, Intent, Target};
    let Ok(payload) = serde_json::from_slice::<Value>(bytes) else {
        return 0;
    };
    let mut planned = 0;
    for inbound in classify(&payload) {
        if let Inbound::Alarm(alarm) = inbound {
            if let Intent::Scale {
                target: Target::Group(name),
                direction,
                ..
            } = intent_for(&alarm, cfg)
            {
                std::hint::black_box(plan_group(group, cfg.plan_for(&name), direction));
                planned += 1;
            }
        }
    }
    planned
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

/// An SQS batch of `n` records, each body an SNS notification of the CPU alarm (a queue
/// subscribed to the alarm topic), every message its own id; `pad` bytes of message attributes
/// per record (which the parser must read past) make a large payload.
fn sqs_batch(n: usize, pad: usize) -> Result<Vec<u8>, HarnessError> {
    let one: Value = serde_json::from_str(&std::fs::read_to_string(
        workspace_root().join("events/cloudwatch-alarm/sns-single-metric-alarm.json"),
    )?)?;
    let sns = &one["Records"][0]["Sns"];
    let records: Vec<Value> = (0..n)
        .map(|i| {
            let mut body = sns.clone();
            body["MessageId"] = Value::String(format!("bench-sqs-{i}"));
            if pad > 0 {
                body["MessageAttributes"]["padding"] =
                    serde_json::json!({"Type": "String", "Value": "x".repeat(pad)});
            }
            serde_json::json!({
                "messageId": format!("sqs-{i}"),
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:nbaops-dev-alarms",
                "body": body.to_string(),
            })
        })
        .collect();
    Ok(serde_json::to_vec(
        &serde_json::json!({ "Records": records }),
    )?)
}

/// Targets: one alarm parsed and planned <= 50 us p99; an SQS batch of 10 <= 500 us p99; a
/// 256 KB payload <= 5 ms p99. Bytes to JSON included: the runtime hands the handler bytes.
pub fn run_cpu_bench() -> Result<(), HarnessError> {
    let root = workspace_root();
    let vars = [(
        "NBAOPS_SCALE__GROUPS".to_string(),
        "nbaops-dev-web".to_string(),
    )]
    .into_iter()
    .collect();
    let settings =
        nbaops_shared::config::layer(nbaops_shared::config::Env::Dev, &vars, &Default::default())
            .map_err(|e| HarnessError::Setup(e.to_string()))?;
    let cfg = nbaops_shared::config::Config::from_settings(
        nbaops_shared::config::Env::Dev,
        "bench",
        settings,
    )
    .map_err(|e| HarnessError::Setup(e.to_string()))?;
    let group = GroupState {
        name: "nbaops-dev-web".into(),
        min_size: 2,
        max_size: 4,
        desired: 2,
        in_service: 2,
        tags: Default::default(),
        activity_in_progress: false,
    };
    println!(
        "{:<48} {:>10} {:>10}  target",
        "in-process (scale-on-alarm), bytes -> plan", "median us", "p99 us"
    );
    let mut cases: Vec<(String, Vec<u8>, usize, f64)> = Vec::new();
    for fixture in [
        "events/cloudwatch-alarm/eventbridge-single-metric-alarm.json",
        "events/cloudwatch-alarm/sns-single-metric-alarm.json",
        "events/cloudwatch-alarm/direct-action-alarm.json",
    ] {
        let name = fixture.rsplit('/').next().unwrap_or(fixture).to_string();
        cases.push((name, std::fs::read(root.join(fixture))?, 1, 50.0));
    }
    cases.push((
        "SQS batch of 10 alarm notifications".into(),
        sqs_batch(10, 0)?,
        10,
        500.0,
    ));
    let big = sqs_batch(10, 25_800)?;
    cases.push((
        format!("SQS batch of 10, {} KB in all", big.len() / 1024),
        big,
        10,
        5_000.0,
    ));
    for (name, bytes, want, target_us) in cases {
        let mut samples = Vec::with_capacity(2_000);
        for _ in 0..2_000 {
            let t = Instant::now();
            let n = parse_and_plan(std::hint::black_box(&bytes), &cfg.scale, &group);
            samples.push(t.elapsed().as_secs_f64() * 1e6);
            if n != want {
                // A payload that plans nothing would time a no-op.
                return Err(HarnessError::Setup(format!(
                    "bench: {name} planned {n} scaling step(s), expected {want}"
                )));
            }
        }
        println!(
            "{:<48} {:>10.1} {:>10.1}  <= {target_us} us p99",
            name,
            percentile(samples.clone(), 0.5),
            percentile(samples, 0.99)
        );
    }
    println!();
    Ok(())
}

fn pg_err(e: tokio_postgres::Error) -> HarnessError {
    let detail = e
        .as_db_error()
        .map(|d| format!("{}: {}", d.severity(), d.message()))
        .unwrap_or_else(|| e.to_string());
    HarnessError::Setup(format!("bench PostgreSQL: {detail}"))
}

/// Tables in the pg-health benchmark database, and how many of them are bloated.
const PG_TABLES: usize = 10_000;
const PG_BLOATED: usize = 50;

/// `make bench`, PostgreSQL: one full pg-health scan of a database with 10,000 tables, 50 of
/// them bloated, through the release binary (its `ScanMillis` EMF metric: every signal, one
/// connection; target <= 350 ms), and the bloat estimate's error on the 50 tables against
/// pgstattuple's exact figures with fresh statistics (target <= 1 percentage point mean).
pub async fn run_pg_bench(stack: &Stack, target: &std::path::Path) -> Result<(), HarnessError> {
    use nbaops_shared::sql::{self, BloatEstimate, TableStats};
    let bin = target.join("release").join("pg-health");
    if !bin.exists() {
        return Err(HarnessError::Setup(format!(
            "{} missing: cargo build --release -p pg-health",
            bin.display()
        )));
    }
    let setup = Instant::now();
    let pg = crate::postgres::Postgres::start()?;
    // As on RDS: infra/sql's roles; pg-health scans as nbaops_monitor (the tables are the
    // superuser's setup, read-only to the monitor).
    pg.as_rds("bench")?;
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user=postgres dbname=bench", pg.port),
        tokio_postgres::NoTls,
    )
    .await
    .map_err(pg_err)?;
    tokio::spawn(conn);
    client
        .batch_execute("create extension if not exists pgstattuple")
        .await
        .map_err(pg_err)?;
    // One DO block (a commit every 500 tables keeps the lock table small): 9,950 small tables
    // with a row, then 50 tables of 20,000 rows of a per-table width, 10 % to 80 % of them
    // deleted (every other one vacuumed afterwards, so both dead tuples and free space are
    // measured), then fresh statistics everywhere.
    client
        .batch_execute(&format!(
            "do $$ begin \
               for i in 1..{small} loop \
                 execute format('create table t_%s (id int, payload text)', i); \
                 execute format('insert into t_%s values (1, ''x'')', i); \
                 if i % 500 = 0 then commit; end if; \
               end loop; \
               for i in 1..{bloated} loop \
                 execute format('create table b_%s (id int, payload text) with (autovacuum_enabled = false)', i); \
                 execute format('insert into b_%s select g, repeat(''x'', %s) from generate_series(1, 20000) g', i, 40 + 3 * i); \
                 execute format('delete from b_%s where id %% 10 < %s', i, 1 + i % 8); \
               end loop; \
             end $$;",
            small = PG_TABLES - PG_BLOATED,
            bloated = PG_BLOATED
        ))
        .await
        .map_err(pg_err)?;
    for i in (2..=PG_BLOATED).step_by(2) {
        client
            .batch_execute(&format!("vacuum b_{i}"))
            .await
            .map_err(pg_err)?;
    }
    client.batch_execute("analyze").await.map_err(pg_err)?;
    let setup_s = setup.elapsed().as_secs_f64();

    // The scan, through the release binary: a cold first run (connect, first baseline), then
    // warm runs, each timed by the function itself (ScanMillis).
    let roles = stack.put_pg_passwords(&pg, "bench", "bench").await?;
    let env: Vec<(&str, &str)> = roles
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let f = FunctionUnderTest::start(&bin, "pg-health", &stack.function_env(&env), 1).await?;
    for i in 0..6 {
        let p = serde_json::json!({"nbaops": {"task": "pg", "id": format!("pg-bench-{i}-{}", std::process::id())}});
        let _ = f.invoke(p, Duration::from_secs(60)).await?;
    }
    let scans: Vec<f64> = f
        .logs()
        .lines()
        .filter(|l| l.contains("\"ScanMillis\""))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["db"] == "bench")
        .filter_map(|m| m["ScanMillis"].as_f64())
        .collect();
    drop(f);
    let (cold, warm) = match scans.split_first() {
        Some((c, w)) if !w.is_empty() => (*c, median(w.to_vec())),
        _ => {
            return Err(HarnessError::Setup(
                "pg-health logged no ScanMillis for the bench database".into(),
            ))
        }
    };

    // The estimate (shared code, as pg-health computes it) against pgstattuple on each of the 50.
    let vars = Default::default();
    let settings =
        nbaops_shared::config::layer(nbaops_shared::config::Env::Dev, &vars, &Default::default())
            .map_err(|e| HarnessError::Setup(e.to_string()))?;
    let cfg = nbaops_shared::config::pg::from_settings(&settings)
        .map_err(|e| HarnessError::Setup(e.to_string()))?;
    let version = client
        .query_one("select current_setting('server_version_num')::int8", &[])
        .await
        .map_err(pg_err)?
        .get::<_, i64>(0);
    let session = nbaops_shared::adapters::PgSession::connect(
        &pg.url("bench"),
        None,
        &nbaops_shared::adapters::PgTls::new(
            Some(&std::fs::read(crate::postgres::tls_dir().join("ca.pem"))?),
            false,
        )
        .map_err(|e| HarnessError::Setup(e.to_string()))?,
    )
    .await
    .map_err(|e| HarnessError::Setup(e.to_string()))?;
    use nbaops_shared::ports::Postgres as _;
    let rows = session
        .query(&sql::tables(sql::PgVersion(version), cfg.bloat_min_bytes))
        .await
        .map_err(|e| HarnessError::Setup(e.to_string()))?;
    let now = crate::clock::now();
    let (mut err_exact, mut err_df, mut unreliable) = (vec![], vec![], vec![]);
    for t in rows.iter().map(TableStats::from_row) {
        if !t.table.starts_with("b_") {
            continue;
        }
        let est = match sql::bloat_estimate(&t, &cfg, now) {
            BloatEstimate::Percent { percent, .. } => percent,
            BloatEstimate::Unreliable { reason } => {
                unreliable.push(format!("{}: {reason}", t.table));
                continue;
            }
        };
        let r = client
            .query_one(
                &format!(
                    "select tuple_count::int8, tuple_len::int8, table_len::int8, \
                     (dead_tuple_percent + free_percent)::float8 from pgstattuple('{}'::regclass)",
                    t.table
                ),
                &[],
            )
            .await
            .map_err(pg_err)?;
        let (count, len, table_len, dead_free): (i64, i64, i64, f64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        // pgstattuple's exact live tuples, packed the way a rewrite packs them: each tuple
        // MAXALIGNed plus its line pointer, page header off every page, at the fillfactor.
        let block = t.block_size as f64;
        let stored = ((len as f64 / count.max(1) as f64) / 8.0).ceil() * 8.0 + 4.0;
        let per_page = ((block - 24.0) * t.fillfactor as f64 / 100.0 / stored).floor();
        let packed = (count as f64 / per_page).ceil().max(1.0);
        let pages = table_len as f64 / block;
        let exact = (100.0 * (1.0 - packed / pages)).max(0.0);
        err_exact.push((est - exact).abs());
        err_df.push((est - dead_free).abs());
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let max = |v: &[f64]| v.iter().cloned().fold(0.0f64, f64::max);
    println!(
        "\n{:<52} {:>12}  target",
        format!("pg-health, {PG_TABLES} tables / {PG_BLOATED} bloated"),
        "value"
    );
    println!(
        "{:<52} {:>9.1} s  < 60 s",
        "setup (tables, bloat, ANALYZE)", setup_s
    );
    println!(
        "{:<52} {:>9.1} ms  <= 350 ms",
        "full scan, warm (median of 5, ScanMillis)", warm
    );
    println!(
        "{:<52} {:>9.1} ms  (connect + first baseline)",
        "full scan, cold (first run)", cold
    );
    println!(
        "{:<52} {:>9.2} pp  <= 1 pp (max {:.2} pp)",
        format!(
            "bloat estimate vs pgstattuple exact, {} tables",
            err_exact.len()
        ),
        mean(&err_exact),
        max(&err_exact)
    );
    println!(
        "{:<52} {:>9.2} pp  info: dead+free % counts no line pointers",
        "  ... vs pgstattuple dead_tuple% + free%",
        mean(&err_df)
    );
    println!(
        "{:<52} {:>12}  every estimate with fresh statistics is a number",
        "unreliable estimates among the bloated",
        unreliable.len()
    );
    for u in &unreliable {
        println!("  {u}");
    }
    Ok(())
}

pub async fn run_bench() -> Result<(), HarnessError> {
    run_cpu_bench()?;
    let target = target_dir();
    let stack = Stack::start(true).await?;
    let bench = Bench::prepare(&stack).await?;
    println!(
        "{:<16} {:>9} {:>9} {:>8} {:>11} {:>7}  work (each invocation checked to have done it)",
        "function", "cold ms", "warm ms", "RSS MB", "AWS calls", "zip MB"
    );
    let mut ops = Vec::new();
    for subject in SUBJECTS {
        let name = subject.function();
        let m = bench.measure(*subject).await?;
        let arm = target.join("lambda-arm64").join(name).join("bootstrap.zip");
        let zip = std::fs::metadata(&arm)
            .map(|m| format!("{:.2}", m.len() as f64 / 1_048_576.0))
            .unwrap_or_else(|_| "n/a".to_string());
        println!(
            "{:<16} {:>9.1} {:>9.1} {:>8.1} {:>5} / {:<3} {:>7}  {}",
            name,
            m.cold_ms,
            m.warm_ms,
            m.rss_mb,
            m.cold_calls,
            m.warm_calls,
            zip,
            subject.work()
        );
        println!("{:<16}   cold: {}", "", m.cold_did);
        println!("{:<16}   warm: {}", "", m.warm_did);
        ops.push((name, m.cold_ops));
    }
    println!(
        "\nmedian of {RUNS} runs; AWS calls = cold (init included) / warm, from the emulator's recording; \
         zip = arm64 bootstrap.zip (n/a until make package); targets: cold start <= 40 ms against the \
         emulator, peak RSS <= 20 MB, zip <= 5 MB"
    );
    println!("\nAWS calls of the last cold invocation, in order:");
    for (name, ops) in ops {
        println!("  {name:<16} {}", ops.join(" "));
    }
    run_pg_bench(&stack, &target).await?;
    Ok(())
}
