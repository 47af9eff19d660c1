//! The local stack driver behind `make demo`, `make up` / `make invoke` / `make down` and `make bench`.

use std::path::PathBuf;

use nbaops_tests::{bench, bench_fleet, bench_pg, bench_replay, demo, local_stack};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The demo and `make invoke` are not tests: unless a clock is asked for, they run on today's.
    if std::env::var_os(nbaops_tests::clock::TEST_NOW_VAR).is_none() {
        std::env::set_var(
            nbaops_tests::clock::TEST_NOW_VAR,
            chrono::Utc::now().to_rfc3339(),
        );
    }
    let code = match args.first().map(String::as_str) {
        Some("demo") => demo::run_demo().await.map(|_| 0),
        Some("invoke") if args.len() == 3 => {
            demo::run_invoke(&args[1], &PathBuf::from(&args[2])).await
        }
        Some("up") => local_stack::up().await,
        Some("down") => local_stack::down(),
        // Started by `up`: holds the stack until `down`.
        Some("serve") => local_stack::serve().await,
        Some("bench") => bench::run_bench().await.map(|_| 0),
        Some("bench-pg") => bench_pg::run_bench_pg().await.map(|_| 0),
        Some("bench-replay") => bench_replay::run_replay_bench().await.map(|_| 0),
        Some("bench-fleet") => bench_fleet::run_bench_fleet().await.map(|_| 0),
        _ => {
            eprintln!(
                "usage: nbaops-local demo | up | invoke <function> <event.json> | down | bench | bench-pg | bench-replay | bench-fleet"
            );
            Ok(2)
        }
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("nbaops-local: {e}");
            std::process::exit(1);
        }
    }
}
