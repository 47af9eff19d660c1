//! `nbaops replay` on the committed game-night day (events/replay/game-night), the real binary.
//!
//! What the day holds (2026-11-25, a Wednesday; the default platform: the demo's dev platform,
//! web and worker groups 2/2..4, nbaops-dev-db db.t3.micro Multi-AZ, plus the office-hours test
//! environment nbaops-test-web (desired 2) and nbaops-test-db, tagged `nbaops:schedule=office`,
//! Europe/Paris 08:00-19:00 Mon-Fri = 07:00-18:00 UTC in November):
//! - alarm history: web CPU OK->ALARM 19:05:12, ALARM->OK 20:41:12; worker CPU OK->ALARM 19:21:40,
//!   ALARM->OK 19:51:40; DB memory OK->ALARM 21:08:02, ALARM->OK 21:33:02 (6 items, all alarms
//!   of the platform);
//! - RDS events: an automated snapshot 03:14 (a db-snapshot event: not for me), nbaops-test-db
//!   stopped 18:05:31, nbaops-dev-db failover started 21:12:03, restarted 21:13:10, completed
//!   21:13:41 (4 db-instance events);
//! - metrics: both groups' CPU a minute from 18:00 (web 80 % 19:00-20:36, 24 % from 21:30;
//!   worker 30 % after 19:48).
//!
//! Expected, with the configuration's defaults (cooldown 300 s, re-checks 5 min apart, ceiling 4,
//! blast radius 50 % of the resources in view = one of two per invocation, change window closed
//! on a Wednesday evening):
//! - ticks: failover-sweep rate(1 minute) 1440 + offhours rate(5 minutes) 288 + the three daily
//!   crons of scale-on-alarm (off-peak 23:00, alarm-drift 06:15, game-night-plan 06:00) = 1731.
//! - scale-on-alarm: web 2->3 at the alarm, re-check 19:10:13 still ALARM 3->4, re-check 19:15:13
//!   at the ceiling: P2 "capacity exhausted"; the worker the same from 19:21:40 (2 re-checks).
//!   DB memory: one class up, at the next maintenance window (acted). Off-peak at 23:00: web 4->3,
//!   the worker stopped by the blast radius; steps at 23:10 (web 3->2, worker blast radius), 23:20
//!   (worker 4->3), 23:30 (worker 3->2), then both at baseline: no further step. Follow-ups: 4
//!   re-checks + 3 off-peak steps = 7. 11 decisions, 9 acted, 2 skipped (blast_radius).
//!   Alerts: P3 per scaling (9), P2 capacity exhausted (2), P4 no game calendar (SSM not read).
//! - offhours: the test env is running at 00:00, after the schedule's 18:00 stop: 00:00 group
//!   stopped, DB stopped by the blast radius, 00:05 DB stopped; 07:00 DB started, group by blast
//!   radius, 07:05 group started; 18:00 and 18:05 the same as midnight. 9 decisions, 6 acted,
//!   3 skipped (blast_radius).
//! - failover-notify: failover started P2, restarted P3, completed in 99 s P2 (the replay's
//!   PostgreSQL is a healthy primary); "DB instance stopped" is below the notify severity.
//!
//! Totals: events in 10, not for me 1, decisions 20, acted 15, skipped 5 (blast_radius 5),
//! alerts P2 4, P3 10, P4 1; invocations failover-notify 1440 + 4 = 1444, offhours 288,
//! scale-on-alarm 6 + 3 + 7 = 16.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nbaops_tests::{function_binary, workspace_root};
use serde_json::Value;

const DAY: &str = "events/replay/game-night";

fn day(file: &str) -> PathBuf {
    workspace_root().join(DAY).join(file)
}

fn nbaops(args: &[&str], test_now: Option<&str>) -> Output {
    let bin = function_binary("nbaops").unwrap();
    let mut c = Command::new(bin);
    c.arg("replay")
        .arg("--alarm-history")
        .arg(day("alarm-history.json"))
        .arg("--rds-events")
        .arg(day("rds-events.json"))
        .arg("--metrics")
        .arg(day("metrics.json"))
        .args(args);
    if let Some(now) = test_now {
        c.env("NBAOPS_TEST_NOW", now);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "nbaops failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `  name: value` of the text totals.
fn total(text: &str, name: &str) -> String {
    let prefix = format!("  {name}: ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no '{name}' in the totals:\n{text}"))
        .to_string()
}

fn n(text: &str, name: &str) -> u64 {
    total(text, name)
        .split(' ')
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("'{name}' is not a number"))
}

