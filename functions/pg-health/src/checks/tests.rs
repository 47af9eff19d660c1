//! The checks' unit tests: rows as PostgreSQL returns them, config from the defaults.

#![allow(clippy::unwrap_used)]

use super::*;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono::{Duration, TimeZone};
use nbaops_shared::alerts::Severity;
use nbaops_shared::config::pg::PgConfig;
use nbaops_shared::config::{layer, Env};
use nbaops_shared::sql::{Connections, Row, Session, TableStats};
use serde_json::{json, Value};

fn cfg(pairs: &[(&str, &str)]) -> PgConfig {
    let vars = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    nbaops_shared::config::pg::from_settings(&layer(Env::Dev, &vars, &Default::default()).unwrap())
        .unwrap()
}
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}
fn row(v: Value) -> Row {
    v.as_object().unwrap().clone()
}
fn counters(at: DateTime<Utc>, hit: i64, read: i64, dl: i64) -> Counters {
    Counters {
        at,
        stats_reset: None,
        postmaster_start: Some("2026-11-01T00:00:00+00:00".into()),
        blks_hit: hit,
        blks_read: read,
        deadlocks: dl,
        in_recovery: Some(false),
        timeline: Some(1),
    }
}

#[test]
fn connections_against_usable_slots() {
    let c = cfg(&[]);
    let conn = |used| Connections {
        max_connections: 100,
        reserved: 3,
        used,
        idle: 0,
        active: 0,
        idle_in_tx: 0,
    };
    assert!(connections("app", &conn(72), &c).is_none());
    // 73/97 = 75.3 %: warning, one below the SPEC's P2.
    let f = connections("app", &conn(73), &c).unwrap();
    assert_eq!((f.level, f.severity), (Level::Warning, Severity::P3));
    let f = connections("app", &conn(88), &c).unwrap();
    assert_eq!((f.level, f.severity), (Level::Critical, Severity::P2));
    assert_eq!(f.dedup_key(), "pg-connections#pg:app");
}

#[test]
fn refusals_are_findings() {
    let f = refused(
        "app",
        "FATAL: sorry, too many clients already (SQLSTATE 53300)",
    );
    assert_eq!((f.signal, f.severity), ("connections", Severity::P2));
    let f = refused("app", "FATAL: remaining connection slots are reserved for non-replication superuser, rds_reserved, and rds_superuser connections");
    assert_eq!(f.signal, "connections");
    let f = refused(
        "app",
        "error connecting to server: Connection refused (os error 111)",
    );
    assert_eq!((f.signal, f.severity), ("unreachable", Severity::P1));
}

#[test]
fn deltas_survive_resets() {
    let t0 = now();
    let t1 = t0 + Duration::minutes(5);
    let a = counters(t0, 1_000_000, 10_000, 5);
    assert_eq!(delta(None, &a), Delta::First);
    let b = counters(t1, 1_100_000, 11_000, 7);
    assert_eq!(
        delta(Some(&a), &b),
        Delta::Since {
            seconds: 300.0,
            blks_hit: 100_000,
            blks_read: 1_000,
            deadlocks: 2
        }
    );
    // Crash/failover: counters restart from zero with the same stats_reset.
    let crashed = counters(t1, 500, 20, 0);
    assert!(matches!(delta(Some(&a), &crashed), Delta::Reset(r) if r.contains("went down")));
    let mut reset = b.clone();
    reset.stats_reset = Some("2026-11-25T12:03:00+00:00".into());
    assert!(matches!(delta(Some(&a), &reset), Delta::Reset(r) if r.contains("statistics reset")));
    let mut restarted = b.clone();
    restarted.postmaster_start = Some("2026-11-25T12:02:00+00:00".into());
    assert!(matches!(delta(Some(&a), &restarted), Delta::Reset(r) if r.contains("restarted")));
    // A failover: another server on a new timeline (its postmaster started elsewhere too).
    let mut promoted = restarted.clone();
    promoted.timeline = Some(2);
    assert!(matches!(delta(Some(&a), &promoted), Delta::Reset(r) if r.contains("timeline 1 -> 2")));
    let mut standby = b.clone();
    standby.in_recovery = Some(true);
    standby.timeline = None;
    assert!(
        matches!(delta(Some(&standby), &promoted), Delta::Reset(r) if r.starts_with("promoted"))
    );
    assert!(matches!(delta(Some(&a), &standby), Delta::Reset(r) if r.contains("a standby now")));
    // A baseline written before who-answered was recorded: no false failover.
    let mut old: serde_json::Value = serde_json::to_value(&a).unwrap();
    old.as_object_mut().unwrap().remove("timeline");
    old.as_object_mut().unwrap().remove("in_recovery");
    let old: Counters = serde_json::from_value(old).unwrap();
    assert!(matches!(delta(Some(&old), &b), Delta::Since { .. }));
    // A reset yields no ratio and no rate, never a negative one.
    let c = cfg(&[]);
    assert_eq!(
        cache_hit("app", &delta(Some(&a), &crashed), &c),
        (None, None)
    );
    assert_eq!(
        deadlocks("app", &delta(Some(&a), &crashed), &c),
        (None, None)
    );
}

