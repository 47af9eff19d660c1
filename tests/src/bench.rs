//! `make bench`: per function, the cold start (spawning the release binary to its first response,
//! served through the Runtime API against the local stack), peak RSS, and the deployment zip size.
//! Medians of several runs. Targets: cold start <= 40 ms, peak RSS <= 20 MB, zip <= 5 MB.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::demo::Stack;
use crate::function::{peak_rss_kb, FunctionUnderTest};
use crate::{workspace_root, HarnessError};
use nbaops_shared::ports::GroupState;

const RUNS: usize = 7;

/// (function, fixture it is benchmarked with). The first row is the floor of every function:
/// init (config from SSM, clients) and an answer that needs no AWS call.
pub const SUBJECTS: &[(&str, &str)] = &[
    ("scale-on-alarm", "events/not-for-me/s3-put.json"),
    (
        "scale-on-alarm",
        "events/cloudwatch-alarm/eventbridge-single-metric-alarm.json",
    ),
    ("pg-health", "events/schedule/pg-health.json"),
    ("vacuum-trigger", "events/schedule/vacuum-trigger.json"),
    (
        "failover-notify",
        "events/rds/eventbridge-failover-started.json",
    ),
    (
        "cost-anomaly",
        "events/cost/sns-anomaly-multiple-root-causes.json",
    ),
    ("alert-router", "events/alerts/sns/p3-table-bloat.json"),
    ("backup-guard", "events/schedule/backup-rpo-check.json"),
    ("offhours", "events/schedule/offhours-stop-tick.json"),
];

fn fresh_id(p: &mut Value, id: &str) {
    if p.get("id").is_some() {
        p["id"] = Value::String(id.to_string());
    }
    if let Some(records) = p.get_mut("Records").and_then(Value::as_array_mut) {
        for r in records {
            if r.pointer("/Sns/MessageId").is_some() {
                r["Sns"]["MessageId"] = Value::String(id.to_string());
            }
        }
    }
    if let Some(n) = p.get_mut("nbaops").and_then(Value::as_object_mut) {
        n.insert("id".into(), Value::String(id.to_string()));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Parse + plan of one alarm, in-process: what a warm invocation spends before any I/O.
fn parse_and_plan(
    payload: &Value,
    cfg: &nbaops_shared::config::ScaleConfig,
    group: &GroupState,
) -> usize {
    use nbaops_shared::events::{classify, Inbound};
    use scale_on_alarm::plan::{intent_for, plan_group, Intent, Target};
    let mut planned = 0;
    for inbound in classify(payload) {
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

/// Targets: one alarm parsed and planned <= 50 us p99; an SNS delivery of 1,000 records < 20 ms.
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
        "{:<44} {:>12} {:>12}  target",
        "in-process (scale-on-alarm)", "median us", "p99 us"
    );
    for fixture in [
        "events/cloudwatch-alarm/eventbridge-single-metric-alarm.json",
        "events/cloudwatch-alarm/sns-single-metric-alarm.json",
        "events/cloudwatch-alarm/direct-action-alarm.json",
    ] {
        let payload: Value = serde_json::from_str(&std::fs::read_to_string(root.join(fixture))?)?;
        let mut samples = Vec::with_capacity(10_000);
        for _ in 0..10_000 {
            let t = Instant::now();
            std::hint::black_box(parse_and_plan(&payload, &cfg.scale, &group));
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let name = fixture.rsplit('/').next().unwrap_or(fixture);
        println!(
            "{:<44} {:>12.1} {:>12.1}  <= 50 us p99",
            format!("parse+plan {name}"),
            percentile(samples.clone(), 0.5),
            percentile(samples, 0.99)
        );
    }
    let one: Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("events/cloudwatch-alarm/sns-single-metric-alarm.json"),
    )?)?;
    let record = one["Records"][0].clone();
    let records: Vec<Value> = (0..1000)
        .map(|i| {
            let mut r = record.clone();
            r["Sns"]["MessageId"] = Value::String(format!("bench-{i}"));
            r
        })
        .collect();
    let batch = serde_json::json!({ "Records": records });
    let mut samples = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let n = parse_and_plan(&batch, &cfg.scale, &group);
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        if n != 1000 {
            return Err(HarnessError::Setup(format!("planned {n} of 1000 records")));
        }
    }
    println!(
        "{:<44} {:>9.2} ms {:>9.2} ms  < 20 ms",
        "SNS delivery of 1,000 records",
        percentile(samples.clone(), 0.5),
        percentile(samples, 0.99)
    );
    println!();
    Ok(())
}

