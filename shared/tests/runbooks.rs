//! The alert kinds (`nbaops_shared::alerts::KINDS`), their runbook pages (`docs/runbooks/`) and
//! the code that raises alerts agree.
//!
//! "Every kind raised is listed" is checked on the source text, not on alerts seen at run time:
//! the end-to-end suites do not raise every kind (a P1 failover that never completes, a DR copy
//! that fails...), so a run-time check would pass on the kinds nobody tested. Every dedup key
//! and every ledger key is written as a `format!("<prefix>#...")` literal, so every such literal
//! in the functions' and the shared crate's non-test code must be classified: an alert kind
//! (in `KINDS`), a ledger key (`LEDGER_KEYS` below) or an indirection resolved here
//! (`pg-{}` = pg-health's signals, `{verb}` = scale-on-alarm's direction). A new literal of
//! either sort fails until someone decides which it is, and writes the page if it is an alert.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use nbaops_shared::alerts::{kind_of, runbook_page, KINDS, RUNBOOK_DIR};

/// `<prefix>#` keys of the ledger (DynamoDB partition and sort keys): state, never an alert's
/// dedup key.
const LEDGER_KEYS: &[&str] = &[
    "idem",
    "cooldown",
    "audit",
    "flap",
    "alerted",
    "inc",
    "alert",
    "notify",
    "resolve",
    "escalation",
    "contained",
    "done",
    "backupdrill",
    "backuprpo",
    "backupcopy",
    // backup-guard's S3 kinds (s3kinds.rs): open findings, sort key `open/<finding>`.
    "backups3",
    "pgvacrun",
    "pgmaint",
    "pgvacfail",
    "pgopen",
    "pgbase",
    // scale-on-alarm's re-checks (recheck.rs): the pending schedule and the episode's P2 claim.
    "recheck",
    "exhausted",
    // posture-check's open findings: sort key `<rule>#<resource>` under the partition `posture#open`.
    "{rule}",
    // alert-router's claims on an incident (issue #22): a group raised to a severity, the
    // resolution-SLA reminder.
    "raise",
    "resolution-sla",
    // pg-health's PostgreSQL-log counts (logs.rs): `pglog#<source>/<day>` with one item per log
    // event, `pglogalert#<source>/<day>` with the severities raised; their sort keys start with
    // the alert's resource (`{res}#<event id>`, `{res}#<severity>`).
    "pglog",
    "pglogalert",
    "{res}",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The crate sources that can raise alerts, each cut at its first `#[cfg(test)]` (test modules
/// come last in this code base; their keys are made up).
fn production_sources() -> Vec<(PathBuf, String)> {
    let root = root();
    let mut dirs = vec![root.join("shared/src")];
    if let Ok(fns) = fs::read_dir(root.join("functions")) {
        dirs.extend(fns.flatten().map(|e| e.path().join("src")));
    }
    let mut files = Vec::new();
    for d in dirs {
        rust_files(&d, &mut files);
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let text = fs::read_to_string(&p).ok()?;
            let cut = text.find("#[cfg(test)]").unwrap_or(text.len());
            Some((p, text[..cut].to_string()))
        })
        .collect()
}

/// The first string literal after each occurrence of `opener` (whitespace allowed before it).
fn literals_after<'a>(text: &'a str, opener: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(opener) {
        rest = &rest[i + opener.len()..];
        let trimmed = rest.trim_start();
        if let Some(body) = trimmed.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (j, c) in body.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(j);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            if let Some(j) = end {
                out.push(&body[..j]);
            }
        }
    }
    out
}

fn kinds() -> BTreeSet<&'static str> {
    KINDS.iter().map(|(k, _)| *k).collect()
}

fn page_names() -> BTreeSet<String> {
    let dir = root().join(RUNBOOK_DIR);
    let mut names = BTreeSet::new();
    for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(kind) = name.strip_suffix(".md") {
            if kind != "README" {
                names.insert(kind.to_string());
            }
        }
    }
    names
}

#[test]
fn every_kind_has_a_page_and_every_page_a_kind() {
    let kinds: BTreeSet<String> = kinds().into_iter().map(String::from).collect();
    let pages = page_names();
    assert!(!kinds.is_empty());
    let no_page: Vec<_> = kinds.difference(&pages).collect();
    let no_kind: Vec<_> = pages.difference(&kinds).collect();
    assert!(
        no_page.is_empty(),
        "kinds without a page in {RUNBOOK_DIR}/: {no_page:?}"
    );
    assert!(
        no_kind.is_empty(),
        "pages in {RUNBOOK_DIR}/ for no kind in alerts::KINDS: {no_kind:?}"
    );
    assert_eq!(KINDS.len(), kinds.len(), "a kind is listed twice in KINDS");
}