#[test]
fn cache_hit_from_deltas_with_a_volume_floor() {
    let c = cfg(&[]);
    let d = |hit, read| Delta::Since {
        seconds: 300.0,
        blks_hit: hit,
        blks_read: read,
        deadlocks: 0,
    };
    // 50 % but only 200 blocks: not judged.
    assert_eq!(cache_hit("app", &d(100, 100), &c), (None, None));
    let (r, f) = cache_hit("app", &d(99_000, 1_000), &c);
    assert!((r.unwrap() - 99.0).abs() < 1e-9 && f.is_none());
    let (_, f) = cache_hit("app", &d(93_000, 7_000), &c);
    assert_eq!(f.unwrap().severity, Severity::P4);
    let (_, f) = cache_hit("app", &d(85_000, 15_000), &c);
    assert_eq!(f.unwrap().severity, Severity::P3);
}

#[test]
fn deadlocks_per_hour_never_extrapolate_short_intervals() {
    let c = cfg(&[]);
    let d = |s, n| Delta::Since {
        seconds: s,
        blks_hit: 0,
        blks_read: 0,
        deadlocks: n,
    };
    assert!(
        deadlocks("app", &d(300.0, 1), &c).1.is_none(),
        "1 is not > 1"
    );
    assert_eq!(
        deadlocks("app", &d(300.0, 2), &c).1.unwrap().level,
        Level::Warning
    );
    assert_eq!(
        deadlocks("app", &d(300.0, 11), &c).1.unwrap().level,
        Level::Critical
    );
    // 4 over two hours: 2 per hour.
    let (rate, _) = deadlocks("app", &d(7200.0, 4), &c);
    assert_eq!(rate, Some(2.0));
}

#[test]
fn wraparound_levels_and_failsafe_emergency() {
    let c = cfg(&[]);
    let r = |xid: i64, mxid: i64| {
        row(json!({"xid_age": xid, "mxid_age": mxid, "failsafe_age": 1_600_000_000i64}))
    };
    assert!(wraparound("app", &r(200_000_000, 10), &c).1.is_none());
    assert_eq!(
        wraparound("app", &r(600_000_000, 10), &c)
            .1
            .unwrap()
            .severity,
        Severity::P2
    );
    assert_eq!(
        wraparound("app", &r(10, 1_100_000_000), &c)
            .1
            .unwrap()
            .level,
        Level::Critical
    );
    let f = wraparound("app", &r(1_700_000_000, 10), &c).1.unwrap();
    assert_eq!((f.level, f.severity), (Level::Emergency, Severity::P1));
}

#[test]
fn replication_lag_is_zero_when_caught_up() {
    let c = cfg(&[]);
    // Idle primary: the last replayed transaction is 10 min old, but nothing is pending.
    let idle = row(json!({"caught_up": true, "since_last_replay": 600.0, "streaming": true}));
    assert_eq!(replication_standby("replica", &idle, &c), (0.0, None));
    let behind = row(json!({"caught_up": false, "since_last_replay": 400.0, "streaming": true}));
    assert_eq!(
        replication_standby("replica", &behind, &c).1.unwrap().level,
        Level::Critical
    );
    let broken = row(json!({"caught_up": true, "since_last_replay": 5.0, "streaming": false}));
    assert_eq!(
        replication_standby("replica", &broken, &c).1.unwrap().level,
        Level::Warning
    );
    let rows = vec![
        row(json!({"standby": "a", "caught_up": true, "replay_lag_seconds": 700.0})),
        row(json!({"standby": "b", "caught_up": false, "replay_lag_seconds": 45.0})),
    ];
    let (max, fs) = replication_primary("app", &rows, &c);
    assert_eq!(max, 45.0);
    assert_eq!(fs.len(), 1);
    assert_eq!(fs[0].resource, "pg:app/standby:b");
}