#[test]
fn the_game_night_day_replays_to_the_reasoned_totals_in_text_and_json() {
    let text = stdout(&nbaops(&[], None));
    assert_eq!(n(&text, "events in"), 10);
    assert_eq!(n(&text, "not for me"), 1);
    assert_eq!(n(&text, "schedule ticks"), 1731);
    assert_eq!(
        total(&text, "follow-ups"),
        "7 (pending after the window: 0)"
    );
    assert_eq!(
        total(&text, "invocations"),
        "failover-notify 1444, offhours 288, scale-on-alarm 16"
    );
    assert_eq!(n(&text, "decisions"), 20);
    assert_eq!(n(&text, "acted"), 15);
    assert_eq!(n(&text, "would act"), 0);
    assert_eq!(total(&text, "skipped"), "5 (blast_radius 5)");
    assert_eq!(n(&text, "failed"), 0);
    assert_eq!(total(&text, "alerts"), "P2 4, P3 10, P4 1");
    assert_eq!(n(&text, "errors"), 0);
    assert!(text.contains("not replayed: pg-health"), "{text}");
    assert!(text.contains("a db-snapshot event"), "{text}");
    // The timeline: the web group's scale-out, the ceiling, the failover, an off-hours stop.
    for want in [
        "Scaled nbaops-dev-web 2 → 3: CPUUtilization 78.4 % > 70 %",
        "capacity exhausted",
        "Multi-AZ failover started",
        "Stopped nbaops-test-web 2 → 0",
        "stopped by blast radius",
    ] {
        assert!(text.contains(want), "no '{want}' in:\n{text}");
    }

    let json: Value = serde_json::from_str(&stdout(&nbaops(&["--json"], None))).unwrap();
    let t = &json["totals"];
    assert_eq!(t["events_in"], n(&text, "events in"));
    assert_eq!(t["not_for_me"], n(&text, "not for me"));
    assert_eq!(t["schedule_ticks"], n(&text, "schedule ticks"));
    assert_eq!(t["follow_ups"], 7);
    assert_eq!(t["decisions"], n(&text, "decisions"));
    assert_eq!(t["acted"], n(&text, "acted"));
    assert_eq!(t["skipped"], 5);
    assert_eq!(t["skipped_by"]["blast_radius"], 5);
    assert_eq!(t["alerts"]["P2"], 4);
    assert_eq!(t["alerts"]["P3"], 10);
    assert_eq!(t["alerts"]["P4"], 1);
    assert_eq!(t["invocations"]["scale-on-alarm"], 16);
    let timeline = json["timeline"].as_array().unwrap();
    let actions = timeline.iter().filter(|d| d["kind"] == "action").count();
    assert_eq!(actions as u64, n(&text, "decisions"));
    // The web group's desired capacity over the day: 2, 3, 4, then back to 2 off-peak.
    let web: Vec<i64> = json["series"]["group nbaops-dev-web"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_i64().unwrap())
        .collect();
    assert_eq!(web, vec![2, 3, 4, 3, 2]);
    let db: Vec<&str> = json["series"]["db nbaops-dev-db"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_str().unwrap())
        .collect();
    assert_eq!(db, vec!["db.t3.micro", "db.t3.small"]);
}

#[test]
fn the_result_does_not_depend_on_the_real_date() {
    let a = stdout(&nbaops(&["--json"], Some("2026-11-25T20:00:00Z")));
    let b = stdout(&nbaops(&["--json"], Some("2031-06-02T03:00:00Z")));
    assert_eq!(a, b);
}

