//! `nbaops config show [--function F]`: the effective configuration, each value with where it came
//! from (default, environment variable, SSM), secrets masked. `nbaops config check`: every
//! function's sections validated as each function validates them at init, against the SSM values
//! under `/nbaops/<env>/` — before a deploy or a cold start finds the mistake. Exit code 1 with
//! every error named (key and source) when something is wrong.

use std::collections::BTreeMap;

use nbaops_shared::adapters::SdkParams;
use nbaops_shared::config::{self, check_function, layer_for, reads_section, section_of, Source};
use nbaops_shared::ports::Params;
use serde::Serialize;

use crate::account::{self, EnvArg};
use crate::functions::FUNCTIONS;
use crate::output::{CliError, CliResult, Output};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// The effective configuration with the source of each value.
    Show {
        #[command(flatten)]
        env: EnvArg,
        /// Only the keys this function reads (default: the core keys every function reads).
        #[arg(long)]
        function: Option<String>,
    },
    /// Validates every function's configuration against SSM; exit code 1 when wrong.
    Check {
        #[command(flatten)]
        env: EnvArg,
    },
}

#[derive(Debug, Serialize)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub source: Source,
    /// Where exactly: `default`, `env NBAOPS_GUARD__DRY_RUN`, `SSM guard/dry_run`.
    pub origin: String,
}

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub env: String,
    pub ok: bool,
    /// Function → its errors (empty: it would start).
    pub functions: BTreeMap<String, Vec<String>>,
}

/// Words in a key that mark its value as a secret (a credential in a config value is a mistake
/// of its own, but it must not reach a terminal either).
const SECRET_WORDS: &[&str] = &[
    "secret",
    "password",
    "token",
    "webhook",
    "credential",
    "key_id",
];

/// The value as shown: secrets masked whole, the password of `scheme://user:password@host`
/// masked as the logs mask it.
pub fn masked(key: &str, value: &str) -> String {
    let k = key.to_ascii_lowercase();
    if !value.is_empty() && SECRET_WORDS.iter().any(|w| k.contains(w)) {
        return "***".into();
    }
    nbaops_shared::telemetry::redact(value)
}

pub async fn run(args: Args, out: &Output) -> CliResult<i32> {
    match args.cmd {
        Cmd::Show { env, function } => show(&env, function.as_deref(), out).await,
        Cmd::Check { env } => check(&env, out).await,
    }
}

async fn show(env: &EnvArg, function: Option<&str>, out: &Output) -> CliResult<i32> {
    if let Some(f) = function {
        if !FUNCTIONS.contains(&f) {
            return Err(CliError::Usage(format!(
                "no function '{f}': one of {}",
                FUNCTIONS.join(", ")
            )));
        }
    }
    let aws = account::clients().await;
    let (env, vars) = account::vars(env)?;
    let ssm = if account::use_ssm(&vars) {
        read_ssm(&SdkParams(aws.ssm()), env, function).await?
    } else {
        BTreeMap::new()
    };
    let name = function.unwrap_or("nbaops");
    let settings = layer_for(env, name, &vars, &ssm)?;
    let entries: Vec<Entry> = settings
        .entries()
        .filter(|(k, _, _)| reads_section(name, section_of(k)))
        .map(|(k, v, source)| Entry {
            key: k.to_string(),
            value: masked(k, v),
            source,
            origin: settings.origin(k),
        })
        .collect();
    let width = entries.iter().map(|e| e.key.len()).max().unwrap_or(0);
    let mut text = format!(
        "configuration of {} in {env} (default < env < SSM)\n",
        function.unwrap_or("the core (every function)")
    );
    for e in &entries {
        text.push_str(&format!(
            "{:width$}  {}  [{}]\n",
            e.key,
            if e.value.is_empty() { "''" } else { &e.value },
            e.origin
        ));
    }
    for w in settings.warnings() {
        text.push_str(&format!("warning: {w}\n"));
    }
    out.emit(&entries, &text)?;
    Ok(0)
}

/// What the function reads from SSM (its paths, as at init), or everything under the
/// environment's prefix when no function is named.
async fn read_ssm(
    params: &dyn Params,
    env: config::Env,
    function: Option<&str>,
) -> CliResult<BTreeMap<String, String>> {
    let paths = match function {
        Some(f) => config::ssm_paths(env, f),
        None => config::ssm_paths(env, "nbaops"),
    };
    let mut all = BTreeMap::new();
    for p in paths {
        all.extend(params.get_by_path(&p).await?);
    }
    Ok(all)
}

async fn check(env: &EnvArg, out: &Output) -> CliResult<i32> {
    let aws = account::clients().await;
    let (env, vars) = account::vars(env)?;
    // Every configuration path (not `secrets/`, SecureStrings read one by one by their function).
    let params = SdkParams(aws.ssm());
    let mut ssm = BTreeMap::new();
    let mut unreadable = Vec::new();
    let sections = config::SECTIONS
        .iter()
        .map(|s| s.name)
        .filter(|s| *s != config::CORE);
    for section in ["guard", "audit", "fleet"].into_iter().chain(sections) {
        match params
            .get_by_path(&format!("/nbaops/{env}/{section}/"))
            .await
        {
            Ok(read) => ssm.extend(read),
            Err(e @ nbaops_shared::NbaopsError::Config(_)) => unreadable.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    let mut functions = BTreeMap::new();
    for f in FUNCTIONS {
        let errors: Vec<String> = match layer_for(env, f, &vars, &ssm) {
            Err(e) => vec![e.to_string()],
            Ok(s) => check_function(env, f, &s)
                .into_iter()
                .map(|e| e.to_string())
                .collect(),
        };
        functions.insert(f.to_string(), errors);
    }
    // Keys that belong to no section any function reads: refused by the check of all sections.
    let mut stray = unreadable;
    if let Err(e) = config::layer(env, &vars, &ssm) {
        let named = functions.values().flatten().any(|x| *x == e.to_string());
        if !named {
            stray.push(e.to_string());
        }
    }
    if !stray.is_empty() {
        functions.insert("(no function)".into(), stray);
    }
    let ok = functions.values().all(|e| e.is_empty());
    let mut text = format!(
        "config check of {env}: {} SSM parameters under /nbaops/{env}/\n",
        ssm.len()
    );
    for (f, errors) in &functions {
        if errors.is_empty() {
            text.push_str(&format!("ok    {f}\n"));
        }
        for e in errors {
            text.push_str(&format!("FAIL  {f}: {e}\n"));
        }
    }
    text.push_str(if ok { "ok\n" } else { "errors found\n" });
    let report = CheckReport {
        env: env.to_string(),
        ok,
        functions,
    };
    out.emit(&report, &text)?;
    Ok(if ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked() {
        assert_eq!(masked("alerts.slack_webhook_url", "https://hooks/x"), "***");
        assert_eq!(
            masked("pg.databases", "main=postgres://u:hunter2@db:5432/app"),
            "main=postgres://u:***@db:5432/app"
        );
        assert_eq!(masked("guard.dry_run", "true"), "true");
    }
}