fn session(pid: i64, backend: &str, state: &str, xact: f64, ours: bool) -> Session {
    Session {
        pid,
        role: "app".into(),
        application: "web".into(),
        backend_type: backend.into(),
        state: state.into(),
        xact_start: Some("2026-11-25T11:00:00+00:00".into()),
        xact_seconds: xact,
        state_seconds: xact,
        query: "select 1".into(),
        ours,
        lock_wait_seconds: None,
    }
}

#[test]
fn long_transactions_exclude_autovacuum_walsenders_and_us() {
    let c = cfg(&[]);
    let all = vec![
        session(1, "autovacuum worker", "active", 5000.0, false),
        session(2, "walsender", "active", 5000.0, false),
        session(3, "client backend", "active", 5000.0, true),
        session(4, "client backend", "active", 400.0, false),
        session(5, "client backend", "idle in transaction", 1000.0, false),
        session(6, "client backend", "idle in transaction", 200.0, false),
    ];
    let (longest, fs) = sessions("app", &all, &c);
    assert_eq!(longest, 1000.0);
    let got: Vec<(String, Level)> = fs.iter().map(|f| (f.resource.clone(), f.level)).collect();
    assert_eq!(
        got,
        vec![
            ("pg:app/pid:4".into(), Level::Warning),
            ("pg:app/pid:5".into(), Level::Critical),
        ]
    );
}

#[test]
fn bloat_uses_measurement_then_reliable_estimate_and_notes_the_rest() {
    let c = cfg(&[]);
    let mut gutted = nbaops_shared::sql::TableStats::from_row(&row(json!({
        "oid": 1, "schema": "public", "table_name": "gutted", "reltuples": 11600.0, "relpages": 1000,
        "bytes": 8_192_000, "block_size": 8192, "ncols": 2, "nstats": 2, "data_width": 105.0,
        "n_live_tup": 11600, "n_dead_tup": 46400, "last_analyze": "2026-11-25T11:00:00+00:00"
    })));
    let (fs, notes) = bloat(
        "app",
        std::slice::from_ref(&gutted),
        &BTreeMap::new(),
        &c,
        now(),
    );
    assert_eq!(fs[0].level, Level::Critical);
    assert_eq!(fs[0].dedup_key(), "pg-bloat#pg:app/public.gutted");
    assert!(notes.is_empty());
    // Measured at 25 %: warning, whatever the estimate says.
    let measured = BTreeMap::from([(
        1,
        Measurement {
            percent: 25.0,
            at: now(),
            bytes: 8_192_000,
            fresh: true,
            handed_off: None,
            previous: None,
        },
    )]);
    let (fs, _) = bloat("app", std::slice::from_ref(&gutted), &measured, &c, now());
    assert_eq!(fs[0].level, Level::Warning);
    // Stale statistics, no measurement: no number, a note.
    gutted.n_mod_since_analyze = 40_000;
    let (fs, notes) = bloat(
        "app",
        std::slice::from_ref(&gutted),
        &BTreeMap::new(),
        &c,
        now(),
    );
    assert!(fs.is_empty());
    assert!(notes[0].contains("stale"), "{notes:?}");
}

#[test]
fn measurements_rotate_through_every_candidate_and_say_what_they_skipped() {
    let mk = |oid: i64, pages: i64| {
        TableStats::from_row(&row(json!({
            "oid": oid, "schema": "public", "table_name": format!("t{oid}"),
            "relpages": pages, "bytes": pages * 8192,
        })))
    };
    // Five candidates, largest first (as worth_measuring returns them), two per run.
    let tables: Vec<TableStats> = (1..=5).map(|i| mk(i, 1000 - i)).collect();
    let cands: Vec<&TableStats> = tables.iter().collect();
    let mut memory = BTreeMap::new();
    let mut measured_per_run = vec![];
    for run in 0..4 {
        let at = now() + Duration::minutes(5 * run);
        let plan = plan_measurements(&cands, &memory, 2, at);
        assert!(plan.measure.len() <= 2);
        assert_eq!(
            plan.measure.len() + plan.reuse.len() + plan.unconfirmed.len(),
            5,
            "every candidate is measured, reused or reported"
        );
        let fresh: BTreeMap<i64, Measurement> = plan
            .measure
            .iter()
            .map(|t| {
                let m = Measurement {
                    percent: 50.0,
                    at,
                    bytes: t.bytes,
                    fresh: true,
                    handed_off: None,
                    previous: None,
                };
                (t.oid, m)
            })
            .collect();
        measured_per_run.push(plan.measure.iter().map(|t| t.oid).collect::<Vec<_>>());
        if run == 0 {
            assert_eq!(plan.unconfirmed.len(), 3);
        }
        if run == 2 {
            assert!(plan.unconfirmed.is_empty(), "all measured within 3 runs");
            assert_eq!(plan.reuse.len(), 3);
        }
        memory = measurement_memory(&fresh, &plan.reuse);
    }
    // Unmeasured first, largest first; then the oldest figure.
    assert_eq!(
        measured_per_run,
        vec![vec![1, 2], vec![3, 4], vec![5, 1], vec![2, 3]]
    );
    // A resized table loses its figure and goes first; a figure older than a day is void.
    let mut grown = tables.clone();
    grown[4].bytes += 8192;
    let c2: Vec<&TableStats> = grown.iter().collect();
    let plan = plan_measurements(&c2, &memory, 1, now() + Duration::minutes(20));
    assert_eq!(plan.measure[0].oid, 5);
    let late = now() + Duration::hours(MEASUREMENT_VALID_HOURS + 1);
    let plan = plan_measurements(&cands, &memory, 1, late);
    assert_eq!((plan.reuse.len(), plan.unconfirmed.len()), (0, 4));
}