#[test]
fn html_is_one_self_contained_page_with_charts_and_the_timeline() {
    let dir = std::env::temp_dir().join(format!("nbaops-replay-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("day.html");
    stdout(&nbaops(&["--html", page.to_str().unwrap()], None));
    let html = std::fs::read_to_string(&page).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        html.matches("<svg").count() >= 3,
        "a chart per group and DB"
    );
    assert!(html.contains("group nbaops-dev-web") && html.contains("db nbaops-dev-db"));
    assert!(html.contains("db.t3.small"));
    assert!(html.contains("Scaled nbaops-dev-web 2 → 3"));
    for asset in [
        "http://",
        "https://",
        "<script src",
        "<link",
        "@import",
        "url(",
    ] {
        assert!(!html.contains(asset), "external reference '{asset}'");
    }
}

fn malformed(file: &str, edit: impl Fn(&mut Value)) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("nbaops-replay-bad-{}-{file}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut doc: Value =
        serde_json::from_str(&std::fs::read_to_string(day(file)).unwrap()).unwrap();
    edit(&mut doc);
    let path = dir.join(file);
    std::fs::write(&path, doc.to_string()).unwrap();
    (dir, path)
}

fn run_with(alarms: &Path, events: &Path) -> Output {
    Command::new(function_binary("nbaops").unwrap())
        .args(["replay", "--alarm-history"])
        .arg(alarms)
        .arg("--rds-events")
        .arg(events)
        .output()
        .unwrap()
}

#[test]
fn a_malformed_item_is_a_clear_error_naming_it() {
    let (dir, bad) = malformed("alarm-history.json", |d| {
        d["AlarmHistoryItems"][2]["HistoryData"] = Value::String("{\"oldState\":".into());
    });
    let o = run_with(&bad, &day("rds-events.json"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("alarm-history.json: AlarmHistoryItems[2]: HistoryData is not JSON"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let (dir, bad) = malformed("rds-events.json", |d| {
        d["Events"][1]["Date"] = Value::String("yesterday".into());
    });
    let o = run_with(&day("alarm-history.json"), &bad);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("rds-events.json: Events[1]: Date 'yesterday' is not an ISO 8601 time"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let (dir, bad) = malformed("alarm-history.json", |d| {
        d["AlarmHistoryItems"][0]["HistoryData"] = Value::String(
            r#"{"oldState":{"stateValue":"OK"},"newState":{"stateValue":"RED"}}"#.into(),
        );
    });
    let o = run_with(&bad, &day("rds-events.json"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("AlarmHistoryItems[0]") && err.contains("'RED'"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn from_and_to_restrict_the_window() {
    // 19:00-21:00: the four CPU transitions (19:05, 19:21, 19:51, 20:41); the RDS events and the
    // DB memory alarm are outside. Ticks: 120 sweeps + 24 offhours, no daily cron. The window
    // starts from the platform's initial state, the test environment running: offhours stops it
    // as at midnight (19:00 group, DB by the blast radius; 19:05 DB). Decisions: those 3 and the
    // four scale-outs (2 per group, the second at a re-check: 4 follow-ups).
    let text = stdout(&nbaops(
        &[
            "--from",
            "2026-11-25T19:00:00Z",
            "--to",
            "2026-11-25T21:00:00Z",
        ],
        None,
    ));
    assert!(text.starts_with("replay of 2026-11-25T19:00:00+00:00 to 2026-11-25T21:00:00+00:00"));
    assert_eq!(n(&text, "events in"), 4);
    assert_eq!(n(&text, "outside the window"), 6);
    assert_eq!(n(&text, "schedule ticks"), 144);
    assert_eq!(n(&text, "follow-ups"), 4);
    assert_eq!(n(&text, "decisions"), 7);
    assert_eq!(n(&text, "acted"), 6);
    assert_eq!(total(&text, "skipped"), "1 (blast_radius 1)");
    assert_eq!(total(&text, "alerts"), "P2 2, P3 4");
    assert!(!text.contains("21:08:02"), "{text}");

    let o = nbaops(
        &[
            "--from",
            "2026-11-25T21:00:00Z",
            "--to",
            "2026-11-25T19:00:00Z",
        ],
        None,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("the window is empty"));
}

#[test]
fn a_platform_with_the_game_calendar_pre_scales_the_night() {
    // The default platform plus the SSM game calendar: a high-load game at 19:30 UTC. The 06:00
    // game-night-plan schedules the pre-scale at 18:30 (lead 60 min) and the return at 23:30
    // (hold 240 min): 2 follow-ups; the blast radius lets one group move per run, so each comes
    // again a minute later for the other group: 4 follow-ups. The CPU alarms then find both
    // groups at their ceiling (P2 capacity exhausted, no scale-out) and the 23:00 off-peak run is
    // held by the game night. Decisions: offhours 9 (6 acted), pre-scale 3 (2 acted), return 3
    // (2 acted), the DB class 1 (acted) = 16, 11 acted, 5 skipped by the blast radius. Alerts:
    // P2 2 capacity + failover started and completed; P3 the DB class and the restart; no P4
    // (the calendar is there).
    let mut platform: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("cli/src/replay/default-platform.json"))
            .unwrap(),
    )
    .unwrap();
    platform["params"] =
        serde_json::json!({"/nbaops/dev/calendar/games": "2026-11-25,19:30,high\n"});
    let dir = std::env::temp_dir().join(format!("nbaops-replay-cal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("platform.json");
    std::fs::write(&file, platform.to_string()).unwrap();
    let text = stdout(&nbaops(&["--platform", file.to_str().unwrap()], None));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        text.contains("2026-11-25 18:30:00Z Pre-scaled nbaops-dev-web 2 → 4: load level 4"),
        "{text}"
    );
    assert!(
        text.contains(
            "2026-11-25 23:30:00Z Returned nbaops-dev-web 4 → 2: minutes after tip-off 240"
        ),
        "{text}"
    );
    // Pre-scaled to the ceiling, no alarm-driven scale-out is left to do.
    assert!(
        !text
            .lines()
            .any(|l| l.contains("Scaled ") && l.contains("CPUUtilization")),
        "{text}"
    );
    assert_eq!(
        total(&text, "follow-ups"),
        "4 (pending after the window: 0)"
    );
    assert_eq!(n(&text, "decisions"), 16);
    assert_eq!(n(&text, "acted"), 11);
    assert_eq!(total(&text, "skipped"), "5 (blast_radius 5)");
    assert_eq!(total(&text, "alerts"), "P2 4, P3 2");
}
