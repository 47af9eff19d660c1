//! Every decision explained (issue #18), end to end: the demo's story, then every fixture under
//! `events/` through every function, played through the real binaries against moto and the demo
//! PostgreSQL. For EVERY audit record produced, its sentence is one sentence that opens with its
//! outcome, names its rule and config keys, carries every observed number and threshold of its
//! own explanation (and, for an alarm, the fixture's threshold); the same sentence is the one on
//! the actions topic, and every alert announcing an action carries it word for word.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nbaops_shared::events::{classify, Inbound};
use nbaops_shared::guard::explain::num;
use nbaops_shared::guard::{AuditRecord, Outcome};
use nbaops_tests::demo::{scenes, Stack};
use nbaops_tests::explain::check_sentence;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform;
use nbaops_tests::runtime_api::Outcome as Answer;
use nbaops_tests::workspace_root;
use serde_json::Value;

/// Every function, as the operator's command knows them.
use nbaops_cli::functions::FUNCTIONS;

fn fixtures(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            fixtures(&p, out);
        } else if p.extension().is_some_and(|e| e == "json") {
            out.push(p);
        }
    }
}

/// One decision, where it came from.
struct Seen {
    rec: AuditRecord,
    fixture: String,
}

/// The sentence against the record's own fields and the fixture it came from.
fn check(seen: &Seen) {
    let r = &seen.rec;
    let s = &r.sentence;
    let at = format!("{} ({}): {s}", seen.fixture, r.action);
    if let Err(e) = check_sentence(r) {
        panic!("{}: {e}", seen.fixture);
    }
    // An alarm's decision carries the fixture's own numbers: its threshold, its newest datapoint.
    if r.function == "scale-on-alarm" && r.action.starts_with("asg.scale") {
        let text = std::fs::read_to_string(workspace_root().join(&seen.fixture)).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        for inbound in classify(&v) {
            if let Inbound::Alarm(a) = inbound {
                if let Some(t) = a.threshold() {
                    assert!(s.contains(&num(t)), "fixture threshold {t}: {at}");
                }
                if let Some(p) = a.datapoints().first() {
                    assert!(s.contains(&num(*p)), "fixture datapoint {p}: {at}");
                }
            }
        }
    }
}

async fn play(
    f: &FunctionUnderTest,
    fixture: &str,
    seen: &mut Vec<Seen>,
    alerts_in_reports: &mut Vec<Value>,
) {
    let payload: Value =
        serde_json::from_str(&std::fs::read_to_string(workspace_root().join(fixture)).unwrap())
            .unwrap();
    let inv = f.invoke(payload, Duration::from_secs(60)).await.unwrap();
    // A function error (a fixture it cannot serve on this stack) produces no record to explain.
    let Answer::Response(v) = inv.outcome else {
        return;
    };
    for rec in v["records"].as_array().cloned().unwrap_or_default() {
        for a in rec["actions"].as_array().cloned().unwrap_or_default() {
            let rec: AuditRecord = serde_json::from_value(a).unwrap();
            seen.push(Seen {
                rec,
                fixture: fixture.to_string(),
            });
        }
        alerts_in_reports.extend(rec["alerts"].as_array().cloned().unwrap_or_default());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_of_the_fixtures_is_one_sentence_naming_its_rule_and_numbers() {
    let stack = Stack::start(true).await.unwrap();
    let mut running: BTreeMap<&str, FunctionUnderTest> = BTreeMap::new();
    let mut seen = Vec::new();
    let mut alerts = Vec::new();
    // The demo's story: the guard's every stop, dry-run, acting, on a world set up for it.
    for scene in scenes() {
        stack.prepare(&scene.before).await.unwrap();
        if !running.contains_key(scene.function) {
            let f = stack.start_function(scene.function, 1).await.unwrap();
            running.insert(scene.function, f);
        }
        play(
            &running[scene.function],
            scene.fixture,
            &mut seen,
            &mut alerts,
        )
        .await;
    }
    // Then every fixture through every function: whatever leads to a decision is explained.
    let root = workspace_root();
    let mut all = Vec::new();
    fixtures(&root.join("events"), &mut all);
    for name in FUNCTIONS {
        if !running.contains_key(name) {
            let f = stack.start_function(name, 1).await.unwrap();
            running.insert(name, f);
        }
        for p in &all {
            let rel = p.strip_prefix(&root).unwrap().to_string_lossy().to_string();
            play(&running[name], &rel, &mut seen, &mut alerts).await;
        }
    }

    for s in &seen {
        eprintln!("{}: {}", s.fixture, s.rec.sentence);
        check(s);
    }
    let outcomes: BTreeSet<String> = seen
        .iter()
        .map(|s| format!("{:?}", s.rec.outcome))
        .collect();
    let by_function: BTreeMap<&str, usize> = seen.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.rec.function.as_str()).or_default() += 1;
        m
    });
    let kinds: BTreeSet<&str> = seen.iter().map(|s| s.rec.action.as_str()).collect();
    eprintln!(
        "{} decisions: {outcomes:?} {by_function:?} {kinds:?}",
        seen.len()
    );
    for o in ["Acted", "WouldAct", "Skipped"] {
        assert!(outcomes.contains(o), "no {o} decision in {outcomes:?}");
    }
    for f in ["scale-on-alarm", "vacuum-trigger", "offhours"] {
        assert!(
            by_function.contains_key(f),
            "no decision of {f}: {by_function:?}"
        );
    }

    // The actions topic carries each record with its sentence, the same as the report's.
    let published = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    let reported: BTreeSet<&str> = seen.iter().map(|s| s.rec.sentence.as_str()).collect();
    assert!(!published.is_empty());
    for p in &published {
        let rec: AuditRecord = serde_json::from_value(p.clone()).unwrap();
        assert!(
            reported.contains(rec.sentence.as_str()),
            "published, not reported: {}",
            rec.sentence
        );
    }

    // Every acted scale-on-alarm decision was announced with its sentence, word for word.
    let announced: BTreeSet<String> = alerts
        .iter()
        .flat_map(|a| a["actions_taken"].as_array().cloned().unwrap_or_default())
        .filter_map(|x| x.as_str().map(String::from))
        .collect();
    let acted: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.rec.function == "scale-on-alarm" && s.rec.outcome == Outcome::Acted)
        .filter(|s| s.rec.action.starts_with("asg.scale") || s.rec.action == "rds.modify_class")
        .collect();
    assert!(!acted.is_empty());
    for s in acted {
        assert!(
            announced.contains(&s.rec.sentence),
            "not announced: {}",
            s.rec.sentence
        );
    }
}