#[test]
fn an_unchanged_figure_is_handed_off_once_per_refresh() {
    let m = |pct: f64, prev: Option<f64>, handed: Option<i64>| Measurement {
        percent: pct,
        at: now(),
        bytes: 1,
        fresh: true,
        handed_off: handed.map(|h| now() - Duration::hours(h)),
        previous: prev,
    };
    assert!(needs_hand_off(&m(60.0, None, None), 20.0, now()));
    assert!(!needs_hand_off(&m(60.0, Some(60.4), Some(1)), 20.0, now()));
    assert!(needs_hand_off(&m(60.0, Some(58.0), Some(1)), 20.0, now()));
    assert!(needs_hand_off(
        &m(60.0, Some(60.0), Some(HAND_OFF_REFRESH_HOURS)),
        20.0,
        now()
    ));
    assert!(!needs_hand_off(&m(15.0, None, None), 20.0, now()));
    let mut reused = m(60.0, None, None);
    reused.fresh = false;
    assert!(!needs_hand_off(&reused, 20.0, now()));
}

/// DynamoDB: "The maximum item size in DynamoDB is 400 KB, which includes both attribute
/// name binary length (UTF-8 length) and attribute value lengths (again binary length)";
/// 1 KB = 1,024 bytes. https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Constraints.html#limits-items
/// The ledger stores an item as pk, sk (S), data (S: the JSON) and expires_at (N).
#[test]
fn the_remembered_figures_fit_one_dynamodb_item() {
    const DYNAMODB_MAX_ITEM_BYTES: usize = 400 * 1024;
    let at = chrono::DateTime::parse_from_rfc3339("2026-12-31T23:59:59.999999999+00:00")
        .unwrap()
        .with_timezone(&Utc);
    // Twice the bound, worst-case values: the largest oids, numbers with the most digits.
    let fresh: BTreeMap<i64, Measurement> = (0..2 * MEASUREMENTS_KEPT as i64)
        .map(|i| {
            let m = Measurement {
                percent: -1.234_567_890_123_456_7e-300,
                at: at - Duration::nanoseconds(i + 1),
                bytes: i64::MAX,
                fresh: true,
                handed_off: Some(at),
                previous: None,
            };
            (u32::MAX as i64 - i, m)
        })
        .collect();
    let kept = measurement_memory(&fresh, &BTreeMap::new());
    assert_eq!(kept.len(), MEASUREMENTS_KEPT);
    let data = serde_json::to_value(&kept).unwrap().to_string();
    let pk = format!("pgbase#{}", "d".repeat(255));
    let item = "pk".len()
        + pk.len()
        + "sk".len()
        + "measured".len()
        + "data".len()
        + data.len()
        + "expires_at".len()
        + 21;
    assert!(
        item < DYNAMODB_MAX_ITEM_BYTES,
        "{item} bytes >= {DYNAMODB_MAX_ITEM_BYTES}"
    );
}

