//! `make bench`: per function, the cold start (spawning the release binary to its first response,
//! served through the Runtime API against the local stack), peak RSS, and the deployment zip size.
//! Medians of several runs. Targets: cold start <= 40 ms, peak RSS <= 20 MB, zip <= 5 MB.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::demo::Stack;
use crate::function::{peak_rss_kb, FunctionUnderTest};
use crate::{workspace_root, HarnessError};

const RUNS: usize = 7;

/// (function, fixture it is benchmarked with)
pub const SUBJECTS: &[(&str, &str)] = &[(
    "scale-on-alarm",
    "events/cloudwatch-alarm/eventbridge-single-metric-alarm.json",
)];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub async fn run_bench() -> Result<(), HarnessError> {
    let root = workspace_root();
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let stack = Stack::start(false).await?;
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
            if p.get("id").is_some() {
                p["id"] = Value::String(format!("bench-{i}-{}", std::process::id()));
            }
            let t0 = Instant::now();
            let f = FunctionUnderTest::start(
                &bin,
                name,
                &stack.function_env(&[("NBAOPS_SCALE__ASG__COOLDOWN_SECONDS", "0")]),
                1,
            )
            .await?;
            let _ = f.invoke(p.clone(), Duration::from_secs(30)).await?;
            cold.push(t0.elapsed().as_secs_f64() * 1000.0);
            let t1 = Instant::now();
            if p.get("id").is_some() {
                p["id"] = Value::String(format!("bench-warm-{i}-{}", std::process::id()));
            }
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
                "arm64 zip not built (cargo lambda build --arm64 failed or skipped)".to_string(),
            ),
        };
        println!(
            "{:<18} {:>14.1} {:>14.1} {:>12.1} {:>12}  {}",
            name,
            median(cold),
            median(warm),
            median(rss),
            zip,
            kind
        );
    }
    println!("\nmedian of {RUNS} runs; targets: cold start <= 40 ms against the emulator, peak RSS <= 20 MB, zip <= 5 MB");
    Ok(())
}
