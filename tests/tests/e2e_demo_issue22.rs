//! The demo's issue-#22 scenes on their own: the PostgreSQL log's autovacuum failures reach
//! pg-health as the demo plays them and come out as the `pg-vacuum-failure` alerts, and the demo
//! backup bucket the backup scene seeds (through the demo's own environment for backup-guard)
//! gives `backup-s3-check` its four findings. No PostgreSQL: neither path opens a session.

use nbaops_tests::demo::{scenes, Stack};
use nbaops_tests::workspace_root;
use serde_json::Value;

/// (severity, dedup key) of the record's alerts, sorted.
fn raised(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<_> = v["records"][0]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["severity"].as_str().unwrap().to_string(),
                a["dedup_key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pair(sev: &str, key: &str) -> (String, String) {
    (sev.into(), key.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pg_log_and_backup_s3_scenes_show_their_alerts() {
    let stack = Stack::start(false).await.unwrap();
    let wanted = [
        "events/cloudwatch-logs/rds-postgresql-autovacuum.json",
        "events/schedule/backup-s3-check.json",
    ];
    let mut seen = Vec::new();
    for scene in scenes().into_iter().filter(|s| wanted.contains(&s.fixture)) {
        stack.prepare(&scene.before).await.unwrap();
        let f = stack.start_function(scene.function, 1).await.unwrap();
        let payload: Value = serde_json::from_str(
            &std::fs::read_to_string(workspace_root().join(scene.fixture)).unwrap(),
        )
        .unwrap();
        let v = f.invoke_ok(payload).await.unwrap();
        nbaops_tests::explain::check_response(&v).unwrap();
        seen.push((scene.fixture, v));
    }
    assert_eq!(seen.len(), 2, "one scene each");

    let (_, logs) = &seen[0];
    assert_eq!(logs["records"][0]["kind"], "logs", "{logs}");
    assert_eq!(
        raised(logs),
        vec![
            pair("P1", "pg-vacuum-failure#pg:app/wraparound"),
            pair("P2", "pg-vacuum-failure#pg:app/public.lineups"),
            pair("P2", "pg-vacuum-failure#pg:app/public.player_stats"),
        ],
        "{logs}"
    );

    let (_, s3) = &seen[1];
    assert_eq!(
        raised(s3),
        vec![
            pair("P2", "backup-s3#wal/missing"),
            pair("P3", "backup-s3#logical/too-few"),
            pair("P3", "backup-s3#physical/storage-class"),
            pair("P3", "backup-s3#physical/too-few"),
        ],
        "{s3}"
    );
    let said = s3["records"][0]["alerts"].to_string();
    let month = nbaops_tests::clock::now().format("%Y-%m").to_string();
    assert!(
        said.contains(&format!("physical/{month}/base.tar in STANDARD")),
        "{said}"
    );
    assert!(s3["records"][0]["actions"].as_array().unwrap().is_empty());
}