#[test]
fn open_findings_resolve_only_when_their_signal_was_checked() {
    let c = cfg(&[]);
    let f = refused("app", "Connection refused");
    let open = vec![
        (
            f.dedup_key(),
            OpenFinding {
                severity: Severity::P1,
                resource: "pg:app".into(),
                summary: "x".into(),
                since: now(),
            },
        ),
        (
            "pg-bloat#pg:app/public.t".to_string(),
            OpenFinding {
                severity: Severity::P3,
                resource: "pg:app/public.t".into(),
                summary: "y".into(),
                since: now(),
            },
        ),
    ];
    // Still down: the unreachable finding is unchanged, bloat cannot resolve (not checked).
    let current = vec![f.clone()];
    let t = transitions(&open, &current, &["bloat"]);
    assert!(t.publish.is_empty() && t.resolved.is_empty());
    assert_eq!(t.unchanged.len(), 1);
    // Back up and checked: both resolve.
    let t = transitions(&open, &[], &[]);
    assert_eq!(t.resolved.len(), 2);
    // Severity changed: published again under the same key.
    let worse = connections(
        "app",
        &Connections {
            max_connections: 100,
            reserved: 0,
            used: 95,
            idle: 0,
            active: 0,
            idle_in_tx: 0,
        },
        &c,
    )
    .unwrap();
    let open = vec![(
        worse.dedup_key(),
        OpenFinding {
            severity: Severity::P3,
            resource: "pg:app".into(),
            summary: "z".into(),
            since: now(),
        },
    )];
    let current = [worse];
    assert_eq!(transitions(&open, &current, &[]).publish.len(), 1);
}

fn stats(oid: i64, dead: i64, live: i64, last_vacuum: Option<DateTime<Utc>>) -> TableStats {
    let mut t = TableStats::from_row(&row(json!({
        "oid": oid, "schema": "public", "table_name": format!("t{oid}"), "reltuples": live as f64,
        "relpages": 1000, "bytes": 8_192_000, "n_live_tup": live, "n_dead_tup": dead,
    })));
    t.last_vacuum = last_vacuum;
    t
}

#[test]
fn stalled_vacuum_needs_growth_no_vacuum_and_an_old_last_vacuum() {
    let c = cfg(&[]);
    let old = Some(now() - Duration::days(3));
    let prev = table_snapshot(
        &[
            stats(1, 5_000, 10_000, old),
            stats(2, 5_000, 10_000, old),
            stats(3, 5_000, 10_000, Some(now() - Duration::hours(2))),
            stats(4, 5_000, 10_000, old),
            stats(5, 10, 10_000, old),
        ],
        &c,
    );
    // Table 5 was too clean to be remembered.
    assert_eq!(prev.len(), 4);
    let cur = vec![
        // grew, not vacuumed since, last vacuum 3 days ago: stalled
        stats(1, 8_000, 10_000, old),
        // vacuumed in between (last_vacuum moved) even if dead grew again
        stats(2, 8_000, 10_000, Some(now() - Duration::minutes(1))),
        // last vacuum recent: autovacuum keeps up
        stats(3, 8_000, 10_000, Some(now() - Duration::hours(2))),
        // counters reset by a crash: dead went down, last_vacuum forgotten
        stats(4, 100, 10_000, None),
        stats(5, 50_000, 10_000, old),
    ];
    let fs = stalled_vacuums("app", &prev, &cur, &c, now());
    let got: Vec<&str> = fs.iter().map(|f| f.resource.as_str()).collect();
    assert_eq!(got, vec!["pg:app/public.t1"]);
    assert_eq!(fs[0].signal, "vacuum-failure");
    assert!(fs[0].summary.contains("5000 -> 8000"), "{}", fs[0].summary);
}

#[test]
fn vacuum_progress_notes_and_warns_when_long() {
    let c = cfg(&[("NBAOPS_PG__VACUUM_PROGRESS__WARN_SECONDS", "600")]);
    let rows = vec![
        row(
            json!({"pid": 7, "table_name": "public.a", "phase": "scanning heap", "heap_blks_total": 1000, "heap_blks_scanned": 250, "running_seconds": 30.0, "backend_type": "autovacuum worker"}),
        ),
        row(
            json!({"pid": 8, "table_name": "public.b", "phase": "vacuuming indexes", "heap_blks_total": 10, "heap_blks_scanned": 10, "running_seconds": 900.0, "backend_type": "client backend"}),
        ),
    ];
    let (fs, notes) = vacuum_progress("app", &rows, &c);
    assert_eq!(notes.len(), 2);
    assert!(notes[0].contains("25 %"), "{notes:?}");
    assert_eq!(fs.len(), 1);
    assert_eq!(fs[0].resource, "pg:app/public.b");
    assert_eq!(fs[0].severity, Severity::P4);
}