pub async fn run_bench() -> Result<(), HarnessError> {
    run_cpu_bench()?;
    let root = workspace_root();
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let stack = Stack::start(true).await?;
    println!(
        "{:<18} {:>14} {:>14} {:>12} {:>12}  zip",
        "function", "cold start ms", "warm ms", "peak RSS MB", "zip MB"
    );
    for (name, fixture) in SUBJECTS {
        let bin = target.join("release").join(name);
        if !bin.exists() {
            return Err(HarnessError::Setup(format!(
                "{} missing: cargo build --release --workspace --bins",
                bin.display()
            )));
        }
        let payload: Value = serde_json::from_str(&std::fs::read_to_string(root.join(fixture))?)?;
        let (mut cold, mut warm, mut rss) = (vec![], vec![], vec![]);
        for i in 0..RUNS {
            let mut p = payload.clone();
            // A fresh event id each run, so every run does the same work instead of an idempotent no-op.
            fresh_id(&mut p, &format!("bench-{i}-{}", std::process::id()));
            let t0 = Instant::now();
            let f = FunctionUnderTest::start(
                &bin,
                name,
                &stack.env_for(name, &[("NBAOPS_SCALE__ASG__COOLDOWN_SECONDS", "0")]),
                1,
            )
            .await?;
            let _ = f.invoke(p.clone(), Duration::from_secs(30)).await?;
            cold.push(t0.elapsed().as_secs_f64() * 1000.0);
            let t1 = Instant::now();
            fresh_id(&mut p, &format!("bench-warm-{i}-{}", std::process::id()));
            let _ = f.invoke(p, Duration::from_secs(30)).await?;
            warm.push(t1.elapsed().as_secs_f64() * 1000.0);
            if let Some(pid) = f.processes().first().map(|p| p.pid()) {
                if let Some(kb) = peak_rss_kb(pid) {
                    rss.push(kb as f64 / 1024.0);
                }
            }
            drop(f);
            // Back to the baseline so the next run scales the same way.
            let _ = stack
                .clients
                .asg
                .set_desired_capacity()
                .auto_scaling_group_name(crate::platform::WEB)
                .desired_capacity(2)
                .send()
                .await;
        }
        let arm = target.join("lambda-arm64").join(name).join("bootstrap.zip");
        let (zip, kind) = match std::fs::metadata(&arm) {
            Ok(m) => (
                format!("{:.2}", m.len() as f64 / 1_048_576.0),
                "arm64 bootstrap.zip".to_string(),
            ),
            Err(_) => (
                "n/a".to_string(),
                "arm64 zip not built (make package)".to_string(),
            ),
        };
        let fixture_name = fixture.rsplit('/').next().unwrap_or(fixture);
        println!(
            "{:<18} {:>14.1} {:>14.1} {:>12.1} {:>12}  {} ({fixture_name})",
            name,
            median(cold),
            median(warm),
            median(rss),
            zip,
            kind
        );
    }
    println!("\nmedian of {RUNS} runs; targets: cold start <= 40 ms against the emulator, peak RSS <= 20 MB, zip <= 5 MB");
    crate::bench_pg::run_pg_bench(&stack, &target).await?;
    Ok(())
}
