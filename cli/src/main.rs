//! `nbaops`: the operator's command. It plans (a function's decision on an event, against the real
//! account, read-only, the guard forced to dry-run), replays a recorded day through the same
//! planners and guard on a simulated clock, shows status and the audit trail, and prints the
//! effective configuration with where each value came from; `approve`/`deny` answer a pending
//! approval request. `--json` on every command.

use clap::{Parser, Subcommand};
use nbaops_cli::{approve, audit, config_cmd, output, plan, replay, status};
use nbaops_shared::guard::approval::Verdict;

#[derive(Parser)]
#[command(
    name = "nbaops",
    version,
    about = "Plan, replay, status, audit and config of nbaops; approve or deny a pending action"
)]
struct Cli {
    /// Machine-readable output: one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// What a function would do with an event, read-only (the guard forced to dry-run).
    Plan(plan::Args),
    /// A recorded day (alarm history, RDS events) through the planners and the guard, simulated.
    Replay(replay::Args),
    /// Kill switch, dry-run, open incidents, drills, contained environments, last actions.
    Status(status::Args),
    /// The audit trail from the ledger, newest first.
    Audit(audit::Args),
    /// The effective configuration (`show`) or a check of the SSM values (`check`).
    Config(config_cmd::Args),
    /// Approve a pending approval request as a named approver (recorded as from "cli").
    Approve(approve::Args),
    /// Deny a pending approval request as a named approver (recorded as from "cli").
    Deny(approve::Args),
}

fn main() {
    let cli = Cli::parse();
    let out = output::Output::new(cli.json);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nbaops: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async {
        match cli.cmd {
            Cmd::Plan(a) => plan::run(a, &out).await,
            Cmd::Replay(a) => replay::run(a, &out).await,
            Cmd::Status(a) => status::run(a, &out).await,
            Cmd::Audit(a) => audit::run(a, &out).await,
            Cmd::Config(a) => config_cmd::run(a, &out).await,
            Cmd::Approve(a) => approve::run(a, Verdict::Approve, &out).await,
            Cmd::Deny(a) => approve::run(a, Verdict::Deny, &out).await,
        }
    });
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("nbaops: {e}");
            std::process::exit(1);
        }
    }
}