#[test]
fn slow_queries_over_threshold_and_min_calls() {
    let c = cfg(&[("NBAOPS_PG__SLOW_QUERY__MEAN_MS", "100")]);
    let rows = vec![
        row(
            json!({"queryid": "11", "calls": 10, "mean_ms": 250.0, "query": "select pg_sleep($1)"}),
        ),
        row(json!({"queryid": "12", "calls": 2, "mean_ms": 900.0, "query": "select 2"})),
        row(json!({"queryid": "13", "calls": 50, "mean_ms": 99.0, "query": "select 3"})),
    ];
    let fs = slow_queries("app", &rows, &c);
    assert_eq!(fs.len(), 1);
    assert_eq!(fs[0].dedup_key(), "pg-slow-query#pg:app/query:11");
}

#[test]
fn a_timed_out_check_is_a_finding_not_an_outage() {
    let f = refused(
        "app",
        "ERROR: canceling statement due to statement timeout (SQLSTATE 57014)",
    );
    assert_eq!((f.signal, f.severity), ("check-failed", Severity::P3));
    let f = check_failed(
        "app",
        &[(
            vec!["bloat"],
            "canceling statement due to statement timeout".into(),
        )],
    )
    .unwrap();
    assert!(
        f.summary.contains("pg.statement_timeout_ms"),
        "{}",
        f.summary
    );
    assert!(check_failed("app", &[]).is_none());
}

#[test]
fn holders_and_own_failures() {
    let c = cfg(&[]);
    let rows = vec![
        row(
            json!({"kind": "prepared transaction", "name": "tx1", "age_seconds": 1000.0, "xid_age": 50}),
        ),
        row(
            json!({"kind": "prepared transaction", "name": "tx2", "age_seconds": 10.0, "xid_age": 5}),
        ),
        row(
            json!({"kind": "replication slot", "name": "old_slot", "age_seconds": null, "xid_age": 600_000_000i64}),
        ),
    ];
    let fs = xmin_holders("app", &rows, &c);
    assert_eq!(fs.len(), 2);
    assert_eq!(fs[1].resource, "pg:app/replication-slot:old_slot");
    assert_eq!(fs[1].level, Level::Critical);
    let failures = vec![
        ("public.t".to_string(), "skipped".to_string()),
        ("public.t".to_string(), "lock timeout".to_string()),
        ("public.t".to_string(), "lock timeout".to_string()),
        ("public.u".to_string(), "permission".to_string()),
    ];
    let fs = own_vacuum_failures("app", &failures, &c);
    assert_eq!(
        (fs[0].level, fs[1].level),
        (Level::Critical, Level::Warning)
    );
}

// ---- issue #22: index bloat, WAL rate ----

fn index(
    oid: i64,
    name: &str,
    am: &str,
    bytes: i64,
    nstats: i64,
) -> nbaops_shared::sql::indexes::IndexStats {
    // 10,000 tuples of an int key fit in ~28 leaf pages: 1,000 pages is ~97 % bloat by estimate.
    nbaops_shared::sql::indexes::IndexStats::from_row(&row(json!({
        "oid": oid, "schema": "public", "index_name": name, "table_name": "t", "table_oid": 1,
        "access_method": am, "valid": true, "reltuples": 10000.0, "relpages": bytes / 8192,
        "bytes": bytes, "block_size": 8192, "fillfactor": 90, "ncols": 1, "nexpr": 0,
        "nstats": nstats, "key_width": 4.0, "stats_since": "2026-11-01T00:00:00Z"
    })))
}

