//! `docs/operations-strategy.md`, generated from the config tables ([`super::SECTIONS`]) so it
//! cannot drift from what the functions enforce. A unit test compares the file with
//! [`strategy_markdown`]; `NBAOPS_WRITE_DOCS=1 cargo test -p nbaops-shared strategy_doc` rewrites it.

use std::fmt::Write;

use super::{Section, CORE, FUNCTION_SECTIONS, SECTIONS};

const PREFACE: &str = "\
# Operations strategy: every number nbaops enforces

<!-- Generated from the config tables in shared/src/config/ by strategy_markdown(); do not edit.
     Regenerate: NBAOPS_WRITE_DOCS=1 cargo test -p nbaops-shared strategy_doc -->

The platform's operations strategy (capacity plan, PostgreSQL thresholds, change windows, incident
severities, backup and recovery targets, cost rules) is full of numbers. Every number a function
enforces is a configuration key below, with the strategy's value as its default and what it means.
[`spec.md`](spec.md) reads the strategy item by item: what nbaops does with each, and what lives
elsewhere (alarm thresholds and schedules in `infra/template.yaml`, rules fixed in code, and what is
not enforced).

How a value is set, lowest to highest:

1. the default below (`{env}` is the environment: dev, test or prod);
2. an environment variable: `NBAOPS_` and the key upper-cased with `.` as `__`
   (`NBAOPS_PG__BLOAT__WARN_PERCENT` for `pg.bloat.warn_percent`);
3. an SSM parameter under `/nbaops/<env>/`, the key with `.` as `/`
   (`/nbaops/prod/pg/bloat/warn_percent`): tuned without a deploy.

Each function reads the core section (SSM `guard/`, `audit/` and `approval/`) and its own sections, once at init
(the kill switch and dry-run are re-read every `guard.switch_ttl_seconds`). A bad value or an unknown
key in those stops its init with an error naming the key and where it came from; an unknown key in
another function's section is logged as a warning and ignored, so one function's misconfiguration
never stops another.
";

/// Who reads a section, in words.
fn readers(section: &Section) -> String {
    if section.name == CORE {
        return "every function".into();
    }
    let names: Vec<String> = FUNCTION_SECTIONS
        .iter()
        .filter(|(_, sections)| sections.contains(&section.name))
        .map(|(f, _)| format!("`{f}`"))
        .collect();
    names.join(", ")
}

fn ssm_paths(section: &Section) -> String {
    if section.name == CORE {
        return "`/nbaops/<env>/guard/`, `/nbaops/<env>/audit/`, `/nbaops/<env>/approval/`, `/nbaops/<env>/fleet/` (the top-level keys from the environment only)".into();
    }
    format!("`/nbaops/<env>/{}/`", section.name)
}

/// A table cell: pipes escaped, an empty value shown as such.
fn cell(text: &str) -> String {
    if text.is_empty() {
        return "(empty)".into();
    }
    text.replace('|', "\\|")
}

fn code(text: &str) -> String {
    if text.is_empty() {
        return "(empty)".into();
    }
    format!("`{}`", text.replace('|', "\\|"))
}

/// The whole of `docs/operations-strategy.md`.
pub fn strategy_markdown() -> String {
    let mut out = String::from(PREFACE);
    for section in SECTIONS {
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "\n## {}\n\n{} Read by {}; SSM {}.\n\n| key | default | what it is |\n|---|---|---|\n",
            section.name,
            section.about,
            readers(section),
            ssm_paths(section)
        );
        for (key, default, meaning) in section.keys {
            let _ = writeln!(out, "| `{key}` | {} | {} |", code(default), cell(meaning));
        }
        for d in section.dynamic {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                code(d.pattern),
                cell(d.default),
                cell(d.meaning)
            );
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DOC: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/operations-strategy.md"
    );

    #[test]
    fn strategy_doc_is_the_config_tables() {
        let generated = strategy_markdown();
        if std::env::var("NBAOPS_WRITE_DOCS").is_ok_and(|v| v == "1") {
            std::fs::write(DOC, &generated).unwrap();
        }
        let on_disk = std::fs::read_to_string(DOC).unwrap_or_default();
        assert!(
            on_disk == generated,
            "docs/operations-strategy.md differs from the config tables (first difference at line {}). \
             Regenerate it: NBAOPS_WRITE_DOCS=1 cargo test -p nbaops-shared strategy_doc",
            on_disk
                .lines()
                .zip(generated.lines())
                .position(|(a, b)| a != b)
                .map_or(on_disk.lines().count().min(generated.lines().count()) + 1, |i| i + 1)
        );
    }

    #[test]
    fn every_key_is_in_the_strategy_doc_once_with_its_default() {
        let doc = strategy_markdown();
        for section in SECTIONS {
            assert!(doc.contains(&format!("\n## {}\n", section.name)));
            for (key, default, _) in section.keys {
                let rows: Vec<&str> = doc
                    .lines()
                    .filter(|l| l.starts_with(&format!("| `{key}` |")))
                    .collect();
                assert_eq!(rows.len(), 1, "{key}: {rows:?}");
                assert!(rows[0].contains(&code(default)), "{key}: {}", rows[0]);
            }
        }
        assert!(doc.contains("| `scale.asg.ceiling` | `4` |"), "{doc}");
        assert!(doc.contains("Read by `pg-health`, `vacuum-trigger`, `backup-guard`;"));
    }
}