#[test]
fn every_page_answers_the_three_questions_and_the_index_lists_every_page() {
    let dir = root().join(RUNBOOK_DIR);
    let index = fs::read_to_string(dir.join("README.md")).unwrap_or_default();
    for (kind, _) in KINDS {
        let page = fs::read_to_string(dir.join(format!("{kind}.md"))).unwrap_or_default();
        for heading in [
            "## What it means",
            "## What nbaops already did",
            "## What to do next",
        ] {
            assert!(
                page.contains(heading),
                "{RUNBOOK_DIR}/{kind}.md has no '{heading}'"
            );
        }
        assert!(
            page.contains(&format!("`{kind}#")) || *kind == "cloudwatch-alarm",
            "{RUNBOOK_DIR}/{kind}.md does not show its dedup key `{kind}#...`"
        );
        assert!(
            index.contains(&format!("]({kind}.md)")),
            "{RUNBOOK_DIR}/README.md does not link {kind}.md"
        );
    }
}

/// pg-health's signals: the first argument of every `finding(` in its checks (the production
/// part of every file of `functions/pg-health/src/`).
fn pg_signals() -> Vec<String> {
    let dir = root().join("functions/pg-health/src");
    production_sources()
        .iter()
        .filter(|(path, _)| path.starts_with(&dir))
        .flat_map(|(_, text)| literals_after(text, "finding("))
        .map(String::from)
        .collect()
}

#[test]
fn every_kind_the_code_raises_is_listed() {
    let kinds = kinds();
    let sources = production_sources();
    assert!(
        sources.len() > 20,
        "the functions' sources were not found from {}",
        root().display()
    );
    let signals = pg_signals();
    assert!(
        signals.len() >= 10,
        "pg-health's signals were not found: {signals:?}"
    );
    let mut unclassified = Vec::new();
    let mut seen_kinds = BTreeSet::new();
    for (path, text) in &sources {
        for lit in literals_after(text, "format!(") {
            let Some((prefix, _)) = lit.split_once('#') else {
                continue;
            };
            // Only key-shaped prefixes: `#` in prose is not a key.
            if prefix.is_empty()
                || !prefix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || "0123456789_-{}".contains(c))
            {
                continue;
            }
            let resolved: Vec<String> = match prefix {
                "pg-{}" => signals.iter().map(|s| format!("pg-{s}")).collect(),
                "{verb}" => vec!["scale_out".into(), "scale_in".into()],
                // A ledger sort key made of values (a time, an action, a database).
                "{}" => continue,
                p if LEDGER_KEYS.contains(&p) => continue,
                p => vec![p.to_string()],
            };
            for k in resolved {
                if kinds.contains(k.as_str()) {
                    seen_kinds.insert(k);
                } else {
                    unclassified.push(format!(
                        "{}: \"{lit}\" ({k})",
                        path.strip_prefix(root()).unwrap_or(path).display()
                    ));
                }
            }
        }
    }
    assert!(
        unclassified.is_empty(),
        "key prefixes that are neither an alert kind in alerts::KINDS nor a ledger key in \
         LEDGER_KEYS:\n{}",
        unclassified.join("\n")
    );
    // And the other way: a kind no code raises any more is a stale page. The alarm kind is
    // alert-router's ARN key.
    let stale: Vec<_> = kinds
        .iter()
        .filter(|k| **k != "cloudwatch-alarm" && !seen_kinds.contains(**k))
        .collect();
    assert!(
        stale.is_empty(),
        "kinds in alerts::KINDS no code raises: {stale:?}"
    );
}

#[test]
fn alert_router_alarm_keys_are_the_cloudwatch_alarm_kind() {
    let dir = root().join("functions/alert-router/src");
    let text: String = production_sources()
        .into_iter()
        .filter(|(path, _)| path.starts_with(&dir))
        .map(|(_, text)| text)
        .collect();
    // The shapes alarm_dedup_key writes.
    assert!(text.contains("\"arn:aws:cloudwatch:{region}:{account}:alarm:{}\""));
    assert!(text.contains("\"cloudwatch-alarm:{}\""));
    for key in [
        "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-alert-router-errors",
        "arn:aws-cn:cloudwatch:cn-north-1:123456789012:alarm:a#b",
        "cloudwatch-alarm:nbaops-dev-failed-events-visible",
    ] {
        assert_eq!(kind_of(key), "cloudwatch-alarm", "{key}");
        assert_eq!(
            runbook_page(key),
            "docs/runbooks/cloudwatch-alarm.md",
            "{key}"
        );
    }
}