#[test]
fn index_bloat_per_index_btree_only_not_tiny_measured_first() {
    let c = cfg(&[]);
    let big = 1000 * 8192;
    let ixs = vec![
        index(10, "t_a", "btree", big, 1),         // estimate ~97 %
        index(11, "t_b", "btree", big, 0),         // no pg_stats: unreliable
        index(12, "t_gin", "gin", big, 1),         // never judged
        index(13, "t_tiny", "btree", 8192 * 4, 1), // under pg.index.min_bytes
    ];
    // Candidates: the judged btree ones over warn or without an estimate, largest first.
    let cands: Vec<i64> = index_bloat_candidates(&ixs, &c, 10)
        .iter()
        .map(|i| i.oid)
        .collect();
    assert_eq!(cands, vec![10, 11]);
    assert_eq!(
        index_bloat_candidates(&ixs, &c, 1).len(),
        1,
        "bounded per run"
    );

    // Nothing measured: the estimate judges t_a; t_b is not judged (its open finding stays).
    let (fs, unjudged) = index_bloat("app", &ixs, &BTreeMap::new(), &c);
    assert_eq!(fs.len(), 1, "{fs:?}");
    assert_eq!(fs[0].dedup_key(), "pg-index-bloat#pg:app/index:public.t_a");
    assert_eq!(
        (fs[0].level, fs[0].severity),
        (Level::Critical, Severity::P3)
    );
    assert_eq!(
        unjudged,
        vec!["pg-index-bloat#pg:app/index:public.t_b".to_string()]
    );

    // Measured figures win over the estimate: t_a healthy, t_b at warning.
    let measured = BTreeMap::from([(10, 10.0), (11, 35.0)]);
    let (fs, unjudged) = index_bloat("app", &ixs, &measured, &c);
    assert!(unjudged.is_empty());
    assert_eq!(fs.len(), 1, "{fs:?}");
    assert_eq!(fs[0].resource, "pg:app/index:public.t_b");
    assert_eq!(
        (fs[0].level, fs[0].severity),
        (Level::Warning, Severity::P4)
    );
    assert_eq!(fs[0].details["source"], "measured (pgstatindex)");
    // At the threshold: not over it.
    let (fs, _) = index_bloat("app", &ixs, &BTreeMap::from([(10, 30.0), (11, 50.0)]), &c);
    assert_eq!(fs.len(), 1);
    assert_eq!(
        fs[0].level,
        Level::Warning,
        "50 is not over crit 50: {fs:?}"
    );

    // Cleared (measured low) with the signal checked: the open finding resolves.
    let open = vec![(
        "pg-index-bloat#pg:app/index:public.t_b".to_string(),
        OpenFinding {
            severity: Severity::P4,
            resource: "pg:app/index:public.t_b".into(),
            summary: "x".into(),
            since: now(),
        },
    )];
    let (fs, _) = index_bloat("app", &ixs, &BTreeMap::from([(10, 1.0), (11, 1.0)]), &c);
    assert_eq!(transitions(&open, &fs, &[]).resolved.len(), 1);
}

#[test]
fn index_bloat_levels_are_configurable() {
    let c = cfg(&[
        ("NBAOPS_PG__INDEX_BLOAT__WARN_PERCENT", "5"),
        ("NBAOPS_PG__INDEX_BLOAT__CRIT_PERCENT", "8"),
    ]);
    assert_eq!(
        (c.index_bloat_percent.warn, c.index_bloat_percent.crit),
        (5.0, 8.0)
    );
    let ixs = vec![index(11, "t_b", "btree", 1000 * 8192, 0)];
    let (fs, _) = index_bloat("app", &ixs, &BTreeMap::from([(11, 9.0)]), &c);
    assert_eq!(fs[0].level, Level::Critical);
}

fn mark(bytes: i64, at: DateTime<Utc>, timeline: i64) -> WalMark {
    WalMark {
        lsn: format!("0/{bytes:X}"),
        bytes,
        at,
        timeline: Some(timeline),
    }
}

#[test]
fn wal_rate_between_runs_first_backwards_and_new_timeline() {
    let c = cfg(&[]);
    let t0 = now();
    let t1 = t0 + Duration::seconds(300);
    let a = mark(1_000_000_000, t0, 1);
    assert_eq!(wal_rate(None, &a), WalRate::First);
    // 300 s, 6,000 MiB: 20 MiB/s, over the 16 MiB/s warning, under the 64 MiB/s critical.
    let b = mark(1_000_000_000 + 6000 * 1_048_576, t1, 1);
    let WalRate::BytesPerSecond(r) = wal_rate(Some(&a), &b) else {
        panic!()
    };
    assert!((r - 20.0 * 1_048_576.0).abs() < 1.0, "{r}");
    let f = judge_wal_rate("app", r, &a, &b, &c).unwrap();
    assert_eq!((f.level, f.severity), (Level::Warning, Severity::P4));
    assert_eq!(f.dedup_key(), "pg-wal-rate#pg:app");
    // Quiet: no finding.
    let q = mark(1_000_000_000 + 1_048_576, t1, 1);
    let WalRate::BytesPerSecond(r) = wal_rate(Some(&a), &q) else {
        panic!()
    };
    assert!(judge_wal_rate("app", r, &a, &q, &c).is_none());
    // 100 MiB/s: critical.
    let h = mark(1_000_000_000 + 30_000 * 1_048_576, t1, 1);
    let WalRate::BytesPerSecond(r) = wal_rate(Some(&a), &h) else {
        panic!()
    };
    assert_eq!(
        judge_wal_rate("app", r, &a, &h, &c).unwrap().level,
        Level::Critical
    );
    // Backwards (restore), a new timeline (failover), no time passed: a reset, no rate.
    assert!(matches!(
        wal_rate(Some(&a), &mark(5, t1, 1)),
        WalRate::Reset(_)
    ));
    assert!(matches!(
        wal_rate(Some(&a), &mark(2_000_000_000, t1, 2)),
        WalRate::Reset(_)
    ));
    assert!(matches!(
        wal_rate(Some(&a), &mark(2_000_000_000, t0, 1)),
        WalRate::Reset(_)
    ));
    // Unchanged: 0 B/s, not a reset.
    assert_eq!(
        wal_rate(Some(&a), &mark(1_000_000_000, t1, 1)),
        WalRate::BytesPerSecond(0.0)
    );
}

fn vac(pid: i64, started_min: i64, sleeping: bool) -> VacuumSample {
    VacuumSample::from_row(&row(json!({
        "pid": pid, "relid": 42, "table_name": "public.big", "autovacuum": false,
        "started": (now() - Duration::minutes(started_min)).to_rfc3339(), "sleeping": sleeping,
        "delay_ms": null, "elapsed_ms": 1000.0
    })))
}

#[test]
fn vacuum_delay_needs_most_samples_sleeping_over_min_runs_of_the_same_vacuum() {
    let c = cfg(&[]);
    assert_eq!(
        (c.vacuum_delay.sleep_percent, c.vacuum_delay.min_runs),
        (50.0, 3)
    );
    // 4 of 5 samples sleeping per run: 80 %.
    let mostly = vec![
        vec![vac(7, 10, true)],
        vec![vac(7, 10, true)],
        vec![vac(7, 10, false)],
        vec![vac(7, 10, true)],
        vec![vac(7, 10, true)],
    ];
    let (t1, f) = vacuum_delay("app", &BTreeMap::new(), &mostly, &c);
    assert!(f.is_empty(), "one run is not enough");
    assert_eq!(
        (t1["42"].runs, t1["42"].samples, t1["42"].sleeping),
        (1, 5, 4)
    );
    let (t2, f) = vacuum_delay("app", &t1, &mostly, &c);
    assert!(f.is_empty(), "two runs are not enough");
    let (t3, f) = vacuum_delay("app", &t2, &mostly, &c);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].dedup_key(), "pg-vacuum-delay#pg:app/public.big");
    assert_eq!((f[0].level, f[0].severity), (Level::Warning, Severity::P4));
    assert_eq!(f[0].details["sleep_percent"], 80.0);
    assert_eq!(t3["42"].samples, 15);
    // Half the samples: not over 50 %.
    let half = vec![vec![vac(7, 10, true)], vec![vac(7, 10, false)]];
    let (mut t, mut f) = (BTreeMap::new(), vec![]);
    for _ in 0..4 {
        (t, f) = vacuum_delay("app", &t, &half, &c);
    }
    assert!(f.is_empty(), "{f:?}");
    // Another vacuum of the table (new pid, or the same pid restarted): counted afresh.
    let (t4, f) = vacuum_delay("app", &t3, &[vec![vac(8, 1, true)]], &c);
    assert!(f.is_empty());
    assert_eq!((t4["42"].runs, t4["42"].samples), (1, 1));
    let (t5, _) = vacuum_delay("app", &t3, &[vec![vac(7, 1, true)]], &c);
    assert_eq!(t5["42"].runs, 1);
    // No vacuum running: nothing kept, nothing found (an open finding resolves).
    let (t6, f) = vacuum_delay("app", &t3, &[vec![]], &c);
    assert!(t6.is_empty() && f.is_empty());
}

#[test]
fn vacuum_delay_uses_delay_time_when_the_server_has_it() {
    let c = cfg(&[("NBAOPS_PG__VACUUM_DELAY__MIN_RUNS", "1")]);
    let s = |delay: f64| {
        VacuumSample::from_row(&row(json!({
            "pid": 7, "relid": 42, "table_name": "public.big", "started": now().to_rfc3339(),
            "sleeping": false, "delay_ms": delay, "elapsed_ms": 10000.0
        })))
    };
    // No sample was sleeping, but delay_time says 70 % of the time: that wins.
    let (t, f) = vacuum_delay("app", &BTreeMap::new(), &[vec![s(7000.0)]], &c);
    assert_eq!(t["42"].sleep_percent(), (70.0, "delay_time"));
    assert_eq!(f.len(), 1);
    let (_, f) = vacuum_delay("app", &BTreeMap::new(), &[vec![s(2000.0)]], &c);
    assert!(f.is_empty());
    // The SQL reads delay_time only where it exists.
    let pg = |m: i64| nbaops_shared::sql::PgVersion(m * 10000);
    assert!(vacuum_delay_sql(pg(18)).contains("p.delay_time"));
    assert!(!vacuum_delay_sql(pg(15)).contains("delay_time"));
}
